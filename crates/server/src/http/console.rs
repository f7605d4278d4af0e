//! The web console at `/`: one page and its script and style sheet, embedded in the
//! binary (plain JavaScript and CSS, no build step). It talks to the same API as any
//! caller: it logs in with `POST /v1/session` and keeps the bearer token it gets in the
//! tab's session storage (no cookie, so another site cannot make the browser use it), runs
//! statements as asynchronous executions (so it can cancel them and page their results),
//! and reads the catalog, `system.queries`, `system.materialized_views` and
//! `system.crawls`. It writes data into the page only as text, never as markup.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::query::{Api, error_response};
use tarn_lake::error::Error;

const PAGE: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");
const STYLE: &str = include_str!("console/console.css");

/// `GET /`.
pub(crate) async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
        .into_response()
}

/// `GET /console.js`.
pub(crate) async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        SCRIPT,
    )
        .into_response()
}

/// `GET /console.css`.
pub(crate) async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        STYLE,
    )
        .into_response()
}

/// The body of `POST /v1/session`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Login {
    user: String,
    password: String,
}

/// Who the caller is, and the token to send as `Authorization: Bearer …` (after a login).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct SessionView {
    user: String,
    /// `admin` or `reader`.
    role: String,
    /// Whether the server asks for credentials at all.
    authentication: bool,
    token: Option<String>,
}

/// `GET /v1/session`: the caller of the request's credentials.
#[utoipa::path(get, path = "/v1/session", tag = "operations",
    responses((status = 200, body = SessionView), super::openapi::Errors),
    security((), ("bearer" = []), ("basic" = [])))]
pub(crate) async fn whoami(State(api): State<Api>, headers: HeaderMap) -> Response {
    match api.authenticate(&headers) {
        Ok(caller) => Json(SessionView {
            role: caller.role.to_string(),
            user: caller.name,
            authentication: api.auth.enabled(),
            token: None,
        })
        .into_response(),
        Err(e) => error_response(e),
    }
}

/// `POST /v1/session`: logs a user in with their password; answers a bearer token.
#[utoipa::path(post, path = "/v1/session", tag = "operations", request_body = Login,
    responses((status = 200, body = SessionView), super::openapi::Errors))]
pub(crate) async fn login(State(api): State<Api>, body: axum::body::Bytes) -> Response {
    let login: Login = match serde_json::from_slice(&body) {
        Ok(login) => login,
        Err(e) => {
            return error_response(Error::InvalidArgument(format!(
                "the body is not a login ({e}); send {{\"user\": …, \"password\": …}}"
            )));
        }
    };
    let caller = if api.auth.enabled() {
        match api.auth.login(&login.user, &login.password) {
            Ok(caller) => caller,
            Err(e) => return error_response(e),
        }
    } else {
        crate::auth::Caller::anonymous()
    };
    Json(SessionView {
        token: Some(api.auth.issue(&caller)),
        role: caller.role.to_string(),
        user: caller.name,
        authentication: api.auth.enabled(),
    })
    .into_response()
}
