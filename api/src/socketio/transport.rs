//! The Socket.IO transport: server events as Socket.IO emits; acks of
//! `message:receive` and `message:status` come back as Socket.IO ack callbacks.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use courier_shared::{
    ClientError, ErrorCode,
    job::PresenceNotice,
    protocol::{SyncDone, server_events},
};
use serde::Serialize;
use serde_json::{Value, json};
use socketioxide::{AckError, SendError, SocketError, extract::{AckSender, SocketRef}};
use tokio::{sync::mpsc, time::Instant};
use tokio_util::sync::CancellationToken;

use crate::transport::{ClientInput, CloseReason, Outgoing, Reply, Transport, TransportClosed, TransportLink};

/// First and longest pause while socketioxide's send buffer is full.
const FULL_PAUSE_MIN: Duration = Duration::from_millis(1);
const FULL_PAUSE_MAX: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// An emit that cannot be buffered for this long means the client stopped reading.
    pub write: Duration,
    /// How long an ack of `message:receive` is awaited (the session resends meanwhile).
    pub delivery_ack: Duration,
    /// How long an ack of `message:status` is awaited (the session gives the status up after as long).
    pub status_ack: Duration,
}

pub struct SioTransport {
    socket: SocketRef,
    too_slow: CancellationToken,
    acks: mpsc::WeakSender<Box<ClientInput>>,
    timeouts: Timeouts,
}

/// What a client's ack of a server event settles.
#[derive(Clone, Copy)]
enum Awaited {
    Delivery,
    Status,
}

impl SioTransport {
    pub fn new(socket: SocketRef, link: TransportLink, timeouts: Timeouts) -> Self {
        Self { socket, too_slow: link.too_slow, acks: link.acks, timeouts }
    }

    /// Runs `emit` until socketioxide has room for the packet. A client whose
    /// buffer stays full for the write timeout has stopped reading.
    async fn with_room<R>(&self, mut emit: impl FnMut() -> Result<R, SendError>) -> Result<Option<R>, TransportClosed> {
        let deadline = Instant::now() + self.timeouts.write;
        let mut pauses = ExponentialBuilder::default()
            .with_min_delay(FULL_PAUSE_MIN)
            .with_max_delay(FULL_PAUSE_MAX)
            .without_max_times()
            .build();
        loop {
            match emit() {
                Ok(sent) => return Ok(Some(sent)),
                Err(SendError::Socket(SocketError::InternalChannelFull)) => {
                    if Instant::now() >= deadline {
                        tracing::warn!("client stopped reading: closing the connection");
                        self.too_slow.cancel();
                        return Err(TransportClosed);
                    }
                    let pause = pauses.next().unwrap_or(FULL_PAUSE_MAX);
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = self.too_slow.cancelled() => return Err(TransportClosed),
                    }
                }
                Err(SendError::Socket(SocketError::Closed)) => return Err(TransportClosed),
                Err(SendError::Serialize(error)) => {
                    // Our own payloads always serialize; skip rather than drop the client.
                    tracing::error!(%error, "cannot encode a server event");
                    return Ok(None);
                }
            }
        }
    }

    async fn emit<T: Serialize + ?Sized>(&self, event: &str, data: &T) -> Result<(), TransportClosed> {
        if self.too_slow.is_cancelled() {
            return Err(TransportClosed);
        }
        self.with_room(|| self.socket.emit(event, data)).await.map(drop)
    }

    /// Emits server frame `id` with an ack callback; the client's answer reaches the session as an ack.
    async fn emit_awaited<T: Serialize + ?Sized>(
        &self,
        id: u64,
        event: &str,
        data: &T,
        awaited: Awaited,
    ) -> Result<(), TransportClosed> {
        if self.too_slow.is_cancelled() {
            return Err(TransportClosed);
        }
        let timeout = match awaited {
            Awaited::Delivery => self.timeouts.delivery_ack,
            Awaited::Status => self.timeouts.status_ack,
        };
        let Some(answer) = self.with_room(|| self.socket.timeout(timeout).emit_with_ack::<_, Value>(event, data)).await?
        else {
            return Ok(());
        };
        let acks = self.acks.clone();
        tokio::spawn(async move {
            let input = match (answer.await, awaited) {
                (Ok(reply), _) if refused(&reply) => return,
                // An ack whose arguments cannot be read is still an answer.
                (Ok(_) | Err(AckError::Decode(_)), _) => ClientInput::Ack(id),
                // Not acknowledged in time: the session resends a message, and gives a status up.
                (Err(_), _) => return,
            };
            if let Some(session) = acks.upgrade() {
                let _ = session.send(Box::new(input)).await;
            }
        });
        Ok(())
    }
}

