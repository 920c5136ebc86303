//! The client protocol: events and payloads shared by `/ws` (JSON frames) and
//! later transports. Names and payloads follow the guide's "Socket Events Reference".
//!
//! A client frame is `{"event": NAME, "data": {...}, "id": N}`; a frame with an
//! `id` gets exactly one reply, `ack` or `error`, with the same `id`. Server
//! event frames carry their own `id`, which the client echoes in an `ack`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;
use uuid::Uuid;

use crate::error::{ClientError, ErrorCode};

/// Largest message content, in bytes of UTF-8.
pub const MAX_CONTENT_BYTES: usize = 64 * 1024;
/// Largest `clientMsgId`, in bytes.
pub const MAX_CLIENT_MSG_ID_BYTES: usize = 128;
/// The `messageType` values a client may send.
pub const MESSAGE_TYPES: &[&str] = &["text", "image", "video", "audio", "file", "location", "sticker"];
/// Largest reaction emoji, in bytes of UTF-8 (a flag or a skin-toned family fits).
pub const MAX_EMOJI_BYTES: usize = 32;
/// Most distinct emoji one message may carry.
pub const MAX_DISTINCT_REACTIONS: usize = 20;
/// Characters of the original a reply quotes.
pub const QUOTE_CHARS: usize = 100;

/// Event names, client to server.
pub mod client_events {
    pub const SEND: &str = "message:send";
    pub const DELIVERED: &str = "message:delivered";
    pub const READ: &str = "message:read";
    pub const EDIT: &str = "message:edit";
    pub const DELETE: &str = "message:delete";
    pub const REACT: &str = "message:react";
    pub const UNREACT: &str = "message:unreact";
    pub const ACK: &str = "ack";
    pub const PING: &str = "ping";
    pub const TYPING_START: &str = "typing:start";
    pub const TYPING_STOP: &str = "typing:stop";
}

/// Event names, server to client.
pub mod server_events {
    pub const ACK: &str = "ack";
    pub const ERROR: &str = "error";
    pub const READY: &str = "session:ready";
    pub const SENT: &str = "message:sent";
    pub const RECEIVE: &str = "message:receive";
    pub const EDITED: &str = "message:edited";
    pub const DELETED: &str = "message:deleted";
    pub const REACTION: &str = "message:reaction";
    pub const STATUS: &str = "message:status";
    pub const USER_ONLINE: &str = "user:online";
    pub const USER_OFFLINE: &str = "user:offline";
    pub const SYNC_DONE: &str = "sync:done";
    pub const RECEIPT: &str = "receipt";
    pub const TYPING: &str = "typing";
}

/// A parsed client event.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    Send(SendMessage),
    Delivered(MessageRef),
    Read(ReadReceipt),
    Edit(EditMessage),
    Delete(DeleteMessage),
    React(ReactionRef),
    Unreact(ReactionRef),
    /// The client's reply to a server frame; the frame's `id` says which.
    Ack,
    Ping,
    /// `typing:start` / `typing:stop`.
    Typing(TypingChange),
}

/// `message:send`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SendMessage {
    pub chat_id: Uuid,
    /// 1 byte to 64 KiB of UTF-8, not blank; stored and returned verbatim.
    #[schemars(length(min = 1, max = MAX_CONTENT_BYTES))]
    pub content: String,
    #[serde(default = "default_message_type")]
    #[schemars(schema_with = "message_type_schema")]
    pub message_type: String,
    /// The sender's idempotency key (1 to 128 bytes, no NUL): a resend with
    /// the same one returns the original message and stores nothing new.
    #[serde(default)]
    #[schemars(length(min = 1, max = MAX_CLIENT_MSG_ID_BYTES))]
    pub client_msg_id: Option<String>,
    /// The message this one answers (same chat).
    #[serde(default)]
    pub reply_to: Option<Uuid>,
}

fn default_message_type() -> String {
    "text".into()
}

/// `messageType`'s schema: one of MESSAGE_TYPES, `text` when absent.
fn message_type_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "string", "enum": MESSAGE_TYPES, "default": "text" })
}

