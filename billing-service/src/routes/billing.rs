//! The billing API the frontend calls. Thin: each handler reads the request, calls
//! [`crate::checkout`], [`crate::products`], [`crate::portal`] or the read models in
//! [`crate::tables::subscriptions`] and [`crate::tables::entitlements`], and shapes the reply.

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::Routes;
use crate::auth::AuthUser;
use crate::checkout::{
    CheckoutContext, CheckoutStarted, confirmation_after_cancel, confirmation_after_success,
    start_checkout,
};
use crate::error::ApiError;
use crate::portal::{PortalContext, open_portal};
use crate::products::ProductPrice;
use crate::state::AppState;
use crate::tables::entitlements;
use crate::tables::subscriptions::{self, SubscriptionView};

pub fn routes() -> Routes {
    Routes::default()
        .route(Method::GET, "/billing/products", products)
        .route(Method::POST, "/billing/checkout", checkout)
        .route(Method::GET, "/billing/success", success)
        .route(Method::GET, "/billing/cancel", cancel)
        .route(Method::GET, "/billing/subscription", subscription)
        .route(Method::POST, "/billing/portal", portal)
        .route(Method::GET, "/billing/entitlements", features)
        .route(Method::GET, "/billing/entitlements/{feature}", feature)
}

async fn products(State(state): State<AppState>) -> Result<Json<Vec<ProductPrice>>, ApiError> {
    let prices = state.products.list(&state.stripe).await?;
    Ok(Json(prices.as_ref().clone()))
}

/// `{"price_id": "..."}` is tiny; anything near this is not from our frontend.
const MAX_JSON_BODY: usize = 16 * 1024;

#[derive(Deserialize)]
struct CheckoutBody {
    price_id: String,
}

/// The body of a state-changing call, as JSON. Requiring `Content-Type: application/json` keeps
/// other sites from posting as the user: an HTML form can only send form encodings or
/// `text/plain`, and a cross-site `fetch` with JSON needs a CORS preflight, which only
/// `FRONTEND_URL` passes. Refusals are the API's JSON errors (415, 413, 400).
struct JsonBody<T>(T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, _: &S) -> Result<Self, Self::Rejection> {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            return Err(ApiError::UnsupportedMediaType);
        }
        let body = axum::body::to_bytes(request.into_body(), MAX_JSON_BODY)
            .await
            .map_err(|e| ApiError::from_body_error(&e, MAX_JSON_BODY))?;
        serde_json::from_slice(&body).map(Self).map_err(|e| {
            ApiError::bad_request(
                "invalid_json",
                format!("the body is not the JSON this route takes: {e}"),
            )
        })
    }
}

/// `{"price_id": ...}`: a `price_...` id or a lookup key.
async fn checkout(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBody(body): JsonBody<CheckoutBody>,
) -> Result<Json<CheckoutStarted>, ApiError> {
    let ctx = CheckoutContext {
        db: &state.db,
        stripe: &state.stripe,
        products: &state.products,
        backend_url: &state.settings.backend_url,
    };
    Ok(Json(start_checkout(&ctx, &user, &body.price_id).await?))
}

#[derive(Deserialize)]
struct SessionQuery {
    session_id: Option<String>,
}

/// The browser is always sent on, never shown an error page: a query that cannot be read
/// counts as no session id.
fn session_id(query: Result<Query<SessionQuery>, QueryRejection>) -> Option<String> {
    query.ok().and_then(|Query(q)| q.session_id)
}

async fn success(
    State(state): State<AppState>,
    user: Option<AuthUser>,
    query: Result<Query<SessionQuery>, QueryRejection>,
) -> Response {
    let url = confirmation_after_success(
        &state.stripe,
        &state.settings.frontend_url,
        session_id(query).as_deref(),
        user.as_ref().map(|u| &u.id),
    )
    .await;
    found(&url)
}

async fn cancel(
    State(state): State<AppState>,
    query: Result<Query<SessionQuery>, QueryRejection>,
) -> Response {
    found(&confirmation_after_cancel(
        &state.settings.frontend_url,
        session_id(query).as_deref(),
    ))
}

/// 302, as the template answered (axum's `Redirect` offers 303, 307 and 308).
fn found(url: &url::Url) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, url.as_str())]).into_response()
}

async fn subscription(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Json<SubscriptionView>, ApiError> {
    subscriptions::current_of_user(&mut *state.db.pool.acquire().await?, user.id.as_str())
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound("no subscription".into()))
}

/// The body is a JSON object, `{}` today (see [`JsonBody`] for why it is required).
async fn portal(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBody(_): JsonBody<serde_json::Map<String, Value>>,
) -> Result<Json<Value>, ApiError> {
    let ctx = PortalContext {
        db: &state.db,
        stripe: &state.stripe,
        products: &state.products,
        configuration: &state.portal,
        return_url: &state.settings.frontend_url,
    };
    let url = open_portal(&ctx, &user).await?;
    Ok(Json(json!({ "url": url })))
}

/// `{"features": [...]}`: the lookup keys of what the user may use now, from our tables.
async fn features(State(state): State<AppState>, user: AuthUser) -> Result<Json<Value>, ApiError> {
    let features =
        entitlements::of_user(&mut *state.db.pool.acquire().await?, user.id.as_str()).await?;
    Ok(Json(json!({ "features": features })))
}

/// Stripe's longest lookup key.
const MAX_FEATURE: usize = 80;

/// 200 when the user may use the feature now, 403 `not_entitled` when not: for services that
/// ask before doing something a plan pays for.
async fn feature(
    State(state): State<AppState>,
    user: AuthUser,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let feature = match path {
        Ok(Path(f)) if !f.is_empty() && f.len() <= MAX_FEATURE && !f.contains(char::is_control) => {
            f
        }
        _ => {
            return Err(ApiError::bad_request(
                "invalid_feature",
                format!("a feature is named by its lookup key: 1 to {MAX_FEATURE} characters"),
            ));
        }
    };
    let conn = &mut *state.db.pool.acquire().await?;
    match entitlements::user_has(conn, user.id.as_str(), &feature).await? {
        true => Ok(Json(json!({ "feature": feature, "entitled": true }))),
        false => Err(ApiError::NotEntitled(feature)),
    }
}
