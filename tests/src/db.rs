//! A database that exists for one test: a SQLite file in a temporary folder, or a fresh
//! database on the PostgreSQL server named by `DATABASE_URL`, dropped afterwards.
//!
//! When `DATABASE_URL` names a PostgreSQL server and it cannot be reached, the test fails: a
//! suite that passes by skipping its database tests proves nothing. PostgreSQL-only tests skip
//! (with a note on stderr) only when `DATABASE_URL` is not a PostgreSQL URL, and never under CI.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use billing_service::configuration::DatabaseSettings;
use billing_service::db::Db;
use sqlx::{Connection, Executor};

pub struct TestDb {
    /// What the service is given as `DATABASE_URL`.
    pub url: String,
    pub engine: Engine,
    _dir: Option<tempfile::TempDir>,
    /// The admin URL and the database's name, to drop it.
    postgres: Option<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

impl TestDb {
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("a temporary folder");
        Self {
            url: format!("sqlite://{}/billing.db", dir.path().display()),
            engine: Engine::Sqlite,
            _dir: Some(dir),
            postgres: None,
        }
    }

    /// A new, empty database `billing_test_<unique>` on the server `admin_url` names.
    pub async fn postgres(admin_url: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the clock is after 1970")
            .subsec_nanos();
        let name = format!(
            "billing_test_e2e_{}_{}_{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
        );
        sqlx::any::install_default_drivers();
        let mut admin = sqlx::AnyConnection::connect(admin_url)
            .await
            .unwrap_or_else(|e| {
                panic!("DATABASE_URL is set but PostgreSQL cannot be reached: {e}")
            });
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .expect("create the test database");
        let _ = admin.close().await;
        let mut url = url::Url::parse(admin_url).expect("DATABASE_URL is a URL");
        url.set_path(&name);
        Self {
            url: url.to_string(),
            engine: Engine::Postgres,
            _dir: None,
            postgres: Some((admin_url.to_owned(), name)),
        }
    }

    /// A pool of the test's own, beside the service's, to read what was stored.
    pub async fn connect(&self) -> Db {
        Db::connect(&DatabaseSettings::new(&self.url))
            .await
            .expect("the test connects to its database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin_url, name)) = self.postgres.take() else {
            return;
        };
        // Drop may run inside the test's runtime, where blocking on another is not allowed: a
        // short-lived runtime on its own thread drops the database, so none pile up on the
        // server. FORCE ends connections a killed service may have left.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
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

/// The PostgreSQL server to test against, when `DATABASE_URL` names one.
pub fn postgres_admin_url() -> Option<String> {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| u.starts_with("postgres://") || u.starts_with("postgresql://"))
}

/// One fresh database per engine available: SQLite always, PostgreSQL when configured.
pub async fn every_engine() -> Vec<TestDb> {
    let mut dbs = vec![TestDb::sqlite()];
    if let Some(admin) = postgres_admin_url() {
        dbs.push(TestDb::postgres(&admin).await);
    }
    dbs
}

/// A fresh PostgreSQL database, or `None` (after saying so on stderr) when `DATABASE_URL` is
/// not a PostgreSQL URL. Under CI (`CI` set) it is never skipped: it fails instead.
pub async fn postgres_or_skip(test: &str) -> Option<TestDb> {
    match postgres_admin_url() {
        Some(admin) => Some(TestDb::postgres(&admin).await),
        None if std::env::var_os("CI").is_some() => {
            panic!("{test} needs PostgreSQL: CI must set DATABASE_URL=postgres://...")
        }
        None => {
            eprintln!("SKIPPED {test}: it needs PostgreSQL; set DATABASE_URL=postgres://...");
            None
        }
    }
}
