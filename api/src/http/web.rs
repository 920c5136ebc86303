//! The built-in chat page at `/` (static files compiled into the binary), and
//! `POST /api/dev/token` for signing in to it without an identity provider.

use std::time::Duration;

use axum::{
    Json,
    extract::{State, rejection::JsonRejection},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use courier_shared::{ClientError, ErrorCode, auth};
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use crate::state::AppState;

/// How long a dev token lasts.
const DEV_TOKEN_TTL: Duration = Duration::from_secs(12 * 3600);

/// One embedded file: path, content type, bytes.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset { path: "index.html", content_type: "text/html; charset=utf-8", body: include_bytes!("../../web/index.html") },
    Asset { path: "app.js", content_type: "text/javascript; charset=utf-8", body: include_bytes!("../../web/app.js") },
    Asset { path: "app.css", content_type: "text/css; charset=utf-8", body: include_bytes!("../../web/app.css") },
    Asset {
        path: "socket.io.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/socket.io.min.js"),
    },
];

/// `GET /` and `GET /web/{file}`.
pub async fn index() -> Response {
    asset("index.html")
}

pub async fn file(axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    asset(&name)
}

fn asset(name: &str) -> Response {
    match ASSETS.iter().find(|asset| asset.path == name) {
        Some(asset) => ([(header::CONTENT_TYPE, asset.content_type), (header::CACHE_CONTROL, "no-cache")], asset.body)
            .into_response(),
        None => ApiError(ClientError::new(ErrorCode::NotFound, "no such file")).into_response(),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DevTokenRequest {
    user_id: String,
    name: Option<String>,
}

/// `POST /api/dev/token {userId, name?}` → `{token, userId}`; 404 unless `--dev-tokens`.
pub async fn dev_token(
    State(state): State<AppState>,
    body: Result<Json<DevTokenRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    if !state.config.dev_tokens {
        return Err(ApiError(ClientError::new(ErrorCode::NotFound, "no such route")));
    }
    let Json(body) = body?;
    auth::validate_user_id(&body.user_id)?;
    let name = body.name.map(|name| name.trim().chars().take(64).collect::<String>()).filter(|name| !name.is_empty());
    let request = auth::DevTokenRequest { user_id: body.user_id.clone(), name, ttl: DEV_TOKEN_TTL, ..Default::default() };
    // The secret the server verifies with (dev tokens allow the built-in one).
    let secret = state.config.jwt.hs256_secret(true).map_err(|error| {
        tracing::error!(%error, "cannot sign a dev token");
        ClientError::new(ErrorCode::Internal, "cannot sign a token")
    })?;
    let token = auth::sign_hs256(secret, &request).map_err(|error| {
        tracing::error!(%error, "cannot sign a dev token");
        ClientError::new(ErrorCode::Internal, "cannot sign a token")
    })?;
    Ok((StatusCode::OK, Json(json!({ "token": token, "userId": body.user_id }))).into_response())
}
