//! The AsyncAPI document of the socket protocol (`courier_shared::asyncapi`):
//! `docs/asyncapi.json` is what the code generates, `GET /api/asyncapi.json`
//! serves it, its schemas and the server's parser agree on client frames, the
//! frames the Rust types build match it, and wrong frames fail it. (Every
//! frame the other suites send and receive is checked by the test client,
//! tests/src/ws.rs; docs/protocol.md's examples by tests/tests/examples.rs.)
//!
//! After changing the protocol types: `UPDATE_ASYNCAPI=1 cargo nextest run -p
//! courier-tests --test asyncapi` rewrites docs/asyncapi.json.

use std::path::PathBuf;

use chrono::{TimeZone, Utc};
use courier_shared::{
    ClientError, ErrorCode, asyncapi,
    protocol::{
        ClientEvent, DeletedMessage, DeliveredReply, DeliveryStatus, EditedMessage, EntryAccepted, Pong, ReactionChange,
        ReadReply, Receipt, ReceivedMessage, ReplyQuote, SenderInfo, SentMessage, SessionReady, StatusUpdate, SyncDone,
        TYPING_TTL_MS, TypingAccepted, TypingNotice, UserOffline, UserOnline, error_frame, event_frame, parse_client_frame,
    },
};
use courier_tests::{FrameSchemas, Rest, TestEnv, WsClient};
use proptest::{prelude::*, test_runner::Config};
use serde_json::{Value, json};
use uuid::Uuid;

fn docs_asyncapi_json() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/asyncapi.json")
}

#[test]
fn docs_asyncapi_json_is_what_the_code_generates() {
    let generated = asyncapi::document_json();
    let path = docs_asyncapi_json();
    if std::env::var_os("UPDATE_ASYNCAPI").is_some() {
        std::fs::write(&path, &generated).expect("write docs/asyncapi.json");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/asyncapi.json differs from what the code generates; regenerate it with \
         `UPDATE_ASYNCAPI=1 cargo nextest run -p courier-tests --test asyncapi` and commit it"
    );
}

#[tokio::test]
async fn the_api_serves_the_document() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    // No token: a client reads the spec before it has one.
    let (status, served) = Rest::new(&addr, None).get("/api/asyncapi.json").await;
    assert_eq!(status.as_u16(), 200, "{served}");
    assert_eq!(&served, asyncapi::document());
    env.cleanup().await;
}

/// The document is valid AsyncAPI 3.0.0: it passes the specification's own
/// JSON Schema (tests/asyncapi/, from `@asyncapi/specs`), and a document
/// broken in a way that schema knows of does not.
#[test]
fn the_document_passes_the_asyncapi_3_schema() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("asyncapi/asyncapi-3.0.0.schema.json");
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("the AsyncAPI 3.0.0 schema")).expect("JSON");
    let validator = jsonschema::options().with_draft(jsonschema::Draft::Draft7).build(&schema).expect("the schema compiles");
    let errors: Vec<String> = validator.iter_errors(asyncapi::document()).map(|e| format!("{e} at {}", e.instance_path())).collect();
    assert!(errors.is_empty(), "not a valid AsyncAPI 3.0.0 document: {errors:#?}");

    let mut broken = asyncapi::document().clone();
    broken["operations"]["sendPing"]["action"] = json!("publish"); // AsyncAPI 2's word
    assert!(!validator.is_valid(&broken), "the AsyncAPI schema takes an operation with action `publish`");
}

