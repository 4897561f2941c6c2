//! `stripe-setup trigger`: signed test events, one or many.
//!
//! `stripe trigger` makes Stripe send events, which cannot reach a developer's laptop or a
//! benchmark without a tunnel. This builds the same events locally (from `billing_stripe::fixtures`),
//! signs them exactly as Stripe does (`billing_stripe::signature`) and posts them. With a count
//! and a concurrency it is a load generator: unique event ids (so the receiver's dedupe does not
//! swallow them), keep-alive connections, and a latency histogram.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use billing_stripe::fixtures::{self, EventSpec, UnknownEventType};
use billing_stripe::signature;
use hdrhistogram::Histogram;
use serde_json::json;

#[derive(Debug, Clone)]
pub struct TriggerOptions {
    pub event_type: String,
    pub url: String,
    pub secret: String,
    pub count: u64,
    pub concurrency: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    #[error(transparent)]
    UnknownType(#[from] UnknownEventType),
    #[error("invalid webhook URL '{0}': {1}")]
    BadUrl(String, String),
    #[error("--count and --concurrency must be at least 1")]
    Zero,
    #[error("the webhook secret should look like whsec_...")]
    BadSecret,
    #[error(
        "--secret is not accepted: a command line is visible to every user of the machine (ps); \
         set STRIPE_WEBHOOK_SECRET or pass --secret-file"
    )]
    SecretOnCommandLine,
    #[error("no webhook secret: set STRIPE_WEBHOOK_SECRET or pass --secret-file")]
    NoSecret,
    #[error("cannot read the webhook secret from {path}: {source}")]
    SecretFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// What a run did.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub event_type: String,
    pub sent: u64,
    /// Answered 2xx.
    pub accepted: u64,
    pub failed: u64,
    pub elapsed: Duration,
    /// Milliseconds.
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    /// The first event id sent, for a single trigger's message.
    pub first_id: String,
    /// The first failure, described (status and body, or the transport error).
    pub first_failure: Option<String>,
}

impl Report {
    pub fn events_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.sent as f64 / secs
        } else {
            0.0
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "event_type": self.event_type,
            "sent": self.sent,
            "accepted": self.accepted,
            "failed": self.failed,
            "elapsed_secs": self.elapsed.as_secs_f64(),
            "events_per_sec": self.events_per_sec(),
            "latency_ms": { "p50": self.p50, "p90": self.p90, "p99": self.p99 },
            "first_failure": self.first_failure,
        })
    }

    pub fn to_text(&self) -> String {
        let mut text = if self.sent == 1 {
            format!(
                "Sent {} {} -> {}\n",
                self.event_type,
                self.first_id,
                if self.accepted == 1 {
                    "accepted (2xx)"
                } else {
                    "FAILED"
                }
            )
        } else {
            format!(
                "sent {}, accepted {} (2xx), failed {} in {:.2} s: {:.1} events/s\n\
                 latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms\n",
                self.sent,
                self.accepted,
                self.failed,
                self.elapsed.as_secs_f64(),
                self.events_per_sec(),
                self.p50,
                self.p90,
                self.p99
            )
        };
        if let Some(failure) = &self.first_failure {
            text.push_str(&format!("first failure: {failure}\n"));
        }
        text
    }
}

struct Tally {
    histogram: Histogram<u64>,
    accepted: u64,
    failed: u64,
    first_failure: Option<String>,
}

/// The signing secret: from `--secret-file` (its first line), else from `STRIPE_WEBHOOK_SECRET`
/// (`env`); one given on the command line (`argv`) is refused.
pub fn resolve_secret(
    argv: Option<&str>,
    file: Option<&std::path::Path>,
    env: Option<String>,
) -> Result<String, TriggerError> {
    if argv.is_some() {
        return Err(TriggerError::SecretOnCommandLine);
    }
    let secret = match file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|source| TriggerError::SecretFile {
                path: path.display().to_string(),
                source,
            })?
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned(),
        None => env.unwrap_or_default().trim().to_owned(),
    };
    if secret.is_empty() {
        return Err(TriggerError::NoSecret);
    }
    Ok(secret)
}

