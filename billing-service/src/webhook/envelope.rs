//! The part of a Stripe event every delivery must have, read after the signature is verified.
//!
//! Only the envelope is parsed here; the raw bytes are stored as they came, and the object is
//! read later by the handler for its type. Unknown fields are ignored, so a newer API version
//! never makes a delivery fail.

use std::borrow::Cow;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::tables::events::{EventStatus, NewEvent};

/// A Stripe event id (`evt_...`), the key that makes a repeat delivery recognisable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeEventId(String);

impl StripeEventId {
    pub fn parse(raw: &str) -> Result<Self, EnvelopeError> {
        let valid = raw.starts_with("evt_")
            && raw.len() > 4
            && raw.len() <= 255
            && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        match valid {
            true => Ok(Self(raw.to_owned())),
            false => Err(EnvelopeError(
                "id is not a Stripe event id (evt_...)".into(),
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the body is not a Stripe event: {0}")]
pub struct EnvelopeError(pub String);

/// What we store beside the raw JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub id: StripeEventId,
    pub event_type: String,
    pub created: i64,
    pub livemode: bool,
    pub api_version: Option<String>,
    /// The connected account, for Connect events.
    pub account: Option<String>,
    /// `data.object.id`, so an operator can find every event about one object.
    pub object_id: Option<String>,
}

// Text is borrowed from the body unless it holds escapes (`\u0065`), which any JSON writer may
// use; a borrowed `&str` would refuse those.
#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(default, borrow)]
    object: Option<Cow<'a, str>>,
    #[serde(rename = "type", borrow)]
    event_type: Cow<'a, str>,
    created: i64,
    livemode: bool,
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    account: Option<String>,
    #[serde(deserialize_with = "object_only")]
    data: RawData,
}

#[derive(Deserialize)]
struct RawData {
    #[serde(deserialize_with = "object_only")]
    object: RawObject,
}

#[derive(Deserialize)]
struct RawObject {
    #[serde(default)]
    id: Option<String>,
}

/// Reads `T` from a JSON object only. A derived `Deserialize` also takes an array of the fields
/// in order, which is not what an event is.
fn object_only<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<T, D::Error> {
    struct ObjectOnly<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectOnly<T> {
        type Value = T;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(de::value::MapAccessDeserializer::new(map))
        }
    }

    deserializer.deserialize_map(ObjectOnly(PhantomData))
}

/// A body the worker can read whole. The envelope's own parse only checks the grammar of the
/// fields it skips, but the worker later reads the whole body as a `serde_json::Value`, which
/// refuses some of what skipping lets through (`1E86089970`, a number out of range, found by
/// fuzzing). Such a body is refused here, before it is acknowledged, rather than parked as
/// failed after.
struct Readable;

impl<'de> Deserialize<'de> for Readable {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(Readable)
    }
}

impl<'de> Visitor<'de> for Readable {
    type Value = Readable;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_unit<E>(self) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<Readable>()?.is_some() {}
        Ok(self)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self, A::Error> {
        while map.next_entry::<Readable, Readable>()?.is_some() {}
        Ok(self)
    }
}

impl Envelope {
    /// The row that stores this event, with `payload` (its text exactly as received), for the
    /// worker.
    pub fn as_new_event<'a>(&'a self, payload: &'a str) -> NewEvent<'a> {
        NewEvent {
            id: self.id.as_str(),
            event_type: &self.event_type,
            created: self.created,
            livemode: self.livemode,
            api_version: self.api_version.as_deref(),
            account: self.account.as_deref(),
            object_id: self.object_id.as_deref(),
            payload,
            status: EventStatus::Pending,
        }
    }

    /// Reads the envelope of an event: UTF-8 JSON text holding one object, readable whole.
    pub fn parse(body: &[u8]) -> Result<Self, EnvelopeError> {
        Self::parse_str(Self::text(body)?)
    }

    /// The body as text. Checked before parsing: the parts of the body the envelope ignores are
    /// skipped unread.
    pub fn text(body: &[u8]) -> Result<&str, EnvelopeError> {
        std::str::from_utf8(body).map_err(|_| EnvelopeError("the body is not UTF-8".into()))
    }

    /// As [`Envelope::parse`], for a body already known to be text.
    pub fn parse_str(text: &str) -> Result<Self, EnvelopeError> {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let raw: Raw<'_> = object_only(&mut deserializer)
            .and_then(|raw| deserializer.end().map(|()| raw))
            .map_err(|e| EnvelopeError(e.to_string()))?;
        serde_json::from_str::<Readable>(text).map_err(|e| EnvelopeError(e.to_string()))?;
        if raw.object.as_deref().is_some_and(|o| o != "event") {
            return Err(EnvelopeError("object is not \"event\"".into()));
        }
        if raw.event_type.is_empty() || raw.event_type.len() > 255 {
            return Err(EnvelopeError("type is empty or too long".into()));
        }
        if raw.created <= 0 {
            return Err(EnvelopeError("created is not a unix time".into()));
        }
        Ok(Self {
            id: StripeEventId::parse(&raw.id)?,
            event_type: raw.event_type.into_owned(),
            created: raw.created,
            livemode: raw.livemode,
            api_version: raw.api_version,
            account: raw.account,
            object_id: raw.data.object.id,
        })
    }
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_real_event_and_ignores_unknown_fields() {
        let body =
            br#"{"id":"evt_1NG8Du2eZvKYlo2CUI79vXWy","object":"event","api_version":"2019-02-19",
            "created":1686089970,"livemode":false,"pending_webhooks":0,"new_field":{"x":1},
            "request":{"id":null,"idempotency_key":null},"type":"customer.created",
            "data":{"object":{"id":"cus_1","object":"customer"}}}"#;
        let e = Envelope::parse(body).unwrap();
        assert_eq!(e.id.as_str(), "evt_1NG8Du2eZvKYlo2CUI79vXWy");
        assert_eq!(e.event_type, "customer.created");
        assert_eq!(e.created, 1_686_089_970);
        assert_eq!(e.api_version.as_deref(), Some("2019-02-19"));
        assert_eq!(e.object_id.as_deref(), Some("cus_1"));
        assert!(e.account.is_none());
    }

    #[test]
    fn refuses_what_is_not_an_event() {
        for body in [
            &b"not json"[..],
            br#"[]"#,
            br#"{"id":"evt_1","type":"x","created":1,"livemode":false}"#,
            br#"{"id":"cus_1","type":"x","created":1,"livemode":false,"data":{"object":{}}}"#,
            br#"{"id":"evt_1","type":"","created":1,"livemode":false,"data":{"object":{}}}"#,
            br#"{"id":"evt_1","type":"x","created":"1","livemode":false,"data":{"object":{}}}"#,
            br#"{"id":"evt_1","object":"charge","type":"x","created":1,"livemode":false,"data":{"object":{}}}"#,
            br#"{"id":"evt_1; DROP","type":"x","created":1,"livemode":false,"data":{"object":{}}}"#,
        ] {
            assert!(Envelope::parse(body).is_err(), "{}", String::from_utf8_lossy(body));
        }
    }
}
