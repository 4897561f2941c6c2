//! Building and running the application: connect, migrate, bind, serve.
//!
//! `build` binds the listener before anything serves, so tests can ask for port 0 and read the
//! port back; `run_until_stopped` serves until the shutdown token fires, then lets in-flight
//! requests finish.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::Request;
use axum::response::Response;
use billing_stripe::{StripeClient, StripeConfig};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;
use tracing::Span;

use crate::auth::Authenticator;
use crate::configuration::{AuthSettings, Settings, StripeApiSettings};
use crate::db::Db;
use crate::metrics::Metrics;
use crate::migrate::Migrator;
use crate::portal::PortalConfiguration;
use crate::products::Products;
use crate::routes;
use crate::server;
use crate::state::{AppParts, AppState};
use crate::stripe_reader::StripeReader;
use crate::webhook::batch::Batcher;
use crate::webhook::handlers::{Handlers, TieResolver};
use crate::webhook::receive::BodyBudget;
use crate::webhook::worker::{Worker, WorkerHealth};

pub struct Application {
    listener: TcpListener,
    state: AppState,
    worker: Worker,
}

impl Application {
    /// Connects to the database (retrying briefly), applies pending migrations and binds the
    /// port.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with_handlers(settings, Handlers::builtin()).await
    }

    /// As [`Application::build`], with event handlers of your own (see
    /// [`crate::webhook::handlers`]).
    pub async fn build_with_handlers(
        settings: Settings,
        handlers: Handlers,
    ) -> anyhow::Result<Self> {
        let db = Db::connect(&settings.database).await?;
        let migrator = Migrator::embedded(db.engine)?;
        migrator
            .migrate(&db, false)
            .await
            .context("applying database migrations")?;
        let address = std::net::SocketAddr::new(settings.http.host, settings.http.port);
        let listener = listen(address).with_context(|| format!("binding {address}"))?;
        let (state, worker, _) = assemble(db, settings, handlers, Mode::Server)?;
        Ok(Self {
            listener,
            state,
            worker,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves HTTP and runs the webhook worker until `shutdown` is cancelled; then finishes
    /// in-flight requests and the worker's current batch.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) {
        let address = self.listener.local_addr().ok();
        tracing::info!(port = self.port(), "listening");
        log_auth_mode(&self.state.settings.auth, address);
        // Marked running before the first request can ask.
        let running = self.state.worker_health.running();
        let worker = tokio::spawn(self.worker.run_until_stopped(shutdown.clone(), running));
        let header_read_timeout = self.state.settings.http.header_read_timeout;
        server::serve(
            self.listener,
            router(self.state),
            header_read_timeout,
            shutdown.clone(),
        )
        .await;
        let _ = worker.await;
    }
}

/// Where the application runs, which decides how webhook events are processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A long-running server: deliveries are stored in batches and the background worker
    /// processes them.
    Server,
    /// AWS Lambda (the `lambda` module): the process is frozen after each response, so nothing may
    /// be left to a background task. Each delivery is stored alone and processed before it is
    /// answered.
    Lambda,
}

