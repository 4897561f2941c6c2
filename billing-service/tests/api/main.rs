//! Integration tests of billing-service, driven through the real router on a random port or
//! through the library. One test binary, so the crate links once.

mod auth;
mod billing;
mod database_tls;
mod entitlements;
mod event_types;
mod helpers;
mod lambda;
mod layout;
mod limits;
mod migrations;
mod openapi;
mod ownership;
mod status;
mod sync_backfill;
mod sync_events;
mod ties;
mod webhooks;
