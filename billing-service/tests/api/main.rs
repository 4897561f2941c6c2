//! Integration tests of billing-service, driven through the real router on a random port or
//! through the library. One test binary, so the crate links once.

mod billing;
mod helpers;
mod migrations;
mod openapi;
mod status;
mod webhooks;
