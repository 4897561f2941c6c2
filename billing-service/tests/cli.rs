//! The `billing-service` binary as an operator runs it: the README's run command, start-up
//! configuration errors, `migrate`, and shutdown on SIGTERM.

use std::path::Path;
use std::process::{Command, Output};

use test_support::db::{every_engine, servers_or_skip};
use test_support::process::{Launch, Process};

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

/// `serve` as the README runs it: only the two Stripe secrets set (and `extra`), in `dir`.
async fn serve(dir: &Path, extra: &[(&str, &str)]) -> Process {
    let mut launch = Launch {
        program: BIN.into(),
        dir,
        env: Vec::new(),
    }
    .env("STRIPE_API_SECRET_KEY", "sk_test_readme")
    .env("STRIPE_WEBHOOK_SECRET", "whsec_readme")
    .env("SERVER_PORT", "0")
    .env("LOG_FORMAT", "json");
    for (key, value) in extra {
        launch = launch.env(key, value);
    }
    Process::start(launch).await
}

async fn get(server: &Process, path: &str) -> (u16, String) {
    let response = reqwest::get(server.url(path))
        .await
        .expect("the service answers");
    let status = response.status().as_u16();
    (status, response.text().await.expect("a body"))
}

#[tokio::test]
async fn readme_run_command_serves_on_an_embedded_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &[]).await;
    assert_eq!(
        get(&server, "/status/alive").await,
        (200, r#"{"alive":"OK"}"#.to_owned())
    );
    assert_eq!(
        get(&server, "/status/ready").await,
        (200, r#"{"ready":"OK"}"#.to_owned())
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

#[tokio::test]
async fn start_up_says_how_users_are_identified_and_warns_when_headers_are_trusted_from_the_network()
 {
    let jwt = [
        ("AUTH_MODE", "jwt"),
        (
            "AUTH_JWKS_URL",
            "https://auth.example.com/.well-known/jwks.json",
        ),
        ("AUTH_ISSUER", "https://auth.example.com/"),
        ("AUTH_AUDIENCE", "billing"),
    ];
    type Env<'a> = &'a [(&'a str, &'a str)];
    let cases: [(Env, &str, &str); 4] = [
        (&[], "INFO", "trusted-headers"),
        (&[("SERVER_HOST", "0.0.0.0")], "WARN", "trusted-headers"),
        (
            &[("SERVER_HOST", "0.0.0.0"), jwt[0], jwt[1], jwt[2], jwt[3]],
            "INFO",
            "jwt",
        ),
        (&jwt, "INFO", "jwt"),
    ];
    for (env, level, mode) in cases {
        let dir = tempfile::tempdir().unwrap();
        let server = serve(dir.path(), env).await;
        let (_, logs) = server.terminate();
        let line = logs
            .lines()
            .find(|l| l.contains("\"auth_mode\""))
            .unwrap_or_else(|| panic!("the mode is not logged:\n{logs}"));
        let entry: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(entry["level"], level, "{env:?}: {line}");
        assert_eq!(entry["auth_mode"], mode, "{env:?}: {line}");
        if level == "WARN" {
            assert!(line.contains("anyone who can reach this port"), "{line}");
        }
    }
}

#[test]
fn start_up_reports_every_configuration_problem_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        &[],
        &[("SERVER_PORT", "http"), ("DATABASE_URL", "mongodb://x")],
    );
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    for needle in [
        "STRIPE_API_SECRET_KEY is required",
        "STRIPE_WEBHOOK_SECRET is required",
        "SERVER_PORT must be a port number",
        "DATABASE_URL has the unsupported scheme 'mongodb'",
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
        "would apply V1__billing_tables.sql\nwould apply V2__sync_cursors.sql\nwould apply V3__entitlements.sql\nwould apply R__event_summary_view.sql\n"
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
        "did undo version 3 with U3__entitlements.sql\n"
    );
}

#[test]
fn migrate_command_applies_once_lists_and_undoes_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/m.db", dir.path().display());
    check_migrate_command(dir.path(), &url);
}

#[tokio::test]
async fn migrate_command_applies_once_lists_and_undoes_on_postgres_and_mysql() {
    for db in servers_or_skip("migrate_command_applies_once_lists_and_undoes").await {
        let dir = tempfile::tempdir().unwrap();
        let url = db.url.clone();
        // The command blocks; the test database is dropped when `db` goes, pass or fail.
        tokio::task::spawn_blocking(move || check_migrate_command(dir.path(), &url))
            .await
            .unwrap();
    }
}

