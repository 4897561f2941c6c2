//! A stand-in for what surrounds a Lambda function, so the real binary can be driven as Lambda
//! drives it, without AWS:
//! - the Runtime API (`/2018-06-01/runtime/invocation/next`, `/{id}/response`, `/{id}/error`,
//!   `/init/error`): each [`RuntimeApi::invoke`] hands the function one event on its next poll
//!   and waits for its answer;
//! - the AWS Parameters and Secrets Lambda Extension (`/secretsmanager/get`), checking the
//!   session token as the extension does;
//! - a CloudFormation response URL (`PUT /cloudformation/{name}`), recording what the function
//!   reports for a custom resource.
//!
//! And [`events`]: the JSON API Gateway's HTTP API, a function URL, EventBridge's schedule and
//! CloudFormation send.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::{Value, json};
use tokio::sync::{Notify, oneshot};

/// What the function answered one invocation with.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// `POST /invocation/{id}/response`: the function's result.
    Response(Value),
    /// `POST /invocation/{id}/error`: an invocation error (Lambda's `Unhandled`).
    Error(Value),
}

impl Answer {
    /// The result, or a panic naming the error.
    pub fn response(self) -> Value {
        match self {
            Self::Response(value) => value,
            Self::Error(error) => panic!("the invocation failed: {error}"),
        }
    }
}

struct Invocation {
    id: String,
    event: Value,
    deadline: Duration,
}

#[derive(Default)]
struct Inner {
    queue: Mutex<VecDeque<Invocation>>,
    queued: Notify,
    waiting: Mutex<HashMap<String, oneshot::Sender<Answer>>>,
    secrets: Mutex<HashMap<String, String>>,
    session_token: String,
    init_errors: Mutex<Vec<Value>>,
    cloudformation: Mutex<Vec<(String, Value)>>,
    /// When the function first asked for an invocation: its start-up is over.
    first_poll: Mutex<Option<Instant>>,
    next_id: Mutex<u64>,
}

/// The stand-in's HTTP server; stops when dropped.
pub struct RuntimeApi {
    address: SocketAddr,
    inner: Arc<Inner>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

const PREFIX: &str = "/2018-06-01/runtime";

impl RuntimeApi {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        Self::serve(listener, format!("session-token-{}", std::process::id()))
    }

