//! A WebSocket test client that speaks Courier's frames, and checks every
//! frame it sends (`send_frame` and the helpers on it) and receives against
//! the AsyncAPI document (`courier_shared::asyncapi`): a frame the document
//! does not describe fails the test, naming the event and the schema error.
//! A received frame is checked when the test reads it (`wait_*`,
//! `drain_pending`), so that a reply is held against the frame it answers.
//! `send_raw` is not checked: hostile tests send garbage through it on purpose.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, OnceLock,
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
    /// Client frames sent with an `id`, by id: their event and whether the
    /// document accepts them, to hold their replies against.
    requests: std::sync::Mutex<HashMap<u64, SentRequest>>,
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
            requests: std::sync::Mutex::new(HashMap::new()),
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

    /// Sends a raw WebSocket message, unchecked (hostile tests send garbage
    /// on purpose). Its `id`, if it has one, no longer names a checked frame.
    pub async fn send_raw(&self, message: Message) {
        if let Message::Text(text) = &message
            && let Some(id) = serde_json::from_str::<Value>(text).ok().and_then(|frame| frame["id"].as_u64())
        {
            self.requests.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&id);
        }
        self.write(message).await;
    }

    async fn write(&self, message: Message) {
        let _ = self.sink.lock().await.send(message).await;
    }

    /// Sends a frame as JSON text, checked against the AsyncAPI document. A
    /// frame the document refuses may only be sent with an `id` (the test
    /// expects an error): its reply must then be an `error`.
    pub async fn send_frame(&self, frame: Value) {
        self.check_sent(&frame);
        self.write(Message::Text(frame.to_string().into())).await;
    }

    fn check_sent(&self, frame: &Value) {
        let verdict = FrameSchemas::get().check_client(frame);
        let event = frame["event"].as_str().unwrap_or_default().to_owned();
        match frame["id"].as_u64() {
            Some(id) if event != "ack" => {
                let mut requests = self.requests.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                requests.insert(id, SentRequest { event, verdict });
            }
            _ => {
                if let Err(error) = verdict {
                    panic!("{}: sent a frame the AsyncAPI document refuses: {error}", self.user_id);
                }
            }
        }
    }

    /// Checks a frame read from the server against the document (and, for a
    /// reply, against the frame it answers); panics on a mismatch.
    fn check_received(&self, frame: &Value) {
        if frame["event"] == "__closed" {
            return;
        }
        let is_reply = matches!(frame["event"].as_str(), Some("ack" | "error"));
        let request = match frame["id"].as_u64() {
            Some(id) if is_reply => {
                let requests = self.requests.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                requests.get(&id).map(|request| (request.event.clone(), request.verdict.clone()))
            }
            _ => None,
        };
        if let Some((event, verdict)) = &request {
            let refused_as_malformed = frame["event"] == "error"
                && matches!(
                    frame["error"]["code"].as_str(),
                    Some("invalid_json" | "invalid_frame" | "unknown_event" | "invalid_payload")
                );
            match verdict {
                Err(error) if frame["event"] == "ack" => panic!(
                    "{}: the server accepted a `{event}` frame the AsyncAPI document refuses ({error}); its reply: {frame}",
                    self.user_id
                ),
                Ok(()) if refused_as_malformed => panic!(
                    "{}: the AsyncAPI document accepts a `{event}` frame the server refuses as malformed: {frame}",
                    self.user_id
                ),
                _ => {}
            }
        }
        let request = request.as_ref().map(|(event, _)| event.as_str());
        if let Err(error) = FrameSchemas::get().check_server(frame, request) {
            panic!("{}: received a frame the AsyncAPI document refuses: {error}", self.user_id);
        }
    }

    /// The next frame from the reader, checked.
    async fn next_frame(&mut self, until: tokio::time::Instant) -> Result<Option<Value>, tokio::time::error::Elapsed> {
        let frame = tokio::time::timeout_at(until, self.incoming.recv()).await?;
        if let Some(frame) = &frame {
            self.check_received(frame);
        }
        Ok(frame)
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
            match self.next_frame(until).await {
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
            self.check_received(&frame);
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

/// A client frame sent with an `id`, remembered until its reply.
struct SentRequest {
    event: String,
    /// Whether the AsyncAPI document accepts the frame (why not, if not).
    verdict: Result<(), String>,
}

/// The frame schemas of the AsyncAPI document, compiled once: each message's
/// payload (the whole `/ws` frame) with every object closed
/// (`additionalProperties: false`), so that a field the document does not
/// name fails too. The document itself leaves objects open, as clients
/// should ignore fields they do not know.
pub struct FrameSchemas {
    /// Event name → the messages a client may send under it.
    client: HashMap<String, Vec<CompiledMessage>>,
    /// Event name → the messages a client may receive under it.
    server: HashMap<String, Vec<CompiledMessage>>,
    /// Client event → the message keys of its replies.
    replies: HashMap<String, Vec<String>>,
}

struct CompiledMessage {
    key: String,
    validator: jsonschema::Validator,
}

impl FrameSchemas {
    /// The schemas of `courier_shared::asyncapi::document()`.
    pub fn get() -> &'static FrameSchemas {
        static SCHEMAS: OnceLock<FrameSchemas> = OnceLock::new();
        SCHEMAS.get_or_init(|| FrameSchemas::compile(courier_shared::asyncapi::document(), true))
    }

    /// Compiles a document's messages, with every object closed when `closed`
    /// (else as the document has them); panics if it is not the shape
    /// `courier_shared::asyncapi` writes (a test bug, not a frame's).
    pub fn compile(document: &Value, closed: bool) -> FrameSchemas {
        let mut components = document["components"].clone();
        if closed {
            close_objects(&mut components);
        }
        let compile = |key: &str| {
            let root = json!({ "$ref": format!("#/components/messages/{key}/payload"), "components": components });
            let validator = jsonschema::options()
                .with_draft(jsonschema::Draft::Draft202012)
                .should_validate_formats(true)
                .build(&root)
                .unwrap_or_else(|error| panic!("message {key} does not compile: {error}"));
            CompiledMessage { key: key.to_owned(), validator }
        };
        let mut schemas = FrameSchemas { client: HashMap::new(), server: HashMap::new(), replies: HashMap::new() };
        let operations = document["operations"].as_object().expect("the document has operations");
        for operation in operations.values() {
            let keys = message_keys(&operation["messages"]);
            let reply_keys = message_keys(&operation["reply"]["messages"]);
            let side = match operation["action"].as_str() {
                Some("send") => &mut schemas.client,
                Some("receive") => &mut schemas.server,
                other => panic!("an operation with action {other:?}"),
            };
            for key in &keys {
                let event = message_event(document, key);
                side.entry(event).or_default().push(compile(key));
            }
            for key in &reply_keys {
                let event = message_event(document, key);
                let known = schemas.server.get(&event).is_some_and(|messages| messages.iter().any(|m| &m.key == key));
                if !known {
                    schemas.server.entry(event).or_default().push(compile(key));
                }
            }
            if operation["action"] == "send" {
                for key in &keys {
                    schemas.replies.insert(message_event(document, key), reply_keys.clone());
                }
            }
        }
        schemas
    }

    /// Whether a client may send `frame`: it matches a message of its event.
    pub fn check_client(&self, frame: &Value) -> Result<(), String> {
        let event = frame["event"].as_str().ok_or_else(|| format!("a frame without an event name: {frame}"))?;
        let messages = self.client.get(event).ok_or_else(|| format!("no client event `{event}`: {frame}"))?;
        check_any(event, messages.iter(), frame)
    }

    /// Whether a client may receive `frame`; `request` is the event of the
    /// client frame an `ack` or `error` answers, when known.
    pub fn check_server(&self, frame: &Value, request: Option<&str>) -> Result<(), String> {
        let event = frame["event"].as_str().ok_or_else(|| format!("a frame without an event name: {frame}"))?;
        let messages = self.server.get(event).ok_or_else(|| format!("no server event `{event}`: {frame}"))?;
        match request.and_then(|request| self.replies.get(request)) {
            Some(replies) => check_any(event, messages.iter().filter(|m| replies.contains(&m.key)), frame)
                .map_err(|error| format!("as a reply to `{}`: {error}", request.unwrap_or_default())),
            None => check_any(event, messages.iter(), frame),
        }
    }
}

/// `frame` matches one of `messages`; else every message's errors.
fn check_any<'a>(event: &str, messages: impl Iterator<Item = &'a CompiledMessage>, frame: &Value) -> Result<(), String> {
    let mut errors = Vec::new();
    for message in messages {
        let found: Vec<String> = message
            .validator
            .iter_errors(frame)
            .map(|error| format!("{} at `{}`", error, error.instance_path()))
            .collect();
        if found.is_empty() {
            return Ok(());
        }
        errors.push(format!("message {}: {}", message.key, found.join("; ")));
    }
    if errors.is_empty() {
        errors.push("no message fits".to_owned());
    }
    Err(format!("`{event}` frame {frame}: {}", errors.join(" | ")))
}

/// The keys of `[{"$ref": "#/channels/ws/messages/KEY"}, …]`.
fn message_keys(refs: &Value) -> Vec<String> {
    refs.as_array()
        .into_iter()
        .flatten()
        .filter_map(|reference| reference["$ref"].as_str())
        .filter_map(|reference| reference.rsplit('/').next())
        .map(str::to_owned)
        .collect()
}

fn message_event(document: &Value, key: &str) -> String {
    document["components"]["messages"][key]["name"]
        .as_str()
        .unwrap_or_else(|| panic!("message {key} has no name"))
        .to_owned()
}

/// Sets `additionalProperties: false` on every object schema that lists its
/// properties and says nothing about others.
fn close_objects(value: &mut Value) {
    match value {
        Value::Object(object) => {
            if object.get("properties").is_some_and(Value::is_object) && !object.contains_key("additionalProperties") {
                object.insert("additionalProperties".into(), Value::Bool(false));
            }
            for (key, child) in object.iter_mut() {
                // Property names are not schemas: descend into their values only.
                if key == "properties" {
                    if let Value::Object(properties) = child {
                        properties.values_mut().for_each(close_objects);
                    }
                } else {
                    close_objects(child);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(close_objects),
        _ => {}
    }
}
