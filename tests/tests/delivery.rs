//! Live delivery, acknowledgements, read receipts, sender notifications, presence.

use std::time::Duration;

use courier_shared::config::RetryConfig;
use courier_tests::{Rest, TestEnv, WsClient, eventually};
use serde_json::{Value, json};

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

#[tokio::test]
async fn delivered_is_written_only_after_the_client_acks() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    env.start_worker().await;
    let chat = Rest::new(&addr, Some(&env.token("alice"))).create_chat("direct", &["bob"]).await;
    let mut alice = WsClient::connect(&addr, &env.token("alice")).await.unwrap();
    let mut bob = WsClient::connect_without_acks(&addr, &env.token("bob")).await.unwrap();
    bob.wait_event("sync:done").await;

    let sent = alice.send_message(&chat, "ack me").await;
    let frame = bob.wait_event("message:receive").await;
    assert_eq!(frame["data"]["messageId"], sent["messageId"]);
    // Received but not acknowledged: still `sent`, and Alice has no ✓✓.
    bob.barrier().await;
    assert_eq!(status_of(&env, &sent["messageId"], "bob").await, "sent");
    alice.barrier().await;
    assert!(alice.drain_pending("message:status").is_empty());

    bob.ack(&frame["id"]).await;
    wait_status(&env, &sent["messageId"], "bob", "delivered").await;
    let status = alice.wait_event("message:status").await;
    assert_eq!(status["data"]["status"], "delivered");
    assert_eq!(status["data"]["deliveredTo"], "bob");

    // `message:delivered {messageId}` is the guide's way; it works too.
    let second = alice.send_message(&chat, "ack me by id").await;
    let frame = bob.wait_event("message:receive").await;
    assert_eq!(frame["data"]["messageId"], second["messageId"]);
    let reply = bob.request("message:delivered", json!({"messageId": second["messageId"]})).await.unwrap();
    assert_eq!(reply["updated"], true);
    wait_status(&env, &second["messageId"], "bob", "delivered").await;
    env.cleanup().await;
}

#[tokio::test]
async fn an_unacknowledged_message_is_sent_again_until_acked() {
    let mut env = TestEnv::new().await;
    let mut config = env.api_config();
    config.ack_timeout = Duration::from_millis(300);
    let addr = env.start_api_with(config).await;
    env.start_worker().await;
    let chat = Rest::new(&addr, Some(&env.token("alice"))).create_chat("direct", &["bob"]).await;
    let mut bob = WsClient::connect_without_acks(&addr, &env.token("bob")).await.unwrap();
    bob.wait_event("sync:done").await;
    let mut alice = WsClient::connect(&addr, &env.token("alice")).await.unwrap();
    let sent = alice.send_message(&chat, "hello?").await;

    let first = bob.wait_event("message:receive").await;
    let again = bob.wait_event("message:receive").await;
    assert_eq!(first["data"]["messageId"], sent["messageId"]);
    assert_eq!(again["data"]["messageId"], sent["messageId"], "the same message, resent");
    assert_eq!(again["id"], first["id"], "resent under the same frame id");
    assert_eq!(status_of(&env, &sent["messageId"], "bob").await, "sent");

    bob.ack(&again["id"]).await;
    wait_status(&env, &sent["messageId"], "bob", "delivered").await;
    env.cleanup().await;
}

#[tokio::test]
async fn read_receipts_reach_the_sender_and_statuses_never_go_back() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    env.start_worker().await;
    let chat = Rest::new(&addr, Some(&env.token("alice"))).create_chat("direct", &["bob"]).await;
    let mut alice = WsClient::connect(&addr, &env.token("alice")).await.unwrap();
    let mut bob = WsClient::connect_without_acks(&addr, &env.token("bob")).await.unwrap();
    bob.wait_event("sync:done").await;

    let first = alice.send_message(&chat, "one").await;
    let frame = bob.wait_event("message:receive").await;
    // Read before the delivery ack: straight to read, and a late ack does not undo it.
    let reply = bob.request("message:read", json!({"messageId": first["messageId"]})).await.unwrap();
    assert_eq!(reply["updated"], 1);
    bob.ack(&frame["id"]).await;
    bob.barrier().await;
    wait_status(&env, &first["messageId"], "bob", "read").await;
    let status = alice.wait_for("read status", |f| f["event"] == "message:status" && f["data"]["status"] == "read").await;
    assert_eq!(status["data"]["messageId"], first["messageId"]);

    // Read everything up to a seq.
    bob.set_auto_ack(true);
    let two = alice.send_message(&chat, "two").await;
    let three = alice.send_message(&chat, "three").await;
    bob.receive_messages(2).await;
    let reply = bob.request("message:read", json!({"chatId": chat, "upToSeq": three["seq"]})).await.unwrap();
    assert_eq!(reply["updated"], 2);
    for id in [&two["messageId"], &three["messageId"]] {
        wait_status(&env, id, "bob", "read").await;
    }
    let reply = bob.request("message:read", json!({"chatId": chat, "upToSeq": three["seq"]})).await.unwrap();
    assert_eq!(reply["updated"], 0, "reading again changes nothing");
    env.cleanup().await;
}

