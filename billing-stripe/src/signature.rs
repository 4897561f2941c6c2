//! Stripe's webhook signature scheme.
//!
//! Stripe sends `Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...][,v0=<hex>]`, where each
//! `v1` is HMAC-SHA256 keyed with the endpoint's whole `whsec_...` string over `"<t>.<raw body>"`.
//! Several `v1` appear while a secret is being rolled; other schemes (`v0` is a test-mode SHA-1
//! scheme) must be ignored. We keep our own implementation rather than async-stripe's because the
//! service needs several secrets at once (rotation) and a configurable tolerance.
//!
//! Verification order follows Stripe's own libraries: the signature first, then the timestamp, so
//! "stale" is only ever reported for a delivery that Stripe really signed.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Why a delivery was refused. The messages name the problem, never a secret or the expected
/// signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Stripe-Signature header is missing")]
    MissingHeader,
    #[error("the Stripe-Signature header is malformed: {0}")]
    Malformed(&'static str),
    #[error("the Stripe-Signature header has no v1 signature")]
    NoV1Signature,
    #[error("no v1 signature matches the body for any configured webhook secret")]
    Mismatch,
    /// Too old, or as far in the future: a replayed or pre-signed delivery either way.
    #[error("the signature's timestamp is more than the tolerance of {tolerance_secs} s from now")]
    Stale { tolerance_secs: u64 },
}

/// A parsed `Stripe-Signature` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHeader {
    pub timestamp: i64,
    /// The `v1` signatures that are well-formed hex of the right length. A garbled one cannot
    /// match anything, so it is dropped here rather than failing the whole header: another `v1`
    /// in the same header may still be good.
    pub v1: Vec<[u8; 32]>,
}

impl SignatureHeader {
    /// Parses the header. Items may come in any order; unknown schemes are ignored.
    pub fn parse(header: &str) -> Result<Self, SignatureError> {
        let mut timestamp = None;
        let mut v1 = Vec::new();
        let mut saw_v1 = false;
        for item in header.split(',') {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            let Some((key, value)) = item.split_once('=') else {
                return Err(SignatureError::Malformed(
                    "an item is not of the form key=value",
                ));
            };
            match key {
                "t" => {
                    if timestamp.is_some() {
                        return Err(SignatureError::Malformed("the timestamp t appears twice"));
                    }
                    let t = value.parse::<i64>().map_err(|_| {
                        SignatureError::Malformed("the timestamp t is not an integer")
                    })?;
                    timestamp = Some(t);
                }
                "v1" => {
                    saw_v1 = true;
                    let mut sig = [0u8; 32];
                    if hex::decode_to_slice(value, &mut sig).is_ok() {
                        v1.push(sig);
                    }
                }
                _ => {}
            }
        }
        let timestamp = timestamp.ok_or(SignatureError::Malformed("the timestamp t is missing"))?;
        if !saw_v1 {
            return Err(SignatureError::NoV1Signature);
        }
        Ok(Self { timestamp, v1 })
    }
}

fn mac(secret: &str, timestamp: i64, payload: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    mac
}

/// The hex `v1` signature Stripe would send for `payload` signed at `timestamp`.
pub fn sign(secret: &str, timestamp: i64, payload: &[u8]) -> String {
    hex::encode(mac(secret, timestamp, payload).finalize().into_bytes())
}

/// A whole `Stripe-Signature` header value, as Stripe would send it.
pub fn header_value(secret: &str, timestamp: i64, payload: &[u8]) -> String {
    format!("t={timestamp},v1={}", sign(secret, timestamp, payload))
}

