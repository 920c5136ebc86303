//! Hostile input: fuzzed frames and bodies, huge frames, floods, many connections.
//! Every bad input gets a typed error; the connection and the process keep working.

use std::collections::HashSet;

use courier_tests::{Rest, TestEnv, WsClient, eventually, rss_kib};
use futures::{StreamExt, future::join_all};
use proptest::{
    prelude::*,
    test_runner::{Config, TestRunner},
};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// Every code a client may see (docs/protocol.md).
const CODES: &[&str] = &[
    "unauthorized", "forbidden", "not_member", "not_found", "invalid_json", "invalid_frame", "unknown_event",
    "invalid_payload", "content_empty", "content_too_large", "invalid_message_type", "binary_not_supported",
    "payload_too_large", "client_msg_id_conflict", "conflict", "unknown_frame", "rate_limited", "unavailable",
    "not_sender", "window_passed", "already_deleted", "other_chat", "too_many_reactions",
];

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(150)
}

/// JSON-ish values: real shapes with wrong types, odd strings and deep nesting.
/// `ids` (a real chat's, a real message's) let some frames past the id
/// checks, into edits, deletes, reactions and replies of a real message.
fn json_value(ids: &[String]) -> impl Strategy<Value = Value> {
    let mut ids = ids.to_vec();
    ids.push("00000000-0000-0000-0000-000000000000".to_owned());
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        "\\PC{0,40}".prop_map(Value::from),
        prop::sample::select(ids).prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("chatId".to_owned()),
                    Just("content".to_owned()),
                    Just("messageType".to_owned()),
                    Just("clientMsgId".to_owned()),
                    Just("messageId".to_owned()),
                    Just("replyTo".to_owned()),
                    Just("emoji".to_owned()),
                    Just("forMe".to_owned()),
                    Just("upToSeq".to_owned()),
                    Just("type".to_owned()),
                    Just("members".to_owned()),
                    Just("userId".to_owned()),
                    "[a-z]{1,8}",
                ],
                inner,
                0..5,
            )
            .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn assert_typed(error: &Value, context: &str) {
    let code = error["code"].as_str().unwrap_or_else(|| panic!("{context}: error without a code: {error}"));
    assert!(CODES.contains(&code), "{context}: unknown code {code}");
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "{context}: error without a message");
}

#[test]
fn fuzzed_frames_get_typed_errors_and_the_connection_stays_usable() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (env, addr, chat, message) = runtime.block_on(async {
        let mut env = TestEnv::new().await;
        let addr = env.start_api().await;
        env.start_worker().await;
        let rest = Rest::new(&addr, Some(&env.token("alice")));
        let chat = rest.create_chat("direct", &["bob"]).await;
        let (status, sent) = rest.post(&format!("/api/chats/{chat}/messages"), json!({ "content": "a target" })).await;
        assert!(status.is_success(), "send: {status} {sent}");
        let message = sent["messageId"].as_str().expect("message id").to_owned();
        (env, addr, chat, message)
    });
    let ids = [chat.clone(), message];
    // The runner's closure is `Fn`: the client and the count live in cells.
    let client = std::cell::RefCell::new(runtime.block_on(WsClient::connect(&addr, &env.token("alice"))).unwrap());
    let events = prop_oneof![
        Just("message:send"),
        Just("message:read"),
        Just("message:delivered"),
        Just("message:edit"),
        Just("message:delete"),
        Just("message:react"),
        Just("message:unreact"),
        Just("typing:start"),
        Just("typing:stop"),
        Just("ping"),
        Just("ack"),
        Just("bogus"),
    ];
    let frame = prop_oneof![
        (events, json_value(&ids), prop_oneof![Just(Value::Null), any::<u32>().prop_map(Value::from), json_value(&ids)])
            .prop_map(|(event, data, id)| json!({"event": event, "data": data, "id": id}).to_string()),
        json_value(&ids).prop_map(|v| v.to_string()),
        "\\PC{0,100}",
    ];
    let mut runner = TestRunner::new(Config { cases: cases(), failure_persistence: None, ..Config::default() });
    let errors = std::cell::Cell::new(0);
    runner
        .run(&frame, |text| {
            let mut client = client.borrow_mut();
            runtime.block_on(async {
                client.send_raw(Message::Text(text.clone().into())).await;
                client.barrier().await;
                while let Some(error) = client.drain_pending("error").pop() {
                    assert_typed(&error["error"], &text);
                    errors.set(errors.get() + 1);
                }
            });
            Ok(())
        })
        .unwrap();
    let errors = errors.get();
    let mut client = client.into_inner();
    runtime.block_on(async {
        // Still usable, and the odd frames stored nothing they should not have.
        let ack = client.send_message(&chat, "still fine").await;
        assert!(ack["seq"].as_i64().is_some());
        assert!(errors > 0, "the fuzzer produced no bad frames at all");
        env.cleanup().await;
    });
}

