//! What the integration tests share: async-stripe's own requests sent to the double, and its
//! own parsing of the answers.
//!
//! [`Direct`] is an async-stripe client whose transport is [`Api::answer`]: a request builder's
//! `send_blocking(&direct)` sends exactly the method, path and form or query async-stripe makes,
//! and parses the answer with miniserde into the response type, as the real client does. So a
//! missing non-optional field fails here as it would fail in the service.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Display;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;
use stripe_client_core::{
    CustomizedStripeRequest, StripeBlockingClient, StripeClientErr, StripeMethod,
};
use stripe_wiremock::{Answer, Api};

/// Why a request through [`Direct`] failed: Stripe's error answer, or a body async-stripe could
/// not parse.
#[derive(Debug)]
pub enum Failed {
    Status(u16, Value),
    Parse(String),
}

impl Failed {
    /// The status of an error answer (panics on a parse failure: that is a bug in the double).
    pub fn status(&self) -> u16 {
        match self {
            Failed::Status(status, _) => *status,
            Failed::Parse(why) => panic!("async-stripe could not parse the answer: {why}"),
        }
    }

    /// Stripe's `error` object.
    pub fn error(&self) -> &Value {
        match self {
            Failed::Status(_, body) => &body["error"],
            Failed::Parse(why) => panic!("async-stripe could not parse the answer: {why}"),
        }
    }
}

impl StripeClientErr for Failed {
    fn deserialize_err(msg: impl Display) -> Self {
        Failed::Parse(msg.to_string())
    }
}

/// An async-stripe client over [`Api::answer`]; every POST gets a fresh `Idempotency-Key`, as
/// billing-stripe sends them.
pub struct Direct(pub Api);

pub fn headers(idempotency_key: Option<String>) -> BTreeMap<String, String> {
    let mut headers = BTreeMap::from([(
        "authorization".to_owned(),
        "Bearer sk_test_direct".to_owned(),
    )]);
    if let Some(key) = idempotency_key {
        headers.insert("idempotency-key".to_owned(), key);
    }
    headers
}

fn fresh_key() -> String {
    static KEYS: AtomicUsize = AtomicUsize::new(0);
    format!("direct-{}", KEYS.fetch_add(1, Ordering::Relaxed))
}

impl StripeBlockingClient for Direct {
    type Err = Failed;

    fn execute(&self, req: CustomizedStripeRequest) -> Result<bytes::Bytes, Failed> {
        let (request, _) = req.into_pieces();
        let (method, key) = match request.method {
            StripeMethod::Get => ("GET", None),
            StripeMethod::Post => ("POST", Some(fresh_key())),
            StripeMethod::Delete => ("DELETE", None),
        };
        let raw = match request.method {
            StripeMethod::Post => request.body.unwrap_or_default(),
            _ => request.query.unwrap_or_default(),
        };
        let path = format!("/v1{}", request.path);
        let Answer { status, body, .. } =
            self.0.answer(method, &path, raw.as_bytes(), &headers(key));
        if status == 200 {
            Ok(bytes::Bytes::from(body.to_string()))
        } else {
            Err(Failed::Status(status, body))
        }
    }
}

/// A POST as the service sends it, form body given: authorized, with a fresh key. Panics unless
/// the double answers 200.
pub fn post(api: &Api, path: &str, body: &str) -> Value {
    let Answer { status, body, .. } =
        api.answer("POST", path, body.as_bytes(), &headers(Some(fresh_key())));
    assert_eq!(status, 200, "{body}");
    body
}

/// A GET with its query string; returns the status and the body.
pub fn get(api: &Api, path: &str, query: &str) -> (u16, Value) {
    let Answer { status, body, .. } = api.answer("GET", path, query.as_bytes(), &headers(None));
    (status, body)
}

pub fn id(object: &Value) -> String {
    object["id"].as_str().unwrap().to_owned()
}

/// Parses `value` as async-stripe parses a response body.
pub fn parse<T: miniserde::Deserialize>(value: &Value) -> T {
    miniserde::json::from_str(&value.to_string())
        .unwrap_or_else(|e| panic!("async-stripe cannot parse {value}: {e}"))
}

pub fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}
