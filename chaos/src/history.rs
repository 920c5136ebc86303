//! What the simulated clients recorded: one flat, timestamped list of events
//! per run. The checker judges a run from this alone (no database reads), so
//! everything it needs to know is here, as the clients saw it.

use std::collections::BTreeMap;

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
    SendAnswered { chat_id: String, client_msg_id: String, message_id: String, seq: i64 },
    /// A send try that failed on the client's side (error reply, timeout, closed
    /// connection); it is retried with the same `client_msg_id`.
    SendFailed { client_msg_id: String, reason: String },
    /// `message:receive`, as server frame `frame_id` of the connection (a
    /// resend of an unacknowledged frame keeps its id; `None` in older histories).
    Received {
        chat_id: String,
        message_id: String,
        sender_id: String,
        seq: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        frame_id: Option<u64>,
    },
    /// The client acknowledged a `message:receive` of `message_id` on this connection.
    Acked { message_id: String },
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

/// A fault the scheduler applied, for the report and for a violation's context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedFault {
    pub at_ms: u64,
    /// Short kind name, e.g. `kill_api`, `stop_broker`.
    pub kind: String,
    /// What exactly, e.g. `api-1, back after 3200 ms`.
    pub detail: String,
}
