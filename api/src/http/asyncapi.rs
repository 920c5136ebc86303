//! `GET /api/asyncapi.json`: the AsyncAPI 3.0 document of the socket
//! protocol (`courier_shared::asyncapi`), as docs/asyncapi.json holds it.

use std::sync::LazyLock;

use axum::{
    http::header::CONTENT_TYPE,
    response::{IntoResponse, Response},
};

/// Built once: the document does not change while the process runs.
static DOCUMENT: LazyLock<String> = LazyLock::new(courier_shared::asyncapi::document_json);

/// `GET /api/asyncapi.json`.
#[utoipa::path(
    get, path = "/asyncapi.json", tag = "docs", operation_id = "asyncapi",
    responses((status = 200, description = "The AsyncAPI 3.0 document of the socket events (`/ws`, and Socket.IO's payloads).", body = serde_json::Value)),
)]
pub async fn document_json() -> Response {
    ([(CONTENT_TYPE, "application/json")], DOCUMENT.as_str()).into_response()
}
