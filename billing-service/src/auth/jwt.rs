//! `AUTH_MODE=jwt`: the user is whoever the identity provider signed a token for.
//!
//! The token comes as `Authorization: Bearer <JWT>`. Its signature is checked with the issuer's
//! published keys (a JWKS, fetched and cached here), then `iss`, `aud`, `exp` and `nbf`: the
//! `jsonwebtoken` crate's checks, with `ring` verifying signatures. Only asymmetric algorithms
//! are accepted, and only with a key of their own family: with HMAC the verifier would hold the signing secret, and an
//! RSA public key taken as an HMAC secret is the classic forgery. `alg: none` does not parse.
//!
//! Keys are fetched on first use and again when a token names an unknown key id (the issuer
//! rotated its keys), but at most once per `AUTH_JWKS_MIN_REFRESH_SECS` whatever tokens arrive,
//! so made-up key ids cannot turn the service into a load generator against the issuer. When
//! the key set cannot be fetched, the token is refused (401) with that reason; keys already
//! fetched go on being used.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{AuthUser, Email, UserId};
use crate::configuration::JwtSettings;
use crate::error::{ApiError, chain};

const RSA_ALGORITHMS: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// Clock skew allowed on `exp` and `nbf` between the issuer and this service.
const LEEWAY_SECS: u64 = 30;
/// A token larger than this is not a login token.
const MAX_TOKEN_BYTES: usize = 16 * 1024;
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Key sets hold a handful of keys (a few KiB); this only stops a broken endpoint.
const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Even when every key id is known, the keys are refetched after this long, so that a key the
/// issuer withdrew stops being accepted.
const MAX_KEY_AGE: Duration = Duration::from_secs(15 * 60);

/// Why a token was refused; every case is a 401 whose message says it.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the Authorization header is missing; send `Authorization: Bearer <token>`")]
    Missing,
    #[error("the Authorization header is not `Bearer <token>`")]
    NotBearer,
    #[error("the token is malformed ({0})")]
    Malformed(String),
    #[error("tokens signed with {0:?} are not accepted")]
    Algorithm(Algorithm),
    #[error("the token names no key id (kid)")]
    NoKeyId,
    #[error("the token's key id {0:?} is not among the issuer's keys")]
    UnknownKey(String),
    #[error("key {kid:?} is not for {alg:?}")]
    WrongKeyType { kid: String, alg: Algorithm },
    #[error("the token is not valid ({0})")]
    Invalid(#[source] jsonwebtoken::errors::Error),
    #[error("the token has no {0} claim")]
    MissingClaim(String),
    #[error("tokens cannot be verified now: the issuer's keys ({url}) could not be fetched: {why}")]
    KeysUnavailable { url: String, why: String },
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        ApiError::Unauthorized(e.to_string())
    }
}

/// One of the issuer's keys, with the algorithms it may verify.
struct Key {
    decoding: DecodingKey,
    algorithms: Vec<Algorithm>,
}

#[derive(Default)]
struct KeyCache {
    keys: HashMap<String, Arc<Key>>,
    fetched: Option<Instant>,
    /// The last fetch, successful or not: the rate limit counts failures too.
    attempted: Option<Instant>,
    error: Option<String>,
}

pub struct JwksVerifier {
    settings: JwtSettings,
    http: reqwest::Client,
    cache: RwLock<KeyCache>,
    /// One fetch at a time; whoever waited for it finds its result instead of fetching again.
    fetching: tokio::sync::Mutex<()>,
}

