//! Edits, deletes, reactions and replies (issue 14): entries of the same
//! per-chat log as messages, so every device of every member gets them in
//! order after the message they are about, live or after being offline.

use std::time::Duration;

use courier_tests::{Rest, TestEnv, WsClient};
use serde_json::{Value, json};

async fn device(env: &TestEnv, addr: &str, user: &str, device: &str) -> WsClient {
    let url = format!("ws://{addr}/ws?token={}&deviceId={device}", env.token(user));
    let mut client = WsClient::connect_url(&url, true).await.unwrap();
    client.wait_event("sync:done").await;
    client
}

/// The log entries a device has been sent so far (after a barrier), in arrival order.
const ENTRY_EVENTS: [&str; 4] = ["message:receive", "message:edited", "message:deleted", "message:reaction"];

async fn entries_seen(client: &mut WsClient) -> Vec<Value> {
    client.barrier().await;
    let mut seen: Vec<Value> = ENTRY_EVENTS.iter().flat_map(|event| client.drain_pending(event)).collect();
    seen.sort_by_key(|frame| frame["id"].as_u64());
    seen
}

/// (event, seq) of each entry frame.
fn shape(frames: &[Value]) -> Vec<(String, i64)> {
    frames.iter().map(|f| (f["event"].as_str().unwrap().to_owned(), f["data"]["seq"].as_i64().unwrap())).collect()
}

async fn request(client: &mut WsClient, event: &str, data: Value) -> Value {
    client.request(event, data).await.unwrap_or_else(|error| panic!("{event} failed: {error}"))
}

