//! The AsyncAPI 3.0 document of the client protocol: every `/ws` frame, both
//! directions, with payload JSON Schemas generated (schemars) from the types
//! in `protocol` and `error` that parse and build them, so the document
//! cannot drift from the code. `GET /api/asyncapi.json` serves it and
//! `docs/asyncapi.json` is a copy that a test keeps equal to it.
//!
//! The document describes a *client*: `send` operations are frames the client
//! sends, `receive` operations frames it receives. A message's payload is the
//! whole `/ws` frame (`event`, `id`, `data` or `error`); its `data` property
//! is what Socket.IO carries as the event's argument. Everything it refers to
//! is under `components`, so the file stands alone (no external `$ref`).

use std::sync::OnceLock;

use schemars::{JsonSchema, SchemaGenerator, generate::SchemaSettings};
use serde_json::{Map, Value, json};

use crate::{
    error::ClientError,
    protocol::{
        DeleteMessage, DeletedMessage, DeliveredReply, EditMessage, EditedMessage, EntryAccepted, MessageRef, Pong,
        ReactionChange, ReactionRef, ReadReceipt, ReadReply, Receipt, ReceivedMessage, SendMessage, SentMessage,
        SessionReady, StatusUpdate, SyncDone, TypingAccepted, TypingData, TypingNotice, UserOffline, UserOnline,
        client_events, server_events,
    },
};

/// The channel every message travels on.
pub const CHANNEL: &str = "ws";
/// Where component schemas live in the document (also where `$ref`s point).
const SCHEMAS_PATH: &str = "/components/schemas";

