//! The database connection: one pool for PostgreSQL (production), MySQL/MariaDB (the template's
//! other engine) or SQLite (embedded default).
//!
//! All engines go through sqlx's `Any` driver so that the queries exist once, written in the SQL
//! PostgreSQL and SQLite share (`$n` parameters, `ON CONFLICT`). MySQL's differences are
//! confined to [`sql`]: its placeholders and its upserts are derived there from the same text
//! and declarations. Where the engines really differ otherwise (row locking, the history table's
//! DDL, session settings), code branches on [`Engine`].

pub mod sql;

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use secrecy::ExposeSecret;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::mysql::MySqlDatabaseError;
use sqlx::{AnyConnection, AnyPool, Connection, Executor};

use crate::configuration::DatabaseSettings;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Postgres,
    /// MySQL 8.0+ or MariaDB 10.6+ (both have `FOR UPDATE SKIP LOCKED`).
    Mysql,
    Sqlite,
}

impl Engine {
    fn of(settings: &DatabaseSettings) -> Self {
        if settings.is_sqlite() {
            Self::Sqlite
        } else if settings.is_mysql() {
            Self::Mysql
        } else {
            Self::Postgres
        }
    }

    /// The engine a connection talks to.
    pub fn of_connection(conn: &AnyConnection) -> Self {
        match conn.backend_name() {
            "PostgreSQL" => Self::Postgres,
            "MySQL" => Self::Mysql,
            _ => Self::Sqlite,
        }
    }
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

/// A pooled connection idle at least this long is pinged before it is handed out; one used more
/// recently is taken as alive. sqlx pings on every acquire by default: under load that is a round
/// trip more for every batch of webhooks (BENCHMARKS.md). The connections a database restart or
/// a failover leaves dead have sat idle since, so they are still found and replaced; a connection
/// that dies while busy fails its statement, which is reported (a delivery gets 503 and Stripe
/// retries it). HikariCP skips its check the same way, for connections used in the last 500 ms.
const PING_WHEN_IDLE_FOR: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot reach the database at {target} (tried for {waited:?}): {source}")]
    Unreachable {
        /// Host and port (or the SQLite path); never the password.
        target: String,
        waited: Duration,
        #[source]
        source: sqlx::Error,
    },
    #[error("the database at {target} is {version}, which is not supported: {why}")]
    Unsupported {
        target: String,
        version: String,
        why: &'static str,
    },
}

impl Db {
    /// Connects, retrying with backoff for `settings.connect_retry`: in Kubernetes the service
    /// often starts before the database's network path is ready.
    pub async fn connect(settings: &DatabaseSettings) -> Result<Self, ConnectError> {
        install_default_drivers();
        let engine = Engine::of(settings);
        let url = match engine {
            Engine::Sqlite => sqlite_url(settings.url.expose_secret()),
            _ => settings.url.expose_secret().to_owned(),
        };
        let statement_timeout = settings.statement_timeout;
        let statement_timeout_ms = statement_timeout.as_millis();
        let options = AnyPoolOptions::new()
            .max_connections(settings.max_connections.unwrap_or(match engine {
                Engine::Postgres | Engine::Mysql => 10,
                Engine::Sqlite => 4,
            }))
            // Short, so that readiness reports a dead database quickly instead of hanging.
            .acquire_timeout(Duration::from_secs(3))
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_WHEN_IDLE_FOR {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
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
                        Engine::Mysql => mysql_session(conn, statement_timeout).await?,
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
        let unreachable = |source| ConnectError::Unreachable {
            target: settings.host_and_port(),
            waited: started.elapsed(),
            source,
        };
        let pool = connected.map_err(unreachable)?;
        if engine == Engine::Mysql {
            let version: String = sqlx::query_scalar("SELECT VERSION()")
                .fetch_one(&pool)
                .await
                .map_err(unreachable)?;
            if let Err(why) = mysql_supported(&version) {
                return Err(ConnectError::Unsupported {
                    target: settings.host_and_port(),
                    version,
                    why,
                });
            }
        }
        let probe = AnyPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(READY_TIMEOUT)
            .connect_lazy(&url)
            .map_err(unreachable)?;
        Ok(Self {
            pool,
            engine,
            probe,
        })
    }

    /// A pool of its own to the same database, with the same settings, of at most
    /// `connections`: its connections are made on the runtime that first uses them, and are
    /// woken by its driver. Needs a Tokio runtime.
    pub fn own_pool(&self, connections: u32) -> Self {
        let pool = self
            .pool
            .options()
            .clone()
            .max_connections(connections)
            .connect_lazy_with((*self.pool.connect_options()).clone());
        Self {
            pool,
            engine: self.engine,
            probe: self.probe.clone(),
        }
    }

    /// Whether the database answers now, within a short deadline, on the probe's own
    /// connection.
    pub async fn is_ready(&self) -> bool {
        let probe = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&self.probe);
        matches!(tokio::time::timeout(READY_TIMEOUT, probe).await, Ok(Ok(1)))
    }
}

