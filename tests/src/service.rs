//! The `billing-service` binary as these tests run it: the environment an operator would give
//! it, no Stripe in reach, on the [`Process`] launcher shared by every test that starts a
//! service.

use std::ops::Deref;

use test_support::process::{Launch, Process};

use crate::WEBHOOK_SECRET;
use crate::binaries::{BILLING_SERVICE, binary};

pub struct Service(Process);

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
        let env = [
            ("STRIPE_API_SECRET_KEY", "sk_test_e2e"),
            ("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET),
            // Nothing here should call Stripe; if something did, it fails fast on loopback.
            ("STRIPE_API_BASE", "http://127.0.0.1:9"),
            ("DATABASE_URL", database_url),
            ("DATABASE_CONNECT_RETRY_SECS", "5"),
            ("SERVER_PORT", "0"),
            ("LOG_FORMAT", "json"),
            ("RUST_LOG", "info"),
        ];
        // A folder where no stray `.env` is read.
        let mut launch = Launch {
            program,
            dir: &std::env::temp_dir(),
            env: Vec::new(),
        };
        for (key, value) in env.iter().chain(extra_env) {
            launch = launch.env(key, value);
        }
        Self(Process::start(launch).await)
    }

    pub fn kill(self) -> std::process::ExitStatus {
        self.0.kill()
    }
}

impl Deref for Service {
    type Target = Process;

    fn deref(&self) -> &Process {
        &self.0
    }
}
