//! Order and exactly-once with several workers and API nodes: live, drained,
//! and mixed, through worker crashes and reconnects to another node.

use std::collections::HashSet;

use courier_tests::{Rest, TestEnv, WsClient, eventually};
use serde_json::{Value, json};

/// Seqs of `message:receive` payloads of one chat, in arrival order.
fn seqs(received: &[Value], chat: &str) -> Vec<i64> {
    received.iter().filter(|m| m["chatId"] == chat).map(|m| m["seq"].as_i64().unwrap()).collect()
}

fn assert_strictly_increasing(seqs: &[i64], who: &str) {
    for pair in seqs.windows(2) {
        assert!(pair[0] < pair[1], "{who}: seq {} arrived after {}", pair[1], pair[0]);
    }
}

async fn delivered_count(env: &TestEnv, user: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM message_status WHERE user_id = $1 AND status = 'delivered'")
        .bind(user)
        .fetch_one(&env.db)
        .await
        .unwrap()
}

/// Sends `count` messages as `user` over REST from a background task.
fn send_in_background(addr: &str, token: String, chat: String, count: usize, label: &'static str) -> tokio::task::JoinHandle<()> {
    let rest = Rest::new(addr, Some(&token));
    tokio::spawn(async move {
        for i in 0..count {
            let (status, body) = rest.post(&format!("/api/chats/{chat}/messages"), json!({"content": format!("{label} {i}")})).await;
            assert!(status.is_success(), "send failed: {status} {body}");
        }
    })
}

#[tokio::test]
async fn live_messages_arrive_in_seq_order_with_two_workers_and_two_nodes() {
    let mut env = TestEnv::new().await;
    let node_a = env.start_api().await;
    let node_b = env.start_api().await;
    env.start_worker().await;
    env.start_worker().await;
    let chat = Rest::new(&node_a, Some(&env.token("alice"))).create_chat("group", &["bob", "carol", "dave"]).await;
    let mut bob = WsClient::connect(&node_b, &env.token("bob")).await.unwrap();
    let mut carol = WsClient::connect(&node_a, &env.token("carol")).await.unwrap();
    bob.wait_event("sync:done").await;
    carol.wait_event("sync:done").await;

    // Two senders at once, on both nodes: seqs interleave.
    let alice = send_in_background(&node_a, env.token("alice"), chat.clone(), 150, "alice");
    let dave = send_in_background(&node_b, env.token("dave"), chat.clone(), 150, "dave");
    alice.await.unwrap();
    dave.await.unwrap();

    let at_bob = bob.receive_messages(300).await;
    let bob_seqs = seqs(&at_bob, &chat);
    assert_strictly_increasing(&bob_seqs, "bob");
    assert_eq!(bob_seqs.len(), 300);
    let at_carol = carol.receive_messages(300).await;
    assert_strictly_increasing(&seqs(&at_carol, &chat), "carol");
    eventually("all delivered", || async { (delivered_count(&env, "bob").await == 300).then_some(()) }).await;
    bob.barrier().await;
    assert!(bob.drain_pending("message:receive").is_empty(), "duplicates at bob");
    env.cleanup().await;
}

#[tokio::test]
async fn messages_sent_during_a_drain_do_not_overtake_it() {
    let mut env = TestEnv::new().await;
    let node_a = env.start_api().await;
    let node_b = env.start_api().await;
    let mut worker = env.worker_config();
    worker.drain_page = 50;
    worker.drain_window = 100;
    env.start_worker_with(worker.clone()).await;
    env.start_worker_with(worker).await;
    let chat = Rest::new(&node_a, Some(&env.token("alice"))).create_chat("direct", &["bob"]).await;
    send_in_background(&node_a, env.token("alice"), chat.clone(), 600, "backlog").await.unwrap();

    // Bob connects (to the other node) while Alice keeps sending.
    let live = send_in_background(&node_a, env.token("alice"), chat.clone(), 200, "live");
    let mut bob = WsClient::connect(&node_b, &env.token("bob")).await.unwrap();
    let received = bob.receive_messages(800).await;
    live.await.unwrap();
    assert_eq!(seqs(&received, &chat), (1..=800).collect::<Vec<i64>>(), "every message once, in seq order");
    let sync = bob.wait_event("sync:done").await;
    assert!(sync["data"]["count"].as_u64().unwrap() >= 600);
    eventually("all delivered", || async { (delivered_count(&env, "bob").await == 800).then_some(()) }).await;
    bob.barrier().await;
    assert!(bob.drain_pending("message:receive").is_empty(), "duplicates at bob");
    env.cleanup().await;
}

