//! A WebSocket test client that speaks Courier's frames.

use std::{
    collections::VecDeque,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async_with_config,
    tungstenite::{self, Message, client::IntoClientRequest},
};

use crate::env::deadline;

type Sink = futures::stream::SplitSink<WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>, Message>;

/// Why a connection attempt failed.
#[derive(Debug)]
pub enum WsError {
    /// The server answered the upgrade with an HTTP error.
    Http { status: u16, body: Value },
    Other(String),
}

/// One client connection. A background task reads frames into a queue and,
/// when `auto_ack` is on, acknowledges every log entry (`message:receive`,
/// `message:edited`, `message:deleted`, `message:reaction`) and
/// `message:status` like a real client.
pub struct WsClient {
    sink: Arc<Mutex<Sink>>,
    incoming: mpsc::UnboundedReceiver<Value>,
    /// Frames read but not yet consumed by a `wait_*` call.
    pending: VecDeque<Value>,
    auto_ack: Arc<AtomicBool>,
    next_id: u64,
    pub user_id: String,
    pub connection_id: String,
    pub node_id: String,
}

impl WsClient {
    /// Connects with `?token=` and waits for `session:ready`. Acks deliveries automatically.
    pub async fn connect(addr: &str, token: &str) -> Result<Self, WsError> {
        Self::connect_url(&format!("ws://{addr}/ws?token={token}"), true).await
    }

    /// Connects without acknowledging deliveries (a client that never acks).
    pub async fn connect_without_acks(addr: &str, token: &str) -> Result<Self, WsError> {
        Self::connect_url(&format!("ws://{addr}/ws?token={token}"), false).await
    }

    pub async fn connect_url(url: &str, auto_ack: bool) -> Result<Self, WsError> {
        let request = url.into_client_request().map_err(|e| WsError::Other(e.to_string()))?;
        // TCP_NODELAY, as real clients (browsers) set it: small frames go out at once.
        let (socket, _) = match connect_async_with_config(request, None, true).await {
            Ok(connected) => connected,
            Err(tungstenite::Error::Http(response)) => {
                let status = response.status().as_u16();
                let body = response.body().as_ref().and_then(|b| serde_json::from_slice(b).ok()).unwrap_or(Value::Null);
                return Err(WsError::Http { status, body });
            }
            Err(error) => return Err(WsError::Other(error.to_string())),
        };
        let (sink, mut stream) = socket.split();
        let sink = Arc::new(Mutex::new(sink));
        let auto_ack = Arc::new(AtomicBool::new(auto_ack));
        let (queue, incoming) = mpsc::unbounded_channel();
        let reader_sink = sink.clone();
        let reader_auto_ack = auto_ack.clone();
        tokio::spawn(async move {
            while let Some(message) = stream.next().await {
                let frame = match message {
                    Ok(Message::Text(text)) => serde_json::from_str::<Value>(&text).unwrap_or(json!({ "unparsed": text.as_str() })),
                    Ok(Message::Close(frame)) => {
                        json!({ "event": "__closed", "code": frame.map(|f| u16::from(f.code)) })
                    }
                    Ok(_) => continue,
                    Err(_) => json!({ "event": "__closed", "code": null }),
                };
                let needs_ack = matches!(
                    frame["event"].as_str(),
                    Some("message:receive" | "message:edited" | "message:deleted" | "message:reaction" | "message:status")
                );
                if needs_ack && reader_auto_ack.load(Ordering::SeqCst) {
                    let ack = json!({ "event": "ack", "id": frame["id"] }).to_string();
                    let _ = reader_sink.lock().await.send(Message::Text(ack.into())).await;
                }
                let closed = frame["event"] == "__closed";
                if queue.send(frame).is_err() || closed {
                    return;
                }
            }
            let _ = queue.send(json!({ "event": "__closed", "code": null }));
        });
        let mut client = Self {
            sink,
            incoming,
            pending: VecDeque::new(),
            auto_ack,
            next_id: 0,
            user_id: String::new(),
            connection_id: String::new(),
            node_id: String::new(),
        };
        let ready = client.wait_event("session:ready").await;
        client.user_id = ready["data"]["userId"].as_str().unwrap_or_default().to_owned();
        client.connection_id = ready["data"]["connectionId"].as_str().unwrap_or_default().to_owned();
        client.node_id = ready["data"]["nodeId"].as_str().unwrap_or_default().to_owned();
        Ok(client)
    }

