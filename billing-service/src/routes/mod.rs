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

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::Request;
use axum::handler::Handler;
use axum::http::Method;
use axum::response::IntoResponse;
use axum::routing::{MethodFilter, Route, on};
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::{Layer, Service, ServiceBuilder};

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

    /// Wraps every route added so far (not the fallbacks) in `layer`.
    fn route_layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<Route> + Clone + Send + Sync + 'static,
        L::Service: Service<Request> + Clone + Send + Sync + 'static,
        <L::Service as Service<Request>>::Response: IntoResponse + 'static,
        <L::Service as Service<Request>>::Error: Into<Infallible> + 'static,
        <L::Service as Service<Request>>::Future: Send + 'static,
    {
        self.router = self.router.route_layer(layer);
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
            .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
    }
}

/// The operator's routes (probes, metrics, the API document): never shed, so that a busy pod
/// is not also reported dead.
fn operator() -> Routes {
    Routes::default()
        .merge(status::routes())
        .merge(openapi::routes())
}

/// The routes users and Stripe call.
fn public() -> Routes {
    Routes::default()
        .merge(billing::routes())
        .merge(webhook::routes())
}

/// The whole HTTP API.
pub fn api() -> Routes {
    operator().merge(public())
}

/// The whole HTTP API, the public routes sharing at most `max_in_flight` requests at a time;
/// beyond that a request is answered 503 at once rather than queued.
pub fn router(max_in_flight: usize) -> Router<AppState> {
    let limit = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(ApiError::from_layer))
        .load_shed()
        // Global: a plain concurrency limit would give each route a limit of its own.
        .layer(GlobalConcurrencyLimitLayer::with_semaphore(Arc::new(
            tokio::sync::Semaphore::new(max_in_flight),
        )));
    operator().merge(public().route_layer(limit)).into_router()
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
