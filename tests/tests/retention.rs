//! Retention: a message that waits longer than MESSAGE_RETENTION for its
//! recipient is `expired`, its sender is told, and the recipient never gets it.

use std::time::Duration;

use courier_tests::{Rest, TestEnv, WsClient, eventually};
use serde_json::json;

async fn status_of(env: &TestEnv, message_id: &serde_json::Value, user: &str) -> String {
    let id = uuid::Uuid::parse_str(message_id.as_str().unwrap()).unwrap();
    sqlx::query_scalar("SELECT status::text FROM message_status WHERE message_id = $1 AND user_id = $2")
        .bind(id)
        .bind(user)
        .fetch_one(&env.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn undelivered_messages_expire_after_the_retention_and_the_sender_is_told() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    let mut config = env.worker_config();
    config.message_retention = Duration::from_secs(2);
    config.janitor_interval = Duration::from_millis(200);
    env.start_worker_with(config).await;
    let chat = Rest::new(&addr, Some(&env.token("alice"))).create_chat("direct", &["bob"]).await;
    let mut alice = WsClient::connect(&addr, &env.token("alice")).await.unwrap();

    let sent = alice.send_message(&chat, "too late").await;
    assert_eq!(status_of(&env, &sent["messageId"], "bob").await, "sent");

    // Alice, online, gets message:status expired through the ordinary status path.
    let update = alice.wait_for("message:status expired", |f| f["event"] == "message:status" && f["data"]["status"] == "expired").await;
    assert_eq!((update["data"]["messageId"].clone(), update["data"]["userId"].clone()), (sent["messageId"].clone(), json!("bob")));
    assert_eq!(status_of(&env, &sent["messageId"], "bob").await, "expired");

    // Bob comes back: nothing to deliver.
    let mut bob = WsClient::connect(&addr, &env.token("bob")).await.unwrap();
    assert_eq!(bob.wait_event("sync:done").await["data"]["count"], 0);
    bob.barrier().await;
    assert!(bob.drain_pending("message:receive").is_empty());

    // A message sent now is delivered as usual (only old ones expire).
    let fresh = alice.send_message(&chat, "on time").await;
    assert_eq!(bob.receive_messages(1).await[0]["messageId"], fresh["messageId"]);
    env.cleanup().await;
}

/// An offline sender learns of the expiry when they reconnect.
#[tokio::test]
async fn an_offline_sender_learns_of_expiry_on_reconnect() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    let mut config = env.worker_config();
    config.message_retention = Duration::from_secs(1);
    config.janitor_interval = Duration::from_millis(200);
    env.start_worker_with(config).await;
    let alice = Rest::new(&addr, Some(&env.token("alice")));
    let chat = alice.create_chat("direct", &["bob"]).await;
    let sent = alice.post(&format!("/api/chats/{chat}/messages"), json!({ "content": "hello?" })).await.1;
    eventually("the message expired", || async { (status_of(&env, &sent["messageId"], "bob").await == "expired").then_some(()) }).await;

    let mut alice_ws = WsClient::connect(&addr, &env.token("alice")).await.unwrap();
    let update = alice_ws.wait_for("message:status expired", |f| f["event"] == "message:status" && f["data"]["status"] == "expired").await;
    assert_eq!(update["data"]["messageId"], sent["messageId"]);
    env.cleanup().await;
}

/// Only messages older than the retention expire: per member one range up to
/// the newest such message, in a group as in a direct chat. The parked state
/// past the range stays, and the backlog counts what is left.
#[tokio::test]
async fn only_messages_past_the_retention_expire_and_the_rest_stays_pending() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    let mut config = env.worker_config();
    config.message_retention = Duration::from_secs(3600);
    config.janitor_interval = Duration::from_millis(200);
    env.start_worker_with(config).await;
    let alice = Rest::new(&addr, Some(&env.token("alice")));
    let group = alice.create_chat("group", &["bob", "carol"]).await;
    let mut sent = Vec::new();
    for text in ["old 1", "old 2", "new"] {
        sent.push(alice.post(&format!("/api/chats/{group}/messages"), json!({ "content": text })).await.1);
    }
    let admin = Rest::new(&env.api(0).admin_addr.to_string(), Some(&env.admin_token("ops")));
    eventually("Bob's jobs parked", || async {
        let report = admin.get("/admin/users/bob/pending").await.1;
        (report["parked"] == 3).then_some(())
    })
    .await;

    // The first two were sent two hours ago, as the database sees it.
    let old: Vec<uuid::Uuid> = sent[..2].iter().map(|m| uuid::Uuid::parse_str(m["messageId"].as_str().unwrap()).unwrap()).collect();
    sqlx::query("UPDATE messages SET created_at = created_at - interval '2 hours' WHERE id = ANY($1)")
        .bind(&old)
        .execute(&env.db)
        .await
        .unwrap();
    eventually("the old messages expired", || async {
        (status_of(&env, &sent[1]["messageId"], "carol").await == "expired").then_some(())
    })
    .await;
    for user in ["bob", "carol"] {
        assert_eq!(status_of(&env, &sent[0]["messageId"], user).await, "expired", "{user}");
        assert_eq!(status_of(&env, &sent[1]["messageId"], user).await, "expired", "{user}");
        assert_eq!(status_of(&env, &sent[2]["messageId"], user).await, "sent", "{user}");
    }
    let ranges: Vec<(String, i64, i64)> =
        sqlx::query_as("SELECT user_id, after_seq, up_to_seq FROM expired_ranges ORDER BY user_id").fetch_all(&env.db).await.unwrap();
    assert_eq!(ranges, vec![("bob".into(), 0, 2), ("carol".into(), 0, 2)]);
    let report = admin.get("/admin/users/bob/pending").await.1;
    assert_eq!((report["pending"].as_i64(), report["parked"].as_i64()), (Some(1), Some(1)), "{report}");
    assert_eq!(report["messages"][0]["messageId"], sent[2]["messageId"]);

    // Bob comes back: only the new one.
    let mut bob = WsClient::connect(&addr, &env.token("bob")).await.unwrap();
    assert_eq!(bob.receive_messages(1).await[0]["messageId"], sent[2]["messageId"]);
    bob.wait_event("sync:done").await;
    bob.barrier().await;
    assert!(bob.drain_pending("message:receive").is_empty());
    eventually("Bob's backlog empty", || async {
        let report = admin.get("/admin/users/bob/pending").await.1;
        (report["pending"] == 0 && report["parked"] == 0).then_some(())
    })
    .await;
    env.cleanup().await;
}
