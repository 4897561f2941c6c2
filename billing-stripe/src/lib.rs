//! Stripe-facing code shared by `billing-service` and `stripe-setup`, so that the two binaries
//! cannot disagree about how Stripe is spoken to.
//!
//! # Layout
//! - [`client`]: the async-stripe client with timeouts, retries, idempotency keys and an error
//!   type sorted by what callers do about it.
//! - [`catalog`]: the product, prices and webhook events we sell and subscribe to (TOML, with a
//!   built-in default).
//! - [`account`]: finding the catalog's objects in a Stripe account.
//! - [`signature`]: the `Stripe-Signature` webhook scheme, both sides (verify for the service,
//!   sign for `stripe-setup trigger` and the tests).
//! - [`fixtures`]: realistic Stripe events for tests, `trigger` and benchmarks.
//!
//! The async-stripe crates are re-exported so that their exact version is chosen here only.

pub mod account;
pub mod catalog;
pub mod client;
pub mod fixtures;
pub mod signature;

pub use client::{KeyMode, SecretKey, StripeClient, StripeConfig, StripeError, idempotency_key};
pub use {
    stripe, stripe_billing, stripe_checkout, stripe_client_core, stripe_core, stripe_misc,
    stripe_product, stripe_shared, stripe_types,
};

/// The Stripe API version our Stripe types (async-stripe) are generated for. Webhook endpoints are
/// created pinned to it, so the events Stripe sends have the shape our code reads.
pub const API_VERSION: &str = "2026-09-30.endive";

#[cfg(test)]
mod tests {
    #[test]
    fn api_version_is_the_one_async_stripe_speaks() {
        assert_eq!(super::API_VERSION, stripe_shared::version::VERSION.as_str());
    }
}
