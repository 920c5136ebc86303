//! Member watermarks (`chat_members.delivered_seq` / `read_seq`, issue 13):
//! they follow acks, reads and the member's own sends, and the invariant that
//! every test's cleanup checks (cursors within their bounds) can fail.

use courier_tests::{Rest, TestEnv, WsClient, eventually, watermarks};
use serde_json::json;
use uuid::Uuid;

async fn watermarks_of(env: &TestEnv, chat: &str, user: &str) -> (i64, i64) {
    sqlx::query_as("SELECT delivered_seq, read_seq FROM chat_members WHERE chat_id = $1 AND user_id = $2")
        .bind(Uuid::parse_str(chat).unwrap())
        .bind(user)
        .fetch_one(&env.db)
        .await
        .unwrap()
}

async fn wait_watermarks(env: &TestEnv, chat: &str, user: &str, want: (i64, i64)) {
    eventually(&format!("{user}'s watermarks {want:?}"), || async {
        (watermarks_of(env, chat, user).await == want).then_some(())
    })
    .await;
}

#[tokio::test]
async fn watermarks_follow_acks_reads_and_own_messages() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    env.start_worker().await;
    let chat = Rest::new(&addr, Some(&env.token("alice"))).create_chat("direct", &["bob"]).await;
    let mut alice = WsClient::connect(&addr, &env.token("alice")).await.unwrap();
    for i in 1..=3 {
        alice.send_message(&chat, &format!("m{i}")).await;
    }
    // Alice's own messages are delivered to her (her device passes over
    // them); read when she next reads past them. Bob has none yet.
    wait_watermarks(&env, &chat, "alice", (3, 0)).await;
    assert_eq!(watermarks_of(&env, &chat, "bob").await, (0, 0));

    let mut bob = WsClient::connect(&addr, &env.token("bob")).await.unwrap();
    bob.receive_messages(3).await;
    wait_watermarks(&env, &chat, "bob", (3, 0)).await;
    bob.request("message:read", json!({ "chatId": chat, "upToSeq": 2 })).await.unwrap();
    assert_eq!(watermarks_of(&env, &chat, "bob").await, (3, 2));

    // Bob has everything: his own message moves his delivered watermark (his
    // device passes over it like an acknowledged one; not his read one, which
    // stands before unread message 3), and not Alice's.
    bob.send_message(&chat, "m4").await;
    wait_watermarks(&env, &chat, "bob", (4, 2)).await;
    bob.request("message:read", json!({ "chatId": chat, "upToSeq": 3 })).await.unwrap();
    assert_eq!(watermarks_of(&env, &chat, "bob").await, (4, 4), "reading 3 reaches his own message 4");
    alice.receive_messages(1).await;
    wait_watermarks(&env, &chat, "alice", (4, 0)).await;
    assert_eq!(watermarks::assert_watermarks_agree(&env.db).await, 2);
    env.cleanup().await;
}

#[tokio::test]
async fn reading_one_message_reads_what_came_before_it_and_never_moves_back() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    env.start_worker().await;
    let chat = Rest::new(&addr, Some(&env.token("alice"))).create_chat("direct", &["bob"]).await;
    let mut alice = WsClient::connect(&addr, &env.token("alice")).await.unwrap();
    let mut sent = Vec::new();
    for i in 1..=3 {
        sent.push(alice.send_message(&chat, &format!("m{i}")).await);
    }
    let mut bob = WsClient::connect(&addr, &env.token("bob")).await.unwrap();
    bob.receive_messages(3).await;
    wait_watermarks(&env, &chat, "bob", (3, 0)).await;
    let read = bob.request("message:read", json!({ "messageId": sent[1]["messageId"] })).await.unwrap();
    assert_eq!(read["updated"], 2, "{read}");
    assert_eq!(watermarks_of(&env, &chat, "bob").await, (3, 2), "1 and 2 are read now; 3 is not");
    let again = bob.request("message:read", json!({ "messageId": sent[0]["messageId"] })).await.unwrap();
    assert_eq!(again["updated"], 0, "{again}");
    assert_eq!(watermarks_of(&env, &chat, "bob").await, (3, 2), "an older message does not move it back");
    env.cleanup().await;
}

