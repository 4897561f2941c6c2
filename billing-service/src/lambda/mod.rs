//! Running as an AWS Lambda function: the same router and tables, no server.
//!
//! The Lambda runtime starts the binary with `AWS_LAMBDA_RUNTIME_API` set, and `cli` then calls
//! [`run`] instead of serving. Each invocation is one event, told apart by its shape
//! ([`Invocation::of`]):
//! - an HTTP request from API Gateway's HTTP API or a function URL (payload format 2.0) goes
//!   through the axum router, as over plain HTTP ([`http`]);
//! - EventBridge's schedule processes the stored events still due and stores the events Stripe
//!   has that never arrived ([`Function::scheduled`]);
//! - CloudFormation's custom resource applies the migrations on deploy ([`custom_resource`]).
//!
//! Lambda freezes the process between invocations, so nothing is left to a background task: the
//! webhook route processes each event before answering (`startup::Mode::Lambda`), and the pool
//! keeps at most two connections, RDS Proxy sharing the database's among instances.
//!
//! The application is built by the first invocation that needs it, and built again by the next
//! one if that failed: a database or a secret out of reach then fails one invocation with the
//! reason (503, a FAILED custom resource, an invocation error) instead of leaving an instance
//! that can never answer. The secrets are read again every five minutes, and the application
//! built anew when they changed, so a rotated secret reaches the running instances. The custom resource needs only the database, so it can migrate a
//! schema the rest refuses to run on.

pub mod custom_resource;
mod http;
pub mod secrets;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use axum::Router;
use lambda_http::request::LambdaRequest;
use lambda_http::{Context, LambdaEvent};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::configuration::{
    AuthSettings, ConfigError, DatabaseSettings, Env, Settings, process_env,
};
use crate::db::Db;
use crate::error::chain;
use crate::migrate::{MigrateError, Migrator};
use crate::startup::{self, Mode};
use crate::stripe_reader::StripeReader;
use crate::sync::{events as stripe_events, parse_since};
use crate::webhook::handlers::Handlers;
use crate::webhook::worker::Worker;
use secrets::{SecretsError, WithSecrets};

/// Set by the Lambda runtime: the address of its Runtime API.
pub const RUNTIME_API: &str = "AWS_LAMBDA_RUNTIME_API";
/// How far back each scheduled run asks Stripe for events that never arrived.
pub const SYNC_EVENTS_LOOKBACK: &str = "SYNC_EVENTS_LOOKBACK";
const DEFAULT_LOOKBACK: &str = "1h";
/// Connections per instance: one for the invocation, one for a query beside it (the tie
/// resolver's, the readiness probe's). An instance handles one invocation at a time.
const MAX_CONNECTIONS: u32 = 2;

/// Whether the Lambda runtime started this process.
pub fn requested(env: &impl Env) -> bool {
    env.get(RUNTIME_API).is_some()
}

/// Serves invocations until the runtime stops the process.
pub async fn run() -> anyhow::Result<()> {
    let function = Arc::new(Function::new(Box::new(process_env), Handlers::builtin()));
    tracing::info!("running as an AWS Lambda function");
    let handler = lambda_http::service_fn(move |event: LambdaEvent<Box<RawValue>>| {
        let function = Arc::clone(&function);
        async move { function.handle(event.payload.get(), event.context).await }
    });
    lambda_http::lambda_runtime::run(handler)
        .await
        .map_err(|e| anyhow::anyhow!(e))
        .context("the Lambda runtime loop stopped")
}

/// The kinds of event this function serves.
pub enum Invocation {
    Http(Box<LambdaRequest>),
    Scheduled,
    CustomResource(custom_resource::Request),
}

/// The fields that tell the events apart.
#[derive(Deserialize)]
struct Shape {
    #[serde(rename = "requestContext")]
    request_context: Option<serde::de::IgnoredAny>,
    source: Option<String>,
    #[serde(rename = "detail-type")]
    detail_type: Option<String>,
    #[serde(rename = "RequestType")]
    request_type: Option<serde::de::IgnoredAny>,
    #[serde(rename = "ResponseURL")]
    response_url: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, thiserror::Error)]
