//! A lean `/ws` client that behaves like a real one: it acknowledges every
//! log entry (`message:receive`, `message:edited`, `message:deleted`,
//! `message:reaction`) and every `message:status` as soon as it reads it, and
//! reports what it saw to the scenario through one channel.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::{connect_async_with_config, tungstenite::Message};

/// Which event a log entry came as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryEvent {
    /// `message:receive`.
    Message,
    /// `message:edited`.
    Edited,
    /// `message:deleted`.
    Deleted,
    /// `message:reaction` (added or removed).
    Reaction,
}

impl EntryEvent {
    fn of(event: &str) -> Option<Self> {
        match event {
            "message:receive" => Some(Self::Message),
            "message:edited" => Some(Self::Edited),
            "message:deleted" => Some(Self::Deleted),
            "message:reaction" => Some(Self::Reaction),
            _ => None,
        }
    }
}

/// Something a connection saw, tagged with the connection's index.
#[derive(Debug)]
pub enum Seen {
    /// A log entry of a chat: `message_id` is the message itself for
    /// `Message`, the message the entry is about for the others; `seq` is the
    /// entry's own. `content` is a message's (empty for the others).
    Receive { conn: usize, entry: EntryEvent, message_id: String, chat_id: String, seq: i64, content: String, at: Instant },
    /// `message:status` with status `delivered`, at one of the sender's devices.
    Delivered { conn: usize, at: Instant },
    /// `receipt`: a member's delivered watermark in a chat (a group's sender gets these).
    Receipt { chat_id: String, user_id: String, delivered_seq: i64, at: Instant },
    /// `typing`: another member's typing indicator (ephemeral, not acknowledged).
    Typing,
    SyncDone,
    Closed,
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// One connection. Cloning shares it.
#[derive(Clone)]
pub struct Conn {
    writer: mpsc::UnboundedSender<Message>,
    pending: Pending,
    next_id: Arc<AtomicU64>,
}

impl Conn {
    /// Connects to `/ws` as `device` of the token's user (the default device
    /// if `None`), waits for `session:ready`, then reports what it sees to `seen`.
    pub async fn connect(addr: &str, token: &str, device: Option<&str>, conn: usize, seen: mpsc::UnboundedSender<Seen>) -> anyhow::Result<Self> {
        let device_param = device.map(|device| format!("&deviceId={device}")).unwrap_or_default();
        // TCP_NODELAY, as browsers set it: without it the load generator's own
        // back-to-back frames would wait on delayed ACKs and skew every latency.
        let (socket, _) = connect_async_with_config(format!("ws://{addr}/ws?token={token}{device_param}"), None, true).await.context("connect")?;
        let (mut sink, mut stream) = socket.split();
        // The first frame says the session exists.
        match stream.next().await {
            Some(Ok(Message::Text(text))) if text.contains("session:ready") => {}
            other => bail!("expected session:ready, got {other:?}"),
        }
        let (writer, mut outgoing) = mpsc::unbounded_channel::<Message>();
        tokio::spawn(async move {
            // Write whatever has queued up, then flush once: one syscall per burst.
            while let Some(first) = outgoing.recv().await {
                if sink.feed(first).await.is_err() {
                    return;
                }
                while let Ok(next) = outgoing.try_recv() {
                    if sink.feed(next).await.is_err() {
                        return;
                    }
                }
                if sink.flush().await.is_err() {
                    return;
                }
            }
            let _ = sink.close().await;
        });
        let pending: Pending = Arc::default();
        let reader_pending = pending.clone();
        let acks = writer.clone();
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                let Message::Text(text) = message else { continue };
                let at = Instant::now();
                let Ok(frame) = serde_json::from_str::<Value>(&text) else { continue };
                on_frame(conn, frame, at, &reader_pending, &acks, &seen);
            }
            let _ = seen.send(Seen::Closed);
        });
        Ok(Conn { writer, pending, next_id: Arc::new(AtomicU64::new(1)) })
    }

    /// Sends `message:send`; resolves with the reply frame's data once stored.
    pub async fn send_message(&self, chat_id: &str, content: String, client_msg_id: String) -> anyhow::Result<Value> {
        let data = json!({ "chatId": chat_id, "content": content, "messageType": "text", "clientMsgId": client_msg_id });
        self.call("message:send", data).await
    }

    /// Sends a client event; resolves with the reply's data, or fails if the
    /// server answered with an error.
    pub async fn call(&self, event: &str, data: Value) -> anyhow::Result<Value> {
        let reply = self.request(event, data)?.await?;
        if reply["event"] == "error" {
            bail!("{event} refused: {}", reply["error"]);
        }
        Ok(reply["data"].clone())
    }

    /// Writes a client event now (so frames leave in the order of these
    /// calls); the returned future resolves with the whole reply frame, `ack`
    /// or `error`, whenever it is awaited.
    pub fn request(&self, event: &str, data: Value) -> anyhow::Result<impl Future<Output = anyhow::Result<Value>> + Send + 'static> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (done, reply) = oneshot::channel();
        self.pending.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.insert(id, done);
        let frame = json!({ "event": event, "id": id, "data": data });
        self.writer.send(Message::text(frame.to_string())).context("connection closed")?;
        Ok(async move { reply.await.context("connection closed before the reply") })
    }

    pub fn close(&self) {
        let _ = self.writer.send(Message::Close(None));
    }
}

fn on_frame(conn: usize, frame: Value, at: Instant, pending: &Pending, acks: &mpsc::UnboundedSender<Message>, seen: &mpsc::UnboundedSender<Seen>) {
    let id = frame["id"].as_u64();
    match frame["event"].as_str().unwrap_or_default() {
        "ack" | "error" => {
            let waiter = id.and_then(|id| pending.lock().ok()?.remove(&id));
            if let Some(waiter) = waiter {
                let _ = waiter.send(frame);
            }
        }
        event @ ("message:receive" | "message:edited" | "message:deleted" | "message:reaction") => {
            // Every log entry is acknowledged like a message: the device's
            // cursor moves over it only then.
            ack(acks, id);
            let data = &frame["data"];
            let Some(entry) = EntryEvent::of(event) else { return };
            let content = if entry == EntryEvent::Message { data["content"].as_str().unwrap_or_default().to_owned() } else { String::new() };
            let _ = seen.send(Seen::Receive {
                conn,
                entry,
                message_id: data["messageId"].as_str().unwrap_or_default().to_owned(),
                chat_id: data["chatId"].as_str().unwrap_or_default().to_owned(),
                seq: data["seq"].as_i64().unwrap_or(-1),
                content,
                at,
            });
        }
        "typing" => {
            let _ = seen.send(Seen::Typing);
        }
        "message:status" => {
            ack(acks, id);
            let data = &frame["data"];
            if data["status"] == "delivered" {
                let _ = seen.send(Seen::Delivered { conn, at });
            }
        }
        "sync:done" => {
            let _ = seen.send(Seen::SyncDone);
        }
        "receipt" => {
            let data = &frame["data"];
            let _ = seen.send(Seen::Receipt {
                chat_id: data["chatId"].as_str().unwrap_or_default().to_owned(),
                user_id: data["userId"].as_str().unwrap_or_default().to_owned(),
                delivered_seq: data["deliveredSeq"].as_i64().unwrap_or(0),
                at,
            });
        }
        _ => {}
    }
}

fn ack(acks: &mpsc::UnboundedSender<Message>, id: Option<u64>) {
    if let Some(id) = id {
        let _ = acks.send(Message::text(format!(r#"{{"event":"ack","id":{id}}}"#)));
    }
}