impl SendMessage {
    /// Content, type and idempotency key rules; the database is not consulted.
    pub fn validate(&self) -> Result<(), ClientError> {
        validate_content(&self.content)?;
        if !MESSAGE_TYPES.contains(&self.message_type.as_str()) {
            return Err(ClientError::new(
                ErrorCode::InvalidMessageType,
                format!("messageType must be one of {}", MESSAGE_TYPES.join(", ")),
            ));
        }
        if let Some(id) = &self.client_msg_id
            && (id.is_empty() || id.len() > MAX_CLIENT_MSG_ID_BYTES || id.contains('\0'))
        {
            return Err(ClientError::invalid_payload("clientMsgId must be 1-128 bytes without NUL"));
        }
        Ok(())
    }
}

/// Content rules shared by sends and edits.
fn validate_content(content: &str) -> Result<(), ClientError> {
    if content.trim().is_empty() {
        return Err(ClientError::new(ErrorCode::ContentEmpty, "content is empty"));
    }
    if content.len() > MAX_CONTENT_BYTES {
        return Err(ClientError::new(
            ErrorCode::ContentTooLarge,
            format!("content is {} bytes; the limit is {MAX_CONTENT_BYTES}", content.len()),
        ));
    }
    Ok(())
}

/// `message:edit {messageId, content}`: the sender replaces a message's content.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EditMessage {
    pub message_id: Uuid,
    /// The new content, under the rules of `message:send`'s.
    #[schemars(length(min = 1, max = MAX_CONTENT_BYTES))]
    pub content: String,
}

impl EditMessage {
    pub fn validate(&self) -> Result<(), ClientError> {
        validate_content(&self.content)
    }
}

/// `message:delete {messageId, forMe?}`: for everyone (the sender, within
/// DELETE_WINDOW), or with `forMe: true` hidden from the caller only.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeleteMessage {
    pub message_id: Uuid,
    #[serde(default)]
    pub for_me: bool,
}

/// `message:react` / `message:unreact {messageId, emoji}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReactionRef {
    pub message_id: Uuid,
    /// 1 to 32 bytes of UTF-8 without whitespace or control characters (the
    /// server does not check that it is an emoji).
    #[schemars(length(min = 1, max = MAX_EMOJI_BYTES), regex(pattern = EMOJI_PATTERN))]
    pub emoji: String,
}

/// What an emoji may not contain, as a JSON Schema pattern: whitespace and
/// control characters (`ReactionRef::validate` is the rule; the schema keeps to it).
const EMOJI_PATTERN: &str = r"^[^\s\u0000-\u001f\u007f-\u009f]+$";

impl ReactionRef {
    /// 1 to MAX_EMOJI_BYTES bytes, no whitespace or control characters.
    pub fn validate(&self) -> Result<(), ClientError> {
        if self.emoji.is_empty() || self.emoji.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ClientError::invalid_payload("emoji must be non-empty, without spaces or control characters"));
        }
        if self.emoji.len() > MAX_EMOJI_BYTES {
            return Err(ClientError::new(
                ErrorCode::ContentTooLarge,
                format!("emoji is {} bytes; the limit is {MAX_EMOJI_BYTES}", self.emoji.len()),
            ));
        }
        Ok(())
    }
}

/// What a log entry is. Every entry has its own seq in its chat; all but
/// `message` are about an earlier message of the same chat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    #[default]
    Message,
    Edit,
    Delete,
    React,
    Unreact,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Message => "message",
            EntryKind::Edit => "edit",
            EntryKind::Delete => "delete",
            EntryKind::React => "react",
            EntryKind::Unreact => "unreact",
        }
    }

    /// The kind stored in `messages.kind` (a CHECK constraint keeps it to these).
    pub fn from_db(kind: &str) -> Self {
        match kind {
            "edit" => EntryKind::Edit,
            "delete" => EntryKind::Delete,
            "react" => EntryKind::React,
            "unreact" => EntryKind::Unreact,
            _ => EntryKind::Message,
        }
    }

    pub fn is_message(&self) -> bool {
        *self == EntryKind::Message
    }
}

