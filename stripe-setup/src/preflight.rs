//! Checks made before any request to Stripe, so that a mistake costs nothing: the key is there
//! and fits the environment, the webhook URL is one Stripe can deliver to, and the portal's return
//! URL is one a browser can be sent to.

use billing_stripe::{KeyMode, SecretKey};

pub const KEY_VAR: &str = "STRIPE_API_SECRET_KEY";
pub const BASE_VAR: &str = "STRIPE_API_BASE";

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PreflightError {
    #[error(
        "{KEY_VAR} is not set: export your Stripe secret key (sk_test_... for test environments, \
         sk_live_... for prod)"
    )]
    MissingKey,
    #[error("{KEY_VAR} is not usable: {0}")]
    BadKey(String),
    #[error(
        "refusing to use a live key (sk_live_...) for environment '{0}', which is not production; \
         pass --yes if you really mean it"
    )]
    LiveKeyOutsideProd(String),
    #[error(
        "refusing to use a test key for environment '{0}', which looks like production; pass \
         --yes if you really mean it"
    )]
    TestKeyInProd(String),
    #[error("invalid webhook URL '{url}': {reason}")]
    BadUrl { url: String, reason: String },
    #[error("invalid return URL '{url}' (--return-url or FRONTEND_URL): {reason}")]
    BadReturnUrl { url: String, reason: String },
    #[error("invalid environment name '{0}': use letters, digits, '-' and '_' (e.g. stage, prod)")]
    BadEnvironment(String),
}

/// Environment names that mean "real money".
pub fn is_production(environment: &str) -> bool {
    matches!(
        environment.to_ascii_lowercase().as_str(),
        "prod" | "production" | "live"
    )
}

pub fn check_environment(environment: &str) -> Result<(), PreflightError> {
    let ok = !environment.is_empty()
        && environment.len() <= 64
        && environment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(PreflightError::BadEnvironment(environment.to_owned()))
    }
}

/// The key from the environment variable's value.
pub fn secret_key(value: Option<String>) -> Result<SecretKey, PreflightError> {
    let value = value
        .filter(|v| !v.trim().is_empty())
        .ok_or(PreflightError::MissingKey)?;
    SecretKey::parse(&value).map_err(|e| PreflightError::BadKey(e.to_string()))
}

/// A live key belongs to production and a test key elsewhere, unless the operator insists.
pub fn check_key_fits(key: &SecretKey, environment: &str, yes: bool) -> Result<(), PreflightError> {
    if yes {
        return Ok(());
    }
    match (key.mode(), is_production(environment)) {
        (KeyMode::Live, false) => Err(PreflightError::LiveKeyOutsideProd(environment.to_owned())),
        (KeyMode::Test, true) => Err(PreflightError::TestKeyInProd(environment.to_owned())),
        _ => Ok(()),
    }
}

/// Stripe delivers to https URLs; plain http is accepted for localhost only, for local testing
/// with `stripe-setup trigger`.
pub fn check_webhook_url(url: &str) -> Result<(), PreflightError> {
    let bad = |reason: &str| PreflightError::BadUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    let host = parsed.host_str().ok_or_else(|| bad("it has no host"))?;
    let local = matches!(host, "localhost" | "127.0.0.1" | "[::1]" | "::1");
    match parsed.scheme() {
        "https" => {}
        "http" if local => {}
        "http" => return Err(bad("Stripe requires https outside localhost")),
        _ => return Err(bad("the scheme must be https")),
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad("it must not carry credentials"));
    }
    if parsed.fragment().is_some() {
        return Err(bad("it must not have a #fragment"));
    }
    Ok(())
}

/// The portal's default return URL: an absolute http(s) URL without credentials (http is fine:
/// the browser follows it, not Stripe).
pub fn check_return_url(url: &str) -> Result<(), PreflightError> {
    let bad = |reason: &str| PreflightError::BadReturnUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    if !matches!(parsed.scheme(), "https" | "http") {
        return Err(bad("the scheme must be https or http"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(bad("it has no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad("it must not carry credentials"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_must_fit_the_environment() {
        let live = SecretKey::parse("sk_live_x").unwrap();
        let test = SecretKey::parse("sk_test_x").unwrap();
        assert!(check_key_fits(&live, "prod", false).is_ok());
        assert!(check_key_fits(&test, "stage", false).is_ok());
        assert_eq!(
            check_key_fits(&live, "stage", false),
            Err(PreflightError::LiveKeyOutsideProd("stage".into()))
        );
        assert_eq!(
            check_key_fits(&test, "production", false),
            Err(PreflightError::TestKeyInProd("production".into()))
        );
        assert!(check_key_fits(&live, "stage", true).is_ok());
        assert_eq!(secret_key(None), Err(PreflightError::MissingKey));
        assert_eq!(
            secret_key(Some(" ".into())),
            Err(PreflightError::MissingKey)
        );
        assert!(matches!(
            secret_key(Some("pk_test_x".into())),
            Err(PreflightError::BadKey(_))
        ));
    }

    #[test]
    fn webhook_urls_must_be_deliverable() {
        assert!(check_webhook_url("https://billing.example.com/webhook/stripe").is_ok());
        assert!(check_webhook_url("http://localhost:8080/webhook/stripe").is_ok());
        assert!(check_webhook_url("http://127.0.0.1:8080/webhook/stripe").is_ok());
        assert!(check_webhook_url("http://billing.example.com/webhook").is_err());
        assert!(check_webhook_url("ftp://billing.example.com/webhook").is_err());
        assert!(check_webhook_url("billing.example.com/webhook").is_err());
        assert!(check_webhook_url("https://user:pw@billing.example.com/").is_err());
    }

    #[test]
    fn return_urls_are_browser_urls() {
        assert!(check_return_url("https://app.example.com").is_ok());
        assert!(check_return_url("http://localhost:3000/account").is_ok());
        assert!(check_return_url("app.example.com").is_err());
        assert!(check_return_url("ftp://app.example.com").is_err());
        assert!(check_return_url("https://u:p@app.example.com").is_err());
    }

    #[test]
    fn environment_names_are_free_but_sane() {
        assert!(check_environment("stage").is_ok());
        assert!(check_environment("pr-1234_x").is_ok());
        assert!(check_environment("").is_err());
        assert!(check_environment("a b").is_err());
    }
}