pub enum InvocationError {
    #[error(
        "the event is none this function serves (an API Gateway HTTP API or function URL \
         request, an EventBridge scheduled event, a CloudFormation custom resource request): {0}"
    )]
    Unknown(String),
    #[error("the HTTP event cannot be read: {0}")]
    Http(String),
    #[error("the custom resource request cannot be read: {0}")]
    CustomResource(String),
}

impl Invocation {
    /// Which event `payload` is; the error names what was expected, never the payload.
    pub fn of(payload: &str) -> Result<Self, InvocationError> {
        let shape: Shape =
            serde_json::from_str(payload).map_err(|e| InvocationError::Unknown(e.to_string()))?;
        if shape.request_context.is_some() {
            return serde_json::from_str(payload)
                .map(|request| Self::Http(Box::new(request)))
                .map_err(|e| InvocationError::Http(e.to_string()));
        }
        if shape.request_type.is_some() && shape.response_url.is_some() {
            return serde_json::from_str(payload)
                .map(Self::CustomResource)
                .map_err(|e| InvocationError::CustomResource(e.to_string()));
        }
        if shape.source.as_deref() == Some("aws.events")
            && shape.detail_type.as_deref() == Some("Scheduled Event")
        {
            return Ok(Self::Scheduled);
        }
        Err(InvocationError::Unknown(
            "no requestContext, RequestType or scheduled source".to_owned(),
        ))
    }
}

/// Why the application could not be built for an invocation.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The deployment is wrong (a variable, a secret's content): the next attempt fails too.
    #[error(transparent)]
    Misconfigured(anyhow::Error),
    /// The database or the secrets are out of reach, or the schema is not migrated yet: the
    /// next invocation tries again.
    #[error(transparent)]
    Unavailable(anyhow::Error),
}

impl From<SecretsError> for BuildError {
    fn from(e: SecretsError) -> Self {
        match e.is_transient() {
            true => Self::Unavailable(e.into()),
            false => Self::Misconfigured(e.into()),
        }
    }
}

impl From<ConfigError> for BuildError {
    fn from(e: ConfigError) -> Self {
        Self::Misconfigured(e.into())
    }
}

/// What an invocation runs on, once built.
pub struct App {
    router: Router,
    worker: Worker,
    db: Db,
    reader: Arc<StripeReader>,
    lookback: String,
    handler_timeout: Duration,
}

/// Where a [`Function`] reads its variables: the process environment, or a test's map.
pub type Variables = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// How often an instance reads its secrets again: a rotated Stripe key or webhook secret, or a
/// new database password, reaches running instances within this. The extension caches a secret
/// for as long by default, so reading more often would gain nothing.
const SECRETS_TTL: Duration = Duration::from_secs(300);

/// The function: the environment it reads and the application it builds on first use.
pub struct Function {
    env: Variables,
    handlers: Handlers,
    secrets_ttl: Duration,
    current: Mutex<Option<Current>>,
}

/// The application, and the secrets it was built with.
struct Current {
    app: Arc<App>,
    secrets: HashMap<String, String>,
    /// When the secrets were last read.
    read_at: Instant,
}

impl Function {
    /// A function reading `env` (the process environment, or a test's), with `handlers`.
    pub fn new(env: Variables, handlers: Handlers) -> Self {
        Self {
            env,
            handlers,
            secrets_ttl: SECRETS_TTL,
            current: Mutex::new(None),
        }
    }

    /// Reads the secrets again after `ttl` instead of five minutes (tests).
    pub fn reading_secrets_every(mut self, ttl: Duration) -> Self {
        self.secrets_ttl = ttl;
        self
    }

