//! Client-facing errors: a stable snake_case code plus a human message.

use serde::Serialize;

/// Every error a client can see. The code strings are part of the protocol: never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Missing, malformed, expired or forged credentials.
    Unauthorized,
    /// Authenticated, but this action needs a role the caller lacks.
    Forbidden,
    /// The caller is not a member of the chat, or the chat does not exist (indistinguishable on purpose).
    NotMember,
    /// The resource does not exist or is not visible to the caller.
    NotFound,
    /// A frame or body that is not valid JSON.
    InvalidJson,
    /// Valid JSON without the `{event, data, id}` shape.
    InvalidFrame,
    /// A frame naming an event the server does not know.
    UnknownEvent,
    /// An event or body whose fields are missing or of the wrong type.
    InvalidPayload,
    /// Message content that is empty.
    ContentEmpty,
    /// Message content over the size limit.
    ContentTooLarge,
    /// A `messageType` outside the allowed set.
    InvalidMessageType,
    /// A binary WebSocket frame; the protocol is JSON text.
    BinaryNotSupported,
    /// A frame or body over the size limit.
    PayloadTooLarge,
    /// A `clientMsgId` reused for a different chat.
    ClientMsgIdConflict,
    /// A change not allowed in the resource's current state (e.g. adding members to a direct chat).
    Conflict,
    /// An `ack` for a frame id the server never sent on this connection.
    UnknownFrame,
    /// Too many requests; retry later.
    RateLimited,
    /// A new device would exceed MAX_DEVICES_PER_USER: revoke one first (`DELETE /api/devices/{id}`).
    TooManyDevices,
    /// The device was revoked (`DELETE /api/devices/{id}`); it may not connect again.
    DeviceRevoked,
    /// Editing or deleting someone else's message.
    NotSender,
    /// The message is older than EDIT_WINDOW / DELETE_WINDOW.
    WindowPassed,
    /// The message was deleted for everyone; it cannot be edited, deleted or reacted to again.
    AlreadyDeleted,
    /// `replyTo` names a message of another chat.
    OtherChat,
    /// A new emoji on a message that already has MAX_DISTINCT_REACTIONS distinct ones.
    TooManyReactions,
    /// A dependency (database, broker) is unavailable; safe to retry with the same clientMsgId.
    Unavailable,
    /// A bug on our side.
    Internal,
}

impl ErrorCode {
    /// The HTTP status this code maps to on the REST API.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden | ErrorCode::NotMember | ErrorCode::DeviceRevoked | ErrorCode::NotSender => 403,
            ErrorCode::NotFound | ErrorCode::UnknownFrame => 404,
            ErrorCode::InvalidJson
            | ErrorCode::InvalidFrame
            | ErrorCode::UnknownEvent
            | ErrorCode::InvalidPayload
            | ErrorCode::ContentEmpty
            | ErrorCode::InvalidMessageType
            | ErrorCode::BinaryNotSupported
            | ErrorCode::OtherChat => 400,
            ErrorCode::ClientMsgIdConflict
            | ErrorCode::Conflict
            | ErrorCode::TooManyDevices
            | ErrorCode::WindowPassed
            | ErrorCode::AlreadyDeleted
            | ErrorCode::TooManyReactions => 409,
            ErrorCode::ContentTooLarge | ErrorCode::PayloadTooLarge => 413,
            ErrorCode::RateLimited => 429,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
        }
    }

    /// The snake_case code string.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotMember => "not_member",
            ErrorCode::NotFound => "not_found",
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidFrame => "invalid_frame",
            ErrorCode::UnknownEvent => "unknown_event",
            ErrorCode::InvalidPayload => "invalid_payload",
            ErrorCode::ContentEmpty => "content_empty",
            ErrorCode::ContentTooLarge => "content_too_large",
            ErrorCode::InvalidMessageType => "invalid_message_type",
            ErrorCode::BinaryNotSupported => "binary_not_supported",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::ClientMsgIdConflict => "client_msg_id_conflict",
            ErrorCode::Conflict => "conflict",
            ErrorCode::UnknownFrame => "unknown_frame",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooManyDevices => "too_many_devices",
            ErrorCode::DeviceRevoked => "device_revoked",
            ErrorCode::NotSender => "not_sender",
            ErrorCode::WindowPassed => "window_passed",
            ErrorCode::AlreadyDeleted => "already_deleted",
            ErrorCode::OtherChat => "other_chat",
            ErrorCode::TooManyReactions => "too_many_reactions",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

/// An error reported to a client: `{"code": "...", "message": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error, utoipa::ToSchema, schemars::JsonSchema)]
#[error("{code:?}: {message}")]
pub struct ClientError {
    pub code: ErrorCode,
    pub message: String,
}

impl ClientError {
    /// An error with the given code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    /// The error for a chat the caller may not see: same for "missing" and "not a member".
    pub fn not_member() -> Self {
        Self::new(ErrorCode::NotMember, "not a member of this chat")
    }

    /// A retryable dependency failure; the detail goes to the log, not the client.
    pub fn unavailable(what: &str) -> Self {
        Self::new(ErrorCode::Unavailable, format!("{what} is unavailable, retry later"))
    }

    pub fn invalid_payload(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidPayload, message)
    }
}

impl From<sqlx::Error> for ClientError {
    fn from(error: sqlx::Error) -> Self {
        tracing::warn!(%error, "database error");
        match error {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_) => ClientError::unavailable("the database"),
            sqlx::Error::Database(ref db) if is_transient(db.code().as_deref()) => {
                ClientError::unavailable("the database")
            }
            _ => ClientError::new(ErrorCode::Internal, "internal error"),
        }
    }
}

/// SQLSTATEs that mean "try again": connection failures, shutdown, serialization failures, deadlocks.
fn is_transient(code: Option<&str>) -> bool {
    matches!(
        code,
        Some(c) if c.starts_with("08") || c.starts_with("57P") || c == "40001" || c == "40P01" || c == "53300"
    )
}
