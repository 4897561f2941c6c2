//! The Flyway-style migrator, on every engine: apply, no-op, dry run, undo, repeatable scripts,
//! edited scripts, concurrent migrators.

use billing_service::configuration::DatabaseSettings;
use billing_service::db::{Db, Engine};
use billing_service::migrate::{MigrateError, Migrator, Scripts, Step};
use sqlx::Row;
use test_support::db::{every_engine, server_or_skip, servers_or_skip};

use crate::helpers::{connect, connect_migrated};

fn scripts(files: &[(&str, &str)]) -> Scripts {
    Scripts::new(files.iter().map(|(n, s)| (n.to_string(), s.to_string()))).unwrap()
}

fn applied(steps: &[Step]) -> Vec<String> {
    steps.iter().map(ToString::to_string).collect()
}

async fn table_exists(db: &Db, table: &str) -> bool {
    sqlx::query(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
        .fetch_one(&db.pool)
        .await
        .is_ok()
}

async fn history_rows(db: &Db) -> Vec<(Option<String>, String, String)> {
    sqlx::query("SELECT version, type, script FROM flyway_schema_history ORDER BY installed_rank")
        .fetch_all(&db.pool)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get("version"), r.get("type"), r.get("script")))
        .collect()
}

#[tokio::test]
async fn embedded_migrations_apply_once_and_undo() {
    for test_db in every_engine().await {
        let db = connect(&test_db.url).await;
        let migrator = Migrator::embedded(db.engine).unwrap();

        let dry = migrator.migrate(&db, true).await.unwrap();
        assert_eq!(
            applied(&dry),
            [
                "apply V1__billing_tables.sql",
                "apply V2__sync_cursors.sql",
                "apply V3__entitlements.sql",
                "apply R__event_summary_view.sql"
            ],
            "{}",
            test_db.engine
        );
        assert!(!table_exists(&db, "stripe_events").await, "dry run wrote");

        assert_eq!(migrator.migrate(&db, false).await.unwrap(), dry);
        for table in [
            "stripe_events",
            "customers",
            "charges",
            "subscriptions",
            "subscription_schedules",
            "sync_cursors",
            "entitlements",
            "entitlement_summaries",
            "stripe_event_summary",
        ] {
            assert!(
                table_exists(&db, table).await,
                "{table} on {}",
                test_db.engine
            );
        }
        assert!(
            migrator.migrate(&db, false).await.unwrap().is_empty(),
            "second run is a no-op"
        );
        assert!(migrator.migrate(&db, true).await.unwrap().is_empty());

        // Newest version first; an undo takes back columns it added, too.
        let undo = migrator.undo(&db, false).await.unwrap();
        assert_eq!(applied(&undo), ["undo version 3 with U3__entitlements.sql"]);
        assert!(!table_exists(&db, "entitlements").await);
        assert!(
            sqlx::query("SELECT lookup_key FROM subscriptions")
                .fetch_all(&db.pool)
                .await
                .is_err(),
            "subscriptions.lookup_key outlived the undo on {}",
            test_db.engine
        );
        let undo = migrator.undo(&db, false).await.unwrap();
        assert_eq!(applied(&undo), ["undo version 2 with U2__sync_cursors.sql"]);
        assert!(!table_exists(&db, "sync_cursors").await);
        assert!(table_exists(&db, "stripe_events").await);
        let undo = migrator.undo(&db, false).await.unwrap();
        assert_eq!(
            applied(&undo),
            ["undo version 1 with U1__billing_tables.sql"]
        );
        assert!(!table_exists(&db, "stripe_events").await);
        assert!(matches!(
            migrator.undo(&db, false).await,
            Err(MigrateError::NothingToUndo)
        ));

        // After an undo, migrating again brings back the tables and the view over them.
        assert_eq!(migrator.migrate(&db, false).await.unwrap(), dry);
        assert!(table_exists(&db, "stripe_event_summary").await);
        let kinds: Vec<String> = history_rows(&db).await.into_iter().map(|r| r.1).collect();
        assert_eq!(
            kinds,
            [
                "SQL", "SQL", "SQL", "SQL", "UNDO_SQL", "UNDO_SQL", "UNDO_SQL", "SQL", "SQL",
                "SQL", "SQL"
            ]
        );
    }
}

