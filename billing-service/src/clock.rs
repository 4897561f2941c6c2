//! The wall clock, in the two units the service stores: Stripe's unix seconds and our own
//! bookkeeping milliseconds (the `_ms` columns). One place, so that tests and every table agree
//! on what "now" means.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix milliseconds now; 0 if the clock is before 1970 (it never is on a real host).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// Unix seconds now: the unit of Stripe's timestamps and of a signature's `t=`.
pub fn unix_now() -> i64 {
    now_ms() / 1000
}
