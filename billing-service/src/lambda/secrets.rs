//! Secrets Manager values as configuration variables, in Lambda.
//!
//! A Lambda function's environment variables are readable by anyone who may read the function's
//! configuration, so the Stripe keys and the database password are not put there. Instead
//! `SECRETS_MANAGER_SECRET_IDS` names the secrets (comma-separated ARNs or names), and each is
//! read through the AWS Parameters and Secrets Lambda Extension (a layer: an HTTP server on
//! localhost that calls Secrets Manager and caches the answer), so the binary needs no AWS SDK.
//!
//! Each secret is a JSON object. Its UPPER_CASE keys are variables of their own name (the Stripe
//! secret: `STRIPE_API_SECRET_KEY`, `STRIPE_WEBHOOK_SECRET`); the keys of an RDS secret
//! (`username`, `password`, `host`, `port`, `dbname`, `engine`) are the `DATABASE_*` parts.
//! A variable set in the environment wins, so the template can point `DATABASE_HOST` at RDS
//! Proxy while the secret names the database itself.

use std::collections::HashMap;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use serde::Deserialize;

use crate::configuration::Env;

/// The variable naming the secrets to read.
pub const SECRET_IDS: &str = "SECRETS_MANAGER_SECRET_IDS";
/// The extension's port variable (the extension reads it too), and its default.
const PORT: &str = "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT";
const DEFAULT_PORT: u16 = 2773;

/// An RDS secret's keys, and the variables they stand for.
const RDS_KEYS: [(&str, &str); 6] = [
    ("username", "DATABASE_USERNAME"),
    ("password", "DATABASE_PASSWORD"),
    ("host", "DATABASE_HOST"),
    ("port", "DATABASE_PORT"),
    ("dbname", "DATABASE_NAME"),
    ("engine", "DATABASE_ENGINE"),
];

/// Why the secrets could not be had. Never carries a secret's value.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("{PORT} must be a port number, not {0:?}")]
    BadPort(String),
    #[error("AWS_SESSION_TOKEN is unset: the secrets extension admits only this function's calls")]
    NoSessionToken,
    #[error(
        "cannot reach the Parameters and Secrets extension on localhost:{port} to read {id} (is \
         its layer attached?): {source}"
    )]
    Unreachable {
        port: u16,
        id: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the secrets extension refused to read {id}: {status} {message}")]
    Refused {
        id: String,
        status: u16,
        message: String,
    },
    #[error("secret {id} is not a JSON object of strings: {why}")]
    NotAnObject { id: String, why: String },
    #[error("secrets {first} and {second} both set {variable}")]
    Conflict {
        variable: String,
        first: String,
        second: String,
    },
}

impl SecretsError {
    /// Whether trying again later may succeed (the extension starting, Secrets Manager
    /// throttling or unreachable), as opposed to a mistake in the deployment.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Refused { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}

/// The variables the named secrets hold; empty when `SECRETS_MANAGER_SECRET_IDS` is unset.
pub async fn read(env: &impl Env) -> Result<HashMap<String, String>, SecretsError> {
    let Some(ids) = env.get(SECRET_IDS) else {
        return Ok(HashMap::new());
    };
    let port = match env.get(PORT) {
        None => DEFAULT_PORT,
        Some(raw) => raw.trim().parse().map_err(|_| SecretsError::BadPort(raw))?,
    };
    let token = env
        .get("AWS_SESSION_TOKEN")
        .ok_or(SecretsError::NoSessionToken)?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("a client without custom TLS settings builds");
    let mut variables: HashMap<String, (String, String)> = HashMap::new();
    for id in ids.split(',').map(str::trim).filter(|id| !id.is_empty()) {
        let text = fetch(&client, port, &token, id).await?;
        for (variable, value) in variables_of(id, &text)? {
            if let Some((first, _)) = variables.get(&variable) {
                return Err(SecretsError::Conflict {
                    variable,
                    first: first.clone(),
                    second: id.to_owned(),
                });
            }
            variables.insert(variable, (id.to_owned(), value));
        }
    }
    Ok(variables
        .into_iter()
        .map(|(variable, (_, value))| (variable, value))
        .collect())
}

/// The process environment, then the secrets' variables for what it leaves unset.
pub struct WithSecrets<E> {
    pub env: E,
    pub secrets: HashMap<String, String>,
}

impl<E: Env> Env for WithSecrets<E> {
    fn get(&self, key: &str) -> Option<String> {
        self.env.get(key).or_else(|| self.secrets.get(key).cloned())
    }
}

/// What the extension answers: Secrets Manager's `GetSecretValue` response.
#[derive(Deserialize)]
struct SecretValue {
    #[serde(rename = "SecretString")]
    secret_string: Option<String>,
}

/// One secret's text, through the extension. Retried briefly while the extension cannot be
/// reached: it starts beside the function and may not listen yet on a cold start.
async fn fetch(
    client: &reqwest::Client,
    port: u16,
    token: &str,
    id: &str,
) -> Result<String, SecretsError> {
    let url = format!("http://localhost:{port}/secretsmanager/get");
    let send = || async {
        client
            .get(&url)
            .query(&[("secretId", id)])
            .header("X-Aws-Parameters-Secrets-Token", token)
            .send()
            .await
    };
    let retry = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_millis(500))
        .with_total_delay(Some(Duration::from_secs(3)))
        .without_max_times();
    let unreachable = |source| SecretsError::Unreachable {
        port,
        id: id.to_owned(),
        source,
    };
    let response = send
        .retry(retry)
        .when(reqwest::Error::is_connect)
        .await
        .map_err(unreachable)?;
    let status = response.status();
    let body = response.text().await.map_err(unreachable)?;
    if !status.is_success() {
        return Err(SecretsError::Refused {
            id: id.to_owned(),
            status: status.as_u16(),
            // The extension's own words about the failure; a success's body is never shown.
            message: crate::error::truncated(body, 300),
        });
    }
    let value: SecretValue =
        serde_json::from_str(&body).map_err(|e| SecretsError::NotAnObject {
            id: id.to_owned(),
            why: format!(
                "the extension's answer is not GetSecretValue's JSON ({})",
                kind_of(&e)
            ),
        })?;
    value
        .secret_string
        .ok_or_else(|| SecretsError::NotAnObject {
            id: id.to_owned(),
            why: "it has no SecretString (a binary secret)".to_owned(),
        })
}

