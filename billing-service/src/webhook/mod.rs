//! Stripe webhooks: receive (verify, store once, acknowledge), then process in the background.
//!
//! - [`receive`]: the `POST /webhook/stripe` route and [`receive::accept_delivery`].
//! - [`envelope`]: the envelope fields read from a verified body.
//! - [`store`]: the insert that makes each event id stored once.
//! - [`batch`]: group commit, many deliveries stored by one insert and one commit.
//! - [`worker`]: claims stored events and runs their handlers, with retries.
//! - [`handlers`]: what each event type writes, and how to add your own.
//! - [`events`]: list and replay, for operators.
//!
//! The signature scheme itself is shared with `stripe-setup` in `billing_stripe::signature`.

pub mod batch;
pub mod envelope;
pub mod events;
pub mod handlers;
pub mod receive;
pub mod store;
pub mod worker;

pub use events::queue_depth;
