//! Stripe as the source of truth: reading what Stripe has that webhooks did not bring.
//!
//! - [`backfill`]: `billing-service sync`, writing every object Stripe lists into our tables.
//! - [`events`]: `billing-service sync events`, storing the events this service never received,
//!   for the worker to process as if they had been delivered.

pub mod backfill;
pub mod events;
pub mod progress;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `--since`: a duration back from `now` (`3d`, `12h`, `90m`), a date (`2026-11-01`, midnight
/// UTC) or a time (`2026-11-01T12:00:00Z`). Returns unix seconds.
pub fn parse_since(raw: &str, now: SystemTime) -> Result<i64, String> {
    let raw = raw.trim();
    let at = if let Ok(ago) = humantime::parse_duration(raw) {
        now.checked_sub(ago)
            .ok_or_else(|| format!("{raw} ago is before 1970"))?
    } else {
        let time = match raw.len() {
            10 => format!("{raw}T00:00:00Z"),
            _ => raw.to_owned(),
        };
        humantime::parse_rfc3339_weak(&time).map_err(|_| {
            format!("'{raw}' is neither a duration (3d, 12h) nor a date (2026-11-01) or time (2026-11-01T12:00:00Z)")
        })?
    };
    let secs = at
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    Ok(i64::try_from(secs).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_durations_dates_and_times() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(parse_since("3d", now), Ok(1_800_000_000 - 3 * 86_400));
        assert_eq!(parse_since("12h", now), Ok(1_800_000_000 - 12 * 3600));
        assert_eq!(parse_since("2026-11-01", now), Ok(1_793_491_200));
        assert_eq!(parse_since("2026-11-01T12:00:00Z", now), Ok(1_793_534_400));
        assert!(
            parse_since("yesterday", now)
                .unwrap_err()
                .contains("neither")
        );
    }
}