/// Everything a request handler reaches, the worker that processes stored events, and the
/// Stripe reader the worker settles ties with (Lambda's scheduled run lists events with it), on a
/// connected and migrated database.
pub fn assemble(
    db: Db,
    settings: Settings,
    handlers: Handlers,
    mode: Mode,
) -> anyhow::Result<(AppState, Worker, Arc<StripeReader>)> {
    let auth = Arc::new(Authenticator::new(&settings.auth).context("setting up AUTH_MODE")?);
    let mut stripe_config = StripeConfig::new(settings.stripe.api_secret_key.clone());
    stripe_config.api_base = settings.stripe.api_base.to_string();
    stripe_config.timeout = settings.stripe.timeout;
    let stripe = StripeClient::new(&stripe_config).context("setting up the Stripe client")?;
    let products = Arc::new(Products::new(
        settings.stripe.catalog.clone(),
        settings.stripe.products_cache,
    ));
    let metrics = Metrics::default();
    let wake_worker = Arc::new(Notify::new());
    let reader = Arc::new(
        StripeReader::new(&StripeApiSettings {
            api_secret_key: settings.stripe.api_secret_key.clone(),
            api_base: settings.stripe.api_base.clone(),
            timeout: settings.stripe.timeout,
        })
        .context("setting up the Stripe reader")?,
    );
    let worker = Worker::new(
        db.clone(),
        handlers,
        settings.worker.clone(),
        metrics.clone(),
        wake_worker.clone(),
    )
    .resolving_ties_with(TieResolver::new(Arc::clone(&reader), metrics.clone()));
    let (webhook_batcher, inline_worker) = match mode {
        Mode::Server => (
            Batcher::start(db.clone(), worker.on_receipt())
                .context("starting the webhook store's thread")?,
            None,
        ),
        Mode::Lambda => (Batcher::direct(db.clone()), Some(worker.clone())),
    };
    let portal = Arc::new(PortalConfiguration::new(settings.stripe.products_cache));
    let state = AppState::new(AppParts {
        db,
        portal,
        settings: Arc::new(settings),
        metrics,
        stripe,
        products,
        wake_worker,
        webhook_batcher,
        worker_health: WorkerHealth::default(),
        auth,
        webhook_bodies: BodyBudget::default(),
        inline_worker,
    });
    Ok((state, worker, reader))
}

/// A listening socket with a backlog for bursts: with the usual 1,024, a burst of new
/// connections (a flood, or a proxy reconnecting its pool) overflows the queue and a refused SYN
/// costs the client a one-second retransmission, Stripe's deliveries included. The kernel caps
/// the number at `net.core.somaxconn`.
fn listen(address: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match address {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // A restarted process can bind while the old one's connections are in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(4096)
}

/// Says how users are identified; warns where trusting headers lets anyone on the network
/// name themselves any user.
fn log_auth_mode(auth: &AuthSettings, address: Option<std::net::SocketAddr>) {
    match auth {
        AuthSettings::Jwt(jwt) => tracing::info!(
            auth_mode = auth.mode(),
            jwks_url = %jwt.jwks_url,
            issuer = %jwt.issuer,
            audience = %jwt.audience,
            user_claim = %jwt.user_claim,
            "users are identified by bearer JWTs"
        ),
        AuthSettings::TrustedHeaders => match address.is_some_and(|a| a.ip().is_loopback()) {
            true => tracing::info!(
                auth_mode = auth.mode(),
                "users are identified by the x-user-id / x-user-email headers"
            ),
            false => tracing::warn!(
                auth_mode = auth.mode(),
                address = ?address,
                "users are identified by the x-user-id / x-user-email headers on a non-loopback \
                 address: anyone who can reach this port can act as any user. Only safe when \
                 nothing but the auth proxy reaches it (see the README); otherwise set \
                 AUTH_MODE=jwt"
            ),
        },
    }
}

/// The whole HTTP surface, with a request span around every request.
pub fn router(state: AppState) -> Router {
    routes::router(&state.settings.http, &state.settings.frontend_url)
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request| {
                    tracing::info_span!(
                        "request",
                        method = %request.method(),
                        path = %request.uri().path(),
                        status = tracing::field::Empty,
                        latency_ms = tracing::field::Empty,
                    )
                })
                .on_request(())
                .on_response(|response: &Response, latency: Duration, span: &Span| {
                    let latency_ms = latency.as_secs_f64() * 1000.0;
                    span.record("status", response.status().as_u16());
                    span.record("latency_ms", latency_ms);
                    tracing::info!(
                        status = response.status().as_u16(),
                        latency_ms,
                        "request served"
                    );
                })
                .on_failure(()),
        )
        .with_state(state)
}

/// Resolves on SIGTERM (Kubernetes stopping the pod) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received, finishing in-flight work");
}
