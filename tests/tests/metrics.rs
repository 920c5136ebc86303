//! `/metrics` on the API node and the worker: the guide's "Metrics to Track"
//! and the operator's series, checked after real traffic.

use courier_tests::{
    Rest, TestEnv, WsClient, eventually,
    ops::{metric, scrape},
};

/// Alice sends two messages to Carol (online: live) and three to Bob (offline:
/// retried, parked, then drained when he connects). Both /metrics show it.
#[tokio::test]
async fn metrics_show_deliveries_latency_backlog_and_drains() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    let worker = env.start_worker().await;
    let worker_addr = env.worker(worker).metrics_addr.to_string();
    let alice_rest = Rest::new(&addr, Some(&env.token("alice")));
    let with_bob = alice_rest.create_chat("direct", &["bob"]).await;
    let with_carol = alice_rest.create_chat("direct", &["carol"]).await;
    let mut alice = WsClient::connect(&addr, &env.token("alice")).await.unwrap();
    let mut carol = WsClient::connect(&addr, &env.token("carol")).await.unwrap();
    carol.wait_event("sync:done").await;

    for i in 0..2 {
        alice.send_message(&with_carol, &format!("live {i}")).await;
    }
    carol.receive_messages(2).await;
    for i in 0..3 {
        alice.send_message(&with_bob, &format!("offline {i}")).await;
    }
    eventually("Bob's three messages parked", || async { (env.parked_count("bob").await == 3).then_some(()) }).await;

    // The backlog gauges, refreshed by the worker, before Bob comes back.
    eventually("the backlog gauges", || async {
        let text = scrape(&worker_addr).await;
        let undelivered = metric(&text, "courier_undelivered_messages", &[])?;
        let parked = metric(&text, "courier_parked_messages", &[])?;
        (undelivered == 3.0 && parked == 3.0).then_some(())
    })
    .await;

    let mut bob = WsClient::connect(&addr, &env.token("bob")).await.unwrap();
    bob.receive_messages(3).await;
    bob.wait_event("sync:done").await;

    // The API node: accepted, delivered (acked), latency live and drained, connections.
    let api = eventually("the API node's delivery series", || async {
        let text = scrape(&addr).await;
        let delivered = metric(&text, "courier_deliveries_total", &[("outcome", "delivered")])?;
        let live = metric(&text, "courier_delivery_latency_seconds_count", &[("path", "live")])?;
        let drained = metric(&text, "courier_delivery_latency_seconds_count", &[("path", "drained")])?;
        (delivered >= 5.0 && live >= 2.0 && drained >= 3.0).then_some(text)
    })
    .await;
    assert_eq!(metric(&api, "courier_messages_accepted_total", &[]), Some(5.0));
    assert_eq!(metric(&api, "courier_connections_open", &[]), Some(3.0));
    assert!(metric(&api, "courier_connections_opened_total", &[]).unwrap() >= 3.0);
    assert!(metric(&api, "courier_db_connections_opened_total", &[]).unwrap() >= 1.0);
    // Five sends were stored, on connections that keep plans: one at least is open.
    let kept_pool = |state| metric(&api, "courier_db_pool_connections", &[("pool", "kept"), ("state", state)]).unwrap_or(0.0);
    assert!(kept_pool("idle") + kept_pool("in_use") >= 1.0, "no kept-plans connection in the API's /metrics:\n{api}");
    assert!(metric(&api, "courier_db_pool_connections", &[("pool", "main"), ("state", "idle")]).is_some(), "{api}");
    for series in ["courier_outbox_pending", "courier_outbox_oldest_age_seconds", "courier_broker_reconnects_total", "courier_rate_limited_total"] {
        assert!(metric(&api, series, &[]).is_some(), "{series} missing from the API's /metrics:\n{api}");
    }
    assert!(api.contains("courier_delivery_latency_seconds_bucket{path=\"drained\",le=\"0.5\"}"), "{api}");

    // The worker: pushed, retried per tier, parked, drains.
    let text = eventually("the worker's delivery series", || async {
        let text = scrape(&worker_addr).await;
        let drains = metric(&text, "courier_drains_total", &[("result", "complete")])?;
        let undelivered = metric(&text, "courier_undelivered_messages", &[])?;
        (drains >= 3.0 && undelivered == 0.0).then_some(text)
    })
    .await;
    assert!(metric(&text, "courier_deliveries_total", &[("outcome", "pushed")]).unwrap() >= 2.0);
    assert!(metric(&text, "courier_deliveries_total", &[("outcome", "retried")]).unwrap() >= 9.0, "3 messages × 3 tiers");
    assert_eq!(metric(&text, "courier_deliveries_total", &[("outcome", "parked")]), Some(3.0));
    assert_eq!(metric(&text, "courier_delivery_retries_total", &[("tier", "200ms")]), Some(3.0));
    assert!(metric(&text, "courier_drained_messages_total", &[]).unwrap() >= 3.0);
    assert!(metric(&text, "courier_drain_duration_seconds_count", &[]).unwrap() >= 3.0);
    assert_eq!(metric(&text, "courier_dead_letters", &[]), Some(0.0));
    assert!(metric(&text, "courier_broker_reconnects_total", &[]).is_some());
    for pool in ["main", "kept"] {
        let series = metric(&text, "courier_db_pool_connections", &[("pool", pool), ("state", "in_use")]);
        assert!(series.is_some(), "the worker's {pool} pool is missing from /metrics:\n{text}");
    }
    env.cleanup().await;
}

/// Requests over the per-user rate limit are refused and counted.
#[tokio::test]
async fn rate_limit_rejections_are_counted() {
    let mut env = TestEnv::new().await;
    let mut config = env.api_config();
    config.rate_limit_per_second = 1;
    config.rate_limit_burst = 2;
    let addr = env.start_api_with(config).await;
    let rest = Rest::new(&addr, Some(&env.token("alice")));
    let mut refused = 0;
    for _ in 0..6 {
        if rest.get("/api/chats").await.0.as_u16() == 429 {
            refused += 1;
        }
    }
    assert!(refused >= 3, "only {refused} of 6 refused");
    let text = scrape(&addr).await;
    assert_eq!(metric(&text, "courier_rate_limited_total", &[]), Some(f64::from(refused)));
    env.cleanup().await;
}