/// Checks a delivery: some `v1` must match for some secret (compared in constant time), and the
/// timestamp must be at most `tolerance_secs` away from `now` (unix seconds), in the past or in
/// the future: a signature made for later (by a leaked secret, or a sender's wrong clock) must
/// not stay valid beyond the window that makes a replay useless.
pub fn verify<S: AsRef<str>>(
    header: Option<&str>,
    payload: &[u8],
    secrets: &[S],
    tolerance_secs: u64,
    now: i64,
) -> Result<SignatureHeader, SignatureError> {
    let header = SignatureHeader::parse(header.ok_or(SignatureError::MissingHeader)?)?;
    let matched = secrets.iter().any(|secret| {
        let mac = mac(secret.as_ref(), header.timestamp, payload);
        header
            .v1
            .iter()
            .any(|sig| mac.clone().verify_slice(sig).is_ok())
    });
    if !matched {
        return Err(SignatureError::Mismatch);
    }
    let age = i128::from(now) - i128::from(header.timestamp);
    if age.abs() > i128::from(tolerance_secs) {
        return Err(SignatureError::Stale { tolerance_secs });
    }
    Ok(header)
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET: &str = "whsec_test_secret";
    const BODY: &[u8] = br#"{"id":"evt_1","object":"event"}"#;

    #[test]
    fn matches_an_independent_implementation() {
        // Computed with Python: hmac.new(b"whsec_test_secret",
        //   b'1700000000.{"id":"evt_1","object":"event"}', hashlib.sha256).hexdigest()
        assert_eq!(
            sign(SECRET, 1_700_000_000, BODY),
            "0c8670ed117751cc551a20e35839447075c42800ea3cf3e8a2fbda99cd1e6edd"
        );
    }

    #[test]
    fn accepts_a_fresh_signature_and_any_of_several_v1() {
        let good = sign(SECRET, 100, BODY);
        let header = format!("v0=abc,t=100,v1={},v1={good},x=1", "00".repeat(32));
        assert!(verify(Some(&header), BODY, &[SECRET], 300, 100).is_ok());
    }

    #[test]
    fn accepts_any_configured_secret() {
        let header = header_value("whsec_new", 100, BODY);
        assert!(verify(Some(&header), BODY, &["whsec_old", "whsec_new"], 300, 100).is_ok());
        assert_eq!(
            verify(Some(&header), BODY, &["whsec_old"], 300, 100),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn refuses_each_bad_form() {
        let v = |h: Option<&str>| verify(h, BODY, &[SECRET], 300, 1_000).unwrap_err();
        assert_eq!(v(None), SignatureError::MissingHeader);
        assert!(matches!(v(Some("")), SignatureError::Malformed(_)));
        assert!(matches!(v(Some("garbage")), SignatureError::Malformed(_)));
        assert!(matches!(
            v(Some("t=abc,v1=00")),
            SignatureError::Malformed(_)
        ));
        assert!(matches!(
            v(Some("t=1,t=2,v1=00")),
            SignatureError::Malformed(_)
        ));
        assert!(matches!(v(Some("v1=00")), SignatureError::Malformed(_)));
        assert_eq!(v(Some("t=1000,v0=00")), SignatureError::NoV1Signature);
        assert_eq!(v(Some("t=1000,v1=zz")), SignatureError::Mismatch);
        let tampered = header_value(SECRET, 1_000, b"{}");
        assert_eq!(v(Some(&tampered)), SignatureError::Mismatch);
        let old = header_value(SECRET, 1_000 - 301, BODY);
        assert_eq!(
            v(Some(&old)),
            SignatureError::Stale {
                tolerance_secs: 300
            }
        );
        let edge = header_value(SECRET, 1_000 - 300, BODY);
        assert!(verify(Some(&edge), BODY, &[SECRET], 300, 1_000).is_ok());
        let ahead = header_value(SECRET, 1_000 + 301, BODY);
        assert_eq!(
            v(Some(&ahead)),
            SignatureError::Stale {
                tolerance_secs: 300
            }
        );
        let edge = header_value(SECRET, 1_000 + 300, BODY);
        assert!(verify(Some(&edge), BODY, &[SECRET], 300, 1_000).is_ok());
    }

    proptest! {
        #[test]
        fn parser_reads_what_sign_writes(t in any::<i64>(), body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let header = header_value(SECRET, t, &body);
            let parsed = SignatureHeader::parse(&header).unwrap();
            prop_assert_eq!(parsed.timestamp, t);
            prop_assert_eq!(parsed.v1.len(), 1);
            prop_assert!(verify(Some(&header), &body, &[SECRET], 0, t).is_ok());
        }
    }
}
