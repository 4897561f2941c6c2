//! The service's own migrator, compatible with Flyway.
//!
//! sqlx's migrator neither reads Flyway's file names nor keeps Flyway's history table, and the
//! Kubernetes migration Job used to need a separate Flyway image kept in step with the service.
//! This one runs from the service's binary, with the scripts embedded at build time, and keeps
//! `flyway_schema_history` exactly as Flyway does (same columns, types `SQL`/`UNDO_SQL`, same
//! checksum), so either tool can take over from the other.
//!
//! Each script runs in its own transaction together with its history row. On PostgreSQL a
//! session advisory lock makes concurrent migrators (several replicas starting at once, or the
//! Job racing a pod) take turns; on MySQL a named lock (`GET_LOCK`) held by the migrator's one
//! connection does.
//!
//! MySQL commits each DDL statement as it runs, so a script cannot be undone by a rollback there.
//! Its statements run one by one; if one fails, the ones before it stay applied, and the history
//! gets a row with `success = false`, as Flyway writes it. The error names the statement, and
//! every later run refuses to go on until an operator has completed or reverted the script by
//! hand and deleted that row (Flyway's `repair`).

pub mod script;

use std::time::Instant;

use include_dir::{Dir, include_dir};
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, Connection, Row};

use crate::db::{self, Db, Engine, sql};
pub use script::{Kind, Script, ScriptError, Scripts, Version};

static POSTGRES: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/../migrations/postgres");
static SQLITE: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/../migrations/sqlite");
static MYSQL: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/../migrations/mysql");

/// Flyway's name for its history table.
const HISTORY_TABLE: &str = "flyway_schema_history";

/// An arbitrary constant that names our advisory lock (Flyway uses its own, different one).
const LOCK_KEY: i64 = 0x0b11_1e55;

/// MySQL's lock names are server-wide and at most 64 characters: ours is this prefix and a hash
/// of the schema's name, so that migrators of different schemas do not wait for each other.
const MYSQL_LOCK: &str = "CONCAT('billing-migrate:', MD5(DATABASE()))";

/// How long one `GET_LOCK` waits before it is asked again (MariaDB has no "wait for ever").
const MYSQL_LOCK_WAIT_SECS: i64 = 60;

/// The scripts compiled into this binary for an engine.
pub fn embedded(engine: Engine) -> Result<Scripts, ScriptError> {
    let dir = match engine {
        Engine::Postgres => &POSTGRES,
        Engine::Sqlite => &SQLITE,
        Engine::Mysql => &MYSQL,
    };
    Scripts::new(dir.files().filter_map(|file| {
        let name = file.path().file_name()?.to_str()?.to_owned();
        let sql = file.contents_utf8()?.to_owned();
        Some((name, sql))
    }))
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Script(#[from] ScriptError),
    #[error(
        "{script} was changed after it was applied (checksum {applied} in the history, {current} now); restore the file and put the change in a new migration"
    )]
    ChecksumMismatch {
        script: String,
        applied: i32,
        current: i32,
    },
    #[error("version {version} ({script}) is in the history but not in this build")]
    MissingScript { version: String, script: String },
    #[error("{script} is older than the latest applied version {latest} but was never applied")]
    OutOfOrder { script: String, latest: String },
    #[error(
        "{script} is recorded as failed in the history; fix the database by hand and delete that row"
    )]
    FailedBefore { script: String },
    #[error("nothing to undo: no versioned migration is applied")]
    NothingToUndo,
    #[error("version {version} has no undo script (U{version}__...sql)")]
    NoUndoScript { version: String },
    #[error("{script} failed: {source}")]
    ScriptFailed {
        script: String,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "{script} failed at statement {failed} of {total}: {source}. MySQL commits each statement as it runs: the {applied} before it stay applied, and the history records the script as failed. Complete or revert them by hand, delete that row from flyway_schema_history, and migrate again"
    )]
    PartlyApplied {
        script: String,
        failed: usize,
        total: usize,
        applied: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("migration history: {0}")]
    Database(#[from] sqlx::Error),
}

