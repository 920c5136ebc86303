//! What the simulated clients recorded: one flat, timestamped list of events
//! per run. The checker judges a run from this (no database reads), so
//! everything it needs to know is here, as the clients saw it — plus, for the
//! final views only, what the server holds at the end ([`ServerState`], read
//! once after the run has settled).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Members of every chat of the run, by chat id. Membership does not change
/// during a run, so "a member when it was sent" is "a member".
pub type Chats = BTreeMap<String, Vec<String>>;

/// The device of events recorded before devices were (histories of older runs).
pub const DEFAULT_DEVICE: &str = "default";

fn default_device() -> String {
    DEFAULT_DEVICE.to_owned()
}

/// One thing a client saw or did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Milliseconds since the run started (one clock for every client).
    pub at_ms: u64,
    /// The user whose client recorded it.
    pub user: String,
    /// The user's device it happened on (the `deviceId` it connects with). A
    /// device's identity is (user, device); a device exists from its first
    /// connection on, and each connection belongs to one device.
    #[serde(default = "default_device")]
    pub device: String,
    /// The connection it happened on, numbered across the whole run
    /// (a reconnect is a new connection). 0 for events outside any connection.
    pub conn: u64,
    pub kind: EventKind,
}

/// What happened. Message ids and chat ids are the server's, as strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// The connection got `session:ready` from API node `node`.
    Connected { node: usize },
    /// The connection ended (closed by either side, or broken).
    Disconnected,
    /// `message:send` written (first try or a retry; retries reuse `client_msg_id`).
    SendAttempt { chat_id: String, client_msg_id: String },
    /// The send's reply: stored as `message_id` at `seq` (✓ sent).
    SendAnswered {
        chat_id: String,
        client_msg_id: String,
        message_id: String,
        seq: i64,
        /// What was sent (`None` in older histories).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content: Option<String>,
    },
    /// A send try that failed on the client's side (error reply, timeout, closed
    /// connection); it is retried with the same `client_msg_id`.
    SendFailed { client_msg_id: String, reason: String },
    /// A log entry pushed to the device, as server frame `frame_id` of the
    /// connection (a resend of an unacknowledged frame keeps its id; `None` in
    /// older histories): a `message:receive` (`about` is `None`), or an entry
    /// about a message (`message:edited`, `message:deleted`,
    /// `message:reaction`: `about` says which message and what changed, and
    /// `message_id` is the entry's [`entry_key`], since those frames carry no
    /// id of their own). `sender_id` is who wrote the entry (a reaction's
    /// `userId`); `seq` is the entry's own seq in the chat.
    Received {
        chat_id: String,
        message_id: String,
        sender_id: String,
        seq: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        frame_id: Option<u64>,
        /// `message:receive`: the content it came with (the latest edit's, or
        /// "" for a tombstone). `None` in older histories.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content: Option<String>,
        /// `message:receive`: a tombstone (`deleted: true`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        deleted: bool,
        /// An entry about a message: which, and what it changes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        about: Option<About>,
    },
    /// The client acknowledged a pushed entry on this connection: a
    /// `message:receive` of `message_id`, or the entry frame whose
    /// [`entry_key`] it is.
    Acked { message_id: String },
    /// `message:edit`, `message:delete` (for everyone), `message:react` or
    /// `message:unreact` written (first try or a retry; retries reuse `action_id`).
    ActionAttempt { action_id: String, chat_id: String, message_id: String, change: Change },
    /// The action's reply: an entry at `seq` (`changed: true`), or nothing to
    /// change (`changed: false`, no entry: the reaction was already there, or
    /// not there to remove).
    ActionAnswered { action_id: String, chat_id: String, message_id: String, change: Change, changed: bool, seq: Option<i64> },
    /// An error reply that ends the action: `already_deleted` and
    /// `window_passed` are legitimate outcomes; any other code is judged.
    ActionRefused { action_id: String, chat_id: String, message_id: String, change: Change, code: String },
    /// A try that failed on the client's side (timeout, closed connection, or
    /// a retryable error: `unavailable`, `rate_limited`, `internal`); it is
    /// retried with the same `action_id`.
    ActionFailed { action_id: String, reason: String },
    /// `message:status` at the sender: `recipient`'s copy of `message_id` is now `status`.
    Status { message_id: String, recipient: String, status: String },
    /// `message:read {chatId, upToSeq}` sent.
    ReadSent { chat_id: String, up_to_seq: i64 },
    /// `sync:done {count}`: the connection's connect-time catch-up is over.
    SyncDone { count: u64 },
    /// A member's watermarks in a chat, as the recording user was told: every
    /// message of `chat_id` up to `delivered_seq` has reached one of
    /// `user_id`'s devices (or is theirs), up to `read_seq` they have read.
    /// `pushed`: a `receipt` frame on this connection; otherwise read from
    /// `GET /api/sync` while this connection was open.
    Receipt { chat_id: String, user_id: String, delivered_seq: i64, read_seq: i64, pushed: bool },
}

/// What an entry about a message does to it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// Its content becomes `content` (`message:edit` / `message:edited`).
    Edit { content: String },
    /// Deleted for everyone: a tombstone, content "" and no reactions.
    Delete,
    /// The entry's user reacted with `emoji` (`message:reaction`, `added: true`).
    React { emoji: String },
    /// The entry's user took `emoji` back (`added: false`).
    Unreact { emoji: String },
}

impl Change {
    /// The entry kind's name, as the server stores it (`messages.kind`).
    pub fn kind(&self) -> &'static str {
        match self {
            Change::Edit { .. } => "edit",
            Change::Delete => "delete",
            Change::React { .. } => "react",
            Change::Unreact { .. } => "unreact",
        }
    }
}

/// The message an entry frame is about, and what the entry does to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct About {
    pub message_id: String,
    pub change: Change,
}

/// The id the history gives a log entry that is not a message: entry frames
/// carry the id of the message they are about, not their own, and (chat,
/// seq) names one entry (the schema's `UNIQUE (chat_id, seq)`).
pub fn entry_key(chat_id: &str, seq: i64) -> String {
    format!("{chat_id}#{seq}")
}

/// What the server holds at the end of a run, read from PostgreSQL once
/// everything has settled: the truth every device's final view must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerState {
    /// Every message (`kind = 'message'`), by id.
    pub messages: BTreeMap<String, ServerMessage>,
}

/// One message as the server holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerMessage {
    pub chat_id: String,
    pub seq: i64,
    /// `messages.content`: the latest edit's, "" once deleted.
    pub content: String,
    /// `deleted_at IS NOT NULL`.
    pub deleted: bool,
    /// `edited_at IS NOT NULL` (for the report).
    #[serde(default)]
    pub edited: bool,
    /// The `reactions` rows: (user, emoji).
    pub reactions: BTreeSet<(String, String)>,
}

/// A fault the scheduler applied, for the report and for a violation's context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedFault {
    pub at_ms: u64,
    /// Short kind name, e.g. `kill_api`, `stop_broker`.
    pub kind: String,
    /// What exactly, e.g. `api-1, back after 3200 ms`.
    pub detail: String,
}