    /// On a port of the caller's choosing (one a function was told of before anything listened
    /// there), admitting `session_token` to the secrets.
    pub async fn start_on(port: &str, session_token: &str) -> Self {
        let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}"))
            .await
            .expect("the port is free");
        Self::serve(listener, session_token.to_owned())
    }

    fn serve(listener: tokio::net::TcpListener, session_token: String) -> Self {
        let inner = Arc::new(Inner {
            session_token,
            ..Inner::default()
        });
        let app = Router::new()
            .route(&format!("{PREFIX}/invocation/next"), get(next))
            .route(
                &format!("{PREFIX}/invocation/{{id}}/response"),
                post(response),
            )
            .route(&format!("{PREFIX}/invocation/{{id}}/error"), post(error))
            .route(&format!("{PREFIX}/init/error"), post(init_error))
            .route("/secretsmanager/get", get(secret))
            .route("/cloudformation/{name}", put(cloudformation))
            .with_state(inner.clone());
        let address = listener.local_addr().expect("its address");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            address,
            inner,
            server,
        }
    }

    /// The variables Lambda gives a function, pointing at this stand-in (the Runtime API and
    /// the secrets extension).
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_LAMBDA_RUNTIME_API", self.address.to_string()),
            ("AWS_LAMBDA_FUNCTION_NAME", "billing-test".to_owned()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512".to_owned()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
            ("AWS_REGION", "eu-west-1".to_owned()),
            ("AWS_SESSION_TOKEN", self.inner.session_token.clone()),
            (
                "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT",
                self.address.port().to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Makes `id` a secret the extension serves, with `value` (a JSON object) as its text.
    pub fn put_secret(&self, id: &str, value: &Value) {
        lock(&self.inner.secrets).insert(id.to_owned(), value.to_string());
    }

    /// The URL a custom resource request names for its response, recorded as `name`.
    pub fn response_url(&self, name: &str) -> String {
        format!("http://{}/cloudformation/{name}", self.address)
    }

    /// What the function PUT to the response URL named `name`, if anything yet.
    pub fn cloudformation_response(&self, name: &str) -> Option<Value> {
        lock(&self.inner.cloudformation)
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    /// The start-up errors the function reported (`/init/error`).
    pub fn init_errors(&self) -> Vec<Value> {
        lock(&self.inner.init_errors).clone()
    }

    /// When the function first polled for an invocation.
    pub fn first_poll(&self) -> Option<Instant> {
        *lock(&self.inner.first_poll)
    }

    /// Waits until the function has polled for its first invocation (its start-up is done).
    pub async fn wait_for_first_poll(&self, timeout: Duration) -> Instant {
        let until = Instant::now() + timeout;
        loop {
            if let Some(at) = self.first_poll() {
                return at;
            }
            assert!(
                Instant::now() < until,
                "the function did not poll for an invocation within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Hands the function `event` (with 60 s to answer) and waits for its answer.
    pub async fn invoke(&self, event: Value) -> Answer {
        self.invoke_with_deadline(event, Duration::from_secs(60))
            .await
    }

    /// As [`RuntimeApi::invoke`], the invocation's deadline `deadline` from now. Panics if no
    /// answer comes within the deadline and ten seconds.
    pub async fn invoke_with_deadline(&self, event: Value, deadline: Duration) -> Answer {
        let id = {
            let mut next = lock(&self.inner.next_id);
            *next += 1;
            format!("req-{next}")
        };
        let (tx, rx) = oneshot::channel();
        lock(&self.inner.waiting).insert(id.clone(), tx);
        lock(&self.inner.queue).push_back(Invocation {
            id: id.clone(),
            event,
            deadline,
        });
        self.inner.queued.notify_one();
        match tokio::time::timeout(deadline + Duration::from_secs(10), rx).await {
            Ok(Ok(answer)) => answer,
            _ => panic!("invocation {id} got no answer"),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn epoch_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
}

async fn next(State(inner): State<Arc<Inner>>) -> Response {
    lock(&inner.first_poll).get_or_insert_with(Instant::now);
    let invocation = loop {
        let notified = inner.queued.notified();
        if let Some(invocation) = lock(&inner.queue).pop_front() {
            break invocation;
        }
        notified.await;
    };
    let deadline = epoch_ms() + invocation.deadline.as_millis();
    (
        [
            ("lambda-runtime-aws-request-id", invocation.id.clone()),
            ("lambda-runtime-deadline-ms", deadline.to_string()),
            (
                "lambda-runtime-invoked-function-arn",
                "arn:aws:lambda:eu-west-1:123456789012:function:billing-test".to_owned(),
            ),
            (
                "lambda-runtime-trace-id",
                "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
                    .to_owned(),
            ),
            ("content-type", "application/json".to_owned()),
        ],
        invocation.event.to_string(),
    )
        .into_response()
}

fn answer(inner: &Inner, id: &str, answer: Answer) -> StatusCode {
    match lock(&inner.waiting).remove(id) {
        Some(waiter) => {
            let _ = waiter.send(answer);
            StatusCode::ACCEPTED
        }
        None => StatusCode::BAD_REQUEST,
    }
}

fn json_or_text(body: &Bytes) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

async fn response(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    body: Bytes,
) -> StatusCode {
    answer(&inner, &id, Answer::Response(json_or_text(&body)))
}

async fn error(State(inner): State<Arc<Inner>>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    answer(&inner, &id, Answer::Error(json_or_text(&body)))
}

async fn init_error(State(inner): State<Arc<Inner>>, body: Bytes) -> StatusCode {
    lock(&inner.init_errors).push(json_or_text(&body));
    StatusCode::ACCEPTED
}

async fn secret(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let token = headers
        .get("x-aws-parameters-secrets-token")
        .and_then(|v| v.to_str().ok());
    if token != Some(inner.session_token.as_str()) {
        return (StatusCode::UNAUTHORIZED, "not authorized").into_response();
    }
    let id = query.get("secretId").cloned().unwrap_or_default();
    match lock(&inner.secrets).get(&id) {
        Some(text) => axum::Json(json!({
            "ARN": id, "Name": id, "SecretString": text,
            "VersionId": "v1", "VersionStages": ["AWSCURRENT"], "CreatedDate": "2026-11-30T00:00:00Z",
        }))
        .into_response(),
        None => (
            StatusCode::BAD_REQUEST,
            format!("ResourceNotFoundException: Secrets Manager can't find the specified secret {id}"),
        )
            .into_response(),
    }
}

async fn cloudformation(
    State(inner): State<Arc<Inner>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    // The presigned URL is signed without a content type: S3 refuses a PUT that sends one.
    if headers.contains_key("content-type") {
        return StatusCode::FORBIDDEN;
    }
    lock(&inner.cloudformation).push((name, json_or_text(&body)));
    StatusCode::OK
}

/// The events Lambda's callers send.
pub mod events {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde_json::{Value, json};

    /// Which front an HTTP event comes through.
    #[derive(Debug, Clone, Copy)]
    pub enum Front<'a> {
        /// API Gateway's HTTP API (payload 2.0) on a stage (`$default`, or a name that prefixes
        /// the path).
        HttpApi { stage: &'a str },
        /// A Lambda function URL (payload 2.0, always `$default`).
        FunctionUrl,
    }

    /// An HTTP request as `front` delivers it. `path` is what the client asked for (the stage
    /// included, on a named stage); the body is sent base64-encoded when `base64`, as API
    /// Gateway does for anything not text.
    pub fn http(
        front: Front<'_>,
        method: &str,
        path: &str,
        query: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        base64: bool,
    ) -> Value {
        let (domain, stage, route_key) = match front {
            Front::HttpApi { stage } => (
                "abc123.execute-api.eu-west-1.amazonaws.com",
                stage,
                format!("{method} {}", path),
            ),
            Front::FunctionUrl => (
                "abc123.lambda-url.eu-west-1.on.aws",
                "$default",
                "$default".to_owned(),
            ),
        };
        let mut header_map = serde_json::Map::new();
        header_map.insert("host".into(), domain.into());
        header_map.insert("user-agent".into(), "Stripe/1.0".into());
        header_map.insert("x-forwarded-proto".into(), "https".into());
        let mut cookies = Vec::new();
        for (name, value) in headers {
            let name = name.to_ascii_lowercase();
            if name == "cookie" {
                cookies.extend(value.split("; ").map(str::to_owned));
                continue;
            }
            header_map.insert(name, Value::String((*value).to_owned()));
        }
        if let Some(body) = body {
            header_map.insert("content-length".into(), body.len().to_string().into());
        }
        let body_field = body.map(|bytes| match base64 {
            true => Value::String(STANDARD.encode(bytes)),
            false => Value::String(String::from_utf8(bytes.to_vec()).expect("a text body")),
        });
        let now = super::epoch_ms();
        let mut event = json!({
            "version": "2.0",
            "routeKey": route_key,
            "rawPath": path,
            "rawQueryString": query,
            "headers": header_map,
            "requestContext": {
                "accountId": "123456789012",
                "apiId": "abc123",
                "domainName": domain,
                "domainPrefix": "abc123",
                "http": {
                    "method": method, "path": path, "protocol": "HTTP/1.1",
                    "sourceIp": "203.0.113.7", "userAgent": "Stripe/1.0",
                },
                "requestId": format!("r-{now}"),
                "routeKey": route_key,
                "stage": stage,
                "time": "30/Nov/2026:19:00:00 +0000",
                "timeEpoch": now as u64,
            },
            "isBase64Encoded": base64 && body.is_some(),
        });
        if !cookies.is_empty() {
            event["cookies"] = json!(cookies);
        }
        if let Some(body) = body_field {
            event["body"] = body;
        }
        event
    }

    /// A `GET` of `path?query` without headers or body.
    pub fn get(front: Front<'_>, path: &str, query: &str) -> Value {
        http(front, "GET", path, query, &[], None, false)
    }

    /// A Stripe delivery through the HTTP API, its body base64-encoded as API Gateway sends
    /// anything it does not take for text, with `signature` as its `Stripe-Signature`.
    pub fn webhook(body: &[u8], signature: &str) -> Value {
        http(
            Front::HttpApi { stage: "$default" },
            "POST",
            "/webhook/stripe",
            "",
            &[
                ("content-type", "application/json; charset=utf-8"),
                ("stripe-signature", signature),
            ],
            Some(body),
            true,
        )
    }

    /// EventBridge's scheduled event (`rate(1 minute)`).
    pub fn scheduled() -> Value {
        json!({
            "version": "0",
            "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": "123456789012",
            "time": "2026-11-30T19:00:00Z",
            "region": "eu-west-1",
            "resources": ["arn:aws:events:eu-west-1:123456789012:rule/billing-schedule"],
            "detail": {},
        })
    }

    /// A CloudFormation custom resource request (`Create`, `Update` or `Delete`).
    pub fn custom_resource(request_type: &str, response_url: &str) -> Value {
        let mut event = json!({
            "RequestType": request_type,
            "ServiceToken": "arn:aws:lambda:eu-west-1:123456789012:function:billing-jobs",
            "ResponseURL": response_url,
            "StackId": "arn:aws:cloudformation:eu-west-1:123456789012:stack/billing/1",
            "RequestId": format!("cr-{request_type}"),
            "LogicalResourceId": "DatabaseMigrations",
            "ResourceType": "Custom::DatabaseMigrations",
            "ResourceProperties": {"CodeVersion": "2"},
        });
        if request_type != "Create" {
            event["PhysicalResourceId"] = json!("billing-database-migrations");
            event["OldResourceProperties"] = json!({"CodeVersion": "1"});
        }
        event
    }
}
