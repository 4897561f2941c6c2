//! Writing out a new webhook endpoint's signing secret.
//!
//! Stripe shows the secret only in the response that creates the endpoint, so it is written the
//! moment that response arrives, in the form the deployment consumes: a `.env` line, JSON, or a
//! Kubernetes Secret manifest. A file is always left readable by its owner only, and never
//! written through a symbolic link (which could put the secret anywhere the link points).

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

/// Refuses a `--secret-file` the secret must not be written to: a symbolic link, anything but a
/// regular file, or a path whose folder does not exist. `init` checks this before any request:
/// once Stripe has created the endpoint, a failed write loses the secret.
pub fn check_destination(path: &Path) -> std::io::Result<()> {
    use std::io::{Error, ErrorKind};
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "{} is a symbolic link; the secret is never written through one",
                    path.display()
                ),
            ));
        }
        Ok(meta) if !meta.is_file() => {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("{} exists and is not a regular file", path.display()),
            ));
        }
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let folder = folder_of(path);
    if !folder.is_dir() {
        return Err(Error::new(
            ErrorKind::NotFound,
            format!("the folder {} does not exist", folder.display()),
        ));
    }
    Ok(())
}

fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Writes a new file beside `path`, created exclusively and readable by its owner only, then
/// renames it over `path`: an existing file's mode is never kept, and a link put at `path` in
/// the meantime is replaced, not followed.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    check_destination(path)?;
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other(format!("{} names no file", path.display())))?;
    let temporary = folder_of(path).join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let written = options.open(&temporary).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    let renamed = written.and_then(|()| std::fs::rename(&temporary, path));
    if renamed.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    renamed
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

    #[cfg(unix)]
    #[test]
    fn an_existing_file_is_made_private_and_a_link_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.env");
        std::fs::write(&path, "old\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write(&Destination::File(path.clone()), "new\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "an existing file's mode is not kept");

        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "untouched\n").unwrap();
        let link = dir.path().join("link.env");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let error = write(&Destination::File(link.clone()), "whsec_x\n").unwrap_err();
        assert!(error.to_string().contains("symbolic link"), "{error}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched\n");
        assert!(
            check_destination(dir.path()).is_err(),
            "a folder is refused"
        );
        assert!(check_destination(&dir.path().join("no/such/secret")).is_err());
        let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 3, "no temporary file is left behind");
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
