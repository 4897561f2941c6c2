//! What every request handler can reach. Its own module so that the routes depend on it, and
//! `startup` on the routes, without the routes depending on `startup`.

use std::sync::Arc;

use axum::extract::FromRef;
use billing_stripe::StripeClient;
use tokio::sync::Notify;

use crate::auth::Authenticator;
use crate::configuration::Settings;
use crate::db::Db;
use crate::metrics::Metrics;
use crate::portal::PortalConfiguration;
use crate::products::Products;
use crate::webhook::batch::Batcher;
use crate::webhook::receive::BodyBudget;
use crate::webhook::worker::{Worker, WorkerHealth};

/// Cloned for every request (axum's `State`): one reference count, not one per part (the
/// Stripe client alone holds several).
#[derive(Clone)]
pub struct AppState(Arc<AppParts>);

impl AppState {
    pub fn new(parts: AppParts) -> Self {
        Self(Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppParts;

    fn deref(&self) -> &AppParts {
        &self.0
    }
}

pub struct AppParts {
    pub db: Db,
    pub settings: Arc<Settings>,
    pub metrics: Metrics,
    pub stripe: StripeClient,
    pub products: Arc<Products>,
    /// The customer-portal configuration sessions are opened with.
    pub portal: Arc<PortalConfiguration>,
    /// Tells this process's worker that an event was just stored.
    pub wake_worker: Arc<Notify>,
    /// Stores webhook deliveries, many per commit.
    pub webhook_batcher: Batcher,
    /// Whether this process's worker is still running (liveness reports it).
    pub worker_health: WorkerHealth,
    /// Who the user of a request is (`AUTH_MODE`).
    pub auth: Arc<Authenticator>,
    /// Memory for webhook bodies being read.
    pub webhook_bodies: BodyBudget,
    /// In Lambda mode, the worker the webhook route processes each stored event with before
    /// answering (no background worker runs there); `None` on a server.
    pub inline_worker: Option<Worker>,
}

impl FromRef<AppState> for Arc<Authenticator> {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}
