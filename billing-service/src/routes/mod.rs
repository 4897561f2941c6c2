//! HTTP routes, one module per area, each adapting HTTP to plain functions elsewhere.
//!
//! Routes are added through [`Routes`], which remembers each (method, path) it routes: axum
//! cannot list a router's routes, and the OpenAPI test must compare the document with what is
//! really served, not with a list kept by hand.

pub mod billing;
pub mod openapi;
pub mod status;
pub mod webhook;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::Request;
use axum::handler::Handler;
use axum::http::{HeaderValue, Method, header};
use axum::response::IntoResponse;
use axum::routing::{MethodFilter, Route, on};
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::{Layer, Service, ServiceBuilder};
use tower_http::cors::CorsLayer;
use tower_http::timeout::RequestBodyTimeoutLayer;
use url::Url;

use crate::configuration::HttpSettings;
use crate::error::ApiError;
use crate::state::AppState;

/// A router with the list of what it routes.
#[derive(Default)]
pub struct Routes {
    router: Router<AppState>,
    table: Vec<(Method, &'static str)>,
}

impl Routes {
    /// Routes `method` on `path` to `handler`.
    pub fn route<H, T>(mut self, method: Method, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone())
            .unwrap_or_else(|_| panic!("{method} cannot be routed"));
        self.router = self.router.route(path, on(filter, handler));
        self.table.push((method, path));
        self
    }

    pub fn merge(mut self, other: Routes) -> Self {
        self.router = self.router.merge(other.router);
        self.table.extend(other.table);
        self
    }

    /// Wraps every route added so far in `layer`, their answer to another method (405, or a CORS
    /// preflight's `OPTIONS`) included; the answer for unknown paths is left to the whole
    /// router.
    fn layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<Route> + Clone + Send + Sync + 'static,
        L::Service: Service<Request> + Clone + Send + Sync + 'static,
        <L::Service as Service<Request>>::Response: IntoResponse + 'static,
        <L::Service as Service<Request>>::Error: Into<Infallible> + 'static,
        <L::Service as Service<Request>>::Future: Send + 'static,
    {
        // Set before layering: set afterwards, it would replace the wrapped default.
        self.router = self
            .router
            .method_not_allowed_fallback(method_not_allowed)
            .layer(layer);
        self
    }

    /// Every (method, path) routed, in the order they were added.
    pub fn table(&self) -> &[(Method, &'static str)] {
        &self.table
    }

    /// The router, answering JSON errors for unknown paths and methods too, as every other
    /// answer of the API.
    pub fn into_router(self) -> Router<AppState> {
        self.router
            .fallback(|| async { ApiError::NoRoute })
            .method_not_allowed_fallback(method_not_allowed)
    }
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// The routes, by who calls them: one list for the API's table and for the served router, which
/// wraps each group in its own layers. Both take it apart field by field, so a group added here
/// and forgotten in either is an unused variable, which the lints refuse.
struct Groups {
    /// Probes, metrics, the API document: never shed, so that a busy pod is not also reported
    /// dead.
    operator: Routes,
    /// Stripe's deliveries.
    stripe: Routes,
    /// What the frontend calls from the browser.
    browser: Routes,
}

fn groups() -> Groups {
    Groups {
        operator: Routes::default()
            .merge(status::routes())
            .merge(openapi::routes()),
        stripe: webhook::routes(),
        browser: billing::routes(),
    }
}

/// The whole HTTP API.
pub fn api() -> Routes {
    let Groups {
        operator,
        stripe,
        browser,
    } = groups();
    operator.merge(browser).merge(stripe)
}

/// The whole HTTP API, with its limits: every route has the request timeouts; the routes users
/// and Stripe call share at most `http.max_in_flight` requests at a time (beyond that a request
/// is answered 503 at once rather than queued); the routes the frontend calls have CORS, around
/// the rest, so that a browser can read their timeouts and refusals too. The webhook has no
/// CORS: Stripe is not a browser, and the layer is a part of each delivery's cost (BENCHMARKS.md).
pub fn router(http: &HttpSettings, frontend_url: &Url) -> Router<AppState> {
    let timeouts = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(ApiError::from_layer))
        .timeout(http.request_timeout)
        .layer(RequestBodyTimeoutLayer::new(http.body_read_timeout));
    let limit = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(ApiError::from_layer))
        .load_shed()
        // Global: a plain concurrency limit would give each route a limit of its own.
        .layer(GlobalConcurrencyLimitLayer::with_semaphore(Arc::new(
            tokio::sync::Semaphore::new(http.max_in_flight),
        )));
    let public = |routes: Routes| routes.layer(limit.clone()).layer(timeouts.clone());
    let Groups {
        operator,
        stripe,
        browser,
    } = groups();
    operator
        .layer(timeouts.clone())
        .merge(public(stripe))
        .merge(public(browser).layer(cors(frontend_url)))
        .into_router()
}

/// The frontend calls with credentials (cookies for the auth proxy), so its origin is named
/// exactly: a wildcard is not allowed with credentials, and would be wrong anyway.
fn cors(frontend_url: &Url) -> CorsLayer {
    let origin = frontend_url.origin().ascii_serialization();
    let mut layer = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION])
        .allow_credentials(true)
        .max_age(Duration::from_secs(600));
    if let Ok(origin) = HeaderValue::from_str(&origin) {
        layer = layer.allow_origin(origin);
    }
    layer
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    #[test]
    fn no_route_is_added_twice() {
        let api = super::api();
        let unique: HashSet<_> = api.table().iter().collect();
        assert_eq!(unique.len(), api.table().len(), "{:?}", api.table());
    }
}
