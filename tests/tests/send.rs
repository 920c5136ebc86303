//! `message:send` over the WebSocket (and REST): persistence, atomicity,
//! idempotency, and clear errors for bad input on a connection that stays usable.

use courier_tests::{Rest, TestEnv, WsClient};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

async fn count(env: &TestEnv, sql: &'static str, id: &str) -> i64 {
    let id = uuid::Uuid::parse_str(id).unwrap();
    sqlx::query_scalar(sql).bind(id).fetch_one(&env.db).await.unwrap()
}

#[tokio::test]
async fn a_websocket_send_stores_the_message_and_one_sent_status_per_other_member() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    let alice_rest = Rest::new(&addr, Some(&env.token("alice")));
    let chat_id = alice_rest.create_chat("group", &["bob", "carol"]).await;
    let mut alice = WsClient::connect(&addr, &env.token("alice")).await.unwrap();

    let ack = alice
        .request("message:send", json!({"chatId": chat_id, "content": "hello group", "messageType": "text", "clientMsgId": "m-1"}))
        .await
        .unwrap();
    assert_eq!(ack["chatId"], chat_id);
    assert_eq!(ack["seq"], 1);
    assert_eq!(ack["clientMsgId"], "m-1");
    let sent = alice.wait_event("message:sent").await;
    assert_eq!(sent["data"], ack, "message:sent carries the ack's body");
    assert!(sent["id"].as_u64().is_some(), "server event frames are numbered");

    let message_id = ack["messageId"].as_str().unwrap();
    let stored: (String, Vec<u8>, String, i64) =
        sqlx::query_as("SELECT sender_id, content, message_type, seq FROM messages WHERE id = $1")
            .bind(uuid::Uuid::parse_str(message_id).unwrap())
            .fetch_one(&env.db)
            .await
            .unwrap();
    assert_eq!(stored, ("alice".into(), b"hello group".to_vec(), "text".into(), 1));
    let statuses: Vec<(String, String)> =
        sqlx::query_as("SELECT user_id, status::text FROM message_status WHERE message_id = $1 ORDER BY user_id")
            .bind(uuid::Uuid::parse_str(message_id).unwrap())
            .fetch_all(&env.db)
            .await
            .unwrap();
    assert_eq!(statuses, vec![("bob".into(), "sent".into()), ("carol".into(), "sent".into())]);

    // Seqs go up by one per message, whichever path sends.
    let second = alice.send_message(&chat_id, "second").await;
    let (_, third) = alice_rest.post(&format!("/api/chats/{chat_id}/messages"), json!({"content": "third"})).await;
    assert_eq!((second["seq"].as_i64(), third["seq"].as_i64()), (Some(2), Some(3)));

    // History shows the sender's messages with their statuses.
    let (_, history) = alice_rest.get(&format!("/api/chats/{chat_id}/messages?limit=2")).await;
    let seqs: Vec<i64> = history.as_array().unwrap().iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, vec![3, 2], "newest first, limited");
    assert_eq!(history[0]["statuses"].as_array().unwrap().len(), 2);
    let (_, older) = alice_rest.get(&format!("/api/chats/{chat_id}/messages?before=2")).await;
    assert_eq!(older[0]["seq"], 1);
    alice.close().await;
    env.cleanup().await;
}

#[tokio::test]
async fn content_is_stored_and_returned_verbatim() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    let rest = Rest::new(&addr, Some(&env.token("alice")));
    let chat_id = rest.create_chat("direct", &["bob"]).await;
    let mut alice = WsClient::connect(&addr, &env.token("alice")).await.unwrap();
    let tricky = "nul\u{0} <script>alert(1)</script> '; DROP TABLE messages; -- 🙂 \u{202e}";
    alice.send_message(&chat_id, tricky).await;
    let (_, history) = rest.get(&format!("/api/chats/{chat_id}/messages")).await;
    assert_eq!(history[0]["content"], tricky);
    alice.close().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_resent_client_msg_id_returns_the_original_and_stores_nothing_new() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    let chat_id = Rest::new(&addr, Some(&env.token("alice"))).create_chat("direct", &["bob"]).await;
    let mut alice = WsClient::connect(&addr, &env.token("alice")).await.unwrap();
    let send = json!({"chatId": chat_id, "content": "once", "clientMsgId": "dup-1"});
    let first = alice.request("message:send", send.clone()).await.unwrap();
    let second = alice.request("message:send", send.clone()).await.unwrap();
    assert_eq!(first, second);

    // Two connections racing with the same key: still one message.
    let mut tab_a = WsClient::connect(&addr, &env.token("alice")).await.unwrap();
    let mut tab_b = WsClient::connect(&addr, &env.token("alice")).await.unwrap();
    let race = json!({"chatId": chat_id, "content": "raced", "clientMsgId": "dup-2"});
    let (a, b) = tokio::join!(tab_a.request("message:send", race.clone()), tab_b.request("message:send", race.clone()));
    assert_eq!(a.unwrap(), b.unwrap());

    // The same key for another chat is a conflict, not a silent success.
    let other_chat = Rest::new(&addr, Some(&env.token("alice"))).create_chat("direct", &["carol"]).await;
    let error = alice
        .request("message:send", json!({"chatId": other_chat, "content": "x", "clientMsgId": "dup-1"}))
        .await
        .unwrap_err();
    assert_eq!(error["code"], "client_msg_id_conflict");

    let chat = uuid::Uuid::parse_str(&chat_id).unwrap();
    let (messages, statuses, last_seq): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM messages WHERE chat_id = $1),
                (SELECT count(*) FROM message_status WHERE chat_id = $1),
                (SELECT last_seq FROM chats WHERE id = $1)",
    )
    .bind(chat)
    .fetch_one(&env.db)
    .await
    .unwrap();
    assert_eq!((messages, statuses, last_seq), (2, 2, 2), "one message per key, no seq burnt");
    for client in [alice, tab_a, tab_b] {
        client.close().await;
    }
    env.cleanup().await;
}

