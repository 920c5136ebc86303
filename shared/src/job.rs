//! Bodies of broker messages. Everything is JSON so an operator can read a job
//! in the RabbitMQ management UI ("Get messages").

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::protocol::{
    DeletedMessage, EditedMessage, EntryKind, ReactionChange, Receipt, ReceivedMessage, ReplyQuote, SenderInfo,
    StatusUpdate, TypingNotice, UserOffline, UserOnline,
};

/// Header carrying how many retry tiers a job has already been through.
pub const ATTEMPT_HEADER: &str = "x-courier-attempt";
/// Header naming why a job was dead-lettered by a worker.
pub const DEAD_REASON_HEADER: &str = "x-courier-dead-reason";

/// "Recipient R has message M": one per recipient, published by the API after the send commits.
/// PostgreSQL holds the message; the job is a doorbell, so a duplicate or late job is harmless.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryJob {
    pub message_id: Uuid,
    pub recipient_id: String,
    /// For people reading queues; the worker trusts PostgreSQL, not these.
    pub chat_id: Uuid,
    pub seq: i64,
}

/// A log entry (a message, or an edit, delete or reaction of one) ready for
/// one recipient's sockets, with what a connection needs to keep order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// Unused since delivery state became cursors (0); kept so that jobs and
    /// pages from nodes of the release before still parse.
    pub status_id: i64,
    pub message_id: Uuid,
    pub chat_id: Uuid,
    pub seq: i64,
    /// Seq of this recipient's previous message in the chat; a connection that
    /// has pushed up to `prev_seq` may push this one.
    pub prev_seq: i64,
    pub sender_id: String,
    /// The device the sender sent it from (`None`: the `default` device).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_device: Option<String>,
    pub content: String,
    pub message_type: String,
    pub created_at: DateTime<Utc>,
    pub sender_name: Option<String>,
    pub sender_picture: Option<String>,
    /// An entry the connection passes over without sending it: the device's
    /// own message, or one that expired for this recipient. Its cursor moves
    /// over it as if the client had acknowledged it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub silent: bool,
    /// What the entry is (`message` when absent: jobs of the release before).
    #[serde(default, skip_serializing_if = "EntryKind::is_message")]
    pub kind: EntryKind,
    /// The message an edit, delete or reaction is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_id: Option<Uuid>,
    /// A message's: what it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<ReplyQuote>,
    /// A message's: when it was last edited (its content is the latest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<DateTime<Utc>>,
    /// A message's: deleted for everyone (its content is erased).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<DateTime<Utc>>,
}

/// What a connection sends for a log entry: its event name and payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum EntryEvent {
    Receive(ReceivedMessage),
    Edited(EditedMessage),
    Deleted(DeletedMessage),
    Reaction(ReactionChange),
}

impl EntryEvent {
    pub fn name(&self) -> &'static str {
        use crate::protocol::server_events;
        match self {
            EntryEvent::Receive(_) => server_events::RECEIVE,
            EntryEvent::Edited(_) => server_events::EDITED,
            EntryEvent::Deleted(_) => server_events::DELETED,
            EntryEvent::Reaction(_) => server_events::REACTION,
        }
    }
}

fn default_device() -> String {
    crate::db::devices::DEFAULT_DEVICE.to_owned()
}

impl Delivery {
    /// Whether `device_id` of `user_id` sent it: that device passes over it unseen.
    pub fn is_from(&self, user_id: &str, device_id: &str) -> bool {
        self.sender_id == user_id
            && self.sender_device.as_deref().unwrap_or(crate::db::devices::DEFAULT_DEVICE) == device_id
    }

    /// The `message:receive` payload.
    pub fn to_received(&self) -> ReceivedMessage {
        ReceivedMessage {
            message_id: self.message_id,
            chat_id: self.chat_id,
            sender_id: self.sender_id.clone(),
            content: self.content.clone(),
            message_type: self.message_type.clone(),
            created_at: self.created_at,
            seq: self.seq,
            sender: SenderInfo { name: self.sender_name.clone(), profile_picture: self.sender_picture.clone() },
            reply_to: self.reply_to.clone(),
            edited_at: self.edited_at,
            deleted: self.deleted_at.is_some(),
        }
    }

    /// The event a connection sends for this entry: `message:receive` for a
    /// message, `message:edited` / `message:deleted` / `message:reaction` for
    /// the entries about one.
    pub fn to_event(&self) -> EntryEvent {
        let target = self.target_id.unwrap_or(self.message_id);
        match self.kind {
            EntryKind::Message => EntryEvent::Receive(self.to_received()),
            EntryKind::Edit => EntryEvent::Edited(EditedMessage {
                message_id: target,
                chat_id: self.chat_id,
                sender_id: self.sender_id.clone(),
                content: self.content.clone(),
                edited_at: self.created_at,
                seq: self.seq,
            }),
            EntryKind::Delete => EntryEvent::Deleted(DeletedMessage {
                message_id: target,
                chat_id: self.chat_id,
                sender_id: self.sender_id.clone(),
                deleted_at: self.created_at,
                seq: self.seq,
            }),
            EntryKind::React | EntryKind::Unreact => EntryEvent::Reaction(ReactionChange {
                message_id: target,
                chat_id: self.chat_id,
                user_id: self.sender_id.clone(),
                emoji: self.content.clone(),
                added: self.kind == EntryKind::React,
                at: self.created_at,
                seq: self.seq,
            }),
        }
    }
}

/// A chat's ordering baseline at the start of a drain: every message for the
/// user with seq <= `seq` is either delivered already or in the drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatBaseline {
    pub chat_id: Uuid,
    pub seq: i64,
}