#[test]
fn fuzzed_rest_bodies_get_typed_errors() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (env, addr, chat) = runtime.block_on(async {
        let mut env = TestEnv::new().await;
        let addr = env.start_api().await;
        let chat = Rest::new(&addr, Some(&env.token("alice"))).create_chat("group", &["bob"]).await;
        (env, addr, chat)
    });
    let rest = Rest::new(&addr, Some(&env.token("alice")));
    let paths = [
        "/api/chats".to_owned(),
        format!("/api/chats/{chat}/messages"),
        format!("/api/chats/{chat}/members"),
        "/api/chats/not-a-uuid/messages".to_owned(),
    ];
    let mut runner = TestRunner::new(Config { cases: cases(), failure_persistence: None, ..Config::default() });
    runner
        .run(&(0..paths.len(), json_value(&[])), |(path, body)| {
            runtime.block_on(async {
                let (status, reply) = rest.post(&paths[path], body.clone()).await;
                assert!(status.as_u16() < 500, "{} {body}: {status} {reply}", paths[path]);
                if !status.is_success() {
                    assert_typed(&reply["error"], &format!("{} {body}", paths[path]));
                }
            });
            Ok(())
        })
        .unwrap();
    runtime.block_on(env.cleanup());
}

#[tokio::test]
async fn a_one_mebibyte_frame_is_refused_and_the_connection_stays() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    let chat = Rest::new(&addr, Some(&env.token("alice"))).create_chat("direct", &["bob"]).await;
    let mut client = WsClient::connect(&addr, &env.token("alice")).await.unwrap();
    let huge = json!({"event": "message:send", "id": 1, "data": {"chatId": chat, "content": "x".repeat(1024 * 1024)}});
    client.send_frame(huge).await;
    let error = client.wait_event("error").await;
    assert_eq!(error["error"]["code"], "payload_too_large");
    // Invalid UTF-8 cannot be a text frame; as binary it is refused like any binary frame.
    client.send_raw(Message::Binary(vec![0xff, 0xfe, 0x00, 0xc3].into())).await;
    assert_eq!(client.wait_event("error").await["error"]["code"], "binary_not_supported");
    assert_eq!(client.send_message(&chat, "after the big one").await["seq"], 1);
    env.cleanup().await;
}

#[tokio::test]
async fn a_flooding_client_is_rate_limited_and_others_are_not() {
    let mut env = TestEnv::new().await;
    let mut config = env.api_config();
    config.rate_limit_per_second = 50;
    config.rate_limit_burst = 100;
    let addr = env.start_api_with(config).await;
    env.start_worker().await;
    let chat = Rest::new(&addr, Some(&env.token("carol"))).create_chat("direct", &["dave"]).await;
    let mut flooder = WsClient::connect(&addr, &env.token("mallory")).await.unwrap();
    let mut carol = WsClient::connect(&addr, &env.token("carol")).await.unwrap();
    let mut dave = WsClient::connect(&addr, &env.token("dave")).await.unwrap();
    dave.wait_event("sync:done").await;

    // 10,000 frames as fast as the socket takes them.
    for id in 1..=10_000u64 {
        flooder.send_frame(json!({"event": "ping", "id": id})).await;
    }
    // Meanwhile another user is served normally.
    let sent = carol.send_message(&chat, "unaffected").await;
    assert_eq!(dave.receive_messages(1).await[0]["messageId"], sent["messageId"]);

    let mut limited = 0;
    let mut answered = 0;
    while answered < 10_000 {
        let reply = flooder.wait_for("a reply", |f| f["event"] == "ack" || f["event"] == "error").await;
        answered += 1;
        if reply["event"] == "error" {
            assert_eq!(reply["error"]["code"], "rate_limited");
            limited += 1;
        }
    }
    assert!(limited > 9_000, "only {limited} of 10,000 frames were limited");
    // The limit is a rate, not a ban: once the bucket refills, frames go through again.
    let until = tokio::time::Instant::now() + courier_tests::deadline();
    while flooder.request("ping", Value::Null).await.is_err() {
        assert!(tokio::time::Instant::now() < until, "the flooder is never served again");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await; // poll interval
    }
    println!("RELIABILITY {}", json!({"fault": "flood of 10,000 frames", "rate_limited": limited, "served": 10_000 - limited}));
    env.cleanup().await;
}

