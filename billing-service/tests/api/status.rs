//! The status routes, on every engine, and readiness following the database.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::Connection;

use crate::helpers::{connect, spawn_app};
use test_support::db::{Engine, every_engine, server_or_skip, servers_or_skip};
use test_support::proxy::proxied;

#[tokio::test]
async fn status_routes_answer_like_the_template() {
    for db in every_engine().await {
        let app = spawn_app(&db.url).await;

        let alive = app.get("/status/alive").await;
        assert_eq!(alive.status(), 200, "{:?}", db.engine);
        assert_eq!(alive.json::<Value>().await.unwrap(), json!({"alive": "OK"}));

        let ready = app.get("/status/ready").await;
        assert_eq!(ready.status(), 200, "{:?}", db.engine);
        assert_eq!(ready.json::<Value>().await.unwrap(), json!({"ready": "OK"}));

        let about: Value = app.get("/status/about").await.json().await.unwrap();
        assert_eq!(about["podName"], "test-pod");
        assert_eq!(about["version"], env!("CARGO_PKG_VERSION"));

        let missing = app.get("/no/such/route").await;
        assert_eq!(missing.status(), 404);
        let body: Value = missing.json().await.unwrap();
        assert_eq!(body["error"]["code"], "no_route");
        let wrong_method = app
            .client
            .delete(format!("{}/status/alive", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(wrong_method.status(), 405);
        let body: Value = wrong_method.json().await.unwrap();
        assert_eq!(body["error"]["code"], "method_not_allowed");
        app.stop().await;
    }
}

#[tokio::test]
async fn readiness_follows_the_database_without_a_restart() {
    // Needs a server whose connection can be cut; SQLite is a file.
    for db in servers_or_skip("readiness_follows_the_database_without_a_restart").await {
        readiness_follows(&db.url).await;
    }
}

async fn readiness_follows(database_url: &str) {
    let (proxy, url) = proxied(database_url).await;
    let app = spawn_app(&url).await;

    assert_eq!(app.get("/status/ready").await.status(), 200);

    proxy.cut();
    let body = wait_for_status(&app, 503).await;
    assert_eq!(body, json!({"ready": "unavailable"}));
    // Liveness must not depend on the database, or Kubernetes would restart healthy pods.
    assert_eq!(app.get("/status/alive").await.status(), 200);

    proxy.restore();
    let body = wait_for_status(&app, 200).await;
    assert_eq!(body, json!({"ready": "OK"}));
    app.stop().await;
}

#[tokio::test]
async fn readiness_stays_ready_while_every_pooled_connection_is_busy() {
    for db in every_engine().await {
        let app = spawn_app(&db.url).await;
        // Every connection of the service's pool taken, as under a burst of load.
        let size = app.db.pool.options().get_max_connections();
        let mut held = Vec::new();
        for _ in 0..size {
            held.push(app.db.pool.acquire().await.unwrap());
        }
        let started = std::time::Instant::now();
        let ready = app.get("/status/ready").await;
        assert_eq!(
            ready.status(),
            200,
            "{}: a busy pool is not a dead database",
            db.engine
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        drop(held);
        app.stop().await;
    }
}

#[tokio::test]
async fn a_statement_past_the_timeout_is_cancelled_and_counts_as_unavailable() {
    let name = "a_statement_past_the_timeout_is_cancelled_and_counts_as_unavailable";
    for db in servers_or_skip(name).await {
        statement_timeout_is_enforced(&db.url).await;
    }
}

async fn statement_timeout_is_enforced(url: &str) {
    let mut settings = billing_service::configuration::DatabaseSettings::new(url);
    settings.statement_timeout = Duration::from_millis(300);
    let pool = billing_service::db::Db::connect(&settings).await.unwrap();
    let sleep = match pool.engine {
        billing_service::db::Engine::Mysql => "SLEEP",
        _ => "pg_sleep",
    };
    let started = std::time::Instant::now();
    let error = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {sleep}(5)")))
        .execute(&pool.pool)
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(
        billing_service::db::is_unavailable(&error),
        "a timed-out statement is the database not answering in time: {error}"
    );
    // The migrator's own statements are not bound by it (a migration may take long): a script
    // that runs twice the timeout is applied.
    let slow = billing_service::migrate::Scripts::new([(
        "V1__slow.sql".to_owned(),
        format!("SELECT {sleep}(0.6);"),
    )])
    .unwrap();
    let applied = billing_service::migrate::Migrator::new(slow)
        .migrate(&pool, false)
        .await
        .expect("a migration is not cut by the statement timeout");
    assert_eq!(applied.len(), 1);
}

async fn wait_for_status(app: &crate::helpers::TestApp, status: u16) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let response = app.get("/status/ready").await;
        if response.status() == status {
            return response.json().await.unwrap();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/status/ready never answered {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A statement larger than one TCP segment must not wait for the server's delayed ACK (40 ms
/// per batch of webhook events): the database connections run with TCP_NODELAY. sqlx 0.9.0
/// dropped it; `vendor/sqlx-core` puts it back, and this fails if that patch is lost.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn database_connections_disable_nagle() {
    use std::os::fd::BorrowedFd;

    // SQLite has no socket.
    let Some(db) = server_or_skip(Engine::Postgres, "database_connections_disable_nagle").await
    else {
        return;
    };
    let pool = connect(&db.url).await;
    let mut conn = pool.pool.acquire().await.unwrap();
    // The server names the client's port, which picks our socket out of the process's.
    let port: i32 = sqlx::query_scalar("SELECT inet_client_port()")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    let mut nodelay = None;
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        // Only asked about, never closed; a descriptor closed meanwhile just fails the calls.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let socket = socket2::SockRef::from(&fd);
        let local = socket.local_addr().ok().and_then(|a| a.as_socket());
        if local.map(|a| i32::from(a.port())) == Some(port) {
            nodelay = Some(socket.tcp_nodelay().unwrap());
        }
    }
    drop(conn);
    pool.pool.close().await;
    assert_eq!(
        nodelay,
        Some(true),
        "the database socket, client port {port}"
    );
}

/// A pooled connection the database dropped while it sat idle (a restart, a failover, an idle
/// timeout on the server) is found and replaced before it is handed out, although connections in
/// use are no longer pinged on every acquire.
#[tokio::test]
async fn a_connection_dropped_while_idle_is_replaced_before_use() {
    for test_db in servers_or_skip("a_connection_dropped_while_idle_is_replaced_before_use").await {
        let db = connect(&test_db.url).await;
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(db.pool.acquire().await.unwrap());
        }
        drop(held);
        // Every other session on the test's database: the pool's.
        let (others, kill) = match test_db.engine {
            Engine::Postgres => (
                "SELECT CAST(pid AS BIGINT) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
                "SELECT pg_terminate_backend",
            ),
            _ => (
                "SELECT CAST(id AS SIGNED) FROM information_schema.processlist \
                 WHERE db = DATABASE() AND id <> CONNECTION_ID()",
                "KILL",
            ),
        };
        let mut admin = sqlx::AnyConnection::connect(&test_db.url).await.unwrap();
        let ids: Vec<i64> = sqlx::query_scalar(others)
            .fetch_all(&mut admin)
            .await
            .unwrap();
        assert_eq!(ids.len(), 3, "{}", test_db.engine);
        for id in ids {
            sqlx::query(sqlx::AssertSqlSafe(format!("{kill}({id})")))
                .execute(&mut admin)
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
        for _ in 0..3 {
            let one: i32 = sqlx::query_scalar("SELECT 1")
                .fetch_one(&db.pool)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", test_db.engine));
            assert_eq!(one, 1);
        }
        db.pool.close().await;
    }
}