/// What an AsyncAPI 3 tool needs: the version, one channel at `/ws` holding
/// every message, operations in both directions whose messages and replies
/// are the channel's, and nothing outside the file.
#[test]
fn the_document_is_a_self_contained_asyncapi_3_document() {
    let document = asyncapi::document();
    assert_eq!(document["asyncapi"], "3.0.0");
    let channel = &document["channels"]["ws"];
    assert_eq!(channel["address"], "/ws");
    let channel_messages = channel["messages"].as_object().expect("channel messages");
    let messages = document["components"]["messages"].as_object().expect("component messages");
    assert_eq!(channel_messages.len(), messages.len());
    let operations = document["operations"].as_object().expect("operations");
    let (mut sends, mut receives) = (0, 0);
    for (name, operation) in operations {
        match operation["action"].as_str() {
            Some("send") => sends += 1,
            Some("receive") => receives += 1,
            other => panic!("{name}: action {other:?}"),
        }
        assert_eq!(operation["channel"]["$ref"], "#/channels/ws", "{name}");
        let listed = operation["messages"].as_array().into_iter().flatten().chain(operation["reply"]["messages"].as_array().into_iter().flatten());
        for message in listed {
            let target = message["$ref"].as_str().unwrap_or_default();
            assert!(target.starts_with("#/channels/ws/messages/"), "{name}: {target}");
            assert!(document.pointer(&target[1..]).is_some(), "{name}: dangling {target}");
        }
    }
    assert!(sends >= 11 && receives >= 13, "{sends} send and {receives} receive operations");
    let text = asyncapi::document_json();
    for reference in text.match_indices("\"$ref\": \"").map(|(at, found)| &text[at + found.len()..]) {
        assert!(reference.starts_with("#/"), "a $ref outside the document: {}", &reference[..40.min(reference.len())]);
    }
}

/// The server's parser and the schemas agree on client frames: a frame the
/// schema accepts parses, and one that parses and passes the event's own
/// rules (content, emoji…) is one the schema accepts. Checked on hand-picked
/// frames, then on random ones built from right and wrong field values.
#[test]
fn schemas_and_the_parser_agree_on_client_frames() {
    let schemas = FrameSchemas::compile(asyncapi::document(), false);
    let chat = Uuid::now_v7();
    let frames = [
        (json!({"event": "message:send", "id": 1, "data": {"chatId": chat, "content": "hi"}}), true),
        (json!({"event": "message:send", "data": {"chatId": chat, "content": "hi", "messageType": "image", "clientMsgId": "c", "replyTo": chat}}), true),
        (json!({"event": "message:send", "id": 1, "data": {"chatId": chat}}), false),
        (json!({"event": "message:send", "id": 1, "data": {"chatId": "nope", "content": "hi"}}), false),
        (json!({"event": "message:send", "id": 1, "data": {"chatId": chat, "content": "hi", "messageType": "hologram"}}), false),
        (json!({"event": "message:send", "id": 1, "data": {"chatId": chat, "content": ""}}), false),
        (json!({"event": "message:send", "id": -1, "data": {"chatId": chat, "content": "hi"}}), false),
        (json!({"event": "message:read", "id": 2, "data": {"chatId": chat, "upToSeq": 4}}), true),
        (json!({"event": "message:read", "id": 2, "data": {"messageId": chat}}), true),
        (json!({"event": "message:read", "id": 2, "data": {"chatId": chat}}), false),
        (json!({"event": "message:react", "id": 3, "data": {"messageId": chat, "emoji": "👍"}}), true),
        (json!({"event": "message:react", "id": 3, "data": {"messageId": chat, "emoji": "a b"}}), false),
        (json!({"event": "message:delete", "id": 4, "data": {"messageId": chat, "forMe": true}}), true),
        (json!({"event": "message:delete", "id": 4, "data": {"messageId": chat, "forMe": "yes"}}), false),
        (json!({"event": "typing:start", "data": {"chatId": chat}}), true),
        (json!({"event": "typing:stop", "id": 5, "data": null}), false),
        (json!({"event": "ping", "id": 6}), true),
        (json!({"event": "ack", "id": 7}), true),
        (json!({"event": "ack"}), false),
        (json!({"event": "message:teleport", "id": 8, "data": {}}), false),
        (json!({"event": 5, "id": 8}), false),
    ];
    for (frame, valid) in frames {
        let verdict = schemas.check_client(&frame);
        assert_eq!(verdict.is_ok(), valid, "the schema's verdict on {frame}: {verdict:?}");
        agree(&schemas, &frame);
    }
    let mut runner = proptest::test_runner::TestRunner::new(Config { cases: 2000, failure_persistence: None, ..Config::default() });
    runner
        .run(&client_frames(chat), |frame| {
            agree(&schemas, &frame);
            Ok(())
        })
        .unwrap();
}