async fn error_code(client: &mut WsClient, event: &str, data: Value) -> String {
    let error = client.request(event, data).await.expect_err("expected an error");
    error["code"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn edits_deletes_and_reactions_reach_every_device_live_and_never_the_one_that_made_them() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    env.start_worker().await;
    let chat = Rest::new(&addr, Some(&env.token("alice"))).create_chat("direct", &["bob"]).await;
    let mut phone = device(&env, &addr, "alice", "phone").await;
    let mut laptop = device(&env, &addr, "alice", "laptop").await;
    let mut bob = device(&env, &addr, "bob", "default").await;

    let sent = phone.send_message(&chat, "helo").await;
    let id = sent["messageId"].as_str().unwrap().to_owned();
    bob.wait_event("message:receive").await;
    laptop.wait_event("message:receive").await;

    let edit = request(&mut phone, "message:edit", json!({ "messageId": id, "content": "hello" })).await;
    assert_eq!((edit["changed"].clone(), edit["seq"].clone(), edit["messageId"].clone()), (json!(true), json!(2), json!(id)));
    for client in [&mut bob, &mut laptop] {
        let edited = client.wait_event("message:edited").await["data"].clone();
        assert_eq!((edited["messageId"].as_str(), edited["content"].as_str(), edited["seq"].as_i64()), (Some(id.as_str()), Some("hello"), Some(2)));
        assert!(edited["editedAt"].is_string());
    }

    let react = request(&mut bob, "message:react", json!({ "messageId": id, "emoji": "👍" })).await;
    assert_eq!((react["changed"].clone(), react["seq"].clone()), (json!(true), json!(3)));
    let again = request(&mut bob, "message:react", json!({ "messageId": id, "emoji": "👍" })).await;
    assert_eq!((again["changed"].clone(), again.get("entryId")), (json!(false), None), "one reaction per user, emoji and message");
    assert_eq!(again["seq"], 3, "as of the chat's last seq");
    for client in [&mut phone, &mut laptop] {
        let reaction = client.wait_event("message:reaction").await["data"].clone();
        assert_eq!(
            (reaction["userId"].as_str(), reaction["emoji"].as_str(), reaction["added"].as_bool(), reaction["seq"].as_i64()),
            (Some("bob"), Some("👍"), Some(true), Some(3))
        );
    }

    let delete = request(&mut laptop, "message:delete", json!({ "messageId": id })).await;
    assert_eq!(delete["seq"], json!(4));
    for client in [&mut bob, &mut phone] {
        let deleted = client.wait_event("message:deleted").await["data"].clone();
        assert_eq!((deleted["messageId"].as_str(), deleted["seq"].as_i64()), (Some(id.as_str()), Some(4)));
    }

    // Each device saw every entry once, in seq order, except its own.
    let (bob_seen, phone_seen, laptop_seen) = (entries_seen(&mut bob).await, entries_seen(&mut phone).await, entries_seen(&mut laptop).await);
    assert!(bob_seen.is_empty() && phone_seen.is_empty() && laptop_seen.is_empty(), "nothing more: {bob_seen:?} {phone_seen:?} {laptop_seen:?}");

    // Erased in storage, not only hidden: the message and its edit.
    let contents: Vec<Vec<u8>> = sqlx::query_scalar("SELECT content FROM messages WHERE id = $1::uuid OR target_id = $1::uuid AND kind = 'edit'")
        .bind(&id)
        .fetch_all(&env.db)
        .await
        .unwrap();
    assert_eq!(contents, [Vec::<u8>::new(), Vec::new()]);
    let (status, history) = Rest::new(&addr, Some(&env.token("bob"))).get(&format!("/api/chats/{chat}/messages")).await;
    assert_eq!(status, 200);
    let history = history.as_array().unwrap();
    assert_eq!(history.len(), 1, "edits, deletes and reactions are not messages of their own: {history:?}");
    assert_eq!((history[0]["content"].as_str(), history[0]["deletedAt"].is_string()), (Some(""), true));
    assert_eq!(history[0]["reactions"], json!([]));
    env.cleanup().await;
}

#[tokio::test]
async fn a_device_offline_during_edits_and_a_delete_gets_them_in_log_order_after_the_original() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    env.start_worker().await;
    let chat = Rest::new(&addr, Some(&env.token("alice"))).create_chat("direct", &["bob"]).await;
    let bob = device(&env, &addr, "bob", "phone").await;
    bob.close().await;

    let mut alice = WsClient::connect(&addr, &env.token("alice")).await.unwrap();
    let first = alice.send_message(&chat, "first draft").await["messageId"].as_str().unwrap().to_owned();
    let second = alice.send_message(&chat, "regrettable").await["messageId"].as_str().unwrap().to_owned();
    request(&mut alice, "message:edit", json!({ "messageId": first, "content": "second draft" })).await;
    request(&mut alice, "message:react", json!({ "messageId": first, "emoji": "🎉" })).await;
    request(&mut alice, "message:edit", json!({ "messageId": first, "content": "final" })).await;
    request(&mut alice, "message:delete", json!({ "messageId": second })).await;
    let late = json!({ "messageId": second, "emoji": "👀" });
    assert_eq!(error_code(&mut alice, "message:react", late).await, "already_deleted");

    let mut bob = device(&env, &addr, "bob", "phone").await;
    let seen = entries_seen(&mut bob).await;
    // 1 first, 2 second, 3 edit (superseded by 5: passed over), 4 reaction, 5 edit, 6 delete.
    assert_eq!(
        shape(&seen),
        [("message:receive", 1), ("message:receive", 2), ("message:reaction", 4), ("message:edited", 5), ("message:deleted", 6)]
            .map(|(e, s)| (e.to_owned(), s))
    );
    assert_eq!(seen[0]["data"]["content"], "final", "a message read after its edits has its latest content");
    assert!(seen[0]["data"]["editedAt"].is_string());
    assert_eq!((seen[1]["data"]["content"].as_str(), seen[1]["data"]["deleted"].as_bool()), (Some(""), Some(true)), "the tombstone, not the content");
    assert_eq!(seen[3]["data"]["content"], "final");
    let everything = serde_json::to_string(&seen).unwrap();
    assert!(!everything.contains("regrettable") && !everything.contains("draft"), "{everything}");
    env.cleanup().await;
}

