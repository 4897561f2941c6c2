//! The service killed with SIGKILL under webhook load, then restarted on the same database (the
//! benchmark/fault issue), on SQLite and, when `DATABASE_URL` names a server, on PostgreSQL.
//!
//! SIGKILL runs no shutdown code: requests and the worker's transaction are cut wherever they
//! are. Proves: every event that was acknowledged before the kill is in the database after it
//! (the 2xx really came after a durable insert), the restarted service's worker takes every
//! stored event to `processed` (work claimed by the killed process is not stuck or lost), and
//! the senders' retries of the deliveries the kill cut off are accepted by the new process,
//! each event stored once.

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use e2e::service::Service;
use e2e::store::{stored_events, wait_for};
use e2e::webhook::{Load, Retry, send_until_acknowledged, steady_load, unique_prefix};
use test_support::db::every_engine;
use tokio_util::sync::CancellationToken;

const TYPES: &[&str] = &[
    "customer.created",
    "charge.succeeded",
    "invoice.paid",
    "customer.subscription.updated",
];
/// Acknowledged events before the kill.
const BEFORE_KILL: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_acknowledged_event() {
    for db in every_engine().await {
        let service = Service::start(&db.url).await;
        let pid = service.pid();
        let store = db.pool().await;

        let stop = CancellationToken::new();
        let load = tokio::spawn(steady_load(
            Load {
                url: service.url("/webhook/stripe"),
                prefix: unique_prefix("crash"),
                types: TYPES,
                senders: 8,
                max_events: 20_000,
                // No retry against the dead process: those are redelivered to the new one.
                retry: Retry {
                    max_tries: 1,
                    backoff: Duration::ZERO,
                },
                pace: Duration::ZERO,
            },
            stop.clone(),
        ));
        // Kill mid-load: once enough events are stored and the worker has a backlog (so the
        // restarted process has work the killed one left), while senders are still sending.
        wait_for(
            &store,
            "events stored before the kill, some still pending",
            Duration::from_secs(30),
            // (If the worker always keeps up, kill anyway: the test must not hang on that.)
            |rows| {
                rows.len() >= BEFORE_KILL
                    && (rows.iter().any(|r| r.status == "pending") || rows.len() >= 4 * BEFORE_KILL)
            },
        )
        .await;
        let logs = service.logs();
        let status = service.kill();
        assert_eq!(status.signal(), Some(9), "pid {pid} died of SIGKILL");
        stop.cancel();
        let sent = tokio::time::timeout(Duration::from_secs(30), load)
            .await
            .expect("the senders stop")
            .expect("the senders do not panic");

        let acknowledged: BTreeSet<_> = sent
            .iter()
            .filter(|s| s.acknowledged())
            .map(|s| s.id.as_str())
            .collect();
        assert!(acknowledged.len() >= BEFORE_KILL / 2, "{:?}", db.engine);
        // Before the restart, as the kill left it: every acknowledged event is there.
        let rows = stored_events(&store).await;
        let stored: BTreeSet<_> = rows.iter().map(|r| r.id.as_str()).collect();
        let lost: Vec<_> = acknowledged.difference(&stored).collect();
        assert!(
            lost.is_empty(),
            "{:?}: acknowledged but not stored: {lost:?}\n{logs}",
            db.engine
        );

        let service = Service::start(&db.url).await;
        // The deliveries the kill cut off, retried as Stripe would, to the new process.
        let client = reqwest::Client::new();
        let url = service.url("/webhook/stripe");
        let retry = Retry {
            max_tries: 5,
            backoff: Duration::from_millis(100),
        };
        for cut_off in sent.iter().filter(|s| !s.acknowledged()) {
            let again = send_until_acknowledged(
                &client,
                &url,
                cut_off.id.clone(),
                cut_off.body.clone(),
                retry,
            )
            .await;
            assert!(again.acknowledged(), "{:?}: {again:?}", db.engine);
        }

        let rows = wait_for(
            &store,
            "every event processed after the restart",
            Duration::from_secs(30),
            |rows| rows.len() >= sent.len() && rows.iter().all(|r| r.status == "processed"),
        )
        .await;
        let stored: BTreeSet<_> = rows.iter().map(|r| r.id.as_str()).collect();
        let all: BTreeSet<_> = sent.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(rows.len(), sent.len(), "{:?}: one row per event", db.engine);
        assert_eq!(stored, all, "{:?}", db.engine);
        drop(service);
    }
}