/// Schema-valid ⇒ parses; parses and passes the event's rules ⇒ schema-valid.
fn agree(schemas: &FrameSchemas, frame: &Value) {
    let verdict = schemas.check_client(frame);
    let parsed = parse_client_frame(&frame.to_string()).map_err(|(_, error)| error);
    if verdict.is_ok() {
        assert!(parsed.is_ok(), "the schema accepts {frame}, the parser refuses it: {:?}", parsed.err());
    }
    let acceptable = parsed.and_then(|frame| match frame.event {
        ClientEvent::Send(send) => send.validate(),
        ClientEvent::Edit(edit) => edit.validate(),
        ClientEvent::React(reaction) | ClientEvent::Unreact(reaction) => reaction.validate(),
        _ => Ok(()),
    });
    if acceptable.is_ok() {
        assert!(verdict.is_ok(), "the server takes {frame}, the schema refuses it: {verdict:?}");
    }
}

/// Client frames whose fields are picked from right and wrong values. (Not
/// generated: `id: null` and integral floats like `1.0`, which the parser and
/// JSON Schema read differently; the document promises neither.)
fn client_frames(chat: Uuid) -> impl Strategy<Value = Value> {
    let field = move |name: &'static str| -> BoxedStrategy<(&'static str, Value)> {
        let values: Vec<Value> = match name {
            "content" => vec![json!("hi"), json!(""), json!("   "), json!(5), Value::Null],
            "messageType" => vec![json!("text"), json!("image"), json!("bogus"), json!(1), Value::Null],
            "clientMsgId" => vec![json!("c-1"), json!(""), json!(7), Value::Null],
            "forMe" => vec![json!(true), json!(false), json!("yes"), Value::Null],
            "emoji" => vec![json!("👍"), json!(""), json!("a b"), json!("x\u{1}"), Value::Null],
            "upToSeq" => vec![json!(0), json!(5), json!(-1), json!("5"), Value::Null],
            _ => vec![json!(chat), json!("not-a-uuid"), json!(5), Value::Null],
        };
        proptest::sample::select(values).prop_map(move |value| (name, value)).boxed()
    };
    let event_fields: Vec<(&'static str, Vec<&'static str>)> = vec![
        ("message:send", vec!["chatId", "content", "messageType", "clientMsgId", "replyTo"]),
        ("message:edit", vec!["messageId", "content"]),
        ("message:delete", vec!["messageId", "forMe"]),
        ("message:react", vec!["messageId", "emoji"]),
        ("message:unreact", vec!["messageId", "emoji"]),
        ("message:delivered", vec!["messageId"]),
        ("message:read", vec!["chatId", "upToSeq", "messageId"]),
        ("typing:start", vec!["chatId"]),
        ("typing:stop", vec!["chatId"]),
        ("ping", vec![]),
        ("ack", vec![]),
        ("message:bogus", vec!["chatId"]),
    ];
    proptest::sample::select(event_fields).prop_flat_map(move |(event, names)| {
        let fields: Vec<_> = names.iter().map(|name| proptest::option::of(field(name))).collect();
        let id = proptest::option::of(0u64..1000);
        let data_kind = prop_oneof![8 => Just("object"), 1 => Just("null"), 1 => Just("absent")];
        (fields, id, data_kind).prop_map(move |(fields, id, data_kind)| {
            let data: serde_json::Map<String, Value> = fields.into_iter().flatten().map(|(k, v)| (k.to_owned(), v)).collect();
            let mut frame = json!({ "event": event });
            if let Some(id) = id {
                frame["id"] = json!(id);
            }
            match data_kind {
                "object" => frame["data"] = Value::Object(data),
                "null" => frame["data"] = Value::Null,
                _ => {}
            }
            frame
        })
    })
}

fn at() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 7, 10, 15, 3).single().unwrap_or_default()
}

