//! Stripe-facing code shared by `billing-service` and `stripe-setup`, so that the two binaries
//! cannot disagree about how Stripe is spoken to.
//!
//! # Layout
//! - [`signature`]: the `Stripe-Signature` webhook scheme, both sides (verify for the service,
//!   sign for `stripe-setup trigger` and the tests).

pub mod signature;
