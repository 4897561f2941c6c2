//! `billing-service`: parse the command line, run it, print any error, exit non-zero on error.

use std::process::ExitCode;

use billing_service::cli::{Cli, run};
use billing_service::configuration::{LogFormat, process_env};
use billing_service::{error, telemetry};
use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    // A missing .env is normal (Kubernetes passes the environment directly).
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    match LogFormat::from_env(&process_env) {
        Ok(format) => telemetry::init(format),
        Err(e) => {
            eprintln!("billing-service: {e}");
            return ExitCode::FAILURE;
        }
    }
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            let message = error::chain(e.as_ref());
            tracing::error!(error = %message, "billing-service failed");
            eprintln!("billing-service: {message}");
            ExitCode::FAILURE
        }
    }
}
