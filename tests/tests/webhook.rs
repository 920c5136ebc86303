//! The offline push webhook, against a local HTTP receiver: signed, coalesced
//! per user and quiet period, retried with backoff, never in delivery's way.

use std::time::Duration;

use courier_tests::{
    Rest, TestEnv, WsClient, eventually,
    ops::{WebhookCall, WebhookReceiver},
};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

const SECRET: &str = "webhook-test-secret-0123456789";

fn assert_signed(call: &WebhookCall) {
    let header = call.headers.get("x-courier-signature").expect("signature header").to_str().unwrap();
    let hex = header.strip_prefix("sha256=").expect("sha256= prefix");
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(&call.body);
    mac.verify_slice(&hex::decode(hex).unwrap()).expect("signature matches the body");
    assert_eq!(call.headers.get("content-type").unwrap(), "application/json");
}

async fn start(env: &mut TestEnv, receiver: &WebhookReceiver, quiet: Duration) -> String {
    let addr = env.start_api().await;
    let mut config = env.worker_config();
    config.webhook.push_webhook_url = Some(receiver.url());
    config.webhook.push_webhook_secret = SECRET.into();
    config.webhook.push_webhook_quiet_period = quiet;
    env.start_worker_with(config).await;
    addr
}

/// Three messages for offline Bob make one notice (after one failed attempt,
/// retried), signed, with the count and the newest sender; Carol's own notice
/// afterwards shows Bob's were all considered and coalesced.
#[tokio::test]
async fn offline_recipient_triggers_one_signed_notice_per_quiet_period() {
    let receiver = WebhookReceiver::start(&[503]).await;
    let mut env = TestEnv::new().await;
    let addr = start(&mut env, &receiver, Duration::from_secs(3600)).await;
    let alice = Rest::new(&addr, Some(&env.token("alice")));
    let with_bob = alice.create_chat("direct", &["bob"]).await;
    let with_carol = alice.create_chat("direct", &["carol"]).await;

    for i in 0..3 {
        let (status, _) = alice.post(&format!("/api/chats/{with_bob}/messages"), json!({ "content": format!("m{i}") })).await;
        assert_eq!(status.as_u16(), 201);
    }
    // Every job has been through the worker (first attempt included) once all are parked.
    eventually("Bob's messages parked", || async { (env.parked_count("bob").await == 3).then_some(()) }).await;
    let (status, _) = alice.post(&format!("/api/chats/{with_carol}/messages"), json!({ "content": "hi carol" })).await;
    assert_eq!(status.as_u16(), 201);

    let calls = eventually("Bob's notice (retried) and Carol's", || async {
        let calls = receiver.calls();
        let ok = calls.iter().filter(|c| c.status == 200).count();
        (ok >= 2).then_some(calls)
    })
    .await;
    let for_bob: Vec<&WebhookCall> = calls.iter().filter(|c| c.json()["userId"] == "bob").collect();
    assert_eq!(for_bob.len(), 2, "one failed attempt, one retry, nothing more: {calls:?}");
    assert_eq!((for_bob[0].status, for_bob[1].status), (503, 200));
    assert_eq!(for_bob[0].body, for_bob[1].body, "a retry sends the same notice");
    for call in &calls {
        assert_signed(call);
    }
    let notice = for_bob[1].json();
    assert_eq!(notice["event"], "offline_messages");
    assert!((1..=3).contains(&notice["pending"].as_i64().unwrap()), "{notice}");
    assert_eq!((notice["newestSenderId"].as_str(), notice["newestSenderName"].as_str()), (Some("alice"), Some("alice name")));
    let for_carol: Vec<&WebhookCall> = calls.iter().filter(|c| c.json()["userId"] == "carol").collect();
    assert_eq!(for_carol.len(), 1);
    assert_eq!(for_carol[0].json()["pending"], 1);
    env.cleanup().await;
}

/// After the quiet period the next message notifies again, with everything pending.
/// Online recipients are never notified, and a webhook that is down does not delay delivery.
#[tokio::test]
async fn notices_resume_after_the_quiet_period_and_never_delay_delivery() {
    let receiver = WebhookReceiver::start(&[]).await;
    let mut env = TestEnv::new().await;
    let addr = start(&mut env, &receiver, Duration::from_secs(1)).await;
    let alice = Rest::new(&addr, Some(&env.token("alice")));
    let with_bob = alice.create_chat("direct", &["bob"]).await;
    let send = |text: &'static str| {
        let alice = alice.clone();
        let path = format!("/api/chats/{with_bob}/messages");
        async move { assert_eq!(alice.post(&path, json!({ "content": text })).await.0.as_u16(), 201) }
    };

    send("first").await;
    eventually("the first notice", || async { (receiver.calls().len() == 1).then_some(()) }).await;
    eventually("the first message parked", || async { (env.parked_count("bob").await == 1).then_some(()) }).await;
    // Wait out the quiet period as the database sees it, then send again.
    eventually("the quiet period over", || async {
        let over: bool = sqlx::query_scalar("SELECT notified_at < now() - interval '1 second' FROM push_notifications WHERE user_id = 'bob'")
            .fetch_one(&env.db)
            .await
            .unwrap();
        over.then_some(())
    })
    .await;
    send("second").await;
    let calls = eventually("the second notice", || async {
        let calls = receiver.calls();
        (calls.len() == 2).then_some(calls)
    })
    .await;
    assert_eq!(calls[1].json()["pending"], 2, "the notice counts everything pending");

    // Bob online: delivered live, no notice.
    let mut bob = WsClient::connect(&addr, &env.token("bob")).await.unwrap();
    bob.receive_messages(2).await;
    bob.wait_event("sync:done").await;
    eventually("the quiet period over again", || async {
        let over: bool = sqlx::query_scalar("SELECT notified_at < now() - interval '1 second' FROM push_notifications WHERE user_id = 'bob'")
            .fetch_one(&env.db)
            .await
            .unwrap();
        over.then_some(())
    })
    .await;
    send("live").await;
    bob.receive_messages(1).await;
    assert_eq!(receiver.calls().len(), 2, "no notice for an online recipient");
    env.cleanup().await;
}
