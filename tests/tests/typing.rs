//! Typing indicators (issue 14, part 5): `typing:start` / `typing:stop` from
//! a member reach every connection of the chat's other members, on any node,
//! as `typing {chatId, userId, typing, expiresInMs}`; never the typer's own
//! connections, never stored, never drained, limited per user.
//!
//! That something does *not* arrive is shown with a marker: a later `typing`
//! from someone else that takes the same path, so it would come after the
//! unwanted one. When the marker is the first `typing` a client sees, the
//! unwanted one was never sent.

use std::time::Duration;

use courier_tests::{Rest, TestEnv, WsClient};
use serde_json::{Value, json};

/// A device of `user` on the node at `addr`, connected and caught up (its
/// connection is recorded, so typing notices can find it).
async fn device(env: &TestEnv, addr: &str, user: &str, device: &str) -> WsClient {
    let url = format!("ws://{addr}/ws?token={}&deviceId={device}", env.token(user));
    let mut client = WsClient::connect_url(&url, true).await.expect("connect");
    client.wait_event("sync:done").await;
    client
}

fn typing_start(chat: &str) -> Value {
    json!({ "chatId": chat })
}

/// The next `typing` from `user`: it must be the first `typing` the client
/// sees (anything before it would be one it should not have had).
async fn first_typing_is_from(client: &mut WsClient, user: &str) -> Value {
    let frame = client.wait_event("typing").await;
    assert_eq!(frame["data"]["userId"], user, "{}: a typing of someone else came first: {frame}", client.user_id);
    frame
}

/// What a `typing` of `user` in `chat` carries.
fn notice(chat: &str, user: &str, typing: bool) -> Value {
    json!({ "chatId": chat, "userId": user, "typing": typing, "expiresInMs": if typing { 6000 } else { 0 } })
}

async fn messages_stored(env: &TestEnv) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM messages").fetch_one(&env.db).await.expect("count messages")
}

#[tokio::test]
async fn typing_reaches_every_device_of_the_other_members_and_not_the_typers() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    env.start_worker().await;
    let chat = Rest::new(&addr, Some(&env.token("alice"))).create_chat("group", &["bob", "carol"]).await;
    let mut alice_phone = device(&env, &addr, "alice", "phone").await;
    let mut alice_laptop = device(&env, &addr, "alice", "laptop").await;
    let mut bob_phone = device(&env, &addr, "bob", "phone").await;
    let mut bob_laptop = device(&env, &addr, "bob", "laptop").await;
    let mut carol = device(&env, &addr, "carol", "default").await;

    let reply = alice_phone.request("typing:start", typing_start(&chat)).await;
    assert_eq!(reply, Ok(json!({})), "a typing event with an id is answered with an ack");
    for client in [&mut bob_phone, &mut bob_laptop, &mut carol] {
        let frame = first_typing_is_from(client, "alice").await;
        assert_eq!(frame["data"], notice(&chat, "alice", true));
        assert!(frame["id"].as_u64().is_some(), "numbered like every server event: {frame}");
    }
    // Without an id: no reply, the stop still goes out.
    alice_phone.send_frame(json!({ "event": "typing:stop", "data": { "chatId": chat } })).await;
    for client in [&mut bob_phone, &mut bob_laptop, &mut carol] {
        let frame = first_typing_is_from(client, "alice").await;
        assert_eq!(frame["data"], notice(&chat, "alice", false));
    }

    // Bob types too: Alice's devices get his, and had none of their own before it.
    bob_laptop.request("typing:start", typing_start(&chat)).await.expect("bob types");
    for client in [&mut alice_phone, &mut alice_laptop] {
        let frame = first_typing_is_from(client, "bob").await;
        assert_eq!(frame["data"], notice(&chat, "bob", true));
        client.ack(&frame["id"]).await;
        client.barrier().await;
        assert!(client.drain_pending("error").is_empty(), "acking a typing frame is not an error");
        assert!(client.drain_pending("ack").is_empty(), "the typing:stop without id got no reply");
    }
    first_typing_is_from(&mut carol, "bob").await;
    // Nor does Bob's phone see him typing on his laptop: Carol's comes first.
    carol.request("typing:start", typing_start(&chat)).await.expect("carol types");
    assert_eq!(first_typing_is_from(&mut bob_phone, "carol").await["data"], notice(&chat, "carol", true));
    assert_eq!(first_typing_is_from(&mut bob_laptop, "carol").await["data"], notice(&chat, "carol", true));

    assert_eq!(messages_stored(&env).await, 0, "typing is not a message");
    env.cleanup().await;
}

