//! The Stripe double as a standalone process, for tools that drive the built service from
//! outside Rust (`.ci/schemathesis`).
//!
//! Starts a [`StripeDouble`], seeds the catalog `stripe-setup init` provisions (one product,
//! monthly/daily/annual CAD prices with the catalog's lookup keys:
//! [`StripeDouble::seed_default_catalog`]), prints its base URL as the one line of
//! stdout, and serves until SIGTERM or Ctrl-C. On the way out it lists on stderr every request
//! Stripe would have refused, so a run can show what the service sent wrong.
//!
//! ```sh
//! cargo run -p stripe-wiremock --example serve   # prints e.g. http://127.0.0.1:41234
//! ```

use std::io::Write;

use stripe_wiremock::StripeDouble;

#[tokio::main]
async fn main() {
    let stripe = StripeDouble::start().await;
    stripe.seed_default_catalog();
    // The caller reads this line to learn the port; flush so it does not sit in a pipe buffer.
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{}", stripe.uri());
    let _ = stdout.flush();
    drop(stdout);

    shutdown_signal().await;
    let violations = stripe.violations();
    eprintln!(
        "stripe double: {} requests, {} Stripe would refuse",
        stripe.requests().len(),
        violations.len()
    );
    for violation in violations {
        eprintln!("  {violation}");
    }
}

/// SIGTERM is how the CI script (and Kubernetes-style supervisors) stop it; Ctrl-C by hand.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
