//! The `stripe-setup` binary: parse, run, print the error, exit.

use std::process::ExitCode;

use clap::Parser as _;

// One thread: the commands make their calls one after another, and as a load generator
// (`trigger --count`) it then takes at most one core from the server it measures.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = stripe_setup::cli::Cli::parse();
    match stripe_setup::run(cli).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("stripe-setup: {error:#}");
            ExitCode::FAILURE
        }
    }
}
