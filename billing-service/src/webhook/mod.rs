//! Stripe webhooks: receive (verify, store once, acknowledge), then process in the background.
//!
//! - [`receive`]: [`receive::accept_delivery`], the decision behind `POST /webhook/stripe`
//!   (whose HTTP adapter is `routes::webhook`).
//! - [`envelope`]: the envelope fields read from a verified body.
//! - [`batch`]: group commit, many deliveries stored by one insert and one commit.
//! - [`worker`]: claims stored events and runs their handlers, with retries.
//! - [`handlers`]: what each event type writes, and how to add your own.
//!
//! The rows themselves belong to `tables::events`; the signature scheme is shared with
//! `stripe-setup` in `billing_stripe::signature`.

pub mod batch;
pub mod envelope;
pub mod handlers;
pub mod receive;
pub mod worker;
