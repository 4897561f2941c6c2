//! The HTTP floor of the webhook and entitlements benchmarks: the same stack as billing-service
//! (tokio, hyper, axum, TCP_NODELAY) answering `POST /webhook/stripe` with the same JSON after
//! reading the body, and `GET /billing/entitlements` with a user's features, and doing nothing
//! else: no signature, no parsing, no user, no database. Driven by the same load as the
//! service, it shows what the load generator and loopback HTTP alone allow on the machine, so the
//! service's events/s can be read against it. Not a server to deploy.
//!
//!     cargo run --release -p billing-service --example http_floor -- 18082

use axum::Router;
use axum::body::Bytes;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use serde_json::json;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port = std::env::args().nth(1).unwrap_or_else(|| "18082".into());
    let app = Router::new()
        .route(
            "/status/ready",
            get(|| async { axum::Json(json!({"ready": "OK"})) }),
        )
        .route(
            "/billing/entitlements",
            get(|| async {
                axum::Json(json!({"features": ["billing_basic", "exports", "priority_support"]}))
            }),
        )
        .route(
            "/webhook/stripe",
            post(|body: Bytes| async move {
                axum::Json(json!({"received": true, "bytes": body.len(), "duplicate": false}))
            }),
        );
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}"))
        .await?
        .tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
    axum::serve(listener, app).await
}