/// `message:delivered {messageId}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageRef {
    pub message_id: Uuid,
}

/// `message:read`: one message, or everything in a chat up to a seq.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum ReadReceipt {
    #[serde(rename_all = "camelCase")]
    UpTo { chat_id: Uuid, up_to_seq: i64 },
    #[serde(rename_all = "camelCase")]
    One { message_id: Uuid },
}

/// `typing:start {chatId}` / `typing:stop {chatId}`: the data both carry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TypingData {
    pub chat_id: Uuid,
}

impl TypingData {
    fn typing(self, typing: bool) -> TypingChange {
        TypingChange { chat_id: self.chat_id, typing }
    }
}

/// A parsed `typing:start` (`typing: true`) or `typing:stop` (`false`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypingChange {
    pub chat_id: Uuid,
    pub typing: bool,
}

/// How long a `typing: true` stands without a newer event for the same
/// member and chat; its `expiresInMs`, so a client hides it without a stop.
pub const TYPING_TTL_MS: u64 = 6_000;

/// `typing`: member `userId` started (`typing: true`) or stopped typing in
/// `chatId`. Ephemeral: never stored, never resent. A `true` ends by itself
/// after `expiresInMs` unless another `typing` of the member and chat comes
/// first; a `false` carries 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TypingNotice {
    pub chat_id: Uuid,
    pub user_id: String,
    pub typing: bool,
    pub expires_in_ms: u64,
}

/// A frame as it arrives, before the event is interpreted.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientFrame {
    pub id: Option<u64>,
    pub event: ClientEvent,
}

/// Parses one text frame. The error carries the frame id when it could be read,
/// so the reply can name the frame it answers.
pub fn parse_client_frame(text: &str) -> Result<ClientFrame, (Option<u64>, ClientError)> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| (None, ClientError::new(ErrorCode::InvalidJson, format!("invalid JSON: {e}"))))?;
    let Value::Object(mut object) = value else {
        return Err((None, ClientError::new(ErrorCode::InvalidFrame, "a frame is a JSON object")));
    };
    let id = match object.remove("id") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64(),
        Some(_) => {
            return Err((None, ClientError::new(ErrorCode::InvalidFrame, "`id` must be a non-negative integer")));
        }
    };
    let Some(Value::String(event)) = object.remove("event") else {
        return Err((id, ClientError::new(ErrorCode::InvalidFrame, "`event` must be a string")));
    };
    let data = object.remove("data").unwrap_or(Value::Null);
    parse_event(&event, data, id.is_some())
        .map(|event| ClientFrame { id, event })
        .map_err(|error| (id, error))
}

/// Interprets one event's data. Transports that carry the event name and data
/// separately (Socket.IO) call this directly.
pub fn parse_event(event: &str, data: Value, has_id: bool) -> Result<ClientEvent, ClientError> {
    match event {
        client_events::SEND => decode(data).map(ClientEvent::Send),
        client_events::DELIVERED => decode(data).map(ClientEvent::Delivered),
        client_events::READ => decode(data).map(ClientEvent::Read),
        client_events::EDIT => decode(data).map(ClientEvent::Edit),
        client_events::DELETE => decode(data).map(ClientEvent::Delete),
        client_events::REACT => decode(data).map(ClientEvent::React),
        client_events::UNREACT => decode(data).map(ClientEvent::Unreact),
        client_events::ACK if has_id => Ok(ClientEvent::Ack),
        client_events::ACK => Err(ClientError::new(ErrorCode::InvalidFrame, "an ack needs the `id` it answers")),
        client_events::PING => Ok(ClientEvent::Ping),
        client_events::TYPING_START => decode(data).map(|data: TypingData| ClientEvent::Typing(data.typing(true))),
        client_events::TYPING_STOP => decode(data).map(|data: TypingData| ClientEvent::Typing(data.typing(false))),
        other => {
            let shown: String = other.chars().take(64).collect();
            Err(ClientError::new(ErrorCode::UnknownEvent, format!("unknown event `{shown}`")))
        }
    }
}

