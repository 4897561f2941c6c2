//! The command line: `serve` (the default), `migrate`, and the operator commands.
//!
//! Each command reads only the configuration it needs, so `migrate` runs without Stripe keys.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::configuration::{DatabaseSettings, Settings, StripeApiSettings, process_env};
use crate::db::Db;
use crate::metrics::Metrics;
use crate::migrate::Migrator;
use crate::startup::{Application, shutdown_signal};
use crate::stripe_reader::StripeReader;
use crate::sync::backfill::{self, Kind, KindSummary};
use crate::sync::progress::Bars;
use crate::sync::{self as stripe_sync, parse_since};
use crate::tables::events::{self, EventStatus};
use crate::webhook::handlers::{Handlers, TieResolver};

/// Stripe billing service: checkout, products and signed webhooks.
///
/// Configuration comes from the environment (and a `.env` file if present); see the README.
#[derive(Debug, Parser)]
#[command(name = "billing-service", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service (the default when no command is given).
    Serve,
    /// Apply pending database migrations and exit.
    ///
    /// Examples:
    ///   billing-service migrate
    ///   billing-service migrate --dry-run
    ///   billing-service migrate --undo
    Migrate(MigrateArgs),
    /// Inspect and replay stored webhook events.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Read from Stripe what webhooks did not bring: every customer, subscription, subscription
    /// schedule, charge and invoice (the default), or the events never received (`sync events`).
    ///
    /// Each object is written as of the moment Stripe read it, only where it differs from what
    /// is stored: safe beside the running service (a newer webhook wins) and to repeat (a second
    /// run writes nothing). An interrupted sync resumes after the last page it wrote.
    ///
    /// Examples:
    ///   billing-service sync
    ///   billing-service sync --only customers,subscriptions --since 2026-01-01
    ///   billing-service sync --json
    Sync(SyncArgs),
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SyncArgs {
    #[command(subcommand)]
    pub command: Option<SyncCommand>,
    /// Only objects created since: a duration (30d, 12h) or a date (2026-11-01) or time
    /// (RFC 3339, UTC). Everything when absent.
    #[arg(long)]
    pub since: Option<String>,
    /// Only these kinds, comma-separated: customers, subscriptions, subscription_schedules,
    /// charges, invoices.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<Kind>,
    /// The summary as one JSON object (and no progress bars).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum SyncCommand {
    /// Store the events Stripe has that this service never received (Stripe keeps them 30
    /// days); the running service processes them like deliveries. Safe to repeat.
    ///
    /// Examples:
    ///   billing-service sync events --since 3d
    ///   billing-service sync events --since 2026-11-01 --json
    Events {
        /// How far back: a duration (3d, 12h) or a date (2026-11-01) or time (RFC 3339, UTC).
        #[arg(long, default_value = "30d")]
        since: String,
        /// The summary as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// List stored events, newest first.
    ///
    /// Examples:
    ///   billing-service events list --status failed
    ///   billing-service events list --type invoice.paid --json
    List {
        /// Only events in this state: pending, processed, failed or ignored.
        #[arg(long)]
        status: Option<EventStatus>,
        /// Only events of this type, e.g. customer.subscription.updated.
        #[arg(long = "type")]
        event_type: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Put events back in the queue; the running service processes them again (safe: handlers
    /// are idempotent).
    ///
    /// Examples:
    ///   billing-service events replay evt_1NG8Du2eZvKYlo2CUI79vXWy
    ///   billing-service events replay --failed
    Replay {
        /// The event to replay.
        #[arg(required_unless_present = "failed", conflicts_with = "failed")]
        event_id: Option<String>,
        /// Replay every event parked as failed.
        #[arg(long)]
        failed: bool,
    },
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Only list what would be applied.
    #[arg(long)]
    pub dry_run: bool,
    /// Revert the latest applied versioned migration with its U script.
    #[arg(long)]
    pub undo: bool,
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command.unwrap_or(Command::Serve) {
        // The Lambda runtime starts the binary without arguments.
        Command::Serve if crate::lambda::requested(&process_env) => {
            crate::lambda::run().await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve => serve().await,
        Command::Migrate(args) => migrate(args).await,
        Command::Events(command) => events(command).await,
        Command::Sync(command) => sync(command).await,
    }
}

async fn serve() -> anyhow::Result<ExitCode> {
    let settings = Settings::from_env(&process_env)?;
    tracing::info!(database = %settings.database.display_target(), "starting");
    let app = Application::build(settings).await?;
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        trigger.cancel();
    });
    app.run_until_stopped(shutdown).await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

async fn migrate(args: MigrateArgs) -> anyhow::Result<ExitCode> {
    let settings = DatabaseSettings::from_env(&process_env)?;
    let db = Db::connect(&settings).await?;
    let migrator = Migrator::embedded(db.engine)?;
    let steps = if args.undo {
        migrator.undo(&db, args.dry_run).await?
    } else {
        migrator.migrate(&db, args.dry_run).await?
    };
    let verb = if args.dry_run { "would" } else { "did" };
    if steps.is_empty() {
        println!(
            "Database is up to date ({}): nothing to do.",
            settings.display_target()
        );
    }
    for step in &steps {
        println!("{verb} {step}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The operator commands read and write `stripe_events`: on a database that was never migrated
/// (or is behind this build) they would fail with the database's own words for a missing table.
async fn require_migrated(db: &Db, settings: &DatabaseSettings) -> anyhow::Result<()> {
    let pending = Migrator::embedded(db.engine)?.pending_scripts(db).await?;
    if pending.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "the database at {} is not migrated for this version ({} pending: {}); run `billing-service migrate` first",
        settings.display_target(),
        pending.len(),
        pending.join(", ")
    )
}

async fn events(command: EventsCommand) -> anyhow::Result<ExitCode> {
    let settings = DatabaseSettings::from_env(&process_env)?;
    let db = Db::connect(&settings).await?;
    require_migrated(&db, &settings).await?;
    match command {
        EventsCommand::List {
            status,
            event_type,
            limit,
            json,
        } => {
            let filter = events::Filter {
                status,
                event_type,
                limit,
            };
            let rows = events::list(&db, &filter).await?;
            for row in &rows {
                if json {
                    println!("{}", serde_json::to_string(row)?);
                } else {
                    println!(
                        "{}  {:<40} {:<10} created={} attempts={}{}",
                        row.id,
                        row.event_type,
                        row.status,
                        row.created,
                        row.attempts,
                        row.last_error
                            .as_deref()
                            .map(|e| format!("  error: {e}"))
                            .unwrap_or_default()
                    );
                }
            }
            if rows.is_empty() && !json {
                eprintln!("No events match.");
            }
            Ok(ExitCode::SUCCESS)
        }
        EventsCommand::Replay { event_id, failed } => {
            if failed {
                let n = events::replay_failed(&db).await?;
                println!("Queued {n} failed event(s) for processing.");
                return Ok(ExitCode::SUCCESS);
            }
            let id = event_id.unwrap_or_default();
            if events::replay(&db, &id).await? {
                println!("Queued {id} for processing.");
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("billing-service: no stored event has the id {id}");
                Ok(ExitCode::FAILURE)
            }
        }
    }
}

async fn sync(args: SyncArgs) -> anyhow::Result<ExitCode> {
    let Some(SyncCommand::Events { since, json }) = args.command else {
        return backfill(args).await;
    };
    let since = match parse_since(&since, std::time::SystemTime::now()) {
        Ok(since) => since,
        Err(why) => {
            eprintln!("billing-service: --since: {why}");
            return Ok(ExitCode::from(2));
        }
    };
    let database = DatabaseSettings::from_env(&process_env)?;
    let stripe = StripeReader::new(&StripeApiSettings::from_env(&process_env)?)?;
    let db = Db::connect(&database).await?;
    require_migrated(&db, &database).await?;
    let handlers = Handlers::builtin();
    let types = handlers.event_types();
    let recovered = stripe_sync::events::recover(&db, &stripe, &types, since).await?;
    if json {
        println!(
            "{}",
            serde_json::json!({"since": since, "recovered": recovered})
        );
    } else {
        println!(
            "Stripe listed {} event(s) created since {}: {} missing here, now stored for \
             processing; {} received before{}.",
            recovered.listed,
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(since.max(0) as u64)
            ),
            recovered.stored,
            recovered.already_had,
            match recovered.unreadable {
                0 => String::new(),
                n => format!("; {n} unreadable, skipped (see the log)"),
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn backfill(args: SyncArgs) -> anyhow::Result<ExitCode> {
    let since = match args
        .since
        .as_deref()
        .map(|raw| parse_since(raw, SystemTime::now()))
    {
        None => None,
        Some(Ok(since)) => Some(since),
        Some(Err(why)) => {
            eprintln!("billing-service: --since: {why}");
            return Ok(ExitCode::from(2));
        }
    };
    let kinds = match args.only.is_empty() {
        true => Kind::ALL.to_vec(),
        false => args.only,
    };
    let database = DatabaseSettings::from_env(&process_env)?;
    let stripe = Arc::new(StripeReader::new(&StripeApiSettings::from_env(
        &process_env,
    )?)?);
    let db = Db::connect(&database).await?;
    require_migrated(&db, &database).await?;
    let ties = TieResolver::new(Arc::clone(&stripe), Metrics::default());
    let started = Instant::now();
    let summary = if args.json {
        backfill::run(&db, &stripe, Some(ties), &kinds, since, &()).await?
    } else {
        let bars = Bars::new(&kinds);
        backfill::run(&db, &stripe, Some(ties), &kinds, since, &bars).await?
    };
    let secs = started.elapsed().as_secs_f64();
    if args.json {
        let kinds: serde_json::Map<String, serde_json::Value> = summary
            .iter()
            .map(|(kind, s)| Ok((kind.name().to_owned(), serde_json::to_value(s)?)))
            .collect::<Result<_, serde_json::Error>>()?;
        println!(
            "{}",
            serde_json::json!({"since": since, "seconds": (secs * 1000.0).round() / 1000.0, "kinds": kinds})
        );
    } else {
        print!("{}", summary_table(&summary, secs));
    }
    Ok(ExitCode::SUCCESS)
}

/// The summary for people: a line per kind, then the totals.
fn summary_table(summary: &[(Kind, KindSummary)], secs: f64) -> String {
    let mut out = format!(
        "{:<23} {:>9} {:>9} {:>9} {:>9}\n",
        "kind", "listed", "written", "unchanged", "skipped"
    );
    let mut listed = 0;
    for (kind, s) in summary {
        let t = &s.tally;
        listed += t.listed;
        out += &format!(
            "{:<23} {:>9} {:>9} {:>9} {:>9}{}\n",
            kind.name(),
            t.listed,
            t.written,
            t.listed - t.written - t.skipped,
            t.skipped,
            if s.resumed { "  (resumed)" } else { "" }
        );
    }
    out += &format!("Synced {listed} object(s) in {secs:.1} s; only what differed was written.\n");
    out
}