/// One thing the migrator does or would do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Apply { script: String },
    Undo { script: String, version: String },
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Apply { script } => write!(f, "apply {script}"),
            Step::Undo { script, version } => write!(f, "undo version {version} with {script}"),
        }
    }
}

/// A row of `flyway_schema_history`, as far as the migrator needs it.
#[derive(Debug)]
struct Applied {
    version: Option<String>,
    description: String,
    kind: String,
    script: String,
    checksum: Option<i32>,
    success: bool,
}

pub struct Migrator {
    scripts: Scripts,
}

impl Migrator {
    pub fn new(scripts: Scripts) -> Self {
        Self { scripts }
    }

    pub fn embedded(engine: Engine) -> Result<Self, MigrateError> {
        Ok(Self::new(embedded(engine)?))
    }

    /// Applies every pending script (or, with `dry_run`, only says which it would apply).
    pub async fn migrate(&self, db: &Db, dry_run: bool) -> Result<Vec<Step>, MigrateError> {
        let mut conn = lock(db).await?;
        let result = self.migrate_on(&mut conn, db.engine, dry_run).await;
        unlock(db, conn).await?;
        result
    }

    /// The scripts [`Migrator::migrate`] would apply, read without the lock and without writing
    /// anything (not even the history table), for commands that need a migrated database.
    pub async fn pending_scripts(&self, db: &Db) -> Result<Vec<String>, MigrateError> {
        let history = match db.has_table(HISTORY_TABLE).await? {
            true => history(&mut *db.pool.acquire().await?).await?,
            false => Vec::new(),
        };
        Ok(self
            .pending(&history)?
            .iter()
            .map(|s| s.name.clone())
            .collect())
    }

    /// Reverts the latest applied versioned script with its `U` script.
    pub async fn undo(&self, db: &Db, dry_run: bool) -> Result<Vec<Step>, MigrateError> {
        let mut conn = lock(db).await?;
        let result = self.undo_on(&mut conn, db.engine, dry_run).await;
        unlock(db, conn).await?;
        result
    }

    async fn migrate_on(
        &self,
        conn: &mut AnyConnection,
        engine: Engine,
        dry_run: bool,
    ) -> Result<Vec<Step>, MigrateError> {
        let pending = self.pending(&history(conn).await?)?;
        if !dry_run {
            for script in &pending {
                run_script(conn, engine, script, script.version.as_ref(), "SQL").await?;
            }
        }
        Ok(pending
            .iter()
            .map(|s| Step::Apply {
                script: s.name.clone(),
            })
            .collect())
    }

    async fn undo_on(
        &self,
        conn: &mut AnyConnection,
        engine: Engine,
        dry_run: bool,
    ) -> Result<Vec<Step>, MigrateError> {
        let history = history(conn).await?;
        self.validate(&history)?;
        let latest = applied_versions(&history)
            .into_iter()
            .max()
            .ok_or(MigrateError::NothingToUndo)?;
        let undo = self
            .scripts
            .undo_script(&latest)
            .ok_or_else(|| MigrateError::NoUndoScript {
                version: latest.to_string(),
            })?;
        if !dry_run {
            run_script(conn, engine, undo, Some(&latest), "UNDO_SQL").await?;
        }
        Ok(vec![Step::Undo {
            script: undo.name.clone(),
            version: latest.to_string(),
        }])
    }

