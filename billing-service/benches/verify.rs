//! The CPU floor of accepting one webhook: what every delivery costs before the database is
//! touched. `bench/run.sh` reports the service's events/s against it.
//!
//! A 4 KiB `customer.created` event (Stripe's are mostly 1 to 8 KiB), signed as Stripe signs:
//! the HMAC-SHA256 check alone, the envelope parse alone, and both as the service runs them
//! (`verify_delivery`, which also copies the body out as the text to store).

use std::hint::black_box;

use billing_service::configuration::Settings;
use billing_service::webhook::envelope::Envelope;
use billing_service::webhook::receive::verify_delivery;
use billing_stripe::fixtures::{self, EventSpec};
use billing_stripe::signature;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const SECRET: &str = "whsec_bench_secret_for_the_verifier";
const EVENT_BYTES: usize = 4096;
const NOW: i64 = 1_700_000_000;

/// A real fixture, padded through an ignored field to exactly [`EVENT_BYTES`].
fn event_4k() -> Vec<u8> {
    let spec = EventSpec {
        created: NOW,
        ..EventSpec::new("customer.created", "evt_bench_4k")
    };
    let mut event = fixtures::event(&spec).expect("customer.created is a fixture");
    event["padding"] = serde_json::Value::String(String::new());
    let base = serde_json::to_vec(&event).expect("serialisable").len();
    let pad = EVENT_BYTES
        .checked_sub(base)
        .expect("the fixture is under 4 KiB");
    event["padding"] = serde_json::Value::String("x".repeat(pad));
    let body = serde_json::to_vec(&event).expect("serialisable");
    assert_eq!(body.len(), EVENT_BYTES);
    body
}

fn settings() -> Settings {
    let env = |key: &str| -> Option<String> {
        match key {
            "STRIPE_API_SECRET_KEY" => Some("sk_test_bench".into()),
            "STRIPE_WEBHOOK_SECRET" => Some(SECRET.into()),
            "DATABASE_URL" => Some("sqlite://unused.db".into()),
            _ => None,
        }
    };
    Settings::from_env(&env).expect("bench settings are valid")
}

fn verify(c: &mut Criterion) {
    let body = event_4k();
    let header = signature::header_value(SECRET, NOW, &body);
    let settings = settings();
    let mut group = c.benchmark_group("webhook_4k");
    group.throughput(Throughput::Elements(1));
    group.bench_function("signature", |b| {
        b.iter(|| {
            signature::verify(
                Some(black_box(header.as_str())),
                black_box(&body),
                &[SECRET],
                300,
                NOW,
            )
            .expect("valid")
        })
    });
    group.bench_function("envelope", |b| {
        b.iter(|| Envelope::parse(black_box(&body)).expect("valid"))
    });
    group.bench_function("verify_delivery", |b| {
        b.iter(|| {
            verify_delivery(
                &settings.stripe,
                Some(black_box(header.as_str())),
                black_box(&body),
                NOW,
            )
            .expect("valid")
        })
    });
    group.finish();
}

criterion_group!(benches, verify);
criterion_main!(benches);
