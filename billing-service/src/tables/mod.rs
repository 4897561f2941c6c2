//! The tables, one owner module each: a table's SQL lives in its module and nowhere else, and
//! each column has one rule for who may change it (stated in the module's own comment), so a
//! handler and an HTTP route that write the same row cannot disagree.
//!
//! - [`events`]: `stripe_events`, the deliveries and the worker's queue.
//! - [`customers`]: `customers`, our user ↔ the Stripe customer.
//! - [`entitlements`]: `entitlements` and `entitlement_summaries`, the features each customer
//!   may use.
//! - [`subscriptions`]: `subscriptions`, and the read model of the user's subscription.
//! - [`charges`]: the `charges` table.
//! - [`schedules`]: the `subscription_schedules` table.
//! - [`sync_cursors`]: where an interrupted `sync` goes on from.
//!
//! The migrator's `flyway_schema_history` belongs to [`crate::migrate`].

pub mod charges;
pub mod customers;
pub mod entitlements;
pub mod events;
pub mod schedules;
pub mod subscriptions;
pub mod sync_cursors;
