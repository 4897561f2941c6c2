//! Test helpers: a fresh database per test on every engine available, and the real application
//! spawned on a random port.
//!
//! SQLite always runs. PostgreSQL runs when `DATABASE_URL` names a server (`postgres://...`);
//! each test then gets its own database, created here and dropped afterwards. If the variable is
//! set and the server cannot be reached, the test fails: CI must never pass by skipping.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use billing_service::configuration::{DatabaseSettings, Settings};
use billing_service::db::Db;
use billing_service::startup::Application;
use billing_service::webhook::handlers::Handlers;
use billing_stripe::fixtures::{self, EventSpec};
use billing_stripe::signature;
use sqlx::{Connection, Executor, Row};
use tokio_util::sync::CancellationToken;

pub const WEBHOOK_SECRET: &str = "whsec_test_secret_for_tests";

/// A database that exists for one test.
pub struct TestDb {
    pub url: String,
    pub engine: &'static str,
    _dir: Option<tempfile::TempDir>,
    postgres: Option<(String, String)>,
}

impl TestDb {
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}/billing.db", dir.path().display());
        Self {
            url,
            engine: "sqlite",
            _dir: Some(dir),
            postgres: None,
        }
    }

    pub async fn postgres(admin_url: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!(
            "billing_test_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            nanos
        );
        sqlx::any::install_default_drivers();
        let mut admin = sqlx::AnyConnection::connect(admin_url)
            .await
            .unwrap_or_else(|e| panic!("DATABASE_URL is set but PostgreSQL is unreachable: {e}"));
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .expect("create test database");
        let mut url = url::Url::parse(admin_url).expect("DATABASE_URL parses");
        url.set_path(&name);
        Self {
            url: url.to_string(),
            engine: "postgres",
            _dir: None,
            postgres: Some((admin_url.to_owned(), name)),
        }
    }

    pub fn settings(&self) -> DatabaseSettings {
        DatabaseSettings::new(&self.url)
    }

    pub async fn connect(&self) -> Db {
        Db::connect(&self.settings()).await.expect("connect")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin_url, name)) = self.postgres.take() {
            // Drop runs outside async context; a short-lived runtime on its own thread does the
            // cleanup so that test databases do not pile up on the server.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    if let Ok(mut admin) = sqlx::AnyConnection::connect(&admin_url).await {
                        let _ = admin
                            .execute(sqlx::AssertSqlSafe(format!(
                                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                            )))
                            .await;
                    }
                });
            })
            .join();
        }
    }
}

/// The PostgreSQL server to test against, if any.
pub fn postgres_admin_url() -> Option<String> {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| u.starts_with("postgres://") || u.starts_with("postgresql://"))
}

/// One fresh database per available engine: SQLite always, PostgreSQL when configured.
pub async fn test_databases() -> Vec<TestDb> {
    let mut dbs = vec![TestDb::sqlite()];
    if let Some(admin) = postgres_admin_url() {
        dbs.push(TestDb::postgres(&admin).await);
    }
    dbs
}

pub fn test_settings(db_url: &str) -> Settings {
    let db_url = db_url.to_owned();
    let env = move |key: &str| -> Option<String> {
        match key {
            "STRIPE_API_SECRET_KEY" => Some("sk_test_123".into()),
            "STRIPE_WEBHOOK_SECRET" => Some(WEBHOOK_SECRET.into()),
            "DATABASE_URL" => Some(db_url.clone()),
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
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
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
        self.server
            .await
            .expect("server task")
            .expect("server ran cleanly");
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
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    TestApp {
        address,
        db,
        client: reqwest::Client::new(),
        shutdown,
        server,
    }
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
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
    let row = sqlx::query("SELECT status, attempts, last_error FROM stripe_events WHERE id = $1")
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

pub async fn count(db: &Db, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&db.pool)
        .await
        .expect("count")
}
