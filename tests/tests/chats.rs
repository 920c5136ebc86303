//! Chat lifecycle and who may do what.

use courier_tests::{Rest, TestEnv, WsClient};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn chat_lifecycle_and_authorization() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    let alice = Rest::new(&addr, Some(&env.token("alice")));
    let bob = Rest::new(&addr, Some(&env.token("bob")));
    let mallory = Rest::new(&addr, Some(&env.token("mallory")));

    // A group with a member who has never logged in: their row is created.
    let (status, chat) = alice.post("/api/chats", json!({"type": "group", "name": "team", "members": ["bob", "dave"]})).await;
    assert_eq!(status, StatusCode::CREATED, "{chat}");
    let chat_id = chat["id"].as_str().unwrap().to_owned();
    let members: Vec<&str> = chat["members"].as_array().unwrap().iter().map(|m| m["userId"].as_str().unwrap()).collect();
    assert_eq!(members, vec!["alice", "bob", "dave"]);

    // Each member lists it; an outsider does not.
    let (_, listed) = bob.get("/api/chats").await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let (_, listed) = mallory.get("/api/chats").await;
    assert_eq!(listed, json!([]));

    // An outsider cannot read, send, add or remove; same answer as for a chat that does not exist.
    let missing = uuid::Uuid::now_v7();
    for path in [format!("/api/chats/{chat_id}/messages"), format!("/api/chats/{missing}/messages")] {
        let (status, body) = mallory.get(&path).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("not_member")), "{path}");
    }
    let (status, body) = mallory.post(&format!("/api/chats/{chat_id}/messages"), json!({"content": "hi"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("not_member")));
    let (status, _) = mallory.post(&format!("/api/chats/{chat_id}/members"), json!({"userId": "mallory"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = mallory.delete(&format!("/api/chats/{chat_id}/members/bob")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let mut outsider = WsClient::connect(&addr, &env.token("mallory")).await.unwrap();
    let error = outsider.request("message:send", json!({"chatId": chat_id, "content": "hi"})).await.unwrap_err();
    assert_eq!(error["code"], "not_member");

    // A member adds mallory; now she can read.
    let (status, _) = bob.post(&format!("/api/chats/{chat_id}/members"), json!({"userId": "mallory"})).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = bob.post(&format!("/api/chats/{chat_id}/members"), json!({"userId": "mallory"})).await;
    assert_eq!(status, StatusCode::OK, "adding twice is a no-op");
    let (status, _) = mallory.get(&format!("/api/chats/{chat_id}/messages")).await;
    assert_eq!(status, StatusCode::OK);

    // Removed again, she is out; removing a non-member is 404.
    let (status, _) = alice.delete(&format!("/api/chats/{chat_id}/members/mallory")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = mallory.get(&format!("/api/chats/{chat_id}/messages")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = alice.delete(&format!("/api/chats/{chat_id}/members/mallory")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));

    // A direct chat between two users exists once, and its members are fixed.
    let (status, direct) = alice.post("/api/chats", json!({"type": "direct", "members": ["bob"]})).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, again) = bob.post("/api/chats", json!({"type": "direct", "members": ["alice"]})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["id"], direct["id"]);
    let direct_id = direct["id"].as_str().unwrap();
    let (status, body) = alice.post(&format!("/api/chats/{direct_id}/members"), json!({"userId": "carol"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("conflict")));
    let (status, body) = alice.post("/api/chats", json!({"type": "direct", "members": ["bob", "carol"]})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_payload")));

    outsider.close().await;
    env.cleanup().await;
}

#[tokio::test]
async fn rest_bodies_are_checked() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    let alice = Rest::new(&addr, Some(&env.token("alice")));
    let cases = [
        (json!({"type": "channel", "members": []}), "invalid_payload"),
        (json!({"members": []}), "invalid_payload"),
        (json!({"type": "group", "members": [""]}), "invalid_payload"),
        (json!({"type": "group", "members": ["x".repeat(200)]}), "invalid_payload"),
    ];
    for (body, code) in cases {
        let (status, reply) = alice.post("/api/chats", body.clone()).await;
        assert_eq!((status, reply["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some(code)), "{body}");
    }
    let (status, reply) = alice.get("/api/chats/not-a-uuid/messages").await;
    assert_eq!((status, reply["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_payload")));
    let (status, reply) = alice.get("/api/nothing-here").await;
    assert_eq!((status, reply["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));

    // Malformed JSON and an oversized body.
    let http = reqwest::Client::new();
    let response = http
        .post(format!("http://{addr}/api/chats"))
        .bearer_auth(env.token("alice"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let reply: serde_json::Value = response.json().await.unwrap();
    assert_eq!(reply["error"]["code"], "invalid_json");
    let chat_id = alice.create_chat("group", &["bob"]).await;
    let huge = json!({ "content": "x".repeat(300 * 1024) });
    let (status, reply) = alice.post(&format!("/api/chats/{chat_id}/messages"), huge).await;
    assert_eq!((status, reply["error"]["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large")));
    let too_long = json!({ "content": "x".repeat(64 * 1024 + 1) });
    let (status, reply) = alice.post(&format!("/api/chats/{chat_id}/messages"), too_long).await;
    assert_eq!((status, reply["error"]["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("content_too_large")));
    env.cleanup().await;
}

#[tokio::test]
async fn health_and_readiness() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    let anonymous = Rest::new(&addr, None);
    let (status, body) = anonymous.get("/healthz").await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("ok")));
    let ready = courier_tests::eventually("readyz", || {
        let anonymous = anonymous.clone();
        async move {
            let (status, body) = anonymous.get("/readyz").await;
            (status == StatusCode::OK).then_some(body)
        }
    })
    .await;
    assert_eq!(ready["postgres"], "ok");
    assert_eq!(ready["rabbitmq"], "ok");
    env.cleanup().await;
}