/// The kind of a JSON error, without its message (which can quote the secret).
fn kind_of(error: &serde_json::Error) -> &'static str {
    match error.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "not JSON",
        serde_json::error::Category::Data => "not the expected shape",
        serde_json::error::Category::Eof => "cut short",
    }
}

/// The variables one secret's JSON holds.
fn variables_of(id: &str, text: &str) -> Result<Vec<(String, String)>, SecretsError> {
    let not_an_object = |why: String| SecretsError::NotAnObject {
        id: id.to_owned(),
        why,
    };
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|e| not_an_object(kind_of(&e).to_owned()))?;
    let mut variables = Vec::new();
    for (key, value) in object {
        let variable = match RDS_KEYS.iter().find(|(k, _)| *k == key) {
            Some((_, variable)) => (*variable).to_owned(),
            None if is_variable_name(&key) => key.clone(),
            // RDS secrets carry more (dbInstanceIdentifier, ...): not ours to read.
            None => continue,
        };
        let value = match value {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            _ => return Err(not_an_object(format!("the value of {key} is not a string"))),
        };
        let value = match variable.as_str() {
            "DATABASE_ENGINE" => engine_of(&value),
            _ => value,
        };
        variables.push((variable, value));
    }
    Ok(variables)
}

fn is_variable_name(key: &str) -> bool {
    key.starts_with(|c: char| c.is_ascii_uppercase())
        && key
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// An RDS secret's `engine` as `DATABASE_ENGINE` names it (Aurora's engines included); other
/// values pass through, to be refused by the configuration with its own message.
fn engine_of(rds_engine: &str) -> String {
    match rds_engine {
        "aurora-postgresql" | "postgres" => "postgres".to_owned(),
        "aurora-mysql" | "aurora" | "mysql" | "mariadb" => "mysql".to_owned(),
        other => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_rds_secret_fills_the_database_parts_and_upper_case_keys_are_variables() {
        let rds = r#"{"username":"billing","password":"p@ss:/w","engine":"aurora-postgresql",
                      "host":"db.internal","port":5432,"dbname":"billing",
                      "dbInstanceIdentifier":"billing-db"}"#;
        let mut got = variables_of("rds", rds).unwrap();
        got.sort();
        assert_eq!(
            got,
            [
                ("DATABASE_ENGINE", "postgres"),
                ("DATABASE_HOST", "db.internal"),
                ("DATABASE_NAME", "billing"),
                ("DATABASE_PASSWORD", "p@ss:/w"),
                ("DATABASE_PORT", "5432"),
                ("DATABASE_USERNAME", "billing"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        let stripe =
            r#"{"STRIPE_API_SECRET_KEY":"sk_test_1","STRIPE_WEBHOOK_SECRET":"whsec_1","note":"x"}"#;
        let mut got = variables_of("stripe", stripe).unwrap();
        got.sort();
        assert_eq!(
            got,
            [
                ("STRIPE_API_SECRET_KEY", "sk_test_1"),
                ("STRIPE_WEBHOOK_SECRET", "whsec_1")
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
    }

    #[test]
    fn a_malformed_secret_is_refused_without_quoting_it() {
        for text in [
            r#"sk_live_plain_text_secret"#,
            r#"["sk_live_in_a_list"]"#,
            r#"{"STRIPE_API_SECRET_KEY": {"nested": "sk_live_nested"}}"#,
        ] {
            let error = variables_of("stripe", text).unwrap_err().to_string();
            assert!(error.contains("stripe"), "{error}");
            assert!(!error.contains("sk_live"), "the secret leaks: {error}");
        }
    }

    #[test]
    fn the_environment_wins_over_a_secret() {
        let env = |key: &str| (key == "DATABASE_HOST").then(|| "proxy.internal".to_owned());
        let secrets = HashMap::from([
            ("DATABASE_HOST".to_owned(), "db.internal".to_owned()),
            ("DATABASE_PASSWORD".to_owned(), "pw".to_owned()),
        ]);
        let merged = WithSecrets { env, secrets };
        assert_eq!(
            merged.get("DATABASE_HOST").as_deref(),
            Some("proxy.internal")
        );
        assert_eq!(merged.get("DATABASE_PASSWORD").as_deref(), Some("pw"));
        assert_eq!(merged.get("FRONTEND_URL"), None);
    }
}
