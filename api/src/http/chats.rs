//! `/api/chats`: create, list, and manage members.

use axum::{
    Json,
    extract::{Path, State, rejection::{JsonRejection, PathRejection}},
    http::StatusCode,
};
use courier_shared::db::chats::{self, Chat, ChatKind, NewChat};
use serde::Deserialize;
use uuid::Uuid;

use super::{
    auth::AuthUser,
    error::{ApiError, ErrorBody},
};
use crate::state::AppState;

/// A new chat: a direct chat names the one other member, a group any number.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateChat {
    #[serde(rename = "type")]
    kind: ChatKind,
    /// User ids besides the caller.
    #[serde(default)]
    members: Vec<String>,
    /// A group's name.
    #[serde(default)]
    name: Option<String>,
}

/// `POST /api/chats`: 201 with the chat; 200 with the existing one for a known direct pair.
#[utoipa::path(
    post, path = "/chats", tag = "chats", operation_id = "createChat",
    request_body = CreateChat,
    responses(
        (status = 201, description = "The chat, created.", body = Chat),
        (status = 200, description = "The existing direct chat of the pair.", body = Chat),
        (status = 400, description = "`invalid_json`, `invalid_payload` (e.g. a direct chat without exactly one other member).", body = ErrorBody),
    ),
    security(("bearer" = []), ("token" = [])),
)]
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
#[utoipa::path(
    get, path = "/chats", tag = "chats", operation_id = "listChats",
    responses((status = 200, description = "The caller's chats, with members and unread counts.", body = Vec<Chat>)),
    security(("bearer" = []), ("token" = [])),
)]
pub async fn list(State(state): State<AppState>, user: AuthUser) -> Result<Json<Vec<Chat>>, ApiError> {
    Ok(Json(chats::list(&state.db, user.id()).await?))
}

/// `GET /api/chats/{id}`.
#[utoipa::path(
    get, path = "/chats/{chat_id}", tag = "chats", operation_id = "getChat",
    params(("chat_id" = Uuid, Path, description = "The chat.")),
    responses(
        (status = 200, description = "The chat.", body = Chat),
        (status = 400, description = "`invalid_payload`: the id is not a UUID.", body = ErrorBody),
        (status = 403, description = "`not_member`: the chat does not exist or the caller is not in it.", body = ErrorBody),
    ),
    security(("bearer" = []), ("token" = [])),
)]
pub async fn get(
    State(state): State<AppState>,
    user: AuthUser,
    chat_id: Result<Path<Uuid>, PathRejection>,
) -> Result<Json<Chat>, ApiError> {
    let Path(chat_id) = chat_id?;
    Ok(Json(chats::get(&state.db, user.id(), chat_id).await?))
}

/// The user to add to a group.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddMember {
    user_id: String,
}

/// `POST /api/chats/{id}/members {userId}`: members only; 201 added, 200 already a member.
#[utoipa::path(
    post, path = "/chats/{chat_id}/members", tag = "chats", operation_id = "addMember",
    params(("chat_id" = Uuid, Path, description = "The group.")),
    request_body = AddMember,
    responses(
        (status = 201, description = "Added; the chat as it is now.", body = Chat),
        (status = 200, description = "Already a member; the chat.", body = Chat),
        (status = 400, description = "`invalid_json`, `invalid_payload`.", body = ErrorBody),
        (status = 403, description = "`not_member`: the caller is not in the chat.", body = ErrorBody),
        (status = 409, description = "`conflict`: a direct chat, or a group at its member limit.", body = ErrorBody),
    ),
    security(("bearer" = []), ("token" = [])),
)]
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
#[utoipa::path(
    delete, path = "/chats/{chat_id}/members/{user_id}", tag = "chats", operation_id = "removeMember",
    params(
        ("chat_id" = Uuid, Path, description = "The group."),
        ("user_id" = String, Path, description = "The member to remove (the caller, to leave)."),
    ),
    responses(
        (status = 204, description = "Removed."),
        (status = 400, description = "`invalid_payload`.", body = ErrorBody),
        (status = 403, description = "`not_member`: the caller is not in the chat.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such member.", body = ErrorBody),
        (status = 409, description = "`conflict`: members of a direct chat cannot be removed.", body = ErrorBody),
    ),
    security(("bearer" = []), ("token" = [])),
)]
pub async fn remove_member(
    State(state): State<AppState>,
    user: AuthUser,
    path: Result<Path<(Uuid, String)>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path((chat_id, member)) = path?;
    chats::remove_member(&state.db, user.id(), chat_id, &member).await?;
    Ok(StatusCode::NO_CONTENT)
}