    /// Checks the history against the scripts: applied ones unchanged and present, none failed.
    fn validate(&self, history: &[Applied]) -> Result<(), MigrateError> {
        if let Some(failed) = history.iter().find(|row| !row.success) {
            return Err(MigrateError::FailedBefore {
                script: failed.script.clone(),
            });
        }
        for version in applied_versions(history) {
            let row = history
                .iter()
                .rev()
                .find(|r| {
                    r.kind == "SQL"
                        && r.version.as_deref().and_then(Version::parse) == Some(version.clone())
                })
                .expect("an applied version has a row");
            let script = self
                .scripts
                .versioned_script(Some(&version))
                .ok_or_else(|| MigrateError::MissingScript {
                    version: version.to_string(),
                    script: row.script.clone(),
                })?;
            if row.checksum != Some(script.checksum) {
                return Err(MigrateError::ChecksumMismatch {
                    script: script.name.clone(),
                    applied: row.checksum.unwrap_or_default(),
                    current: script.checksum,
                });
            }
        }
        Ok(())
    }

    fn pending(&self, history: &[Applied]) -> Result<Vec<&Script>, MigrateError> {
        self.validate(history)?;
        let applied = applied_versions(history);
        let latest = applied.iter().max().cloned();
        let mut pending = Vec::new();
        for script in &self.scripts.versioned {
            let version = script
                .version
                .as_ref()
                .expect("versioned scripts have versions");
            if applied.contains(version) {
                continue;
            }
            if let Some(latest) = latest.as_ref().filter(|latest| version < *latest) {
                return Err(MigrateError::OutOfOrder {
                    script: script.name.clone(),
                    latest: latest.to_string(),
                });
            }
            pending.push(script);
        }
        for script in &self.scripts.repeatable {
            let last = history.iter().rposition(|r| {
                r.kind == "SQL" && r.version.is_none() && r.description == script.description
            });
            // Re-applied when its text changed, and also after an undo, which may have dropped
            // what it had created (an undo of the tables drops the views over them).
            let stale = match last {
                None => true,
                Some(i) => {
                    history[i].checksum != Some(script.checksum)
                        || history[i..].iter().any(|r| r.kind == "UNDO_SQL")
                }
            };
            if stale {
                pending.push(script);
            }
        }
        Ok(pending)
    }
}

/// A connection holding the migration lock, with the history table in place.
async fn lock(db: &Db) -> Result<PoolConnection<Any>, MigrateError> {
    let mut conn = db.pool.acquire().await?;
    if db.engine == Engine::Postgres {
        // Waiting for another migrator may take as long as its migration: not bounded by the
        // statement timeout. The lock is the session's, so it outlives this transaction.
        let mut tx = conn.begin().await?;
        sqlx::query("SET LOCAL statement_timeout = 0")
            .execute(&mut *tx)
            .await?;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(LOCK_KEY)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    if db.engine == Engine::Mysql {
        // The wait and the scripts are not bounded by the statement timeout; the connection is
        // closed afterwards rather than returned to the pool without one.
        conn.close_on_drop();
        db::mysql_without_timeout(&mut conn).await?;
        let get_lock = format!("SELECT GET_LOCK({MYSQL_LOCK}, {MYSQL_LOCK_WAIT_SECS})");
        loop {
            // Only constants are spliced in.
            let locked: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(get_lock.clone()))
                .fetch_one(&mut *conn)
                .await?;
            match locked {
                Some(1) => break,
                Some(0) => tracing::info!("waiting for another migrator to finish"),
                other => {
                    let why = format!("GET_LOCK answered {other:?}");
                    return Err(sqlx::Error::Protocol(why).into());
                }
            }
        }
    }
    create_history_table(&mut conn, db.engine).await?;
    Ok(conn)
}

async fn unlock(db: &Db, mut conn: PoolConnection<Any>) -> Result<(), MigrateError> {
    match db.engine {
        Engine::Postgres => {
            sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(LOCK_KEY)
                .execute(&mut *conn)
                .await?;
        }
        Engine::Mysql => {
            let release = format!("SELECT RELEASE_LOCK({MYSQL_LOCK})");
            // Only a constant is spliced in.
            sqlx::query(sqlx::AssertSqlSafe(release))
                .execute(&mut *conn)
                .await?;
        }
        Engine::Sqlite => {}
    }
    Ok(())
}