/// How a frame's `id` and body appear; decides its envelope schema.
#[derive(Clone, Copy)]
enum Shape {
    /// A client event: `id` optional (with one, it gets exactly one reply),
    /// `data` of the schema, or anything (ignored) without one.
    Request(Option<&'static str>),
    /// The client's ack of a server event: `id` names the event, no data.
    ClientAck,
    /// A server event: numbered `id`, `data` of the schema.
    Event(&'static str),
    /// An `ack` answering a client frame: its `id`, `data` of the schema.
    Reply(&'static str),
    /// An `error` frame: the `id` of the client frame it answers, if any.
    Error,
}

/// One message of the channel.
struct Message {
    /// Key under `components/messages` and the channel's `messages`.
    key: &'static str,
    /// The frame's `event`.
    event: &'static str,
    summary: &'static str,
    shape: Shape,
    /// The client must ack it (`{"event": "ack", "id": N}`, or Socket.IO's
    /// ack callback) or it comes again.
    needs_ack: bool,
}

/// A client event and the replies it can get.
struct ClientOperation {
    message: &'static str,
    replies: &'static [&'static str],
}

const fn client(key: &'static str, event: &'static str, data: Option<&'static str>, summary: &'static str) -> Message {
    Message { key, event, summary, shape: Shape::Request(data), needs_ack: false }
}

const fn server(key: &'static str, event: &'static str, data: &'static str, summary: &'static str, needs_ack: bool) -> Message {
    Message { key, event, summary, shape: Shape::Event(data), needs_ack }
}

const fn reply(key: &'static str, data: &'static str, summary: &'static str) -> Message {
    Message { key, event: server_events::ACK, summary, shape: Shape::Reply(data), needs_ack: false }
}

/// Every frame of the protocol. The data schemas are named after the Rust
/// types (see `payload_schemas`).
const MESSAGES: &[Message] = &[
    client("messageSend", client_events::SEND, Some("SendMessage"), "Send a message to a chat."),
    client("messageEdit", client_events::EDIT, Some("EditMessage"), "Replace the content of one's own message."),
    client("messageDelete", client_events::DELETE, Some("DeleteMessage"), "Delete a message for everyone, or hide it for oneself (`forMe`)."),
    client("messageReact", client_events::REACT, Some("ReactionRef"), "Add a reaction to a message."),
    client("messageUnreact", client_events::UNREACT, Some("ReactionRef"), "Take back a reaction."),
    client("messageDelivered", client_events::DELIVERED, Some("MessageRef"), "The guide's way to acknowledge a `message:receive`."),
    client("messageRead", client_events::READ, Some("ReadReceipt"), "Move the user's read mark in a chat."),
    client("typingStart", client_events::TYPING_START, Some("TypingData"), "The user is typing in a chat (repeat every few seconds)."),
    client("typingStop", client_events::TYPING_STOP, Some("TypingData"), "The user stopped typing."),
    client("ping", client_events::PING, None, "A round trip; `data` is ignored."),
    Message {
        key: "ack",
        event: client_events::ACK,
        summary: "Acknowledge server event `id`; gets no reply.",
        shape: Shape::ClientAck,
        needs_ack: false,
    },
    server("sessionReady", server_events::READY, "SessionReady", "First frame of every connection.", false),
    server("messageSent", server_events::SENT, "SentMessage", "✓ sent: the same body as the `message:send` reply.", false),
    server("messageReceive", server_events::RECEIVE, "ReceivedMessage", "A message for this device, in seq order per chat.", true),
    server("messageEdited", server_events::EDITED, "EditedMessage", "A message now reads `content`.", true),
    server("messageDeleted", server_events::DELETED, "DeletedMessage", "A message was deleted for everyone: show a tombstone.", true),
    server("messageReaction", server_events::REACTION, "ReactionChange", "A reaction was added or removed.", true),
    server("messageStatus", server_events::STATUS, "StatusUpdate", "✓✓ delivered, read or expired, per recipient (direct chats).", true),
    server("receipt", server_events::RECEIPT, "Receipt", "A member's delivered and read watermarks in a chat moved.", false),
    server("userOnline", server_events::USER_ONLINE, "UserOnline", "A user came online.", false),
    server("userOffline", server_events::USER_OFFLINE, "UserOffline", "A user went offline.", false),
    server("syncDone", server_events::SYNC_DONE, "SyncDone", "Everything pending at connect time has been delivered.", false),
    server("typing", server_events::TYPING, "TypingNotice", "A member started or stopped typing (ephemeral).", false),
    reply("messageSendReply", "SentMessage", "The reply to `message:send`: ✓ sent."),
    reply("entryReply", "EntryAccepted", "The reply to `message:edit`, `message:delete`, `message:react` and `message:unreact`."),
    reply("deliveredReply", "DeliveredReply", "The reply to `message:delivered`."),
    reply("readReply", "ReadReply", "The reply to `message:read`."),
    reply("typingReply", "TypingAccepted", "The reply to `typing:start` and `typing:stop`."),
    reply("pong", "Pong", "The reply to `ping`."),
    Message {
        key: "error",
        event: server_events::ERROR,
        summary: "A client event failed: the reply to a frame with `id`, or on its own for one without.",
        shape: Shape::Error,
        needs_ack: false,
    },
];

/// The client events, each with the replies a frame with `id` can get.
const CLIENT_OPERATIONS: &[ClientOperation] = &[
    ClientOperation { message: "messageSend", replies: &["messageSendReply", "error"] },
    ClientOperation { message: "messageEdit", replies: &["entryReply", "error"] },
    ClientOperation { message: "messageDelete", replies: &["entryReply", "error"] },
    ClientOperation { message: "messageReact", replies: &["entryReply", "error"] },
    ClientOperation { message: "messageUnreact", replies: &["entryReply", "error"] },
    ClientOperation { message: "messageDelivered", replies: &["deliveredReply", "error"] },
    ClientOperation { message: "messageRead", replies: &["readReply", "error"] },
    ClientOperation { message: "typingStart", replies: &["typingReply", "error"] },
    ClientOperation { message: "typingStop", replies: &["typingReply", "error"] },
    ClientOperation { message: "ping", replies: &["pong", "error"] },
    ClientOperation { message: "ack", replies: &[] },
];

/// The server events a client receives without asking (replies are not here:
/// they belong to the operation they answer). `error` is here too: an event
/// sent without `id` that fails gets one.
const SERVER_OPERATIONS: &[&str] = &[
    "sessionReady",
    "messageSent",
    "messageReceive",
    "messageEdited",
    "messageDeleted",
    "messageReaction",
    "messageStatus",
    "receipt",
    "userOnline",
    "userOffline",
    "syncDone",
    "typing",
    "error",
];

/// The AsyncAPI document, built once.
pub fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(build)
}

/// The document as `docs/asyncapi.json` holds it: keys sorted, two-space
/// indent, a final newline (stable whatever serde_json's key order).
pub fn document_json() -> String {
    let mut text = serde_json::to_string_pretty(&sorted(document().clone())).unwrap_or_default();
    text.push('\n');
    text
}

fn build() -> Value {
    let mut schemas = payload_schemas();
    schemas.insert(
        "FrameId".into(),
        json!({
            "description": "A frame number. Client frames: any the client picks; the reply carries the same. \
                            Server events: numbered per connection from 1; the client acks them by it.",
            "type": "integer",
            "minimum": 0,
            "format": "uint64",
        }),
    );
    let messages: Map<String, Value> = MESSAGES.iter().map(|message| (message.key.into(), message_object(message))).collect();
    let channel_messages: Map<String, Value> = MESSAGES
        .iter()
        .map(|message| (message.key.into(), json!({ "$ref": format!("#/components/messages/{}", message.key) })))
        .collect();
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "Courier client protocol",
            "version": env!("CARGO_PKG_VERSION"),
            "description": INFO_DESCRIPTION,
            "license": { "name": "MIT" },
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": "localhost:8080",
                "protocol": "ws",
                "description": "A courier-api node (`wss` behind TLS). Socket.IO (protocol v5) at `/socket.io/` carries the same events.",
            },
        },
        "channels": {
            (CHANNEL): {
                "address": "/ws",
                "title": "WebSocket",
                "description": CHANNEL_DESCRIPTION,
                "messages": channel_messages,
                "bindings": { "ws": ws_binding() },
            },
        },
        "operations": operations(),
        "components": {
            "schemas": schemas,
            "messages": messages,
            "correlationIds": {
                "frameId": {
                    "description": "A reply (`ack` or `error`) carries the `id` of the client frame it answers.",
                    "location": "$message.payload#/id",
                },
            },
        },
    })
}

