//! Test helpers: the real application spawned on a random port, on a fresh database from
//! `test-support` (SQLite always, PostgreSQL when `DATABASE_URL` names a server).

use billing_service::clock::unix_now;
use billing_service::configuration::{DatabaseSettings, Settings, StripeApiSettings};
use billing_service::db::Db;
use billing_service::startup::Application;
use billing_service::stripe_reader::StripeReader;
use billing_service::webhook::handlers::Handlers;
use billing_service::webhook::worker::WorkerHealth;
use billing_stripe::fixtures::{self, EventSpec};
use billing_stripe::signature;
use sqlx::Row;
use tokio_util::sync::CancellationToken;

pub const WEBHOOK_SECRET: &str = "whsec_test_secret_for_tests";

/// The service's own kind of pool on a test database, for tests that call the library.
pub async fn connect(url: &str) -> Db {
    Db::connect(&DatabaseSettings::new(url))
        .await
        .expect("connect")
}

/// [`connect`], with the embedded migrations applied.
pub async fn connect_migrated(url: &str) -> Db {
    let db = connect(url).await;
    billing_service::migrate::Migrator::embedded(db.engine)
        .expect("the embedded migrations")
        .migrate(&db, false)
        .await
        .expect("migrate");
    db
}

pub fn test_settings(db_url: &str) -> Settings {
    let db_url = db_url.to_owned();
    let env = move |key: &str| -> Option<String> {
        match key {
            "STRIPE_API_SECRET_KEY" => Some("sk_test_123".into()),
            "STRIPE_WEBHOOK_SECRET" => Some(WEBHOOK_SECRET.into()),
            "DATABASE_URL" => Some(db_url.clone()),
            // Nothing listens there: a test that needs Stripe points this at the double, and
            // anything else asking Stripe fails at once instead of waiting on the network.
            "STRIPE_API_BASE" => Some("http://127.0.0.1:9".into()),
            "SERVER_PORT" => Some("0".into()),
            "POD_NAME" => Some("test-pod".into()),
            _ => None,
        }
    };
    Settings::from_env(&env).expect("test settings are valid")
}

pub struct TestApp {
    pub address: String,
    pub db: Db,
    pub client: reqwest::Client,
    pub worker_health: WorkerHealth,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<()>,
}

impl TestApp {
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request")
    }

    /// Posts `body` to the webhook route, signed now with the test secret.
    pub async fn deliver(&self, body: &str) -> reqwest::Response {
        let header = signature::header_value(WEBHOOK_SECRET, unix_now(), body.as_bytes());
        self.deliver_with(body, Some(&header)).await
    }

    pub async fn deliver_with(&self, body: &str, header: Option<&str>) -> reqwest::Response {
        let mut request = self
            .client
            .post(format!("{}/webhook/stripe", self.address))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(header) = header {
            request = request.header("stripe-signature", header);
        }
        request.send().await.expect("request")
    }

    /// Waits until the event has left `pending`, and returns its row.
    pub async fn wait_processed(&self, id: &str) -> EventState {
        wait_for_event(&self.db, id, |s| s.status != "pending").await
    }

    /// Stops the server the way SIGTERM does and waits for it.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.server.await.expect("server task");
    }
}

pub async fn spawn_app(db_url: &str) -> TestApp {
    spawn_app_with(test_settings(db_url)).await
}

pub async fn spawn_app_with(settings: Settings) -> TestApp {
    spawn_app_with_handlers(settings, Handlers::builtin()).await
}

pub async fn spawn_app_with_handlers(settings: Settings, handlers: Handlers) -> TestApp {
    let app = Application::build_with_handlers(settings, handlers)
        .await
        .expect("app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let db = app.state().db.clone();
    let worker_health = app.state().worker_health.clone();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    TestApp {
        address,
        db,
        client: reqwest::Client::new(),
        worker_health,
        shutdown,
        server,
    }
}

/// A realistic event of `event_type` as JSON text.
pub fn event_json(spec: &EventSpec) -> String {
    fixtures::event(spec).expect("fixture").to_string()
}

#[derive(Debug, Clone)]
pub struct EventState {
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
}

pub async fn event_state(db: &Db, id: &str) -> Option<EventState> {
    let sql = "SELECT status, attempts, last_error FROM stripe_events WHERE id = $1";
    let row = billing_service::db::sql::query(db.engine, sql)
        .bind(id)
        .fetch_optional(&db.pool)
        .await
        .expect("query");
    row.map(|r| EventState {
        status: r.get("status"),
        attempts: r.get("attempts"),
        last_error: r.get("last_error"),
    })
}

pub async fn wait_for_event(db: &Db, id: &str, done: impl Fn(&EventState) -> bool) -> EventState {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Some(state) = event_state(db, id).await.filter(|s| done(s)) {
            return state;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "event {id} never got there"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The service's Stripe reader pointed at the double, with short waits between retries.
pub fn stripe_reader(stripe: &stripe_wiremock::StripeDouble) -> StripeReader {
    StripeReader::new(&StripeApiSettings {
        api_secret_key: billing_stripe::SecretKey::parse("sk_test_sync").unwrap(),
        api_base: stripe.uri().parse().unwrap(),
        timeout: std::time::Duration::from_secs(10),
    })
    .unwrap()
    .with_backoff(std::time::Duration::from_millis(10))
}

pub async fn count(db: &Db, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&db.pool)
        .await
        .expect("count")
}