#[tokio::test]
async fn bad_edits_deletes_reactions_and_replies_get_their_codes() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    env.start_worker().await;
    let chat = Rest::new(&addr, Some(&env.token("alice"))).create_chat("direct", &["bob"]).await;
    let other_chat = Rest::new(&addr, Some(&env.token("alice"))).create_chat("direct", &["carol"]).await;
    let mut alice = WsClient::connect(&addr, &env.token("alice")).await.unwrap();
    let mut bob = WsClient::connect(&addr, &env.token("bob")).await.unwrap();
    let mine = alice.send_message(&chat, "mine").await["messageId"].as_str().unwrap().to_owned();
    let elsewhere = alice.send_message(&other_chat, "elsewhere").await["messageId"].as_str().unwrap().to_owned();

    assert_eq!(error_code(&mut bob, "message:edit", json!({ "messageId": mine, "content": "x" })).await, "not_sender");
    assert_eq!(error_code(&mut bob, "message:delete", json!({ "messageId": mine })).await, "not_sender");
    let unknown = uuid::Uuid::now_v7();
    assert_eq!(error_code(&mut alice, "message:edit", json!({ "messageId": unknown, "content": "x" })).await, "not_found");
    assert_eq!(error_code(&mut bob, "message:react", json!({ "messageId": elsewhere, "emoji": "👍" })).await, "not_member");
    let big = "x".repeat(64 * 1024 + 1);
    assert_eq!(error_code(&mut alice, "message:edit", json!({ "messageId": mine, "content": big })).await, "content_too_large");
    assert_eq!(error_code(&mut alice, "message:edit", json!({ "messageId": mine, "content": " " })).await, "content_empty");
    assert_eq!(error_code(&mut bob, "message:react", json!({ "messageId": mine, "emoji": "🙂".repeat(9) })).await, "content_too_large");
    assert_eq!(error_code(&mut bob, "message:react", json!({ "messageId": mine, "emoji": "" })).await, "invalid_payload");
    assert_eq!(error_code(&mut alice, "message:edit", json!({ "messageId": "nope", "content": "x" })).await, "invalid_payload");
    let reply = json!({ "chatId": chat, "content": "re", "replyTo": elsewhere });
    assert_eq!(error_code(&mut alice, "message:send", reply).await, "other_chat");
    let reply = json!({ "chatId": chat, "content": "re", "replyTo": unknown });
    assert_eq!(error_code(&mut alice, "message:send", reply).await, "not_found");

    for i in 0..20 {
        request(&mut bob, "message:react", json!({ "messageId": mine, "emoji": format!("e{i}") })).await;
    }
    assert_eq!(error_code(&mut alice, "message:react", json!({ "messageId": mine, "emoji": "e20" })).await, "too_many_reactions");
    // An emoji already there is not a new distinct one.
    request(&mut alice, "message:react", json!({ "messageId": mine, "emoji": "e3" })).await;

    request(&mut alice, "message:delete", json!({ "messageId": mine })).await;
    assert_eq!(error_code(&mut alice, "message:edit", json!({ "messageId": mine, "content": "x" })).await, "already_deleted");
    assert_eq!(error_code(&mut alice, "message:delete", json!({ "messageId": mine })).await, "already_deleted");
    assert_eq!(error_code(&mut bob, "message:react", json!({ "messageId": mine, "emoji": "👍" })).await, "already_deleted");
    // The connection keeps working.
    alice.send_message(&chat, "still here").await;
    env.cleanup().await;
}

#[tokio::test]
async fn edits_and_deletes_past_their_window_are_refused() {
    let mut env = TestEnv::new().await;
    let mut config = env.api_config();
    config.edit_window = Duration::ZERO;
    config.delete_window = Duration::ZERO;
    let addr = env.start_api_with(config).await;
    env.start_worker().await;
    let chat = Rest::new(&addr, Some(&env.token("alice"))).create_chat("direct", &["bob"]).await;
    let mut alice = WsClient::connect(&addr, &env.token("alice")).await.unwrap();
    let id = alice.send_message(&chat, "too late").await["messageId"].clone();
    assert_eq!(error_code(&mut alice, "message:edit", json!({ "messageId": id, "content": "x" })).await, "window_passed");
    assert_eq!(error_code(&mut alice, "message:delete", json!({ "messageId": id })).await, "window_passed");
    // Deleting for oneself has no window.
    request(&mut alice, "message:delete", json!({ "messageId": id, "forMe": true })).await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_reply_carries_a_quote_of_the_original_or_its_tombstone() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    env.start_worker().await;
    let chat = Rest::new(&addr, Some(&env.token("alice"))).create_chat("direct", &["bob"]).await;
    let mut alice = WsClient::connect(&addr, &env.token("alice")).await.unwrap();
    let mut bob = WsClient::connect(&addr, &env.token("bob")).await.unwrap();
    let long = format!("{}{}", "é".repeat(99), "xyz");
    let original = alice.send_message(&chat, &long).await["messageId"].as_str().unwrap().to_owned();
    bob.wait_event("message:receive").await;
    request(&mut bob, "message:send", json!({ "chatId": chat, "content": "agreed", "replyTo": original })).await;
    let reply = alice.wait_event("message:receive").await["data"].clone();
    assert_eq!(reply["replyTo"]["messageId"], json!(original));
    assert_eq!(reply["replyTo"]["senderId"], "alice");
    assert_eq!(reply["replyTo"]["quote"].as_str().unwrap(), format!("{}x", "é".repeat(99)), "the first 100 characters");

    request(&mut alice, "message:delete", json!({ "messageId": original })).await;
    let (_, history) = Rest::new(&addr, Some(&env.token("alice"))).get(&format!("/api/chats/{chat}/messages")).await;
    let reply = history.as_array().unwrap().iter().find(|m| m["content"] == "agreed").unwrap().clone();
    assert_eq!((reply["replyTo"]["quote"].as_str(), reply["replyTo"]["deleted"].as_bool()), (Some(""), Some(true)));
    env.cleanup().await;
}

