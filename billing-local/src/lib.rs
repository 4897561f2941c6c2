//! `billing-local`: the whole billing flow on one machine, offline, in one process.
//!
//! A newcomer sees checkout work in minutes without a Stripe account, and a frontend developer
//! builds against the real service. Started by [`start`]:
//! - [`stripe_server`]: a local Stripe (the project's Stripe double, in memory, checking every
//!   request against Stripe's request schemas), with the Checkout and portal pages Stripe hosts,
//!   and [`delivery`] of the signed events they cause;
//! - the catalog provisioned into it by `stripe-setup`'s library, the webhook endpoint's secret
//!   handed to the service in memory;
//! - billing-service itself, on a SQLite file of its own, unchanged;
//! - [`demo`]: the demo page, and the stand-in for the auth proxy.

pub mod delivery;
pub mod demo;
pub mod pages;
pub mod stripe_server;

use std::net::SocketAddr;

use anyhow::Context as _;
use billing_service::configuration::Settings;
use billing_service::db::Db;
use billing_service::startup::Application;
use billing_stripe::catalog::Catalog;
use billing_stripe::{SecretKey, StripeClient, StripeConfig};
use rand::Rng;
use stripe_setup::apply::SecretSink;
use stripe_setup::plan::Plan;
use stripe_setup::secret_output::{Destination, SecretFormat};
use stripe_wiremock::Api;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The key the service and stripe-setup use with the local Stripe (it accepts any `sk_`).
const LOCAL_KEY: &str = "sk_test_local";
/// The environment stripe-setup provisions, as its metadata records it.
const ENVIRONMENT: &str = "local";

/// Where each part listens. Port 0 picks a free one (tests).
#[derive(Debug, Clone)]
pub struct Options {
    pub host: std::net::IpAddr,
    pub demo_port: u16,
    pub service_port: u16,
    pub stripe_port: u16,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            host: [127, 0, 0, 1].into(),
            // The service's FRONTEND_URL default, so links in its docs work here too.
            demo_port: 3000,
            service_port: 8080,
            stripe_port: 12111,
        }
    }
}

/// Everything running; [`Running::stop`] ends it and deletes the database.
pub struct Running {
    pub demo_url: String,
    pub service_url: String,
    pub stripe_url: String,
    /// The service's database (a SQLite file in a temporary folder).
    pub db: Db,
    /// That file's path.
    pub database: String,
    pub stripe: Api,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    _data: tempfile::TempDir,
}

impl Running {
    pub async fn stop(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// A local Stripe alone (docker compose runs it beside the service's own container): every
/// webhook endpoint created through it signs with `webhook_secret`, and its Checkout and portal
/// URLs start with `public_url`.
pub fn local_stripe(public_url: &str, webhook_secret: Option<String>) -> (Api, axum::Router) {
    let api = Api::new();
    api.set_public_url(public_url.trim_end_matches('/'));
    api.set_webhook_secret(webhook_secret);
    let router = stripe_server::router(api.clone());
    (api, router)
}

fn serve(listener: TcpListener, router: axum::Router, stop: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
    })
}

async fn bind(host: std::net::IpAddr, port: u16, what: &str) -> anyhow::Result<TcpListener> {
    let address = SocketAddr::new(host, port);
    TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address} for {what} (choose another port)"))
}

fn url_of(listener: &TcpListener) -> anyhow::Result<String> {
    Ok(format!("http://{}", listener.local_addr()?))
}

pub async fn start(options: &Options) -> anyhow::Result<Running> {
    let shutdown = CancellationToken::new();
    let mut tasks = Vec::new();
    let secret = format!("whsec_local_{:032x}", rand::rng().random::<u128>());

    let stripe_listener = bind(options.host, options.stripe_port, "the local Stripe").await?;
    let stripe_url = url_of(&stripe_listener)?;
    let (api, router) = local_stripe(&stripe_url, Some(secret.clone()));
    tasks.push(serve(stripe_listener, router, shutdown.clone()));

    let demo_listener = bind(options.host, options.demo_port, "the demo page").await?;
    let demo_url = url_of(&demo_listener)?;

    let data = tempfile::Builder::new().prefix("billing-local").tempdir()?;
    let database = data.path().join("billing.db").display().to_string();
    let database_url = format!("sqlite://{database}");
    let service_port = options.service_port.to_string();
    let host = options.host.to_string();
    let env = |key: &str| -> Option<String> {
        Some(match key {
            "DATABASE_URL" => database_url.clone(),
            "STRIPE_API_SECRET_KEY" => LOCAL_KEY.to_owned(),
            "STRIPE_WEBHOOK_SECRET" => secret.clone(),
            "STRIPE_API_BASE" => stripe_url.clone(),
            "SERVER_HOST" => host.clone(),
            "SERVER_PORT" => service_port.clone(),
            // The browser comes back to the demo page, through its proxy to the service.
            "FRONTEND_URL" | "BACKEND_URL" => demo_url.clone(),
            "AUTH_MODE" => "trusted-headers".to_owned(),
            "POD_NAME" => "billing-local".to_owned(),
            _ => return None,
        })
    };
    let settings = Settings::from_env(&env).context("configuring the service")?;
    let app = Application::build(settings).await?;
    let service_url = format!("http://{}:{}", options.host, app.port());
    let db = app.state().db.clone();

    provision(&stripe_url, &format!("{service_url}/webhook/stripe"), &data)
        .await
        .context("provisioning the catalog into the local Stripe")?;

    let stop = shutdown.clone();
    tasks.push(tokio::spawn(async move {
        app.run_until_stopped(stop).await;
    }));
    tasks.push(serve(
        demo_listener,
        demo::router(service_url.clone(), db.clone()),
        shutdown.clone(),
    ));
    Ok(Running {
        demo_url,
        service_url,
        stripe_url,
        db,
        database,
        stripe: api,
        shutdown,
        tasks,
        _data: data,
    })
}

/// What `stripe-setup init --env local --webhook-url <service>` does: the built-in catalog and
/// the webhook endpoint. The endpoint's secret is the one the local Stripe was given, so what
/// stripe-setup writes (in the temporary folder) is not needed.
async fn provision(
    stripe_url: &str,
    webhook_url: &str,
    data: &tempfile::TempDir,
) -> anyhow::Result<()> {
    let mut config = StripeConfig::new(SecretKey::parse(LOCAL_KEY)?);
    config.api_base = stripe_url.to_owned();
    let client = StripeClient::new(&config)?;
    let catalog = Catalog::builtin();
    let current =
        stripe_setup::current::read(&client, &catalog, ENVIRONMENT, Some(webhook_url)).await?;
    let plan = Plan::new(&catalog, Some(webhook_url), &current);
    let sink = SecretSink {
        format: SecretFormat::Dotenv,
        destination: Destination::File(data.path().join("webhook-secret.env")),
    };
    stripe_setup::apply::apply(&client, ENVIRONMENT, &plan, &sink).await?;
    Ok(())
}
