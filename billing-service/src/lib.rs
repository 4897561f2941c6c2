//! billing-service: a Stripe billing microservice.
//!
//! # Layout
//! - [`configuration`]: typed settings from the environment, every problem reported at once.
//! - [`db`]: the connection pool (PostgreSQL or SQLite through sqlx's `Any` driver).
//! - [`migrate`]: a Flyway-compatible migrator over the scripts embedded from `migrations/`.
//! - [`startup`]: `Application::build` / `run_until_stopped`, the router and its request span.
//! - [`routes`]: HTTP handlers, one module per area.
//! - [`error`]: the API's one error type and its JSON body.
//! - [`cli`]: the `billing-service` commands.
//! - [`telemetry`]: tracing set-up.

pub mod cli;
pub mod configuration;
pub mod db;
pub mod error;
pub mod migrate;
pub mod routes;
pub mod startup;
pub mod telemetry;