#[tokio::test]
async fn an_offline_sender_gets_the_status_changes_it_missed() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    env.start_worker().await;
    let chat = Rest::new(&addr, Some(&env.token("alice"))).create_chat("direct", &["bob"]).await;
    let mut alice = WsClient::connect(&addr, &env.token("alice")).await.unwrap();
    let also_read = alice.send_message(&chat, "one").await;
    let delivered_only = alice.send_message(&chat, "two").await;
    alice.close().await;

    let mut bob = WsClient::connect(&addr, &env.token("bob")).await.unwrap();
    bob.receive_messages(2).await;
    bob.request("message:read", json!({"messageId": also_read["messageId"]})).await.unwrap();
    wait_status(&env, &delivered_only["messageId"], "bob", "delivered").await;

    let mut alice = WsClient::connect(&addr, &env.token("alice")).await.unwrap();
    // The latest status shown per message: the replay, and a live `delivered`
    // the worker may still be routing, come in either order; never backwards.
    let (read_id, delivered_id) = (also_read["messageId"].as_str().unwrap(), delivered_only["messageId"].as_str().unwrap());
    let mut seen: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    while seen.get(read_id).map(String::as_str) != Some("read") || !seen.contains_key(delivered_id) {
        let status = alice.wait_event("message:status").await["data"].clone();
        let (id, state) = (status["messageId"].as_str().unwrap().to_owned(), status["status"].as_str().unwrap().to_owned());
        assert!(!(state == "delivered" && seen.get(&id).map(String::as_str) == Some("read")), "{id} went back from read");
        seen.insert(id, state);
    }
    assert_eq!(seen[delivered_id], "delivered");
    alice.wait_event("sync:done").await;
    // Her device's told marks move over both once she acknowledges them.
    let chat_id = uuid::Uuid::parse_str(&chat).unwrap();
    eventually("Alice's acks of the statuses written", || async {
        let told: (i64, i64) = sqlx::query_as(
            "SELECT told_delivered_seq, told_read_seq FROM device_cursors WHERE user_id = 'alice' AND chat_id = $1",
        )
        .bind(chat_id)
        .fetch_one(&env.db)
        .await
        .unwrap();
        (told == (2, 1)).then_some(())
    })
    .await;
    alice.close().await;

    // Acknowledged: a further reconnect brings nothing more.
    let mut alice = WsClient::connect(&addr, &env.token("alice")).await.unwrap();
    alice.wait_event("sync:done").await;
    alice.barrier().await;
    assert!(alice.drain_pending("message:status").is_empty());
    env.cleanup().await;
}

#[tokio::test]
async fn co_members_see_online_and_offline_and_last_seen_is_stored() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    env.start_worker().await;
    Rest::new(&addr, Some(&env.token("alice"))).create_chat("group", &["bob"]).await;
    let mut alice = WsClient::connect(&addr, &env.token("alice")).await.unwrap();
    alice.wait_event("sync:done").await;

    let bob = WsClient::connect(&addr, &env.token("bob")).await.unwrap();
    let online = alice.wait_event("user:online").await["data"].clone();
    assert_eq!(online["userId"], "bob");
    assert!(online["timestamp"].is_string());

    // A second connection of Bob, closed: he is still online, so no offline.
    let second = WsClient::connect(&addr, &env.token("bob")).await.unwrap();
    second.close().await;
    bob.close().await;
    let offline = alice.wait_event("user:offline").await["data"].clone();
    assert_eq!(offline["userId"], "bob");
    let last_seen: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT last_seen FROM users WHERE id = 'bob'").fetch_one(&env.db).await.unwrap();
    assert!(last_seen.is_some());
    alice.barrier().await;
    assert!(alice.drain_pending("user:offline").is_empty(), "one offline for Bob's last connection only");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM connections WHERE user_id = 'bob'").fetch_one(&env.db).await.unwrap();
    assert_eq!(rows, 0);
    env.cleanup().await;
}

