//! `GET /api/sync`: catch-up by cursor. A client that keeps its own store, or
//! a new device, reads what it lacks in every chat from per-chat seqs, in
//! pages, without waiting for a drain.

use axum::{
    Json,
    extract::{Query, State, rejection::QueryRejection},
};
use courier_shared::db::sync::{self, Cursors, SyncPage};
use serde::Deserialize;

use super::{auth::AuthUser, error::ApiError};
use crate::state::AppState;

const DEFAULT_PAGE: i64 = 500;
const MAX_PAGE: i64 = 1000;

#[derive(Debug, Deserialize)]
pub struct SyncQuery {
    /// `chatId:seq,chatId:seq`: the highest seq the client has per chat.
    cursors: Option<String>,
    limit: Option<i64>,
}

/// `GET /api/sync?cursors=<chatId>:<seq>,…&limit=N`: entries of the caller's
/// chats past the cursors in (chat id, seq) order, every member's receipts,
/// the cursors to pass next time and whether more entries are waiting.
pub async fn sync(
    State(state): State<AppState>,
    user: AuthUser,
    query: Result<Query<SyncQuery>, QueryRejection>,
) -> Result<Json<SyncPage>, ApiError> {
    let Query(query) = query?;
    let cursors: Cursors = query.cursors.as_deref().unwrap_or_default().parse()?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    Ok(Json(sync::sync(&state.db, user.id(), &cursors, limit).await?))
}
