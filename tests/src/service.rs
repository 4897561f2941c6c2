//! The `billing-service` binary as a process: started with an environment like an operator's,
//! on a port it picks itself, and always killed when the handle is dropped (a failing test
//! leaves no service behind).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::WEBHOOK_SECRET;
use crate::binaries::{BILLING_SERVICE, binary};

/// How many of the latest log lines are kept to explain a failure.
const KEPT_LOG_LINES: usize = 400;

pub struct Service {
    child: Child,
    pub port: u16,
    logs: Arc<Mutex<VecDeque<String>>>,
}

impl Service {
    /// Starts `billing-service` on `database_url` and waits until it listens.
    pub async fn start(database_url: &str) -> Self {
        Self::start_with(database_url, &[]).await
    }

    /// As [`Service::start`], with more environment variables (they win over the defaults).
    pub async fn start_with(database_url: &str, extra_env: &[(&str, &str)]) -> Self {
        // Finding it may mean building it (minutes): not on a runtime thread.
        let program = tokio::task::spawn_blocking(|| binary(BILLING_SERVICE))
            .await
            .expect("the binary is found");
        let mut command = Command::new(program);
        // A clean environment: nothing from the developer's shell or CI (DATABASE_URL above
        // all) leaks in. The working directory is one where no stray `.env` is read.
        command
            .env_clear()
            .current_dir(std::env::temp_dir())
            .env("STRIPE_API_SECRET_KEY", "sk_test_e2e")
            .env("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
            // Nothing here should call Stripe; if something did, it fails fast on loopback.
            .env("STRIPE_API_BASE", "http://127.0.0.1:9")
            .env("DATABASE_URL", database_url)
            .env("DATABASE_CONNECT_RETRY_SECS", "5")
            // Port 0: the kernel picks a free one and the service logs it, so parallel tests
            // never race for a port.
            .env("SERVER_PORT", "0")
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .envs(extra_env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("billing-service starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let logs = Arc::new(Mutex::new(VecDeque::new()));
        let (port_tx, port_rx) = tokio::sync::oneshot::channel();
        // Drained continuously: a full pipe would block the service's logging, and so the
        // service itself.
        let kept = logs.clone();
        std::thread::spawn(move || {
            let mut port_tx = Some(port_tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(port) = listening_port(&line)
                    && let Some(tx) = port_tx.take()
                {
                    let _ = tx.send(port);
                }
                let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
                if kept.len() == KEPT_LOG_LINES {
                    kept.pop_front();
                }
                kept.push_back(line);
            }
        });
        let mut service = Self {
            child,
            port: 0,
            logs,
        };
        match tokio::time::timeout(Duration::from_secs(30), port_rx).await {
            Ok(Ok(port)) => service.port = port,
            // The reader stopped (the process exited) or the time ran out.
            _ => panic!(
                "billing-service did not start listening; its log:\n{}",
                service.logs()
            ),
        }
        service
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The latest lines it logged, for assertion messages.
    pub fn logs(&self) -> String {
        let kept = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        kept.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// SIGKILL: no shutdown handler runs, in-flight requests and transactions are cut where
    /// they are, as when a node dies or the OOM killer strikes.
    pub fn kill(mut self) -> ExitStatus {
        self.child.kill().expect("SIGKILL is delivered");
        self.child.wait().expect("the killed service is reaped")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        // Only our own child, by its handle; harmless if it has already exited.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The port of the `listening` line (`{"message":"listening","port":N,...}`).
fn listening_port(line: &str) -> Option<u16> {
    if !line.contains("listening") {
        return None;
    }
    let entry: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = if entry.get("fields").is_some() {
        &entry["fields"]
    } else {
        &entry
    };
    if fields.get("message")?.as_str()? != "listening" {
        return None;
    }
    fields.get("port")?.as_u64()?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::listening_port;

    #[test]
    fn reads_the_port_from_the_listening_line() {
        let line = r#"{"timestamp":"2026-01-01T00:00:00Z","level":"INFO","message":"listening","port":40123,"target":"billing_service::startup"}"#;
        assert_eq!(listening_port(line), Some(40123));
        assert_eq!(listening_port(r#"{"message":"not listening yet"}"#), None);
        assert_eq!(listening_port("listening"), None);
    }
}