/// The versions currently applied: applied by `SQL` and not since reverted by `UNDO_SQL`.
fn applied_versions(history: &[Applied]) -> Vec<Version> {
    let mut applied: Vec<Version> = Vec::new();
    for row in history {
        let Some(version) = row.version.as_deref().and_then(Version::parse) else {
            continue;
        };
        match row.kind.as_str() {
            "SQL" => applied.push(version),
            "UNDO_SQL" => applied.retain(|v| *v != version),
            _ => {}
        }
    }
    applied
}

async fn create_history_table(conn: &mut AnyConnection, engine: Engine) -> Result<(), sqlx::Error> {
    // Flyway's own definition of the table, per engine.
    let ddl = match engine {
        Engine::Postgres => {
            r#"CREATE TABLE IF NOT EXISTS flyway_schema_history (
                installed_rank INTEGER NOT NULL CONSTRAINT flyway_schema_history_pk PRIMARY KEY,
                version VARCHAR(50),
                description VARCHAR(200) NOT NULL,
                type VARCHAR(20) NOT NULL,
                script VARCHAR(1000) NOT NULL,
                checksum INTEGER,
                installed_by VARCHAR(100) NOT NULL,
                installed_on TIMESTAMP NOT NULL DEFAULT now(),
                execution_time INTEGER NOT NULL,
                success BOOLEAN NOT NULL
            );
            CREATE INDEX IF NOT EXISTS flyway_schema_history_s_idx ON flyway_schema_history (success);"#
        }
        Engine::Sqlite => {
            r#"CREATE TABLE IF NOT EXISTS flyway_schema_history (
                installed_rank INT NOT NULL PRIMARY KEY,
                version VARCHAR(50),
                description VARCHAR(200) NOT NULL,
                type VARCHAR(20) NOT NULL,
                script VARCHAR(1000) NOT NULL,
                checksum INT,
                installed_by VARCHAR(100) NOT NULL,
                installed_on TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f','now')),
                execution_time INT NOT NULL,
                success BOOLEAN NOT NULL
            );
            CREATE INDEX IF NOT EXISTS flyway_schema_history_s_idx ON flyway_schema_history (success);"#
        }
        // MySQL has no CREATE INDEX IF NOT EXISTS: the index is declared in the table.
        Engine::Mysql => {
            r#"CREATE TABLE IF NOT EXISTS flyway_schema_history (
                installed_rank INT NOT NULL,
                version VARCHAR(50),
                description VARCHAR(200) NOT NULL,
                type VARCHAR(20) NOT NULL,
                script VARCHAR(1000) NOT NULL,
                checksum INT,
                installed_by VARCHAR(100) NOT NULL,
                installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
                execution_time INT NOT NULL,
                success BOOL NOT NULL,
                CONSTRAINT flyway_schema_history_pk PRIMARY KEY (installed_rank),
                INDEX flyway_schema_history_s_idx (success)
            ) ENGINE = InnoDB"#
        }
    };
    sqlx::raw_sql(ddl).execute(conn).await?;
    Ok(())
}

async fn history(conn: &mut AnyConnection) -> Result<Vec<Applied>, sqlx::Error> {
    // The Any driver decodes booleans on PostgreSQL only: read as an integer.
    let rows = sqlx::query(
        "SELECT version, description, type, script, checksum,
                CASE WHEN success THEN 1 ELSE 0 END AS success
         FROM flyway_schema_history ORDER BY installed_rank",
    )
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(Applied {
                version: row.try_get("version")?,
                description: row.try_get("description")?,
                kind: row.try_get("type")?,
                script: row.try_get("script")?,
                checksum: row.try_get::<Option<i64>, _>("checksum")?.map(|c| c as i32),
                success: row.try_get::<i64, _>("success")? == 1,
            })
        })
        .collect()
}