/// Each server frame, as the server's own types and frame builders write it.
fn server_frames() -> Vec<(String, Option<&'static str>)> {
    let (chat, message) = (Uuid::now_v7(), Uuid::now_v7());
    let sent = SentMessage { message_id: message, chat_id: chat, seq: 3, created_at: at(), client_msg_id: None };
    let received = ReceivedMessage {
        message_id: message,
        chat_id: chat,
        sender_id: "alice".into(),
        content: "hi".into(),
        message_type: "text".into(),
        created_at: at(),
        seq: 3,
        sender: SenderInfo { name: Some("Alice".into()), profile_picture: None },
        reply_to: Some(ReplyQuote { message_id: chat, sender_id: "bob".into(), quote: String::new(), deleted: true }),
        edited_at: Some(at()),
        deleted: true,
    };
    let plain = ReceivedMessage { reply_to: None, edited_at: None, deleted: false, ..received.clone() };
    let unchanged = EntryAccepted { message_id: message, chat_id: chat, changed: false, entry_id: None, seq: Some(8), at: at() };
    let for_me = EntryAccepted { seq: None, changed: true, ..unchanged.clone() };
    let error = ClientError::new(ErrorCode::NotMember, "not a member of this chat");
    vec![
        (event_frame("session:ready", Some(1), &SessionReady { user_id: "alice".into(), connection_id: chat, node_id: "n1".into() }), None),
        (event_frame("message:sent", Some(2), &SentMessage { client_msg_id: Some("c-1".into()), ..sent.clone() }), None),
        (event_frame("message:receive", Some(3), &received), None),
        (event_frame("message:receive", Some(4), &plain), None),
        (event_frame("message:edited", Some(5), &EditedMessage { message_id: message, chat_id: chat, sender_id: "alice".into(), content: "x".into(), edited_at: at(), seq: 4 }), None),
        (event_frame("message:deleted", Some(6), &DeletedMessage { message_id: message, chat_id: chat, sender_id: "alice".into(), deleted_at: at(), seq: 5 }), None),
        (event_frame("message:reaction", Some(7), &ReactionChange { message_id: message, chat_id: chat, user_id: "bob".into(), emoji: "👍".into(), added: false, at: at(), seq: 6 }), None),
        (event_frame("message:status", Some(8), &StatusUpdate { message_id: message, chat_id: chat, status: DeliveryStatus::Expired, user_id: "bob".into(), delivered_to: "bob".into(), timestamp: at() }), None),
        (event_frame("receipt", Some(9), &Receipt { chat_id: chat, user_id: "bob".into(), delivered_seq: 6, read_seq: 5 }), None),
        (event_frame("user:online", Some(10), &UserOnline { user_id: "bob".into(), timestamp: at() }), None),
        (event_frame("user:offline", Some(11), &UserOffline { user_id: "bob".into(), last_seen: at() }), None),
        (event_frame("sync:done", Some(12), &SyncDone { count: 0 }), None),
        (event_frame("typing", Some(13), &TypingNotice { chat_id: chat, user_id: "bob".into(), typing: true, expires_in_ms: TYPING_TTL_MS }), None),
        (event_frame("ack", Some(1), &sent), Some("message:send")),
        (event_frame("ack", Some(2), &unchanged), Some("message:react")),
        (event_frame("ack", Some(3), &for_me), Some("message:delete")),
        (event_frame("ack", Some(4), &DeliveredReply { updated: true }), Some("message:delivered")),
        (event_frame("ack", Some(5), &ReadReply { updated: 2 }), Some("message:read")),
        (event_frame("ack", Some(6), &TypingAccepted {}), Some("typing:start")),
        (event_frame("ack", Some(7), &Pong { pong: true }), Some("ping")),
        (error_frame(Some(8), &error), Some("message:send")),
        (error_frame(None, &error), None),
    ]
}

