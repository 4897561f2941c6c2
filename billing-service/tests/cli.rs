//! The `billing-service` binary as an operator runs it: the README's run command, start-up
//! configuration errors, `migrate`, and shutdown on SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_billing-service");

/// The binary with a clean environment (no `DATABASE_URL` from the CI job leaking in) and
/// `dir` as its working directory, where the default SQLite file goes.
fn command(dir: &Path, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .current_dir(dir)
        .env("LOG_FORMAT", "json")
        .envs(env.iter().copied());
    cmd
}

fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    command(dir, env).args(args).output().expect("binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn postgres_url() -> Option<String> {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| u.starts_with("postgres"))
}

struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(dir: &Path, extra: &[(&str, &str)]) -> Self {
        let port = free_port();
        let port_text = port.to_string();
        let mut env = vec![
            ("STRIPE_API_SECRET_KEY", "sk_test_readme"),
            ("STRIPE_WEBHOOK_SECRET", "whsec_readme"),
            ("SERVER_PORT", port_text.as_str()),
        ];
        env.extend_from_slice(extra);
        let child = command(dir, &env)
            .stderr(Stdio::piped())
            .spawn()
            .expect("server starts");
        let server = Self { child, port };
        server.wait_until_alive();
        server
    }

    fn get(&self, path: &str) -> Option<(u16, String)> {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let response = reqwest::get(url).await.ok()?;
            let status = response.status().as_u16();
            Some((status, response.text().await.ok()?))
        })
    }

    fn wait_until_alive(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.get("/status/alive").is_none() {
            assert!(Instant::now() < deadline, "service did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGTERM and returns the exit status and everything logged.
    fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let stderr = self.child.stderr.take().unwrap();
        let logs: Vec<String> = BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect();
        (self.child.wait().unwrap(), logs.join("\n"))
    }
}

#[test]
fn readme_run_command_serves_on_an_embedded_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    assert_eq!(
        server.get("/status/alive"),
        Some((200, r#"{"alive":"OK"}"#.to_owned()))
    );
    assert_eq!(
        server.get("/status/ready"),
        Some((200, r#"{"ready":"OK"}"#.to_owned()))
    );
    assert!(
        dir.path().join("billing.db").exists(),
        "SQLite file created"
    );

    let (status, logs) = server.terminate();
    assert!(
        status.success(),
        "graceful shutdown exits 0: {status:?}\n{logs}"
    );
    assert!(logs.contains("shutdown signal received"), "{logs}");
    // Each request is logged as JSON with its method, path, status and latency.
    let request_line = logs
        .lines()
        .find(|l| l.contains("request served") && l.contains("/status/ready"))
        .unwrap_or_else(|| panic!("no request log line in:\n{logs}"));
    let entry: serde_json::Value = serde_json::from_str(request_line).unwrap();
    assert_eq!(entry["span"]["method"], "GET");
    assert_eq!(entry["status"], 200);
    assert!(entry["latency_ms"].is_number(), "{entry}");
    for secret in ["sk_test_readme", "whsec_readme"] {
        assert!(!logs.contains(secret), "{secret} logged");
    }
}

#[test]
fn start_up_reports_every_configuration_problem_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        &[],
        &[("SERVER_PORT", "http"), ("DATABASE_URL", "mysql://x")],
    );
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    for needle in [
        "STRIPE_API_SECRET_KEY is required",
        "STRIPE_WEBHOOK_SECRET is required",
        "SERVER_PORT must be a port number",
        "DATABASE_URL has the unsupported scheme 'mysql'",
    ] {
        assert!(stderr.contains(needle), "{needle:?} not in:\n{stderr}");
    }
}

#[test]
fn unreachable_database_names_host_and_port_but_not_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        &["migrate"],
        &[
            ("DATABASE_URL", "postgres://app:hunter2@127.0.0.1:1/billing"),
            ("DATABASE_CONNECT_RETRY_SECS", "1"),
        ],
    );
    assert!(!out.status.success());
    let all = text(&out.stderr) + &text(&out.stdout);
    assert!(
        all.contains("cannot reach the database at 127.0.0.1:1"),
        "{all}"
    );
    assert!(!all.contains("hunter2"), "password leaked:\n{all}");
}

