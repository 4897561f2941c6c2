//! The command line: what each command takes, with its help text and examples.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::secret_output::SecretFormat;

/// Provisions the Stripe catalog (features, product, prices), the customer-portal configuration
/// and the webhook endpoint for an environment, idempotently, and sends signed test events.
///
/// The Stripe key is read from STRIPE_API_SECRET_KEY; STRIPE_API_BASE points at another API
/// (a test double) instead of https://api.stripe.com.
#[derive(Debug, Parser)]
#[command(name = "stripe-setup", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Makes the Stripe account match the catalog: prints a plan, then applies it.
    ///
    /// Finds the products (the product, and the plan products of prices with features of their
    /// own) and the portal configuration by metadata (catalog key + environment), features and
    /// prices by lookup key and the webhook endpoint by URL and metadata. A changed amount or
    /// interval, or a price moving to another product, creates a new price that takes over the
    /// lookup key and archives the old one; a changed event list updates the endpoint; a feature
    /// a product no longer grants is detached from it; the portal configuration is put back as the
    /// catalog says; nothing is deleted. A second run prints "No changes" and writes nothing.
    ///
    /// The plan and progress go to stderr. A new endpoint's signing secret, which Stripe shows
    /// only once, goes to stdout (or --secret-file) in the --secret-output format.
    ///
    /// Examples:
    ///   stripe-setup init --env stage --webhook-url https://stage.example.com/webhook/stripe >> .env
    ///   stripe-setup init --env prod --webhook-url https://example.com/webhook/stripe \
    ///       --secret-output k8s --secret-file stripe-webhook-secret.yaml
    ///   stripe-setup init --env stage --webhook-url https://stage.example.com/webhook/stripe \
    ///       --catalog catalog.toml --dry-run
    #[command(verbatim_doc_comment)]
    Init(InitArgs),
    /// Compares the account with the catalog: exit 0 when it matches, 1 when it differs.
    ///
    /// Examples:
    ///   stripe-setup status --env stage
    ///   stripe-setup status --env prod --catalog catalog.toml --webhook-url https://example.com/webhook/stripe
    #[command(verbatim_doc_comment)]
    Status(StatusArgs),
    /// Sends a realistic, correctly signed Stripe event to a webhook URL; with --count and
    /// --concurrency, a load generator.
    ///
    /// Prints sent, accepted (2xx), failed, events/s and latency percentiles; exits 1 if any
    /// event was not accepted. The signing secret comes from STRIPE_WEBHOOK_SECRET or
    /// --secret-file, never from the command line, which every user of the machine can read.
    ///
    /// Examples:
    ///   STRIPE_WEBHOOK_SECRET=whsec_... stripe-setup trigger charge.succeeded \
    ///       --url http://localhost:8080/webhook/stripe
    ///   stripe-setup trigger invoice.paid --secret-file webhook-secret.txt \
    ///       --url http://localhost:8080/webhook/stripe --count 10000 --concurrency 32 --json
    #[command(verbatim_doc_comment)]
    Trigger(TriggerArgs),
}

/// What `init` and `status` share.
#[derive(Debug, Args)]
pub struct Target {
    /// The environment to provision: any name (stage, prod, pr-42...). Objects are tagged with it.
    #[arg(long = "env", value_name = "NAME")]
    pub environment: String,
    /// The catalog TOML file; the built-in one (the Monthly, Daily and Annual plans) by default.
    #[arg(long, value_name = "FILE")]
    pub catalog: Option<PathBuf>,
    /// Use a live key outside prod, or a test key for prod.
    #[arg(long)]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    #[command(flatten)]
    pub target: Target,
    /// Where Stripe delivers events: https, or http on localhost.
    #[arg(long, value_name = "URL")]
    pub webhook_url: String,
    #[command(flatten)]
    pub portal: PortalArgs,
    /// Print the plan only; send no write request.
    #[arg(long)]
    pub dry_run: bool,
    /// The form a new endpoint's signing secret is written in.
    #[arg(long, value_enum, default_value = "dotenv")]
    pub secret_output: SecretFormat,
    /// Write the secret to this file (mode 0600) instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub secret_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: Target,
    /// Also require the endpoint to point at this URL.
    #[arg(long, value_name = "URL")]
    pub webhook_url: Option<String>,
    #[command(flatten)]
    pub portal: PortalArgs,
}

/// The portal configuration's settings that are not the catalog's.
#[derive(Debug, Args)]
pub struct PortalArgs {
    /// The customer portal's default return URL: the frontend, as billing-service's FRONTEND_URL.
    /// Without it the configuration's is left as it is (a new one has none; billing-service gives
    /// its return URL with each portal session).
    #[arg(long, value_name = "URL", env = "FRONTEND_URL")]
    pub return_url: Option<String>,
}

#[derive(Debug, Args)]
pub struct TriggerArgs {
    /// The event type, e.g. charge.succeeded, checkout.session.completed, invoice.paid.
    pub event_type: String,
    /// The webhook URL to post to.
    #[arg(long, value_name = "URL")]
    pub url: String,
    /// A file holding the endpoint's signing secret (whsec_...), used instead of
    /// STRIPE_WEBHOOK_SECRET.
    #[arg(long, value_name = "FILE")]
    pub secret_file: Option<PathBuf>,
    /// Not accepted: a secret on the command line is visible to every user of the machine
    /// (`ps`). Kept so that using it gets an explanation rather than "unexpected argument".
    #[arg(long, hide = true, value_name = "WHSEC")]
    pub secret: Option<String>,
    /// How many events to send, each with its own id.
    #[arg(long, default_value_t = 1)]
    pub count: u64,
    /// How many requests are in flight at once.
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}
