//! Typed configuration, read from the environment (and `.env`, loaded by `main`).
//!
//! Every variable is checked before anything starts, and all problems are reported together:
//! an operator fixing a Deployment should not have to restart it once per typo. Secrets live in
//! [`SecretString`], whose `Debug` is redacted, so printing a [`Settings`] never leaks them.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use billing_stripe::SecretKey;
use billing_stripe::catalog::Catalog;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use secrecy::{ExposeSecret, SecretString};
use url::Url;

/// Everything `billing-service serve` needs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub stripe: StripeSettings,
    /// Where the browser is sent after Checkout.
    pub frontend_url: Url,
    /// This service's public URL; Checkout's success and cancel URLs point here.
    pub backend_url: Url,
    pub http: HttpSettings,
    pub auth: AuthSettings,
    /// Reported by `/status/about`, so an operator can tell replicas apart.
    pub pod_name: String,
    pub worker: WorkerSettings,
}

/// Where the service listens and how long a client may take (`SERVER_HOST`, `SERVER_PORT`,
/// `HTTP_*`): every limit that keeps slow or numerous clients from holding the process.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Loopback by default, so a local run is not reachable from the network; the image
    /// listens on every interface.
    pub host: IpAddr,
    pub port: u16,
    /// From accepting a connection (or the end of its previous request) to a request's last
    /// header line.
    pub header_read_timeout: Duration,
    /// The longest pause between two parts of a request body.
    pub body_read_timeout: Duration,
    /// From the request's headers to the response, body read included.
    pub request_timeout: Duration,
    /// Requests handled at once beyond the status routes; more are answered 503 at once.
    pub max_in_flight: usize,
}

/// Who the user is: `AUTH_MODE`.
#[derive(Debug, Clone)]
pub enum AuthSettings {
    /// `x-user-id` / `x-user-email`, set by the auth proxy, which alone may reach the service.
    TrustedHeaders,
    /// A bearer JWT verified against the issuer's published keys.
    Jwt(JwtSettings),
}

impl AuthSettings {
    /// The `AUTH_MODE` value, for logs.
    pub fn mode(&self) -> &'static str {
        match self {
            Self::TrustedHeaders => "trusted-headers",
            Self::Jwt(_) => "jwt",
        }
    }
}

#[derive(Debug, Clone)]
pub struct JwtSettings {
    /// The issuer's JWKS: https, or http on a loopback address (local runs and tests).
    pub jwks_url: Url,
    pub issuer: String,
    pub audience: String,
    /// The claim holding our user id (`sub` unless `AUTH_USER_CLAIM` says otherwise).
    pub user_claim: String,
    /// A token naming an unknown key refetches the key set at most this often, so forged key
    /// ids cannot make the service hammer the issuer.
    pub jwks_min_refresh: Duration,
}

/// How the webhook worker retries and batches (`WEBHOOK_MAX_ATTEMPTS`, `WEBHOOK_RETRY_BASE_MS`;
/// the rest are fixed defaults that tests shorten).
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Tries before an event is parked as `failed`.
    pub max_attempts: u32,
    /// First retry delay; doubled per attempt, with jitter, up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// How often to look for events stored by other replicas.
    pub poll_interval: Duration,
    /// How long to let events gather after a wake-up before claiming them: under load, one
    /// batch of many costs the database far less than many batches of one or two.
    pub batch_window: Duration,
    pub batch_size: u32,
    /// The longest one handler may take for one event before the attempt counts as failed.
    pub handler_timeout: Duration,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(600),
            poll_interval: Duration::from_millis(250),
            batch_window: Duration::from_millis(20),
            batch_size: 256,
            handler_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone)]
pub struct StripeSettings {
    pub api_secret_key: SecretKey,
    /// Several at once while a secret is being rolled: a delivery signed by any of them is valid.
    pub webhook_secrets: Vec<SecretString>,
    pub api_base: Url,
    pub webhook_tolerance: Duration,
    /// Per attempt; retried attempts each get this long.
    pub timeout: Duration,
    /// What is sold: the catalog's lookup keys name the product whose prices are listed.
    pub catalog: Catalog,
    /// How long `GET /billing/products` serves a list before asking Stripe again.
    pub products_cache: Duration,
}

/// Far above any query of the service (they take milliseconds), far below a stuck one.
const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct DatabaseSettings {
    /// The whole URL, password included, hence secret.
    pub url: SecretString,
    /// How long start-up keeps trying to reach the database before giving up.
    pub connect_retry: Duration,
    /// The longest a statement may run on PostgreSQL (`statement_timeout`); zero for no limit.
    /// A stuck query then fails and frees its connection instead of holding it for ever.
    pub statement_timeout: Duration,
    /// The pool's size; the engine's default when `None`. Lambda sets it low: every instance
    /// holds its own pool, and hundreds of instances must not exhaust the database.
    pub max_connections: Option<u32>,
}

