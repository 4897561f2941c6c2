//! Stripe's bracket notation, decoded into JSON.
//!
//! Stripe takes nested parameters as `a[b]=1`, `a[]=x` and `a[0][c]=y`, in form bodies and in
//! query strings alike. To check a request against Stripe's JSON schemas we first rebuild the JSON
//! it stands for. Every value arrives as a string; [`coerce`] then turns strings into the integers,
//! booleans and arrays the schema asks for, the way Stripe's own parser does.

use serde_json::{Map, Value};

/// Why a parameter string could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    #[error("parameter '{0}' has an unbalanced bracket")]
    Brackets(String),
    #[error("parameter '{0}' is used both as a value and as an object or array")]
    Conflict(String),
}

/// Decodes `application/x-www-form-urlencoded` (or a query string) in bracket notation. Indexed
/// arrays (`a[0]=x`) come out as objects keyed by the index; [`coerce`] turns them into arrays
/// where the schema says so, because only the schema can tell `metadata[0]` from `items[0]`.
pub fn decode(input: &[u8]) -> Result<Value, FormError> {
    let mut root = Value::Object(Map::new());
    for (key, value) in form_urlencoded::parse(input) {
        let path = split_key(&key)?;
        insert(&mut root, &path, Value::String(value.into_owned()), &key)?;
    }
    Ok(root)
}

/// `a[b][]` → `["a", "b", ""]`.
fn split_key(key: &str) -> Result<Vec<String>, FormError> {
    let bad = || FormError::Brackets(key.to_owned());
    let (head, mut rest) = match key.find('[') {
        Some(i) => (&key[..i], &key[i..]),
        None => (key, ""),
    };
    if head.is_empty() || head.contains(']') {
        return Err(bad());
    }
    let mut path = vec![head.to_owned()];
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[').ok_or_else(bad)?;
        let end = inner.find(']').ok_or_else(bad)?;
        let segment = &inner[..end];
        if segment.contains('[') {
            return Err(bad());
        }
        path.push(segment.to_owned());
        rest = &inner[end + 1..];
    }
    Ok(path)
}

fn insert(node: &mut Value, path: &[String], value: Value, key: &str) -> Result<(), FormError> {
    let conflict = || FormError::Conflict(key.to_owned());
    let Some((first, rest)) = path.split_first() else {
        return Err(conflict());
    };
    if first.is_empty() {
        // `a[]=x`: append to an array.
        if node.is_object() && node.as_object().is_some_and(Map::is_empty) {
            *node = Value::Array(Vec::new());
        }
        let Value::Array(items) = node else {
            return Err(conflict());
        };
        if rest.is_empty() {
            items.push(value);
            return Ok(());
        }
        let mut child = Value::Object(Map::new());
        insert(&mut child, rest, value, key)?;
        items.push(child);
        return Ok(());
    }
    let Value::Object(map) = node else {
        return Err(conflict());
    };
    if rest.is_empty() {
        if map.contains_key(first) {
            return Err(conflict());
        }
        map.insert(first.clone(), value);
        return Ok(());
    }
    let child = map
        .entry(first.clone())
        .or_insert_with(|| Value::Object(Map::new()));
    if child.is_string() {
        return Err(conflict());
    }
    insert(child, rest, value, key)
}

/// Rewrites decoded strings into the types `schema` expects: digit strings into integers (or
/// numbers), `true`/`false` into booleans, index-keyed objects into arrays. Values the schema
/// does not describe are left alone for the validator to report.
pub fn coerce(value: Value, schema: &Value) -> Value {
    match value {
        Value::String(s) => coerce_string(s, schema),
        Value::Object(map) => {
            if accepts(schema, "array") && !accepts(schema, "object") && is_index_map(&map) {
                let mut entries: Vec<(usize, Value)> = map
                    .into_iter()
                    .filter_map(|(k, v)| k.parse::<usize>().ok().map(|i| (i, v)))
                    .collect();
                entries.sort_by_key(|(i, _)| *i);
                let items = entries.into_iter().map(|(_, v)| v).collect();
                return coerce(Value::Array(items), schema);
            }
            let map = map
                .into_iter()
                .map(|(k, v)| {
                    let child = property_schema(schema, &k);
                    let coerced = match child {
                        Some(child) => coerce(v, child),
                        None => v,
                    };
                    (k, coerced)
                })
                .collect();
            Value::Object(map)
        }
        Value::Array(items) => {
            let item_schema = branches(schema).find_map(|b| b.get("items"));
            Value::Array(
                items
                    .into_iter()
                    .map(|v| match item_schema {
                        Some(s) => coerce(v, s),
                        None => v,
                    })
                    .collect(),
            )
        }
        other => other,
    }
}

