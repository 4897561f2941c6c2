//! A service binary as a process, as an operator runs it: a clean environment (nothing from the
//! developer's shell or CI, `DATABASE_URL` above all, leaks in), a working folder of the test's
//! choosing, port 0 so that parallel tests never race for a port, and the port read back from
//! the service's JSON `listening` log line. Its log is drained continuously (a full pipe would
//! block the service) and the latest lines are kept for assertion messages. A process is always
//! killed when its handle is dropped, so a failing test leaves nothing behind.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How many of the latest log lines are kept.
const KEPT_LOG_LINES: usize = 2000;

/// How long a service may take to start listening (a debug build on a busy machine migrating a
/// fresh database).
const START_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Process {
    child: Child,
    pub port: u16,
    logs: Arc<Mutex<VecDeque<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

/// What to start. The environment is exactly `env`: the caller sets `SERVER_PORT=0` and
/// `LOG_FORMAT=json` (or whatever the binary needs to print its port).
pub struct Launch<'a> {
    pub program: PathBuf,
    pub dir: &'a Path,
    pub env: Vec<(String, String)>,
}

impl Launch<'_> {
    /// Adds or replaces a variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }
}

impl Process {
    /// Starts the program and waits until it logs that it listens.
    pub async fn start(launch: Launch<'_>) -> Self {
        let program = launch.program.clone();
        let (mut process, port_rx) = Self::launch(launch);
        match tokio::time::timeout(START_TIMEOUT, port_rx).await {
            Ok(Ok(port)) => process.port = port,
            // The reader stopped (the process exited) or the time ran out.
            _ => panic!(
                "{} did not start listening; its log:\n{}",
                program.display(),
                process.logs()
            ),
        }
        process
    }

    /// Starts the program without waiting for anything (a Lambda function listens on no port:
    /// it calls the Runtime API).
    pub fn spawn(launch: Launch<'_>) -> Self {
        Self::launch(launch).0
    }

    /// The process, and the port its `listening` line will name.
    fn launch(launch: Launch<'_>) -> (Self, tokio::sync::oneshot::Receiver<u16>) {
        let mut command = Command::new(&launch.program);
        command
            .env_clear()
            .current_dir(launch.dir)
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("{} starts: {e}", launch.program.display()));
        let stderr = child.stderr.take().expect("piped stderr");
        let logs = Arc::new(Mutex::new(VecDeque::new()));
        let (port_tx, port_rx) = tokio::sync::oneshot::channel();
        let kept = logs.clone();
        let reader = std::thread::spawn(move || {
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
        let process = Self {
            child,
            port: 0,
            logs,
            reader: Some(reader),
        };
        (process, port_rx)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The latest lines it logged.
    pub fn logs(&self) -> String {
        let kept = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        kept.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// SIGKILL: no shutdown handler runs, in-flight requests and transactions are cut where
    /// they are, as when a node dies or the OOM killer strikes.
    pub fn kill(mut self) -> ExitStatus {
        self.child.kill().expect("SIGKILL is delivered");
        self.child.wait().expect("the killed process is reaped")
    }

    /// SIGTERM, as Kubernetes stops a pod; waits for the exit and returns its status with the
    /// whole log kept.
    pub fn terminate(mut self) -> (ExitStatus, String) {
        let delivered = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(delivered.success(), "SIGTERM is delivered");
        let status = self.child.wait().expect("the process is reaped");
        // The log ends when the process closes stderr: read it to the end.
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        (status, self.logs())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // Only our own child, by its handle; harmless if it has already exited.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The port of a JSON `listening` line (`{"message":"listening","port":N,...}`).
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
