//! `GET /metrics`: Prometheus text format.

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::startup::AppState;
use crate::webhook::queue_depth;

pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    // A scrape still answers while the database is down, without the depth.
    let depth = queue_depth(&state.db).await.ok();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(depth),
    )
}
