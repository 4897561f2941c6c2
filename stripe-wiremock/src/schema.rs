//! Stripe's own request schemas, so that a test passes only if the real API would have accepted
//! what the code sent.
//!
//! The schemas are Stripe's published request schemas, kept in this crate
//! (`stripe-openapi/requests.json`) and embedded at compile time. Two adjustments are made when
//! they are loaded, both towards how the live API behaves:
//! - every object schema that lists its properties refuses unknown ones, at every depth (Stripe
//!   answers "Received unknown parameter: recurring[foo]");
//! - the API versions in [`NEWER_API_VERSIONS`] are accepted as `api_version`, because the spec
//!   snapshot is older than the version async-stripe is generated for.

use std::sync::OnceLock;

use serde_json::{Value, json};

use crate::form;

// The project keeps its Stripe spec snapshot outside this repository too (for the tools that
// are not built from it); `vendored_copy_matches_shared` fails when the two drift apart where
// that snapshot is present.
static REQUESTS_JSON: &str = include_str!("../stripe-openapi/requests.json");
/// Operations called since the shared snapshot was made, in the same format (see its `source`).
static EXTRA_REQUESTS_JSON: &str = include_str!("../stripe-openapi/requests.extra.json");

/// API versions the live API knows that the embedded spec snapshot predates. async-stripe
/// `1.0.0-rc.10` (and so `billing_stripe::API_VERSION`) is generated for the first.
pub const NEWER_API_VERSIONS: &[&str] = &["2026-09-30.endive"];

/// One operation of the spec, with its parameter schema compiled.
pub struct Operation {
    pub method: String,
    /// The path template, e.g. `/v1/prices/{price}`.
    pub path: String,
    schema: Value,
    validator: jsonschema::Validator,
}

impl Operation {
    /// Whether this operation creates an object (a POST on a collection), and so must carry an
    /// `Idempotency-Key` for a retry to be safe.
    pub fn creates(&self) -> bool {
        self.method == "POST" && !self.path.contains('{')
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        if self.method != method {
            return false;
        }
        let mut template = self.path.split('/');
        let mut actual = path.split('/');
        loop {
            match (template.next(), actual.next()) {
                (None, None) => return true,
                (Some(t), Some(a)) if t.starts_with('{') && !a.is_empty() => {}
                (Some(t), Some(a)) if t == a => {}
                _ => return false,
            }
        }
    }

    /// Decodes raw parameters (a form body or a query string), coerces them to the schema's types
    /// and validates them. Returns the decoded parameters, or every problem found.
    pub fn check(&self, raw: &[u8]) -> (Value, Vec<String>) {
        let decoded = match form::decode(raw) {
            Ok(v) => v,
            Err(e) => return (json!({}), vec![e.to_string()]),
        };
        let params = form::coerce(decoded, &self.schema);
        let errors = self
            .validator
            .iter_errors(&params)
            .map(|e| {
                let at = e.instance_path().to_string();
                if at.is_empty() {
                    e.to_string()
                } else {
                    format!("{at}: {e}")
                }
            })
            .collect();
        (params, errors)
    }
}

/// Every operation in the spec, loaded once per process.
pub fn operations() -> &'static [Operation] {
    static OPS: OnceLock<Vec<Operation>> = OnceLock::new();
    OPS.get_or_init(|| {
        let mut ops = load(REQUESTS_JSON);
        ops.extend(load(EXTRA_REQUESTS_JSON));
        ops
    })
}

/// The operation for a request, if the spec has one.
pub fn find(method: &str, path: &str) -> Option<&'static Operation> {
    operations().iter().find(|op| op.matches(method, path))
}

fn load(text: &str) -> Vec<Operation> {
    // The file is part of this repository's contract; a broken one is a build problem, not a
    // test outcome, so failing loudly here is right.
    let spec: Value = serde_json::from_str(text).expect("requests.json is valid JSON");
    let ops = spec["operations"]
        .as_array()
        .expect("requests.json has an operations array");
    ops.iter()
        .map(|op| {
            let method = op["method"].as_str().expect("operation method").to_owned();
            let path = op["path"].as_str().expect("operation path").to_owned();
            let mut schema = if method == "GET" {
                let properties = op.get("query").filter(|q| q.is_object()).cloned();
                json!({
                    "type": "object",
                    "properties": properties.unwrap_or_else(|| json!({})),
                })
            } else {
                op.get("form")
                    .filter(|f| f.is_object())
                    .cloned()
                    .unwrap_or_else(|| json!({"type": "object", "properties": {}}))
            };
            tighten(&mut schema);
            let validator = jsonschema::options()
                .should_validate_formats(false)
                .build(&schema)
                .unwrap_or_else(|e| panic!("schema of {method} {path} compiles: {e}"));
            Operation {
                method,
                path,
                schema,
                validator,
            }
        })
        .collect()
}

