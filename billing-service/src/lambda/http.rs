//! HTTP events through the router, as if they had come over plain HTTP.
//!
//! `lambda_http` turns an API Gateway HTTP API or function URL event into an `http::Request`
//! (a base64 body decoded to its exact bytes, which the webhook's signature is computed over;
//! headers; cookies; the raw query) and the router's response back into the event's answer
//! (text or base64 by content type, `Set-Cookie` as `cookies`). One difference is ours to
//! undo: on a named stage the path starts with the stage (`/prod/billing/products`), which
//! the routes do not; it is removed here, so routes, redirects and errors are the same on every
//! stage, custom domain and function URL.

use axum::body::Body;
use axum::http::{Request, Uri};
use axum::response::IntoResponse;
use lambda_http::request::{LambdaRequest, RequestContext};
use lambda_http::{Adapter, Context, LambdaEvent, RequestExt, Service};
use serde_json::Value;
use tower::ServiceExt;

use super::{App, BuildError};
use crate::error::ApiError;

/// The event's answer: the router's response, or the error that kept the function from being
/// set up (503 while the database or secrets are out of reach, 500 when misconfigured).
pub async fn answer(
    app: Result<&App, &BuildError>,
    request: LambdaRequest,
    context: Context,
) -> Value {
    let failure = app.as_ref().err().map(|e| match e {
        BuildError::Unavailable(_) => StatusOnly::Unavailable,
        BuildError::Misconfigured(_) => StatusOnly::Misconfigured,
    });
    let router = app.ok().map(|app| app.router.clone());
    let service = lambda_http::service_fn(move |request: lambda_http::Request| {
        let router = router.clone();
        async move {
            let request = without_stage(request).map(Body::new);
            match (router, failure) {
                (Some(router), _) => router.oneshot(request).await,
                (None, Some(StatusOnly::Misconfigured)) => Ok(misconfigured()),
                (None, _) => Ok(unavailable()),
            }
        }
    });
    let mut adapter = Adapter::from(service);
    // The service answers every request (its error type is `Infallible`).
    let Ok(response) = adapter.call(LambdaEvent::new(request, context)).await;
    serde_json::to_value(response).expect("a Lambda response serialises")
}

/// Why no router could answer; its cause was logged when the build failed.
#[derive(Clone, Copy)]
enum StatusOnly {
    Unavailable,
    Misconfigured,
}

fn unavailable() -> axum::response::Response {
    ApiError::Unavailable(anyhow::anyhow!("the function could not be set up")).into_response()
}

fn misconfigured() -> axum::response::Response {
    ApiError::Internal(anyhow::anyhow!("the function is misconfigured")).into_response()
}

/// The request with its path as the routes know it: the event's `rawPath` without the stage's
/// prefix. (`lambda_http` puts the stage in front of a path that lacks it, which would turn a
/// custom domain's `/billing/products` into `/prod/billing/products`, and `/prod` into
/// `/prod/prod`.)
fn without_stage<B>(mut request: Request<B>) -> Request<B> {
    let stage = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(context)) => context.stage.clone(),
        _ => None,
    };
    let Some(stage) = stage.filter(|s| s != "$default") else {
        return request;
    };
    let raw = request.raw_http_path();
    let path = match raw
        .strip_prefix('/')
        .and_then(|p| p.strip_prefix(stage.as_str()))
    {
        Some("") => "/",
        Some(rest) if rest.starts_with('/') => rest,
        _ => raw,
    };
    let path_and_query = match request.uri().query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    let mut parts = request.uri().clone().into_parts();
    match path_and_query.parse() {
        Ok(path_and_query) => parts.path_and_query = Some(path_and_query),
        Err(_) => return request,
    }
    if let Ok(uri) = Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(stage: &str, raw_path: &str, query: &str) -> lambda_http::Request {
        let text = serde_json::json!({
            "version": "2.0", "routeKey": "$default", "rawPath": raw_path, "rawQueryString": query,
            "headers": {"host": "api.example.com"}, "isBase64Encoded": false,
            "requestContext": {
                "accountId": "1", "apiId": "abc", "domainName": "api.example.com",
                "http": {"method": "GET", "path": raw_path, "protocol": "HTTP/1.1",
                         "sourceIp": "1.2.3.4", "userAgent": "t"},
                "requestId": "r", "routeKey": "$default", "stage": stage,
                "time": "30/Nov/2026:19:00:00 +0000", "timeEpoch": 1
            }
        })
        .to_string();
        let request: LambdaRequest = serde_json::from_str(&text).unwrap();
        request.into()
    }

    #[test]
    fn the_stage_prefix_is_removed_and_nothing_else() {
        let cases = [
            (
                "$default",
                "/billing/success",
                "session_id=cs_1",
                "/billing/success?session_id=cs_1",
            ),
            (
                "prod",
                "/prod/billing/success",
                "session_id=cs_1",
                "/billing/success?session_id=cs_1",
            ),
            // A custom domain's mapping leaves the stage out of rawPath.
            ("prod", "/billing/products", "", "/billing/products"),
            ("prod", "/prod", "", "/"),
            ("prod", "/production/x", "", "/production/x"),
        ];
        for (stage, raw_path, query, expected) in cases {
            let request = without_stage(event(stage, raw_path, query));
            assert_eq!(
                request.uri().path_and_query().map(|p| p.as_str()),
                Some(expected),
                "stage {stage}, {raw_path}"
            );
        }
    }
}