#[tokio::test]
async fn an_offline_recipients_job_walks_the_retry_tiers_then_parks_then_drains() {
    // Tiers long enough to observe each one holding the job.
    let retry = RetryConfig {
        retry_min_delay: Duration::from_millis(1500),
        retry_factor: 2.0,
        retry_max_delay: Duration::from_secs(3),
        retry_tiers: 2,
    };
    let mut env = TestEnv::with_retry(retry).await;
    let addr = env.start_api().await;
    env.start_worker().await;
    let topology = env.topology();
    let tiers: Vec<String> = topology.tiers().iter().map(|t| t.queue.clone()).collect();
    assert_eq!(tiers, vec![format!("{}.retry.1500ms", env.prefix), format!("{}.retry.3s", env.prefix)]);
    let chat = Rest::new(&addr, Some(&env.token("alice"))).create_chat("direct", &["bob"]).await;
    let sent = Rest::new(&addr, Some(&env.token("alice")))
        .post(&format!("/api/chats/{chat}/messages"), json!({"content": "while you were out"}))
        .await
        .1;

    for tier in &tiers {
        eventually(&format!("the job in {tier}"), || async { (env.queue_depth(tier).await == 1).then_some(()) }).await;
    }
    let message_id = uuid::Uuid::parse_str(sent["messageId"].as_str().unwrap()).unwrap();
    eventually("the job parked", || async {
        // Parked: Bob's parked mark covers the message and he still lacks it.
        let parked: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
            "SELECT cm.parked_at FROM messages m
               JOIN chat_members cm ON cm.chat_id = m.chat_id AND cm.user_id = 'bob'
              WHERE m.id = $1 AND m.seq <= cm.parked_seq AND m.seq > cm.delivered_seq",
        )
        .bind(message_id)
        .fetch_optional(&env.db)
        .await
        .unwrap()
        .flatten();
        parked.map(|_| ())
    })
    .await;
    for tier in &tiers {
        assert_eq!(env.queue_depth(tier).await, 0, "{tier} emptied");
    }
    assert_eq!(env.queue_depth(&topology.delivery()).await, 0);

    let mut bob = WsClient::connect(&addr, &env.token("bob")).await.unwrap();
    assert_eq!(bob.receive_messages(1).await[0]["messageId"], sent["messageId"]);
    assert_eq!(bob.wait_event("sync:done").await["data"]["count"], 1);
    wait_status(&env, &sent["messageId"], "bob", "delivered").await;
    env.cleanup().await;
}

#[tokio::test]
async fn messages_reach_only_members_at_the_time_they_were_sent() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    env.start_worker().await;
    let alice_rest = Rest::new(&addr, Some(&env.token("alice")));
    let chat = alice_rest.create_chat("group", &["bob", "carol"]).await;
    let mut alice = WsClient::connect(&addr, &env.token("alice")).await.unwrap();
    let before = alice.send_message(&chat, "before removal").await;
    let (status, _) = alice_rest.delete(&format!("/api/chats/{chat}/members/bob")).await;
    assert_eq!(status.as_u16(), 204);
    let after = alice.send_message(&chat, "after removal").await;
    let (status, _) = alice_rest.post(&format!("/api/chats/{chat}/members"), json!({"userId": "dave"})).await;
    assert_eq!(status.as_u16(), 201);
    let later = alice.send_message(&chat, "after dave joined").await;

    let mut bob = WsClient::connect(&addr, &env.token("bob")).await.unwrap();
    let got = bob.receive_messages(1).await;
    assert_eq!(got[0]["messageId"], before["messageId"]);
    assert_eq!(bob.wait_event("sync:done").await["data"]["count"], 1);
    bob.barrier().await;
    assert!(bob.drain_pending("message:receive").is_empty(), "nothing sent after the removal");

    let mut dave = WsClient::connect(&addr, &env.token("dave")).await.unwrap();
    let got = dave.receive_messages(1).await;
    assert_eq!(got[0]["messageId"], later["messageId"]);
    assert_eq!(dave.wait_event("sync:done").await["data"]["count"], 1, "nothing from before joining");
    let _ = after;
    env.cleanup().await;
}