#[test]
fn frames_the_server_builds_match_the_document() {
    let schemas = FrameSchemas::get();
    for (text, request) in server_frames() {
        let frame: Value = serde_json::from_str(&text).expect("a frame is JSON");
        if let Err(error) = schemas.check_server(&frame, request) {
            panic!("{error}");
        }
    }
}

/// Frames that are wrong in one way each fail, whichever the way.
#[test]
fn wrong_frames_fail_the_document() {
    let schemas = FrameSchemas::get();
    let frames: Vec<(String, Option<&str>)> = server_frames();
    let frame = |index: usize| -> Value { serde_json::from_str(&frames[index].0).expect("JSON") };
    let received = frame(3);
    let mut wrong: Vec<(&str, Value, Option<&str>)> = Vec::new();
    let mut edit = |what, change: &dyn Fn(&mut Value), request| {
        let mut copy = received.clone();
        change(&mut copy);
        wrong.push((what, copy, request));
    };
    edit("no seq", &|f| drop(f["data"].as_object_mut().map(|d| d.remove("seq"))), None);
    edit("seq as a string", &|f| f["data"]["seq"] = json!("3"), None);
    edit("a chatId that is not a UUID", &|f| f["data"]["chatId"] = json!("chat-1"), None);
    edit("createdAt that is not a date", &|f| f["data"]["createdAt"] = json!("yesterday"), None);
    edit("a field the document does not name", &|f| f["data"]["colour"] = json!("red"), None);
    edit("no id", &|f| drop(f.as_object_mut().map(|o| o.remove("id"))), None);
    edit("a negative id", &|f| f["id"] = json!(-3), None);
    edit("an unknown event", &|f| f["event"] = json!("message:teleport"), None);
    edit("another event's data", &|f| f["event"] = json!("message:edited"), None);
    edit("sender without its fields", &|f| f["data"]["sender"] = json!({}), None);
    let mut status = frame(7);
    status["data"]["status"] = json!("seen");
    wrong.push(("an unknown status", status, None));
    let mut error = frame(21);
    error["error"]["code"] = json!("oops");
    wrong.push(("an unknown error code", error, None));
    // A right reply to the wrong request.
    wrong.push(("a pong answering message:send", frame(19), Some("message:send")));
    wrong.push(("a SentMessage answering message:edit", frame(13), Some("message:edit")));
    for (what, frame, request) in wrong {
        assert!(schemas.check_server(&frame, request).is_err(), "{what} passes: {frame}");
    }
}

/// The test client holds every frame to the document: one it would send that
/// the document refuses fails the test at once, and so does a request the
/// document refuses that the server accepts (the two disagree). A refused
/// request that the server refuses too is what error tests do: it passes.
#[tokio::test]
async fn the_test_client_fails_on_frames_the_document_refuses() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    let token = env.token("alice");
    let chat = Rest::new(&addr, Some(&token)).create_chat("direct", &["bob"]).await;

    let client = WsClient::connect(&addr, &token).await.expect("connect");
    let no_chat = tokio::spawn(async move { client.send_frame(json!({ "event": "typing:start", "data": {} })).await });
    assert_panics_with(no_chat.await, "sent a frame the AsyncAPI document refuses");

    let mut client = WsClient::connect(&addr, &token).await.expect("connect");
    let read = json!({ "chatId": chat, "upToSeq": 0, "note": "a field the document does not name" });
    let undocumented = tokio::spawn(async move { client.request("message:read", read).await });
    assert_panics_with(undocumented.await, "the server accepted a `message:read` frame the AsyncAPI document refuses");

    let mut client = WsClient::connect(&addr, &token).await.expect("connect");
    let error = client.request("message:read", json!({ "chatId": chat })).await.expect_err("no upToSeq");
    assert_eq!(error["code"], "invalid_payload");
    env.cleanup().await;
}

fn assert_panics_with<T: std::fmt::Debug>(result: Result<T, tokio::task::JoinError>, expected: &str) {
    let payload = result.expect_err("the test client let the frame through").into_panic();
    let message = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|text| (*text).to_owned()))
        .unwrap_or_default();
    assert!(message.contains(expected), "the test client failed for another reason: {message}");
}
