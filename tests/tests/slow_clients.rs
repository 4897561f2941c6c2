//! Hostile clients against the real binary: 1,000 connections sending their headers a byte a
//! second and 300 unsigned 1 MiB webhook bodies sent slowly (half at 32 KiB/s, half at
//! 256 KiB/s; each with a well-formed but false `Stripe-Signature`, so the service cannot refuse
//! it before reading), all at once.
//!
//! Proves: meanwhile `/status/alive` and a correctly signed webhook are answered within 1 s,
//! the service's resident memory stays under 128 MiB, and every slow connection is closed by
//! the service (headers: by the header-read timeout; bodies: refused at once for lack of room,
//! cut by the request timeout, or read and refused) rather than held. It would fail without the
//! header deadline (the 1,000 would stay open), without the body budget (150 MiB of bodies would
//! be read at once), or
//! if the probes queued behind the slow clients. Prints the figures for BENCHMARKS.md.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use e2e::service::Service;
use e2e::webhook::{deliver, event_body, unique_prefix};
use test_support::db::TestDb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

const SLOW_HEADERS: usize = 1000;
const SLOW_BODIES: usize = 300;
const BODY_BYTES: usize = 1024 * 1024;
const HEADER_TIMEOUT: u64 = 3;
const REQUEST_TIMEOUT: u64 = 6;
/// How long the probes run: past both timeouts, so that closing is observed under load.
const PROBING: Duration = Duration::from_secs(10);
const MIB: u64 = 1024 * 1024;

/// How one slow connection ended, as the client saw it.
#[derive(Debug)]
struct Ended {
    /// The status line's code, when a response came before the close.
    status: Option<u16>,
    after: Duration,
}

/// Reads until the server closes; a reset counts as closed too (the server may close with
/// unread bytes of ours in its buffer).
async fn until_closed(mut reader: tokio::net::tcp::OwnedReadHalf, started: Instant) -> Ended {
    let mut response = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => response.extend_from_slice(&buf[..n]),
        }
    }
    let status = std::str::from_utf8(&response)
        .ok()
        .and_then(|text| text.split(' ').nth(1))
        .and_then(|code| code.parse().ok());
    Ended {
        status,
        after: started.elapsed(),
    }
}

async fn slow_headers(address: String) -> Ended {
    let started = Instant::now();
    let stream = TcpStream::connect(&address).await.expect("connect");
    let (reader, mut writer) = stream.into_split();
    let trickle = tokio::spawn(async move {
        for byte in b"GET /status/alive HTTP/1.1\r\nHost: billing\r\nX-Slow: 1\r\n\r\n" {
            if writer.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let ended = until_closed(reader, started).await;
    trickle.abort();
    ended
}

/// Sends a 1 MiB body in 16 KiB parts, `pause` apart.
async fn slow_body(address: String, pause: Duration) -> Ended {
    let started = Instant::now();
    let stream = TcpStream::connect(&address).await.expect("connect");
    let (reader, mut writer) = stream.into_split();
    let now = billing_service::clock::unix_now();
    let head = format!(
        "POST /webhook/stripe HTTP/1.1\r\nHost: billing\r\nContent-Type: application/json\r\n\
         Stripe-Signature: t={now},v1={}\r\nContent-Length: {BODY_BYTES}\r\n\r\n",
        "0".repeat(64)
    );
    let trickle = tokio::spawn(async move {
        if writer.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let chunk = vec![b' '; 16 * 1024];
        for _ in 0..BODY_BYTES / chunk.len() {
            if writer.write_all(&chunk).await.is_err() {
                return;
            }
            tokio::time::sleep(pause).await;
        }
    });
    let ended = until_closed(reader, started).await;
    trickle.abort();
    ended
}

/// The service's resident memory now, from /proc.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib * 1024
}

fn open_files_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("/proc limits");
    limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(3))
        .and_then(|soft| soft.parse().ok())
        .unwrap_or(u64::MAX)
}

