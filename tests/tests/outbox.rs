//! No loss between commit and publish: the outbox, its relay, and poison jobs.

use courier_shared::{
    broker::PublishOptions,
    db::{self, chats, messages, outbox, users},
    job::DeliveryJob,
};
use courier_tests::{Rest, TestEnv, WsClient, eventually};
use serde_json::json;
use uuid::Uuid;

async fn outbox_rows(env: &TestEnv) -> i64 {
    outbox::pending(&env.db).await.unwrap()
}

/// Stores messages exactly as a send does, without publishing their jobs: the
/// state an API node leaves when it dies right after the commit.
async fn store_without_publishing(env: &TestEnv, chat: &str, sender: &str, count: usize) {
    let chat_id = Uuid::parse_str(chat).unwrap();
    let batch: Vec<messages::NewMessage> = (0..count)
        .map(|i| messages::NewMessage::message(chat_id, sender, None, format!("orphan {i}"), "text".into()))
        .collect();
    for result in messages::store_batch(&env.db, &batch).await.unwrap() {
        result.unwrap();
    }
}

/// The outbox deletes (and told marks) commit without waiting for the disk,
/// and only they: the setting ends with their transaction.
#[tokio::test]
async fn a_relaxed_transaction_does_not_wait_for_the_disk_and_leaves_the_connection_as_it_was() {
    let env = TestEnv::new().await;
    // One connection, so the transaction after it runs where it ran.
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&env.database_url).await.unwrap();
    let setting = "SELECT current_setting('synchronous_commit')";
    let mut tx = db::begin_relaxed(&pool).await.unwrap();
    assert_eq!(sqlx::query_scalar::<_, String>(setting).fetch_one(&mut *tx).await.unwrap(), "off");
    tx.commit().await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    assert_eq!(sqlx::query_scalar::<_, String>(setting).fetch_one(&mut *tx).await.unwrap(), "on");
    tx.commit().await.unwrap();
    pool.close().await;
    env.cleanup().await;
}

#[tokio::test]
async fn the_fast_path_publishes_and_clears_the_outbox() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    env.start_worker().await;
    let chat = Rest::new(&addr, Some(&env.token("alice"))).create_chat("group", &["bob", "carol"]).await;
    let mut alice = WsClient::connect(&addr, &env.token("alice")).await.unwrap();
    for i in 0..20 {
        alice.send_message(&chat, &format!("m{i}")).await;
    }
    eventually("the outbox to empty", || async { (outbox_rows(&env).await == 0).then_some(()) }).await;
    env.cleanup().await;
}

#[tokio::test]
async fn jobs_committed_but_never_published_are_relayed() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    env.start_worker().await;
    let chat = Rest::new(&addr, Some(&env.token("alice"))).create_chat("direct", &["bob"]).await;
    let mut bob = WsClient::connect(&addr, &env.token("bob")).await.unwrap();
    bob.wait_event("sync:done").await;

    store_without_publishing(&env, &chat, "alice", 5).await;
    assert_eq!(outbox_rows(&env).await, 5);
    let received = bob.receive_messages(5).await;
    let seqs: Vec<i64> = received.iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    eventually("the relay to clear the outbox", || async { (outbox_rows(&env).await == 0).then_some(()) }).await;
    env.cleanup().await;
}

#[tokio::test]
async fn concurrent_relays_share_the_work_without_overlap() {
    // No API node: its own relay would take part.
    let env = TestEnv::new().await;
    let broker = env.broker().await;
    let db = &env.db;
    users::ensure_exist(db, &["alice".to_owned()]).await.unwrap();
    let request = chats::NewChat { kind: chats::ChatKind::Group, name: None, members: vec!["bob".into()] };
    let (chat, _) = chats::create(db, "alice", request).await.unwrap();
    store_without_publishing(&env, &chat.id.to_string(), "alice", 300).await;

    let age = std::time::Duration::ZERO;
    let (a, b, c) = tokio::join!(
        courier_api::outbox::relay_once(db, &broker, age),
        courier_api::outbox::relay_once(db, &broker, age),
        courier_api::outbox::relay_once(db, &broker, age)
    );
    let relayed = a.unwrap() + b.unwrap() + c.unwrap();
    assert_eq!(relayed, 300, "each row relayed by exactly one relay");
    assert_eq!(outbox_rows(&env).await, 0);
    let jobs = env.queue_depth(&env.topology().delivery()).await;
    assert_eq!(jobs, 300, "one job per message and recipient, none twice");
    env.cleanup().await;
}

#[tokio::test]
async fn poison_jobs_are_dead_lettered_not_looped() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    env.start_worker().await;
    let topology = env.topology();
    let broker = env.broker().await;

    // A job for a message that does not exist, and a body that is not a job.
    let ghost = DeliveryJob { message_id: Uuid::now_v7(), recipient_id: "bob".into(), chat_id: Uuid::now_v7(), seq: 1 };
    broker.publish_json(&topology.delivery(), topology.job_key(), &ghost, PublishOptions::persistent()).await.unwrap();
    broker.publish(&topology.delivery(), topology.job_key(), b"{not a job", PublishOptions::persistent()).await.unwrap();

    // The worker moves dead letters from the dead queue into PostgreSQL, for the admin API.
    let reasons: Vec<String> = eventually("both in the dead letters", || async {
        let reasons: Vec<String> = sqlx::query_scalar("SELECT reason FROM dead_letters ORDER BY reason")
            .fetch_all(&env.db)
            .await
            .unwrap();
        (reasons.len() == 2).then_some(reasons)
    })
    .await;
    assert_eq!(reasons, ["message_gone", "rejected"]);
    assert_eq!(env.queue_depth(&topology.dead()).await, 0);
    assert_eq!(env.queue_depth(&topology.delivery()).await, 0);

    // The worker is not stuck: real messages still flow.
    let chat = Rest::new(&addr, Some(&env.token("alice"))).create_chat("direct", &["bob"]).await;
    let mut bob = WsClient::connect(&addr, &env.token("bob")).await.unwrap();
    let sent = Rest::new(&addr, Some(&env.token("alice"))).post(&format!("/api/chats/{chat}/messages"), json!({"content": "x"})).await.1;
    assert_eq!(bob.receive_messages(1).await[0]["messageId"], sent["messageId"]);
    env.cleanup().await;
}