/// `run` off the async runtime: the commands block until they exit.
async fn run_async(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let dir = dir.to_owned();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    tokio::task::spawn_blocking(move || {
        command(&dir, &[])
            .envs(env)
            .args(args)
            .output()
            .expect("binary runs")
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn events_can_be_listed_and_replayed_by_an_operator() {
    for db in every_engine().await {
        let dir = tempfile::tempdir().unwrap();
        let env = [("DATABASE_URL", db.url.as_str())];
        let run = |args: &'static [&'static str]| run_async(dir.path(), args, &env);
        assert!(run(&["migrate"]).await.status.success());
        let pool = db.pool().await;
        for (id, status, error) in [
            ("evt_ok", "processed", None),
            (
                "evt_bad1",
                "failed",
                Some("data.object: missing field `amount`"),
            ),
            ("evt_bad2", "failed", Some("boom")),
        ] {
            let engine = match db.engine {
                test_support::db::Engine::Mysql => billing_service::db::Engine::Mysql,
                test_support::db::Engine::Postgres => billing_service::db::Engine::Postgres,
                test_support::db::Engine::Sqlite => billing_service::db::Engine::Sqlite,
            };
            let sql = "INSERT INTO stripe_events
                           (id, type, created, livemode, payload, received_at_ms, status, attempts, last_error)
                       VALUES ($1, 'charge.succeeded', 1700000000, FALSE, '{}', 0, $2, 8, $3)";
            billing_service::db::sql::query(engine, sql)
                .bind(id)
                .bind(status)
                .bind(error)
                .execute(&pool)
                .await
                .unwrap();
        }
        pool.close().await;

        let listed = run(&["events", "list", "--status", "failed", "--json"]).await;
        assert!(listed.status.success(), "{}", text(&listed.stderr));
        let rows: Vec<serde_json::Value> = text(&listed.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let ids: Vec<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["evt_bad2", "evt_bad1"], "{:?}", db.engine);
        assert_eq!(rows[1]["last_error"], "data.object: missing field `amount`");
        assert_eq!(rows[1]["status"], "failed");

        let table = run(&["events", "list"]).await;
        assert_eq!(text(&table.stdout).lines().count(), 3);

        let one = run(&["events", "replay", "evt_ok"]).await;
        assert!(one.status.success());
        assert_eq!(text(&one.stdout), "Queued evt_ok for processing.\n");
        let failed = run(&["events", "replay", "--failed"]).await;
        assert_eq!(
            text(&failed.stdout),
            "Queued 2 failed event(s) for processing.\n"
        );
        let pending = run(&["events", "list", "--status", "pending", "--json"]).await;
        assert_eq!(text(&pending.stdout).lines().count(), 3);

        let missing = run(&["events", "replay", "evt_nope"]).await;
        assert!(!missing.status.success());
        assert!(text(&missing.stderr).contains("no stored event has the id evt_nope"));
        let neither = run(&["events", "replay"]).await;
        assert!(!neither.status.success(), "an id or --failed is required");
        let bad_status = run(&["events", "list", "--status", "done"]).await;
        assert!(!bad_status.status.success());
        assert!(
            text(&bad_status.stderr).contains("'done' is not an event status"),
            "{}",
            text(&bad_status.stderr)
        );
    }
}

#[tokio::test]
async fn event_commands_on_an_unmigrated_database_say_what_to_run() {
    for db in every_engine().await {
        let dir = tempfile::tempdir().unwrap();
        let env = [("DATABASE_URL", db.url.as_str())];
        for args in [&["events", "list"][..], &["events", "replay", "--failed"]] {
            let out = run_async(dir.path(), args, &env).await;
            assert!(!out.status.success(), "{args:?}");
            let stderr = text(&out.stderr);
            assert!(
                stderr.contains("is not migrated for this version")
                    && stderr.contains("V1__billing_tables.sql")
                    && stderr.contains("run `billing-service migrate` first"),
                "{:?} {args:?}: {stderr}",
                db.engine
            );
            assert!(!stderr.contains("no such table"), "{stderr}");
        }
    }
}

/// A migrated SQLite database in a temporary folder, and the environment that points the sync
/// commands at it and at the Stripe double.
struct SyncSetup {
    dir: tempfile::TempDir,
    url: String,
    uri: String,
}

impl SyncSetup {
    async fn new(stripe: &stripe_wiremock::StripeDouble) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/s.db", dir.path().display());
        let setup = Self {
            dir,
            url,
            uri: stripe.uri(),
        };
        let migrated = run_async(setup.dir.path(), &["migrate"], &setup.env()).await;
        assert!(migrated.status.success(), "{}", text(&migrated.stderr));
        setup
    }

    fn env(&self) -> [(&str, &str); 3] {
        [
            ("DATABASE_URL", self.url.as_str()),
            ("STRIPE_API_SECRET_KEY", "sk_test_cli"),
            ("STRIPE_API_BASE", self.uri.as_str()),
        ]
    }
}

#[tokio::test]
async fn sync_events_stores_what_stripe_has_and_says_so() {
    let stripe = stripe_wiremock::StripeDouble::start().await;
    let now = billing_service::clock::unix_now();
    for (i, event_type) in ["customer.created", "invoice.paid", "charge.succeeded"]
        .iter()
        .enumerate()
    {
        let spec = billing_stripe::fixtures::EventSpec {
            created: now - 3600 * (i as i64 + 1),
            ..billing_stripe::fixtures::EventSpec::new(event_type, &format!("evt_cli_sync{i}"))
        };
        let event = billing_stripe::fixtures::event(&spec).unwrap();
        stripe.insert(stripe_wiremock::Kind::Event, event);
    }
    let setup = SyncSetup::new(&stripe).await;
    let (dir, url, uri, env) = (&setup.dir, &setup.url, &setup.uri, setup.env());

    // Two of the three are within the last 2.5 hours.
    let out = run_async(
        dir.path(),
        &["sync", "events", "--since", "150m", "--json"],
        &env,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        summary["recovered"],
        serde_json::json!({"listed": 2, "stored": 2, "already_had": 0, "unreadable": 0}),
        "{summary}"
    );
    let again = run_async(dir.path(), &["sync", "events", "--since", "1d"], &env).await;
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(
        text(&again.stdout).contains("Stripe listed 3 event(s) created since"),
        "{}",
        text(&again.stdout)
    );
    assert!(
        text(&again.stdout).contains(": 1 missing here"),
        "{}",
        text(&again.stdout)
    );

    let bad = run_async(
        dir.path(),
        &["sync", "events", "--since", "last week"],
        &env,
    )
    .await;
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("--since: 'last week' is neither"),
        "{}",
        text(&bad.stderr)
    );
    // Without a key it says which variable is missing, and never reaches Stripe.
    let keyless = run_async(
        dir.path(),
        &["sync", "events"],
        &[
            ("DATABASE_URL", url.as_str()),
            ("STRIPE_API_BASE", uri.as_str()),
        ],
    )
    .await;
    assert!(!keyless.status.success());
    assert!(
        text(&keyless.stderr).contains("STRIPE_API_SECRET_KEY is required"),
        "{}",
        text(&keyless.stderr)
    );
    stripe.assert_no_violations();
}