    /// Answers one invocation: the JSON Lambda returns to its caller, or an invocation error.
    pub async fn handle(
        &self,
        payload: &str,
        context: Context,
    ) -> Result<Value, lambda_http::Error> {
        match Invocation::of(payload) {
            Ok(Invocation::Http(request)) => {
                Ok(http::answer(self.app().await.as_deref(), *request, context).await)
            }
            Ok(Invocation::Scheduled) => Ok(self.scheduled(deadline_of(&context)).await?),
            Ok(Invocation::CustomResource(request)) => {
                self.custom_resource(&request).await?;
                Ok(json!({}))
            }
            Err(e) => {
                tracing::error!(error = %e, "unrecognised invocation");
                Err(e.into())
            }
        }
    }

    /// The application: built by the first invocation that needs it (again after a failure),
    /// and built anew when its secrets have changed, read at most every `secrets_ttl`. A secret
    /// that cannot be read again, or a new one the function cannot be set up with, leaves the
    /// previous application serving. Failures are logged here, once each.
    async fn app(&self) -> Result<Arc<App>, BuildError> {
        let mut current = self.current.lock().await;
        if let Some(current) = current.as_mut() {
            if current.read_at.elapsed() < self.secrets_ttl {
                return Ok(Arc::clone(&current.app));
            }
            current.read_at = Instant::now();
            match secrets::read(&self.env).await {
                Ok(fresh) if fresh == current.secrets => {}
                Ok(fresh) => match self.build(&fresh).await {
                    Ok(app) => {
                        tracing::info!(
                            "the secrets changed: the function is set up with the new ones"
                        );
                        current.app = Arc::new(app);
                        current.secrets = fresh;
                    }
                    Err(e) => tracing::error!(
                        error = %chain(&e),
                        "the secrets changed, but the function cannot be set up with them; the \
                         previous ones stay in use"
                    ),
                },
                Err(e) => tracing::warn!(
                    error = %chain(&e),
                    "cannot read the secrets again; those read before stay in use"
                ),
            }
            return Ok(Arc::clone(&current.app));
        }
        let built = async {
            let secrets = secrets::read(&self.env).await?;
            let app = self.build(&secrets).await?;
            Ok::<_, BuildError>((secrets, app))
        }
        .await;
        match built {
            Ok((secrets, app)) => {
                let app = Arc::new(app);
                *current = Some(Current {
                    app: Arc::clone(&app),
                    secrets,
                    read_at: Instant::now(),
                });
                Ok(app)
            }
            Err(e) => {
                tracing::error!(error = %chain(&e), "cannot set the function up for this invocation");
                Err(e)
            }
        }
    }

    async fn build(&self, secrets: &HashMap<String, String>) -> Result<App, BuildError> {
        let env = WithSecrets {
            env: &self.env,
            secrets: secrets.clone(),
        };
        let mut settings = Settings::from_env(&env)?;
        check_settings(&settings).map_err(BuildError::Misconfigured)?;
        settings.database.max_connections = Some(MAX_CONNECTIONS);
        let lookback = env
            .get(SYNC_EVENTS_LOOKBACK)
            .unwrap_or_else(|| DEFAULT_LOOKBACK.to_owned());
        if let Err(why) = parse_since(&lookback, SystemTime::now()) {
            return Err(BuildError::Misconfigured(anyhow::anyhow!(
                "{SYNC_EVENTS_LOOKBACK}: {why}"
            )));
        }
        let db = Db::connect(&settings.database)
            .await
            .map_err(|e| BuildError::Unavailable(e.into()))?;
        // Migrations are the custom resource's: instances do not race to apply them on a cold
        // start, and none runs on a schema older than its code.
        match Migrator::embedded(db.engine)
            .map_err(|e| BuildError::Misconfigured(e.into()))?
            .pending_scripts(&db)
            .await
        {
            Ok(pending) if pending.is_empty() => {}
            Ok(pending) => {
                return Err(BuildError::Unavailable(anyhow::anyhow!(
                    "the database is not migrated for this version ({} pending: {}); the stack's \
                     DatabaseMigrations resource applies them on deploy",
                    pending.len(),
                    pending.join(", ")
                )));
            }
            Err(MigrateError::Database(e)) => return Err(BuildError::Unavailable(e.into())),
            // A schema ahead of this code (a stack update rolled back after migrating, or a
            // migration that failed): migrations keep the running code working, so serve, as
            // the previous version did, rather than answer 503 until the next deploy.
            Err(e) => tracing::warn!(
                error = %e,
                "the database's migration history does not match this build; serving anyway"
            ),
        }
        let handler_timeout = settings.worker.handler_timeout;
        let (state, worker, reader) =
            startup::assemble(db.clone(), settings, self.handlers.clone(), Mode::Lambda)
                .map_err(BuildError::Misconfigured)?;
        Ok(App {
            router: startup::router(state),
            worker,
            db,
            reader,
            lookback,
            handler_timeout,
        })
    }

