//! HTTP routes, one module per area, each with its own `router()`, merged in [`router`].

pub mod billing;
pub mod metrics;
pub mod openapi;
pub mod status;

use axum::Router;

use crate::error::ApiError;
use crate::startup::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(status::router())
        .merge(metrics::router())
        .merge(openapi::router())
        .merge(billing::router())
        .merge(crate::webhook::receive::router())
        // JSON errors here too, as for every other answer of the API.
        .fallback(|| async { ApiError::NoRoute })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
}
