//! `stripe-setup`: provisions the Stripe catalog and webhook endpoint (see DESIGN.md).
