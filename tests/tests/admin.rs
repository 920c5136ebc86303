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
    let paths = [
        "/admin/backlog",
        "/admin/users/bob",
        "/admin/users/bob/pending",
        "/admin/users/bob/parked",
        "/admin/dead-letters",
        "/admin/dead-letters/1",
    ];

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
    eventually("Bob's messages parked", || async { (env.parked_count("bob").await == 3).then_some(()) }).await;

    let admin = Rest::new(&env.api(0).admin_addr.to_string(), Some(&env.admin_token("ops")));
    let (status, pending) = admin.get("/admin/users/bob/pending?limit=2").await;
    assert_eq!(status.as_u16(), 200, "{pending}");
    assert_eq!((pending["pending"].as_i64(), pending["parked"].as_i64(), pending["connections"].as_i64()), (Some(3), Some(3), Some(0)));
    let page: Vec<Value> = pending["messages"].as_array().unwrap().clone();
    assert_eq!(page.iter().map(|m| m["messageId"].clone()).collect::<Vec<_>>(), sent[..2].to_vec(), "oldest first");
    assert!(page[0]["parkedAt"].is_string() && page[0]["senderId"] == "alice");
    // Pages go by position in the log: CHAT_ID:SEQ of the page's last message.
    let after = pending["nextAfter"].as_str().expect("a next page");
    assert_eq!(after, format!("{}:{}", page[1]["chatId"].as_str().unwrap(), page[1]["seq"]));
    let rest = admin.get(&format!("/admin/users/bob/pending?after={after}")).await.1;
    assert_eq!(rest["messages"].as_array().unwrap().iter().map(|m| m["messageId"].clone()).collect::<Vec<_>>(), sent[2..].to_vec());
    assert_eq!(rest["nextAfter"], Value::Null);
    let (status, body) = admin.get("/admin/users/bob/pending?after=17").await;
    assert_eq!((status.as_u16(), body["error"]["code"].as_str()), (400, Some("invalid_payload")), "{body}");
    // Bob has never connected: no device yet. `/admin/users/{id}` is the same report.
    assert_eq!(pending["devices"], json!([]));
    let report = admin.get("/admin/users/bob").await.1;
    assert_eq!((report["pending"].as_i64(), report["messages"].as_array().map(Vec::len)), (Some(3), Some(3)));

    let parked = admin.get("/admin/users/bob/parked").await.1;
    assert_eq!(parked["messages"].as_array().unwrap().len(), 3);
    let backlog = admin.get("/admin/backlog").await.1;
    assert_eq!(backlog["undelivered"], 3);
    assert_eq!(backlog["users"][0], json!({ "userId": "bob", "pending": 3, "parked": 3, "oldest": backlog["users"][0]["oldest"] }));
    assert!(admin.get("/admin/users/nobody/pending").await.1["pending"] == 0);

    // Requeue while Bob is offline: one job per chat with parked jobs, a
    // doorbell for the first message he lacks there; it walks the retry tiers
    // again and parks again (parking that message: the rest wait for his connect).
    let (status, requeued) = admin.post("/admin/users/bob/requeue", json!({})).await;
    assert_eq!(status.as_u16(), 200, "{requeued}");
    assert_eq!((requeued["requeued"].as_i64(), requeued["drains"].as_i64()), (Some(1), Some(0)));
    assert!(env.parked_count("bob").await < 3, "un-parked at once");
    eventually("the requeued job parked again", || async { (env.parked_count("bob").await == 1).then_some(()) }).await;
    let parked = admin.get("/admin/users/bob/parked").await.1;
    assert_eq!(parked["messages"].as_array().unwrap().iter().map(|m| m["messageId"].clone()).collect::<Vec<_>>(), sent[..1].to_vec());
    assert_eq!((parked["pending"].as_i64(), parked["parked"].as_i64()), (Some(3), Some(1)));

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

    // Per device: a second device of Bob's comes and goes; a message Bob's
    // online device acknowledges leaves the tablet one entry behind.
    let tablet = WsClient::connect(&addr, &env.device_token("bob", "tablet")).await.unwrap();
    tablet.close().await;
    let last = alice.send_message(&chat, "while the tablet is away").await;
    assert_eq!(bob.receive_messages(1).await[0]["messageId"], last["messageId"]);
    let devices = |report: &Value| -> Vec<(String, i64, i64, bool, i64)> {
        let mut devices: Vec<(String, i64, i64, bool, i64)> = report["devices"]
            .as_array()
            .unwrap_or_else(|| panic!("devices: {report}"))
            .iter()
            .map(|d| {
                assert!(d["lastSeenAt"].is_string(), "{d}");
                let id = d["deviceId"].as_str().unwrap().to_owned();
                (id, d["behind"].as_i64().unwrap(), d["chatsBehind"].as_i64().unwrap(), d["revoked"].as_bool().unwrap(), d["connections"].as_i64().unwrap())
            })
            .collect();
        devices.sort();
        devices
    };
    eventually("the tablet one entry behind", || async {
        let report = admin.get("/admin/users/bob").await.1;
        (devices(&report) == vec![("default".into(), 0, 0, false, 1), ("tablet".into(), 1, 1, false, 0)]).then_some(())
    })
    .await;
    let (status, _) = Rest::new(&addr, Some(&env.token("bob"))).delete("/api/devices/tablet").await;
    assert_eq!(status.as_u16(), 204);
    let report = admin.get("/admin/users/bob").await.1;
    assert_eq!(devices(&report), vec![("default".into(), 0, 0, false, 1), ("tablet".into(), 0, 0, true, 0)]);
    assert!(report["devices"].as_array().unwrap().iter().any(|d| d["revokedAt"].is_string()));
    env.cleanup().await;
}

