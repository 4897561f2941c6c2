//! billing-service: a Stripe billing microservice.
//!
//! # Layout
//! - [`configuration`]: typed settings from the environment, every problem reported at once.
//! - [`db`]: the connection pool (PostgreSQL or SQLite through sqlx's `Any` driver).
//! - [`migrate`]: a Flyway-compatible migrator over the scripts embedded from `migrations/`.
//! - [`startup`]: `Application::build` / `run_until_stopped`, the router and its request span.
//! - [`routes`]: HTTP handlers, one module per area.
//! - [`webhook`]: Stripe webhooks: verify, store once, process in the background.
//! - [`metrics`]: Prometheus counters behind `GET /metrics`.
//! - [`error`]: the API's one error type and its JSON body.
//! - [`auth`]: the user named by the auth proxy's `x-user-id` / `x-user-email` headers.
//! - [`products`]: the catalog's prices from Stripe, cached.
//! - [`checkout`]: starting a subscription, the redirects back, the user's subscription.
//! - [`portal`]: Stripe's customer portal.
//! - [`cli`]: the `billing-service` commands.
//! - [`telemetry`]: tracing set-up.

pub mod auth;
pub mod checkout;
pub mod cli;
pub mod configuration;
pub mod db;
pub mod error;
pub mod metrics;
pub mod migrate;
pub mod portal;
pub mod products;
pub mod routes;
pub mod startup;
pub mod telemetry;
pub mod webhook;
