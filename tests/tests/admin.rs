//! The admin API: authorization, a user's backlog and parked jobs, requeue,
//! and dead letters (list, inspect, replay, drop).

use courier_shared::{
    auth::{self, Claims},
    broker::PublishOptions,
    job::DeliveryJob,
};
use courier_tests::{
    JWT_SECRET, Rest, TestEnv, WsClient, eventually,
    ops::{metric, scrape},
};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};
use uuid::Uuid;

async fn parked_for(env: &TestEnv, user: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM message_status WHERE user_id = $1 AND status = 'sent' AND parked_at IS NOT NULL")
        .bind(user)
        .fetch_one(&env.db)
        .await
        .unwrap()
}

fn token_with_roles(user: &str, roles: &[&str]) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = Claims {
        sub: user.into(),
        exp: now + 600,
        iat: Some(now),
        name: None,
        picture: None,
        role: None,
        roles: Some(roles.iter().map(|r| (*r).to_owned()).collect()),
        did: None,
        aud: None,
        iss: None,
    };
    auth::sign_claims(&Header::default(), &claims, &EncodingKey::from_secret(JWT_SECRET.as_bytes())).unwrap()
}

#[tokio::test]
async fn admin_api_needs_a_token_with_the_admin_role() {
    let mut env = TestEnv::new().await;
    let public = env.start_api().await;
    // The admin API has its own listener (ADMIN_ADDR); the clients' port does not serve it.
    let (status, body) = Rest::new(&public, Some(&env.admin_token("ops"))).get("/admin/backlog").await;
    assert_eq!((status.as_u16(), body["error"]["code"].as_str()), (404, Some("not_found")), "{body}");
    let addr = env.api(0).admin_addr.to_string();
    let paths = ["/admin/backlog", "/admin/users/bob/pending", "/admin/users/bob/parked", "/admin/dead-letters", "/admin/dead-letters/1"];

    for path in paths {
        let (status, body) = Rest::new(&addr, None).get(path).await;
        assert_eq!((status.as_u16(), body["error"]["code"].as_str()), (401, Some("unauthorized")), "{path}");
        let (status, body) = Rest::new(&addr, Some("not.a.token")).get(path).await;
        assert_eq!((status.as_u16(), body["error"]["code"].as_str()), (401, Some("unauthorized")), "{path}");
        let (status, body) = Rest::new(&addr, Some(&env.token("mallory"))).get(path).await;
        assert_eq!((status.as_u16(), body["error"]["code"].as_str()), (403, Some("forbidden")), "{path}: {body}");
        let (status, _) = Rest::new(&addr, Some(&token_with_roles("eve", &["user", "support"]))).get(path).await;
        assert_eq!(status.as_u16(), 403, "{path}");
    }
    let user = Rest::new(&addr, Some(&env.token("mallory")));
    assert_eq!(user.post("/admin/users/bob/requeue", json!({})).await.0.as_u16(), 403);
    assert_eq!(user.post("/admin/dead-letters/1/replay", json!({})).await.0.as_u16(), 403);
    assert_eq!(user.delete("/admin/dead-letters/1").await.0.as_u16(), 403);

    let admin = Rest::new(&addr, Some(&env.admin_token("ops")));
    assert_eq!(admin.get("/admin/backlog").await.0.as_u16(), 200);
    let roles_admin = Rest::new(&addr, Some(&token_with_roles("ops2", &["support", "admin"])));
    assert_eq!(roles_admin.get("/admin/users/bob/pending").await.0.as_u16(), 200);
    let (status, body) = admin.get("/admin/dead-letters/1").await;
    assert_eq!((status.as_u16(), body["error"]["code"].as_str()), (404, Some("not_found")));
    assert_eq!(admin.get("/admin/nope").await.0.as_u16(), 404);
    env.cleanup().await;
}