#[tokio::test]
async fn a_failure_in_the_middle_of_a_send_leaves_nothing() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    let chat_id = Rest::new(&addr, Some(&env.token("alice"))).create_chat("group", &["bob", "zed"]).await;
    // Make the outbox insert fail, after the message row is written.
    sqlx::raw_sql(
        "CREATE FUNCTION fail_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'injected failure'; END $$;
         CREATE TRIGGER fail_outbox BEFORE INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION fail_outbox();",
    )
    .execute(&env.db)
    .await
    .unwrap();

    let mut alice = WsClient::connect(&addr, &env.token("alice")).await.unwrap();
    let error = alice
        .request("message:send", json!({"chatId": chat_id, "content": "doomed", "clientMsgId": "k"}))
        .await
        .unwrap_err();
    assert!(error["code"] == "internal" || error["code"] == "unavailable", "{error}");
    assert_eq!(count(&env, "SELECT count(*) FROM messages WHERE chat_id = $1", &chat_id).await, 0);
    assert_eq!(count(&env, "SELECT count(*) FROM message_status WHERE chat_id = $1", &chat_id).await, 0);
    assert_eq!(count(&env, "SELECT last_seq FROM chats WHERE id = $1", &chat_id).await, 0);
    assert_eq!(sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outbox").fetch_one(&env.db).await.unwrap(), 0);

    // Fixed, the retry with the same key succeeds with seq 1.
    sqlx::raw_sql("DROP TRIGGER fail_outbox ON outbox").execute(&env.db).await.unwrap();
    let ack = alice
        .request("message:send", json!({"chatId": chat_id, "content": "doomed", "clientMsgId": "k"}))
        .await
        .unwrap();
    assert_eq!(ack["seq"], 1);
    assert_eq!(count(&env, "SELECT count(*) FROM message_status WHERE chat_id = $1", &chat_id).await, 2);
    alice.close().await;
    env.cleanup().await;
}

#[tokio::test]
async fn each_bad_input_gets_its_code_and_the_connection_stays_usable() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    let chat_id = Rest::new(&addr, Some(&env.token("alice"))).create_chat("direct", &["bob"]).await;
    let not_my_chat = Rest::new(&addr, Some(&env.token("carol"))).create_chat("direct", &["dave"]).await;
    let mut alice = WsClient::connect(&addr, &env.token("alice")).await.unwrap();

    let send = |chat: &str, content: Value, kind: &str| json!({"chatId": chat, "content": content, "messageType": kind});
    let cases: Vec<(&str, Value, &str)> = vec![
        ("message:send", send(&not_my_chat, json!("hi"), "text"), "not_member"),
        ("message:send", send(&uuid::Uuid::now_v7().to_string(), json!("hi"), "text"), "not_member"),
        ("message:send", send(&chat_id, json!(""), "text"), "content_empty"),
        ("message:send", send(&chat_id, json!("   "), "text"), "content_empty"),
        ("message:send", send(&chat_id, json!("x".repeat(64 * 1024 + 1)), "text"), "content_too_large"),
        ("message:send", send(&chat_id, json!("hi"), "hologram"), "invalid_message_type"),
        ("message:send", send(&chat_id, json!(42), "text"), "invalid_payload"),
        ("message:send", json!({"content": "no chat"}), "invalid_payload"),
        ("message:send", send("not-a-uuid", json!("hi"), "text"), "invalid_payload"),
        ("message:teleport", json!({}), "unknown_event"),
        ("message:read", json!({"messageId": uuid::Uuid::now_v7()}), "not_found"),
    ];
    for (event, data, code) in cases {
        let error = alice.request(event, data.clone()).await.expect_err(event);
        assert_eq!(error["code"], code, "{event} {data}");
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    }

    // Frames that are not even valid requests: the error has no id to answer.
    let raw_cases: Vec<(Message, &str)> = vec![
        (Message::Text("{not json".into()), "invalid_json"),
        (Message::Text("[1,2,3]".into()), "invalid_frame"),
        (Message::Text(r#"{"data":{}}"#.into()), "invalid_frame"),
        (Message::Binary(vec![0xde, 0xad, 0xbe, 0xef].into()), "binary_not_supported"),
        (Message::Text(format!(r#"{{"event":"message:send","data":{{"content":"{}"}}}}"#, "x".repeat(200 * 1024)).into()), "payload_too_large"),
        (Message::Text(r#"{"event":"ack","id":999999}"#.into()), "unknown_frame"),
    ];
    for (message, code) in raw_cases {
        alice.send_raw(message).await;
        let error = alice.wait_event("error").await;
        assert_eq!(error["error"]["code"], code);
    }

    // Still usable, and nothing was half-written.
    let ack = alice.send_message(&chat_id, "still here").await;
    assert_eq!(ack["seq"], 1);
    assert_eq!(count(&env, "SELECT count(*) FROM messages WHERE chat_id = $1", &chat_id).await, 1);
    alice.close().await;
    env.cleanup().await;
}