    /// EventBridge's schedule: the stored events still due (a failed attempt's retry, a delivery
    /// whose processing was cut off), then the events Stripe has that never arrived, stored and
    /// processed in turn. Answers a summary; fails the invocation if either part failed, after
    /// doing what it could.
    async fn scheduled(&self, deadline: Option<tokio::time::Instant>) -> anyhow::Result<Value> {
        let app = self.app().await?;
        let drain_until = deadline.map(|d| {
            let left = d.saturating_duration_since(tokio::time::Instant::now());
            // Room to finish the batch under way and to answer.
            d - margin(left, app.handler_timeout)
        });
        let mut processed = app.worker.drain_until(drain_until).await?;
        let since = parse_since(&app.lookback, SystemTime::now()).map_err(anyhow::Error::msg)?;
        let types = self.handlers.event_types();
        let recovered = stripe_events::recover(&app.db, &app.reader, &types, since).await;
        if let Ok(recovered) = &recovered
            && recovered.stored > 0
        {
            processed += app.worker.drain_until(drain_until).await?;
        }
        let summary = json!({
            "processed": processed,
            "recovered": recovered.as_ref().ok(),
        });
        tracing::info!(%summary, "scheduled run done");
        match recovered {
            Ok(_) => Ok(summary),
            Err(e) => {
                tracing::error!(error = %chain(&e), "the scheduled run could not recover missed events");
                Err(anyhow::Error::new(e).context("recovering missed events (sync events)"))
            }
        }
    }

    /// CloudFormation's custom resource: migrate on Create and Update, nothing on Delete; the
    /// outcome goes to CloudFormation, and the invocation fails only if it could not be sent.
    async fn custom_resource(&self, request: &custom_resource::Request) -> anyhow::Result<()> {
        let outcome = match request.request_type {
            custom_resource::RequestType::Delete => {
                Ok("nothing: the database is kept when the stack or resource goes".to_owned())
            }
            _ => self.migrate().await.map_err(|e| {
                let reason = chain(e.as_ref());
                tracing::error!(error = %reason, "migrating for CloudFormation failed");
                reason
            }),
        };
        if let Ok(applied) = &outcome {
            tracing::info!(request_type = ?request.request_type, applied, "custom resource done");
        }
        custom_resource::respond(request, outcome).await?;
        Ok(())
    }

    async fn migrate(&self) -> anyhow::Result<String> {
        let env = WithSecrets {
            env: &self.env,
            secrets: secrets::read(&self.env).await?,
        };
        let mut settings = DatabaseSettings::from_env(&env)?;
        settings.max_connections = Some(1);
        let db = Db::connect(&settings).await?;
        let steps = Migrator::embedded(db.engine)?.migrate(&db, false).await?;
        db.pool.close().await;
        Ok(match steps.is_empty() {
            true => "nothing: the database is up to date".to_owned(),
            false => steps
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        })
    }
}