impl fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &self.display_target())
            .field("connect_retry", &self.connect_retry)
            .field("statement_timeout", &self.statement_timeout)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

impl DatabaseSettings {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: SecretString::from(url.into()),
            connect_retry: Duration::from_secs(10),
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
            max_connections: None,
        }
    }

    pub fn is_sqlite(&self) -> bool {
        self.url.expose_secret().starts_with("sqlite:")
    }

    /// Whether the URL names a MySQL or MariaDB server.
    pub fn is_mysql(&self) -> bool {
        is_mysql_url(self.url.expose_secret())
    }

    /// The URL without its password, for logs and error messages.
    pub fn display_target(&self) -> String {
        match Url::parse(self.url.expose_secret()) {
            Ok(mut url) => {
                if url.password().is_some() {
                    // Only fails for URLs that cannot have a password, which this one has.
                    let _ = url.set_password(Some("***"));
                }
                url.to_string()
            }
            Err(_) => "<unparseable database URL>".to_owned(),
        }
    }

    /// Host and port, as named in "cannot reach the database" errors.
    pub fn host_and_port(&self) -> String {
        match Url::parse(self.url.expose_secret()) {
            Ok(url) if url.scheme() != "sqlite" => format!(
                "{}:{}",
                url.host_str().unwrap_or("localhost"),
                url.port().unwrap_or(if self.is_mysql() {
                    MYSQL_PORT
                } else {
                    POSTGRES_PORT
                })
            ),
            _ => self.display_target(),
        }
    }
}

/// All the problems found in the environment, one per line.
#[derive(Debug)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl std::error::Error for ConfigError {}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration:")?;
        for problem in &self.problems {
            write!(f, "\n  - {problem}")?;
        }
        Ok(())
    }
}

/// Reads variables through a function so that tests can pass a map instead of mutating the
/// process environment.
pub trait Env {
    fn get(&self, key: &str) -> Option<String>;
}

impl<F: Fn(&str) -> Option<String>> Env for F {
    fn get(&self, key: &str) -> Option<String> {
        self(key)
    }
}

/// The real process environment; empty values count as unset, as shells and ConfigMaps often
/// produce them.
pub fn process_env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.trim().is_empty())
}

/// Collects problems while reading, so that one pass reports them all.
struct Reader<'a, E: Env> {
    env: &'a E,
    problems: Vec<String>,
}

impl<E: Env> Reader<'_, E> {
    fn optional(&self, key: &str) -> Option<String> {
        self.env.get(key).filter(|v| !v.trim().is_empty())
    }

    fn parsed<T, P>(&mut self, key: &str, default: T, parse: P) -> T
    where
        P: FnOnce(&str) -> Result<T, String>,
    {
        match self.optional(key) {
            None => default,
            Some(raw) => parse(raw.trim()).unwrap_or_else(|why| {
                self.problems.push(format!("{key} {why}"));
                default
            }),
        }
    }

    /// A whole number of seconds; `0` allowed only where it means something.
    fn secs(&mut self, key: &str, default: Duration, zero_allowed: bool) -> Duration {
        let secs = self.parsed(key, default.as_secs(), |raw| {
            raw.parse::<u64>()
                .ok()
                .filter(|n| zero_allowed || *n > 0)
                .ok_or_else(|| match zero_allowed {
                    true => "must be a whole number of seconds".to_owned(),
                    false => "must be a whole number of seconds above 0".to_owned(),
                })
        });
        Duration::from_secs(secs)
    }

    fn required(&mut self, key: &str, why: &str) -> String {
        self.optional(key)
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| {
                self.problems.push(format!("{key} is required {why}"));
                String::new()
            })
    }

    fn url(&mut self, key: &str, default: &str) -> Url {
        let fallback = Url::parse(default).expect("built-in default URLs parse");
        self.parsed(key, fallback, |raw| match Url::parse(raw) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(url),
            Ok(_) => Err("must be an http:// or https:// URL".to_owned()),
            Err(e) => Err(format!("is not a valid URL ({e})")),
        })
    }
}

impl DatabaseSettings {
    pub fn from_env(env: &impl Env) -> Result<Self, ConfigError> {
        let mut reader = Reader {
            env,
            problems: Vec::new(),
        };
        let settings = Self::read(&mut reader);
        match reader.problems.is_empty() {
            true => Ok(settings),
            false => Err(ConfigError {
                problems: reader.problems,
            }),
        }
    }