fn summary(latencies: &mut [Duration]) -> String {
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    format!(
        "{} requests, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        at(1.0).as_secs_f64() * 1e3
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_large_clients_are_cut_off_while_probes_and_stripe_are_served() {
    let needed = (SLOW_HEADERS + SLOW_BODIES) as u64 * 2 + 200;
    assert!(
        open_files_limit() >= needed,
        "this test opens {needed} sockets (both ends); raise the limit (`ulimit -n 20000`)"
    );
    let db = TestDb::sqlite();
    let service = Service::start_with(
        &db.url,
        &[
            ("HTTP_HEADER_READ_TIMEOUT_SECS", &HEADER_TIMEOUT.to_string()),
            ("HTTP_BODY_READ_TIMEOUT_SECS", "3"),
            ("HTTP_REQUEST_TIMEOUT_SECS", &REQUEST_TIMEOUT.to_string()),
        ],
    )
    .await;
    let address = service.url("").trim_start_matches("http://").to_owned();
    let address = address.trim_end_matches('/').to_owned();
    let rss_before = rss_bytes(service.pid());

    let mut headers = JoinSet::new();
    for _ in 0..SLOW_HEADERS {
        headers.spawn(slow_headers(address.clone()));
    }
    let mut bodies = JoinSet::new();
    for i in 0..SLOW_BODIES {
        // Half trickle (32 KiB/s: cut by the request timeout), half arrive whole in about 4 s
        // (256 KiB/s): read in full, those would hold 150 MiB without the budget.
        let pause = Duration::from_millis(if i % 2 == 0 { 500 } else { 62 });
        bodies.spawn(slow_body(address.clone(), pause));
    }

    // Fresh connections each time: a probe must also get through accept.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let prefix = unique_prefix("slow");
    let mut alive = Vec::new();
    let mut webhook = Vec::new();
    let mut rss_peak = rss_before;
    let started = Instant::now();
    let mut i = 0;
    while started.elapsed() < PROBING {
        let t = Instant::now();
        let response = client
            .get(service.url("/status/alive"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .expect("/status/alive answers");
        assert_eq!(response.status(), 200);
        alive.push(t.elapsed());

        let t = Instant::now();
        let body = event_body("customer.created", &format!("{prefix}_{i}"));
        let status = deliver(&client, &service.url("/webhook/stripe"), &body)
            .await
            .expect("the signed webhook is answered");
        assert_eq!(status, 200, "a signed webhook was refused under load");
        webhook.push(t.elapsed());

        rss_peak = rss_peak.max(rss_bytes(service.pid()));
        i += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut header_ends = Vec::new();
    while let Some(ended) = headers.join_next().await {
        header_ends.push(ended.expect("slow-header task"));
    }
    let mut body_ends = Vec::new();
    while let Some(ended) = bodies.join_next().await {
        body_ends.push(ended.expect("slow-body task"));
    }
    rss_peak = rss_peak.max(rss_bytes(service.pid()));

    let slowest_header_close = header_ends.iter().map(|e| e.after).max().unwrap();
    let mut body_outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for ended in &body_ends {
        let key = ended
            .status
            .map_or("closed without a response".to_owned(), |s| s.to_string());
        *body_outcomes.entry(key).or_default() += 1;
    }
    let slowest_body_close = body_ends.iter().map(|e| e.after).max().unwrap();
    println!(
        "slow clients: {SLOW_HEADERS} slow-header connections, all closed by {:.1} s \
         (header timeout {HEADER_TIMEOUT} s); {SLOW_BODIES} slow 1 MiB bodies: {body_outcomes:?}, \
         all closed by {:.1} s (request timeout {REQUEST_TIMEOUT} s)",
        slowest_header_close.as_secs_f64(),
        slowest_body_close.as_secs_f64()
    );
    println!(
        "slow clients: RSS {:.1} MiB before, {:.1} MiB at most during",
        rss_before as f64 / MIB as f64,
        rss_peak as f64 / MIB as f64
    );
    println!("slow clients: /status/alive {}", summary(&mut alive));
    println!("slow clients: signed webhook {}", summary(&mut webhook));

    let worst = |l: &[Duration]| l.iter().max().copied().unwrap();
    assert!(
        worst(&alive) < Duration::from_secs(1),
        "/status/alive took {:?}",
        worst(&alive)
    );
    assert!(
        worst(&webhook) < Duration::from_secs(1),
        "a signed webhook took {:?}",
        worst(&webhook)
    );
    assert!(
        rss_peak < 128 * MIB,
        "resident memory reached {} MiB",
        rss_peak / MIB
    );
    // None of the slow-header connections got a request through; each was closed by the
    // service's deadline, not by the client's trickle ending (which takes 55 s).
    assert!(
        header_ends
            .iter()
            .all(|e| e.status.is_none_or(|s| s == 408))
    );
    assert!(
        slowest_header_close < Duration::from_secs(HEADER_TIMEOUT + 3),
        "a slow-header connection stayed open {slowest_header_close:?}"
    );
    // Every body was refused for room (503), cut by a timeout (408), or read within the budget
    // and refused for its false signature (400).
    assert!(
        body_ends
            .iter()
            .all(|e| matches!(e.status, None | Some(503) | Some(408) | Some(400))),
        "{body_outcomes:?}"
    );
    assert!(
        body_ends.iter().any(|e| e.status == Some(503)),
        "no body was refused for room: {body_outcomes:?}"
    );
    assert!(
        slowest_body_close < Duration::from_secs(REQUEST_TIMEOUT + 3),
        "a slow body stayed open {slowest_body_close:?}"
    );
    service.kill();
}