#[test]
fn unknown_command_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["migrat"], &[]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("unrecognized subcommand 'migrat'"),
        "{stderr}"
    );
    assert!(
        stderr.contains("migrate"),
        "suggests the right one: {stderr}"
    );
}

fn check_migrate_command(dir: &Path, db_url: &str) {
    let env = [("DATABASE_URL", db_url)];
    let dry = run(dir, &["migrate", "--dry-run"], &env);
    assert!(dry.status.success(), "{}", text(&dry.stderr));
    assert_eq!(
        text(&dry.stdout),
        "would apply V1__billing_tables.sql\nwould apply R__event_summary_view.sql\n"
    );

    let first = run(dir, &["migrate"], &env);
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert!(text(&first.stdout).contains("did apply V1__billing_tables.sql"));

    let second = run(dir, &["migrate"], &env);
    assert!(second.status.success());
    assert!(
        text(&second.stdout).starts_with("Database is up to date"),
        "{}",
        text(&second.stdout)
    );

    let undo = run(dir, &["migrate", "--undo"], &env);
    assert!(undo.status.success(), "{}", text(&undo.stderr));
    assert_eq!(
        text(&undo.stdout),
        "did undo version 1 with U1__billing_tables.sql\n"
    );
}

#[test]
fn migrate_command_applies_once_lists_and_undoes_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/m.db", dir.path().display());
    check_migrate_command(dir.path(), &url);
}

#[test]
fn migrate_command_applies_once_lists_and_undoes_on_postgres() {
    let Some(admin) = postgres_url() else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let name = format!("billing_test_cli_{}", std::process::id());
    let mut url = url::Url::parse(&admin).unwrap();
    rt.block_on(async {
        use sqlx::{Connection, Executor};
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&admin).await.unwrap();
        conn.execute(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .await
        .unwrap();
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .unwrap();
    });
    url.set_path(&name);
    let dir = tempfile::tempdir().unwrap();
    check_migrate_command(dir.path(), url.as_str());
    rt.block_on(async {
        use sqlx::{Connection, Executor};
        let mut conn = sqlx::AnyConnection::connect(&admin).await.unwrap();
        conn.execute(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .await
        .unwrap();
    });
}

#[test]
fn events_can_be_listed_and_replayed_by_an_operator() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/ops.db", dir.path().display());
    let env = [("DATABASE_URL", url.as_str())];
    assert!(run(dir.path(), &["migrate"], &env).status.success());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
        for (id, status, error) in [
            ("evt_ok", "processed", None),
            ("evt_bad1", "failed", Some("data.object: missing field `amount`")),
            ("evt_bad2", "failed", Some("boom")),
        ] {
            sqlx::query(
                "INSERT INTO stripe_events (id, type, created, livemode, payload, received_at_ms, status, attempts, last_error)
                 VALUES ($1, 'charge.succeeded', 1700000000, FALSE, '{}', 0, $2, 8, $3)",
            )
            .bind(id)
            .bind(status)
            .bind(error)
            .execute(&mut conn)
            .await
            .unwrap();
        }
    });

    let listed = run(
        dir.path(),
        &["events", "list", "--status", "failed", "--json"],
        &env,
    );
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let rows: Vec<serde_json::Value> = text(&listed.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids: Vec<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["evt_bad2", "evt_bad1"]);
    assert_eq!(rows[1]["last_error"], "data.object: missing field `amount`");

    let table = run(dir.path(), &["events", "list"], &env);
    assert_eq!(text(&table.stdout).lines().count(), 3);

    let one = run(dir.path(), &["events", "replay", "evt_ok"], &env);
    assert!(one.status.success());
    assert_eq!(text(&one.stdout), "Queued evt_ok for processing.\n");
    let failed = run(dir.path(), &["events", "replay", "--failed"], &env);
    assert_eq!(
        text(&failed.stdout),
        "Queued 2 failed event(s) for processing.\n"
    );
    let pending = run(
        dir.path(),
        &["events", "list", "--status", "pending", "--json"],
        &env,
    );
    assert_eq!(text(&pending.stdout).lines().count(), 3);

    let missing = run(dir.path(), &["events", "replay", "evt_nope"], &env);
    assert!(!missing.status.success());
    assert!(text(&missing.stderr).contains("no stored event has the id evt_nope"));
    let neither = run(dir.path(), &["events", "replay"], &env);
    assert!(!neither.status.success(), "an id or --failed is required");
}