    fn read<E: Env>(reader: &mut Reader<'_, E>) -> Self {
        let connect_retry =
            reader.secs("DATABASE_CONNECT_RETRY_SECS", Duration::from_secs(10), true);
        let statement_timeout_secs = reader.parsed(
            "DATABASE_STATEMENT_TIMEOUT_SECS",
            DEFAULT_STATEMENT_TIMEOUT.as_secs(),
            |raw| {
                raw.parse::<u64>()
                    .map_err(|_| "must be a whole number of seconds (0: no limit)".to_owned())
            },
        );
        let url = match reader.optional("DATABASE_URL") {
            Some(url) => match validate_database_url(url.trim()) {
                Ok(()) => url.trim().to_owned(),
                Err(why) => {
                    reader.problems.push(format!("DATABASE_URL {why}"));
                    String::new()
                }
            },
            None => url_from_parts(reader).unwrap_or_else(|| "sqlite://billing.db".to_owned()),
        };
        let url = with_tls(reader, url);
        Self {
            url: SecretString::from(url),
            connect_retry,
            statement_timeout: Duration::from_secs(statement_timeout_secs),
            max_connections: None,
        }
    }
}

const POSTGRES_PORT: u16 = 5432;
const MYSQL_PORT: u16 = 3306;

fn is_mysql_url(url: &str) -> bool {
    url.starts_with("mysql:") || url.starts_with("mariadb:")
}

fn validate_database_url(raw: &str) -> Result<(), String> {
    // Never echo the URL back: it may hold a password.
    let url = Url::parse(raw).map_err(|e| format!("is not a valid URL ({e})"))?;
    match url.scheme() {
        "postgres" | "postgresql" | "mysql" | "mariadb" => {
            if url.host_str().is_none_or(str::is_empty) {
                return Err("has no host".to_owned());
            }
            Ok(())
        }
        "sqlite" => Ok(()),
        other => Err(format!(
            "has the unsupported scheme '{other}' (expected postgres://, mysql:// or sqlite://)"
        )),
    }
}

/// PostgreSQL's `sslmode` values, weakest first.
const SSL_MODES: [&str; 6] = [
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];

/// MySQL's names (`ssl-mode`) for PostgreSQL's `sslmode` values: one variable for both engines.
fn mysql_ssl_mode(mode: &str) -> &'static str {
    match mode {
        "disable" => "DISABLED",
        "allow" | "prefer" => "PREFERRED",
        "require" => "REQUIRED",
        "verify-ca" => "VERIFY_CA",
        _ => "VERIFY_IDENTITY",
    }
}

/// `DATABASE_SSLMODE` and `DATABASE_SSL_ROOT_CERT` put into the database URL (over any
/// `sslmode`/`sslrootcert` it has; for MySQL as `ssl-mode`/`ssl-ca`). A root certificate without
/// a mode means `verify-full`: a certificate is only given to be checked against.
fn with_tls<E: Env>(reader: &mut Reader<'_, E>, url: String) -> String {
    let mode = reader
        .optional("DATABASE_SSLMODE")
        .map(|m| m.trim().to_owned());
    let root = reader
        .optional("DATABASE_SSL_ROOT_CERT")
        .map(|r| r.trim().to_owned());
    if (mode.is_none() && root.is_none()) || url.is_empty() {
        return url;
    }
    if url.starts_with("sqlite:") {
        reader.problems.push(
            "DATABASE_SSLMODE and DATABASE_SSL_ROOT_CERT apply to PostgreSQL and MySQL only"
                .to_owned(),
        );
        return url;
    }
    let mode = mode.unwrap_or_else(|| "verify-full".to_owned());
    if !SSL_MODES.contains(&mode.as_str()) {
        reader.problems.push(format!(
            "DATABASE_SSLMODE must be one of {}",
            SSL_MODES.join(", ")
        ));
        return url;
    }
    if let Some(root) = &root
        && let Err(e) = std::fs::File::open(root)
    {
        reader
            .problems
            .push(format!("DATABASE_SSL_ROOT_CERT {root} cannot be read: {e}"));
        return url;
    }
    let Ok(mut parsed) = Url::parse(&url) else {
        return url; // already reported
    };
    let (mode_key, root_key, mode) = if is_mysql_url(&url) {
        ("ssl-mode", "ssl-ca", mysql_ssl_mode(&mode))
    } else {
        ("sslmode", "sslrootcert", mode.as_str())
    };
    let kept: Vec<(String, String)> = parsed
        .query_pairs()
        .filter(|(k, _)| !["sslmode", "sslrootcert", "ssl-mode", "ssl-ca", "sslca"].contains(&&**k))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    {
        let mut query = parsed.query_pairs_mut();
        query.clear().extend_pairs(kept).append_pair(mode_key, mode);
        if let Some(root) = &root {
            query.append_pair(root_key, root);
        }
    }
    parsed.to_string()
}