/// An ack is not stuck behind the client's own send while that send waits for
/// PostgreSQL: the session would resend the frame the client acknowledged.
#[tokio::test]
async fn an_ack_is_taken_while_an_earlier_send_of_the_connection_waits() {
    let mut env = TestEnv::new().await;
    let mut config = env.api_config();
    config.ack_timeout = Duration::from_millis(300);
    let addr = env.start_api_with(config).await;
    env.start_worker().await;
    let alice_rest = Rest::new(&addr, Some(&env.token("alice")));
    let chat = alice_rest.create_chat("direct", &["bob"]).await;
    let other = alice_rest.create_chat("group", &["bob", "carol"]).await;
    let mut alice = WsClient::connect(&addr, &env.token("alice")).await.unwrap();
    let mut bob = WsClient::connect_without_acks(&addr, &env.token("bob")).await.unwrap();
    alice.send_message(&chat, "one").await;
    let frame = bob.wait_event("message:receive").await;

    // Hold the other chat's row: bob's send to it waits for the lock.
    let mut blocker = env.db.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM chats WHERE id = $1::uuid FOR UPDATE").bind(&other).execute(&mut *blocker).await.unwrap();
    bob.send_frame(json!({ "event": "message:send", "id": 900, "data": { "chatId": other, "content": "waits" } })).await;
    bob.ack(&frame["id"]).await;
    // The ack is taken while the send still waits: the device's cursor moves.
    eventually("bob's cursor past message one while his send waits", || async {
        let acked: Option<i64> =
            sqlx::query_scalar("SELECT acked_seq FROM device_cursors WHERE user_id = 'bob' AND chat_id = $1::uuid")
                .bind(&chat)
                .fetch_optional(&env.db)
                .await
                .unwrap();
        (acked == Some(1)).then_some(())
    })
    .await;
    blocker.rollback().await.unwrap();
    bob.reply_to(900).await.expect("the send is stored once the lock is gone");
    bob.barrier().await;
    let again = bob.drain_pending("message:receive");
    assert!(again.is_empty(), "the acknowledged frame was sent again: {again:?}");
    env.cleanup().await;
}

/// A client that acknowledges its messages but not the `message:status`
/// frames (the protocol lets it: an unacknowledged status only comes again on
/// the next connection) keeps getting messages live: statuses take no room
/// from messages in the ack window. An unanswered status is given up after
/// ACK_TIMEOUT and comes again on the next connection.
#[tokio::test]
async fn unacknowledged_statuses_never_hold_back_messages() {
    let mut env = TestEnv::new().await;
    let mut config = env.api_config();
    config.max_unacked = 4;
    config.ack_timeout = Duration::from_millis(300);
    let addr = env.start_api_with(config).await;
    env.start_worker().await;
    let chat = Rest::new(&addr, Some(&env.token("alice"))).create_chat("direct", &["bob"]).await;
    let mut alice = WsClient::connect_without_acks(&addr, &env.token("alice")).await.unwrap();
    let mut bob = WsClient::connect(&addr, &env.token("bob")).await.unwrap();

    // Twice as many statuses as the window holds, none acknowledged.
    let mut sent = Vec::new();
    for i in 0..8 {
        sent.push(alice.send_message(&chat, &format!("m{i}")).await["messageId"].clone());
    }
    bob.receive_messages(8).await;
    for _ in 0..8 {
        let status = alice.wait_for("a delivered status", |f| f["event"] == "message:status").await;
        assert_eq!(status["data"]["status"], "delivered");
    }

    // Bob answers: it reaches Alice live, though none of her statuses was acknowledged.
    bob.send_message(&chat, "answer").await;
    let answer = alice.wait_event("message:receive").await;
    assert_eq!(answer["data"]["content"], "answer");
    alice.ack(&answer["id"]).await;

    // Never shown as far as the server knows: the next connection gets all eight again.
    alice.close().await;
    let mut again = WsClient::connect(&addr, &env.token("alice")).await.unwrap();
    let mut replayed = Vec::new();
    for _ in 0..8 {
        replayed.push(again.wait_for("a replayed status", |f| f["event"] == "message:status").await["data"]["messageId"].clone());
    }
    replayed.sort_by_key(|id| id.to_string());
    sent.sort_by_key(|id| id.to_string());
    assert_eq!(replayed, sent);
    env.cleanup().await;
}
