//! What the Lambda mode costs, against the same binary serving HTTP, in one run.
//!
//! The release binary (cargo builds it for this bench) is started as Lambda starts it, under the
//! stand-in Runtime API of `test_support::lambda`, and as the server, each on a PostgreSQL
//! database of its own:
//! - cold start: process start to the first answered `GET /status/alive` (for Lambda: the
//!   first invocation, which reads the secrets, connects and checks the schema; for the server:
//!   listening, then the first HTTP answer);
//! - the webhook: sequential signed deliveries (base64 bodies for Lambda), answered after
//!   storing *and processing* in Lambda mode, after storing only on the server (its worker
//!   processes in the background);
//! - `GET /status/alive`, the transport alone: the Runtime API's two HTTP exchanges per
//!   invocation against one request over a kept-alive connection.
//!
//! `DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo bench -p billing-service --bench lambda`
//! (a database of its own is created on that server and dropped after).

use std::path::Path;
use std::time::{Duration, Instant};

use billing_service::clock::unix_now;
use billing_stripe::fixtures::{self, EventSpec};
use billing_stripe::signature;
use test_support::lambda::events::{self, Front};
use test_support::lambda::{Answer, RuntimeApi};
use test_support::process::{Launch, Process};

const SECRET: &str = "whsec_bench_lambda";
const COLD_STARTS: usize = 15;
const DELIVERIES: usize = 1000;
const WARMUP: usize = 50;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct Row {
    name: &'static str,
    samples: Vec<Duration>,
}

impl Row {
    fn p(&self, p: f64) -> Duration {
        let mut sorted = self.samples.clone();
        sorted.sort();
        percentile(&sorted, p)
    }
}

fn launch<'a>(program: &Path, dir: &'a Path, database_url: &str) -> Launch<'a> {
    let mut launch = Launch {
        program: program.to_owned(),
        dir,
        env: Vec::new(),
    };
    for (key, value) in [
        ("DATABASE_URL", database_url),
        ("STRIPE_API_SECRET_KEY", "sk_test_bench"),
        ("STRIPE_WEBHOOK_SECRET", SECRET),
        ("STRIPE_API_BASE", "http://127.0.0.1:9"),
        ("AUTH_MODE", "jwt"),
        ("AUTH_JWKS_URL", "http://127.0.0.1:9/jwks.json"),
        ("AUTH_ISSUER", "https://auth.example.com/"),
        ("AUTH_AUDIENCE", "billing"),
        ("SERVER_PORT", "0"),
        ("LOG_FORMAT", "json"),
        ("RUST_LOG", "warn,billing_service::startup=info"),
    ] {
        launch = launch.env(key, value);
    }
    launch
}

fn lambda_launch<'a>(launch: Launch<'a>, runtime: &RuntimeApi) -> Launch<'a> {
    runtime
        .env()
        .iter()
        .fold(launch, |launch, (key, value)| launch.env(key, value))
}

fn alive_event() -> serde_json::Value {
    events::get(Front::FunctionUrl, "/status/alive", "")
}

fn status(answer: Answer) -> u64 {
    answer.response()["statusCode"].as_u64().unwrap_or(0)
}