#[tokio::test]
async fn typing_crosses_api_nodes_through_their_push_queues() {
    let mut env = TestEnv::new().await;
    let node_a = env.start_api().await;
    let node_b = env.start_api().await;
    env.start_worker().await;
    let chat = Rest::new(&node_a, Some(&env.token("alice"))).create_chat("direct", &["bob"]).await;
    let mut alice_phone = device(&env, &node_a, "alice", "phone").await;
    let mut alice_laptop = device(&env, &node_b, "alice", "laptop").await;
    let mut bob_phone = device(&env, &node_a, "bob", "phone").await;
    let mut bob_laptop = device(&env, &node_b, "bob", "laptop").await;
    assert_ne!(alice_phone.node_id, alice_laptop.node_id);

    alice_phone.request("typing:start", typing_start(&chat)).await.expect("alice types on node A");
    let here = first_typing_is_from(&mut bob_phone, "alice").await;
    let there = first_typing_is_from(&mut bob_laptop, "alice").await;
    assert_eq!(here["data"], notice(&chat, "alice", true));
    assert_eq!(there["data"], notice(&chat, "alice", true), "the other node's connection gets the same notice");

    alice_phone.request("typing:stop", typing_start(&chat)).await.expect("alice stops");
    assert_eq!(first_typing_is_from(&mut bob_laptop, "alice").await["data"], notice(&chat, "alice", false));
    assert_eq!(first_typing_is_from(&mut bob_phone, "alice").await["data"], notice(&chat, "alice", false));

    // Bob types on node A: it reaches Alice's laptop on node B the same way
    // hers would have, after them. Her laptop sees only his.
    bob_phone.request("typing:start", typing_start(&chat)).await.expect("bob types on node A");
    assert_eq!(first_typing_is_from(&mut alice_laptop, "bob").await["data"], notice(&chat, "bob", true));
    assert_eq!(first_typing_is_from(&mut alice_phone, "bob").await["data"], notice(&chat, "bob", true));
    // And from node B to node A.
    bob_laptop.request("typing:stop", typing_start(&chat)).await.expect("bob stops on node B");
    assert_eq!(first_typing_is_from(&mut alice_phone, "bob").await["data"], notice(&chat, "bob", false));
    env.cleanup().await;
}

#[tokio::test]
async fn only_members_may_type_and_bad_input_gets_stable_codes() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    env.start_worker().await;
    let chat = Rest::new(&addr, Some(&env.token("alice"))).create_chat("direct", &["bob"]).await;
    let mut alice = device(&env, &addr, "alice", "default").await;
    let mut bob = device(&env, &addr, "bob", "default").await;
    let mut mallory = device(&env, &addr, "mallory", "default").await;

    let code = |reply: Result<Value, Value>| reply.expect_err("an error")["code"].as_str().unwrap_or_default().to_owned();
    assert_eq!(code(mallory.request("typing:start", typing_start(&chat)).await), "not_member");
    assert_eq!(code(mallory.request("typing:stop", typing_start(&chat)).await), "not_member");
    let unknown_chat = uuid::Uuid::now_v7().to_string();
    assert_eq!(code(alice.request("typing:start", typing_start(&unknown_chat)).await), "not_member", "same as not a member");
    assert_eq!(code(alice.request("typing:start", json!({})).await), "invalid_payload");
    assert_eq!(code(alice.request("typing:start", json!({ "chatId": "not-a-uuid" })).await), "invalid_payload");
    assert_eq!(code(alice.request("typing:stop", json!({ "chatId": 7 })).await), "invalid_payload");
    assert_eq!(code(alice.request("typing:start", Value::Null).await), "invalid_payload");
    // Without an id, the error comes as an `error` frame without one.
    mallory.send_frame(json!({ "event": "typing:start", "data": { "chatId": chat } })).await;
    let error = mallory.wait_event("error").await;
    assert_eq!(error["error"]["code"], "not_member");
    assert!(error.get("id").is_none(), "{error}");
    // The connections stay up.
    mallory.barrier().await;
    alice.barrier().await;

    // Bob heard nothing of Mallory: the first typing he sees is Alice's.
    alice.request("typing:start", typing_start(&chat)).await.expect("alice types");
    assert_eq!(first_typing_is_from(&mut bob, "alice").await["data"], notice(&chat, "alice", true));
    env.cleanup().await;
}