    pub fn set_auto_ack(&self, on: bool) {
        self.auto_ack.store(on, Ordering::SeqCst);
    }

    /// Sends a raw WebSocket message.
    pub async fn send_raw(&self, message: Message) {
        let _ = self.sink.lock().await.send(message).await;
    }

    /// Sends a frame as JSON text.
    pub async fn send_frame(&self, frame: Value) {
        self.send_raw(Message::Text(frame.to_string().into())).await;
    }

    /// Acknowledges server frame `id`.
    pub async fn ack(&self, id: &Value) {
        self.send_frame(json!({ "event": "ack", "id": id })).await;
    }

    /// Sends `event` with a fresh id and waits for its reply: `Ok(data)` for
    /// `ack`, `Err(error)` for `error`.
    pub async fn request(&mut self, event: &str, data: Value) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        self.send_frame(json!({ "event": event, "id": id, "data": data })).await;
        self.reply_to(id).await
    }

    /// Waits for the `ack` or `error` answering client frame `id`.
    pub async fn reply_to(&mut self, id: u64) -> Result<Value, Value> {
        let reply = self
            .wait_for(&format!("reply to frame {id}"), |f| {
                (f["event"] == "ack" || f["event"] == "error") && f["id"] == json!(id)
            })
            .await;
        if reply["event"] == "ack" { Ok(reply["data"].clone()) } else { Err(reply["error"].clone()) }
    }

    /// Sends a message; returns the ack's data (`messageId`, `seq`, ...).
    pub async fn send_message(&mut self, chat_id: &str, content: &str) -> Value {
        self.request("message:send", json!({ "chatId": chat_id, "content": content, "messageType": "text" }))
            .await
            .unwrap_or_else(|error| panic!("send failed: {error}"))
    }

    /// The next frame matching `predicate`; frames skipped over stay queued.
    pub async fn wait_for(&mut self, what: &str, predicate: impl Fn(&Value) -> bool) -> Value {
        if let Some(index) = self.pending.iter().position(&predicate) {
            return self.pending.remove(index).unwrap_or_default();
        }
        let until = tokio::time::Instant::now() + deadline();
        loop {
            match tokio::time::timeout_at(until, self.incoming.recv()).await {
                Ok(Some(frame)) if predicate(&frame) => return frame,
                Ok(Some(frame)) => self.pending.push_back(frame),
                Ok(None) => panic!("{}: connection reader ended while waiting for {what}", self.user_id),
                Err(_) => panic!("{}: timed out waiting for {what}; unconsumed: {:?}", self.user_id, self.pending),
            }
        }
    }

    /// The next frame of `event`.
    pub async fn wait_event(&mut self, event: &str) -> Value {
        self.wait_for(event, |f| f["event"] == event).await
    }

    /// The data of the next `n` `message:receive` frames, in arrival order.
    pub async fn receive_messages(&mut self, n: usize) -> Vec<Value> {
        let mut received = Vec::with_capacity(n);
        for _ in 0..n {
            received.push(self.wait_event("message:receive").await["data"].clone());
        }
        received
    }

    /// Frames of `event` already read and not consumed (call after a barrier).
    pub fn drain_pending(&mut self, event: &str) -> Vec<Value> {
        while let Ok(frame) = self.incoming.try_recv() {
            self.pending.push_back(frame);
        }
        let (matching, rest): (Vec<Value>, Vec<Value>) = self.pending.drain(..).partition(|f| f["event"] == event);
        self.pending = rest.into();
        matching
    }

    /// A round trip: every frame the server sent before answering this ping has been read.
    pub async fn barrier(&mut self) {
        self.request("ping", Value::Null).await.expect("ping");
    }

    /// Waits for the server to close the connection; returns the close code.
    pub async fn wait_closed(&mut self) -> Option<u16> {
        let frame = self.wait_event("__closed").await;
        frame["code"].as_u64().and_then(|c| u16::try_from(c).ok())
    }

    /// Closes the connection from the client side.
    pub async fn close(self) {
        let mut sink = self.sink.lock().await;
        let _ = sink.send(Message::Close(None)).await;
        let _ = sink.close().await;
    }
}