#[tokio::test]
async fn a_worker_killed_mid_stream_loses_and_doubles_nothing() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    let first = env.start_worker().await;
    env.start_worker().await;
    let chat = Rest::new(&addr, Some(&env.token("alice"))).create_chat("direct", &["bob"]).await;
    let mut bob = WsClient::connect(&addr, &env.token("bob")).await.unwrap();
    bob.wait_event("sync:done").await;

    let sender = send_in_background(&addr, env.token("alice"), chat.clone(), 400, "m");
    let mut received = bob.receive_messages(50).await;
    env.kill_worker(first).await; // its unacked jobs go to the other worker
    received.extend(bob.receive_messages(350).await);
    sender.await.unwrap();
    assert_eq!(seqs(&received, &chat), (1..=400).collect::<Vec<i64>>());
    eventually("all delivered", || async { (delivered_count(&env, "bob").await == 400).then_some(()) }).await;
    bob.barrier().await;
    assert!(bob.drain_pending("message:receive").is_empty(), "duplicates at bob");
    env.cleanup().await;
}

#[tokio::test]
async fn the_recipient_reconnects_to_the_other_node_and_continues_where_it_left_off() {
    let mut env = TestEnv::new().await;
    let node_a = env.start_api().await;
    let node_b = env.start_api().await;
    env.start_worker().await;
    env.start_worker().await;
    let chat = Rest::new(&node_a, Some(&env.token("alice"))).create_chat("direct", &["bob"]).await;
    let mut bob = WsClient::connect(&node_b, &env.token("bob")).await.unwrap();
    bob.wait_event("sync:done").await;
    send_in_background(&node_a, env.token("alice"), chat.clone(), 100, "first").await.unwrap();
    let before = bob.receive_messages(100).await;
    eventually("first hundred delivered", || async { (delivered_count(&env, "bob").await == 100).then_some(()) }).await;
    bob.close().await;

    send_in_background(&node_a, env.token("alice"), chat.clone(), 100, "second").await.unwrap();
    let mut bob = WsClient::connect(&node_a, &env.token("bob")).await.unwrap();
    let after = bob.receive_messages(100).await;
    assert_eq!(seqs(&before, &chat), (1..=100).collect::<Vec<i64>>());
    assert_eq!(seqs(&after, &chat), (101..=200).collect::<Vec<i64>>(), "nothing acked comes again");
    env.cleanup().await;
}