/// Sends the events and reports. Per-event failures are counted, not returned as errors.
pub async fn run(options: &TriggerOptions) -> Result<Report, TriggerError> {
    if options.count == 0 || options.concurrency == 0 {
        return Err(TriggerError::Zero);
    }
    if !options.secret.starts_with("whsec_") {
        return Err(TriggerError::BadSecret);
    }
    let url = reqwest::Url::parse(&options.url)
        .map_err(|e| TriggerError::BadUrl(options.url.clone(), e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(TriggerError::BadUrl(
            options.url.clone(),
            "not an http(s) URL".into(),
        ));
    }
    // Fail on an unknown type before sending anything.
    fixtures::event(&EventSpec::new(&options.event_type, "evt_check"))?;

    let workers = options
        .concurrency
        .min(usize::try_from(options.count).unwrap_or(usize::MAX));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(workers)
        .timeout(Duration::from_secs(30))
        .user_agent("Stripe/1.0 (+https://stripe.com/docs/webhooks)")
        .build()?;
    let run_id = run_id();
    let first_id = event_id(&run_id, 0);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();

    let mut tasks = Vec::with_capacity(workers);
    for _ in 0..workers {
        let client = client.clone();
        let url = url.clone();
        let next = Arc::clone(&next);
        let options = options.clone();
        let run_id = run_id.clone();
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally {
                histogram: new_histogram(),
                accepted: 0,
                failed: 0,
                first_failure: None,
            };
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= options.count {
                    return tally;
                }
                let outcome = send_one(&client, &url, &options, &event_id(&run_id, i)).await;
                match outcome {
                    Ok(latency) => {
                        tally.accepted += 1;
                        let micros = u64::try_from(latency.as_micros())
                            .unwrap_or(u64::MAX)
                            .max(1);
                        tally.histogram.saturating_record(micros);
                    }
                    Err(failure) => {
                        tally.failed += 1;
                        tally.first_failure.get_or_insert(failure);
                    }
                }
            }
        }));
    }

    let mut histogram = new_histogram();
    let (mut accepted, mut failed, mut first_failure) = (0, 0, None);
    for task in tasks {
        match task.await {
            Ok(tally) => {
                // Both histograms have the same bounds, so adding cannot fail.
                let _ = histogram.add(&tally.histogram);
                accepted += tally.accepted;
                failed += tally.failed;
                if first_failure.is_none() {
                    first_failure = tally.first_failure;
                }
            }
            Err(e) => {
                failed += 1;
                first_failure.get_or_insert(format!("a sender task failed: {e}"));
            }
        }
    }
    let ms = |q: f64| {
        if histogram.is_empty() {
            0.0
        } else {
            histogram.value_at_quantile(q) as f64 / 1000.0
        }
    };
    Ok(Report {
        event_type: options.event_type.clone(),
        sent: accepted + failed,
        accepted,
        failed,
        elapsed: started.elapsed(),
        p50: ms(0.50),
        p90: ms(0.90),
        p99: ms(0.99),
        first_id,
        first_failure,
    })
}

/// Microseconds from 1 µs to 5 minutes, 3 significant digits.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 300_000_000, 3).expect("constant bounds are valid")
}

async fn send_one(
    client: &reqwest::Client,
    url: &reqwest::Url,
    options: &TriggerOptions,
    id: &str,
) -> Result<Duration, String> {
    let now = unix_now();
    let spec = EventSpec {
        created: now,
        ..EventSpec::new(&options.event_type, id)
    };
    let event = fixtures::event(&spec).map_err(|e| e.to_string())?;
    let body = serde_json::to_vec(&event).map_err(|e| e.to_string())?;
    let header = signature::header_value(&options.secret, now, &body);
    let started = Instant::now();
    let response = client
        .post(url.clone())
        .header("content-type", "application/json; charset=utf-8")
        .header("stripe-signature", header)
        .body(body)
        .send()
        .await
        .map_err(|e| format!("{id}: {e}"))?;
    let status = response.status();
    // Reading the body keeps the connection reusable, and is part of the latency.
    let text = response.text().await.unwrap_or_default();
    let latency = started.elapsed();
    if status.is_success() {
        Ok(latency)
    } else {
        let excerpt: String = text.chars().take(200).collect();
        Err(format!("{id}: HTTP {status}: {excerpt}"))
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Distinguishes runs, so events of a second run are not duplicates of the first's.
fn run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{:x}{:x}", nanos & 0xffff_ffff_ffff, std::process::id())
}

fn event_id(run_id: &str, i: u64) -> String {
    format!("evt_trg{run_id}{i:08}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_comes_from_a_file_or_the_environment_never_argv() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "whsec_from_file\n").unwrap();
        let env = || Some("whsec_from_env".to_owned());
        assert_eq!(
            resolve_secret(None, Some(&file), env()).unwrap(),
            "whsec_from_file"
        );
        assert_eq!(resolve_secret(None, None, env()).unwrap(), "whsec_from_env");
        assert!(matches!(
            resolve_secret(Some("whsec_x"), None, env()),
            Err(TriggerError::SecretOnCommandLine)
        ));
        assert!(matches!(
            resolve_secret(None, None, None),
            Err(TriggerError::NoSecret)
        ));
        assert!(matches!(
            resolve_secret(None, Some(&dir.path().join("missing")), env()),
            Err(TriggerError::SecretFile { .. })
        ));
    }

    #[test]
    fn event_ids_are_unique_within_and_across_runs() {
        let run = run_id();
        assert_ne!(event_id(&run, 1), event_id(&run, 2));
        assert!(event_id(&run, 1).starts_with("evt_"));
    }

    #[tokio::test]
    async fn bad_options_are_refused_before_sending() {
        let options = TriggerOptions {
            event_type: "charge.succeeded".into(),
            url: "http://127.0.0.1:9/webhook".into(),
            secret: "whsec_x".into(),
            count: 1,
            concurrency: 1,
        };
        let unknown = TriggerOptions {
            event_type: "no.such".into(),
            ..options.clone()
        };
        assert!(matches!(
            run(&unknown).await,
            Err(TriggerError::UnknownType(_))
        ));
        let zero = TriggerOptions {
            count: 0,
            ..options.clone()
        };
        assert!(matches!(run(&zero).await, Err(TriggerError::Zero)));
        let secret = TriggerOptions {
            secret: "nope".into(),
            ..options.clone()
        };
        assert!(matches!(run(&secret).await, Err(TriggerError::BadSecret)));
        let url = TriggerOptions {
            url: "not a url".into(),
            ..options
        };
        assert!(matches!(run(&url).await, Err(TriggerError::BadUrl(..))));
    }
}
