//! What a session and its transport (`/ws` frames or Socket.IO emits) hand
//! each other: the [`Transport`] trait the session writes through, the server
//! events it writes ([`Outgoing`]), what the connection's reader passes to the
//! session ([`ClientInput`]), and why a connection closed ([`CloseReason`]).
//!
//! These live apart from the session, the connection and both transports
//! because all of them use these types; defined inside any one of them, the
//! others would import it and it them, in a circle.

use std::future::Future;

use courier_shared::{
    ClientError,
    job::{Delivery, PresenceNotice},
    protocol::{SentMessage, StatusUpdate},
};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Close codes Courier uses (docs/protocol.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// 1000: the client closed, or the connection ended normally.
    Normal,
    /// 1012: the server is restarting; reconnect (to another node).
    ServerRestart,
    /// 4008: the client reads too slowly; its send queue filled up.
    SlowConsumer,
    /// 4009: the connection's device was revoked (`DELETE /api/devices/{id}`);
    /// it is refused if it comes back.
    DeviceRevoked,
}

impl CloseReason {
    pub fn code(self) -> u16 {
        match self {
            CloseReason::Normal => 1000,
            CloseReason::ServerRestart => 1012,
            CloseReason::SlowConsumer => 4008,
            CloseReason::DeviceRevoked => 4009,
        }
    }

    pub fn text(self) -> &'static str {
        match self {
            CloseReason::Normal => "bye",
            CloseReason::ServerRestart => "server restarting, reconnect",
            CloseReason::SlowConsumer => "send queue full: reading too slowly",
            CloseReason::DeviceRevoked => "device revoked",
        }
    }
}

/// Input from the connection's reader.
#[derive(Debug)]
pub enum ClientInput {
    /// A reply to a client event, sent in order with the server's events
    /// (Socket.IO answers through ack callbacks and sends only errors of
    /// events that had none).
    Reply(Reply),
    /// A server event to number and send, e.g. `message:sent`.
    Event { event: &'static str, data: Value },
    /// An entry this device wrote (an edit, delete or reaction): the chat's
    /// order goes on past it here, as past its own `message:sent`.
    Own(SentMessage),
    /// The client acknowledged server frame `id`.
    Ack(u64),
    /// The client reported `message:delivered` for a message (already written).
    Delivered(Uuid),
}

/// The answer to one client event.
#[derive(Debug)]
pub struct Reply {
    /// The client's frame id on `/ws`; `None` when the event had none.
    pub id: Option<u64>,
    pub result: Result<Value, ClientError>,
}

/// A server event as the session hands it to the transport.
pub enum Outgoing<'a> {
    Receive(&'a Delivery),
    Status(&'a StatusUpdate),
    Presence(&'a PresenceNotice),
    SyncDone(u64),
    Other { event: &'static str, data: &'a Value },
    /// An `error` frame that answers no client frame (e.g. an ack of an unknown frame).
    Error(&'a ClientError),
}

/// The socket closed under us.
#[derive(Debug)]
pub struct TransportClosed;

/// How a session talks to its client: `/ws` frames or Socket.IO emits.
pub trait Transport: Send {
    /// Sends server event `id`.
    fn send_event(&mut self, id: u64, event: Outgoing<'_>) -> impl Future<Output = Result<(), TransportClosed>> + Send;
    /// Sends the reply to a client event.
    fn send_reply(&mut self, reply: Reply) -> impl Future<Output = Result<(), TransportClosed>> + Send;
    /// Writes out what `send_event` and `send_reply` have queued. The session
    /// calls it whenever it has nothing more ready to send, so frames that
    /// are ready together go out in one write to the socket. Transports that
    /// write each frame as it comes need not implement it.
    fn flush(&mut self) -> impl Future<Output = Result<(), TransportClosed>> + Send {
        std::future::ready(Ok(()))
    }
    /// Closes the connection with a reason.
    fn close(&mut self, reason: CloseReason) -> impl Future<Output = ()> + Send;
}

/// What a transport is handed for a client when the connection opens: a way
/// to abandon it when the client cannot keep up, and where acks go.
pub struct TransportLink {
    /// Cancelled when a send must be abandoned (slow client, node stopping).
    pub too_slow: CancellationToken,
    /// Where late acknowledgements go (Socket.IO acks arrive on their own
    /// tasks). Weak, so that pending acks do not keep a closed session alive.
    pub acks: mpsc::WeakSender<Box<ClientInput>>,
}
