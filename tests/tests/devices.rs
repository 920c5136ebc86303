//! Devices: how a connection's device is chosen, the per-user limit,
//! `GET /api/devices`, revoking one (its connections close on every node and
//! it is refused from then on), and DEVICE_TTL dropping devices that went away.

use std::time::Duration;

use courier_tests::{Rest, TestEnv, WsClient, WsError, eventually};
use reqwest::StatusCode;
use serde_json::Value;

/// The `/ws` URL for `token`, naming `device` with `?deviceId=` when given.
fn ws_url(addr: &str, token: &str, device: Option<&str>) -> String {
    match device {
        Some(device) => format!("ws://{addr}/ws?token={token}&deviceId={device}"),
        None => format!("ws://{addr}/ws?token={token}"),
    }
}

async fn connect(addr: &str, token: &str, device: Option<&str>) -> WsClient {
    WsClient::connect_url(&ws_url(addr, token, device), true)
        .await
        .unwrap_or_else(|error| panic!("connect as device {device:?}: {error:?}"))
}

/// Connects and expects a refusal before the upgrade: its status and error code.
async fn refused(addr: &str, token: &str, device: Option<&str>) -> (u16, String) {
    match WsClient::connect_url(&ws_url(addr, token, device), true).await {
        Err(WsError::Http { status, body }) => (status, body["error"]["code"].as_str().unwrap_or_default().to_owned()),
        Err(other) => panic!("device {device:?}: the upgrade failed oddly: {other:?}"),
        Ok(_) => panic!("device {device:?}: the socket was upgraded"),
    }
}

/// `GET /api/devices` as `(deviceId, connections)`, by device id.
async fn devices(rest: &Rest) -> Vec<(String, i64)> {
    let (status, body) = rest.get("/api/devices").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut devices: Vec<(String, i64)> = body
        .as_array()
        .expect("an array")
        .iter()
        .map(|device| {
            assert!(device["createdAt"].is_string() && device["lastSeenAt"].is_string(), "{device}");
            (device["deviceId"].as_str().expect("deviceId").to_owned(), device["connections"].as_i64().expect("connections"))
        })
        .collect();
    devices.sort();
    devices
}

/// Waits until `GET /api/devices` says exactly `expected` (connection rows are
/// written just after `session:ready`).
async fn devices_become(rest: &Rest, expected: &[(&str, i64)]) {
    let expected: Vec<(String, i64)> = expected.iter().map(|(device, n)| ((*device).to_owned(), *n)).collect();
    eventually(&format!("devices {expected:?}"), || async { (devices(rest).await == expected).then_some(()) }).await;
}

fn owned(pairs: &[(&str, i64)]) -> Vec<(String, i64)> {
    pairs.iter().map(|(device, n)| ((*device).to_owned(), *n)).collect()
}

#[tokio::test]
async fn connections_create_their_devices_and_the_did_claim_wins() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    let token = env.token("alice");

    let phone = connect(&addr, &token, Some("phone")).await;
    let laptop = connect(&addr, &env.device_token("alice", "laptop"), None).await;
    // The token's `did` wins over the connect parameter.
    let tablet = connect(&addr, &env.device_token("alice", "tablet"), Some("ignored")).await;
    // A client naming no device is the one device `default`, however many connections it has.
    let plain = [connect(&addr, &token, None).await, connect(&addr, &token, None).await];
    let bob = connect(&addr, &env.token("bob"), None).await;

    let alice = Rest::new(&addr, Some(&token));
    devices_become(&alice, &[("default", 2), ("laptop", 1), ("phone", 1), ("tablet", 1)]).await;
    // Anyone's token of the user sees the same list; other users' devices are not in it.
    let from_laptop = Rest::new(&addr, Some(&env.device_token("alice", "laptop")));
    assert_eq!(devices(&from_laptop).await, owned(&[("default", 2), ("laptop", 1), ("phone", 1), ("tablet", 1)]));
    devices_become(&Rest::new(&addr, Some(&env.token("bob"))), &[("default", 1)]).await;

    // A closed device stays listed, without connections.
    phone.close().await;
    devices_become(&alice, &[("default", 2), ("laptop", 1), ("phone", 0), ("tablet", 1)]).await;

    for client in [laptop, tablet, bob].into_iter().chain(plain) {
        client.close().await;
    }
    env.cleanup().await;
}