#[tokio::test]
async fn admin_sees_pending_and_parked_jobs_and_requeues_them() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    let worker = env.start_worker().await;
    let chat = Rest::new(&addr, Some(&env.token("alice"))).create_chat("direct", &["bob"]).await;
    let mut alice = WsClient::connect(&addr, &env.token("alice")).await.unwrap();
    let mut sent = Vec::new();
    for i in 0..3 {
        sent.push(alice.send_message(&chat, &format!("m{i}")).await["messageId"].clone());
    }
    eventually("Bob's messages parked", || async { (parked_for(&env, "bob").await == 3).then_some(()) }).await;

    let admin = Rest::new(&env.api(0).admin_addr.to_string(), Some(&env.admin_token("ops")));
    let (status, pending) = admin.get("/admin/users/bob/pending?limit=2").await;
    assert_eq!(status.as_u16(), 200, "{pending}");
    assert_eq!((pending["pending"].as_i64(), pending["parked"].as_i64(), pending["connections"].as_i64()), (Some(3), Some(3), Some(0)));
    let page: Vec<Value> = pending["messages"].as_array().unwrap().clone();
    assert_eq!(page.iter().map(|m| m["messageId"].clone()).collect::<Vec<_>>(), sent[..2].to_vec(), "oldest first");
    assert!(page[0]["parkedAt"].is_string() && page[0]["senderId"] == "alice");
    let after = pending["nextAfter"].as_i64().expect("a next page");
    let rest = admin.get(&format!("/admin/users/bob/pending?after={after}")).await.1;
    assert_eq!(rest["messages"].as_array().unwrap().len(), 1);

    let parked = admin.get("/admin/users/bob/parked").await.1;
    assert_eq!(parked["messages"].as_array().unwrap().len(), 3);
    let backlog = admin.get("/admin/backlog").await.1;
    assert_eq!(backlog["undelivered"], 3);
    assert_eq!(backlog["users"][0], json!({ "userId": "bob", "pending": 3, "parked": 3, "oldest": backlog["users"][0]["oldest"] }));
    assert!(admin.get("/admin/users/nobody/pending").await.1["pending"] == 0);

    // Requeue while Bob is offline: the jobs walk the retry tiers again, and park again.
    let (status, requeued) = admin.post("/admin/users/bob/requeue", json!({})).await;
    assert_eq!(status.as_u16(), 200, "{requeued}");
    assert_eq!((requeued["requeued"].as_i64(), requeued["drains"].as_i64()), (Some(3), Some(0)));
    assert!(parked_for(&env, "bob").await < 3, "un-parked at once");
    eventually("the requeued jobs parked again", || async { (parked_for(&env, "bob").await == 3).then_some(()) }).await;

    // Online: Bob gets everything through his connection's drain, and a requeue
    // asks the workers for another drain of that connection.
    let mut bob = WsClient::connect(&addr, &env.token("bob")).await.unwrap();
    let received = bob.receive_messages(3).await;
    assert_eq!(received.iter().map(|m| m["messageId"].clone()).collect::<Vec<_>>(), sent);
    bob.wait_event("sync:done").await;
    eventually("Bob's acks written", || async {
        let pending = admin.get("/admin/users/bob/pending").await.1;
        (pending["pending"] == 0).then_some(())
    })
    .await;
    let worker_addr = env.worker(worker).metrics_addr.to_string();
    let drains = |text: &str| metric(text, "courier_drains_total", &[("result", "complete")]).unwrap_or(0.0);
    let before = drains(&scrape(&worker_addr).await);
    let (status, requeued) = admin.post("/admin/users/bob/requeue", json!({})).await;
    assert_eq!(status.as_u16(), 200);
    assert_eq!((requeued["requeued"].as_i64(), requeued["drains"].as_i64()), (Some(0), Some(1)));
    eventually("the requeue's drain", || async { (drains(&scrape(&worker_addr).await) > before).then_some(()) }).await;
    bob.barrier().await;
    assert!(bob.drain_pending("message:receive").is_empty(), "nothing delivered twice");
    env.cleanup().await;
}

#[tokio::test]
async fn dead_letters_are_listed_inspected_replayed_and_dropped() {
    let mut env = TestEnv::new().await;
    env.start_api().await;
    env.start_worker().await;
    let topology = env.topology();
    let broker = env.broker().await;
    let ghost = DeliveryJob { message_id: Uuid::now_v7(), recipient_id: "bob".into(), chat_id: Uuid::now_v7(), seq: 1 };
    broker.publish_json(&topology.delivery(), topology.job_key(), &ghost, PublishOptions::persistent()).await.unwrap();
    broker.publish(&topology.delivery(), topology.job_key(), b"{not a job", PublishOptions::persistent()).await.unwrap();

    let admin = Rest::new(&env.api(0).admin_addr.to_string(), Some(&env.admin_token("ops")));
    let list = eventually("two dead letters", || async {
        let list = admin.get("/admin/dead-letters").await.1;
        (list["deadLetters"].as_array().map(Vec::len) == Some(2)).then_some(list)
    })
    .await;
    let letters = list["deadLetters"].as_array().unwrap();
    let ghost_letter = letters.iter().find(|l| l["reason"] == "message_gone").unwrap_or_else(|| panic!("the ghost job: {list}"));
    let garbage = letters.iter().find(|l| l["reason"] == "rejected").expect("the malformed body");
    assert_eq!(ghost_letter["body"]["messageId"], json!(ghost.message_id));
    assert_eq!(garbage["body"], "{not a job");
    assert_eq!(garbage["sourceQueue"], json!(topology.delivery()));

    let id = ghost_letter["id"].as_i64().unwrap();
    let (status, inspected) = admin.get(&format!("/admin/dead-letters/{id}")).await;
    assert_eq!(status.as_u16(), 200);
    assert_eq!(inspected["headers"]["x-courier-dead-reason"], "message_gone");
    assert_eq!(inspected["body"]["recipientId"], "bob");

    // Replay: back to the delivery queue; the message is still gone, so it dies again (a new letter).
    let (status, replayed) = admin.post(&format!("/admin/dead-letters/{id}/replay"), json!({})).await;
    assert_eq!((status.as_u16(), replayed["replayedTo"].as_str()), (200, Some("delivery")), "{replayed}");
    assert_eq!(admin.get(&format!("/admin/dead-letters/{id}")).await.0.as_u16(), 404);
    eventually("the replayed job dead again", || async {
        let list = admin.get("/admin/dead-letters").await.1;
        let again = list["deadLetters"].as_array()?.iter().any(|l| l["reason"] == "message_gone" && l["id"].as_i64() > Some(id));
        again.then_some(())
    })
    .await;

    // A body that is no job cannot be replayed, only dropped.
    let garbage_id = garbage["id"].as_i64().unwrap();
    let (status, body) = admin.post(&format!("/admin/dead-letters/{garbage_id}/replay"), json!({})).await;
    assert_eq!((status.as_u16(), body["error"]["code"].as_str()), (409, Some("conflict")));
    assert_eq!(admin.delete(&format!("/admin/dead-letters/{garbage_id}")).await.0.as_u16(), 204);
    assert_eq!(admin.delete(&format!("/admin/dead-letters/{garbage_id}")).await.0.as_u16(), 404);
    let list = admin.get("/admin/dead-letters").await.1;
    assert_eq!(list["total"], 1);
    env.cleanup().await;
}