#[tokio::test]
async fn typing_is_rate_limited_per_user() {
    let mut env = TestEnv::new().await;
    let mut config = env.api_config();
    // Three per hour: nothing comes back into the bucket while the test runs.
    config.typing_rate_limit = 3;
    config.typing_rate_window = Duration::from_secs(3600);
    let addr = env.start_api_with(config).await;
    env.start_worker().await;
    let chat = Rest::new(&addr, Some(&env.token("alice"))).create_chat("group", &["bob", "carol"]).await;
    let mut alice = device(&env, &addr, "alice", "default").await;
    let mut bob = device(&env, &addr, "bob", "default").await;
    let mut carol = device(&env, &addr, "carol", "default").await;

    for event in ["typing:start", "typing:stop", "typing:start"] {
        alice.request(event, typing_start(&chat)).await.unwrap_or_else(|error| panic!("{event} refused: {error}"));
    }
    let over = alice.request("typing:stop", typing_start(&chat)).await.expect_err("the fourth is over the limit");
    assert_eq!(over["code"], "rate_limited");
    alice.send_frame(json!({ "event": "typing:start", "data": { "chatId": chat } })).await;
    let error = alice.wait_event("error").await;
    assert_eq!(error["error"]["code"], "rate_limited", "without an id: an error frame without one");
    // Only the typing limit is spent: Alice can still send, and Carol type.
    alice.send_message(&chat, "still here").await;
    carol.request("typing:start", typing_start(&chat)).await.expect("carol has a bucket of her own");

    // Bob got Alice's three, then Carol's: none of the refused ones.
    let carols = bob.wait_for("carol's typing", |f| f["event"] == "typing" && f["data"]["userId"] == "carol").await;
    assert_eq!(carols["data"], notice(&chat, "carol", true));
    let alices: Vec<Value> = bob.drain_pending("typing").into_iter().map(|frame| frame["data"]["typing"].clone()).collect();
    assert_eq!(alices, [json!(true), json!(false), json!(true)], "alice's accepted events only, in order");
    env.cleanup().await;
}

#[tokio::test]
async fn typing_is_never_stored_or_drained() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    env.start_worker().await;
    let chat = Rest::new(&addr, Some(&env.token("alice"))).create_chat("group", &["bob", "carol"]).await;
    let mut alice = device(&env, &addr, "alice", "default").await;
    let mut carol = device(&env, &addr, "carol", "default").await;

    // Bob is offline: the notice has nowhere to go, and is not kept for him.
    alice.request("typing:start", typing_start(&chat)).await.expect("alice types");
    assert_eq!(first_typing_is_from(&mut carol, "alice").await["data"], notice(&chat, "alice", true));
    let mut bob = device(&env, &addr, "bob", "default").await;
    carol.request("typing:start", typing_start(&chat)).await.expect("carol types");
    assert_eq!(first_typing_is_from(&mut bob, "carol").await["data"], notice(&chat, "carol", true));

    // Nor after a reconnect.
    bob.close().await;
    let mut bob = device(&env, &addr, "bob", "default").await;
    carol.request("typing:stop", typing_start(&chat)).await.expect("carol stops");
    assert_eq!(first_typing_is_from(&mut bob, "carol").await["data"], notice(&chat, "carol", false));
    assert_eq!(messages_stored(&env).await, 0);
    env.cleanup().await;
}

#[tokio::test]
async fn a_start_repeated_within_two_seconds_is_answered_but_not_forwarded() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    env.start_worker().await;
    let chat = Rest::new(&addr, Some(&env.token("alice"))).create_chat("group", &["bob", "carol"]).await;
    let mut alice = device(&env, &addr, "alice", "default").await;
    let mut bob = device(&env, &addr, "bob", "default").await;
    let mut carol = device(&env, &addr, "carol", "default").await;

    // A client that sends a start per keystroke: the repeats are answered
    // (the indicator is still on at the listeners) but cost no notice. A
    // stop goes out, and the start after it too.
    for event in ["typing:start", "typing:start", "typing:start", "typing:stop", "typing:start"] {
        alice.request(event, typing_start(&chat)).await.unwrap_or_else(|error| panic!("{event} refused: {error}"));
    }
    // Carol's start is the marker: the same path, after all of Alice's.
    carol.request("typing:start", typing_start(&chat)).await.expect("carol types");
    bob.wait_for("carol's typing", |f| f["event"] == "typing" && f["data"]["userId"] == "carol").await;
    let alices: Vec<Value> = bob.drain_pending("typing").into_iter().map(|frame| frame["data"]["typing"].clone()).collect();
    assert_eq!(alices, [json!(true), json!(false), json!(true)], "one notice per start after a stop, none for the repeats");
    env.cleanup().await;
}