#[tokio::test]
async fn an_invalid_device_id_is_refused_before_the_upgrade() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    let token = env.token("alice");

    let too_long = "x".repeat(65);
    for device in ["with%20space", too_long.as_str(), "a/b", ""] {
        assert_eq!(refused(&addr, &token, Some(device)).await, (400, "invalid_payload".into()), "deviceId={device:?}");
    }
    let bad_claim = env.device_token("alice", "with space");
    assert_eq!(refused(&addr, &bad_claim, None).await, (400, "invalid_payload".into()), "did claim with a space");

    // The longest valid id connects; nothing was recorded for the refused ones.
    let longest = "x".repeat(64);
    let client = connect(&addr, &token, Some(&longest)).await;
    let alice = Rest::new(&addr, Some(&token));
    devices_become(&alice, &[(longest.as_str(), 1)]).await;

    let (status, body) = alice.delete(&format!("/api/devices/{too_long}")).await;
    assert_eq!((status, body["error"]["code"].clone()), (StatusCode::BAD_REQUEST, Value::from("invalid_payload")));
    client.close().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_device_over_the_limit_is_refused_until_one_is_revoked() {
    let mut env = TestEnv::new().await;
    let mut config = env.api_config();
    config.max_devices_per_user = 2;
    let addr = env.start_api_with(config).await;
    let token = env.token("alice");
    let alice = Rest::new(&addr, Some(&token));

    let phone = connect(&addr, &token, Some("phone")).await;
    // A device counts while it exists, connected or not.
    connect(&addr, &token, Some("laptop")).await.close().await;
    assert_eq!(refused(&addr, &token, Some("tablet")).await, (409, "too_many_devices".into()));
    assert_eq!(refused(&addr, &env.device_token("alice", "tablet"), None).await, (409, "too_many_devices".into()));
    // `default` is a device like any other.
    assert_eq!(refused(&addr, &token, None).await, (409, "too_many_devices".into()));
    // Devices the user has still connect; other users have their own limit.
    let laptop = connect(&addr, &env.device_token("alice", "laptop"), None).await;
    let phone_again = connect(&addr, &token, Some("phone")).await;
    let bob = connect(&addr, &env.token("bob"), Some("tablet")).await;
    devices_become(&alice, &[("laptop", 1), ("phone", 2)]).await;

    let (status, body) = alice.delete("/api/devices/laptop").await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let tablet = connect(&addr, &token, Some("tablet")).await;
    devices_become(&alice, &[("phone", 2), ("tablet", 1)]).await;
    // The revoked device does not make room for itself.
    assert_eq!(refused(&addr, &token, Some("laptop")).await, (403, "device_revoked".into()));

    for client in [phone, laptop, phone_again, bob, tablet] {
        client.close().await;
    }
    env.cleanup().await;
}

