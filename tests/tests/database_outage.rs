//! PostgreSQL unreachable for a few seconds under steady webhook load (the benchmark/fault
//! issue). The service's database connection goes through a TCP proxy the test cuts for ~3 s:
//! open connections are reset and new ones refused, as when the database restarts or its
//! network path fails. PostgreSQL only (SQLite cannot be cut off); skipped with a note when
//! `DATABASE_URL` is not a PostgreSQL URL, never under CI.
//!
//! Proves: while the database is down the service answers 503 (so Stripe retries) and reports
//! not-ready, never another error; it answers 2xx again once the database is back, without a
//! restart; every event acknowledged is stored exactly once, including the senders' retries of
//! the 503s; and the worker processes all of them after the outage. It would fail if the
//! service acknowledged an event it had not stored, answered 500 or hung, needed a restart to
//! reconnect, or if its worker died with the connection.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use e2e::service::Service;
use e2e::store::{count, wait_until_settled};
use e2e::webhook::{Load, Retry, steady_load, unique_prefix};
use test_support::db::{TestDb, servers_or_skip};
use test_support::proxy::proxied;
use tokio_util::sync::CancellationToken;

const TYPES: &[&str] = &["customer.created", "charge.succeeded", "invoice.paid"];
const OUTAGE: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_answers_503_then_recovers_losing_nothing() {
    for db in servers_or_skip("database_outage_answers_503_then_recovers_losing_nothing").await {
        answers_503_then_recovers(&db).await;
    }
}

async fn answers_503_then_recovers(db: &TestDb) {
    let (proxy, proxied_url) = proxied(&db.url).await;
    let service = Service::start(&proxied_url).await;
    let store = db.pool().await;
    let client = reqwest::Client::new();

    let stop = CancellationToken::new();
    let load = tokio::spawn(steady_load(
        Load {
            url: service.url("/webhook/stripe"),
            prefix: unique_prefix("outage"),
            types: TYPES,
            senders: 4,
            max_events: 20_000,
            // Like Stripe, but faster: retry a non-2xx after 100 ms, doubling up to 1 s; 40
            // tries outlast the outage many times over.
            retry: Retry {
                max_tries: 40,
                backoff: Duration::from_millis(100),
            },
            pace: Duration::from_millis(10),
        },
        stop.clone(),
    ));

    tokio::time::sleep(Duration::from_secs(1)).await;
    let cut_at = Instant::now();
    proxy.cut();
    // Readiness tells the load balancer while it lasts.
    let ready = client
        .get(service.url("/status/ready"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("/status/ready answers while the database is down");
    assert_eq!(ready.status().as_u16(), 503, "not ready while cut");
    tokio::time::sleep(OUTAGE.saturating_sub(cut_at.elapsed())).await;
    proxy.restore();
    let restored_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    let sent = tokio::time::timeout(Duration::from_secs(60), load)
        .await
        .expect("the senders finish (bounded retries)")
        .expect("the senders do not panic");

    let logs = service.logs();
    let tries: Vec<_> = sent.iter().flat_map(|s| &s.tries).collect();
    let statuses: BTreeSet<_> = tries.iter().map(|t| t.outcome.clone()).collect();
    // Only 200 and 503: no 500, no refused signature, no dropped connection.
    assert!(
        statuses.iter().all(|s| matches!(s, Ok(200) | Ok(503))),
        "{statuses:?}\n{logs}"
    );
    assert!(
        tries
            .iter()
            .filter(|t| t.outcome == Ok(503))
            .all(|t| t.at > cut_at),
        "503s only once the database is cut"
    );
    let during = tries
        .iter()
        .filter(|t| t.outcome == Ok(503) && t.at < restored_at + Duration::from_secs(4))
        .count();
    assert!(during > 0, "503 while the database is down: {statuses:?}");
    // A first try made a second after the restore succeeds: the pool reconnected by itself.
    let recovered = sent.iter().any(|s| {
        s.tries
            .first()
            .is_some_and(|t| t.at > restored_at + Duration::from_secs(1) && t.outcome == Ok(200))
    });
    assert!(recovered, "2xx again after the database is back\n{logs}");
    let unacknowledged: Vec<_> = sent.iter().filter(|s| !s.acknowledged()).collect();
    assert!(
        unacknowledged.is_empty(),
        "every 503 was retried to a 2xx: {unacknowledged:#?}"
    );
    let retried = sent.iter().filter(|s| s.tries.len() > 1).count();
    assert!(retried > 0, "some events needed a retry");

    // Stored exactly once each: every acknowledged id, and nothing else.
    let rows = wait_until_settled(&store, Duration::from_secs(30)).await;
    let stored: BTreeSet<_> = rows.iter().map(|r| r.id.as_str()).collect();
    let expected: BTreeSet<_> = sent.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(rows.len(), sent.len(), "one row per event");
    assert_eq!(stored, expected, "the stored ids are the acknowledged ones");
    assert_eq!(
        count(&store, "SELECT COUNT(DISTINCT id) FROM stripe_events").await,
        sent.len() as i64
    );
    // And the worker, which lost its connection too, processed every one afterwards.
    let not_processed: Vec<_> = rows.iter().filter(|r| r.status != "processed").collect();
    assert!(not_processed.is_empty(), "{not_processed:#?}\n{logs}");
}
