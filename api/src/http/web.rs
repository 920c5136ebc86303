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
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ErrorBody};
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
    Asset { path: "app.js", content_type: JS, body: include_bytes!("../../web/app.js") },
    Asset { path: "app.css", content_type: "text/css; charset=utf-8", body: include_bytes!("../../web/app.css") },
    // The /ws client the page runs on: clients/js's committed build, an ES
    // module per file. Its entry is served under a name of its own; the files
    // it imports (`./client.js`…) under theirs, next to it.
    Asset { path: "courier-client.js", content_type: JS, body: include_bytes!("../../../clients/js/dist/index.js") },
    Asset { path: "client.js", content_type: JS, body: include_bytes!("../../../clients/js/dist/client.js") },
    Asset { path: "backoff.js", content_type: JS, body: include_bytes!("../../../clients/js/dist/backoff.js") },
    Asset { path: "catchup.js", content_type: JS, body: include_bytes!("../../../clients/js/dist/catchup.js") },
    Asset { path: "errors.js", content_type: JS, body: include_bytes!("../../../clients/js/dist/errors.js") },
    Asset { path: "events.js", content_type: JS, body: include_bytes!("../../../clients/js/dist/events.js") },
    Asset { path: "log.js", content_type: JS, body: include_bytes!("../../../clients/js/dist/log.js") },
];

const JS: &str = "text/javascript; charset=utf-8";

/// `GET /` and `GET /web/{file}`.
#[utoipa::path(
    get, path = "/", tag = "web", operation_id = "webPage",
    responses((status = 200, description = "The built-in chat page.", content_type = "text/html", body = String)),
)]
pub async fn index() -> Response {
    asset("index.html")
}

/// A file of the chat page: `index.html`, `app.js`, `app.css`, and the /ws client's modules (`courier-client.js`…).
#[utoipa::path(
    get, path = "/web/{file}", tag = "web", operation_id = "webFile",
    params(("file" = String, Path, description = "The file's name.")),
    responses(
        (status = 200, description = "The file.", content(
            (String = "text/javascript"),
            (String = "text/css"),
            (String = "text/html"),
        )),
        (status = 404, description = "`not_found`: no such file.", body = ErrorBody),
    ),
)]
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

/// Who the development token is for.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DevTokenRequest {
    user_id: String,
    /// Display name (the `name` claim).
    name: Option<String>,
}

/// A development token.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DevToken {
    /// An HS256 JWT, valid for 12 hours.
    token: String,
    user_id: String,
}

/// `POST /api/dev/token {userId, name?}` → `{token, userId}`; 404 unless `--dev-tokens`.
#[utoipa::path(
    post, path = "/dev/token", tag = "dev", operation_id = "devToken",
    request_body = DevTokenRequest,
    responses(
        (status = 200, description = "A signed token for the user.", body = DevToken),
        (status = 400, description = "`invalid_json`, `invalid_payload`: e.g. a bad user id.", body = ErrorBody),
        (status = 404, description = "`not_found`: development tokens are off (the default; `DEV_TOKENS=true` turns them on).", body = ErrorBody),
        (status = 500, description = "`internal`: the token could not be signed.", body = ErrorBody),
    ),
)]
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
    Ok((StatusCode::OK, Json(DevToken { token, user_id: body.user_id })).into_response())
}

#[cfg(test)]
mod tests {
    use super::ASSETS;

    /// A module the client's build adds must be embedded too, or the page
    /// fails to import it: every file of clients/js/dist is served.
    #[test]
    fn every_module_of_the_client_build_is_served() {
        let dist = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../clients/js/dist");
        let entries = std::fs::read_dir(&dist).unwrap_or_else(|error| panic!("{}: {error}", dist.display()));
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(module) = name.strip_suffix(".js") else { continue };
            let served = if module == "index" { "courier-client.js".to_owned() } else { name.clone() };
            let asset = ASSETS.iter().find(|asset| asset.path == served);
            let body = std::fs::read(entry.path()).unwrap_or_default();
            assert!(asset.is_some_and(|asset| asset.body == body.as_slice()), "clients/js/dist/{name} is not served as /web/{served}");
        }
    }
}
