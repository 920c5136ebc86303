//! What this node hands one connection's session from the broker side: live
//! deliveries, status changes, presence notices and drain pages from the push
//! consumer (`push.rs`), and "drain again" after the broker or the node's lease
//! was lost.
//!
//! Its own module because the registry queues these (`registry.rs`), the push
//! consumer and presence make them, and the session reads them; defined in
//! the session, the registry would import the session that imports it.

use courier_shared::{
    job::{ChatBaseline, Delivery, PresenceNotice, SenderStatus},
    protocol::{Receipt, TypingNotice},
};
use uuid::Uuid;

/// Input from the node's push consumer.
#[derive(Debug)]
pub enum SessionInput {
    /// A live delivery for this user.
    Deliver(Box<Delivery>),
    /// A status change of one of this user's sent messages.
    Status(SenderStatus),
    /// A member's watermarks in one of this user's chats moved.
    Receipt(Receipt),
    Presence(PresenceNotice),
    /// A member of one of this user's chats started or stopped typing.
    Typing(TypingNotice),
    DrainBegin { drain_id: Uuid, worker_id: String, baselines: Vec<ChatBaseline> },
    DrainPage { drain_id: Uuid, deliveries: Vec<Delivery>, statuses: Vec<SenderStatus> },
    DrainEnd { drain_id: Uuid, count: u64 },
    /// The broker connection was rebuilt: pushes in the old queue are lost, so drain again.
    Resync,
}