/// How long before the deadline the scheduled run stops starting batches: a handler's whole
/// timeout and a little, but never more than half of what is left.
fn margin(left: Duration, handler_timeout: Duration) -> Duration {
    (handler_timeout + Duration::from_secs(5)).min(left / 2)
}

/// The invocation's deadline (Lambda gives it in milliseconds since the epoch), as an instant;
/// none when not given.
fn deadline_of(context: &Context) -> Option<tokio::time::Instant> {
    if context.deadline == 0 {
        return None;
    }
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    let left = Duration::from_millis(context.deadline.saturating_sub(now_ms));
    Some(tokio::time::Instant::now() + left)
}

/// What Lambda cannot run: a SQLite file (it would vanish with the instance, and every instance
/// would have its own) and users named by headers (a public API Gateway lets anyone set them).
fn check_settings(settings: &Settings) -> anyhow::Result<()> {
    if settings.database.is_sqlite() {
        anyhow::bail!(
            "in Lambda the database must be PostgreSQL or MySQL (DATABASE_URL or DATABASE_ENGINE \
             and its parts): a SQLite file would be lost with the instance"
        );
    }
    if matches!(settings.auth, AuthSettings::TrustedHeaders) {
        anyhow::bail!(
            "AUTH_MODE=trusted-headers cannot be used in Lambda: behind API Gateway or a function \
             URL anyone can send x-user-id; set AUTH_MODE=jwt"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_told_apart_by_their_shape() {
        let http = r#"{"version":"2.0","routeKey":"$default","rawPath":"/status/alive","rawQueryString":"",
            "headers":{"host":"abc.lambda-url.eu-west-1.on.aws"},"isBase64Encoded":false,
            "requestContext":{"accountId":"1","apiId":"abc","domainName":"abc.lambda-url.eu-west-1.on.aws",
              "http":{"method":"GET","path":"/status/alive","protocol":"HTTP/1.1","sourceIp":"1.2.3.4","userAgent":"t"},
              "requestId":"r","routeKey":"$default","stage":"$default","time":"30/Nov/2026:19:00:00 +0000","timeEpoch":1}}"#;
        assert!(matches!(Invocation::of(http), Ok(Invocation::Http(_))));
        let schedule = r#"{"version":"0","id":"1","detail-type":"Scheduled Event","source":"aws.events",
            "account":"1","time":"2026-11-30T19:00:00Z","region":"eu-west-1","resources":[],"detail":{}}"#;
        assert!(matches!(
            Invocation::of(schedule),
            Ok(Invocation::Scheduled)
        ));
        let resource = r#"{"RequestType":"Create","ResponseURL":"https://example.com/r","StackId":"s",
            "RequestId":"q","LogicalResourceId":"DatabaseMigrations","ResourceType":"Custom::DatabaseMigrations"}"#;
        assert!(matches!(
            Invocation::of(resource),
            Ok(Invocation::CustomResource(_))
        ));
        for unknown in [
            r#"{"source":"aws.s3","detail-type":"Object Created"}"#,
            r#"{"Records":[]}"#,
            r#"[1,2]"#,
            r#"{"RequestType":"Create"}"#,
        ] {
            assert!(
                matches!(Invocation::of(unknown), Err(InvocationError::Unknown(_))),
                "{unknown}"
            );
        }
        // The right shape with wrong contents says which part could not be read.
        assert!(matches!(
            Invocation::of(r#"{"requestContext":{"http":"GET"}}"#),
            Err(InvocationError::Http(_))
        ));
    }

    #[test]
    fn the_scheduled_run_stops_in_time() {
        let timeout = Duration::from_secs(30);
        assert_eq!(
            margin(Duration::from_secs(300), timeout),
            Duration::from_secs(35)
        );
        assert_eq!(
            margin(Duration::from_secs(20), timeout),
            Duration::from_secs(10)
        );
    }
}
