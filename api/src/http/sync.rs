//! `GET /api/sync`: catch-up by cursor. A client that keeps its own store, or
//! a new device, reads what it lacks in every chat from per-chat seqs, in
//! pages, without waiting for a drain.

use axum::{
    Json,
    extract::{Query, State, rejection::QueryRejection},
};
use courier_shared::db::sync::{self, Cursors, SyncPage};
use serde::Deserialize;

use super::{
    auth::AuthUser,
    error::{ApiError, ErrorBody},
};
use crate::state::AppState;

const DEFAULT_PAGE: i64 = 500;
const MAX_PAGE: i64 = 1000;

/// Where to start, and how much to return.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SyncQuery {
    /// `chatId:seq,chatId:seq`: the highest seq the client has per chat
    /// (a chat not named starts at the caller's join).
    cursors: Option<String>,
    /// Most entries in the page, 1 to 1000 (default 500).
    limit: Option<i64>,
}

/// `GET /api/sync?cursors=<chatId>:<seq>,…&limit=N`: entries of the caller's
/// chats past the cursors in (chat id, seq) order, every member's receipts,
/// the cursors to pass next time and whether more entries are waiting.
#[utoipa::path(
    get, path = "/sync", tag = "sync", operation_id = "sync",
    params(SyncQuery),
    responses(
        (status = 200, description = "A page of catch-up.", body = SyncPage),
        (status = 400, description = "`invalid_payload`: malformed cursors.", body = ErrorBody),
        (status = 403, description = "`not_member`: a cursor names a chat the caller is not in.", body = ErrorBody),
    ),
    security(("bearer" = []), ("token" = [])),
)]
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
