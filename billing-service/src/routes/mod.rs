//! HTTP routes, one module per area, each adapting HTTP to plain functions elsewhere.
//!
//! Routes are added through [`Routes`], which remembers each (method, path) it routes: axum
//! cannot list a router's routes, and the OpenAPI test must compare the document with what is
//! really served, not with a list kept by hand.

pub mod billing;
pub mod openapi;
pub mod status;
pub mod webhook;

use axum::Router;
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodFilter, on};

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

/// The whole HTTP API.
pub fn api() -> Routes {
    Routes::default()
        .merge(status::routes())
        .merge(openapi::routes())
        .merge(billing::routes())
        .merge(webhook::routes())
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