const INFO_DESCRIPTION: &str = "The events a chat client exchanges with Courier. This document describes a \
client: `send` operations are frames it sends, `receive` operations frames it receives. Each message's \
payload is the whole `/ws` frame; on Socket.IO the event name is the Socket.IO event, its argument is the \
frame's `data`, a reply comes through the ack callback (the reply's `data`, or `{error: {code, message}}`) and \
an `error` event carries the frame's `error`. Generated from the Rust types that parse and build the frames; \
docs/protocol.md says what the events mean.";

const CHANNEL_DESCRIPTION: &str = "Every WebSocket message is one JSON text frame `{event, id?, data?}`. \
A client frame with an `id` gets exactly one reply with the same `id`: `{event: \"ack\", id, data}` or \
`{event: \"error\", id, error: {code, message}}`; one without gets no reply on success and an `error` frame \
without `id` on failure. Server events carry their own `id`, numbered per connection from 1; the client \
acknowledges the ones marked `x-courier-needs-ack` with `{event: \"ack\", id}` or they come again. \
Binary frames are refused (`binary_not_supported`). Connect with a JWT (`Authorization: Bearer …` or \
`?token=`); a bad one gets HTTP 401 before the upgrade.";

/// The WebSocket binding: the query the upgrade takes.
fn ws_binding() -> Value {
    json!({
        "method": "GET",
        "query": {
            "type": "object",
            "properties": {
                "token": { "type": "string", "description": "The JWT, for clients that cannot set `Authorization` (browsers)." },
                "deviceId": {
                    "type": "string",
                    "pattern": "^[A-Za-z0-9_.:-]{1,64}$",
                    "description": "The device this connection belongs to (`default` when neither this nor the token's `did` names one).",
                },
                "statuses": {
                    "type": "string",
                    "enum": ["receipts"],
                    "description": "`receipts`: no `message:status` frames, `receipt`s only.",
                },
            },
        },
        "bindingVersion": "0.1.0",
    })
}

