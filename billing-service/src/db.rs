//! The database connection: one pool for PostgreSQL (production) or SQLite (embedded default).
//!
//! Both engines go through sqlx's `Any` driver so that the queries, written in the SQL the two
//! share (`$n` parameters, `ON CONFLICT`, `RETURNING`), exist once. Where the engines really
//! differ (row locking, the history table's DDL), code branches on [`Engine`].

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use secrecy::ExposeSecret;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyConnection, AnyPool, Connection, Executor};

use crate::configuration::DatabaseSettings;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Postgres,
    Sqlite,
}

#[derive(Clone, Debug)]
pub struct Db {
    pub pool: AnyPool,
    pub engine: Engine,
    /// One connection of its own for readiness, so that a pool busy under load is not taken for
    /// a database that is down.
    probe: AnyPool,
}

/// How long readiness waits for the database.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
#[error("cannot reach the database at {target} (tried for {waited:?}): {source}")]
pub struct ConnectError {
    /// Host and port (or the SQLite path); never the password.
    pub target: String,
    pub waited: Duration,
    #[source]
    pub source: sqlx::Error,
}

impl Db {
    /// Connects, retrying with backoff for `settings.connect_retry`: in Kubernetes the service
    /// often starts before the database's network path is ready.
    pub async fn connect(settings: &DatabaseSettings) -> Result<Self, ConnectError> {
        install_default_drivers();
        let (engine, url) = if settings.is_sqlite() {
            (Engine::Sqlite, sqlite_url(settings.url.expose_secret()))
        } else {
            (Engine::Postgres, settings.url.expose_secret().to_owned())
        };
        let statement_timeout_ms = settings.statement_timeout.as_millis();
        let options = AnyPoolOptions::new()
            .max_connections(match engine {
                Engine::Postgres => 10,
                Engine::Sqlite => 4,
            })
            // Short, so that readiness reports a dead database quickly instead of hanging.
            .acquire_timeout(Duration::from_secs(3))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    match engine {
                        // WAL lets readers run beside the single writer; synchronous stays FULL
                        // because an acknowledged webhook must survive a power cut.
                        Engine::Sqlite => {
                            conn.execute("PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON;")
                                .await?;
                        }
                        // A number we format ourselves: nothing from outside is spliced in.
                        Engine::Postgres => {
                            conn.execute(sqlx::AssertSqlSafe(format!(
                                "SET statement_timeout = {statement_timeout_ms}"
                            )))
                            .await?;
                        }
                    }
                    Ok(())
                })
            });
        let retry = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(2))
            .with_total_delay(Some(settings.connect_retry))
            .without_max_times();
        let started = std::time::Instant::now();
        // Probe with single connections: the pool's own connect would retry internally for its
        // whole acquire timeout on every attempt.
        let probe = (|| async { AnyConnection::connect(&url).await?.close().await })
            .retry(retry)
            .when(|e| !matches!(e, sqlx::Error::Configuration(_)))
            .notify(|e, delay| {
                tracing::warn!(target = %settings.host_and_port(), error = %e, ?delay, "database not reachable yet, retrying");
            })
            .await;
        let connected = match probe {
            Ok(()) => options.connect(&url).await,
            Err(e) => Err(e),
        };
        let pool = connected.map_err(|source| ConnectError {
            target: settings.host_and_port(),
            waited: started.elapsed(),
            source,
        })?;
        let probe = AnyPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(READY_TIMEOUT)
            .connect_lazy(&url)
            .map_err(|source| ConnectError {
                target: settings.host_and_port(),
                waited: started.elapsed(),
                source,
            })?;
        Ok(Self {
            pool,
            engine,
            probe,
        })
    }

    /// Whether the database answers now, within a short deadline, on the probe's own
    /// connection.
    pub async fn is_ready(&self) -> bool {
        let probe = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&self.probe);
        matches!(tokio::time::timeout(READY_TIMEOUT, probe).await, Ok(Ok(1)))
    }
}

/// SQLite's file is created on first start (`mode=rwc`) unless the URL says otherwise.
fn sqlite_url(url: &str) -> String {
    if url.contains("mode=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

/// Whether an error means the database cannot be reached or cannot serve now (the caller should
/// retry later), as opposed to a query the database refused, which is a bug to report as one.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(e) => e.code().is_some_and(|code| match code.len() {
            // PostgreSQL's SQLSTATE: connection exceptions (08...), insufficient resources
            // (53...), and the server shutting down or starting (57P01-57P03).
            // 57014: a statement ran past `statement_timeout`, the database too slow to answer.
            5 => {
                code.starts_with("08")
                    || code.starts_with("53")
                    || matches!(code.as_ref(), "57014" | "57P01" | "57P02" | "57P03")
            }
            // SQLite's result codes: busy or locked by another connection.
            _ => sqlite_busy(&code),
        }),
        _ => false,
    }
}

/// SQLite reports its result codes as numbers: 5 (`SQLITE_BUSY`) and 6 (`SQLITE_LOCKED`), the
/// extended ones in the low byte.
fn sqlite_busy(code: &str) -> bool {
    code.parse::<u32>().is_ok_and(|n| matches!(n & 0xff, 5 | 6))
}

impl Db {
    /// Whether a table of this name exists in the connection's schema.
    pub async fn has_table(&self, name: &str) -> Result<bool, sqlx::Error> {
        let sql = match self.engine {
            Engine::Postgres => {
                "SELECT COUNT(*) FROM information_schema.tables
                 WHERE table_schema = current_schema() AND table_name = $1"
            }
            Engine::Sqlite => {
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = $1"
            }
        };
        let count: i64 = sqlx::query_scalar(sql)
            .bind(name)
            .fetch_one(&self.pool)
            .await?;
        Ok(count > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::sqlite_busy;

    #[test]
    fn sqlite_busy_and_locked_are_recognised_with_extended_codes() {
        assert!(sqlite_busy("5"));
        assert!(sqlite_busy("517")); // SQLITE_BUSY_SNAPSHOT
        assert!(sqlite_busy("6"));
        assert!(!sqlite_busy("1"));
        assert!(!sqlite_busy("19")); // SQLITE_CONSTRAINT
        assert!(!sqlite_busy("42P01"));
    }
}