fn decode<T: DeserializeOwned>(data: Value) -> Result<T, ClientError> {
    serde_json::from_value(data).map_err(|e| ClientError::invalid_payload(format!("invalid data: {e}")))
}

/// Reply to `message:send` and body of `message:sent`: ✓ sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SentMessage {
    pub message_id: Uuid,
    pub chat_id: Uuid,
    pub seq: i64,
    pub created_at: DateTime<Utc>,
    pub client_msg_id: Option<String>,
}

/// The sender's public profile, as the guide's `message:receive` carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SenderInfo {
    pub name: Option<String>,
    pub profile_picture: Option<String>,
}

/// `message:receive`: the guide's payload plus `seq`, and what happened to
/// the message before this device got it: its latest content (`editedAt`),
/// or a tombstone (`deleted`, empty content) if it was deleted for everyone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReceivedMessage {
    pub message_id: Uuid,
    pub chat_id: Uuid,
    pub sender_id: String,
    pub content: String,
    pub message_type: String,
    pub created_at: DateTime<Utc>,
    pub seq: i64,
    pub sender: SenderInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<ReplyQuote>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

/// What a reply shows of the message it answers: the first QUOTE_CHARS
/// characters, or nothing if that message was deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplyQuote {
    pub message_id: Uuid,
    pub sender_id: String,
    pub quote: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

/// `message:edited`: a log entry; the message keeps its seq, `seq` is the edit's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EditedMessage {
    pub message_id: Uuid,
    pub chat_id: Uuid,
    pub sender_id: String,
    pub content: String,
    pub edited_at: DateTime<Utc>,
    pub seq: i64,
}

/// `message:deleted`: deleted for everyone; show a tombstone. `seq` is the delete's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeletedMessage {
    pub message_id: Uuid,
    pub chat_id: Uuid,
    pub sender_id: String,
    pub deleted_at: DateTime<Utc>,
    pub seq: i64,
}

/// `message:reaction`: `userId` added (`added: true`) or removed `emoji` on
/// a message. A device applies them in seq order as a set per (user, emoji).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReactionChange {
    pub message_id: Uuid,
    pub chat_id: Uuid,
    pub user_id: String,
    pub emoji: String,
    pub added: bool,
    pub at: DateTime<Utc>,
    pub seq: i64,
}

/// The reply to `message:delivered`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DeliveredReply {
    /// The message had not been delivered to the user before this event.
    pub updated: bool,
}

/// The reply to `message:read`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ReadReply {
    /// How many messages of others became read (0: the mark was already there).
    pub updated: u64,
}

/// The reply to `ping`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Pong {
    #[schemars(extend("const" = true))]
    pub pong: bool,
}

/// The reply to `typing:start` and `typing:stop`: `{}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TypingAccepted {}

/// The reply to `message:edit`, `message:delete` (for everyone) and
/// `message:react`/`unreact`: the entry's seq in the chat's log, or
/// `changed: false` (and no entry, `seq` the chat's last) when there was
/// nothing to change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EntryAccepted {
    pub message_id: Uuid,
    pub chat_id: Uuid,
    pub changed: bool,
    /// The entry's own id (none when nothing changed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry_id: Option<Uuid>,
    /// The entry's seq in the chat's log; when nothing changed, the chat's
    /// last seq at that moment: the state asked for holds as of it, and a
    /// later entry about the same reaction (from another device) is newer.
    /// None for a delete for me.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    pub at: DateTime<Utc>,
}

/// A message's delivery state for one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "delivery_status", rename_all = "lowercase")]
pub enum DeliveryStatus {
    Sent,
    Delivered,
    Read,
    Expired,
}

/// `message:status`: ✓✓ delivered or read, per recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusUpdate {
    pub message_id: Uuid,
    pub chat_id: Uuid,
    pub status: DeliveryStatus,
    /// The recipient whose status changed.
    pub user_id: String,
    /// The guide's name for `userId`, kept for clients written against it.
    pub delivered_to: String,
    pub timestamp: DateTime<Utc>,
}