#[tokio::test]
async fn revoking_a_device_closes_its_connections_on_every_node() {
    let mut env = TestEnv::new().await;
    let addr_a = env.start_api().await;
    let addr_b = env.start_api().await;
    let token = env.token("alice");
    let alice = Rest::new(&addr_a, Some(&token));
    alice.create_chat("direct", &["bob"]).await;

    let mut phone_a = connect(&addr_a, &token, Some("phone")).await;
    let mut phone_b = connect(&addr_b, &env.device_token("alice", "phone"), None).await;
    let mut laptop_a = connect(&addr_a, &token, Some("laptop")).await;
    let mut laptop_b = connect(&addr_b, &token, Some("laptop")).await;
    let mut bobs_phone = connect(&addr_a, &env.token("bob"), Some("phone")).await;
    assert_ne!(phone_a.node_id, phone_b.node_id);
    devices_become(&alice, &[("laptop", 2), ("phone", 2)]).await;

    let (status, body) = alice.delete("/api/devices/phone").await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    // This node closes its own; the other one is told through its push queue.
    assert_eq!(phone_a.wait_closed().await, Some(4009), "phone on the node that revoked it");
    assert_eq!(phone_b.wait_closed().await, Some(4009), "phone on the other node");
    // The user's other device and another user's device of the same name stay open.
    laptop_a.barrier().await;
    laptop_b.barrier().await;
    bobs_phone.barrier().await;

    // The revoked device is refused everywhere, by parameter or by claim.
    assert_eq!(refused(&addr_a, &token, Some("phone")).await, (403, "device_revoked".into()));
    assert_eq!(refused(&addr_b, &env.device_token("alice", "phone"), None).await, (403, "device_revoked".into()));
    devices_become(&alice, &[("laptop", 2)]).await;
    let (status, body) = alice.delete("/api/devices/phone").await;
    assert_eq!((status, body["error"]["code"].clone()), (StatusCode::NOT_FOUND, Value::from("not_found")));
    let (status, body) = alice.delete("/api/devices/never-seen").await;
    assert_eq!((status, body["error"]["code"].clone()), (StatusCode::NOT_FOUND, Value::from("not_found")));
    // Its cursors are gone with it (they no longer hold the backlog).
    let cursors: Vec<String> =
        sqlx::query_scalar("SELECT device_id FROM device_cursors WHERE user_id = 'alice' ORDER BY device_id")
            .fetch_all(&env.db)
            .await
            .unwrap();
    assert_eq!(cursors, ["laptop"]);
    // Bob's device of the same name is his own.
    devices_become(&Rest::new(&addr_b, Some(&env.token("bob"))), &[("phone", 1)]).await;

    for client in [laptop_a, laptop_b, bobs_phone] {
        client.close().await;
    }
    env.cleanup().await;
}

#[tokio::test]
async fn a_device_not_seen_for_device_ttl_is_dropped_with_its_cursors() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    let mut config = env.worker_config();
    config.device_ttl = Duration::from_secs(1);
    config.janitor_interval = Duration::from_millis(100);
    env.start_worker_with(config).await;
    let token = env.token("alice");
    let alice = Rest::new(&addr, Some(&token));
    alice.create_chat("direct", &["bob"]).await;

    // Connected first, so it was seen before the one that leaves: only its
    // connection keeps it.
    let mut live = connect(&addr, &token, Some("live")).await;
    devices_become(&alice, &[("live", 1)]).await;
    connect(&addr, &token, Some("gone")).await.close().await;
    let cursors_of = |device: &'static str| {
        let db = env.db.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM device_cursors WHERE user_id = 'alice' AND device_id = $1")
                .bind(device)
                .fetch_one(&db)
                .await
                .unwrap()
        }
    };
    assert_eq!(cursors_of("gone").await, 1, "a new device starts with a cursor in each chat");

    eventually("the janitor to drop the device that left", || async {
        let left: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM devices WHERE user_id = 'alice' AND device_id = 'gone')")
            .fetch_one(&env.db)
            .await
            .unwrap();
        (!left).then_some(())
    })
    .await;
    assert_eq!(cursors_of("gone").await, 0);
    assert_eq!(cursors_of("live").await, 1);
    assert_eq!(devices(&alice).await, owned(&[("live", 1)]));
    live.barrier().await;

    // A dropped device that comes back is simply new again.
    let back = connect(&addr, &token, Some("gone")).await;
    devices_become(&alice, &[("gone", 1), ("live", 1)]).await;

    back.close().await;
    live.close().await;
    env.cleanup().await;
}