impl JwksVerifier {
    pub fn new(settings: JwtSettings) -> anyhow::Result<Self> {
        super::ring_crypto::install();
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            // A redirect could leave https; the configured URL is the key set's address.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            settings,
            http,
            cache: RwLock::default(),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    /// The user a request's bearer token was issued for.
    pub async fn user(&self, headers: &HeaderMap) -> Result<AuthUser, ApiError> {
        let claims = self.verify(bearer(headers)?).await?;
        let claim = &self.settings.user_claim;
        let id = match claims.get(claim) {
            Some(Value::String(id)) => id.clone(),
            Some(Value::Number(id)) => id.to_string(),
            _ => return Err(TokenError::MissingClaim(claim.clone()).into()),
        };
        let Some(Value::String(email)) = claims.get("email") else {
            return Err(TokenError::MissingClaim("email".to_owned()).into());
        };
        Ok(AuthUser {
            id: UserId::parse(&id, &format!("the token's {claim} claim"))?,
            email: Email::parse(email, "the token's email claim")?,
        })
    }

    /// Checks the signature, issuer, audience and validity period; returns the claims.
    pub async fn verify(&self, token: &str) -> Result<Map<String, Value>, TokenError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| TokenError::Malformed(e.to_string()))?;
        let alg = header.alg;
        if !RSA_ALGORITHMS.contains(&alg) && !matches!(alg, Algorithm::ES256 | Algorithm::ES384) {
            return Err(TokenError::Algorithm(alg));
        }
        let kid = header.kid.ok_or(TokenError::NoKeyId)?;
        let key = self.key(&kid).await?;
        if !key.algorithms.contains(&alg) {
            return Err(TokenError::WrongKeyType { kid, alg });
        }
        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding, &validation)
            .map_err(TokenError::Invalid)?;
        Ok(data.claims)
    }

    async fn key(&self, kid: &str) -> Result<Arc<Key>, TokenError> {
        let fresh = {
            let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
            let young = cache.fetched.is_some_and(|at| at.elapsed() < MAX_KEY_AGE);
            cache.keys.get(kid).filter(|_| young).cloned()
        };
        if let Some(key) = fresh {
            return Ok(key);
        }
        self.refresh().await;
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        match (cache.keys.get(kid), &cache.error) {
            (Some(key), _) => Ok(key.clone()),
            (None, Some(why)) if cache.keys.is_empty() => Err(TokenError::KeysUnavailable {
                url: self.settings.jwks_url.to_string(),
                why: why.clone(),
            }),
            (None, _) => Err(TokenError::UnknownKey(kid.to_owned())),
        }
    }

    fn may_fetch(&self) -> bool {
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        cache
            .attempted
            .is_none_or(|at| at.elapsed() >= self.settings.jwks_min_refresh)
    }

    /// Fetches the key set unless one was fetched (or tried) within the minimum interval. A
    /// caller arriving during a fetch waits for its result rather than answering without it.
    async fn refresh(&self) {
        let _one_at_a_time = self.fetching.lock().await;
        if !self.may_fetch() {
            return;
        }
        self.cache
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .attempted = Some(Instant::now());
        let fetched = self.fetch().await;
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        match fetched {
            Ok(keys) => {
                tracing::info!(url = %self.settings.jwks_url, keys = keys.len(), "fetched the issuer's keys");
                cache.keys = keys;
                cache.fetched = Some(Instant::now());
                cache.error = None;
            }
            Err(why) => {
                tracing::warn!(url = %self.settings.jwks_url, error = %why, kept = cache.keys.len(), "cannot fetch the issuer's keys");
                cache.error = Some(why);
            }
        }
    }

    async fn fetch(&self) -> Result<HashMap<String, Arc<Key>>, String> {
        let response = self
            .http
            .get(self.settings.jwks_url.clone())
            .send()
            .await
            .map_err(|e| format!("cannot reach it ({})", chain(&e)))?;
        if !response.status().is_success() {
            return Err(format!("it answered {}", response.status()));
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err(format!("it is larger than {MAX_JWKS_BYTES} bytes"));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| format!("cannot read it ({})", chain(&e)))?;
        if body.len() > MAX_JWKS_BYTES {
            return Err(format!("it is larger than {MAX_JWKS_BYTES} bytes"));
        }
        #[derive(Deserialize)]
        struct KeySet {
            keys: Vec<Value>,
        }
        let set: KeySet = serde_json::from_slice(&body)
            .map_err(|e| format!("it is not a JSON Web Key Set ({e})"))?;
        // Keys of kinds we cannot use are skipped, not fatal: a set may also hold encryption
        // keys or newer key types.
        let keys: HashMap<String, Arc<Key>> = set
            .keys
            .into_iter()
            .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
            .filter_map(|jwk| Some((jwk.common.key_id.clone()?, Arc::new(signing_key(&jwk)?))))
            .collect();
        match keys.is_empty() {
            true => Err("it holds no RSA or P-256/P-384 signing key with a key id".to_owned()),
            false => Ok(keys),
        }
    }
}

/// The key and what it may verify, or `None` for a key this service does not accept.
fn signing_key(jwk: &Jwk) -> Option<Key> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let family: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => RSA_ALGORITHMS.to_vec(),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return None,
        },
        // Symmetric (HMAC) keys and the rest: never.
        _ => return None,
    };
    // A key that names its algorithm verifies that one only.
    let algorithms = match &jwk.common.key_algorithm {
        None => family,
        Some(named) => {
            let named = serde_json::to_value(named).ok()?;
            let named = Algorithm::from_str(named.as_str()?).ok()?;
            family.into_iter().filter(|a| *a == named).collect()
        }
    };
    if algorithms.is_empty() {
        return None;
    }
    Some(Key {
        decoding: DecodingKey::from_jwk(jwk).ok()?,
        algorithms,
    })
}

fn bearer(headers: &HeaderMap) -> Result<&str, TokenError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(TokenError::Missing)?
        .to_str()
        .map_err(|_| TokenError::NotBearer)?;
    let (scheme, token) = value.trim().split_once(' ').ok_or(TokenError::NotBearer)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(TokenError::NotBearer);
    }
    let token = token.trim();
    match token.len() {
        0 => Err(TokenError::NotBearer),
        n if n > MAX_TOKEN_BYTES => Err(TokenError::Malformed(format!(
            "longer than {MAX_TOKEN_BYTES} bytes"
        ))),
        _ => Ok(token),
    }
}
