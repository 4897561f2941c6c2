//! The backfill's rate and memory: `billing-service sync` (the release binary, as an operator
//! runs it) against the Stripe double holding 10,000 and then 100,000 objects (half customers,
//! half subscriptions), on a fresh PostgreSQL database. Measured per size:
//! - the first sync (every object written) and the second (nothing to write), in objects/s;
//! - the floor: the same pages read by the same reader without writing anything, in this
//!   process, so the ratios say what the database side costs on this machine today;
//! - Stripe requests per object, and the sync's peak RSS (VmHWM, sampled every 5 ms).
//!
//! `cargo bench -p billing-service --bench sync` (PostgreSQL at `DATABASE_URL`, trust auth,
//! default `postgres://postgres@127.0.0.1:5432/test`); `-- --quick` runs 10,000 only.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use billing_service::configuration::StripeApiSettings;
use billing_service::stripe_reader::StripeReader;
use billing_stripe::SecretKey;
use billing_stripe::fixtures::{self, EventSpec};
use serde_json::Value;
use stripe_wiremock::{Kind, StripeDouble};
use test_support::db::TestDb;

const BIN: &str = env!("CARGO_BIN_EXE_billing-service");

fn object(event_type: &str, i: usize) -> Value {
    let spec = EventSpec {
        customer: format!("cus_bench{i:06}"),
        subscription: format!("sub_bench{i:06}"),
        user_id: format!("u-bench-{i}"),
        created: 1_780_000_000 + i as i64,
        ..EventSpec::new(event_type, &format!("evt_bench{i:06}"))
    };
    fixtures::event(&spec).unwrap()["data"]["object"].take()
}

/// Runs the binary with `args`, returning its wall time, peak RSS (KiB) and stdout.
fn run(args: &[&str], env: &[(&str, &str)]) -> (Duration, u64, String) {
    let started = Instant::now();
    let mut child = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start billing-service");
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        if let Ok(status) = std::fs::read_to_string(&status_path)
            && let Some(kib) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        {
            peak = kib;
        }
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().expect("output");
    assert!(out.status.success(), "billing-service {args:?} failed");
    (
        started.elapsed(),
        peak,
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

async fn read_only(stripe: &StripeDouble) -> Duration {
    let reader = StripeReader::new(&StripeApiSettings {
        api_secret_key: SecretKey::parse("sk_test_bench").unwrap(),
        api_base: stripe.uri().parse().unwrap(),
        timeout: Duration::from_secs(30),
    })
    .unwrap();
    let started = Instant::now();
    for (path, query) in [
        ("/v1/customers", vec![]),
        (
            "/v1/subscriptions",
            vec![("status".to_owned(), "all".to_owned())],
        ),
    ] {
        let mut after: Option<String> = None;
        loop {
            let page = reader.page(path, &query, after.as_deref()).await.unwrap();
            match page.next_cursor() {
                Some(next) => after = Some(next.to_owned()),
                None => break,
            }
        }
    }
    started.elapsed()
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let admin = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let sizes: &[usize] = if quick { &[10_000] } else { &[10_000, 100_000] };
    println!(
        "| objects | first sync | objects/s | second sync | objects/s | read only | objects/s | first / read only | requests per object | peak RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for &objects in sizes {
        let stripe = StripeDouble::start().await;
        stripe.insert_many(
            Kind::Customer,
            (0..objects / 2).map(|i| object("customer.created", i)),
        );
        stripe.insert_many(
            Kind::Subscription,
            (0..objects / 2).map(|i| object("customer.subscription.created", i)),
        );
        let db = TestDb::postgres(&admin).await;
        let (url, uri) = (db.url.clone(), stripe.uri());
        let (first, second, rss, summary) = tokio::task::spawn_blocking(move || {
            let env = [
                ("DATABASE_URL", url.as_str()),
                ("STRIPE_API_SECRET_KEY", "sk_test_bench"),
                ("STRIPE_API_BASE", uri.as_str()),
            ];
            let only = ["sync", "--only", "customers,subscriptions", "--json"];
            run(&["migrate"], &env);
            let (first, rss1, summary) = run(&only, &env);
            let (second, rss2, _) = run(&only, &env);
            (first, second, rss1.max(rss2), summary)
        })
        .await
        .unwrap();
        let summary: Value = serde_json::from_str(&summary).expect("the --json summary");
        let written: i64 = ["customers", "subscriptions"]
            .iter()
            .map(|k| summary["kinds"][k]["written"].as_i64().unwrap())
            .sum();
        assert_eq!(written as usize, objects, "{summary}");
        let requests = stripe
            .requests()
            .iter()
            .filter(|r| r.method == "GET")
            .count()
            / 2;
        let floor = read_only(&stripe).await;
        let rate = |d: Duration| objects as f64 / d.as_secs_f64();
        println!(
            "| {objects} | {:.2} s | {:.0} | {:.2} s | {:.0} | {:.2} s | {:.0} | {:.2}× | {:.3} | {:.1} MiB |",
            first.as_secs_f64(),
            rate(first),
            second.as_secs_f64(),
            rate(second),
            floor.as_secs_f64(),
            rate(floor),
            first.as_secs_f64() / floor.as_secs_f64(),
            requests as f64 / objects as f64,
            rss as f64 / 1024.0
        );
    }
}
