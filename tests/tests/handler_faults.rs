//! Handler failures injected at random (the benchmark/fault issue), through the library: the
//! service is built with `Application::build_with_handlers`, adding to three event types a
//! handler that fails with probability 1/2 per attempt, decided by a seeded hash of the event
//! id and the attempt number, so every run injects the same failures. At most 3 attempts, a few
//! milliseconds apart. On SQLite and, when `DATABASE_URL` names a server, on PostgreSQL.
//!
//! Proves: none of 300 events is lost or left pending; each ends exactly as the injected
//! failures dictate (processed on its first successful attempt, or parked `failed` after the
//! third with that attempt's error in `last_error`); the handler ran in every recorded attempt
//! and in no other, a failing attempt exactly once (a succeeding one may run again when another
//! event of its batch fails, see `Worker::process`); a failed attempt's writes are rolled back
//! (the built-in handler's rows exist only for processed events); and the metrics add up to the
//! same numbers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use billing_service::configuration::Settings;
use billing_service::startup::Application;
use billing_service::webhook::handlers::{Event, EventHandler, HandlerError, Handlers};
use e2e::WEBHOOK_SECRET;
use e2e::metrics;
use e2e::store::{count, wait_until_settled};
use e2e::webhook::{Load, Retry, steady_load};
use sqlx::AnyConnection;
use test_support::db::every_engine;
use tokio_util::sync::CancellationToken;

const TYPES: &[&str] = &["customer.created", "charge.succeeded", "invoice.paid"];
const EVENTS: u64 = 300;
const MAX_ATTEMPTS: i32 = 3;
const SEED: u64 = 0x05ee_de2e;

/// SplitMix64: a tiny, well-mixed PRNG step, enough to turn (seed, id, attempt) into a coin.
fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Whether attempt `attempt` of event `id` is made to fail: probability 1/2, the same on every
/// run.
fn injected(id: &str, attempt: u32) -> bool {
    let h = id.bytes().fold(SEED, |h, b| splitmix(h ^ u64::from(b)));
    splitmix(h ^ u64::from(attempt)) & 1 == 1
}

/// What the worker should have made of an event: `(status, attempts)`.
fn expected(id: &str) -> (&'static str, i32) {
    match (1..=MAX_ATTEMPTS as u32).find(|&a| !injected(id, a)) {
        Some(a) => ("processed", a as i32),
        None => ("failed", MAX_ATTEMPTS),
    }
}

/// Runs after the built-in handler, in the same transaction; counts its calls per event and
/// attempt.
#[derive(Clone, Default)]
struct RandomFailure {
    calls: Arc<Mutex<HashMap<(String, u32), u32>>>,
}

#[async_trait::async_trait]
impl EventHandler for RandomFailure {
    async fn handle(&self, _conn: &mut AnyConnection, event: &Event) -> Result<(), HandlerError> {
        let attempt = event.attempt;
        *self
            .calls
            .lock()
            .unwrap()
            .entry((event.id.clone(), attempt))
            .or_default() += 1;
        if injected(&event.id, attempt) {
            return Err(HandlerError::Other(anyhow::anyhow!(
                "injected failure on attempt {attempt}"
            )));
        }
        Ok(())
    }
}