/// What a worker sends to one API node's push queue: several items per broker message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeBatch {
    pub items: Vec<NodeItem>,
}

/// One thing for an API node to hand to its connections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum NodeItem {
    /// A live delivery for every connection of `recipient_id` on the node.
    #[serde(rename_all = "camelCase")]
    Deliver { recipient_id: String, attempt: u32, delivery: Delivery },
    /// A status change for every connection of the sender.
    #[serde(rename_all = "camelCase")]
    Status { sender_id: String, status: SenderStatus },
    /// A `receipt` for every connection of `user_id`.
    #[serde(rename_all = "camelCase")]
    Receipt { user_id: String, receipt: Receipt },
    /// `user:online` / `user:offline` for every connection of each listed user.
    #[serde(rename_all = "camelCase")]
    Presence { user_ids: Vec<String>, notice: PresenceNotice },
    /// A drain for one connection starts; hold live deliveries until it ends.
    #[serde(rename_all = "camelCase")]
    DrainBegin { connection_id: Uuid, drain_id: Uuid, worker_id: String, baselines: Vec<ChatBaseline> },
    /// A page of a drain, in inbox order, then missed status changes.
    #[serde(rename_all = "camelCase")]
    DrainPage { connection_id: Uuid, drain_id: Uuid, deliveries: Vec<Delivery>, statuses: Vec<SenderStatus> },
    /// The drain is complete: `count` messages were pending when it began.
    #[serde(rename_all = "camelCase")]
    DrainEnd { connection_id: Uuid, drain_id: Uuid, count: u64 },
    /// The device was revoked: close every connection of it on the node.
    #[serde(rename_all = "camelCase")]
    CloseDevice { user_id: String, device_id: String },
    /// A `typing` for every connection of each listed user. Ephemeral: sent by
    /// the typer's API node, transient, never retried, lost with the queue.
    /// Always in batches of its own, so that a node of an earlier release,
    /// which cannot read it, drops only typing notices.
    #[serde(rename_all = "camelCase")]
    Typing { user_ids: Vec<String>, notice: TypingNotice },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", content = "data")]
pub enum PresenceNotice {
    #[serde(rename = "user:online")]
    Online(UserOnline),
    #[serde(rename = "user:offline")]
    Offline(UserOffline),
}

/// From an API node to the workers: a connection opened, closed, or needs its drain redone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PresenceEvent {
    pub user_id: String,
    /// The connection's device: a drain sends what this device has not acknowledged.
    #[serde(default = "default_device")]
    pub device_id: String,
    pub node_id: String,
    pub connection_id: Uuid,
    pub kind: PresenceKind,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum PresenceKind {
    /// First event of a connection: tell co-members, then drain.
    Connected,
    /// The connection closed; `last` is true when the user has no connection left.
    #[serde(rename_all = "camelCase")]
    Disconnected { last: bool },
    /// The connection's drain stalled (worker died, broker restarted): drain
    /// again from inbox position `resume_after`, without presence notices.
    #[serde(rename_all = "camelCase")]
    Resync { resume_after: i64 },
}

/// From an API node to the workers: status changes committed, senders to be told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusChanges {
    /// Per message and recipient, for the senders of direct chats (`message:status`).
    pub changes: Vec<StatusChange>,
    /// Members' watermarks that moved (`receipt`), for every chat.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moves: Vec<WatermarkMove>,
}

/// A member's watermarks in a chat moved from (`from_delivered`, `from_read`)
/// to the receipt's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WatermarkMove {
    pub receipt: Receipt,
    pub from_delivered: i64,
    pub from_read: i64,
}

impl WatermarkMove {
    /// The lowest old value of the watermarks that moved: the messages of the
    /// chat after it (and up to the receipt's) are the ones the move is news about.
    pub fn from_seq(&self) -> i64 {
        let delivered = (self.receipt.delivered_seq > self.from_delivered).then_some(self.from_delivered);
        let read = (self.receipt.read_seq > self.from_read).then_some(self.from_read);
        delivered.into_iter().chain(read).min().unwrap_or(self.receipt.delivered_seq)
    }

    /// Folds a later move of the same member and chat into this one.
    pub fn absorb(&mut self, next: &WatermarkMove) {
        self.from_delivered = self.from_delivered.min(next.from_delivered);
        self.from_read = self.from_read.min(next.from_read);
        self.receipt.delivered_seq = self.receipt.delivered_seq.max(next.receipt.delivered_seq);
        self.receipt.read_seq = self.receipt.read_seq.max(next.receipt.read_seq);
    }
}

/// A `message:status` for the sender's connections, with what acknowledging
/// it tells about the device: it has been shown the status of its message
/// `seq`. The device's told mark of that status moves to `seq` if it already
/// reaches `anchor` (the sender's previous message the same news was about),
/// so a frame acknowledged out of order never lets a mark skip one not yet
/// acknowledged: a connection that drops meanwhile is sent that one again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SenderStatus {
    pub update: StatusUpdate,
    pub seq: i64,
    pub anchor: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusChange {
    pub sender_id: String,
    pub update: StatusUpdate,
    /// The message's seq in its chat.
    #[serde(default)]
    pub seq: i64,
    /// A group's message: its sender learns of it by `receipt`, not per message.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_group: bool,
}

/// From an API node to the worker running a drain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum DrainControl {
    /// The client has acknowledged `acked` of the drain's frames so far.
    #[serde(rename_all = "camelCase")]
    Credit { drain_id: Uuid, acked: u64 },
    /// The connection is gone; stop.
    #[serde(rename_all = "camelCase")]
    Cancel { drain_id: Uuid },
}
