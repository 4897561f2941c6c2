//! The `stripe-setup` binary: parse, run, print the error, exit.

use std::process::ExitCode;

use clap::Parser as _;

#[tokio::main]
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
