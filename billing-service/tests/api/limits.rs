//! What a client may hold, through the real router over raw TCP (so that a body can stall
//! halfway): a body that pauses, a request that takes too long, and more requests than the
//! in-flight limit. Each is answered with the API's JSON error (408, 503), and the status routes
//! go on answering. The connection-level header deadline and the memory budget for webhook
//! bodies are tested against the binary, in `tests/tests/slow_clients.rs`.

use std::time::{Duration, Instant};

use billing_service::clock::unix_now;
use serde_json::Value;
use test_support::db::TestDb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{TestApp, spawn_app_with, test_settings};

const FRONTEND: &str = "https://app.example.com";

async fn app(db: &TestDb, body: Duration, request: Duration, in_flight: usize) -> TestApp {
    let mut settings = test_settings(&db.url);
    settings.frontend_url = url::Url::parse(FRONTEND).unwrap();
    settings.http.body_read_timeout = body;
    settings.http.request_timeout = request;
    settings.http.max_in_flight = in_flight;
    spawn_app_with(settings).await
}

/// Opens a connection and sends `head` (the request line and headers, without the blank line)
/// and the first bytes of a body.
async fn start(app: &TestApp, head: &str, first: &[u8]) -> TcpStream {
    let address = app.address.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream
        .write_all(format!("{head}\r\nHost: billing\r\n\r\n").as_bytes())
        .await
        .unwrap();
    stream.write_all(first).await.unwrap();
    stream
}

/// Reads one response: its status and JSON body.
async fn response(stream: &mut TcpStream) -> (u16, Value) {
    let (status, _, body) = response_with_head(stream).await;
    (status, body)
}

/// Reads one response: its status, its head (lowercased) and its JSON body.
async fn response_with_head(stream: &mut TcpStream) -> (u16, String, Value) {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed without a response: {raw:?}");
        raw.extend_from_slice(&buf[..n]);
        if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_lowercase();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0);
    while raw.len() < head_end + length {
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed in the middle of the body");
        raw.extend_from_slice(&buf[..n]);
    }
    let body = serde_json::from_slice(&raw[head_end..head_end + length]).unwrap_or(Value::Null);
    (status, head, body)
}

fn webhook_head(length: usize) -> String {
    format!(
        "POST /webhook/stripe HTTP/1.1\r\nContent-Type: application/json\r\n\
         Stripe-Signature: t={},v1={}\r\nContent-Length: {length}",
        unix_now(),
        "0".repeat(64)
    )
}

#[tokio::test]
async fn a_body_that_stalls_is_a_408_on_every_route_that_reads_one() {
    let db = TestDb::sqlite();
    let app = app(
        &db,
        Duration::from_millis(500),
        Duration::from_secs(30),
        512,
    )
    .await;
    let checkout = format!(
        "POST /billing/checkout HTTP/1.1\r\nContent-Type: application/json\r\n\
         Origin: {FRONTEND}\r\nx-user-id: u-1\r\nx-user-email: u-1@example.com\r\n\
         Content-Length: 40"
    );
    for head in [checkout, webhook_head(100)] {
        let started = Instant::now();
        let mut stream = start(&app, &head, b"{\"price_id\"").await;
        let (status, answer_head, body) = response_with_head(&mut stream).await;
        assert_eq!(status, 408, "{head}: {body}");
        assert_eq!(body["error"]["code"], "request_timeout", "{body}");
        // The frontend's page can read why its call failed; Stripe gets no CORS headers.
        let cors = format!("access-control-allow-origin: {FRONTEND}");
        if head.contains("/billing/") {
            assert!(answer_head.contains(&cors), "{answer_head}");
        } else {
            assert!(!answer_head.contains("access-control"), "{answer_head}");
        }
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(450) && waited < Duration::from_secs(5),
            "answered after {waited:?}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn a_request_that_trickles_past_the_request_timeout_is_a_408() {
    let db = TestDb::sqlite();
    let app = app(
        &db,
        Duration::from_secs(2),
        Duration::from_millis(1500),
        512,
    )
    .await;
    let started = Instant::now();
    let mut stream = start(&app, &webhook_head(1000), b"{").await;
    // A byte every 200 ms: never a pause the body timeout would see.
    let trickle = async {
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if stream.write_all(b" ").await.is_err() {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_millis(1200), trickle)
        .await
        .ok();
    let (status, body) = response(&mut stream).await;
    assert_eq!(status, 408, "{body}");
    assert_eq!(body["error"]["code"], "request_timeout");
    assert!(started.elapsed() < Duration::from_secs(4));
    app.stop().await;
}

#[tokio::test]
async fn past_the_in_flight_limit_requests_are_shed_but_probes_answer() {
    let db = TestDb::sqlite();
    let app = app(&db, Duration::from_secs(10), Duration::from_secs(2), 2).await;
    // Two webhook deliveries whose bodies never come hold both places.
    let _held = [
        start(&app, &webhook_head(100), b"{").await,
        start(&app, &webhook_head(100), b"{").await,
    ];
    tokio::time::sleep(Duration::from_millis(200)).await;

    let shed = app
        .client
        .get(format!("{}/billing/products", app.address))
        .header("origin", FRONTEND)
        .send()
        .await
        .unwrap();
    assert_eq!(shed.status(), 503);
    // Shed before the route, still readable by the frontend's page.
    assert_eq!(shed.headers()["access-control-allow-origin"], FRONTEND);
    let body: Value = shed.json().await.unwrap();
    assert_eq!(body["error"]["code"], "overloaded", "{body}");
    for probe in ["/status/alive", "/status/ready", "/metrics"] {
        assert_eq!(app.get(probe).await.status(), 200, "{probe} was shed");
    }

    // Once the held requests time out, their places are free again.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let after = app.get("/billing/products").await;
    assert_ne!(after.status(), 503, "places were not given back");
    app.stop().await;
}
