//! Who is asking: the user the auth proxy in front of the service vouches for, through the
//! `x-user-id` and `x-user-email` headers. The service trusts them because only the proxy can
//! reach it; it checks that they are present and well-formed.

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;

use crate::error::ApiError;

/// Our user id, as the auth proxy names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserId(String);

impl UserId {
    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(ApiError::Unauthorized(
                "the x-user-id header is empty".into(),
            ));
        }
        // Stripe metadata values are limited to 500 characters; ids are far shorter.
        if raw.len() > 200 || raw.chars().any(char::is_control) {
            return Err(ApiError::bad_request(
                "invalid_user",
                "the x-user-id header is not a user id",
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
    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(ApiError::Unauthorized(
                "the x-user-email header is empty".into(),
            ));
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
                "the x-user-email header is not an email address",
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The signed-in user. Rejects with 401 when a header is missing or empty, 400 when malformed.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub id: UserId,
    pub email: Email,
}

impl<S: Send + Sync> FromRequestParts<S> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let header = |name: &str| -> Result<String, ApiError> {
            let value = parts
                .headers
                .get(name)
                .ok_or_else(|| ApiError::Unauthorized(format!("the {name} header is missing")))?;
            value.to_str().map(str::to_owned).map_err(|_| {
                ApiError::bad_request("invalid_user", format!("the {name} header is not text"))
            })
        };
        Ok(Self {
            id: UserId::parse(&header("x-user-id")?)?,
            email: Email::parse(&header("x-user-email")?)?,
        })
    }
}

/// A user where one is optional (the redirect back from Checkout): no headers, or headers that
/// do not name a valid user, mean no user; such routes never answer an error for it.
impl<S: Send + Sync> OptionalFromRequestParts<S> for AuthUser {
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
            assert!(Email::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "nope", "a@b", "@b.co", "a@@b.co", "a b@c.co", "a@.co", "a@b.co.",
        ] {
            assert!(
                matches!(Email::parse(bad), Err(ApiError::BadRequest { .. })),
                "{bad}"
            );
        }
        assert!(matches!(Email::parse(" "), Err(ApiError::Unauthorized(_))));
    }

    #[test]
    fn user_ids_are_checked() {
        assert_eq!(UserId::parse(" u-1 ").unwrap().as_str(), "u-1");
        assert!(matches!(UserId::parse(""), Err(ApiError::Unauthorized(_))));
        assert!(UserId::parse(&"x".repeat(201)).is_err());
        assert!(UserId::parse("a\nb").is_err());
    }
}