/// The JSON Schemas of every frame's `data` (and `error`), under their Rust
/// type names.
fn payload_schemas() -> Map<String, Value> {
    let (mut schemas, written) = read_and_written_schemas();
    // No type is both read and written, so the two sets of names are disjoint
    // (a unit test holds that).
    schemas.extend(written);
    schemas
}

/// Client events' schemas as the server reads them (Deserialize: optional
/// fields may be left out), and server frames' as it writes them (Serialize:
/// a field it always writes is required, even if null).
fn read_and_written_schemas() -> (Map<String, Value>, Map<String, Value>) {
    let settings = |contract: fn(SchemaSettings) -> SchemaSettings| {
        contract(SchemaSettings::draft07().with(|settings| {
            settings.definitions_path = SCHEMAS_PATH.into();
            settings.meta_schema = None;
        }))
    };
    let mut read = settings(SchemaSettings::for_deserialize).into_generator();
    for add in [
        subschema::<SendMessage>,
        subschema::<EditMessage>,
        subschema::<DeleteMessage>,
        subschema::<ReactionRef>,
        subschema::<MessageRef>,
        subschema::<ReadReceipt>,
        subschema::<TypingData>,
    ] {
        add(&mut read);
    }
    let mut written = settings(SchemaSettings::for_serialize).into_generator();
    for add in [
        subschema::<SessionReady>,
        subschema::<SentMessage>,
        subschema::<ReceivedMessage>,
        subschema::<EditedMessage>,
        subschema::<DeletedMessage>,
        subschema::<ReactionChange>,
        subschema::<StatusUpdate>,
        subschema::<Receipt>,
        subschema::<UserOnline>,
        subschema::<UserOffline>,
        subschema::<SyncDone>,
        subschema::<TypingNotice>,
        subschema::<EntryAccepted>,
        subschema::<DeliveredReply>,
        subschema::<ReadReply>,
        subschema::<TypingAccepted>,
        subschema::<Pong>,
        subschema::<ClientError>,
    ] {
        add(&mut written);
    }
    (read.take_definitions(true), written.take_definitions(true))
}

/// Adds `T`'s schema (and those it uses) to the generator's definitions.
fn subschema<T: JsonSchema>(generator: &mut SchemaGenerator) {
    generator.subschema_for::<T>();
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#{SCHEMAS_PATH}/{name}") })
}

/// A message object: the frame's envelope around its data schema.
fn message_object(message: &Message) -> Value {
    let event = json!({ "const": message.event });
    let id = schema_ref("FrameId");
    let (properties, required) = match message.shape {
        Shape::Request(Some(data)) => (json!({ "event": event, "id": id, "data": schema_ref(data) }), json!(["event", "data"])),
        Shape::Request(None) => {
            (json!({ "event": event, "id": id, "data": { "description": "Ignored." } }), json!(["event"]))
        }
        Shape::ClientAck => (json!({ "event": event, "id": id }), json!(["event", "id"])),
        Shape::Event(data) | Shape::Reply(data) => {
            (json!({ "event": event, "id": id, "data": schema_ref(data) }), json!(["event", "id", "data"]))
        }
        Shape::Error => (json!({ "event": event, "id": id, "error": schema_ref("ClientError") }), json!(["event", "error"])),
    };
    let mut object = json!({
        "name": message.event,
        "title": message.event,
        "summary": message.summary,
        "payload": { "type": "object", "properties": properties, "required": required },
    });
    if matches!(message.shape, Shape::Request(_) | Shape::Reply(_) | Shape::Error) {
        object["correlationId"] = json!({ "$ref": "#/components/correlationIds/frameId" });
    }
    if message.needs_ack {
        object["x-courier-needs-ack"] = json!(true);
    }
    object
}

