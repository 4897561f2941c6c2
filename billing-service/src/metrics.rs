//! Prometheus metrics, served as text on `GET /metrics`.
//!
//! A registry per application (not a global recorder) so that tests running several apps in
//! one process each see their own numbers.

use std::sync::Arc;
use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProcessedLabels {
    r#type: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiVersionLabel {
    api_version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TieLabels {
    r#type: String,
    settled: &'static str,
}

#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    received: Family<ResultLabel, Counter>,
    processed: Family<ProcessedLabels, Counter>,
    queue_depth: Gauge<i64, AtomicI64>,
    worker_up: Gauge<i64, AtomicI64>,
    latency: Histogram,
    other_api_version: Family<ApiVersionLabel, Counter>,
    ties: Family<TieLabels, Counter>,
    left_to_worker: Family<ReasonLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("billing");
        let received = Family::<ResultLabel, Counter>::default();
        registry.register(
            "webhook_events_received",
            "Webhook deliveries by result (accepted, duplicate, bad_signature, stale, malformed, too_large, timed_out, busy, unavailable)",
            received.clone(),
        );
        let processed = Family::<ProcessedLabels, Counter>::default();
        registry.register(
            "webhook_events_processed",
            "Processing attempts by event type and outcome (processed, ignored, retry, failed)",
            processed.clone(),
        );
        let queue_depth = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "webhook_queue_depth",
            "Stored events waiting to be processed",
            queue_depth.clone(),
        );
        let worker_up = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "webhook_worker_up",
            "1 while this process's webhook worker runs, 0 once it has stopped",
            worker_up.clone(),
        );
        let latency = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "webhook_processing_latency_seconds",
            "From storing an event to processing it",
            latency.clone(),
        );
        let other_api_version = Family::<ApiVersionLabel, Counter>::default();
        registry.register(
            "webhook_events_other_api_version",
            "Accepted events rendered in another API version than the one the service reads, by version",
            other_api_version.clone(),
        );
        let ties = Family::<TieLabels, Counter>::default();
        registry.register(
            "webhook_same_second_ties",
            "Events of the same second as their object's stored state, by type and how settled (stripe: Stripe's current object written; kept: Stripe unreadable, the later-processed event wins)",
            ties.clone(),
        );
        let left_to_worker = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "webhook_events_left_to_worker",
            "Events whose handlers may run as they are stored, left to the worker with their batch, by reason (needs_stripe: a handler needed Stripe; failed: a handler failed or ran out of time)",
            left_to_worker.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                registry,
                received,
                processed,
                queue_depth,
                worker_up,
                latency,
                other_api_version,
                ties,
                left_to_worker,
            }),
        }
    }
}

impl Metrics {
    pub fn received(&self, result: &'static str) {
        self.inner
            .received
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    pub fn processed(&self, event_type: &str, outcome: &'static str, latency_secs: Option<f64>) {
        self.inner
            .processed
            .get_or_create(&ProcessedLabels {
                r#type: event_type.to_owned(),
                outcome,
            })
            .inc();
        if let Some(latency) = latency_secs {
            self.inner.latency.observe(latency);
        }
    }

    /// Counts an accepted event of another API version; true the first time this process sees
    /// that version, so that it is logged once rather than per event. Only signed events get
    /// here, so the label's values are Stripe's.
    pub fn other_api_version(&self, api_version: &str) -> bool {
        let counter = self
            .inner
            .other_api_version
            .get_or_create(&ApiVersionLabel {
                api_version: api_version.to_owned(),
            });
        counter.inc() == 0
    }

    pub fn tie(&self, event_type: &str, settled: &'static str) {
        self.inner
            .ties
            .get_or_create(&TieLabels {
                r#type: event_type.to_owned(),
                settled,
            })
            .inc();
    }

    pub fn left_to_worker(&self, reason: &'static str, events: usize) {
        self.inner
            .left_to_worker
            .get_or_create(&ReasonLabel { reason })
            .inc_by(events as u64);
    }

    /// The text exposition, with the queue depth and the worker's state as just measured.
    pub fn encode(&self, queue_depth: Option<i64>, worker_up: bool) -> String {
        if let Some(depth) = queue_depth {
            self.inner.queue_depth.set(depth);
        }
        self.inner.worker_up.set(i64::from(worker_up));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry);
        out
    }
}
