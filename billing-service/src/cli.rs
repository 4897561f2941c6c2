//! The command line: `serve` (the default), `migrate`, and the operator commands.
//!
//! Each command reads only the configuration it needs, so `migrate` runs without Stripe keys.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::configuration::{DatabaseSettings, Settings, process_env};
use crate::db::Db;
use crate::migrate::Migrator;
use crate::startup::{Application, shutdown_signal};

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
        Command::Serve => serve().await,
        Command::Migrate(args) => migrate(args).await,
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
    app.run_until_stopped(shutdown)
        .await
        .context("serving HTTP")?;
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
