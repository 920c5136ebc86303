//! `receipt {chatId, userId, deliveredSeq, readSeq}`: one event per watermark
//! move, covering every message up to it. A group's sender gets receipts, not
//! a `message:status` per message and member.

use courier_tests::{Rest, TestEnv, WsClient};
use serde_json::{Value, json};

/// Waits until a receipt of `user` in `chat` reaches (delivered, read) ≥ `want`; returns it.
async fn wait_receipt(client: &mut WsClient, chat: &str, user: &str, want: (i64, i64)) -> Value {
    let what = format!("{user}'s receipt reaching {want:?}");
    client
        .wait_for(&what, |frame| {
            let data = &frame["data"];
            frame["event"] == "receipt"
                && data["chatId"] == chat
                && data["userId"] == user
                && data["deliveredSeq"].as_i64() >= Some(want.0)
                && data["readSeq"].as_i64() >= Some(want.1)
        })
        .await["data"]
        .clone()
}

#[tokio::test]
async fn a_groups_sender_gets_receipts_not_a_status_per_message_and_member() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    env.start_worker().await;
    let chat = Rest::new(&addr, Some(&env.token("alice"))).create_chat("group", &["bob", "carol"]).await;
    let mut bob = WsClient::connect(&addr, &env.token("bob")).await.unwrap();
    let mut carol = WsClient::connect(&addr, &env.token("carol")).await.unwrap();
    bob.wait_event("sync:done").await;
    carol.wait_event("sync:done").await;
    let mut alice = WsClient::connect(&addr, &env.token("alice")).await.unwrap();
    alice.wait_event("sync:done").await;
    for i in 1..=3 {
        alice.send_message(&chat, &format!("m{i}")).await;
    }
    bob.receive_messages(3).await;
    carol.receive_messages(3).await;
    let at_bob = wait_receipt(&mut alice, &chat, "bob", (3, 0)).await;
    assert_eq!(at_bob["readSeq"], 0);
    wait_receipt(&mut alice, &chat, "carol", (3, 0)).await;

    bob.request("message:read", json!({ "chatId": chat, "upToSeq": 3 })).await.unwrap();
    wait_receipt(&mut alice, &chat, "bob", (3, 3)).await;
    alice.barrier().await;
    assert!(alice.drain_pending("message:status").is_empty(), "no message:status per message and member in a group");

    // Nothing waits for a group sender's acknowledgement: a reconnect brings no statuses either.
    alice.close().await;
    let mut alice = WsClient::connect(&addr, &env.token("alice")).await.unwrap();
    alice.wait_event("sync:done").await;
    alice.barrier().await;
    assert!(alice.drain_pending("message:status").is_empty());
    env.cleanup().await;
}

#[tokio::test]
async fn a_direct_chats_sender_gets_both_the_status_per_message_and_the_receipt() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    env.start_worker().await;
    let chat = Rest::new(&addr, Some(&env.token("alice"))).create_chat("direct", &["bob"]).await;
    let mut alice = WsClient::connect(&addr, &env.token("alice")).await.unwrap();
    alice.wait_event("sync:done").await;
    let sent = alice.send_message(&chat, "hello").await;
    let mut bob = WsClient::connect(&addr, &env.token("bob")).await.unwrap();
    bob.receive_messages(1).await;
    let status = alice.wait_event("message:status").await["data"].clone();
    assert_eq!((&status["messageId"], &status["status"]), (&sent["messageId"], &json!("delivered")));
    let receipt = wait_receipt(&mut alice, &chat, "bob", (1, 0)).await;
    assert_eq!(receipt["deliveredSeq"], 1);
    env.cleanup().await;
}

#[tokio::test]
async fn a_client_can_ask_for_receipts_only() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    env.start_worker().await;
    let chat = Rest::new(&addr, Some(&env.token("alice"))).create_chat("direct", &["bob"]).await;
    let url = format!("ws://{addr}/ws?token={}&statuses=receipts", env.token("alice"));
    let mut alice = WsClient::connect_url(&url, true).await.unwrap();
    alice.wait_event("sync:done").await;
    alice.send_message(&chat, "one").await;
    alice.send_message(&chat, "two").await;
    let mut bob = WsClient::connect(&addr, &env.token("bob")).await.unwrap();
    bob.receive_messages(2).await;
    wait_receipt(&mut alice, &chat, "bob", (2, 0)).await;
    alice.barrier().await;
    assert!(alice.drain_pending("message:status").is_empty(), "receipts only");
    // Taken as seen: the device's told mark moves over both, so a reconnect
    // does not bring the statuses back either.
    let chat_id = uuid::Uuid::parse_str(&chat).unwrap();
    courier_tests::eventually("the statuses taken as seen", || async {
        let told: i64 = sqlx::query_scalar(
            "SELECT told_delivered_seq FROM device_cursors WHERE user_id = 'alice' AND device_id = 'default' AND chat_id = $1",
        )
        .bind(chat_id)
        .fetch_one(&env.db)
        .await
        .unwrap();
        (told == 2).then_some(())
    })
    .await;

    let bad = format!("ws://{addr}/ws?token={}&statuses=some", env.token("alice"));
    match WsClient::connect_url(&bad, true).await {
        Err(courier_tests::WsError::Http { status, body }) => {
            assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_payload")));
        }
        other => panic!("an unknown `statuses` was accepted: {:?}", other.map(|_| ())),
    }
    env.cleanup().await;
}
