//! A database that exists for one test: a SQLite file in a temporary folder, or a fresh
//! database on the PostgreSQL server named by `DATABASE_URL` or the MySQL/MariaDB server named
//! by `MYSQL_DATABASE_URL`, dropped when the [`TestDb`] is dropped, whether the test passed or
//! panicked.
//!
//! One rule for the servers everywhere: when a variable names a server, it must be reachable (a
//! suite that passes by skipping its database tests proves nothing); when it does not, tests run
//! without that engine and tests that need a server skip with a note, except under CI
//! (`CI=true`), where a missing server is a failure instead.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Connection, Executor};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
    Mysql,
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
            Self::Mysql => "mysql",
        })
    }
}

pub struct TestDb {
    /// What the code under test is given as `DATABASE_URL`.
    pub url: String,
    pub engine: Engine,
    _dir: Option<tempfile::TempDir>,
    /// The admin URL and the database's name, to drop it.
    server: Option<(String, String)>,
}

impl TestDb {
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("a temporary folder");
        Self {
            url: format!("sqlite://{}/billing.db", dir.path().display()),
            engine: Engine::Sqlite,
            _dir: Some(dir),
            server: None,
        }
    }

    /// A new, empty database `billing_test_<unique>` on the PostgreSQL server `admin_url`
    /// names. Panics when the server cannot be reached.
    pub async fn postgres(admin_url: &str) -> Self {
        Self::on_server(admin_url, Engine::Postgres).await
    }

    async fn on_server(admin_url: &str, engine: Engine) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the clock is after 1970")
            .subsec_nanos();
        let name = format!(
            "billing_test_{}_{}_{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
        );
        install_default_drivers();
        let mut admin = sqlx::AnyConnection::connect(admin_url)
            .await
            .unwrap_or_else(|e| panic!("the {engine} server for the tests cannot be reached: {e}"));
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .expect("the test database is created");
        let _ = admin.close().await;
        let mut url = url::Url::parse(admin_url).expect("DATABASE_URL is a URL");
        url.set_path(&name);
        Self {
            url: url.to_string(),
            engine,
            _dir: None,
            server: Some((admin_url.to_owned(), name)),
        }
    }

    /// A small pool of the test's own, beside whatever the code under test opens, to read what
    /// was really stored.
    pub async fn pool(&self) -> AnyPool {
        install_default_drivers();
        // The file may not exist yet when the test looks before the service has started.
        let url = match self.engine {
            Engine::Sqlite if !self.url.contains("mode=") => format!("{}?mode=rwc", self.url),
            _ => self.url.clone(),
        };
        AnyPoolOptions::new()
            .max_connections(2)
            .connect(&url)
            .await
            .unwrap_or_else(|e| panic!("the test connects to {:?}: {e}", self.engine))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin_url, name)) = self.server.take() else {
            return;
        };
        let engine = self.engine;
        let drop = match engine {
            Engine::Postgres => format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            _ => format!("DROP DATABASE IF EXISTS {name}"),
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
                    if engine == Engine::Mysql {
                        // MySQL has no DROP ... WITH (FORCE): a connection a killed service left
                        // in a transaction would hold the drop for ever.
                        let ids: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                            "SELECT CAST(id AS SIGNED) FROM information_schema.processlist WHERE db = '{name}'"
                        )))
                        .fetch_all(&mut admin)
                        .await
                        .unwrap_or_default();
                        for id in ids {
                            let kill = format!("KILL CONNECTION {id}");
                            let _ = admin.execute(sqlx::AssertSqlSafe(kill)).await;
                        }
                    }
                    let _ = admin.execute(sqlx::AssertSqlSafe(drop)).await;
                }
            });
        })
        .join();
    }
}

impl Engine {
    /// The variable that names the engine's server for the tests, and the URL schemes it may
    /// have; `None` for SQLite, which needs no server.
    fn server_variable(self) -> Option<(&'static str, [&'static str; 2])> {
        match self {
            Self::Postgres => Some(("DATABASE_URL", ["postgres://", "postgresql://"])),
            Self::Mysql => Some(("MYSQL_DATABASE_URL", ["mysql://", "mariadb://"])),
            Self::Sqlite => None,
        }
    }
}

/// The server of `engine` to test against, when its variable names one. Under CI, a missing
/// server is a failure, not a reason to skip.
pub fn admin_url(engine: Engine) -> Option<String> {
    let (variable, schemes) = engine.server_variable()?;
    let url = std::env::var(variable)
        .ok()
        .filter(|u| schemes.iter().any(|s| u.starts_with(s)));
    if url.is_none() && crate::under_ci() {
        panic!(
            "under CI the database tests need {engine}: set {variable}={}...",
            schemes[0]
        );
    }
    url
}

/// The PostgreSQL server to test against (`DATABASE_URL`).
pub fn postgres_admin_url() -> Option<String> {
    admin_url(Engine::Postgres)
}

/// One fresh database per engine available: SQLite always, PostgreSQL and MySQL when
/// configured.
pub async fn every_engine() -> Vec<TestDb> {
    let mut dbs = vec![TestDb::sqlite()];
    dbs.extend(servers().await);
    dbs
}

/// One fresh database on each server configured.
async fn servers() -> Vec<TestDb> {
    let mut dbs = Vec::new();
    for engine in [Engine::Postgres, Engine::Mysql] {
        if let Some(admin) = admin_url(engine) {
            dbs.push(TestDb::on_server(&admin, engine).await);
        }
    }
    dbs
}

/// One fresh database on each server configured (PostgreSQL, MySQL), for a test that needs a
/// server: none (after saying so on stderr, with the test's name) when neither is, outside CI.
pub async fn servers_or_skip(test: &str) -> Vec<TestDb> {
    let dbs = servers().await;
    if dbs.is_empty() {
        eprintln!(
            "SKIPPED {test}: it needs a database server; set DATABASE_URL=postgres://... or MYSQL_DATABASE_URL=mysql://..."
        );
    }
    dbs
}

/// A fresh database on the server of `engine`, for a test about that engine, or `None` (after
/// saying so on stderr) when none is configured, outside CI.
pub async fn server_or_skip(engine: Engine, test: &str) -> Option<TestDb> {
    match admin_url(engine) {
        Some(admin) => Some(TestDb::on_server(&admin, engine).await),
        None => {
            let variable = engine
                .server_variable()
                .map_or("", |(variable, _)| variable);
            eprintln!("SKIPPED {test}: it needs a {engine} server; set {variable}");
            None
        }
    }
}
