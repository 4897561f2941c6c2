//! `stripe-setup trigger` against a receiver that checks signatures with an independent HMAC
//! implementation (Python's `hmac`), so a mistake shared by our signer and our verifier cannot
//! hide.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

const SECRET: &str = "whsec_independent_check";

/// A webhook receiver in Python: verifies `Stripe-Signature` as Stripe documents it, checks the
/// body is an event, counts distinct event ids and client connections.
const RECEIVER: &str = r#"
import hashlib, hmac, json, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = sys.argv[1].encode()
lock = threading.Lock()
stats = {"valid": 0, "invalid": 0, "ids": set(), "types": set(), "connections": set()}

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args):
        pass
    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def do_GET(self):
        with lock:
            self.reply(200, {"valid": stats["valid"], "invalid": stats["invalid"],
                             "ids": len(stats["ids"]), "types": sorted(stats["types"]),
                             "connections": len(stats["connections"])})
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        items = [i.split("=", 1) for i in self.headers.get("Stripe-Signature", "").split(",") if "=" in i]
        t = [v for k, v in items if k == "t"]
        v1 = [v for k, v in items if k == "v1"]
        ok = False
        if len(t) == 1:
            expected = hmac.new(SECRET, t[0].encode() + b"." + body, hashlib.sha256).hexdigest()
            ok = any(hmac.compare_digest(expected, sig) for sig in v1)
        event = json.loads(body) if ok else {}
        ok = ok and event.get("object") == "event" and event["data"]["object"].get("object")
        with lock:
            stats["connections"].add(self.client_address)
            if ok:
                stats["valid"] += 1
                stats["ids"].add(event["id"])
                stats["types"].add(event["type"])
            else:
                stats["invalid"] += 1
        self.reply(200 if ok else 400, {"received": bool(ok)})

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

struct Receiver {
    child: Child,
    url: String,
}

impl Receiver {
    fn start() -> Self {
        let mut child = Command::new("python3")
            .args(["-c", RECEIVER, SECRET])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut port = String::new();
        BufReader::new(stdout)
            .read_line(&mut port)
            .expect("the receiver prints its port");
        let url = format!("http://127.0.0.1:{}/webhook/stripe", port.trim());
        Self { child, url }
    }

    fn stats(&self) -> Value {
        let output = Command::new("python3")
            .args(["-c", "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())", &self.url])
            .output()
            .expect("python3 runs");
        serde_json::from_slice(&output.stdout).expect("stats are JSON")
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `stripe-setup trigger <args>` with `secret` in STRIPE_WEBHOOK_SECRET (never on the command
/// line).
fn trigger(secret: &str, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_stripe-setup"))
        .arg("trigger")
        .args(args)
        .env("STRIPE_WEBHOOK_SECRET", secret)
        .output()
        .expect("the binary runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn every_handled_event_type_is_signed_as_stripe_signs() {
    let receiver = Receiver::start();
    for event_type in billing_stripe::fixtures::SUPPORTED {
        let (code, stdout, stderr) = trigger(SECRET, &[event_type, "--url", &receiver.url]);
        assert_eq!(code, 0, "{event_type}: {stdout}{stderr}");
        assert!(stdout.contains("accepted (2xx)"), "{stdout}");
    }
    let stats = receiver.stats();
    assert_eq!(stats["valid"], billing_stripe::fixtures::SUPPORTED.len());
    assert_eq!(stats["invalid"], 0);
    assert_eq!(
        stats["types"].as_array().unwrap().len(),
        billing_stripe::fixtures::SUPPORTED.len()
    );
}

#[test]
fn load_generation_sends_unique_events_over_kept_alive_connections() {
    let receiver = Receiver::start();
    let (code, stdout, stderr) = trigger(
        SECRET,
        &[
            "invoice.paid",
            "--url",
            &receiver.url,
            "--count",
            "200",
            "--concurrency",
            "4",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    let report: Value = serde_json::from_str(&stdout).expect("--json prints JSON");
    assert_eq!(report["sent"], 200);
    assert_eq!(report["accepted"], 200);
    assert_eq!(report["failed"], 0);
    assert!(report["events_per_sec"].as_f64().unwrap() > 0.0);
    let p = &report["latency_ms"];
    assert!(p["p50"].as_f64().unwrap() > 0.0);
    assert!(p["p50"].as_f64() <= p["p90"].as_f64() && p["p90"].as_f64() <= p["p99"].as_f64());

    let stats = receiver.stats();
    assert_eq!(stats["valid"], 200);
    assert_eq!(stats["ids"], 200, "every event has its own id");
    let connections = stats["connections"].as_u64().unwrap();
    assert!(
        connections <= 8,
        "connections are reused: {connections} for 200 events"
    );
}

#[test]
fn a_wrong_secret_is_reported_as_failures_and_exit_1() {
    let receiver = Receiver::start();
    let (code, stdout, _) = trigger(
        "whsec_wrong",
        &["charge.failed", "--url", &receiver.url, "--count", "3"],
    );
    assert_eq!(code, 1);
    assert!(
        stdout.contains("sent 3, accepted 0 (2xx), failed 3"),
        "{stdout}"
    );
    assert!(stdout.contains("HTTP 400"), "{stdout}");
    assert_eq!(receiver.stats()["invalid"], 3);
}

#[test]
fn unknown_event_types_are_refused_naming_the_known_ones() {
    let (code, _, stderr) = trigger(SECRET, &["payout.paid", "--url", "http://127.0.0.1:9/"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("no fixture for event type 'payout.paid'"),
        "{stderr}"
    );
    assert!(stderr.contains("checkout.session.completed"), "{stderr}");
}

#[test]
fn a_secret_on_the_command_line_is_refused_and_nothing_is_sent() {
    let receiver = Receiver::start();
    let (code, stdout, stderr) = trigger(
        SECRET,
        &[
            "charge.succeeded",
            "--url",
            &receiver.url,
            "--secret",
            SECRET,
        ],
    );
    assert_ne!(code, 0, "{stdout}{stderr}");
    assert!(
        stderr.contains("--secret is not accepted") && stderr.contains("STRIPE_WEBHOOK_SECRET"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(SECRET),
        "the refusal does not echo the secret: {stderr}"
    );
    assert_eq!(receiver.stats()["valid"], 0);
    assert_eq!(receiver.stats()["invalid"], 0);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret");
    std::fs::write(&file, format!("{SECRET}\n")).unwrap();
    let (code, stdout, stderr) = trigger(
        "",
        &[
            "charge.succeeded",
            "--url",
            &receiver.url,
            "--secret-file",
            file.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "--secret-file works: {stdout}{stderr}");
    assert_eq!(receiver.stats()["valid"], 1);
}