fn channel_message_ref(key: &str) -> Value {
    json!({ "$ref": format!("#/channels/{CHANNEL}/messages/{key}") })
}

/// `send<Key>` for each client event (with its replies), `receive<Key>` for
/// each server event.
fn operations() -> Map<String, Value> {
    let channel = json!({ "$ref": format!("#/channels/{CHANNEL}") });
    let mut operations = Map::new();
    for operation in CLIENT_OPERATIONS {
        let mut object = json!({
            "action": "send",
            "channel": channel,
            "summary": summary_of(operation.message),
            "messages": [channel_message_ref(operation.message)],
        });
        if !operation.replies.is_empty() {
            object["reply"] = json!({
                "channel": channel,
                "messages": operation.replies.iter().map(|key| channel_message_ref(key)).collect::<Vec<_>>(),
            });
        }
        operations.insert(format!("send{}", upper_first(operation.message)), object);
    }
    for key in SERVER_OPERATIONS {
        operations.insert(
            format!("receive{}", upper_first(key)),
            json!({
                "action": "receive",
                "channel": channel,
                "summary": summary_of(key),
                "messages": [channel_message_ref(key)],
            }),
        );
    }
    operations
}

fn summary_of(key: &str) -> &'static str {
    MESSAGES.iter().find(|message| message.key == key).map_or("", |message| message.summary)
}

fn upper_first(key: &str) -> String {
    let mut chars = key.chars();
    chars.next().map(|first| first.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

/// `value` with every object's keys in sorted order.
fn sorted(value: Value) -> Value {
    match value {
        Value::Object(object) => {
            let mut entries: Vec<(String, Value)> = object.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(key, value)| (key, sorted(value))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `$ref` in `value`.
    fn refs<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
        match value {
            Value::Object(object) => {
                for (key, value) in object {
                    match (key.as_str(), value) {
                        ("$ref", Value::String(target)) => found.push(target),
                        _ => refs(value, found),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| refs(item, found)),
            _ => {}
        }
    }

    #[test]
    fn every_ref_is_local_and_resolves() {
        let document = document();
        let mut found = Vec::new();
        refs(document, &mut found);
        assert!(found.len() > 50, "{found:?}");
        for target in found {
            let pointer = target.strip_prefix('#').unwrap_or_else(|| panic!("not a local $ref: {target}"));
            assert!(document.pointer(pointer).is_some(), "dangling $ref {target}");
        }
    }

    #[test]
    fn read_and_written_schemas_do_not_share_names() {
        let (read, written) = read_and_written_schemas();
        let shared: Vec<&String> = read.keys().filter(|name| written.contains_key(*name)).collect();
        assert!(shared.is_empty(), "schemas read and written under one name: {shared:?}");
    }

    #[test]
    fn every_event_constant_has_a_message() {
        let names: Vec<&str> = MESSAGES.iter().map(|message| message.event).collect();
        for event in [
            client_events::SEND,
            client_events::DELIVERED,
            client_events::READ,
            client_events::EDIT,
            client_events::DELETE,
            client_events::REACT,
            client_events::UNREACT,
            client_events::ACK,
            client_events::PING,
            client_events::TYPING_START,
            client_events::TYPING_STOP,
            server_events::ERROR,
            server_events::READY,
            server_events::SENT,
            server_events::RECEIVE,
            server_events::EDITED,
            server_events::DELETED,
            server_events::REACTION,
            server_events::STATUS,
            server_events::USER_ONLINE,
            server_events::USER_OFFLINE,
            server_events::SYNC_DONE,
            server_events::RECEIPT,
            server_events::TYPING,
        ] {
            assert!(names.contains(&event), "no message for {event}");
        }
    }

    #[test]
    fn the_json_is_stable() {
        assert_eq!(document_json(), document_json());
        let parsed: Value = serde_json::from_str(&document_json()).unwrap();
        assert_eq!(&parsed, document());
    }
}