/// `ack({received: false})` (or `ack(false)`) says the client did not take the message.
fn refused(reply: &Value) -> bool {
    matches!(reply, Value::Bool(false)) || reply.get("received") == Some(&Value::Bool(false))
}

/// Answers a client event through its ack callback: the reply data on
/// success, `{error: {code, message}}` on failure.
pub fn answer(ack: AckSender, result: Result<Value, ClientError>) {
    let body = match result {
        Ok(data) => data,
        Err(error) => json!({ "error": error }),
    };
    if let Err(error) = ack.send(&body) {
        tracing::debug!(%error, "cannot answer an event; the client is gone");
    }
}

impl Transport for SioTransport {
    async fn send_event(&mut self, id: u64, event: Outgoing<'_>) -> Result<(), TransportClosed> {
        match event {
            Outgoing::Receive(delivery) => {
                let event = delivery.to_event();
                self.emit_awaited(id, event.name(), &event, Awaited::Delivery).await
            }
            Outgoing::Status(update) => self.emit_awaited(id, server_events::STATUS, update, Awaited::Status).await,
            Outgoing::Presence(PresenceNotice::Online(online)) => self.emit(server_events::USER_ONLINE, online).await,
            Outgoing::Presence(PresenceNotice::Offline(offline)) => self.emit(server_events::USER_OFFLINE, offline).await,
            Outgoing::SyncDone(count) => self.emit(server_events::SYNC_DONE, &SyncDone { count }).await,
            Outgoing::Other { event, data } => self.emit(event, data).await,
            Outgoing::Error(error) => self.emit(server_events::ERROR, error).await,
        }
    }

    /// Only errors of events sent without an ack callback come this way.
    async fn send_reply(&mut self, reply: Reply) -> Result<(), TransportClosed> {
        match reply.result {
            Err(error) => self.emit(server_events::ERROR, &error).await,
            Ok(_) => Ok(()),
        }
    }

    async fn close(&mut self, reason: CloseReason) {
        match reason {
            // Left open on purpose: the node closes every Socket.IO transport as
            // it stops, and a client whose transport closed reconnects by
            // itself (after a server `disconnect` it would not).
            CloseReason::ServerRestart => {}
            CloseReason::Normal | CloseReason::SlowConsumer => {
                if self.socket.connected() {
                    let _ = self.socket.clone().disconnect();
                }
            }
            // Socket.IO has no close code: say why in an `error` event first,
            // then disconnect (a client does not reconnect after a server disconnect).
            CloseReason::DeviceRevoked => {
                if self.socket.connected() {
                    let error = ClientError::new(ErrorCode::DeviceRevoked, reason.text());
                    let _ = self.socket.emit(server_events::ERROR, &error);
                    let _ = self.socket.clone().disconnect();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::refused;

    #[test]
    fn only_an_explicit_no_refuses_a_message() {
        assert!(refused(&json!({ "received": false })));
        assert!(refused(&json!(false)));
        assert!(!refused(&json!({ "received": true })));
        assert!(!refused(&json!(null)));
        assert!(!refused(&json!({})));
        assert!(!refused(&json!("ok")));
    }
}
