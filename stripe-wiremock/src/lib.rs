//! Test support: Stripe as a wiremock double.
