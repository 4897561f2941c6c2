//! Shared helpers for the end-to-end tests in `tests/tests/`.
//!
//! The tests drive the real binaries as an operator, Stripe or a developer would: processes
//! started with an environment, signed HTTP deliveries on loopback, and the database read
//! directly to see what was really stored. Nothing here reaches beyond 127.0.0.1.
//!
//! - [`binaries`]: where `billing-service` and `stripe-setup` are, built if missing or stale.
//! - [`db`]: a fresh database per test: a SQLite file, or a new database on the PostgreSQL
//!   server named by `DATABASE_URL`.
//! - [`service`]: the `billing-service` process, killed when dropped.
//! - [`proxy`]: a TCP proxy in front of PostgreSQL that a test cuts and restores.
//! - [`webhook`]: signed deliveries, and senders that retry like Stripe.
//! - [`store`]: what `stripe_events` holds, and waiting for it with a deadline.
//! - [`metrics`]: reading one series out of `GET /metrics`.

pub mod binaries;
pub mod db;
pub mod metrics;
pub mod proxy;
pub mod service;
pub mod store;
pub mod webhook;

/// The signing secret every test service is configured with.
pub const WEBHOOK_SECRET: &str = "whsec_e2e_test_secret";

/// Unix seconds now: the `t=` of a signature, and the `created` of an event.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs() as i64
}
