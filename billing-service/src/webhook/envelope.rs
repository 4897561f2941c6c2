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

/// The envelope's fields, read in one pass over the body: the fields it names as their types,
/// everything else checked to be [`Readable`] rather than skipped, so that the same pass reads
/// the envelope and refuses a body the worker could not read whole. (A derived `Deserialize`
/// skips unknown fields unchecked, which took a second pass over the body; it also takes an
/// array of the fields in order, which is not what an event is: each level here is a map.)
struct Raw<'a> {
    id: Cow<'a, str>,
    object: Option<Cow<'a, str>>,
    event_type: Cow<'a, str>,
    created: i64,
    livemode: bool,
    api_version: Option<String>,
    account: Option<String>,
    /// `data.object.id`.
    object_id: Option<String>,
}

/// Text borrowed from the body unless it holds escapes (`\u0065`), which any JSON writer may
/// use; a borrowed `&str` would refuse those.
struct Text<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;

        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
        }

        deserializer.deserialize_str(TextVisitor)
    }
}

/// One JSON object of the envelope (the event, `data`, `data.object`), read key by key:
/// [`Fields::field`] reads the value of each key it names and returns `false` for the others,
/// whose values are read as [`Readable`].
trait Fields<'de>: Default {
    type Read;

    fn field<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error>;

    /// What was read, once every key was seen.
    fn finish<E: de::Error>(self) -> Result<Self::Read, E>;
}

fn read_object<'de, D: Deserializer<'de>, F: Fields<'de>>(
    deserializer: D,
) -> Result<F::Read, D::Error> {
    struct Object<F>(PhantomData<F>);

    impl<'de, F: Fields<'de>> Visitor<'de> for Object<F> {
        type Value = F::Read;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<F::Read, A::Error> {
            let mut fields = F::default();
            while let Some(Text(key)) = map.next_key()? {
                if !fields.field(&key, &mut map)? {
                    map.next_value::<Readable>()?;
                }
            }
            fields.finish()
        }
    }

    deserializer.deserialize_map(Object::<F>(PhantomData))
}

#[derive(Default)]
struct EventFields<'a> {
    id: Option<Text<'a>>,
    object: Option<Option<Text<'a>>>,
    event_type: Option<Text<'a>>,
    created: Option<i64>,
    livemode: Option<bool>,
    api_version: Option<Option<String>>,
    account: Option<Option<String>>,
    data: Option<Nested<DataFields>>,
}

impl<'de> Fields<'de> for EventFields<'de> {
    type Read = Raw<'de>;

    fn field<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        match key {
            "id" => once(map, &mut self.id, "id")?,
            "object" => once(map, &mut self.object, "object")?,
            "type" => once(map, &mut self.event_type, "type")?,
            "created" => once(map, &mut self.created, "created")?,
            "livemode" => once(map, &mut self.livemode, "livemode")?,
            "api_version" => once(map, &mut self.api_version, "api_version")?,
            "account" => once(map, &mut self.account, "account")?,
            "data" => once(map, &mut self.data, "data")?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn finish<E: de::Error>(self) -> Result<Raw<'de>, E> {
        Ok(Raw {
            id: required(self.id, "id")?.0,
            object: self.object.flatten().map(|Text(o)| o),
            event_type: required(self.event_type, "type")?.0,
            created: required(self.created, "created")?,
            livemode: required(self.livemode, "livemode")?,
            api_version: self.api_version.flatten(),
            account: self.account.flatten(),
            object_id: required(self.data, "data")?
                .0
                .object
                .and_then(|Nested(object)| object.id.flatten()),
        })
    }
}

/// A nested object of the envelope (`data`, `data.object`), read by its [`Fields`].
struct Nested<T>(T);

impl<'de, F: Fields<'de, Read = F>> Deserialize<'de> for Nested<F> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        read_object::<_, F>(deserializer).map(Nested)
    }
}

/// `data`, of which only `object.id` is kept.
#[derive(Default)]
struct DataFields {
    object: Option<Nested<ObjectFields>>,
}

impl<'de> Fields<'de> for DataFields {
    type Read = Self;

    fn field<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        match key {
            "object" => once(map, &mut self.object, "object").map(|()| true),
            _ => Ok(false),
        }
    }

    fn finish<E: de::Error>(self) -> Result<Self, E> {
        required(self.object.as_ref(), "object")?;
        Ok(self)
    }
}

/// `data.object`, of which only `id` is kept.
#[derive(Default)]
struct ObjectFields {
    id: Option<Option<String>>,
}

impl<'de> Fields<'de> for ObjectFields {
    type Read = Self;

    fn field<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        match key {
            "id" => once(map, &mut self.id, "id").map(|()| true),
            _ => Ok(false),
        }
    }

    fn finish<E: de::Error>(self) -> Result<Self, E> {
        Ok(self)
    }
}

/// Reads the value of a field the envelope names into `slot`; a field given twice refuses the
/// body (which of the two Stripe meant is unknown).
fn once<'de, A: MapAccess<'de>, T: Deserialize<'de>>(
    map: &mut A,
    slot: &mut Option<T>,
    name: &'static str,
) -> Result<(), A::Error> {
    if slot.is_some() {
        return Err(de::Error::duplicate_field(name));
    }
    *slot = Some(map.next_value()?);
    Ok(())
}

fn required<T, E: de::Error>(slot: Option<T>, name: &'static str) -> Result<T, E> {
    slot.ok_or_else(|| E::missing_field(name))
}

/// A value the worker can read. Skipping a value (`IgnoredAny`) only checks its grammar, but the
/// worker later reads the whole body as a `serde_json::Value`, which refuses some of what
/// skipping lets through (`1E86089970`, a number out of range, found by fuzzing). So every
/// field the envelope does not name is read as this: such a body is refused before it is
/// acknowledged, rather than parked as failed after.
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
        let raw = read_object::<_, EventFields>(&mut deserializer)
            .and_then(|raw| deserializer.end().map(|()| raw))
            .map_err(|e| EnvelopeError(e.to_string()))?;
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
            object_id: raw.object_id,
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
