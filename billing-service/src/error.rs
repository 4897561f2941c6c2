//! The one error type of the HTTP API.
//!
//! Every handler returns `Result<_, ApiError>`; the response is always
//! `{"error": {"code": ..., "message": ...}}` with the matching status. Internal causes are
//! logged with their whole chain and replaced by a generic message, so no SQL, secret or Stripe
//! internals reach the client.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is wrong; the message says how and is safe to show.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    NotFound(String),
    /// No route has this path: distinct from a route's own 404 ("no such subscription").
    #[error("no such route")]
    NoRoute,
    #[error("this route does not take that method")]
    MethodNotAllowed,
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// Stripe failed or could not be reached; the message is one we wrote, not Stripe's.
    #[error("{0}")]
    BadGateway(String),
    /// The database is not answering; the client should retry (Stripe does, for webhooks).
    #[error("the database is unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::NoRoute => (StatusCode::NOT_FOUND, "no_route"),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            Self::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::BadGateway(_) => (StatusCode::BAD_GATEWAY, "stripe_unavailable"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "database_unavailable"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    /// Any database error on a request path is treated as the database being unavailable:
    /// the schema is ours, so a failing query means the database, not the request, is at fault.
    fn from(e: sqlx::Error) -> Self {
        Self::Unavailable(e.into())
    }
}

impl From<billing_stripe::StripeError> for ApiError {
    /// Stripe refusing a request is the caller's problem, and Stripe's message says what; Stripe
    /// failing is ours, and its details stay in the logs.
    fn from(e: billing_stripe::StripeError) -> Self {
        match e {
            billing_stripe::StripeError::Rejected { message, .. } => Self::BadRequest {
                code: "stripe_rejected",
                message,
            },
            other => {
                tracing::error!(error = %chain(&other), "Stripe request failed");
                Self::BadGateway("Stripe could not be reached; try again shortly".into())
            }
        }
    }
}

/// Formats an error with its whole `source()` chain, for logs.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            tracing::error!(error = %chain(&self), code, "request failed");
        }
        let body = json!({ "error": { "code": code, "message": self.to_string() } });
        (status, Json(body)).into_response()
    }
}