#[tokio::test]
async fn two_connections_of_one_user_each_get_everything_once() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    env.start_worker().await;
    env.start_worker().await;
    let chat = Rest::new(&addr, Some(&env.token("alice"))).create_chat("direct", &["bob"]).await;
    send_in_background(&addr, env.token("alice"), chat.clone(), 50, "backlog").await.unwrap();

    let token = env.token("bob");
    let (phone, laptop) = tokio::join!(WsClient::connect(&addr, &token), WsClient::connect(&addr, &token));
    let (mut phone, mut laptop) = (phone.unwrap(), laptop.unwrap());
    let live = send_in_background(&addr, env.token("alice"), chat.clone(), 50, "live");
    for (name, device) in [("phone", &mut phone), ("laptop", &mut laptop)] {
        device.wait_event("sync:done").await;
        device.barrier().await;
        let got: Vec<Value> = device.drain_pending("message:receive").into_iter().map(|f| f["data"].clone()).collect();
        let got_seqs = seqs(&got, &chat);
        assert_strictly_increasing(&got_seqs, name);
        let unique: HashSet<i64> = got_seqs.iter().copied().collect();
        assert_eq!(unique.len(), got_seqs.len(), "{name} saw a message twice");
    }
    live.await.unwrap();
    eventually("all delivered", || async { (delivered_count(&env, "bob").await == 100).then_some(()) }).await;

    // Everything acked: a third connection gets nothing.
    let mut tablet = WsClient::connect(&addr, &env.token("bob")).await.unwrap();
    assert_eq!(tablet.wait_event("sync:done").await["data"]["count"], 0);
    tablet.barrier().await;
    assert!(tablet.drain_pending("message:receive").is_empty());
    env.cleanup().await;
}

#[tokio::test]
async fn order_and_exactly_once_do_not_depend_on_the_number_of_delivery_queues() {
    let mut env = TestEnv::new().await;
    env.delivery_queues = 3;
    let node_a = env.start_api().await;
    let node_b = env.start_api().await;
    env.start_worker().await;
    env.start_worker().await;
    let topology = env.topology();
    for queue in topology.delivery_queues() {
        assert!(env.queue_exists(&queue).await, "{queue} declared");
    }
    // Recipients spread over the shards (checked: with 3 queues these ids use at least two).
    let members: Vec<String> = (0..6).map(|i| format!("member{i}")).collect();
    let shards: HashSet<usize> = members.iter().map(|m| topology.shard_of(m)).collect();
    assert!(shards.len() >= 2, "{shards:?}");
    let refs: Vec<&str> = members.iter().map(String::as_str).collect();
    let chat = Rest::new(&node_a, Some(&env.token("alice"))).create_chat("group", &refs).await;

    // Half the members online (live path), half offline (their jobs walk their shard's retry tiers).
    let mut online = Vec::new();
    for member in &members[..3] {
        let mut client = WsClient::connect(&node_b, &env.token(member)).await.unwrap();
        client.wait_event("sync:done").await;
        online.push(client);
    }
    let alice = send_in_background(&node_a, env.token("alice"), chat.clone(), 60, "alice");
    let dave = send_in_background(&node_b, env.token("member5"), chat.clone(), 60, "member5");
    alice.await.unwrap();
    dave.await.unwrap();
    for (member, client) in members.iter().zip(online.iter_mut()) {
        let expected = if member == "member5" { 60 } else { 120 };
        let received = client.receive_messages(expected).await;
        let seqs = seqs(&received, &chat);
        assert_strictly_increasing(&seqs, member);
        assert_eq!(seqs.iter().collect::<HashSet<_>>().len(), expected, "{member}: each message once");
    }
    // The offline ones connect later, to either node: everything, in order, once.
    for (index, member) in members[3..].iter().enumerate() {
        let node = if index % 2 == 0 { &node_a } else { &node_b };
        let mut client = WsClient::connect(node, &env.token(member)).await.unwrap();
        let expected = if member == "member5" { 60 } else { 120 };
        let received = client.receive_messages(expected).await;
        let seqs = seqs(&received, &chat);
        assert_strictly_increasing(&seqs, member);
        assert_eq!(seqs.iter().collect::<HashSet<_>>().len(), expected, "{member}: each message once");
        client.barrier().await;
        assert!(client.drain_pending("message:receive").is_empty(), "{member}: nothing twice");
    }
    for member in &members {
        let expected = if member == "member5" { 60 } else { 120 };
        eventually(&format!("{member}'s messages marked delivered"), || async {
            (delivered_count(&env, member).await == expected).then_some(())
        })
        .await;
    }
    env.cleanup().await;
}
