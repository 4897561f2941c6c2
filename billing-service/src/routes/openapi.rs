//! `GET /openapi.json`: the OpenAPI description of this HTTP API.
//!
//! The document is written by hand (`billing-service/openapi.json`) rather than generated, so
//! that it states the contract (every status, exact bodies) instead of echoing the handlers'
//! signatures; `tests/api/openapi.rs` keeps it and the router in step, and `.ci/schemathesis`
//! checks the running service against it. It is embedded at compile time so the binary serves
//! exactly the document it was built with, with no file to ship beside it.

use axum::http::{Method, header};
use axum::response::IntoResponse;

use super::Routes;

/// The document, byte for byte as in the repository.
pub const DOCUMENT: &str = include_str!("../../openapi.json");

pub fn routes() -> Routes {
    Routes::default().route(Method::GET, "/openapi.json", document)
}

async fn document() -> impl IntoResponse {
    // Served as stored, not re-serialised: what clients fetch is what the tests compared.
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}
