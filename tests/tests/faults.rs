//! Nothing lost, nothing doubled: crashes, outages and misbehaving clients.
//!
//! After each fault every message sent before, during and after it must reach
//! every recipient, in seq order, and statuses must be right. Each test prints
//! one `RELIABILITY {...}` line with its counts (docs/reliability.md collects them).
//! These tests run one at a time (see .config/nextest.toml); those that stop a
//! service use private PostgreSQL / RabbitMQ instances.

use std::{collections::HashSet, time::Duration};

use courier_tests::{PrivatePostgres, PrivateRabbit, PrivateRabbitCluster, Rest, Services, TestEnv, WsClient, eventually, test_retry};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// What a recipient saw on the wire, across all its connections.
#[derive(Default)]
struct Seen {
    /// Seqs in arrival order, per connection.
    connections: Vec<Vec<i64>>,
}

impl Seen {
    fn add(&mut self, received: &[Value]) {
        self.connections.push(received.iter().map(|m| m["seq"].as_i64().unwrap()).collect());
    }

    fn all(&self) -> impl Iterator<Item = i64> + '_ {
        self.connections.iter().flatten().copied()
    }

    fn unique(&self) -> HashSet<i64> {
        self.all().collect()
    }

    fn duplicates(&self) -> usize {
        self.all().count() - self.unique().len()
    }

    /// Per connection, seqs only go up: order holds on every socket.
    fn assert_in_order(&self) {
        for (i, seqs) in self.connections.iter().enumerate() {
            for pair in seqs.windows(2) {
                assert!(pair[0] < pair[1], "connection {i}: seq {} after {}", pair[1], pair[0]);
            }
        }
    }
}

async fn delivered_seqs(env: &TestEnv, user: &str) -> HashSet<i64> {
    // The test's own pool also sees a PostgreSQL restart: retry its connection errors.
    let seqs: Vec<i64> = eventually("a query", || async {
        sqlx::query_scalar("SELECT seq FROM message_status WHERE user_id = $1 AND status = 'delivered'")
            .bind(user)
            .fetch_all(&env.db)
            .await
            .ok()
    })
    .await;
    seqs.into_iter().collect()
}

async fn wait_all_delivered(env: &TestEnv, user: &str, count: usize) {
    eventually(&format!("{count} messages delivered to {user}"), || async {
        (delivered_seqs(env, user).await.len() == count).then_some(())
    })
    .await;
}

/// Receives until, together with `earlier`, every seq in 1..=total has arrived.
async fn receive_rest(client: &mut WsClient, earlier: &[Value], total: i64) -> Vec<Value> {
    let mut have: HashSet<i64> = earlier.iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    let mut received = Vec::new();
    while (1..=total).any(|seq| !have.contains(&seq)) {
        let message = client.receive_messages(1).await.remove(0);
        have.insert(message["seq"].as_i64().unwrap());
        received.push(message);
    }
    received
}

async fn message_count(env: &TestEnv) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM messages").fetch_one(&env.db).await.unwrap()
}

fn report(fault: &str, sent: usize, seen: &Seen, extra: Value) {
    let unique = seen.unique().len();
    let mut line = json!({
        "fault": fault,
        "sent": sent,
        "delivered": unique,
        "wire_duplicates": seen.duplicates(),
        "lost": sent - unique.min(sent),
    });
    if let (Some(line), Value::Object(extra)) = (line.as_object_mut(), extra) {
        line.extend(extra);
    }
    println!("RELIABILITY {line}");
}

