//! `stripe-setup`: provisions the Stripe catalog (features, products, prices), the customer-portal
//! configuration and the webhook endpoint for an environment, idempotently, and sends signed test
//! events (the README's "stripe-setup" section says how).
//!
//! # Layout
//! - [`cli`]: the commands and their help.
//! - [`preflight`]: checks made before any request (key, environment, webhook URL).
//! - [`current`]: reads what the account holds for an environment, as the plan's `Current`.
//! - [`plan`]: the difference between catalog and account, as actions (pure, unit-tested).
//! - [`apply`]: carries the plan out, with idempotency keys.
//! - [`secret_output`]: writes a new endpoint's signing secret (dotenv, JSON, Kubernetes).
//! - [`trigger`]: signed test events and the load generator.
//!
//! The Stripe client, the catalog and the event fixtures live in `billing-stripe`, shared with
//! billing-service.

pub mod apply;
pub mod cli;
pub mod current;
pub mod plan;
pub mod preflight;
pub mod secret_output;
pub mod trigger;

use std::process::ExitCode;

use anyhow::Context as _;
use billing_stripe::catalog::Catalog;
use billing_stripe::{StripeClient, StripeConfig};

use crate::apply::SecretSink;
use crate::cli::{Cli, Command, InitArgs, PortalArgs, StatusArgs, Target, TriggerArgs};
use crate::plan::{Action, Plan};
use crate::secret_output::Destination;

/// Runs a command; the exit code is the command's answer (`status`: 1 means "differs").
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Init(args) => init(args).await,
        Command::Status(args) => status(args).await,
        Command::Trigger(args) => trigger(args).await,
    }
}

fn load_catalog(target: &Target) -> anyhow::Result<Catalog> {
    preflight::check_environment(&target.environment)?;
    Ok(match &target.catalog {
        Some(path) => Catalog::load(path)?,
        None => Catalog::builtin(),
    })
}

/// `--return-url` (or `FRONTEND_URL`), checked; empty counts as not given.
fn return_url(args: &PortalArgs) -> anyhow::Result<Option<String>> {
    match args.return_url.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(url) => {
            preflight::check_return_url(url)?;
            Ok(Some(url.to_owned()))
        }
    }
}

fn client(target: &Target) -> anyhow::Result<StripeClient> {
    let key = preflight::secret_key(std::env::var(preflight::KEY_VAR).ok())?;
    preflight::check_key_fits(&key, &target.environment, target.yes)?;
    let mut config = StripeConfig::new(key);
    if let Ok(base) = std::env::var(preflight::BASE_VAR)
        && !base.trim().is_empty()
    {
        config.api_base = base;
    }
    Ok(StripeClient::new(&config)?)
}

async fn init(args: InitArgs) -> anyhow::Result<ExitCode> {
    let catalog = load_catalog(&args.target)?;
    preflight::check_webhook_url(&args.webhook_url)?;
    let return_url = return_url(&args.portal)?;
    if let Some(path) = &args.secret_file {
        secret_output::check_destination(path)
            .with_context(|| format!("--secret-file {}", path.display()))?;
    }
    let client = client(&args.target)?;
    let env = &args.target.environment;

    eprintln!("Reading the Stripe account for environment '{env}'...");
    let current = current::read(&client, &catalog, env, Some(&args.webhook_url))
        .await
        .context("reading the Stripe account failed; nothing was changed")?;
    let plan = Plan::with_return_url(
        &catalog,
        Some(&args.webhook_url),
        return_url.as_deref(),
        &current,
    );
    eprint!("\n{}", plan.render());
    lost_secret_hint(&plan);

    if !plan.has_changes() {
        return Ok(ExitCode::SUCCESS);
    }
    if args.dry_run {
        eprintln!("Dry run: nothing was changed.");
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("Applying...");
    let sink = SecretSink {
        format: args.secret_output,
        destination: args
            .secret_file
            .map_or(Destination::Stdout, Destination::File),
    };
    let outcome = apply::apply(&client, env, &plan, &sink).await?;
    let counts = plan.counts();
    eprintln!(
        "Applied: {} created, {} updated, {} archived{}.",
        counts.create,
        counts.update,
        counts.archive,
        match counts.detach {
            0 => String::new(),
            n => format!(", {n} detached"),
        }
    );
    if let Some(place) = outcome.secret_written_to {
        eprintln!(
            "The new webhook endpoint's signing secret (STRIPE_WEBHOOK_SECRET) was written to {place} \
             as {:?}. Stripe will not show it again: store it now.",
            args.secret_output
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// An endpoint that already exists cannot give its secret again; say how to get a new one.
fn lost_secret_hint(plan: &Plan) {
    let existing = plan.actions.iter().find_map(|a| match a {
        Action::KeepEndpoint { id, .. } | Action::UpdateEndpoint { id, .. } => Some(id),
        _ => None,
    });
    if let Some(id) = existing {
        eprintln!(
            "Note: webhook endpoint {id} already exists; Stripe showed its signing secret only when \
             it was created. If the secret was lost, roll it in the Stripe Dashboard (Developers > \
             Webhooks > {id} > Roll secret) and update STRIPE_WEBHOOK_SECRET."
        );
    }
}

async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let catalog = load_catalog(&args.target)?;
    if let Some(url) = &args.webhook_url {
        preflight::check_webhook_url(url)?;
    }
    let return_url = return_url(&args.portal)?;
    let client = client(&args.target)?;
    let env = &args.target.environment;
    let current = current::read(&client, &catalog, env, args.webhook_url.as_deref())
        .await
        .context("reading the Stripe account failed")?;
    let plan = Plan::with_return_url(
        &catalog,
        args.webhook_url.as_deref(),
        return_url.as_deref(),
        &current,
    );
    print!("{}", plan.render());
    Ok(if plan.has_changes() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

async fn trigger(args: TriggerArgs) -> anyhow::Result<ExitCode> {
    let secret = trigger::resolve_secret(
        args.secret.as_deref(),
        args.secret_file.as_deref(),
        std::env::var("STRIPE_WEBHOOK_SECRET").ok(),
    )?;
    let options = trigger::TriggerOptions {
        event_type: args.event_type,
        url: args.url,
        secret,
        count: args.count,
        concurrency: args.concurrency,
    };
    let report = trigger::run(&options).await?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    Ok(if report.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
