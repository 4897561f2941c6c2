//! Status routes, with the paths and JSON of the template's Node backend so that existing
//! Kubernetes probes and auth-proxy rules keep working.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::startup::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/status/alive", get(alive))
        .route("/status/ready", get(ready))
        .route("/status/about", get(about))
}

/// Liveness: the process answers. Deliberately no database access, so that a database outage
/// does not make Kubernetes restart every pod.
async fn alive() -> Json<Value> {
    Json(json!({ "alive": "OK" }))
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
