//! The demo: a page a frontend developer can read and copy, and the stand-in for the auth proxy
//! that sits in front of the service in a cluster (Oathkeeper there). The page is the frontend
//! (`FRONTEND_URL`, so Checkout and the portal come back to it); calls to `/billing/*` are passed
//! on to the service with `x-user-id`/`x-user-email` taken from the user picked on the page (a
//! cookie), as the proxy would set them from a session. There is no login: anyone may be anyone.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{any, get};
use billing_service::db::Db;
use billing_service::tables::events::{self, Filter};

const PAGE: &str = include_str!("../assets/demo.html");

/// The cookie the page sets: `<user id>|<email>`, URL-encoded.
const USER_COOKIE: &str = "demo_user";

#[derive(Clone)]
struct Demo {
    service: String,
    http: reqwest::Client,
    db: Db,
}

/// `service` is the service's base URL (`http://127.0.0.1:8080`); `db` its database, for the
/// events panel.
pub fn router(service: String, db: Db) -> Router {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default();
    Router::new()
        .route("/", get(page))
        .route("/billing/confirmation", get(page))
        .route("/demo/events", get(recent_events))
        .route("/billing/{*rest}", any(to_service))
        .with_state(Demo { service, http, db })
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

/// The newest events the service stored, as `billing-service events list --json` shows them.
async fn recent_events(State(demo): State<Demo>) -> Response {
    let filter = Filter {
        status: None,
        event_type: None,
        limit: 30,
    };
    match events::list(&demo.db, &filter).await {
        Ok(rows) => axum::Json(rows).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

/// The user the page picked, from its cookie.
fn user(headers: &HeaderMap) -> Option<(String, String)> {
    let cookies = headers.get(header::COOKIE)?.to_str().ok()?;
    let value = cookies
        .split(';')
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == USER_COOKIE)?
        .1;
    let decoded: String = form_urlencoded::parse(format!("u={value}").as_bytes())
        .next()?
        .1
        .into_owned();
    let (id, email) = decoded.split_once('|')?;
    Some((id.to_owned(), email.to_owned()))
}

async fn to_service(
    State(demo): State<Demo>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let target = format!(
        "{}{}",
        demo.service,
        uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut request = demo.http.request(method, target).body(body);
    if let Some(content_type) = headers.get(header::CONTENT_TYPE) {
        request = request.header(header::CONTENT_TYPE, content_type);
    }
    // As the proxy does: what the browser sent under these names never reaches the service.
    if let Some((id, email)) = user(&headers) {
        request = request
            .header("x-user-id", id)
            .header("x-user-email", email);
    }
    let answer = match request.send().await {
        Ok(answer) => answer,
        Err(e) => {
            return (
                StatusCode::BAD_GATEWAY,
                format!("the service cannot be reached: {e}"),
            )
                .into_response();
        }
    };
    let status = answer.status();
    let mut out = HeaderMap::new();
    for name in [header::CONTENT_TYPE, header::LOCATION] {
        if let Some(value) = answer.headers().get(&name) {
            out.insert(name, value.clone());
        }
    }
    let body = answer.bytes().await.unwrap_or_default();
    (status, out, body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_comes_from_the_page_s_cookie() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "a=b; demo_user=u-7%7Cu7%40example.com".parse().unwrap(),
        );
        assert_eq!(
            user(&headers),
            Some(("u-7".to_owned(), "u7@example.com".to_owned()))
        );
        headers.insert(header::COOKIE, "demo_user=nobar".parse().unwrap());
        assert_eq!(user(&headers), None);
    }
}