/// Sends `count` messages over REST with `clientMsgId`s `{label}-{i}`; a failed
/// send is retried (same id) until accepted.
async fn send_all(addrs: Vec<String>, token: String, chat: String, label: String, range: std::ops::Range<usize>) -> usize {
    let mut failures = 0;
    for i in range {
        let body = json!({ "content": format!("{label} {i}"), "clientMsgId": format!("{label}-{i}") });
        let mut attempt = 0usize;
        loop {
            let rest = Rest::new(&addrs[attempt % addrs.len()], Some(&token));
            match rest.try_post(&format!("/api/chats/{chat}/messages"), body.clone()).await {
                Some((status, _)) if status.is_success() => break,
                other => {
                    failures += 1;
                    attempt += 1;
                    assert!(attempt < 500, "send {i} never accepted: {other:?}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    failures
}

#[tokio::test]
async fn a_worker_killed_with_1000_jobs_in_flight() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    // One consumer that takes 1,000 jobs at a time and routes 50 per batch.
    let mut first =
        env.worker_process("doomed", &["--delivery-prefetch=1000", "--delivery-consumers=1", "--delivery-batch=50"]).await;
    let chat = Rest::new(&addr, Some(&env.token("alice"))).create_chat("direct", &["bob"]).await;
    let mut bob = WsClient::connect(&addr, &env.token("bob")).await.unwrap();
    bob.wait_event("sync:done").await;

    // Frozen, the worker still receives its prefetch: all 1,000 jobs end up in
    // flight to it, none left ready in the queue.
    first.pause();
    let senders: Vec<_> = (0..4)
        .map(|s| tokio::spawn(send_all(vec![addr.clone()], env.token("alice"), chat.clone(), format!("s{s}"), 0..250)))
        .collect();
    for sender in senders {
        sender.await.unwrap();
    }
    let delivery_queue = env.topology().delivery();
    eventually("every job handed to the frozen worker", || async { (env.queue_depth(&delivery_queue).await == 0).then_some(()) }).await;
    first.resume();
    let mut received = bob.receive_messages(100).await;
    first.kill().await;
    let in_flight_at_kill = 1000 - delivered_seqs(&env, "bob").await.len();
    let _second = env.worker_process("survivor", &[]).await;
    received.extend(receive_rest(&mut bob, &received, 1000).await);

    let mut seen = Seen::default();
    seen.add(&received);
    seen.assert_in_order();
    assert_eq!(seen.unique(), (1..=1000).collect::<HashSet<i64>>());
    wait_all_delivered(&env, "bob", 1000).await;
    bob.barrier().await;
    seen.add(&bob.drain_pending("message:receive").into_iter().map(|f| f["data"].clone()).collect::<Vec<_>>());
    assert_eq!(seen.duplicates(), 0, "the live connection filters redelivered jobs");
    report("worker SIGKILL", 1000, &seen, json!({ "jobs_in_flight_at_kill": in_flight_at_kill }));
    env.cleanup().await;
}

#[tokio::test]
async fn an_api_node_killed_with_clients_connected_and_jobs_in_its_outbox() {
    let mut env = TestEnv::new().await;
    env.start_worker().await;
    // Node A cannot reach RabbitMQ (a partition): everything it accepts stays
    // in its outbox, unconfirmed, and its clients wait for their drain.
    let mut node_a = env
        .api_process_waiting_for("node-a", &["--amqp-url=amqp://guest:guest@127.0.0.1:1/%2f", "--outbox-relay-after=60s"], "/healthz")
        .await;
    let addr_a = node_a.addr.clone().unwrap();
    let chat = Rest::new(&addr_a, Some(&env.token("alice"))).create_chat("group", &["bob", "carol"]).await;
    let bob_on_a = WsClient::connect(&addr_a, &env.token("bob")).await.unwrap();
    let carol_on_a = WsClient::connect(&addr_a, &env.token("carol")).await.unwrap();

    send_all(vec![addr_a.clone()], env.token("alice"), chat.clone(), "m".into(), 0..250).await;
    let outbox_at_kill: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox").fetch_one(&env.db).await.unwrap();
    node_a.kill().await;
    drop((bob_on_a, carol_on_a));

    // Node B comes up (its relay finds A's rows); the clients reconnect there and Alice carries on.
    let node_b = env.api_process("node-b", &[]).await;
    let addr_b = node_b.addr.clone().unwrap();
    let mut bob = WsClient::connect(&addr_b, &env.token("bob")).await.unwrap();
    let mut carol = WsClient::connect(&addr_b, &env.token("carol")).await.unwrap();
    send_all(vec![addr_b.clone()], env.token("alice"), chat.clone(), "m".into(), 250..500).await;
    let at_bob = receive_rest(&mut bob, &[], 500).await;
    let at_carol = receive_rest(&mut carol, &[], 500).await;
    let mut seen = Seen::default();
    seen.add(&at_bob);
    seen.assert_in_order();
    assert_eq!(seen.duplicates(), 0);
    let mut carol_seen = Seen::default();
    carol_seen.add(&at_carol);
    carol_seen.assert_in_order();
    assert_eq!(carol_seen.duplicates(), 0);
    wait_all_delivered(&env, "bob", 500).await;
    wait_all_delivered(&env, "carol", 500).await;
    eventually("the outbox relayed by node B", || async {
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox").fetch_one(&env.db).await.unwrap();
        (rows == 0).then_some(())
    })
    .await;
    assert_eq!(outbox_at_kill, 250, "node A's jobs were all unconfirmed when it died");
    report("API node SIGKILL (jobs in its outbox)", 500, &seen, json!({ "outbox_rows_at_kill": outbox_at_kill, "second_recipient_delivered": carol_seen.unique().len() }));
    env.cleanup().await;
}

#[tokio::test]
async fn an_api_node_killed_while_delivering() {
    let mut env = TestEnv::new().await;
    env.start_worker().await;
    let mut node_a = env.api_process("node-a", &[]).await;
    let node_b = env.api_process("node-b", &[]).await;
    let (addr_a, addr_b) = (node_a.addr.clone().unwrap(), node_b.addr.clone().unwrap());
    let chat = Rest::new(&addr_a, Some(&env.token("alice"))).create_chat("direct", &["bob"]).await;
    let mut bob = WsClient::connect(&addr_a, &env.token("bob")).await.unwrap();
    bob.wait_event("sync:done").await;

    let sender = tokio::spawn(send_all(vec![addr_a.clone(), addr_b.clone()], env.token("alice"), chat.clone(), "m".into(), 0..500));
    let mut before = bob.receive_messages(100).await;
    node_a.kill().await;
    let durably_delivered = delivered_seqs(&env, "bob").await;
    assert_eq!(bob.wait_closed().await, None, "a killed node sends no close frame");
    // The client also has (and acknowledged) what arrived after the first 100 before the kill.
    before.extend(bob.drain_pending("message:receive").into_iter().map(|frame| frame["data"].clone()));

    let mut bob = WsClient::connect(&addr_b, &env.token("bob")).await.unwrap();
    let retried = sender.await.unwrap();
    assert_eq!(message_count(&env).await, 500, "each clientMsgId stored once");
    let after = receive_rest(&mut bob, &before, 500).await;
    let mut seen = Seen::default();
    seen.add(&before);
    seen.add(&after);
    seen.assert_in_order();
    assert_eq!(seen.unique(), (1..=500).collect::<HashSet<i64>>());
    // Acks written before the crash hold; acks still in flight are redelivered (the client dedupes by messageId).
    for message in &after {
        let seq = message["seq"].as_i64().unwrap();
        assert!(!durably_delivered.contains(&seq), "seq {seq} was acknowledged and written, yet came again");
    }
    wait_all_delivered(&env, "bob", 500).await;
    report(
        "API node SIGKILL (while delivering)",
        500,
        &seen,
        json!({ "acks_written_before_kill": durably_delivered.len(), "send_attempts_refused": retried }),
    );
    env.cleanup().await;
}

#[tokio::test]
async fn rabbitmq_down_for_ten_seconds() {
    let rabbit = PrivateRabbit::start().await;
    let services = Services { amqp: rabbit.url(), ..Services::default() };
    let mut env = TestEnv::on(services, test_retry()).await;
    let addr = env.start_api().await;
    env.start_worker().await;
    let chat = Rest::new(&addr, Some(&env.token("alice"))).create_chat("direct", &["bob"]).await;
    let mut bob = WsClient::connect(&addr, &env.token("bob")).await.unwrap();
    bob.wait_event("sync:done").await;
    let mut alice = WsClient::connect(&addr, &env.token("alice")).await.unwrap();
    for i in 0..50 {
        alice.send_message(&chat, &format!("before {i}")).await;
    }
    let mut received = bob.receive_messages(50).await;

    rabbit.stop().await;
    let stopped = tokio::time::Instant::now();
    let attempts_before = (env.api(0).broker().connect_attempts(), env.worker(0).broker().connect_attempts());
    let rest = Rest::new(&addr, None);
    let not_ready = eventually("/readyz to say not ready", || {
        let rest = rest.clone();
        async move {
            let (status, body) = rest.get("/readyz").await;
            (status.as_u16() == 503).then_some(body)
        }
    })
    .await;
    assert_eq!(not_ready["rabbitmq"], "unavailable");
    assert_eq!(not_ready["postgres"], "ok");
    // Sends during the outage are accepted: they wait in the outbox.
    for i in 0..50 {
        alice.send_message(&chat, &format!("during {i}")).await;
    }
    // The outage lasts ten seconds, as the fault says.
    tokio::time::sleep_until(stopped + Duration::from_secs(10)).await;
    let attempts = (
        env.api(0).broker().connect_attempts() - attempts_before.0,
        env.worker(0).broker().connect_attempts() - attempts_before.1,
    );
    rabbit.start_again().await;
    eventually("/readyz to say ready again", || {
        let rest = rest.clone();
        async move { rest.get("/readyz").await.0.is_success().then_some(()) }
    })
    .await;
    for i in 0..50 {
        alice.send_message(&chat, &format!("after {i}")).await;
    }
    received.extend(bob.receive_messages(100).await);
    let mut seen = Seen::default();
    seen.add(&received);
    seen.assert_in_order();
    assert_eq!(seen.unique(), (1..=150).collect::<HashSet<i64>>());
    wait_all_delivered(&env, "bob", 150).await;
    bob.barrier().await;
    assert!(bob.drain_pending("message:receive").is_empty(), "nothing twice on the connection that stayed");
    // Backoff, not a busy loop: a handful of attempts in ten seconds.
    assert!(attempts.0 <= 15 && attempts.1 <= 15, "reconnect attempts during the outage: {attempts:?}");
    // The operator sees the outage in both processes' /metrics.
    let worker_metrics = env.worker(0).metrics_addr.to_string();
    for target in [addr.as_str(), worker_metrics.as_str()] {
        let text = courier_tests::ops::scrape(target).await;
        let reconnects = courier_tests::ops::metric(&text, "courier_broker_reconnects_total", &[]).unwrap_or(0.0);
        assert!(reconnects >= 1.0, "{target}: courier_broker_reconnects_total = {reconnects}");
    }
    report("RabbitMQ down 10 s", 150, &seen, json!({ "reconnect_attempts_api": attempts.0, "reconnect_attempts_worker": attempts.1 }));
    drop(alice);
    env.cleanup().await;
}

#[tokio::test]
async fn the_delivery_queue_leader_of_a_3_node_cluster_killed() {
    let cluster = PrivateRabbitCluster::start(3).await;
    let services = Services { amqp: cluster.url(), ..Services::default() };
    let mut env = TestEnv::on(services, test_retry()).await;
    let mut api_config = env.api_config();
    api_config.common.broker_replicated = true;
    let addr = env.start_api_with(api_config).await;
    let mut worker_config = env.worker_config();
    worker_config.common.broker_replicated = true;
    env.start_worker_with(worker_config).await;

    // Every durable queue is a quorum queue, replicated over the three nodes.
    let topology = env.topology();
    let types = cluster.nodes[0].ctl(&["list_queues", "name", "type", "--no-table-headers", "--quiet"]).await.unwrap();
    let (_, durable_queues) = topology.durable_names();
    for queue in &durable_queues {
        let line = types.lines().find(|line| line.split_whitespace().next() == Some(queue.as_str()));
        assert!(line.is_some_and(|l| l.ends_with("quorum")), "{queue} is not a quorum queue: {types}");
    }

    let chat = Rest::new(&addr, Some(&env.token("alice"))).create_chat("direct", &["bob"]).await;
    let mut alice = WsClient::connect(&addr, &env.token("alice")).await.unwrap();
    let mut bob = WsClient::connect(&addr, &env.token("bob")).await.unwrap();
    bob.wait_event("sync:done").await;
    for i in 0..20 {
        alice.send_message(&chat, &format!("live {i}")).await;
    }
    let mut seen = Seen::default();
    seen.add(&bob.receive_messages(20).await);
    // Bob goes offline: the next jobs wait in the retry tiers (quorum queues too).
    bob.close().await;
    for i in 0..20 {
        alice.send_message(&chat, &format!("while away {i}")).await;
    }

    let delivery = topology.delivery();
    let leader = eventually("the delivery queue to have a leader", || cluster.leader_of(&delivery)).await;
    cluster.nodes[leader].kill().await;
    let killed = tokio::time::Instant::now();
    // Sends go on: the API's link fails over to another node if it was on the dead one.
    for i in 0..20 {
        alice.send_message(&chat, &format!("after the kill {i}")).await;
    }
    let new_leader = eventually("a new leader on another node", || async {
        cluster.leader_of(&delivery).await.filter(|&node| node != leader)
    })
    .await;
    let failover = killed.elapsed();

    let mut bob = WsClient::connect(&addr, &env.token("bob")).await.unwrap();
    let earlier: Vec<Value> = (1..=20).map(|seq| json!({ "seq": seq })).collect();
    let rest = receive_rest(&mut bob, &earlier, 60).await;
    seen.add(&rest);
    seen.assert_in_order();
    assert_eq!(seen.unique(), (1..=60).collect::<HashSet<i64>>());
    wait_all_delivered(&env, "bob", 60).await;
    report(
        "delivery queue leader of a 3-node cluster killed",
        60,
        &seen,
        json!({ "new_leader_after_seconds": failover.as_secs_f64(), "old_leader": leader, "new_leader": new_leader }),
    );
    drop(alice);
    cluster.nodes[leader].start_again().await;
    env.cleanup().await;
}

#[tokio::test]
async fn postgresql_restarted() {
    let postgres = PrivatePostgres::start().await;
    let services = Services { postgres: postgres.url(), ..Services::default() };
    let mut env = TestEnv::on(services, test_retry()).await;
    let addr = env.start_api().await;
    env.start_worker().await;
    let chat = Rest::new(&addr, Some(&env.token("alice"))).create_chat("direct", &["bob"]).await;
    let mut bob = WsClient::connect(&addr, &env.token("bob")).await.unwrap();
    bob.wait_event("sync:done").await;
    let mut alice = WsClient::connect(&addr, &env.token("alice")).await.unwrap();
    let send = |i: usize| json!({"chatId": chat, "content": format!("m{i}"), "clientMsgId": format!("k{i}")});
    for i in 0..20 {
        alice.request("message:send", send(i)).await.unwrap();
    }
    let mut received = bob.receive_messages(20).await;
    let opened = |text: &str| courier_tests::ops::metric(text, "courier_db_connections_opened_total", &[]).unwrap_or(0.0);
    let opened_before = opened(&courier_tests::ops::scrape(&addr).await);

    postgres.stop().await;
    // Sends fail with a retryable code while PostgreSQL is down.
    let mut failed = Vec::new();
    for i in 20..23 {
        let error = alice.request("message:send", send(i)).await.expect_err("no database, no send");
        assert_eq!(error["code"], "unavailable", "{error}");
        failed.push(i);
    }
    postgres.start_again().await;
    // The client retries with the same clientMsgIds; stale pooled connections may fail once more.
    let mut retries = 0;
    for i in failed.into_iter().chain(23..40) {
        loop {
            match alice.request("message:send", send(i)).await {
                Ok(_) => break,
                Err(error) => {
                    assert_eq!(error["code"], "unavailable", "{error}");
                    retries += 1;
                    assert!(retries < 100, "sends keep failing after the restart");
                }
            }
        }
    }
    received.extend(bob.receive_messages(20).await);
    let mut seen = Seen::default();
    seen.add(&received);
    seen.assert_in_order();
    assert_eq!(seen.unique(), (1..=40).collect::<HashSet<i64>>());
    wait_all_delivered(&env, "bob", 40).await;
    let (messages, statuses, last_seq): (i64, i64, i64) = eventually("counts", || async {
        sqlx::query_as(
            "SELECT (SELECT count(*) FROM messages), (SELECT count(*) FROM message_status), (SELECT max(last_seq) FROM chats)",
        )
        .fetch_one(&env.db)
        .await
        .ok()
    })
    .await;
    assert_eq!((messages, statuses, last_seq), (40, 40, 40), "one message per clientMsgId, nothing half-written");
    // The operator sees the reconnects: the pool replaced its connections.
    let opened_after = opened(&courier_tests::ops::scrape(&addr).await);
    assert!(opened_after > opened_before, "courier_db_connections_opened_total {opened_before} → {opened_after}");
    report("PostgreSQL restart", 40, &seen, json!({ "sends_refused_during_outage": 3, "retries_after_restart": retries }));
    drop(postgres);
    env.cleanup().await;
}

#[tokio::test]
async fn misbehaving_clients_do_not_hurt_others() {
    let mut env = TestEnv::new().await;
    let mut config = env.api_config();
    config.ack_timeout = Duration::from_millis(500);
    config.write_timeout = Duration::from_secs(2);
    let addr = env.start_api_with(config).await;
    env.start_worker().await;
    let chat = Rest::new(&addr, Some(&env.token("alice"))).create_chat("group", &["lazy", "liar", "slow", "good"]).await;

    let mut lazy = WsClient::connect_without_acks(&addr, &env.token("lazy")).await.unwrap(); // never acks
    let mut liar = WsClient::connect(&addr, &env.token("liar")).await.unwrap(); // acks frames it never got
    let mut good = WsClient::connect(&addr, &env.token("good")).await.unwrap();
    // `slow` connects and then stops reading its socket altogether.
    let url = format!("ws://{addr}/ws?token={}", env.token("slow"));
    let (slow_socket, _) = tokio_tungstenite::connect_async(url.as_str()).await.unwrap();
    let (mut slow_sink, slow_stream) = slow_socket.split();
    for client in [&mut lazy, &mut liar, &mut good] {
        client.wait_event("sync:done").await;
    }
    for id in [0u64, 5_000, 1 << 40] {
        liar.send_frame(json!({"event": "ack", "id": id})).await;
    }

    // Big messages fill the slow client's socket buffers, then its send queue.
    let mut alice = WsClient::connect(&addr, &env.token("alice")).await.unwrap();
    let big = "x".repeat(60 * 1024);
    for _ in 0..150 {
        alice.send_message(&chat, &big).await;
    }
    let at_good = good.receive_messages(150).await;
    let at_liar = liar.receive_messages(150).await;
    wait_all_delivered(&env, "good", 150).await;
    wait_all_delivered(&env, "liar", 150).await;
    // The slow reader was cut off, not buffered without bound.
    eventually("the slow connection closed by the server", || async {
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM connections WHERE user_id = 'slow'").fetch_one(&env.db).await.unwrap();
        (rows == 0).then_some(())
    })
    .await;
    let frames: Vec<_> = slow_stream.take_while(|m| futures::future::ready(m.is_ok())).collect().await;
    let close_code = frames.iter().rev().find_map(|m| match m {
        Ok(Message::Close(Some(frame))) => Some(u16::from(frame.code)),
        _ => None,
    });
    let _ = slow_sink.close().await;
    // The lazy client's messages are resent, and stay undelivered.
    let lazy_first = lazy.wait_event("message:receive").await;
    let resent = lazy.wait_for("a resend", |f| f["event"] == "message:receive" && f["id"] == lazy_first["id"]).await;
    assert_eq!(resent["data"]["messageId"], lazy_first["data"]["messageId"]);
    assert!(delivered_seqs(&env, "lazy").await.is_empty());
    // Nothing is lost for the slow one: it gets everything once it reads again.
    let mut slow = WsClient::connect(&addr, &env.token("slow")).await.unwrap();
    let at_slow = slow.receive_messages(150).await;
    wait_all_delivered(&env, "slow", 150).await;

    let mut seen = Seen::default();
    seen.add(&at_good);
    seen.assert_in_order();
    let mut slow_seen = Seen::default();
    slow_seen.add(&at_slow);
    slow_seen.assert_in_order();
    assert_eq!(slow_seen.unique().len(), 150);
    assert_eq!(at_liar.len(), 150);
    report(
        "misbehaving clients",
        150,
        &seen,
        json!({ "slow_reader_close_code": close_code, "slow_reader_received_after_reconnect": slow_seen.unique().len(),
                "never_acking_client_delivered": 0 }),
    );
    env.cleanup().await;
}

#[tokio::test]
async fn sigterm_stops_api_and_worker_gracefully() {
    let env = TestEnv::new().await;
    let mut node_a = env.api_process("node-a", &[]).await;
    let node_b = env.api_process("node-b", &[]).await;
    let mut worker_a = env.worker_process("worker-a", &[]).await;
    let _worker_b = env.worker_process("worker-b", &[]).await;
    let (addr_a, addr_b) = (node_a.addr.clone().unwrap(), node_b.addr.clone().unwrap());
    let chat = Rest::new(&addr_a, Some(&env.token("alice"))).create_chat("direct", &["bob"]).await;
    let mut bob = WsClient::connect(&addr_a, &env.token("bob")).await.unwrap();
    bob.wait_event("sync:done").await;

    let sender = tokio::spawn(send_all(vec![addr_a.clone(), addr_b.clone()], env.token("alice"), chat.clone(), "m".into(), 0..400));
    let mut first = bob.receive_messages(50).await;
    let worker_clean = worker_a.terminate(Duration::from_secs(20)).await;
    first.extend(bob.receive_messages(50).await);
    let api_clean = node_a.terminate(Duration::from_secs(20)).await;
    let close_code = bob.wait_closed().await;
    assert_eq!(close_code, Some(1012), "told to reconnect");
    // Messages that arrived while waiting for the close were received (and
    // acked) too: they need not come again.
    first.extend(bob.drain_pending("message:receive").into_iter().map(|frame| frame["data"].clone()));
    // Everything received before the close was acknowledged and written before the node exited.
    let durably_delivered = delivered_seqs(&env, "bob").await;

    let mut bob = WsClient::connect(&addr_b, &env.token("bob")).await.unwrap();
    sender.await.unwrap();
    let second = receive_rest(&mut bob, &first, 400).await;
    let mut seen = Seen::default();
    seen.add(&first);
    seen.add(&second);
    seen.assert_in_order();
    assert_eq!(seen.unique(), (1..=400).collect::<HashSet<i64>>());
    for message in &second {
        let seq = message["seq"].as_i64().unwrap();
        assert!(!durably_delivered.contains(&seq), "seq {seq} came again after a graceful stop");
    }
    assert!(worker_clean, "the worker exited cleanly on SIGTERM");
    assert!(api_clean, "the API node exited cleanly on SIGTERM");
    wait_all_delivered(&env, "bob", 400).await;
    let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox").fetch_one(&env.db).await.unwrap();
    report("SIGTERM api + worker", 400, &seen, json!({ "close_code": close_code, "outbox_left": outbox }));
    env.cleanup().await;
}