fn body(id: &str) -> String {
    let suffix = id.trim_start_matches("evt_");
    let spec = EventSpec {
        created: unix_now(),
        customer: format!("cus_{suffix}"),
        ..EventSpec::new("customer.created", id)
    };
    fixtures::event(&spec).expect("a fixture").to_string()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Some(admin) = test_support::db::postgres_admin_url() else {
        eprintln!("set DATABASE_URL to a postgres:// server: Lambda runs on PostgreSQL or MySQL");
        std::process::exit(2);
    };
    // A database each: the server's worker would otherwise claim the events Lambda stores
    // before its request processes them (correctly answered `not_pending`, but not measured).
    let db = test_support::db::TestDb::postgres(&admin).await;
    let server_db = test_support::db::TestDb::postgres(&admin).await;
    for url in [&db.url, &server_db.url] {
        let migrated = billing_service::db::Db::connect(
            &billing_service::configuration::DatabaseSettings::new(url.clone()),
        )
        .await
        .expect("connect");
        billing_service::migrate::Migrator::embedded(migrated.engine)
            .expect("migrations")
            .migrate(&migrated, false)
            .await
            .expect("migrate");
        migrated.pool.close().await;
    }
    let program = Path::new(env!("CARGO_BIN_EXE_billing-service"));
    let dir = std::env::temp_dir();
    let size = std::fs::metadata(program).map(|m| m.len()).unwrap_or(0);
    let http = reqwest::Client::new();
    let tag = std::process::id();

    let mut cold_lambda = Row {
        name: "cold start, Lambda (to the first invocation answered)",
        samples: vec![],
    };
    let mut cold_server = Row {
        name: "cold start, server (to the first request answered)",
        samples: vec![],
    };
    for _ in 0..COLD_STARTS {
        let runtime = RuntimeApi::start().await;
        let started = Instant::now();
        let process = Process::spawn(lambda_launch(launch(program, &dir, &db.url), &runtime));
        assert_eq!(
            status(runtime.invoke(alive_event()).await),
            200,
            "{}",
            process.logs()
        );
        cold_lambda.samples.push(started.elapsed());
        drop(process);

        let started = Instant::now();
        let process = Process::start(launch(program, &dir, &server_db.url)).await;
        let response = http
            .get(process.url("/status/alive"))
            .send()
            .await
            .expect("alive");
        assert_eq!(response.status(), 200);
        cold_server.samples.push(started.elapsed());
    }

    // Warm: one process of each, sequential requests.
    let runtime = RuntimeApi::start().await;
    let lambda = Process::spawn(lambda_launch(launch(program, &dir, &db.url), &runtime));
    let server = Process::start(launch(program, &dir, &server_db.url)).await;
    let mut alive_lambda = Row {
        name: "GET /status/alive, Lambda",
        samples: vec![],
    };
    let mut alive_server = Row {
        name: "GET /status/alive, server",
        samples: vec![],
    };
    let mut webhook_lambda = Row {
        name: "webhook, Lambda (stored and processed)",
        samples: vec![],
    };
    let mut webhook_server = Row {
        name: "webhook, server (stored; processed after)",
        samples: vec![],
    };
    for i in 0..WARMUP + DELIVERIES {
        let keep = i >= WARMUP;
        let started = Instant::now();
        assert_eq!(status(runtime.invoke(alive_event()).await), 200);
        let lambda_alive = started.elapsed();
        let started = Instant::now();
        let response = http
            .get(server.url("/status/alive"))
            .send()
            .await
            .expect("alive");
        assert_eq!(response.status(), 200);
        let _ = response.bytes().await;
        let server_alive = started.elapsed();

        let payload = body(&format!("evt_benchl{tag}x{i}"));
        let header = signature::header_value(SECRET, unix_now(), payload.as_bytes());
        let event = events::webhook(payload.as_bytes(), &header);
        let started = Instant::now();
        let answer = runtime.invoke(event).await.response();
        let lambda_webhook = started.elapsed();
        assert_eq!(answer["statusCode"], 200, "{answer}\n{}", lambda.logs());
        assert!(
            answer["body"]
                .as_str()
                .unwrap()
                .contains(r#""outcome":"processed""#),
            "{answer}"
        );

        let payload = body(&format!("evt_benchs{tag}x{i}"));
        let header = signature::header_value(SECRET, unix_now(), payload.as_bytes());
        let started = Instant::now();
        let response = http
            .post(server.url("/webhook/stripe"))
            .header("content-type", "application/json")
            .header("stripe-signature", header)
            .body(payload)
            .send()
            .await
            .expect("delivered");
        assert_eq!(response.status(), 200);
        let _ = response.bytes().await;
        let server_webhook = started.elapsed();
        if keep {
            alive_lambda.samples.push(lambda_alive);
            alive_server.samples.push(server_alive);
            webhook_lambda.samples.push(lambda_webhook);
            webhook_server.samples.push(server_webhook);
        }
    }
    drop(lambda);
    drop(server);

    println!(
        "\nrelease binary {} ({size} bytes, {:.1} MiB); PostgreSQL; {COLD_STARTS} cold starts, \
         {DELIVERIES} sequential requests of each kind after {WARMUP} warm-up\n",
        program.display(),
        size as f64 / (1024.0 * 1024.0)
    );
    println!("| | p50 ms | p99 ms | p50, Lambda / server |");
    println!("|---|---:|---:|---:|");
    for (lambda, server) in [
        (&cold_lambda, &cold_server),
        (&alive_lambda, &alive_server),
        (&webhook_lambda, &webhook_server),
    ] {
        let ratio = ms(lambda.p(0.5)) / ms(server.p(0.5));
        println!(
            "| {} | {:.2} | {:.2} | {ratio:.2}× |",
            lambda.name,
            ms(lambda.p(0.5)),
            ms(lambda.p(0.99))
        );
        println!(
            "| {} | {:.2} | {:.2} | |",
            server.name,
            ms(server.p(0.5)),
            ms(server.p(0.99))
        );
    }
}