/// Userinfo and path segments must be percent-encoded: passwords generated by a secrets manager
/// contain `@`, `/` and `:`.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The Kubernetes ConfigMap + Secret form: `DATABASE_ENGINE`, `_HOST`, `_PORT`, `_NAME`,
/// `_USERNAME`, `_PASSWORD`. `None` when none of them is set.
fn url_from_parts<E: Env>(reader: &mut Reader<'_, E>) -> Option<String> {
    const PARTS: [&str; 6] = [
        "DATABASE_ENGINE",
        "DATABASE_HOST",
        "DATABASE_PORT",
        "DATABASE_NAME",
        "DATABASE_USERNAME",
        "DATABASE_PASSWORD",
    ];
    let values: [Option<String>; 6] = PARTS.map(|k| reader.optional(k));
    if values.iter().all(Option::is_none) {
        return None;
    }
    let (scheme, default_port) = match values[0].as_deref().map(str::trim).unwrap_or("") {
        "postgres" | "postgresql" | "" => ("postgres", POSTGRES_PORT),
        "mysql" | "mariadb" => ("mysql", MYSQL_PORT),
        other => {
            reader.problems.push(format!(
                "DATABASE_ENGINE '{other}' is not supported (expected postgres or mysql)"
            ));
            return Some(String::new());
        }
    };
    let missing: Vec<&str> = PARTS
        .iter()
        .zip(&values)
        .filter(|(k, v)| v.is_none() && **k != "DATABASE_PORT")
        .map(|(k, _)| *k)
        .collect();
    if !missing.is_empty() {
        reader.problems.push(format!(
            "DATABASE_URL is unset and the database parts are incomplete: {} missing",
            missing.join(", ")
        ));
        return Some(String::new());
    }
    let port = reader.parsed("DATABASE_PORT", default_port, |raw| {
        raw.parse::<u16>()
            .map_err(|_| "must be a port number (1-65535)".to_owned())
    });
    let [_, host, _, name, user, password] = values.map(Option::unwrap_or_default);
    let enc = |s: &str| utf8_percent_encode(s.trim(), COMPONENT).to_string();
    Some(format!(
        "{scheme}://{}:{}@{}:{port}/{}",
        enc(&user),
        enc(&password),
        host.trim(),
        enc(&name)
    ))
}

impl Settings {
    pub fn from_env(env: &impl Env) -> Result<Self, ConfigError> {
        let mut reader = Reader {
            env,
            problems: Vec::new(),
        };
        let database = DatabaseSettings::read(&mut reader);
        let api = StripeApiSettings::read(&mut reader);
        let webhook_secrets = match reader.optional("STRIPE_WEBHOOK_SECRET") {
            None => {
                reader.problems.push(
                    "STRIPE_WEBHOOK_SECRET is required (whsec_..., comma-separated for rotation)"
                        .into(),
                );
                Vec::new()
            }
            Some(raw) => {
                let secrets: Vec<&str> = raw.split(',').map(str::trim).collect();
                if secrets
                    .iter()
                    .any(|s| !s.starts_with("whsec_") || s.len() <= "whsec_".len())
                {
                    reader.problems.push(
                        "STRIPE_WEBHOOK_SECRET must be one or more whsec_... secrets separated by commas"
                            .into(),
                    );
                }
                secrets
                    .into_iter()
                    .map(|s| SecretString::from(s.to_owned()))
                    .collect()
            }
        };
        let webhook_tolerance = reader.secs(
            "STRIPE_WEBHOOK_TOLERANCE_SECS",
            Duration::from_secs(300),
            true,
        );
        let products_cache = reader.secs("PRODUCTS_CACHE_SECS", Duration::from_secs(60), true);
        let catalog = match reader.optional("CATALOG_FILE") {
            None => Catalog::builtin(),
            Some(path) => Catalog::load(std::path::Path::new(path.trim())).unwrap_or_else(|e| {
                reader.problems.push(format!("CATALOG_FILE: {e}"));
                Catalog::builtin()
            }),
        };
        let frontend_url = reader.url("FRONTEND_URL", "http://localhost:3000");
        let backend_url = reader.url("BACKEND_URL", "http://localhost:8080");
        let http = HttpSettings::read(&mut reader);
        let auth = AuthSettings::read(&mut reader);
        let defaults = WorkerSettings::default();
        let max_attempts = reader.parsed("WEBHOOK_MAX_ATTEMPTS", defaults.max_attempts, |raw| {
            raw.parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| "must be a whole number above 0".to_owned())
        });
        let retry_base_ms = reader.parsed("WEBHOOK_RETRY_BASE_MS", 1000u64, |raw| {
            raw.parse::<u64>()
                .map_err(|_| "must be a whole number of milliseconds".to_owned())
        });
        let handler_timeout = reader.secs(
            "WEBHOOK_HANDLER_TIMEOUT_SECS",
            defaults.handler_timeout,
            false,
        );
        let pod_name = reader
            .optional("POD_NAME")
            .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned());
        let (Some(api), true) = (api, reader.problems.is_empty()) else {
            return Err(ConfigError {
                problems: reader.problems,
            });
        };
        Ok(Self {
            database,
            stripe: StripeSettings {
                api_secret_key: api.api_secret_key,
                webhook_secrets,
                api_base: api.api_base,
                webhook_tolerance,
                timeout: api.timeout,
                catalog,
                products_cache,
            },
            frontend_url,
            backend_url,
            http,
            auth,
            pod_name,
            worker: WorkerSettings {
                max_attempts,
                retry_base: Duration::from_millis(retry_base_ms),
                handler_timeout,
                ..defaults
            },
        })
    }
}

