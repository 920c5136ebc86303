//! The guide's four test cases, as written in its "Testing Strategy".

use courier_tests::{Rest, TestEnv, WsClient, eventually};
use serde_json::Value;

async fn status_of(env: &TestEnv, message_id: &Value, user: &str) -> String {
    let id = uuid::Uuid::parse_str(message_id.as_str().unwrap()).unwrap();
    sqlx::query_scalar("SELECT status::text FROM message_status WHERE message_id = $1 AND user_id = $2")
        .bind(id)
        .bind(user)
        .fetch_one(&env.db)
        .await
        .unwrap()
}

async fn wait_status(env: &TestEnv, message_id: &Value, user: &str, want: &str) {
    eventually(&format!("{user}'s status {want}"), || async {
        (status_of(env, message_id, user).await == want).then_some(())
    })
    .await;
}

/// A online, B offline; A sends; the message is stored as `sent`; B connects,
/// receives it, and the status becomes `delivered` (A sees ✓✓).
#[tokio::test]
async fn test_case_1_send_to_offline_user() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    env.start_worker().await;
    let chat = Rest::new(&addr, Some(&env.token("alice"))).create_chat("direct", &["bob"]).await;
    let mut alice = WsClient::connect(&addr, &env.token("alice")).await.unwrap();

    let sent = alice.send_message(&chat, "are you there?").await;
    assert_eq!(status_of(&env, &sent["messageId"], "bob").await, "sent");

    let mut bob = WsClient::connect(&addr, &env.token("bob")).await.unwrap();
    let received = bob.receive_messages(1).await.remove(0);
    assert_eq!(received["messageId"], sent["messageId"]);
    assert_eq!(received["chatId"], chat.as_str());
    assert_eq!(received["senderId"], "alice");
    assert_eq!(received["content"], "are you there?");
    assert_eq!(received["messageType"], "text");
    assert_eq!(received["seq"], 1);
    assert_eq!(received["sender"]["name"], "alice name");
    assert!(received["createdAt"].is_string());

    wait_status(&env, &sent["messageId"], "bob", "delivered").await;
    let status = alice.wait_event("message:status").await["data"].clone();
    assert_eq!((status["messageId"].clone(), status["status"].as_str()), (sent["messageId"].clone(), Some("delivered")));
    assert_eq!((status["userId"].as_str(), status["chatId"].as_str()), (Some("bob"), Some(chat.as_str())));
    env.cleanup().await;
}

/// B offline; A sends five; B connects and gets all five in order; all delivered.
#[tokio::test]
async fn test_case_2_multiple_offline_messages() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    env.start_worker().await;
    let chat = Rest::new(&addr, Some(&env.token("alice"))).create_chat("direct", &["bob"]).await;
    let mut alice = WsClient::connect(&addr, &env.token("alice")).await.unwrap();
    let mut ids = Vec::new();
    for i in 1..=5 {
        ids.push(alice.send_message(&chat, &format!("message {i}")).await["messageId"].clone());
    }

    let mut bob = WsClient::connect(&addr, &env.token("bob")).await.unwrap();
    let received = bob.receive_messages(5).await;
    let contents: Vec<&str> = received.iter().map(|m| m["content"].as_str().unwrap()).collect();
    assert_eq!(contents, ["message 1", "message 2", "message 3", "message 4", "message 5"]);
    assert_eq!(bob.wait_event("sync:done").await["data"]["count"], 5);
    for id in &ids {
        wait_status(&env, id, "bob", "delivered").await;
    }
    env.cleanup().await;
}

/// A group of A (online), B (offline), C (online): B and C get A's message
/// (C at once), B when it comes online.
#[tokio::test]
async fn test_case_3_group_chat_mixed_status() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    env.start_worker().await;
    let chat = Rest::new(&addr, Some(&env.token("alice"))).create_chat("group", &["bob", "carol"]).await;
    let mut alice = WsClient::connect(&addr, &env.token("alice")).await.unwrap();
    let mut carol = WsClient::connect(&addr, &env.token("carol")).await.unwrap();
    carol.wait_event("sync:done").await;

    let sent = alice.send_message(&chat, "hello team").await;
    let at_carol = carol.receive_messages(1).await.remove(0);
    assert_eq!(at_carol["messageId"], sent["messageId"]);
    wait_status(&env, &sent["messageId"], "carol", "delivered").await;
    assert_eq!(status_of(&env, &sent["messageId"], "bob").await, "sent", "B is offline: still sent");

    let mut bob = WsClient::connect(&addr, &env.token("bob")).await.unwrap();
    let at_bob = bob.receive_messages(1).await.remove(0);
    assert_eq!(at_bob["messageId"], sent["messageId"]);
    wait_status(&env, &sent["messageId"], "bob", "delivered").await;
    env.cleanup().await;
}

/// A offline; a message for A; A connects and disconnects rapidly; the message
/// reaches A once, and never again after the ack.
#[tokio::test]
async fn test_case_4_rapid_reconnection() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    env.start_worker().await;
    let chat = Rest::new(&addr, Some(&env.token("bob"))).create_chat("direct", &["alice"]).await;
    let sent = Rest::new(&addr, Some(&env.token("bob")))
        .post(&format!("/api/chats/{chat}/messages"), serde_json::json!({"content": "ping"}))
        .await
        .1;

    // Connect and drop at once, several times, without acknowledging anything.
    for _ in 0..5 {
        let flaky = WsClient::connect_without_acks(&addr, &env.token("alice")).await.unwrap();
        flaky.close().await;
    }
    assert_eq!(status_of(&env, &sent["messageId"], "alice").await, "sent", "nothing acked yet");

    // The connection that stays gets the message once and acks it.
    let mut alice = WsClient::connect(&addr, &env.token("alice")).await.unwrap();
    assert_eq!(alice.receive_messages(1).await[0]["messageId"], sent["messageId"]);
    assert_eq!(alice.wait_event("sync:done").await["data"]["count"], 1);
    wait_status(&env, &sent["messageId"], "alice", "delivered").await;
    alice.barrier().await;
    assert!(alice.drain_pending("message:receive").is_empty(), "delivered twice on one connection");
    alice.close().await;

    // Rapid reconnects after the ack: never again.
    for _ in 0..3 {
        let mut again = WsClient::connect(&addr, &env.token("alice")).await.unwrap();
        assert_eq!(again.wait_event("sync:done").await["data"]["count"], 0);
        again.barrier().await;
        assert!(again.drain_pending("message:receive").is_empty(), "an acked message came again");
        again.close().await;
    }
    env.cleanup().await;
}
