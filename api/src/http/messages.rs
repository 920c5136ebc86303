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

use super::{auth::AuthUser, error::ApiError};
use crate::{events, state::AppState};

const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 200;

#[derive(Debug, Deserialize)]
pub struct HistoryQuery {
    before: Option<i64>,
    after: Option<i64>,
    limit: Option<i64>,
}

/// `GET /api/chats/{id}/messages?before=SEQ&limit=N`: newest first;
/// `?after=SEQ&limit=N`: oldest first, for catching up from a seq the client has.
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

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SendBody {
    content: String,
    #[serde(default)]
    message_type: Option<String>,
    #[serde(default)]
    client_msg_id: Option<String>,
    #[serde(default)]
    reply_to: Option<Uuid>,
}

/// `POST /api/chats/{id}/messages`: the WebSocket send path over HTTP.
/// 201 for a new message, 200 when `clientMsgId` named an existing one.
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
