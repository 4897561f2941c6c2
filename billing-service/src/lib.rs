//! billing-service: a Stripe billing microservice.
//!
//! # Layout
//! - [`configuration`]: typed settings from the environment, every problem reported at once.
//! - [`db`]: the connection pool (PostgreSQL or SQLite through sqlx's `Any` driver).
//! - [`tables`]: one owner module per table, holding its SQL and its rules.
//! - [`migrate`]: a Flyway-compatible migrator over the scripts embedded from `migrations/`.
//! - [`state`]: what every request handler can reach.
//! - [`startup`]: `Application::build` / `run_until_stopped`, the router and its request span.
//! - [`server`]: accepting connections, with a deadline for each request's headers.
//! - [`routes`]: HTTP handlers, one module per area, and the list of what is routed.
//! - [`webhook`]: Stripe webhooks: verify, store once, process in the background.
//! - [`stripe_reader`]: Stripe's API read as raw JSON, for `sync` and for settling ties.
//! - [`sync`]: reading from Stripe what webhooks did not bring (`billing-service sync`).
//! - [`checkout`]: starting a subscription, and the redirects back.
//! - [`portal`]: Stripe's customer portal.
//! - [`products`]: the catalog's prices from Stripe, cached.
//! - [`auth`]: who the user is: a verified JWT, or the auth proxy's headers (`AUTH_MODE`).
//! - [`error`]: the API's one error type and its JSON body.
//! - [`lambda`]: the same service as an AWS Lambda function (`AWS_LAMBDA_RUNTIME_API`).
//! - [`metrics`]: Prometheus counters behind `GET /metrics`.
//! - [`clock`]: now, in seconds and milliseconds.
//! - [`cli`]: the `billing-service` commands.
//! - [`telemetry`]: tracing set-up.
//!
//! Modules import each other without cycles (a test in `tests/api/layout.rs` checks).

pub mod auth;
pub mod checkout;
pub mod cli;
pub mod clock;
pub mod configuration;
pub mod db;
pub mod error;
pub mod lambda;
pub mod metrics;
pub mod migrate;
pub mod portal;
pub mod products;
pub mod routes;
pub mod server;
pub mod startup;
pub mod state;
pub mod stripe_reader;
pub mod sync;
pub mod tables;
pub mod telemetry;
pub mod webhook;
