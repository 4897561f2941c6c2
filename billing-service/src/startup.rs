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
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;
use tracing::Span;

use crate::configuration::Settings;
use crate::db::Db;
use crate::migrate::Migrator;
use crate::routes;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub settings: Arc<Settings>,
}

pub struct Application {
    listener: TcpListener,
    state: AppState,
}

impl Application {
    /// Connects to the database (retrying briefly), applies pending migrations and binds the
    /// port.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let db = Db::connect(&settings.database).await?;
        let migrator = Migrator::embedded(db.engine)?;
        migrator
            .migrate(&db, false)
            .await
            .context("applying database migrations")?;
        Self::build_with_db(settings, db).await
    }

    /// Binds the port for an already connected and migrated database.
    pub async fn build_with_db(settings: Settings, db: Db) -> anyhow::Result<Self> {
        let address = format!("0.0.0.0:{}", settings.port);
        let listener = TcpListener::bind(&address)
            .await
            .with_context(|| format!("binding {address}"))?;
        Ok(Self {
            listener,
            state: AppState {
                db,
                settings: Arc::new(settings),
            },
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` is cancelled, then finishes in-flight requests.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        tracing::info!(port = self.port(), "listening");
        axum::serve(self.listener, router(self.state))
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
    }
}

/// The whole HTTP surface, with a request span around every request.
pub fn router(state: AppState) -> Router {
    routes::router()
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
