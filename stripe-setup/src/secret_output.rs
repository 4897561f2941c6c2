//! Writing out a new webhook endpoint's signing secret.
//!
//! Stripe shows the secret only in the response that creates the endpoint, so it is written the
//! moment that response arrives, in the form the deployment consumes: a `.env` line, JSON, or a
//! Kubernetes Secret manifest. A file is created readable by its owner only.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde_json::json;

/// The forms the secret can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SecretFormat {
    /// `STRIPE_WEBHOOK_SECRET=whsec_...`, for a `.env` file.
    Dotenv,
    /// `{"STRIPE_WEBHOOK_SECRET": ..., "webhook_endpoint_id": ..., "environment": ...}`.
    Json,
    /// A Kubernetes `Secret` named `billing-stripe-webhook`, for `kubectl apply -f`.
    K8s,
}

/// The name of the Kubernetes Secret billing-service's Deployment reads.
pub const K8S_SECRET_NAME: &str = "billing-stripe-webhook";

/// The secret in `format`, ending with a newline.
pub fn render(format: SecretFormat, secret: &str, endpoint_id: &str, environment: &str) -> String {
    match format {
        SecretFormat::Dotenv => format!("STRIPE_WEBHOOK_SECRET={secret}\n"),
        SecretFormat::Json => {
            let value = json!({
                "STRIPE_WEBHOOK_SECRET": secret,
                "webhook_endpoint_id": endpoint_id,
                "environment": environment,
            });
            format!("{value:#}\n")
        }
        SecretFormat::K8s => format!(
            "apiVersion: v1\n\
             kind: Secret\n\
             metadata:\n  \
               name: {K8S_SECRET_NAME}\n  \
               labels:\n    \
                 app.kubernetes.io/name: billing\n    \
                 app.kubernetes.io/managed-by: stripe-setup\n  \
               annotations:\n    \
                 stripe.com/webhook-endpoint: {endpoint_id}\n    \
                 billing/environment: {environment}\n\
             type: Opaque\n\
             stringData:\n  \
               STRIPE_WEBHOOK_SECRET: {secret}\n"
        ),
    }
}

/// Where the secret goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Stdout,
    File(PathBuf),
}

/// Writes the rendered secret; returns where, in words, for the progress message.
pub fn write(destination: &Destination, text: &str) -> std::io::Result<String> {
    match destination {
        Destination::Stdout => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            out.flush()?;
            Ok("standard output".to_owned())
        }
        Destination::File(path) => {
            write_private(path, text.as_bytes())?;
            Ok(path.display().to_string())
        }
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_format_carries_the_secret() {
        assert_eq!(
            render(SecretFormat::Dotenv, "whsec_a", "we_1", "stage"),
            "STRIPE_WEBHOOK_SECRET=whsec_a\n"
        );
        let json: serde_json::Value =
            serde_json::from_str(&render(SecretFormat::Json, "whsec_a", "we_1", "stage")).unwrap();
        assert_eq!(json["STRIPE_WEBHOOK_SECRET"], "whsec_a");
        assert_eq!(json["webhook_endpoint_id"], "we_1");
        let k8s = render(SecretFormat::K8s, "whsec_a", "we_1", "stage");
        assert!(k8s.contains("kind: Secret\n"));
        assert!(k8s.contains("\n  name: billing-stripe-webhook\n"));
        assert!(
            k8s.ends_with("stringData:\n  STRIPE_WEBHOOK_SECRET: whsec_a\n"),
            "{k8s}"
        );
    }

    #[test]
    fn files_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.env");
        write(&Destination::File(path.clone()), "x\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "x\n");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
    }
}