/// The check every cleanup runs is not one that cannot fail.
#[tokio::test]
async fn the_watermark_check_catches_a_watermark_that_is_wrong() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    env.start_worker().await;
    let chat = Rest::new(&addr, Some(&env.token("alice"))).create_chat("direct", &["bob"]).await;
    let mut alice = WsClient::connect(&addr, &env.token("alice")).await.unwrap();
    alice.send_message(&chat, "to an offline bob").await;
    assert_eq!(watermarks::assert_watermarks_agree(&env.db).await, 2);

    let chat_id = Uuid::parse_str(&chat).unwrap();
    // Past the chat's end: no device can have acknowledged that.
    let corrupt = "UPDATE chat_members SET delivered_seq = delivered_seq + 2 WHERE chat_id = $1 AND user_id = 'bob'";
    sqlx::query(corrupt).bind(chat_id).execute(&env.db).await.unwrap();
    match watermarks::check_watermarks(&env.db).await {
        Err(watermarks::Disagreement::Wrong(wrong)) => assert!(wrong.contains("bob in"), "{wrong}"),
        other => panic!("a delivered_seq past the chat's end went unnoticed: {other:?}"),
    }
    let restore = "UPDATE chat_members SET delivered_seq = delivered_seq - 2 WHERE chat_id = $1 AND user_id = 'bob'";
    sqlx::query(restore).bind(chat_id).execute(&env.db).await.unwrap();
    env.cleanup().await;
}

async fn device_cursor(env: &TestEnv, chat: &str, user: &str, device: &str) -> i64 {
    sqlx::query_scalar("SELECT acked_seq FROM device_cursors WHERE chat_id = $1 AND user_id = $2 AND device_id = $3")
        .bind(Uuid::parse_str(chat).unwrap())
        .bind(user)
        .bind(device)
        .fetch_one(&env.db)
        .await
        .unwrap()
}

/// A device's cursor moves over what it acknowledged without a hole, whatever
/// order the acks come in.
#[tokio::test]
async fn out_of_order_acks_move_the_device_cursor_over_contiguous_runs_only() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    env.start_worker().await;
    let chat = Rest::new(&addr, Some(&env.token("alice"))).create_chat("direct", &["bob"]).await;
    let mut alice = WsClient::connect(&addr, &env.token("alice")).await.unwrap();
    for i in 1..=4 {
        alice.send_message(&chat, &format!("m{i}")).await;
    }
    let url = format!("ws://{addr}/ws?token={}&deviceId=phone", env.token("bob"));
    let mut phone = WsClient::connect_url(&url, false).await.unwrap();
    let mut frames = Vec::new();
    for _ in 0..4 {
        frames.push(phone.wait_event("message:receive").await);
    }
    let seqs: Vec<i64> = frames.iter().map(|f| f["data"]["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);

    // 3 and 2 first: the phone has a hole at 1, so its cursor stays.
    phone.ack(&frames[2]["id"]).await;
    phone.ack(&frames[1]["id"]).await;
    // They move nothing; that they were remembered shows when 1 closes the hole.
    phone.barrier().await;
    assert_eq!(device_cursor(&env, &chat, "bob", "phone").await, 0);
    assert_eq!(watermarks_of(&env, &chat, "bob").await, (0, 0));
    // 1 closes the hole: the cursor jumps to 3; 4 is still out.
    phone.ack(&frames[0]["id"]).await;
    eventually("the phone's cursor at 3", || async { (device_cursor(&env, &chat, "bob", "phone").await == 3).then_some(()) })
        .await;
    phone.ack(&frames[3]["id"]).await;
    eventually("the phone's cursor at 4", || async { (device_cursor(&env, &chat, "bob", "phone").await == 4).then_some(()) })
        .await;
    wait_watermarks(&env, &chat, "bob", (4, 0)).await;
    env.cleanup().await;
}