/// What a command that only reads Stripe's API needs (`sync`): no webhook secret, no server.
#[derive(Debug, Clone)]
pub struct StripeApiSettings {
    pub api_secret_key: SecretKey,
    pub api_base: Url,
    /// Per attempt.
    pub timeout: Duration,
}

impl StripeApiSettings {
    pub fn from_env(env: &impl Env) -> Result<Self, ConfigError> {
        let mut reader = Reader {
            env,
            problems: Vec::new(),
        };
        match (Self::read(&mut reader), reader.problems.is_empty()) {
            (Some(settings), true) => Ok(settings),
            _ => Err(ConfigError {
                problems: reader.problems,
            }),
        }
    }

    /// `None` (with the problem noted) without a usable key.
    fn read<E: Env>(reader: &mut Reader<'_, E>) -> Option<Self> {
        let api_secret_key = match reader.optional("STRIPE_API_SECRET_KEY") {
            None => {
                reader
                    .problems
                    .push("STRIPE_API_SECRET_KEY is required (sk_test_... or sk_live_...)".into());
                None
            }
            Some(key) => SecretKey::parse(&key)
                .map_err(|e| reader.problems.push(format!("STRIPE_API_SECRET_KEY: {e}")))
                .ok(),
        };
        let api_base = reader.url("STRIPE_API_BASE", "https://api.stripe.com");
        let timeout = reader.secs("STRIPE_TIMEOUT_SECS", Duration::from_secs(10), false);
        Some(Self {
            api_secret_key: api_secret_key?,
            api_base,
            timeout,
        })
    }
}

impl HttpSettings {
    fn read<E: Env>(reader: &mut Reader<'_, E>) -> Self {
        let host = reader.parsed("SERVER_HOST", IpAddr::V4(Ipv4Addr::LOCALHOST), |raw| {
            raw.parse::<IpAddr>()
                .map_err(|_| "must be an IP address (0.0.0.0 for every interface)".to_owned())
        });
        let port_key = match reader.optional("SERVER_PORT") {
            Some(_) => "SERVER_PORT",
            None => "PORT",
        };
        let port = reader.parsed(port_key, 8080u16, |raw| {
            raw.parse::<u16>()
                .map_err(|_| "must be a port number (0-65535)".to_owned())
        });
        let max_in_flight = reader.parsed("HTTP_MAX_IN_FLIGHT", 512usize, |raw| {
            raw.parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| "must be a whole number above 0".to_owned())
        });
        Self {
            host,
            port,
            header_read_timeout: reader.secs(
                "HTTP_HEADER_READ_TIMEOUT_SECS",
                Duration::from_secs(10),
                false,
            ),
            body_read_timeout: reader.secs(
                "HTTP_BODY_READ_TIMEOUT_SECS",
                Duration::from_secs(10),
                false,
            ),
            request_timeout: reader.secs(
                "HTTP_REQUEST_TIMEOUT_SECS",
                Duration::from_secs(30),
                false,
            ),
            max_in_flight,
        }
    }
}

impl AuthSettings {
    fn read<E: Env>(reader: &mut Reader<'_, E>) -> Self {
        match reader.optional("AUTH_MODE").as_deref().map(str::trim) {
            None | Some("trusted-headers") => Self::TrustedHeaders,
            Some("jwt") => Self::Jwt(JwtSettings::read(reader)),
            Some(_) => {
                reader
                    .problems
                    .push("AUTH_MODE must be jwt or trusted-headers".to_owned());
                Self::TrustedHeaders
            }
        }
    }
}