fn settings(database_url: &str) -> Settings {
    let database_url = database_url.to_owned();
    let env = move |key: &str| -> Option<String> {
        match key {
            "STRIPE_API_SECRET_KEY" => Some("sk_test_e2e".into()),
            "STRIPE_WEBHOOK_SECRET" => Some(WEBHOOK_SECRET.into()),
            "STRIPE_API_BASE" => Some("http://127.0.0.1:9".into()),
            "DATABASE_URL" => Some(database_url.clone()),
            "SERVER_PORT" => Some("0".into()),
            "WEBHOOK_MAX_ATTEMPTS" => Some(MAX_ATTEMPTS.to_string()),
            "WEBHOOK_RETRY_BASE_MS" => Some("5".into()),
            _ => None,
        }
    };
    let mut settings = Settings::from_env(&env).expect("valid test settings");
    // Retries due within milliseconds, and looked for as often: the test stays short.
    settings.worker.retry_max = Duration::from_millis(40);
    settings.worker.poll_interval = Duration::from_millis(20);
    settings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_handler_failures_end_processed_or_failed_never_lost() {
    for db in every_engine().await {
        let faults = RandomFailure::default();
        let handlers = TYPES
            .iter()
            .fold(Handlers::builtin(), |h, t| h.on(t, faults.clone()));
        let app = Application::build_with_handlers(settings(&db.url), handlers)
            .await
            .expect("the application builds");
        let base = format!("http://127.0.0.1:{}", app.port());
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(app.run_until_stopped(shutdown.clone()));

        // A fresh database per engine: fixed ids make the injected failures the same each run.
        let sent = steady_load(
            Load {
                url: format!("{base}/webhook/stripe"),
                prefix: "evt_fault".into(),
                types: TYPES,
                senders: 8,
                max_events: EVENTS,
                retry: Retry {
                    max_tries: 1,
                    backoff: Duration::ZERO,
                },
                pace: Duration::ZERO,
            },
            CancellationToken::new(),
        )
        .await;
        assert_eq!(sent.len(), EVENTS as usize);
        assert!(sent.iter().all(|s| s.acknowledged()), "{:?}", db.engine);

        let store = db.pool().await;
        let rows = wait_until_settled(&store, Duration::from_secs(60)).await;
        assert_eq!(rows.len(), EVENTS as usize, "{:?}: none lost", db.engine);

        let calls = faults.calls.lock().unwrap().clone();
        let (mut processed, mut failed, mut injected_total) = (0, 0, 0);
        for row in &rows {
            let (status, attempts) = expected(&row.id);
            assert_eq!(
                (row.status.as_str(), row.attempts),
                (status, attempts),
                "{:?} {row:?}",
                db.engine
            );
            // Every recorded attempt ran, and no other; a failing one once.
            let ran: Vec<u32> = (1..=MAX_ATTEMPTS as u32 + 1)
                .filter(|a| calls.contains_key(&(row.id.clone(), *a)))
                .collect();
            assert_eq!(ran, (1..=attempts as u32).collect::<Vec<_>>(), "{row:?}");
            for attempt in (1..=attempts as u32).filter(|a| injected(&row.id, *a)) {
                assert_eq!(calls[&(row.id.clone(), attempt)], 1, "{row:?} {attempt}");
            }
            match status {
                "processed" => {
                    processed += 1;
                    injected_total += attempts - 1;
                    assert_eq!(row.last_error, None, "{row:?}");
                }
                _ => {
                    failed += 1;
                    injected_total += attempts;
                    let error = row.last_error.as_deref().unwrap_or_default();
                    assert!(
                        error.contains(&format!("injected failure on attempt {MAX_ATTEMPTS}")),
                        "{row:?}"
                    );
                }
            }
        }
        // The seed gives every path: first-try successes, successes after retries, and
        // events parked as failed.
        assert!(failed > 0 && processed > 0, "{failed} failed");
        assert!(
            rows.iter()
                .any(|r| r.status == "processed" && r.attempts > 1),
            "some succeed on a retry"
        );
        assert_eq!(processed + failed, EVENTS as usize);

        // A failed attempt rolls back the built-in handler's writes with it.
        let processed_of = |t: &str| {
            rows.iter()
                .filter(|r| r.event_type == t && r.status == "processed")
                .count() as i64
        };
        assert_eq!(
            count(&store, "SELECT COUNT(*) FROM customers").await,
            processed_of("customer.created"),
            "{:?}",
            db.engine
        );
        assert_eq!(
            count(&store, "SELECT COUNT(*) FROM charges").await,
            processed_of("charge.succeeded"),
            "{:?}",
            db.engine
        );

        let text = metrics::scrape(&reqwest::Client::new(), &base).await;
        let outcome = |o: &str| {
            metrics::value(
                &text,
                "billing_webhook_events_processed_total",
                &[("outcome", o)],
            )
        };
        assert_eq!(outcome("processed"), processed as f64, "{text}");
        assert_eq!(outcome("failed"), failed as f64, "{text}");
        // Every injected failure but each failed event's last was a retry.
        assert_eq!(
            outcome("retry"),
            (injected_total - failed as i32) as f64,
            "{text}"
        );

        shutdown.cancel();
        server.await.expect("the server task");
    }
}
