//! Every device of a user catches up on its own (issue 13): each has a
//! cursor per chat, and a drain sends a device what it has not acknowledged,
//! whatever the user's other devices had.

use courier_tests::{Rest, TestEnv, WsClient};
use serde_json::{Value, json};

async fn device(env: &TestEnv, addr: &str, user: &str, device: &str) -> WsClient {
    let url = format!("ws://{addr}/ws?token={}&deviceId={device}", env.token(user));
    WsClient::connect_url(&url, true).await.unwrap()
}

/// Waits for `sync:done` and returns its count and the messages that came before it.
async fn catch_up(client: &mut WsClient) -> (u64, Vec<Value>) {
    let count = client.wait_event("sync:done").await["data"]["count"].as_u64().unwrap();
    client.barrier().await;
    let received = client.drain_pending("message:receive").into_iter().map(|frame| frame["data"].clone()).collect();
    (count, received)
}

fn contents(messages: &[Value]) -> Vec<&str> {
    messages.iter().map(|message| message["content"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn a_device_that_was_off_while_another_read_everything_still_catches_up() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    env.start_worker().await;
    let chat = Rest::new(&addr, Some(&env.token("alice"))).create_chat("direct", &["bob"]).await;
    // Bob's laptop has been seen once, then goes off.
    let mut laptop = device(&env, &addr, "bob", "laptop").await;
    assert_eq!(catch_up(&mut laptop).await.0, 0);
    laptop.close().await;

    let mut phone = device(&env, &addr, "bob", "phone").await;
    phone.wait_event("sync:done").await;
    let mut alice = WsClient::connect(&addr, &env.token("alice")).await.unwrap();
    for i in 1..=3 {
        alice.send_message(&chat, &format!("m{i}")).await;
    }
    let on_phone = phone.receive_messages(3).await;
    assert_eq!(contents(&on_phone), ["m1", "m2", "m3"]);
    phone.request("message:read", json!({ "chatId": chat, "upToSeq": 3 })).await.unwrap();
    phone.close().await;

    let mut laptop = device(&env, &addr, "bob", "laptop").await;
    let (count, on_laptop) = catch_up(&mut laptop).await;
    assert_eq!((count, contents(&on_laptop)), (3, vec!["m1", "m2", "m3"]), "the laptop gets all three, in order");
    let seqs: Vec<i64> = on_laptop.iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3]);

    // The phone had them all: it gets none again.
    let mut phone = device(&env, &addr, "bob", "phone").await;
    let (count, again) = catch_up(&mut phone).await;
    assert_eq!((count, again.len()), (0, 0));
    env.cleanup().await;
}

#[tokio::test]
async fn a_new_device_starts_at_the_users_delivered_watermark() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    env.start_worker().await;
    let chat = Rest::new(&addr, Some(&env.token("alice"))).create_chat("direct", &["bob"]).await;
    let mut alice = WsClient::connect(&addr, &env.token("alice")).await.unwrap();
    alice.send_message(&chat, "m1").await;
    alice.send_message(&chat, "m2").await;
    let mut phone = device(&env, &addr, "bob", "phone").await;
    let (_, on_phone) = catch_up(&mut phone).await;
    assert_eq!(contents(&on_phone), ["m1", "m2"]);
    phone.close().await;
    // Wait until the phone's acks are in: the watermark a new device starts at.
    courier_tests::eventually("bob's delivered watermark at 2", || async {
        let delivered: i64 = sqlx::query_scalar("SELECT delivered_seq FROM chat_members WHERE user_id = 'bob'")
            .fetch_one(&env.db)
            .await
            .unwrap();
        (delivered == 2).then_some(())
    })
    .await;
    alice.send_message(&chat, "m3").await;

    let mut tablet = device(&env, &addr, "bob", "tablet").await;
    let (count, on_tablet) = catch_up(&mut tablet).await;
    assert_eq!((count, contents(&on_tablet)), (1, vec!["m3"]), "what no device had yet, not the older history");
    env.cleanup().await;
}

#[tokio::test]
async fn own_messages_reach_the_senders_other_devices_and_not_the_sending_one() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    env.start_worker().await;
    let chat = Rest::new(&addr, Some(&env.token("alice"))).create_chat("direct", &["bob"]).await;
    let mut laptop = device(&env, &addr, "bob", "laptop").await;
    laptop.wait_event("sync:done").await;
    laptop.close().await;

    let mut phone = device(&env, &addr, "bob", "phone").await;
    phone.wait_event("sync:done").await;
    let sent = phone.send_message(&chat, "from my phone").await;
    phone.close().await;

    let mut laptop = device(&env, &addr, "bob", "laptop").await;
    let (count, on_laptop) = catch_up(&mut laptop).await;
    assert_eq!(count, 1);
    assert_eq!(on_laptop[0]["messageId"], sent["messageId"]);
    assert_eq!(on_laptop[0]["senderId"], "bob", "marked as the user's own");

    let mut phone = device(&env, &addr, "bob", "phone").await;
    let (count, on_phone) = catch_up(&mut phone).await;
    assert_eq!((count, on_phone.len()), (0, 0), "never back to the device that sent it");
    env.cleanup().await;
}

async fn cursor_of(env: &TestEnv, user: &str, device: &str) -> i64 {
    sqlx::query_scalar("SELECT acked_seq FROM device_cursors WHERE user_id = $1 AND device_id = $2")
        .bind(user)
        .bind(device)
        .fetch_one(&env.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn online_devices_get_every_message_live_and_their_own_only_on_the_others() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    env.start_worker().await;
    let chat = Rest::new(&addr, Some(&env.token("alice"))).create_chat("direct", &["bob"]).await;
    let mut phone = device(&env, &addr, "bob", "phone").await;
    let mut laptop = device(&env, &addr, "bob", "laptop").await;
    phone.wait_event("sync:done").await;
    laptop.wait_event("sync:done").await;
    let mut alice = WsClient::connect(&addr, &env.token("alice")).await.unwrap();

    let mine = phone.send_message(&chat, "sent from the phone").await;
    let on_laptop = laptop.receive_messages(1).await;
    assert_eq!((&on_laptop[0]["messageId"], &on_laptop[0]["senderId"]), (&mine["messageId"], &json!("bob")));
    let reply = alice.send_message(&chat, "hi both").await;
    assert_eq!(phone.receive_messages(1).await[0]["messageId"], reply["messageId"], "the phone gets alice's, not its own");
    assert_eq!(laptop.receive_messages(1).await[0]["messageId"], reply["messageId"]);
    for (name, client) in [("phone", &mut phone), ("laptop", &mut laptop)] {
        client.barrier().await;
        assert!(client.drain_pending("message:receive").is_empty(), "nothing more at the {name}");
    }
    // Both cursors pass both messages: the phone's over its own one without having been sent it.
    for name in ["phone", "laptop"] {
        courier_tests::eventually(&format!("the {name}'s cursor at 2"), || async {
            (cursor_of(&env, "bob", name).await == 2).then_some(())
        })
        .await;
    }
    env.cleanup().await;
}