impl JwtSettings {
    fn read<E: Env>(reader: &mut Reader<'_, E>) -> Self {
        let fallback = Url::parse("https://invalid.example/").expect("a valid URL");
        let jwks_url = match reader.optional("AUTH_JWKS_URL") {
            None => {
                reader.problems.push(
                    "AUTH_JWKS_URL is required with AUTH_MODE=jwt (the issuer's JWKS, https://...)"
                        .to_owned(),
                );
                fallback
            }
            Some(raw) => match Url::parse(raw.trim()) {
                Ok(url) if url.scheme() == "https" || is_loopback_http(&url) => url,
                Ok(_) => {
                    reader.problems.push(
                        "AUTH_JWKS_URL must be https:// (http:// only on a loopback address)"
                            .to_owned(),
                    );
                    fallback
                }
                Err(e) => {
                    reader
                        .problems
                        .push(format!("AUTH_JWKS_URL is not a valid URL ({e})"));
                    fallback
                }
            },
        };
        Self {
            jwks_url,
            issuer: reader.required("AUTH_ISSUER", "with AUTH_MODE=jwt (the tokens' iss)"),
            audience: reader.required("AUTH_AUDIENCE", "with AUTH_MODE=jwt (the tokens' aud)"),
            user_claim: reader
                .optional("AUTH_USER_CLAIM")
                .map(|v| v.trim().to_owned())
                .unwrap_or_else(|| "sub".to_owned()),
            jwks_min_refresh: reader.secs(
                "AUTH_JWKS_MIN_REFRESH_SECS",
                Duration::from_secs(60),
                true,
            ),
        }
    }
}

/// Plain http is only acceptable where no network is crossed.
fn is_loopback_http(url: &Url) -> bool {
    url.scheme() == "http"
        && match url.host() {
            Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        }
}

/// Logging is configured before the rest, so that configuration errors are logged in the
/// operator's chosen format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

