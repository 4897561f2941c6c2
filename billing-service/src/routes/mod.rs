//! HTTP routes, one module per area, each with its own `router()`, merged in [`router`].

pub mod billing;
pub mod metrics;
pub mod status;

use axum::Router;

use crate::startup::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(status::router())
        .merge(metrics::router())
        .merge(billing::router())
        .merge(crate::webhook::receive::router())
}
