//! Shared helpers for the end-to-end tests in `tests/tests/`.
//!
//! The tests drive the real binaries as an operator, Stripe or a developer would: processes
//! started with an environment, signed HTTP deliveries on loopback, and the database read
//! directly to see what was really stored. Nothing here reaches beyond 127.0.0.1.
//!
//! - [`binaries`]: where `billing-service` and `stripe-setup` are, built if missing or stale.
//! - [`service`]: the `billing-service` process, configured as these tests need it.
//! - [`webhook`]: signed deliveries, and senders that retry like Stripe.
//! - [`store`]: what `stripe_events` holds, and waiting for it with a deadline.
//! - [`metrics`]: reading one series out of `GET /metrics`.
//!
//! Databases, the cuttable proxy and the process launcher come from the `test-support` crate,
//! shared with the other crates' tests.

pub mod binaries;
pub mod metrics;
pub mod service;
pub mod store;
pub mod webhook;

/// The signing secret every test service is configured with.
pub const WEBHOOK_SECRET: &str = "whsec_e2e_test_secret";
