//! `billing-local`: the demo (local Stripe + service + demo page), or `billing-local stripe` (the
//! local Stripe alone, for docker compose).

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;

use billing_local::{Options, local_stripe, start};
use billing_service::configuration::{LogFormat, process_env};
use billing_service::startup::shutdown_signal;
use billing_service::telemetry;
use clap::{Parser, Subcommand};

/// The whole billing flow on this machine, offline: a local Stripe (in memory; 4242 4242 4242
/// 4242 pays, 4000 0000 0000 0002 is declined), the billing service on a fresh SQLite database
/// wired to it, and a demo page. Prints the demo's URL.
#[derive(Debug, Parser)]
#[command(name = "billing-local", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// The address every part listens on.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// The demo page (the service's FRONTEND_URL).
    #[arg(long, default_value_t = 3000)]
    port: u16,
    #[arg(long, default_value_t = 8080)]
    service_port: u16,
    #[arg(long, default_value_t = 12111)]
    stripe_port: u16,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Only the local Stripe: its API at /v1, Checkout and portal pages, signed events to the
    /// webhook endpoints created through it.
    ///
    /// Example (docker compose):
    ///   billing-local stripe --listen 0.0.0.0:12111 --public-url http://localhost:12111 \
    ///     --webhook-secret whsec_compose_local
    Stripe {
        #[arg(long, default_value = "127.0.0.1:12111")]
        listen: SocketAddr,
        /// The URL browsers reach it at (Checkout and portal links start with it).
        #[arg(long)]
        public_url: Option<String>,
        /// The signing secret of every webhook endpoint created; a random one per endpoint if
        /// absent.
        #[arg(long, env = "LOCAL_STRIPE_WEBHOOK_SECRET")]
        webhook_secret: Option<String>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs for a person at a terminal, unless LOG_FORMAT says otherwise.
    let format = match std::env::var_os("LOG_FORMAT") {
        Some(_) => LogFormat::from_env(&process_env).unwrap_or(LogFormat::Pretty),
        None => LogFormat::Pretty,
    };
    telemetry::init(format);
    let outcome = match cli.command {
        Some(Command::Stripe {
            listen,
            public_url,
            webhook_secret,
        }) => stripe_only(listen, public_url, webhook_secret).await,
        None => {
            everything(Options {
                host: cli.host,
                demo_port: cli.port,
                service_port: cli.service_port,
                stripe_port: cli.stripe_port,
            })
            .await
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "billing-local: {}",
                billing_service::error::chain(e.as_ref())
            );
            ExitCode::FAILURE
        }
    }
}

async fn everything(options: Options) -> anyhow::Result<()> {
    let running = start(&options).await?;
    println!(
        "\nThe demo is ready: open {}\n  service      {}\n  local Stripe {}\n  database     {}\nCtrl-C stops everything (the database is temporary).",
        running.demo_url, running.service_url, running.stripe_url, running.database
    );
    shutdown_signal().await;
    running.stop().await;
    Ok(())
}

async fn stripe_only(
    listen: SocketAddr,
    public_url: Option<String>,
    webhook_secret: Option<String>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let public_url = public_url.unwrap_or_else(|| format!("http://{listen}"));
    let (_api, router) = local_stripe(&public_url, webhook_secret);
    println!("Local Stripe on {listen}, reached at {public_url}");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    Ok(())
}
