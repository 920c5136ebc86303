//! `GET /ws` as the OpenAPI document describes it: the HTTP handshake that
//! opens a socket. What flows on the socket afterwards is not REST: the
//! frames are in docs/protocol.md.

use axum::{
    extract::{Query, State, WebSocketUpgrade, rejection::QueryRejection},
    response::Response,
};

use super::{
    auth::AuthUser,
    error::{ApiError, ErrorBody},
};
use crate::{
    state::AppState,
    ws::{self, UpgradeQuery},
};

/// Opens a WebSocket.
// The socket's handler is `ws::upgrade`; this one only carries its description.
#[utoipa::path(
    get, path = "/ws", tag = "socket", operation_id = "openSocket",
    description = "A WebSocket handshake (browsers pass the token as `?token=`, as they cannot set headers on a WebSocket). After `101`, both sides speak the JSON frames of docs/protocol.md.",
    params(
        ("deviceId" = Option<String>, Query, description = "The device this connection is (ignored when the token has a `did` claim); absent, the user's one default device."),
        ("statuses" = Option<String>, Query, description = "`receipts`: `receipt` events only, no `message:status` per message; `all` (the default): both."),
    ),
    responses(
        (status = 101, description = "Switching Protocols: the socket is open."),
        (status = 400, description = "`invalid_payload` (a bad `deviceId` or `statuses`), or not a WebSocket handshake (plain text).", body = ErrorBody),
        (status = 403, description = "`device_revoked`: the device was revoked and may not connect again.", body = ErrorBody),
        (status = 409, description = "`too_many_devices`: a new device would exceed MAX_DEVICES_PER_USER.", body = ErrorBody),
    ),
    security(("bearer" = []), ("token" = [])),
)]
pub async fn websocket(
    state: State<AppState>,
    user: AuthUser,
    query: Result<Query<UpgradeQuery>, QueryRejection>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    ws::upgrade(state, user, query, upgrade).await
}
