//! Who is asking. `AUTH_MODE` chooses how the user is known:
//!
//! - `jwt`: a bearer token signed by the identity provider, verified here against its published
//!   keys ([`jwt`]); nothing else about the request is believed.
//! - `trusted-headers`: the `x-user-id` and `x-user-email` headers set by the auth proxy in front
//!   of the service. Believed because only the proxy can reach the service (a NetworkPolicy in
//!   the shipped manifests) and the proxy overwrites whatever a client sent under those names;
//!   here they are only checked to be present and well-formed.
//!
//! Handlers take an [`AuthUser`] (or `Option<AuthUser>`) and never see which mode found it.

pub mod jwt;
mod ring_crypto;

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts, OptionalFromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;

use crate::configuration::AuthSettings;
use crate::error::ApiError;

/// Our user id, as the auth proxy names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserId(String);

impl UserId {
    /// `source` names where the id came from, for the error ("the x-user-id header").
    pub fn parse(raw: &str, source: &str) -> Result<Self, ApiError> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(ApiError::Unauthorized(format!("{source} is empty")));
        }
        // Stripe metadata values are limited to 500 characters; ids are far shorter.
        if raw.len() > 200 || raw.chars().any(char::is_control) {
            return Err(ApiError::bad_request(
                "invalid_user",
                format!("{source} is not a user id"),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str, source: &str) -> Result<Self, ApiError> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(ApiError::Unauthorized(format!("{source} is empty")));
        }
        let valid = raw.len() <= 254
            && !raw.chars().any(|c| c.is_whitespace() || c.is_control())
            && matches!(raw.split_once('@'), Some((local, domain))
                if !local.is_empty() && domain.contains('.') && !domain.contains('@')
                    && !domain.starts_with('.') && !domain.ends_with('.'));
        match valid {
            true => Ok(Self(raw.to_owned())),
            false => Err(ApiError::bad_request(
                "invalid_email",
                format!("{source} is not an email address"),
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The signed-in user. Rejects with 401 when the credential is missing or invalid, 400 when it
/// names a malformed user.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub id: UserId,
    pub email: Email,
}

/// Finds the user of a request in the configured way.
pub enum Authenticator {
    TrustedHeaders,
    Jwt(Box<jwt::JwksVerifier>),
}

impl Authenticator {
    pub fn new(settings: &AuthSettings) -> anyhow::Result<Self> {
        Ok(match settings {
            AuthSettings::TrustedHeaders => Self::TrustedHeaders,
            AuthSettings::Jwt(jwt) => Self::Jwt(Box::new(jwt::JwksVerifier::new(jwt.clone())?)),
        })
    }

    pub async fn user(&self, headers: &HeaderMap) -> Result<AuthUser, ApiError> {
        match self {
            Self::TrustedHeaders => from_trusted_headers(headers),
            Self::Jwt(verifier) => Ok(verifier.user(headers).await?),
        }
    }
}

fn from_trusted_headers(headers: &HeaderMap) -> Result<AuthUser, ApiError> {
    let header = |name: &str| -> Result<String, ApiError> {
        let value = headers
            .get(name)
            .ok_or_else(|| ApiError::Unauthorized(format!("the {name} header is missing")))?;
        value.to_str().map(str::to_owned).map_err(|_| {
            ApiError::bad_request("invalid_user", format!("the {name} header is not text"))
        })
    };
    Ok(AuthUser {
        id: UserId::parse(&header("x-user-id")?, "the x-user-id header")?,
        email: Email::parse(&header("x-user-email")?, "the x-user-email header")?,
    })
}

impl<S> FromRequestParts<S> for AuthUser
where
    S: Send + Sync,
    Arc<Authenticator>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Arc::<Authenticator>::from_ref(state)
            .user(&parts.headers)
            .await
    }
}

/// A user where one is optional (the redirect back from Checkout): no credential, or one that
/// does not name a valid user, means no user; such routes never answer an error for it.
impl<S> OptionalFromRequestParts<S> for AuthUser
where
    S: Send + Sync,
    Arc<Authenticator>: FromRef<S>,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(
            <Self as FromRequestParts<S>>::from_request_parts(parts, state)
                .await
                .ok(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_checked() {
        for ok in ["a@b.co", "first.last+tag@example.com"] {
            assert!(Email::parse(ok, "e").is_ok(), "{ok}");
        }
        for bad in [
            "nope", "a@b", "@b.co", "a@@b.co", "a b@c.co", "a@.co", "a@b.co.",
        ] {
            assert!(
                matches!(Email::parse(bad, "e"), Err(ApiError::BadRequest { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            Email::parse(" ", "e"),
            Err(ApiError::Unauthorized(_))
        ));
    }

    #[test]
    fn user_ids_are_checked() {
        assert_eq!(UserId::parse(" u-1 ", "u").unwrap().as_str(), "u-1");
        assert!(matches!(
            UserId::parse("", "u"),
            Err(ApiError::Unauthorized(_))
        ));
        assert!(UserId::parse(&"x".repeat(201), "u").is_err());
        assert!(UserId::parse("a\nb", "u").is_err());
    }
}