impl LogFormat {
    pub fn from_env(env: &impl Env) -> Result<Self, ConfigError> {
        match env.get("LOG_FORMAT").as_deref().map(str::trim) {
            None | Some("") | Some("json") => Ok(Self::Json),
            Some("pretty") => Ok(Self::Pretty),
            Some(_) => Err(ConfigError {
                problems: vec!["LOG_FORMAT must be json or pretty".into()],
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| map.get(k).cloned()
    }

    const MINIMAL: [(&str, &str); 2] = [
        ("STRIPE_API_SECRET_KEY", "sk_test_abc"),
        ("STRIPE_WEBHOOK_SECRET", "whsec_abc"),
    ];

    #[test]
    fn defaults_follow_the_contract() {
        let s = Settings::from_env(&env(&MINIMAL)).unwrap();
        assert_eq!(s.http.port, 8080);
        assert_eq!(s.database.url.expose_secret(), "sqlite://billing.db");
        assert_eq!(s.frontend_url.as_str(), "http://localhost:3000/");
        assert_eq!(s.backend_url.as_str(), "http://localhost:8080/");
        assert_eq!(s.stripe.api_base.as_str(), "https://api.stripe.com/");
        assert_eq!(s.stripe.webhook_tolerance, Duration::from_secs(300));
        assert_eq!(s.stripe.webhook_secrets.len(), 1);
        assert_eq!(s.database.statement_timeout, Duration::from_secs(30));
    }

    #[test]
    fn tls_settings_go_into_the_postgres_url_and_bad_ones_are_named() {
        let root = tempfile::NamedTempFile::new().unwrap();
        let root_path = root.path().to_str().unwrap();
        let mut pairs = MINIMAL.to_vec();
        pairs.extend([
            (
                "DATABASE_URL",
                "postgres://u:p@db:5432/billing?sslmode=disable&application_name=x",
            ),
            ("DATABASE_SSL_ROOT_CERT", root_path),
        ]);
        let s = Settings::from_env(&env(&pairs)).unwrap();
        let url = Url::parse(s.database.url.expose_secret()).unwrap();
        let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert_eq!(
            query,
            [
                ("application_name".to_owned(), "x".to_owned()),
                ("sslmode".to_owned(), "verify-full".to_owned()),
                ("sslrootcert".to_owned(), root_path.to_owned()),
            ]
        );

        let mut bad = MINIMAL.to_vec();
        bad.extend([
            ("DATABASE_URL", "postgres://u:p@db:5432/billing"),
            ("DATABASE_SSLMODE", "verify-everything"),
        ]);
        let err = Settings::from_env(&env(&bad)).unwrap_err().to_string();
        assert!(err.contains("DATABASE_SSLMODE must be one of"), "{err}");
        let mut missing = MINIMAL.to_vec();
        missing.extend([
            ("DATABASE_URL", "postgres://u:p@db:5432/billing"),
            ("DATABASE_SSL_ROOT_CERT", "/no/such/ca.pem"),
        ]);
        let err = Settings::from_env(&env(&missing)).unwrap_err().to_string();
        assert!(
            err.contains("DATABASE_SSL_ROOT_CERT /no/such/ca.pem cannot be read"),
            "{err}"
        );
        let mut sqlite = MINIMAL.to_vec();
        sqlite.push(("DATABASE_SSLMODE", "require"));
        let err = Settings::from_env(&env(&sqlite)).unwrap_err().to_string();
        assert!(err.contains("apply to PostgreSQL and MySQL only"), "{err}");
    }

    #[test]
    fn the_statement_timeout_is_read_and_checked() {
        let mut pairs = MINIMAL.to_vec();
        pairs.push(("DATABASE_STATEMENT_TIMEOUT_SECS", "5"));
        let s = Settings::from_env(&env(&pairs)).unwrap();
        assert_eq!(s.database.statement_timeout, Duration::from_secs(5));
        pairs.push(("DATABASE_STATEMENT_TIMEOUT_SECS", "soon"));
        let err = Settings::from_env(&env(&pairs[pairs.len() - 1..]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("DATABASE_STATEMENT_TIMEOUT_SECS must be"),
            "{err}"
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = Settings::from_env(&env(&[
            ("STRIPE_WEBHOOK_SECRET", "nope"),
            ("SERVER_PORT", "eighty"),
            ("DATABASE_URL", "oracle://x"),
            ("FRONTEND_URL", "not a url"),
        ]))
        .unwrap_err();
        let text = err.to_string();
        for needle in [
            "STRIPE_API_SECRET_KEY is required",
            "STRIPE_WEBHOOK_SECRET must be",
            "SERVER_PORT must be a port",
            "DATABASE_URL has the unsupported scheme 'oracle'",
            "FRONTEND_URL is not a valid URL",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
        }
        assert_eq!(err.problems.len(), 5);
    }

    #[test]
    fn secrets_never_show_in_debug_or_errors() {
        let s = Settings::from_env(&env(&[
            ("STRIPE_API_SECRET_KEY", "sk_test_topsecret"),
            ("STRIPE_WEBHOOK_SECRET", "whsec_one,whsec_two"),
            ("DATABASE_URL", "postgres://u:hunter2@db:5432/billing"),
        ]))
        .unwrap();
        let debug = format!("{s:?}");
        for secret in ["topsecret", "whsec_one", "whsec_two", "hunter2"] {
            assert!(!debug.contains(secret), "{secret} leaked: {debug}");
        }
        assert_eq!(s.stripe.webhook_secrets.len(), 2);
        assert_eq!(s.database.host_and_port(), "db:5432");
    }

    #[test]
    fn database_url_is_built_from_kubernetes_parts() {
        let mut pairs = MINIMAL.to_vec();
        pairs.extend([
            ("DATABASE_ENGINE", "postgres"),
            ("DATABASE_HOST", "db.internal"),
            ("DATABASE_PORT", "6543"),
            ("DATABASE_NAME", "billing"),
            ("DATABASE_USERNAME", "app"),
            ("DATABASE_PASSWORD", "p@ss/w:rd"),
        ]);
        let s = Settings::from_env(&env(&pairs)).unwrap();
        assert_eq!(
            s.database.url.expose_secret(),
            "postgres://app:p%40ss%2Fw%3Ard@db.internal:6543/billing"
        );
        assert!(!s.database.display_target().contains("p%40ss"));
    }

    #[test]
    fn mysql_url_is_built_from_parts_with_its_own_port_and_tls_names() {
        let mut pairs = MINIMAL.to_vec();
        pairs.extend([
            ("DATABASE_ENGINE", "mysql"),
            ("DATABASE_HOST", "aurora.internal"),
            ("DATABASE_NAME", "billing"),
            ("DATABASE_USERNAME", "app"),
            ("DATABASE_PASSWORD", "pw"),
            ("DATABASE_SSLMODE", "verify-full"),
        ]);
        let s = Settings::from_env(&env(&pairs)).unwrap();
        assert_eq!(
            s.database.url.expose_secret(),
            "mysql://app:pw@aurora.internal:3306/billing?ssl-mode=VERIFY_IDENTITY"
        );
        assert!(s.database.is_mysql());
        assert_eq!(s.database.host_and_port(), "aurora.internal:3306");
        let url = DatabaseSettings::new("mariadb://root@db/billing");
        assert_eq!(url.host_and_port(), "db:3306");
    }

    #[test]
    fn incomplete_parts_are_named() {
        let err =
            DatabaseSettings::from_env(&env(&[("DATABASE_HOST", "db"), ("DATABASE_PORT", "x")]))
                .unwrap_err()
                .to_string();
        assert!(err.contains("DATABASE_NAME"), "{err}");
        assert!(err.contains("DATABASE_USERNAME"), "{err}");
        assert!(err.contains("DATABASE_PASSWORD"), "{err}");
    }

    #[test]
    fn malformed_database_url_is_refused_without_echoing_it() {
        let err = DatabaseSettings::from_env(&env(&[("DATABASE_URL", "postgres://u:secret@")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("DATABASE_URL"), "{err}");
        assert!(!err.contains("secret"), "{err}");
    }

    #[test]
    fn port_falls_back_to_port_variable() {
        let mut pairs = MINIMAL.to_vec();
        pairs.push(("PORT", "9000"));
        assert_eq!(Settings::from_env(&env(&pairs)).unwrap().http.port, 9000);
    }

    #[test]
    fn auth_mode_defaults_to_trusted_headers_and_jwt_needs_its_settings() {
        let s = Settings::from_env(&env(&MINIMAL)).unwrap();
        assert!(matches!(s.auth, AuthSettings::TrustedHeaders));
        assert_eq!(s.http.host, IpAddr::V4(Ipv4Addr::LOCALHOST));

        let mut pairs = MINIMAL.to_vec();
        pairs.push(("AUTH_MODE", "jwt"));
        let err = Settings::from_env(&env(&pairs)).unwrap_err().to_string();
        for key in ["AUTH_JWKS_URL", "AUTH_ISSUER", "AUTH_AUDIENCE"] {
            assert!(err.contains(&format!("{key} is required")), "{err}");
        }

        pairs.extend([
            (
                "AUTH_JWKS_URL",
                "https://auth.example.com/.well-known/jwks.json",
            ),
            ("AUTH_ISSUER", "https://auth.example.com/"),
            ("AUTH_AUDIENCE", "billing"),
            ("AUTH_JWKS_MIN_REFRESH_SECS", "5"),
        ]);
        let AuthSettings::Jwt(jwt) = Settings::from_env(&env(&pairs)).unwrap().auth else {
            panic!("not jwt");
        };
        assert_eq!(jwt.user_claim, "sub");
        assert_eq!(jwt.jwks_min_refresh, Duration::from_secs(5));

        // Plain http only where no network is crossed.
        for (url, ok) in [
            ("http://127.0.0.1:4456/.well-known/jwks.json", true),
            ("http://localhost/jwks", true),
            ("http://[::1]:80/jwks", true),
            ("http://auth.example.com/jwks", false),
            ("http://10.0.0.5/jwks", false),
            ("ftp://auth.example.com/jwks", false),
        ] {
            // The later value of a key wins.
            let mut pairs = pairs.clone();
            pairs.push(("AUTH_JWKS_URL", url));
            assert_eq!(Settings::from_env(&env(&pairs)).is_ok(), ok, "{url}");
        }

        let mut typo = MINIMAL.to_vec();
        typo.push(("AUTH_MODE", "headers"));
        let err = Settings::from_env(&env(&typo)).unwrap_err().to_string();
        assert!(
            err.contains("AUTH_MODE must be jwt or trusted-headers"),
            "{err}"
        );
    }

    #[test]
    fn http_limits_are_read_and_checked() {
        let mut pairs = MINIMAL.to_vec();
        pairs.extend([
            ("SERVER_HOST", "0.0.0.0"),
            ("HTTP_HEADER_READ_TIMEOUT_SECS", "5"),
            ("HTTP_MAX_IN_FLIGHT", "64"),
        ]);
        let s = Settings::from_env(&env(&pairs)).unwrap();
        assert_eq!(s.http.host, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!(s.http.header_read_timeout, Duration::from_secs(5));
        assert_eq!(s.http.body_read_timeout, Duration::from_secs(10));
        assert_eq!(s.http.request_timeout, Duration::from_secs(30));
        assert_eq!(s.http.max_in_flight, 64);

        let mut bad = MINIMAL.to_vec();
        bad.extend([
            ("SERVER_HOST", "example.com"),
            ("HTTP_REQUEST_TIMEOUT_SECS", "0"),
            ("HTTP_MAX_IN_FLIGHT", "0"),
        ]);
        let err = Settings::from_env(&env(&bad)).unwrap_err().to_string();
        assert!(err.contains("SERVER_HOST must be an IP address"), "{err}");
        assert!(
            err.contains("HTTP_REQUEST_TIMEOUT_SECS must be a whole number of seconds above 0"),
            "{err}"
        );
        assert!(
            err.contains("HTTP_MAX_IN_FLIGHT must be a whole number above 0"),
            "{err}"
        );
    }
}