/// Whether a MySQL server's `VERSION()` is one we support: MySQL 8.0+ (8.4 LTS) or MariaDB
/// 10.6+, the first releases with `FOR UPDATE SKIP LOCKED`, which the worker's claim needs.
pub fn mysql_supported(version: &str) -> Result<(), &'static str> {
    let mut numbers = version
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let major = numbers.next().unwrap_or(0);
    let minor = numbers.next().unwrap_or(0);
    if is_mariadb(version) {
        if (major, minor) < (10, 6) {
            return Err("billing needs MariaDB 10.6 or newer (FOR UPDATE SKIP LOCKED)");
        }
    } else if major < 8 {
        return Err("billing needs MySQL 8.0 or newer (FOR UPDATE SKIP LOCKED)");
    }
    Ok(())
}

/// A MySQL session as the queries expect it. READ COMMITTED, as on PostgreSQL: the worker's
/// locking reads then lock only the rows they claim, not the gaps between them. Strict mode
/// whatever the server's default: a value too long for its column is an error, never silently
/// cut (two ids cut to the same prefix would be one row). And the statement timeout, which also
/// bounds a wait for a row lock.
async fn mysql_session(conn: &mut AnyConnection, timeout: Duration) -> Result<(), sqlx::Error> {
    conn.execute(
        "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED;
         SET SESSION sql_mode = CONCAT_WS(',', @@SESSION.sql_mode, 'STRICT_ALL_TABLES')",
    )
    .await?;
    mysql_timeouts(conn, timeout, (!timeout.is_zero()).then_some(timeout)).await
}

/// Lifts the statement timeout of a MySQL session (for the migrator, whose lock wait and
/// scripts may take as long as they take).
pub async fn mysql_without_timeout(conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
    const A_YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
    mysql_timeouts(conn, Duration::ZERO, Some(A_YEAR)).await
}

/// Sets the statement timeout (zero: none), which has a different name on each server (MariaDB
/// counts seconds, MySQL milliseconds and only for `SELECT`), and the longest wait for a row
/// lock (`None`: the server's).
async fn mysql_timeouts(
    conn: &mut AnyConnection,
    statement: Duration,
    lock_wait: Option<Duration>,
) -> Result<(), sqlx::Error> {
    let version: String = sqlx::query_scalar("SELECT VERSION()")
        .fetch_one(&mut *conn)
        .await?;
    let statement = if is_mariadb(&version) {
        format!("max_statement_time = {}", statement.as_secs_f64())
    } else {
        format!("max_execution_time = {}", statement.as_millis())
    };
    let lock_wait = lock_wait.map_or(String::new(), |wait| {
        format!(", innodb_lock_wait_timeout = {}", wait.as_secs().max(1))
    });
    // Numbers we format ourselves: nothing from outside is spliced in.
    conn.execute(sqlx::AssertSqlSafe(format!(
        "SET SESSION {statement}{lock_wait}"
    )))
    .await?;
    Ok(())
}

fn is_mariadb(version: &str) -> bool {
    version.contains("MariaDB")
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
        sqlx::Error::Database(e) => match e.try_downcast_ref::<MySqlDatabaseError>() {
            Some(mysql) => mysql_unavailable(mysql.number()),
            None => e.code().is_some_and(|code| match code.len() {
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
        },
        _ => false,
    }
}

/// MySQL's and MariaDB's error numbers for a server that cannot serve now: too many connections
/// (1040), shutting down (1053), a lock wait or statement past its time (1205; 3024 on MySQL,
/// 1969 on MariaDB), a deadlock the server broke by rolling one transaction back (1213), a
/// connection killed (1927) or a query interrupted (1317), and a server read-only while it
/// fails over (1290, 1836), as Aurora's writer does.
fn mysql_unavailable(number: u16) -> bool {
    matches!(
        number,
        1040 | 1053 | 1205 | 1213 | 1290 | 1317 | 1836 | 1927 | 1969 | 3024
    )
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
            Engine::Mysql => {
                "SELECT COUNT(*) FROM information_schema.tables
                 WHERE table_schema = DATABASE() AND table_name = ?"
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
    use super::{mysql_supported, sqlite_busy};

    #[test]
    fn old_mysql_and_mariadb_servers_are_refused() {
        assert!(mysql_supported("10.11.19-MariaDB-0+deb12u1").is_ok());
        assert!(mysql_supported("10.6.0-MariaDB").is_ok());
        assert!(mysql_supported("11.4.2-MariaDB").is_ok());
        assert!(mysql_supported("8.0.36").is_ok());
        assert!(mysql_supported("8.4.3").is_ok());
        assert!(mysql_supported("8.0.35-mysql-aurora").is_ok());
        assert!(
            mysql_supported("10.5.23-MariaDB")
                .unwrap_err()
                .contains("10.6")
        );
        assert!(
            mysql_supported("5.7.44-log")
                .unwrap_err()
                .contains("MySQL 8.0")
        );
    }

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