#[tokio::test]
async fn sync_writes_what_stripe_lists_and_summarises_it() {
    let stripe = stripe_wiremock::StripeDouble::start().await;
    let object = |event_type: &str, i: usize| {
        let spec = billing_stripe::fixtures::EventSpec {
            customer: format!("cus_cli{i}"),
            subscription: format!("sub_cli{i}"),
            user_id: format!("u-cli-{i}"),
            created: 1_780_000_000 + i as i64,
            ..billing_stripe::fixtures::EventSpec::new(event_type, &format!("evt_cli{i}"))
        };
        billing_stripe::fixtures::event(&spec).unwrap()["data"]["object"].take()
    };
    stripe.insert_many(
        stripe_wiremock::Kind::Customer,
        (0..150).map(|i| object("customer.created", i)),
    );
    stripe.insert_many(
        stripe_wiremock::Kind::Subscription,
        (0..150).map(|i| object("customer.subscription.created", i)),
    );
    let setup = SyncSetup::new(&stripe).await;
    let (dir, env) = (&setup.dir, setup.env());

    let out = run_async(
        dir.path(),
        &["sync", "--only", "customers,subscriptions", "--json"],
        &env,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        summary["kinds"],
        serde_json::json!({
            "customers": {"pages": 2, "listed": 150, "written": 150, "skipped": 0, "resumed": false},
            "subscriptions": {"pages": 2, "listed": 150, "written": 150, "skipped": 0, "resumed": false},
        }),
        "{summary}"
    );
    assert!(summary["seconds"].as_f64().unwrap() > 0.0);

    // For people: a line per kind (every kind by default); no progress bars off a terminal.
    let again = run_async(dir.path(), &["sync"], &env).await;
    assert!(again.status.success(), "{}", text(&again.stderr));
    let stdout = text(&again.stdout);
    assert!(
        stdout.contains(&format!(
            "{:<23} {:>9} {:>9} {:>9} {:>9}",
            "customers", 150, 0, 150, 0
        )),
        "{stdout}"
    );
    assert!(stdout.contains("invoices"), "{stdout}");
    assert!(stdout.contains("Synced 300 object(s) in"), "{stdout}");
    assert!(
        !text(&again.stderr).contains("listed"),
        "{}",
        text(&again.stderr)
    );

    let bad = run_async(dir.path(), &["sync", "--only", "customers,plans"], &env).await;
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("'plans' is not one of customers, subscriptions, subscription_schedules, charges, invoices"),
        "{}",
        text(&bad.stderr)
    );
    let bad = run_async(dir.path(), &["sync", "--since", "soon"], &env).await;
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("--since: 'soon' is neither"),
        "{}",
        text(&bad.stderr)
    );
    stripe.assert_no_violations();
}
