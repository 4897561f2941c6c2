//! What operators and their tools ask: the probes, with the paths and JSON of the template's
//! Node backend so that existing Kubernetes probes and auth-proxy rules keep working, and the
//! Prometheus scrape.

use axum::Json;
use axum::extract::State;
use axum::http::{Method, StatusCode, header};
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::Routes;
use crate::state::AppState;
use crate::tables::events;

pub fn routes() -> Routes {
    Routes::default()
        .route(Method::GET, "/status/alive", alive)
        .route(Method::GET, "/status/ready", ready)
        .route(Method::GET, "/status/about", about)
        .route(Method::GET, "/metrics", metrics)
}

/// Liveness: the process answers and its webhook worker runs. Deliberately no database
/// access, so that a database outage does not make Kubernetes restart every pod; but a stopped
/// worker does, since the pod would go on acknowledging events nobody processes.
async fn alive(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    // In Lambda no worker runs in the background: each request processes its own event.
    if state.worker_health.is_running() || state.inline_worker.is_some() {
        (StatusCode::OK, Json(json!({ "alive": "OK" })))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "alive": "worker stopped" })),
        )
    }
}

/// Readiness: the database answers now. Checked on every call (no cached state), so it flips
/// back to ready by itself when the database returns.
async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    if state.db.is_ready().await {
        (StatusCode::OK, Json(json!({ "ready": "OK" })))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": "unavailable" })),
        )
    }
}

async fn about(State(state): State<AppState>) -> Json<Value> {
    Json(json!({
        "podName": state.settings.pod_name,
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

/// Prometheus text format; the counters live in [`crate::metrics`].
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    // A scrape still answers while the database is down, without the depth.
    let depth = events::queue_depth(&state.db.pool).await.ok();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state
            .metrics
            .encode(depth, state.worker_health.is_running()),
    )
}
