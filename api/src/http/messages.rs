//! `/api/chats/{id}/messages`: history and the REST send.

use axum::{
    Json,
    extract::{Path, Query, State, rejection::{JsonRejection, PathRejection, QueryRejection}},
    http::StatusCode,
};
use courier_shared::{
    ClientError,
    db::messages::{self, HistoryMessage, HistoryPage},
    protocol::{SendMessage, SentMessage},
};
use serde::Deserialize;
use uuid::Uuid;

use super::{
    auth::AuthUser,
    error::{ApiError, ErrorBody},
};
use crate::{events, state::AppState};

const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 200;

/// A page of history: `before` (newest first) or `after` (oldest first), not both.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Messages with a lower seq, newest first (absent: from the newest).
    before: Option<i64>,
    /// Messages with a higher seq, oldest first: catching up from a seq the client has.
    after: Option<i64>,
    /// Page size, 1 to 200 (default 50).
    limit: Option<i64>,
}

/// `GET /api/chats/{id}/messages?before=SEQ&limit=N`: newest first;
/// `?after=SEQ&limit=N`: oldest first, for catching up from a seq the client has.
#[utoipa::path(
    get, path = "/chats/{chat_id}/messages", tag = "messages", operation_id = "listMessages",
    params(("chat_id" = Uuid, Path, description = "The chat."), HistoryQuery),
    responses(
        (status = 200, description = "A page of messages; the caller's own carry per-recipient `statuses`.", body = Vec<HistoryMessage>),
        (status = 400, description = "`invalid_payload`: a bad id or query, or `before` with `after`.", body = ErrorBody),
        (status = 403, description = "`not_member`.", body = ErrorBody),
    ),
    security(("bearer" = []), ("token" = [])),
)]
pub async fn history(
    State(state): State<AppState>,
    user: AuthUser,
    chat_id: Result<Path<Uuid>, PathRejection>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Json<Vec<HistoryMessage>>, ApiError> {
    let Path(chat_id) = chat_id?;
    let Query(query) = query?;
    let page = match (query.before, query.after) {
        (before, None) => HistoryPage::Before(before),
        (None, Some(after)) => HistoryPage::After(after),
        (Some(_), Some(_)) => {
            return Err(ClientError::invalid_payload(
                "`before` and `after` cannot be combined: page newest-first with `before` or oldest-first with `after`",
            )
            .into());
        }
    };
    let limit = query.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    Ok(Json(messages::history(&state.db, user.id(), chat_id, page, limit).await?))
}

/// A message to send, as `message:send` takes it (the chat is in the path).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SendBody {
    /// Not empty, at most 64 KiB.
    content: String,
    /// `text` (the default) or another allowed type.
    #[serde(default)]
    message_type: Option<String>,
    /// The client's id for the message: a resend with the same one is answered
    /// with the stored message (200), never stored twice.
    #[serde(default)]
    client_msg_id: Option<String>,
    /// The message of the same chat this one answers.
    #[serde(default)]
    reply_to: Option<Uuid>,
}

/// `POST /api/chats/{id}/messages`: the WebSocket send path over HTTP.
/// 201 for a new message, 200 when `clientMsgId` named an existing one.
#[utoipa::path(
    post, path = "/chats/{chat_id}/messages", tag = "messages", operation_id = "sendMessage",
    params(("chat_id" = Uuid, Path, description = "The chat.")),
    request_body = SendBody,
    responses(
        (status = 201, description = "Stored: ✓ sent.", body = SentMessage),
        (status = 200, description = "A resend: `clientMsgId` named a message already stored.", body = SentMessage),
        (status = 400, description = "`invalid_json`, `invalid_payload`, `content_empty`, `invalid_message_type`, `other_chat` (`replyTo` of another chat).", body = ErrorBody),
        (status = 403, description = "`not_member`.", body = ErrorBody),
        (status = 409, description = "`client_msg_id_conflict`: the `clientMsgId` was used in another chat.", body = ErrorBody),
        (status = 413, description = "`content_too_large`, `payload_too_large`.", body = ErrorBody),
    ),
    security(("bearer" = []), ("token" = [])),
)]
pub async fn send(
    State(state): State<AppState>,
    user: AuthUser,
    chat_id: Result<Path<Uuid>, PathRejection>,
    body: Result<Json<SendBody>, JsonRejection>,
) -> Result<(StatusCode, Json<SentMessage>), ApiError> {
    let Path(chat_id) = chat_id?;
    let Json(body) = body?;
    let send = SendMessage {
        chat_id,
        content: body.content,
        message_type: body.message_type.unwrap_or_else(|| "text".into()),
        client_msg_id: body.client_msg_id,
        reply_to: body.reply_to,
    };
    let stored = events::send_message(&state, user.id(), user.claims.did.as_deref(), send).await?;
    let status = if stored.duplicate { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(stored.sent)))
}