fn coerce_string(s: String, schema: &Value) -> Value {
    let string_ok = branches(schema).any(|b| {
        type_is(b, "string")
            && b.get("enum")
                .and_then(Value::as_array)
                .is_none_or(|values| values.iter().any(|v| v.as_str() == Some(s.as_str())))
    });
    if string_ok {
        return Value::String(s);
    }
    if accepts(schema, "integer")
        && let Ok(i) = s.parse::<i64>()
    {
        return Value::from(i);
    }
    if accepts(schema, "number")
        && let Ok(f) = s.parse::<f64>()
        && let Some(n) = serde_json::Number::from_f64(f)
    {
        return Value::Number(n);
    }
    if accepts(schema, "boolean") {
        match s.as_str() {
            "true" => return Value::Bool(true),
            "false" => return Value::Bool(false),
            _ => {}
        }
    }
    // Stripe accepts an empty object or array as `a=` (clearing it); the schema's `anyOf`
    // spells that as the enum `[""]`, already handled above.
    Value::String(s)
}

/// The schema itself and, one level down, each `anyOf`/`oneOf` branch.
fn branches(schema: &Value) -> impl Iterator<Item = &Value> {
    let nested = ["anyOf", "oneOf"]
        .into_iter()
        .filter_map(|k| schema.get(k).and_then(Value::as_array))
        .flatten();
    std::iter::once(schema).chain(nested)
}

fn type_is(schema: &Value, ty: &str) -> bool {
    match schema.get("type") {
        Some(Value::String(t)) => t == ty,
        Some(Value::Array(ts)) => ts.iter().any(|t| t.as_str() == Some(ty)),
        _ => false,
    }
}

fn accepts(schema: &Value, ty: &str) -> bool {
    branches(schema).any(|b| type_is(b, ty))
}

fn is_index_map(map: &Map<String, Value>) -> bool {
    map.keys()
        .all(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()))
}

fn property_schema<'a>(schema: &'a Value, key: &str) -> Option<&'a Value> {
    branches(schema).find_map(|b| {
        b.get("properties")
            .and_then(|p| p.get(key))
            .or_else(|| b.get("additionalProperties").filter(|a| a.is_object()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_nested_brackets_and_arrays() {
        let v = decode(b"a=1&b[c]=2&b[d][e]=x%20y&l[]=p&l[]=q&i[0][c]=y&i[1][c]=z&m[k]=v").unwrap();
        assert_eq!(
            v,
            json!({
                "a": "1",
                "b": {"c": "2", "d": {"e": "x y"}},
                "l": ["p", "q"],
                "i": {"0": {"c": "y"}, "1": {"c": "z"}},
                "m": {"k": "v"}
            })
        );
    }

    #[test]
    fn refuses_malformed_keys() {
        assert!(matches!(decode(b"a[b=1"), Err(FormError::Brackets(_))));
        assert!(matches!(decode(b"[a]=1"), Err(FormError::Brackets(_))));
        assert!(matches!(decode(b"a=1&a[b]=2"), Err(FormError::Conflict(_))));
        assert!(matches!(decode(b"a=1&a=2"), Err(FormError::Conflict(_))));
    }

    #[test]
    fn coerces_what_the_schema_types() {
        let schema = json!({
            "type": "object",
            "properties": {
                "n": {"type": "integer"},
                "b": {"type": "boolean"},
                "s": {"type": "string"},
                "e": {"type": "array", "items": {"type": "string"}},
                "up": {"anyOf": [{"type": "string", "enum": ["inf"]}, {"type": "integer"}]},
                "meta": {"anyOf": [
                    {"type": "object", "additionalProperties": {"type": "string"}},
                    {"type": "string", "enum": [""]}
                ]},
                "items": {"type": "array", "items": {"type": "object", "properties": {"q": {"type": "integer"}}}}
            }
        });
        let decoded = decode(
            b"n=5499&b=true&s=12&e[0]=x&e[1]=y&up=inf&meta[0]=7&items[1][q]=2&items[0][q]=1",
        )
        .unwrap();
        assert_eq!(
            coerce(decoded, &schema),
            json!({
                "n": 5499, "b": true, "s": "12", "e": ["x", "y"], "up": "inf",
                "meta": {"0": "7"}, "items": [{"q": 1}, {"q": 2}]
            })
        );
        let up = coerce(decode(b"up=10&meta=").unwrap(), &schema);
        assert_eq!(up, json!({"up": 10, "meta": ""}));
    }

    #[test]
    fn leaves_wrong_types_for_the_validator() {
        let schema = json!({"type": "object", "properties": {"n": {"type": "integer"}}});
        assert_eq!(
            coerce(decode(b"n=abc").unwrap(), &schema),
            json!({"n": "abc"})
        );
    }
}
