//! Stripe's side of webhooks: each event the local Stripe creates is posted, signed with the
//! endpoint's secret as Stripe signs (`Stripe-Signature: t=..,v1=..`), to every enabled endpoint
//! subscribed to its type; an answer other than 2xx, or none, is retried with backoff, as Stripe
//! retries (over three days there; over about a minute here, where the service is next door).
//! The events of one action go out in the order Stripe creates them, one at a time.

use std::time::Duration;

use billing_stripe::signature;
use serde_json::Value;
use stripe_wiremock::Api;

/// Attempts per event and endpoint; the waits between them double from [`FIRST_RETRY`].
const ATTEMPTS: u32 = 7;
const FIRST_RETRY: Duration = Duration::from_millis(500);

#[derive(Clone)]
pub struct Deliverer {
    api: Api,
    http: reqwest::Client,
}

impl Deliverer {
    pub fn new(api: Api) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .user_agent("Stripe/1.0 (+https://stripe.com/docs/webhooks)")
            .build()
            .unwrap_or_default();
        Self { api, http }
    }

    /// Sends `events` in the background, in order.
    pub fn send(&self, events: Vec<Value>) {
        let this = self.clone();
        tokio::spawn(async move {
            for event in events {
                this.deliver(&event).await;
            }
        });
    }

    async fn deliver(&self, event: &Value) {
        let event_type = event["type"].as_str().unwrap_or_default();
        let id = event["id"].as_str().unwrap_or_default();
        let payload = event.to_string();
        for (url, secret) in self.api.webhook_endpoints_for(event_type) {
            let mut wait = FIRST_RETRY;
            for attempt in 1..=ATTEMPTS {
                match self.post(&url, &secret, &payload).await {
                    Ok(()) => {
                        tracing::info!(event = id, event_type, url, attempt, "event delivered");
                        break;
                    }
                    Err(why) if attempt < ATTEMPTS => {
                        tracing::warn!(event = id, url, attempt, %why, ?wait, "delivery failed; retrying");
                        tokio::time::sleep(wait).await;
                        wait *= 2;
                    }
                    Err(why) => {
                        tracing::error!(event = id, url, attempt, %why, "delivery failed; giving up");
                    }
                }
            }
        }
    }

    async fn post(&self, url: &str, secret: &str, payload: &str) -> Result<(), String> {
        let now = billing_service::clock::unix_now();
        let response = self
            .http
            .post(url)
            .header("content-type", "application/json; charset=utf-8")
            .header(
                "stripe-signature",
                signature::header_value(secret, now, payload.as_bytes()),
            )
            .body(payload.to_owned())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        match response.status() {
            s if s.is_success() => Ok(()),
            s => Err(format!("answered {s}")),
        }
    }
}