fn tighten(schema: &mut Value) {
    let Value::Object(map) = schema else {
        return;
    };
    if map.contains_key("properties") && !map.contains_key("additionalProperties") {
        map.insert("additionalProperties".into(), Value::Bool(false));
    }
    if let Some(Value::Object(props)) = map.get_mut("properties")
        && let Some(Value::Object(api_version)) = props.get_mut("api_version")
        && let Some(Value::Array(versions)) = api_version.get_mut("enum")
    {
        versions.extend(NEWER_API_VERSIONS.iter().map(|v| json!(v)));
    }
    for child in map.values_mut() {
        match child {
            Value::Object(_) => tighten(child),
            Value::Array(items) => items.iter_mut().for_each(tighten),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendored_copy_matches_shared() {
        let shared = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/stripe-openapi/requests.json"
        );
        match std::fs::read_to_string(shared) {
            Ok(text) => assert!(
                text == REQUESTS_JSON,
                "shared/stripe-openapi/requests.json changed: copy it to stripe-wiremock/stripe-openapi/"
            ),
            // GitHub's checkout has no shared/ beside it; .ci/run's always does.
            Err(_) => assert!(
                std::env::var_os("CI_REQUIRE_SHARED").is_none(),
                "{shared} missing"
            ),
        }
    }

    #[test]
    fn the_extra_operations_are_not_in_the_snapshot() {
        let snapshot = load(REQUESTS_JSON);
        for extra in load(EXTRA_REQUESTS_JSON) {
            assert!(
                !snapshot
                    .iter()
                    .any(|op| op.method == extra.method && op.path == extra.path),
                "{} {} is in requests.json now: remove it from requests.extra.json",
                extra.method,
                extra.path
            );
        }
        assert!(find("GET", "/v1/subscriptions/sub_1").is_some());
    }

    #[test]
    fn every_operation_loads_and_paths_match_templates() {
        assert!(operations().len() >= 19);
        assert_eq!(find("POST", "/v1/prices").unwrap().path, "/v1/prices");
        assert_eq!(
            find("POST", "/v1/prices/price_1").unwrap().path,
            "/v1/prices/{price}"
        );
        assert!(find("DELETE", "/v1/prices/price_1").is_none());
        assert!(find("GET", "/v1/prices/").is_none());
        assert!(find("POST", "/v1/prices").unwrap().creates());
        assert!(!find("POST", "/v1/prices/price_1").unwrap().creates());
    }

    #[test]
    fn accepts_a_real_price_create() {
        let op = find("POST", "/v1/prices").unwrap();
        let (params, errors) = op.check(
            b"currency=cad&unit_amount=5499&product=prod_1&recurring[interval]=month\
              &lookup_key=billing_monthly&transfer_lookup_key=true&metadata[env]=stage",
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(params["unit_amount"], 5499);
        assert_eq!(params["transfer_lookup_key"], true);
    }

    #[test]
    fn refuses_unknown_params_at_any_depth_and_bad_enums() {
        let op = find("POST", "/v1/prices").unwrap();
        let (_, errors) = op.check(b"currency=cad&colour=red");
        assert_eq!(errors.len(), 1, "{errors:?}");
        let (_, errors) = op.check(b"currency=cad&recurring[interval]=month&recurring[every]=2");
        assert_eq!(errors.len(), 1, "{errors:?}");
        let (_, errors) = op.check(b"currency=cad&recurring[interval]=weekly");
        assert!(errors[0].contains("/recurring/interval"), "{errors:?}");
        let (_, errors) = op.check(b"currency=cad&unit_amount=ten");
        assert_eq!(errors.len(), 1, "{errors:?}");
    }

    #[test]
    fn checks_queries_and_the_newer_api_version() {
        let list = find("GET", "/v1/prices").unwrap();
        let (params, errors) = list.check(b"active=true&lookup_keys[0]=a&lookup_keys[1]=b&limit=3");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(params["lookup_keys"], json!(["a", "b"]));
        let (_, errors) = list.check(b"colour=red");
        assert_eq!(errors.len(), 1);

        let create = find("POST", "/v1/webhook_endpoints").unwrap();
        let body = format!(
            "url=https://x.test/w&enabled_events[0]=charge.failed&api_version={}",
            NEWER_API_VERSIONS[0]
        );
        let (_, errors) = create.check(body.as_bytes());
        assert!(errors.is_empty(), "{errors:?}");
        let (_, errors) = create.check(b"url=https://x.test/w&enabled_events[0]=no.such.event");
        assert_eq!(errors.len(), 1);
    }
}
