//! The sending half of a connection: numbers server event frames, writes
//! everything to the socket in order, and closes it with a reason.

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use courier_shared::{
    ClientError, ErrorCode,
    protocol::{self},
};
use futures::{SinkExt, stream::SplitSink};
use serde_json::Value;
use tokio::sync::{mpsc, watch};

/// Close codes Courier uses (documented in docs/protocol.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// 1000: the client closed, or the connection ended normally.
    Normal,
    /// 1012: the server is restarting; reconnect (to another node).
    ServerRestart,
    /// 4008: the client reads too slowly; its send queue filled up.
    SlowConsumer,
}

impl CloseReason {
    pub fn code(self) -> u16 {
        match self {
            CloseReason::Normal => 1000,
            CloseReason::ServerRestart => 1012,
            CloseReason::SlowConsumer => 4008,
        }
    }
    fn text(self) -> &'static str {
        match self {
            CloseReason::Normal => "bye",
            CloseReason::ServerRestart => "server restarting, reconnect",
            CloseReason::SlowConsumer => "send queue full: reading too slowly",
        }
    }
}

/// Input of the driver task.
#[derive(Debug)]
pub enum ToDriver {
    /// An `ack`/`error` frame answering a client frame, already serialized.
    Reply(String),
    /// A server event; the driver gives it the next frame id.
    Event { event: &'static str, data: Value },
    /// The client acknowledged server frame `id`.
    ClientAck(u64),
    /// Close the socket.
    Close(CloseReason),
}

/// Handle to a connection's driver.
pub struct DriverHandle {
    inbox: mpsc::Sender<ToDriver>,
    closed: watch::Receiver<Option<CloseReason>>,
    task: tokio::task::JoinHandle<()>,
}

pub fn spawn(sink: SplitSink<WebSocket, Message>, queue_frames: usize) -> DriverHandle {
    let (inbox, receiver) = mpsc::channel(queue_frames.max(1));
    let (closed_tx, closed) = watch::channel(None);
    let task = tokio::spawn(drive(sink, receiver, closed_tx));
    DriverHandle { inbox, closed, task }
}

impl DriverHandle {
    pub async fn reply(&self, frame: String) {
        let _ = self.inbox.send(ToDriver::Reply(frame)).await;
    }
    pub async fn event(&self, event: &'static str, data: Value) {
        let _ = self.inbox.send(ToDriver::Event { event, data }).await;
    }
    pub async fn client_ack(&self, id: u64) {
        let _ = self.inbox.send(ToDriver::ClientAck(id)).await;
    }
    /// Resolves when the driver has closed the socket.
    pub async fn closed(&self) -> Option<CloseReason> {
        let mut closed = self.closed.clone();
        match closed.wait_for(Option::is_some).await {
            Ok(reason) => *reason,
            Err(_) => None,
        }
    }
    /// Ends the connection after the queued frames are written.
    pub async fn finish(self) {
        let _ = self.inbox.send(ToDriver::Close(CloseReason::Normal)).await;
        drop(self.inbox);
        let _ = self.task.await;
    }
}

async fn drive(
    mut sink: SplitSink<WebSocket, Message>,
    mut inbox: mpsc::Receiver<ToDriver>,
    closed: watch::Sender<Option<CloseReason>>,
) {
    let mut last_frame_id = 0u64;
    let mut reason = CloseReason::Normal;
    while let Some(input) = inbox.recv().await {
        let text = match input {
            ToDriver::Reply(text) => text,
            ToDriver::Event { event, data } => {
                last_frame_id += 1;
                protocol::event_frame(event, Some(last_frame_id), &data)
            }
            ToDriver::ClientAck(id) if id == 0 || id > last_frame_id => {
                // Not an answer to a client frame, so no `id` on the error.
                let error = ClientError::new(ErrorCode::UnknownFrame, format!("ack for frame {id}, which was never sent"));
                protocol::error_frame(None, &error)
            }
            ToDriver::ClientAck(_) => continue,
            ToDriver::Close(why) => {
                reason = why;
                break;
            }
        };
        if sink.send(Message::Text(text.into())).await.is_err() {
            break;
        }
    }
    let frame = CloseFrame { code: reason.code(), reason: reason.text().into() };
    let _ = sink.send(Message::Close(Some(frame))).await;
    let _ = closed.send(Some(reason));
}