#[tokio::test]
async fn delete_for_me_hides_a_message_from_that_user_only_and_edits_and_reactions_are_not_unread() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    env.start_worker().await;
    let chat = Rest::new(&addr, Some(&env.token("alice"))).create_chat("direct", &["bob"]).await;
    let mut alice = WsClient::connect(&addr, &env.token("alice")).await.unwrap();
    let id = alice.send_message(&chat, "for bob's eyes").await["messageId"].as_str().unwrap().to_owned();
    request(&mut alice, "message:edit", json!({ "messageId": id, "content": "edited" })).await;
    request(&mut alice, "message:react", json!({ "messageId": id, "emoji": "🔥" })).await;
    let bob_rest = Rest::new(&addr, Some(&env.token("bob")));
    let (_, chats) = bob_rest.get("/api/chats").await;
    assert_eq!(chats[0]["unread"], 1, "one message; its edit and reaction are not unread messages: {chats}");

    let mut bob = WsClient::connect(&addr, &env.token("bob")).await.unwrap();
    request(&mut bob, "message:delete", json!({ "messageId": id, "forMe": true })).await;
    let (_, bobs) = bob_rest.get(&format!("/api/chats/{chat}/messages")).await;
    assert_eq!(bobs, json!([]));
    let (_, sync) = bob_rest.get("/api/sync").await;
    assert_eq!(sync["entries"], json!([]), "nor in catch-up, the entries about it included");
    let (_, alices) = Rest::new(&addr, Some(&env.token("alice"))).get(&format!("/api/chats/{chat}/messages")).await;
    let alices = alices.as_array().unwrap();
    assert_eq!((alices.len(), alices[0]["content"].as_str()), (1, Some("edited")));
    assert_eq!(alices[0]["reactions"], json!([{ "emoji": "🔥", "count": 1, "mine": true }]));
    // Catch-up names every kind, in log order.
    let (_, sync) = Rest::new(&addr, Some(&env.token("alice"))).get("/api/sync").await;
    let kinds: Vec<&str> = sync["entries"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["message", "edit", "react"]);
    env.cleanup().await;
}

#[tokio::test]
async fn a_client_that_acknowledges_with_message_delivered_is_not_held_up_by_entries_it_does_not_know() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    env.start_worker().await;
    let chat = Rest::new(&addr, Some(&env.token("alice"))).create_chat("direct", &["bob"]).await;
    let mut alice = WsClient::connect(&addr, &env.token("alice")).await.unwrap();
    let first = alice.send_message(&chat, "one").await["messageId"].as_str().unwrap().to_owned();
    request(&mut alice, "message:edit", json!({ "messageId": first, "content": "one, edited" })).await;
    let second = alice.send_message(&chat, "two").await["messageId"].clone();
    request(&mut alice, "message:react", json!({ "messageId": first, "emoji": "👍" })).await;

    // The guide's client: no frame acks, `message:delivered` per message:receive.
    let mut bob = WsClient::connect_without_acks(&addr, &env.token("bob")).await.unwrap();
    for expected in ["one, edited", "two"] {
        let received = bob.wait_event("message:receive").await["data"].clone();
        assert_eq!(received["content"], expected);
        request(&mut bob, "message:delivered", json!({ "messageId": received["messageId"] })).await;
    }
    // The drain ended with a reaction this client never acknowledges:
    // sync:done does not wait for it. (`count` is of entries: 2 messages, an edit, a reaction.)
    assert_eq!(bob.wait_event("sync:done").await["data"]["count"], 4);
    // Message two acknowledged the edit before it: bob's device is past seq 3.
    courier_tests::eventually("bob's cursor past the edit and message two", || async {
        let acked: Option<i64> = sqlx::query_scalar("SELECT max(acked_seq) FROM device_cursors WHERE user_id = 'bob'")
            .fetch_one(&env.db)
            .await
            .unwrap();
        (acked == Some(3)).then_some(())
    })
    .await;
    // And the sender sees ✓✓ on message two, behind the edit.
    alice
        .wait_for("✓✓ of message two", |f| {
            f["event"] == "message:status" && f["data"]["status"] == "delivered" && f["data"]["messageId"] == second
        })
        .await;
    bob.close().await;
    env.cleanup().await;
}