/// `receipt`: a member's watermarks in a chat moved. Every message of the
/// chat up to `deliveredSeq` has reached one of their devices (or is their
/// own); up to `readSeq` they have read. One receipt covers all of them.
/// The same shape is each receipt of `GET /api/sync`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Receipt {
    pub chat_id: Uuid,
    pub user_id: String,
    pub delivered_seq: i64,
    pub read_seq: i64,
}

/// `user:online`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserOnline {
    pub user_id: String,
    pub timestamp: DateTime<Utc>,
}

/// `user:offline`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserOffline {
    pub user_id: String,
    pub last_seen: DateTime<Utc>,
}

/// `sync:done`: everything pending when the connection opened has been delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncDone {
    pub count: u64,
}

/// `session:ready`: sent once after the upgrade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionReady {
    pub user_id: String,
    pub connection_id: Uuid,
    pub node_id: String,
}

/// The JSON of a server event frame.
pub fn event_frame(event: &str, id: Option<u64>, data: &impl Serialize) -> String {
    #[derive(Serialize)]
    struct Frame<'a, T> {
        event: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        data: &'a T,
    }
    // Serializing our own plain structs cannot fail.
    serde_json::to_string(&Frame { event, id, data }).unwrap_or_default()
}

/// The JSON of an error frame.
pub fn error_frame(id: Option<u64>, error: &ClientError) -> String {
    #[derive(Serialize)]
    struct Frame<'a> {
        event: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        error: &'a ClientError,
    }
    serde_json::to_string(&Frame { event: server_events::ERROR, id, error }).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_send_frame() {
        let chat = Uuid::now_v7();
        let text = format!(
            r#"{{"event":"message:send","id":7,"data":{{"chatId":"{chat}","content":"hi","messageType":"text","clientMsgId":"c1"}}}}"#
        );
        let frame = parse_client_frame(&text).unwrap();
        assert_eq!(frame.id, Some(7));
        let ClientEvent::Send(send) = frame.event else { panic!("not a send") };
        assert_eq!(send.chat_id, chat);
        assert_eq!(send.client_msg_id.as_deref(), Some("c1"));
    }

    #[test]
    fn read_receipts_take_either_shape() {
        let chat = Uuid::now_v7();
        let upto = parse_event("message:read", serde_json::json!({"chatId": chat, "upToSeq": 5}), false).unwrap();
        assert_eq!(upto, ClientEvent::Read(ReadReceipt::UpTo { chat_id: chat, up_to_seq: 5 }));
        let one = parse_event("message:read", serde_json::json!({"messageId": chat}), false).unwrap();
        assert_eq!(one, ClientEvent::Read(ReadReceipt::One { message_id: chat }));
    }

    #[test]
    fn bad_frames_get_their_codes() {
        let code = |text: &str| parse_client_frame(text).unwrap_err().1.code;
        assert_eq!(code("{"), ErrorCode::InvalidJson);
        assert_eq!(code("[1]"), ErrorCode::InvalidFrame);
        assert_eq!(code(r#"{"event":5}"#), ErrorCode::InvalidFrame);
        assert_eq!(code(r#"{"event":"nope","id":1}"#), ErrorCode::UnknownEvent);
        assert_eq!(code(r#"{"event":"message:send","id":1,"data":{}}"#), ErrorCode::InvalidPayload);
        assert_eq!(code(r#"{"event":"ack"}"#), ErrorCode::InvalidFrame);
        // The id survives a bad event so the error can answer it.
        assert_eq!(parse_client_frame(r#"{"event":"nope","id":9}"#).unwrap_err().0, Some(9));
    }

    #[test]
    fn typing_frames_parse_and_bad_ones_get_their_codes() {
        let chat = Uuid::now_v7();
        let start = parse_client_frame(&format!(r#"{{"event":"typing:start","id":3,"data":{{"chatId":"{chat}"}}}}"#)).unwrap();
        assert_eq!(start, ClientFrame { id: Some(3), event: ClientEvent::Typing(TypingChange { chat_id: chat, typing: true }) });
        let stop = parse_event("typing:stop", serde_json::json!({"chatId": chat}), false).unwrap();
        assert_eq!(stop, ClientEvent::Typing(TypingChange { chat_id: chat, typing: false }));
        let code = |data: serde_json::Value| parse_event("typing:start", data, true).unwrap_err().code;
        assert_eq!(code(serde_json::json!({})), ErrorCode::InvalidPayload);
        assert_eq!(code(serde_json::Value::Null), ErrorCode::InvalidPayload);
        assert_eq!(code(serde_json::json!({"chatId": "not-a-uuid"})), ErrorCode::InvalidPayload);
        assert_eq!(code(serde_json::json!({"chatId": 5})), ErrorCode::InvalidPayload);
    }

    #[test]
    fn a_typing_notice_has_the_documented_shape() {
        let notice = TypingNotice { chat_id: Uuid::nil(), user_id: "alice".into(), typing: true, expires_in_ms: TYPING_TTL_MS };
        assert_eq!(
            serde_json::to_value(&notice).unwrap(),
            serde_json::json!({"chatId": Uuid::nil(), "userId": "alice", "typing": true, "expiresInMs": 6000})
        );
    }

    #[test]
    fn send_validation() {
        let send = |content: &str, kind: &str| SendMessage {
            chat_id: Uuid::nil(),
            content: content.into(),
            message_type: kind.into(),
            client_msg_id: None,
            reply_to: None,
        };
        assert_eq!(send("", "text").validate().unwrap_err().code, ErrorCode::ContentEmpty);
        assert_eq!(send("a", "bogus").validate().unwrap_err().code, ErrorCode::InvalidMessageType);
        let big = "x".repeat(MAX_CONTENT_BYTES + 1);
        assert_eq!(send(&big, "text").validate().unwrap_err().code, ErrorCode::ContentTooLarge);
        assert!(send("hello \0 <b>'; DROP TABLE messages;--", "text").validate().is_ok());
    }
}

#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    /// Frames that look almost right: the right keys with wrong or random values.
    fn near_frames() -> impl Strategy<Value = String> {
        let event = prop_oneof![
            Just("message:send".to_owned()),
            Just("message:read".to_owned()),
            Just("message:delivered".to_owned()),
            Just("ack".to_owned()),
            Just("typing:start".to_owned()),
            Just("typing:stop".to_owned()),
            ".{0,20}",
        ];
        let value = prop_oneof![
            Just("null".to_owned()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|n| format!("{n:?}")),
            ".{0,30}".prop_map(|s| serde_json::to_string(&s).unwrap_or_default()),
            Just(r#"{"chatId":"00000000-0000-0000-0000-000000000000","content":"x"}"#.to_owned()),
            Just(r#"{"chatId":[],"content":{}}"#.to_owned()),
            Just(r#"{"messageId":"nope","upToSeq":-1}"#.to_owned()),
        ];
        (event, value.clone(), value).prop_map(|(event, data, id)| {
            format!(r#"{{"event":{},"data":{data},"id":{id}}}"#, serde_json::to_string(&event).unwrap_or_default())
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(2000)
        ))]

        /// Any text: a frame or a typed error, never a panic.
        #[test]
        fn any_text_parses_or_fails_with_a_code(text in "\\PC{0,200}") {
            if let Err((_, error)) = parse_client_frame(&text) {
                prop_assert!(!error.message.is_empty());
            }
        }

        #[test]
        fn near_miss_frames_parse_or_fail_with_a_code(text in near_frames()) {
            match parse_client_frame(&text) {
                Ok(ClientFrame { event: ClientEvent::Send(send), .. }) => { let _ = send.validate(); }
                Ok(_) => {}
                Err((_, error)) => prop_assert!(matches!(
                    error.code,
                    ErrorCode::InvalidJson | ErrorCode::InvalidFrame | ErrorCode::UnknownEvent | ErrorCode::InvalidPayload
                )),
            }
        }
    }
}
