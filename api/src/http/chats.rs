//! `/api/chats`: create, list, and manage members.

use axum::{
    Json,
    extract::{Path, State, rejection::{JsonRejection, PathRejection}},
    http::StatusCode,
};
use courier_shared::db::chats::{self, Chat, ChatKind, NewChat};
use serde::Deserialize;
use uuid::Uuid;

use super::{auth::AuthUser, error::ApiError};
use crate::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateChat {
    #[serde(rename = "type")]
    kind: ChatKind,
    #[serde(default)]
    members: Vec<String>,
    #[serde(default)]
    name: Option<String>,
}

/// `POST /api/chats`: 201 with the chat; 200 with the existing one for a known direct pair.
pub async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    body: Result<Json<CreateChat>, JsonRejection>,
) -> Result<(StatusCode, Json<Chat>), ApiError> {
    let Json(body) = body?;
    let request = NewChat { kind: body.kind, name: body.name, members: body.members };
    let (chat, created) = chats::create(&state.db, user.id(), request).await?;
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(chat)))
}

/// `GET /api/chats`: the caller's chats.
pub async fn list(State(state): State<AppState>, user: AuthUser) -> Result<Json<Vec<Chat>>, ApiError> {
    Ok(Json(chats::list(&state.db, user.id()).await?))
}

/// `GET /api/chats/{id}`.
pub async fn get(
    State(state): State<AppState>,
    user: AuthUser,
    chat_id: Result<Path<Uuid>, PathRejection>,
) -> Result<Json<Chat>, ApiError> {
    let Path(chat_id) = chat_id?;
    Ok(Json(chats::get(&state.db, user.id(), chat_id).await?))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddMember {
    user_id: String,
}

/// `POST /api/chats/{id}/members {userId}`: members only; 201 added, 200 already a member.
pub async fn add_member(
    State(state): State<AppState>,
    user: AuthUser,
    chat_id: Result<Path<Uuid>, PathRejection>,
    body: Result<Json<AddMember>, JsonRejection>,
) -> Result<(StatusCode, Json<Chat>), ApiError> {
    let Path(chat_id) = chat_id?;
    let Json(body) = body?;
    let added = chats::add_member(&state.db, user.id(), chat_id, &body.user_id).await?;
    let chat = chats::get(&state.db, user.id(), chat_id).await?;
    Ok((if added { StatusCode::CREATED } else { StatusCode::OK }, Json(chat)))
}

/// `DELETE /api/chats/{id}/members/{userId}`: members only; 204.
pub async fn remove_member(
    State(state): State<AppState>,
    user: AuthUser,
    path: Result<Path<(Uuid, String)>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path((chat_id, member)) = path?;
    chats::remove_member(&state.db, user.id(), chat_id, &member).await?;
    Ok(StatusCode::NO_CONTENT)
}