/// One stored batch holding edits, reactions and deletes of several messages
/// (as the send batcher forms under load): each message ends as if the
/// entries had been stored one by one.
#[tokio::test]
async fn a_batch_of_edits_reactions_and_deletes_applies_each_in_order() {
    use courier_shared::{
        db::messages::{self, NewMessage},
        protocol::EntryKind,
    };
    use uuid::Uuid;

    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    let chat = Rest::new(&addr, Some(&env.token("alice"))).create_chat("direct", &["bob"]).await;
    let chat_id = Uuid::parse_str(&chat).unwrap();
    let originals: Vec<NewMessage> =
        ["kept", "edited", "deleted"].iter().map(|text| NewMessage::message(chat_id, "alice", None, (*text).into(), "text".into())).collect();
    let [kept, edited, deleted] = [0, 1, 2].map(|i| originals[i].message_id);
    for stored in messages::store_batch(&env.db, &originals).await.unwrap() {
        stored.unwrap();
    }
    // Bob's 👍 on `deleted` stays from an earlier batch until the delete.
    let earlier = entry(chat_id, "bob", EntryKind::React, deleted, "👍");
    messages::store_batch(&env.db, &[earlier]).await.unwrap().remove(0).unwrap();

    let batch = [
        entry(chat_id, "alice", EntryKind::Edit, edited, "edited once"),
        entry(chat_id, "bob", EntryKind::React, kept, "🎉"),
        entry(chat_id, "bob", EntryKind::React, edited, "👍"),
        entry(chat_id, "alice", EntryKind::Edit, deleted, "edited, then deleted"),
        entry(chat_id, "bob", EntryKind::React, deleted, "🎉"),
        entry(chat_id, "alice", EntryKind::Edit, edited, "edited twice"),
        entry(chat_id, "bob", EntryKind::Unreact, edited, "👍"),
        entry(chat_id, "alice", EntryKind::Delete, deleted, ""),
        entry(chat_id, "bob", EntryKind::React, deleted, "😮"),
    ];
    let results = messages::store_batch(&env.db, &batch).await.unwrap();
    assert!(results[..8].iter().all(Result::is_ok), "{results:?}");
    assert_eq!(results[8].as_ref().unwrap_err().code.as_str(), "already_deleted");

    let state: Vec<(uuid::Uuid, Vec<u8>, bool, bool)> = sqlx::query_as(
        "SELECT id, content, edited_at IS NOT NULL, deleted_at IS NOT NULL FROM messages WHERE kind = 'message' ORDER BY seq",
    )
    .fetch_all(&env.db)
    .await
    .unwrap();
    assert_eq!(
        state,
        [
            (kept, b"kept".to_vec(), false, false),
            (edited, b"edited twice".to_vec(), true, false),
            (deleted, Vec::new(), true, true),
        ]
    );
    let edit_contents: Vec<(Uuid, Vec<u8>)> =
        sqlx::query_as("SELECT target_id, content FROM messages WHERE kind = 'edit' ORDER BY seq").fetch_all(&env.db).await.unwrap();
    assert_eq!(
        edit_contents,
        [(edited, b"edited once".to_vec()), (deleted, Vec::new()), (edited, b"edited twice".to_vec())],
        "the deleted message's edit is erased too"
    );
    let reactions: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT message_id, emoji FROM reactions ORDER BY emoji").fetch_all(&env.db).await.unwrap();
    assert_eq!(reactions, [(kept, "🎉".to_owned())], "added then removed leaves nothing; a deleted message keeps none");
    env.cleanup().await;
}

fn entry(chat_id: uuid::Uuid, user: &str, kind: courier_shared::protocol::EntryKind, target: uuid::Uuid, content: &str) -> courier_shared::db::messages::NewMessage {
    courier_shared::db::messages::NewMessage {
        kind,
        target_id: Some(target),
        ..courier_shared::db::messages::NewMessage::message(chat_id, user, None, content.into(), "text".into())
    }
}
