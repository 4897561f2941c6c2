//! Fuzzing the event envelope parser, with proptest (`cargo fuzz` needs a nightly toolchain).
//!
//! A differential check: [`Envelope::parse`] must give, for any body, what the envelope's
//! definition says ([`model`], computed here from the JSON as written: ids, types, timestamps,
//! optional fields, wrong types, escapes, repeated and unknown fields, nesting). Inputs are events built
//! field by field from valid and wrong values, written with random `\u` escapes; byte-level
//! mutations of the kept corpus (`fuzz/corpus/envelope/`, replayed on every run); and any bytes.
//! `fuzz/run.sh` runs these for minutes; a plain `cargo test` runs them briefly.

use std::path::PathBuf;
use std::sync::OnceLock;

use proptest::prelude::*;
use serde_json::{Map, Value};

use super::*;

/// JSON as written, with keys in order and repeats kept (`serde_json::Value` keeps only the last
/// of a repeated key, and an event with a repeated field is refused).
#[derive(Debug)]
enum Tree {
    Object(Vec<(String, Tree)>),
    Array,
    Leaf(Value),
}

impl<'de> serde::Deserialize<'de> for Tree {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TreeVisitor)
    }
}

struct TreeVisitor;

impl<'de> serde::de::Visitor<'de> for TreeVisitor {
    type Value = Tree;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Tree, E> {
        Ok(Tree::Leaf(v.into()))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Tree, E> {
        Ok(Tree::Leaf(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Tree, E> {
        Ok(Tree::Leaf(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Tree, E> {
        Ok(Tree::Leaf(v.into()))
    }
    fn visit_str<E>(self, v: &str) -> Result<Tree, E> {
        Ok(Tree::Leaf(v.into()))
    }
    fn visit_unit<E>(self) -> Result<Tree, E> {
        Ok(Tree::Leaf(Value::Null))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Tree, A::Error> {
        while seq.next_element::<Tree>()?.is_some() {}
        Ok(Tree::Array)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Tree, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry::<String, Tree>()? {
            entries.push(entry);
        }
        Ok(Tree::Object(entries))
    }
}

impl Tree {
    /// The fields of an object; `None` for anything else.
    fn fields(&self) -> Option<&[(String, Tree)]> {
        match self {
            Self::Object(entries) => Some(entries),
            _ => None,
        }
    }

    fn leaf(&self) -> Option<&Value> {
        match self {
            Self::Leaf(value) => Some(value),
            _ => None,
        }
    }
}

/// A field of an object: `Ok(None)` when absent, `Err` when repeated.
fn get<'t>(fields: &'t [(String, Tree)], key: &str) -> Result<Option<&'t Tree>, ()> {
    let mut found = fields.iter().filter(|(k, _)| k == key).map(|(_, v)| v);
    match (found.next(), found.next()) {
        (_, Some(_)) => Err(()),
        (first, None) => Ok(first),
    }
}

/// What the envelope's definition says of a body: the envelope, or that it is refused (`None`).
/// An event is a JSON object; `id`, `type`, `created`, `livemode` and `data.object` (an object)
/// are required; `object` must be "event" if present; `api_version`, `account` and
/// `data.object.id` are optional text; a repeated one of these fields refuses the body;
/// anything else is ignored.
fn model(body: &[u8]) -> Option<Envelope> {
    let tree: Tree = serde_json::from_slice(body).ok()?;
    let event = tree.fields()?;
    let required = |fields, key| get(fields, key).ok().flatten();
    // Optional text: absent or null is none; anything but text refuses the body.
    let optional = |fields, key| -> Result<Option<String>, ()> {
        match get(fields, key)?.map(|t| t.leaf()) {
            None | Some(Some(Value::Null)) => Ok(None),
            Some(Some(Value::String(s))) => Ok(Some(s.clone())),
            Some(_) => Err(()),
        }
    };
    let text = |key| required(event, key)?.leaf()?.as_str();
    let id = text("id")?;
    if optional(event, "object")
        .ok()?
        .is_some_and(|o| o != "event")
    {
        return None;
    }
    let event_type = text("type").filter(|t| !t.is_empty() && t.len() <= 255)?;
    let created = required(event, "created")?
        .leaf()?
        .as_i64()
        .filter(|c| *c > 0)?;
    let livemode = required(event, "livemode")?.leaf()?.as_bool()?;
    let data = required(event, "data")?.fields()?;
    let object = required(data, "object")?.fields()?;
    Some(Envelope {
        id: StripeEventId::parse(id).ok()?,
        event_type: event_type.to_owned(),
        created,
        livemode,
        api_version: optional(event, "api_version").ok()?,
        account: optional(event, "account").ok()?,
        object_id: optional(object, "id").ok()?,
    })
}

fn check(body: &[u8]) -> Result<(), TestCaseError> {
    let got = Envelope::parse(body).ok();
    prop_assert_eq!(got, model(body), "{}", String::from_utf8_lossy(body));
    Ok(())
}

/// A value for one field: usually one that fits, often one that does not.
fn field(valid: BoxedStrategy<Value>) -> BoxedStrategy<Option<Value>> {
    let wrong = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::String),
        Just(Value::Array(vec![])),
        Just(Value::Object(Map::new())),
    ];
    prop_oneof![6 => valid.prop_map(Some), 2 => wrong.prop_map(Some), 1 => Just(None)].boxed()
}

fn text(pattern: &'static str) -> BoxedStrategy<Value> {
    pattern.prop_map(Value::String).boxed()
}

fn event() -> impl Strategy<Value = Value> {
    let ids = prop_oneof![
        4 => "evt_[A-Za-z0-9_]{1,30}",
        1 => "(evt|cus|ch)_?[A-Za-z0-9_;é -]{0,12}",
        1 => "evt_[a-z]{250,260}",
    ];
    let id = field(ids.prop_map(Value::String).boxed());
    let object =
        field(prop_oneof![4 => Just(Value::from("event")), 1 => text("[a-z]{0,8}")].boxed());
    let event_type = field(
        prop_oneof![
            8 => text("[a-z_]{1,20}\\.[a-z_.]{1,30}"),
            1 => Just(Value::from("")),
            1 => text("[a-z]{254,257}"),
        ]
        .boxed(),
    );
    let created = field(
        prop_oneof![
            4 => (1i64..4_000_000_000).prop_map(Value::from),
            1 => (i64::MIN..=0).prop_map(Value::from),
            1 => (i64::MAX as u64..=u64::MAX).prop_map(Value::from),
        ]
        .boxed(),
    );
    let livemode = field(any::<bool>().prop_map(Value::Bool).boxed());
    let api_version = field(text("20[0-9]{2}-[0-9]{2}-[0-9]{2}(\\.[a-z]+)?"));
    let account = field(text("acct_[A-Za-z0-9]{1,16}"));
    let object_id = field(text("[a-z]{2,4}_[A-Za-z0-9]{1,24}"));
    // Unknown fields at each level the envelope reads (the event, `data`, `data.object`).
    let extra = || {
        let value = prop_oneof![
            8 => any::<i32>().prop_map(Value::from),
            1 => Just(Value::from(UNREADABLE)),
            1 => Just(serde_json::json!({ "nested": [UNREADABLE] })),
        ];
        prop::collection::btree_map("[a-z_]{1,10}", value, 0..3)
    };
    let extras = (extra(), extra(), extra());
    let data_shape = prop_oneof![8 => Just(0u8), 1 => Just(1), 1 => Just(2)];
    (
        (id, object, event_type, created, livemode),
        (api_version, account, object_id, extras, data_shape),
    )
        .prop_map(
            |(
                (id, object, event_type, created, livemode),
                (api_version, account, object_id, (extra, data_extra, object_extra), data_shape),
            )| {
                let mut event = Map::new();
                let fields = [
                    ("id", id),
                    ("object", object),
                    ("type", event_type),
                    ("created", created),
                    ("livemode", livemode),
                    ("api_version", api_version),
                    ("account", account),
                ];
                for (key, value) in fields {
                    if let Some(value) = value {
                        event.insert(key.to_owned(), value);
                    }
                }
                // Unknown fields, as newer API versions add them; never one of ours.
                for (key, value) in extra {
                    event.entry(key).or_insert(value);
                }
                let mut inner = Map::new();
                if let Some(object_id) = object_id {
                    inner.insert("id".into(), object_id);
                }
                inner.insert("object".into(), Value::from("customer"));
                for (key, value) in object_extra {
                    inner.entry(key).or_insert(value);
                }
                let mut data = match data_shape {
                    0 => serde_json::json!({ "object": inner }),
                    1 => serde_json::json!({ "object": null }),
                    _ => serde_json::json!({}),
                };
                for (key, value) in data_extra {
                    data.as_object_mut()
                        .expect("an object")
                        .entry(key)
                        .or_insert(value);
                }
                event.insert("data".into(), data);
                Value::Object(event)
            },
        )
}

/// Written as `1E400`: a number in JSON's grammar that no `f64` holds, so the worker could not
/// read the body whole. `serde_json::Value` cannot hold it, hence the stand-in.
const UNREADABLE: &str = "\u{0}unreadable number";

/// Writes `value` as JSON with the characters at the chosen positions of each string written as
/// `\u` escapes, as any JSON writer may.
fn with_escapes(value: &Value, escape: &[bool]) -> String {
    let mut counter = 0usize;
    let mut out = String::new();
    write(value, escape, &mut counter, &mut out);
    out
}

fn write(value: &Value, escape: &[bool], counter: &mut usize, out: &mut String) {
    let string = |s: &str, counter: &mut usize, out: &mut String| {
        out.push('"');
        for c in s.chars() {
            *counter += 1;
            let forced = !escape.is_empty() && escape[*counter % escape.len()];
            if forced || c == '"' || c == '\\' || c.is_control() {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            } else {
                out.push(c);
            }
        }
        out.push('"');
    };
    match value {
        Value::String(s) if s == UNREADABLE => out.push_str("1E400"),
        Value::String(s) => string(s, counter, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(item, escape, counter, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                string(key, counter, out);
                out.push(':');
                write(item, escape, counter, out);
            }
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn corpus() -> Vec<(PathBuf, Vec<u8>)> {
    test_support::fuzz_corpus("envelope").expect("fuzz/corpus/envelope is readable")
}

/// The corpus's bytes, read once: every mutation case starts from one of them.
fn seeds() -> &'static [Vec<u8>] {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| corpus().into_iter().map(|(_, bytes)| bytes).collect())
}

#[test]
fn the_corpus_replays() {
    let corpus = corpus();
    assert!(corpus.len() >= 10, "the corpus is missing");
    for (path, bytes) in corpus {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        check(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        // What the name promises: `ok-*` files are events, `bad-*` files are not.
        assert_eq!(
            Envelope::parse(&bytes).is_ok(),
            name.starts_with("ok-"),
            "{name}"
        );
    }
}

proptest! {
    #[test]
    fn fuzz_built_events_match_the_definition(
        event in event(),
        escape in prop::collection::vec(prop::bool::weighted(0.05), 0..64),
    ) {
        check(with_escapes(&event, &escape).as_bytes())?;
    }

    #[test]
    fn fuzz_mutated_corpus_matches_the_definition(
        seed in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
    ) {
        let seeds = seeds();
        let mut bytes = seed.get(seeds).clone();
        for (at, byte, kind) in edits {
            match kind {
                0 if !bytes.is_empty() => {
                    let at = at.index(bytes.len());
                    bytes[at] = byte;
                }
                1 => bytes.insert(at.index(bytes.len() + 1), byte),
                _ if !bytes.is_empty() => {
                    bytes.remove(at.index(bytes.len()));
                }
                _ => {}
            }
        }
        check(&bytes)?;
    }

    #[test]
    fn fuzz_any_bytes_match_the_definition(body in prop::collection::vec(any::<u8>(), 0..512)) {
        check(&body)?;
    }
}
