//! Signed deliveries to `POST /webhook/stripe`, as Stripe makes them: each try signed afresh,
//! and a sender that retries a non-2xx answer with backoff.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use billing_service::clock::unix_now;
use billing_stripe::fixtures::{self, EventSpec};
use billing_stripe::signature;
use tokio_util::sync::CancellationToken;

use crate::WEBHOOK_SECRET;

/// A prefix for event ids no other test (or earlier run on the same database) uses.
pub fn unique_prefix(tag: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .subsec_nanos();
    format!(
        "evt_e2e{tag}{}x{}x{nanos}x",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A realistic event of `event_type` with id `id`, created now, whose objects (customer,
/// charge, ...) are its own, so events do not overwrite each other's rows.
pub fn event_body(event_type: &str, id: &str) -> String {
    let suffix = id.trim_start_matches("evt_");
    let spec = EventSpec {
        created: unix_now(),
        customer: format!("cus_{suffix}"),
        subscription: format!("sub_{suffix}"),
        user_id: format!("user-{suffix}"),
        ..EventSpec::new(event_type, id)
    };
    fixtures::event(&spec)
        .unwrap_or_else(|e| panic!("{e}"))
        .to_string()
}

/// One signed POST. `Ok(status)` or `Err(transport error)`.
pub async fn deliver(client: &reqwest::Client, url: &str, body: &str) -> Result<u16, String> {
    let header = signature::header_value(WEBHOOK_SECRET, unix_now(), body.as_bytes());
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .header("stripe-signature", header)
        .body(body.to_owned())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    // Read to the end, so the kept-alive connection can be reused.
    let _ = response.bytes().await;
    Ok(status)
}

/// One try of one delivery: when it ended, and the status or transport error.
#[derive(Debug, Clone)]
pub struct Try {
    pub at: Instant,
    pub outcome: Result<u16, String>,
}

impl Try {
    pub fn is_success(&self) -> bool {
        matches!(self.outcome, Ok(200..=299))
    }
}

/// One event and every try made to deliver it.
#[derive(Debug, Clone)]
pub struct Sent {
    pub id: String,
    pub body: String,
    pub tries: Vec<Try>,
}

impl Sent {
    /// Whether some try was answered 2xx: the service then promised the event is stored.
    pub fn acknowledged(&self) -> bool {
        self.tries.iter().any(Try::is_success)
    }
}

/// How a sender retries a delivery that was not answered 2xx.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Tries per event, the first included (1: no retry).
    pub max_tries: u32,
    /// Pause before the first retry; doubled per retry up to one second.
    pub backoff: Duration,
}

/// Delivers `body` until it is answered 2xx or `retry` runs out (so at most
/// `max_tries` tries and about `max_tries` seconds).
pub async fn send_until_acknowledged(
    client: &reqwest::Client,
    url: &str,
    id: String,
    body: String,
    retry: Retry,
) -> Sent {
    let mut sent = Sent {
        id,
        body,
        tries: Vec::new(),
    };
    let mut backoff = retry.backoff;
    for n in 1..=retry.max_tries {
        let outcome = deliver(client, url, &sent.body).await;
        let attempt = Try {
            at: Instant::now(),
            outcome,
        };
        let done = attempt.is_success();
        sent.tries.push(attempt);
        if done || n == retry.max_tries {
            break;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
    sent
}

/// What [`steady_load`] sends.
#[derive(Debug, Clone)]
pub struct Load {
    pub url: String,
    /// Event ids are this prefix and a number from 0.
    pub prefix: String,
    /// Taken in turn.
    pub types: &'static [&'static str],
    pub senders: usize,
    /// A bound, whatever `stop` does.
    pub max_events: u64,
    pub retry: Retry,
    /// Each sender's pause between two events.
    pub pace: Duration,
}

/// Steady load: concurrent senders, each delivering new events one after another, each event
/// retried until acknowledged or its retries run out, until `stop` fires (an event under way is
/// still seen through) or `max_events` were started in all. Returns every event started.
pub async fn steady_load(load: Load, stop: CancellationToken) -> Vec<Sent> {
    let Load {
        url,
        prefix,
        types,
        senders,
        max_events,
        retry,
        pace,
    } = load;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client");
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..senders {
        let (client, url, prefix, next, stop) = (
            client.clone(),
            url.to_owned(),
            prefix.to_owned(),
            next.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut sent = Vec::new();
            while !stop.is_cancelled() {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= max_events {
                    break;
                }
                let id = format!("{prefix}{n:06}");
                let body = event_body(types[n as usize % types.len()], &id);
                sent.push(send_until_acknowledged(&client, &url, id, body, retry).await);
                if !pace.is_zero() {
                    tokio::time::sleep(pace).await;
                }
            }
            sent
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("a sender task"));
    }
    all
}