#[tokio::test]
async fn repeatable_scripts_rerun_when_changed_and_edited_versions_are_refused() {
    for test_db in every_engine().await {
        let db = connect(&test_db.url).await;
        let v1 = ("V1__t.sql", "CREATE TABLE t (x INTEGER);");
        let r1 = (
            "R__v.sql",
            "DROP VIEW IF EXISTS v; CREATE VIEW v AS SELECT x FROM t;",
        );
        Migrator::new(scripts(&[v1, r1]))
            .migrate(&db, false)
            .await
            .unwrap();

        let r2 = (
            "R__v.sql",
            "DROP VIEW IF EXISTS v; CREATE VIEW v AS SELECT x, x AS y FROM t;",
        );
        let changed = Migrator::new(scripts(&[v1, r2]));
        assert_eq!(
            applied(&changed.migrate(&db, false).await.unwrap()),
            ["apply R__v.sql"],
            "{}",
            test_db.engine
        );
        assert!(changed.migrate(&db, false).await.unwrap().is_empty());
        sqlx::query("SELECT y FROM v")
            .fetch_all(&db.pool)
            .await
            .unwrap();

        let edited = Migrator::new(scripts(&[("V1__t.sql", "CREATE TABLE t (x BIGINT);"), r2]));
        let err = edited.migrate(&db, true).await.unwrap_err();
        assert!(
            matches!(err, MigrateError::ChecksumMismatch { .. }),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("V1__t.sql was changed after it was applied")
        );

        let missing = Migrator::new(scripts(&[r2]));
        assert!(matches!(
            missing.migrate(&db, false).await,
            Err(MigrateError::MissingScript { .. })
        ));

        let v3 = ("V3__u.sql", "CREATE TABLE u (x INTEGER);");
        Migrator::new(scripts(&[v1, v3, r2]))
            .migrate(&db, false)
            .await
            .unwrap();
        let late = Migrator::new(scripts(&[v1, ("V2__late.sql", "SELECT 1;"), v3, r2]));
        assert!(matches!(
            late.migrate(&db, false).await,
            Err(MigrateError::OutOfOrder { .. })
        ));

        let no_undo = Migrator::new(scripts(&[v1, v3, r2]));
        assert!(matches!(
            no_undo.undo(&db, false).await,
            Err(MigrateError::NoUndoScript { .. })
        ));
    }
}

#[tokio::test]
async fn a_failing_script_leaves_nothing_behind_or_on_mysql_says_what_it_left() {
    for test_db in every_engine().await {
        let db = connect(&test_db.url).await;
        let broken = Migrator::new(scripts(&[
            ("V1__ok.sql", "CREATE TABLE ok (x INTEGER);"),
            (
                "V2__broken.sql",
                "CREATE TABLE half (x INTEGER); THIS IS NOT SQL;",
            ),
        ]));
        let err = broken.migrate(&db, false).await.unwrap_err();
        assert!(
            err.to_string().starts_with("V2__broken.sql failed"),
            "{err}"
        );
        assert!(table_exists(&db, "ok").await);
        if db.engine == Engine::Mysql {
            // MySQL commits DDL as it runs: what ran stays, and the history says so.
            assert!(
                matches!(
                    err,
                    MigrateError::PartlyApplied {
                        failed: 2,
                        total: 2,
                        ..
                    }
                ),
                "{err}"
            );
            assert!(
                err.to_string()
                    .contains("the statement before it stay applied"),
                "{err}"
            );
            assert!(table_exists(&db, "half").await);
            let failed: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM flyway_schema_history WHERE script = 'V2__broken.sql' AND NOT success",
            )
            .fetch_one(&db.pool)
            .await
            .unwrap();
            assert_eq!(failed, 1);
            // Every later run refuses until an operator has repaired the history.
            let again = broken.migrate(&db, false).await.unwrap_err();
            assert!(
                matches!(again, MigrateError::FailedBefore { ref script } if script == "V2__broken.sql"),
                "{again}"
            );
            continue;
        }
        assert!(
            !table_exists(&db, "half").await,
            "{}: not rolled back",
            test_db.engine
        );
        assert_eq!(history_rows(&db).await.len(), 1);
    }
}

#[tokio::test]
async fn concurrent_migrators_take_turns_on_postgres_and_mysql() {
    // The locks are the servers' (an advisory lock, GET_LOCK); SQLite has a single writer anyway.
    for test_db in servers_or_skip("concurrent_migrators_take_turns").await {
        four_migrators_at_once(&test_db.url).await;
    }
}

async fn four_migrators_at_once(url: &str) {
    let runs = (0..4).map(|_| {
        let settings = DatabaseSettings::new(url);
        tokio::spawn(async move {
            let db = Db::connect(&settings).await.unwrap();
            Migrator::embedded(db.engine)
                .unwrap()
                .migrate(&db, false)
                .await
        })
    });
    let mut applied_total = 0;
    for run in runs {
        applied_total += run.await.unwrap().expect("each migrator succeeds").len();
    }
    assert_eq!(applied_total, 4, "each script applied exactly once");
    let db = connect(url).await;
    assert_eq!(history_rows(&db).await.len(), 4, "on {url}");
}

/// The schema and the session settings MySQL needs: a value too long for its column is refused,
/// not cut (two long ids cut alike would be one row), whatever the server's own SQL mode.
#[tokio::test]
async fn mysql_refuses_a_value_too_long_instead_of_cutting_it() {
    let name = "mysql_refuses_a_value_too_long_instead_of_cutting_it";
    if let Some(test_db) = server_or_skip(test_support::db::Engine::Mysql, name).await {
        let db = connect_migrated(&test_db.url).await;
        let id = "cus_".to_owned() + &"x".repeat(300);
        let mut conn = db.pool.acquire().await.unwrap();
        let stored = billing_service::tables::customers::link(&mut conn, &id, None, None).await;
        assert!(stored.is_err(), "a 304-character id was stored");
        // Set by the service on each connection, not left to the server's configuration.
        let mode: String = sqlx::query_scalar("SELECT @@SESSION.sql_mode")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert!(mode.contains("STRICT_ALL_TABLES"), "{mode}");
    }
}
