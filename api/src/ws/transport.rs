//! The `/ws` transport: server events as JSON text frames.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use courier_shared::{
    job::PresenceNotice,
    protocol::{self, SyncDone, server_events},
};
use futures::{SinkExt, stream::SplitSink};
use tokio_util::sync::CancellationToken;

use crate::transport::{CloseReason, Outgoing, Reply, Transport, TransportClosed};

/// How long a close frame may take to go out to a client that is not reading.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

pub struct WsTransport {
    sink: SplitSink<WebSocket, Message>,
    /// Frames queued since the last flush: the session flushes when it has
    /// nothing more ready, so frames ready together go out in one write.
    unflushed: bool,
    /// Cancelled when a send must be abandoned (slow client, node stopping);
    /// cancelled here when the client stops reading.
    too_slow: CancellationToken,
    /// A frame that cannot be written for this long means the client stopped reading.
    write_timeout: Duration,
}

impl WsTransport {
    pub fn new(sink: SplitSink<WebSocket, Message>, too_slow: CancellationToken, write_timeout: Duration) -> Self {
        Self { sink, unflushed: false, too_slow, write_timeout }
    }

    /// Queues a frame; the socket writes on its own once its write buffer
    /// (`SOCKET_BUFFER_BYTES`, 4 KiB) is full, and the rest at `flush`.
    async fn send_text(&mut self, text: String) -> Result<(), TransportClosed> {
        self.unflushed = true;
        guarded(&self.too_slow, self.write_timeout, self.sink.feed(Message::Text(text.into()))).await
    }
}

/// Runs a write to the socket, giving up on a client that stopped reading.
async fn guarded(
    too_slow: &CancellationToken,
    write_timeout: Duration,
    write: impl Future<Output = Result<(), axum::Error>>,
) -> Result<(), TransportClosed> {
    tokio::select! {
        written = tokio::time::timeout(write_timeout, write) => match written {
            Ok(written) => written.map_err(|_| TransportClosed),
            Err(_) => {
                tracing::warn!("client stopped reading: closing the connection");
                too_slow.cancel();
                Err(TransportClosed)
            }
        },
        () = too_slow.cancelled() => Err(TransportClosed),
    }
}

/// The JSON frame of a server event.
pub fn encode(id: u64, event: Outgoing<'_>) -> String {
    let id = Some(id);
    match event {
        Outgoing::Receive(delivery) => {
            let event = delivery.to_event();
            protocol::event_frame(event.name(), id, &event)
        }
        Outgoing::Status(update) => protocol::event_frame(server_events::STATUS, id, update),
        Outgoing::Presence(PresenceNotice::Online(online)) => protocol::event_frame(server_events::USER_ONLINE, id, online),
        Outgoing::Presence(PresenceNotice::Offline(offline)) => {
            protocol::event_frame(server_events::USER_OFFLINE, id, offline)
        }
        Outgoing::SyncDone(count) => protocol::event_frame(server_events::SYNC_DONE, id, &SyncDone { count }),
        Outgoing::Other { event, data } => protocol::event_frame(event, id, data),
        Outgoing::Error(error) => protocol::error_frame(None, error),
    }
}

impl Transport for WsTransport {
    async fn send_event(&mut self, id: u64, event: Outgoing<'_>) -> Result<(), TransportClosed> {
        self.send_text(encode(id, event)).await
    }

    async fn send_reply(&mut self, reply: Reply) -> Result<(), TransportClosed> {
        let text = match reply.result {
            Ok(data) => protocol::event_frame(server_events::ACK, reply.id, &data),
            Err(error) => protocol::error_frame(reply.id, &error),
        };
        self.send_text(text).await
    }

    async fn flush(&mut self) -> Result<(), TransportClosed> {
        if !std::mem::take(&mut self.unflushed) {
            return Ok(());
        }
        guarded(&self.too_slow, self.write_timeout, self.sink.flush()).await
    }

    async fn close(&mut self, reason: CloseReason) {
        let frame = CloseFrame { code: reason.code(), reason: reason.text().into() };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.sink.send(Message::Close(Some(frame)))).await;
    }
}