/// Pages of a user's pending messages run chat by chat, each chat's messages
/// in seq order, and together hold every pending message exactly once.
#[tokio::test]
async fn pending_pages_run_across_chats_in_chat_then_seq_order() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    // No worker: nothing is delivered or parked, everything stays pending.
    let alice = Rest::new(&addr, Some(&env.token("alice")));
    let direct = alice.create_chat("direct", &["bob"]).await;
    let group = alice.create_chat("group", &["bob", "carol"]).await;
    let mut sent = Vec::new();
    for chat in [&direct, &group, &direct, &group] {
        let (status, body) = alice.post(&format!("/api/chats/{chat}/messages"), json!({ "content": "hi" })).await;
        assert_eq!(status.as_u16(), 201, "{body}");
        sent.push((body["chatId"].as_str().unwrap().to_owned(), body["seq"].as_i64().unwrap()));
    }
    // Bob's own message is not pending for him.
    let (status, _) = Rest::new(&addr, Some(&env.token("bob"))).post(&format!("/api/chats/{group}/messages"), json!({ "content": "mine" })).await;
    assert_eq!(status.as_u16(), 201);

    let admin = Rest::new(&env.api(0).admin_addr.to_string(), Some(&env.admin_token("ops")));
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let (status, page) = admin.get(&format!("/admin/users/bob/pending?limit=1&after={after}")).await;
        assert_eq!(status.as_u16(), 200, "{page}");
        assert_eq!((page["pending"].as_i64(), page["parked"].as_i64()), (Some(4), Some(0)));
        for message in page["messages"].as_array().unwrap() {
            seen.push((message["chatId"].as_str().unwrap().to_owned(), message["seq"].as_i64().unwrap()));
        }
        match page["nextAfter"].as_str() {
            Some(next) => after = next.to_owned(),
            None => break,
        }
        assert!(seen.len() <= 4, "{seen:?}");
    }
    let mut expected = sent.clone();
    expected.sort();
    assert_eq!(seen, expected);
    assert_eq!(admin.get("/admin/users/bob/parked").await.1["messages"], json!([]));
    // Carol is in the group only (Alice's two and Bob's one); Alice lacks Bob's one.
    assert_eq!(admin.get("/admin/users/carol/pending").await.1["pending"], 3);
    assert_eq!(admin.get("/admin/users/alice/pending").await.1["pending"], 1);
    let backlog = admin.get("/admin/backlog").await.1;
    assert_eq!((backlog["undelivered"].as_i64(), backlog["parked"].as_i64()), (Some(8), Some(0)), "{backlog}");
    assert_eq!(backlog["users"][0]["userId"], "bob");
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