/// Raises this process's open-file limit (each connection is two sockets here).
fn raise_fd_limit(want: u64) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid resource and a pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < want {
            limit.rlim_cur = want.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_connections_send_and_receive() {
    // Full size by hand: COURIER_FULL_LOAD=1 (2,000 connections); CI runs 400.
    let connections: usize = if std::env::var("COURIER_FULL_LOAD").is_ok() { 2000 } else { 400 };
    let rounds = 2;
    raise_fd_limit(4 * connections as u64 + 1024);
    let mut env = TestEnv::new().await;
    let mut config = env.api_config();
    config.common.database_max_connections = 16;
    let addr = env.start_api_with(config).await;
    env.start_worker().await;

    // Pairs of users with a direct chat each.
    let pairs = connections / 2;
    let chats: Vec<String> = join_all((0..pairs).map(|p| {
        let rest = Rest::new(&addr, Some(&env.token(&format!("u{p}a"))));
        async move { rest.create_chat("direct", &[&format!("u{p}b")]).await }
    }))
    .await;
    // Ramp up 100 connects at a time, as clients arriving, not one instant storm.
    let tokens: Vec<String> = (0..connections).map(|i| env.token(&format!("u{}{}", i / 2, if i % 2 == 0 { "a" } else { "b" }))).collect();
    let mut clients: Vec<WsClient> = futures::stream::iter(tokens)
        .map(|token| {
            let addr = addr.clone();
            async move { WsClient::connect(&addr, &token).await.expect("connect") }
        })
        .buffered(100)
        .collect()
        .await;
    join_all(clients.iter_mut().map(|c| c.wait_event("sync:done"))).await;

    let pid = i32::try_from(std::process::id()).unwrap();
    let mut rss = Vec::new();
    let started = std::time::Instant::now();
    for round in 0..rounds {
        // Everyone sends one message to their partner and receives one.
        let results = join_all(clients.iter_mut().enumerate().map(|(i, client)| {
            let chat = chats[i / 2].clone();
            async move {
                client.send_message(&chat, &format!("round {round} from {i}")).await;
                let got = client.receive_messages(1).await.remove(0);
                got["content"].as_str().map(str::to_owned)
            }
        }))
        .await;
        let unique: HashSet<_> = results.iter().flatten().collect();
        assert_eq!(unique.len(), connections, "round {round}: every connection received its partner's message");
        rss.push(rss_kib(pid));
    }
    let elapsed = started.elapsed();
    eventually("all delivered", || async {
        let delivered: i64 = sqlx::query_scalar("SELECT count(*) FROM message_status WHERE status = 'delivered'")
            .fetch_one(&env.db)
            .await
            .unwrap();
        (delivered as usize == connections * rounds).then_some(())
    })
    .await;
    // Memory stable: the second round does not grow the process much beyond the first.
    assert!(rss[1] < rss[0] + rss[0] / 5 + 10_240, "RSS grew from {} KiB to {} KiB", rss[0], rss[1]);
    println!(
        "RELIABILITY {}",
        json!({"fault": "concurrent connections", "connections": connections, "messages": connections * rounds,
               "errors": 0, "rss_kib_after_rounds": rss, "elapsed_ms": elapsed.as_millis() as u64})
    );
    for client in clients {
        client.close().await;
    }
    env.cleanup().await;
}
