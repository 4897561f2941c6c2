//! Stripe's own request schemas, so that a test passes only if the real API would have accepted
//! what the code sent.
//!
//! The schemas are Stripe's published request schemas, kept in this crate
//! (`stripe-openapi/requests.json`) and embedded at compile time. Two adjustments are made when
//! they are loaded, both towards how the live API behaves:
//! - every object schema that lists its properties refuses unknown ones, at every depth (Stripe
//!   answers "Received unknown parameter: recurring\[foo\]");
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

/// Query parameters spec3 marks required, which the `query` format of `requests.json` (one
/// schema per parameter) cannot say: `(method, path, parameters)`.
const REQUIRED_QUERY: &[(&str, &str, &[&str])] =
    &[("GET", "/v1/entitlements/active_entitlements", &["customer"])];

/// One operation of the spec, with its parameter schema compiled.
pub struct Operation {
    pub method: String,
    /// The path template, e.g. `/v1/prices/{price}`.
    pub path: String,
    schema: Value,
    validator: jsonschema::Validator,
}

impl Operation {
    /// Whether this operation creates an object (a POST on a collection: its path ends in a
    /// name, not an id, like `/v1/prices` or `/v1/products/{product}/features`), and so must
    /// carry an `Idempotency-Key` for a retry to be safe.
    pub fn creates(&self) -> bool {
        self.method == "POST" && !self.path.ends_with('}')
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
                let mut schema = json!({
                    "type": "object",
                    "properties": properties.unwrap_or_else(|| json!({})),
                });
                if let Some((_, _, required)) = REQUIRED_QUERY
                    .iter()
                    .find(|(m, p, _)| *m == method && *p == path)
                {
                    schema["required"] = json!(required);
                }
                schema
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
        let delete = find("DELETE", "/v1/products/prod_1/features/prodft_1").unwrap();
        assert_eq!(delete.path, "/v1/products/{product}/features/{id}");
        assert!(delete.check(b"").1.is_empty());
        assert_eq!(delete.check(b"expand[0]=x").1.len(), 1);
        // A POST on a collection under an object creates; one on an object updates.
        assert!(
            find("POST", "/v1/products/prod_1/features")
                .unwrap()
                .creates()
        );
        assert!(
            !find("POST", "/v1/entitlements/features/feat_1")
                .unwrap()
                .creates()
        );
        assert!(
            find("POST", "/v1/billing_portal/configurations")
                .unwrap()
                .creates()
        );
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

    #[test]
    fn checks_the_entitlements_and_portal_configuration_operations() {
        let create = find("POST", "/v1/entitlements/features").unwrap();
        let (_, errors) = create.check(b"name=Seats&lookup_key=seats&metadata[tier]=pro");
        assert!(errors.is_empty(), "{errors:?}");
        // Both are required, and 80 characters at most.
        assert_eq!(create.check(b"name=Seats").1.len(), 1);
        let long = format!("name=Seats&lookup_key={}", "k".repeat(81));
        assert_eq!(create.check(long.as_bytes()).1.len(), 1);
        // The lookup key cannot be changed.
        let update = find("POST", "/v1/entitlements/features/feat_1").unwrap();
        assert!(update.check(b"name=S&active=false&metadata=").1.is_empty());
        assert_eq!(update.check(b"lookup_key=other").1.len(), 1);

        let list = find("GET", "/v1/entitlements/features").unwrap();
        let (params, errors) = list.check(b"archived=true&lookup_key=seats&limit=5");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(params["archived"], true);
        assert_eq!(list.check(b"active=true").1.len(), 1);

        // spec3's required `customer`, which the snapshot's format cannot carry.
        let active = find("GET", "/v1/entitlements/active_entitlements").unwrap();
        assert!(active.check(b"customer=cus_1&limit=2").1.is_empty());
        assert_eq!(active.check(b"limit=2").1.len(), 1);

        let attach = find("POST", "/v1/products/prod_1/features").unwrap();
        assert_eq!(attach.path, "/v1/products/{product}/features");
        assert!(attach.check(b"entitlement_feature=feat_1").1.is_empty());
        assert_eq!(attach.check(b"feature=feat_1").1.len(), 2);
        let listed = find("GET", "/v1/products/prod_1/features").unwrap();
        assert!(
            listed
                .check(b"limit=3&starting_after=prodft_1")
                .1
                .is_empty()
        );

        let portal = find("POST", "/v1/billing_portal/configurations").unwrap();
        let (params, errors) = portal.check(
            b"features[subscription_update][enabled]=true\
              &features[subscription_update][default_allowed_updates][0]=price\
              &features[subscription_update][products][0][product]=prod_1\
              &features[subscription_update][products][0][prices][0]=price_1\
              &features[subscription_update][proration_behavior]=create_prorations\
              &features[subscription_cancel][enabled]=true\
              &features[subscription_cancel][mode]=at_period_end\
              &business_profile[headline]=Billing&default_return_url=https://x.test/\
              &login_page[enabled]=false&metadata[k]=v&name=main",
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(params["features"]["subscription_update"]["enabled"], true);
        // `features` is required on create; an unknown feature and a bad enum are refused.
        assert_eq!(portal.check(b"name=x").1.len(), 1);
        assert_eq!(
            portal
                .check(b"features[invoice_history][enabled]=true&features[colour]=red")
                .1
                .len(),
            1
        );
        let (_, errors) = portal.check(b"features[subscription_cancel][enabled]=true&features[subscription_cancel][mode]=later");
        assert_eq!(errors.len(), 1, "{errors:?}");
        // Update: `active`, every feature optional, `""` unsets.
        let update = find("POST", "/v1/billing_portal/configurations/bpc_1").unwrap();
        assert_eq!(
            update.path,
            "/v1/billing_portal/configurations/{configuration}"
        );
        assert!(
            update
                .check(b"active=false&features[subscription_update][products]=&default_return_url=")
                .1
                .is_empty()
        );
        let configurations = find("GET", "/v1/billing_portal/configurations").unwrap();
        assert!(
            configurations
                .check(b"active=true&is_default=false")
                .1
                .is_empty()
        );
        assert!(find("GET", "/v1/billing_portal/configurations/bpc_1").is_some());
    }
}