async fn run_script(
    conn: &mut AnyConnection,
    engine: Engine,
    script: &Script,
    version: Option<&Version>,
    kind: &str,
) -> Result<(), MigrateError> {
    if engine == Engine::Mysql {
        return run_script_statements(conn, script, version, kind).await;
    }
    let started = Instant::now();
    let failed = |source| MigrateError::ScriptFailed {
        script: script.name.clone(),
        source,
    };
    let mut tx = conn.begin().await?;
    if engine == Engine::Postgres {
        // A migration may rewrite a large table: the service's statement timeout is not for it.
        sqlx::query("SET LOCAL statement_timeout = 0")
            .execute(&mut *tx)
            .await?;
    }
    // The scripts are our own files, compiled into the binary: no outside input reaches them.
    sqlx::raw_sql(sqlx::AssertSqlSafe(script.sql.as_str()))
        .execute(&mut *tx)
        .await
        .map_err(failed)?;
    record(&mut tx, script, version, kind, started, true).await?;
    tx.commit().await?;
    tracing::info!(script = %script.name, kind, "migration applied");
    Ok(())
}

/// MySQL's [`run_script`]: DDL commits as it runs, so each statement runs on its own and a
/// failure is recorded and reported with what it left applied.
async fn run_script_statements(
    conn: &mut AnyConnection,
    script: &Script,
    version: Option<&Version>,
    kind: &str,
) -> Result<(), MigrateError> {
    let started = Instant::now();
    let statements = script.statements();
    for (i, statement) in statements.iter().enumerate() {
        // Our own files, compiled into the binary: no outside input reaches them.
        if let Err(source) = sqlx::raw_sql(sqlx::AssertSqlSafe(*statement))
            .execute(&mut *conn)
            .await
        {
            // Nothing applied yet: as on the other engines, nothing is left behind.
            if i == 0 {
                return Err(MigrateError::ScriptFailed {
                    script: script.name.clone(),
                    source,
                });
            }
            record(conn, script, version, kind, started, false).await?;
            return Err(MigrateError::PartlyApplied {
                script: script.name.clone(),
                failed: i + 1,
                total: statements.len(),
                applied: match i {
                    1 => "statement".to_owned(),
                    n => format!("{n} statements"),
                },
                source,
            });
        }
    }
    record(conn, script, version, kind, started, true).await?;
    tracing::info!(script = %script.name, kind, "migration applied");
    Ok(())
}

/// Writes the script's row in the history.
async fn record(
    conn: &mut AnyConnection,
    script: &Script,
    version: Option<&Version>,
    kind: &str,
    started: Instant,
    success: bool,
) -> Result<(), sqlx::Error> {
    let engine = Engine::of_connection(conn);
    let rank: i64 = sqlx::query_scalar(
        "SELECT COALESCE(MAX(installed_rank), 0) + 1 FROM flyway_schema_history",
    )
    .fetch_one(&mut *conn)
    .await?;
    let elapsed_ms = i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX);
    let sql = "INSERT INTO flyway_schema_history
                   (installed_rank, version, description, type, script, checksum, installed_by,
                    execution_time, success)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
    sql::query(engine, sql)
        .bind(rank as i32)
        .bind(version.map(ToString::to_string))
        .bind(&script.description)
        .bind(kind)
        .bind(&script.name)
        .bind(script.checksum)
        .bind("billing-service")
        .bind(elapsed_ms)
        .bind(success)
        .execute(conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(engine: Engine) -> Vec<String> {
        let scripts = embedded(engine).expect("the embedded scripts are valid");
        let mut names: Vec<String> = [scripts.versioned, scripts.undo, scripts.repeatable]
            .concat()
            .into_iter()
            .map(|s| s.name)
            .collect();
        names.sort();
        names
    }

    #[test]
    fn every_engine_has_the_same_migrations() {
        let postgres = names(Engine::Postgres);
        assert!(postgres.contains(&"V1__billing_tables.sql".to_owned()));
        assert_eq!(names(Engine::Mysql), postgres);
        assert_eq!(names(Engine::Sqlite), postgres);
    }
}
