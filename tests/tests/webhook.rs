//! The offline push webhook, against a local HTTP receiver: signed, coalesced
//! per user and quiet period, retried with backoff, never in delivery's way.

use std::{path::PathBuf, process::Stdio, time::Duration};

use courier_tests::{
    Rest, TestEnv, WsClient, eventually,
    ops::{WebhookCall, WebhookReceiver},
};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use tokio::io::AsyncWriteExt;

const SECRET: &str = "webhook-test-secret-0123456789";

fn assert_signed(call: &WebhookCall) {
    let header = call.headers.get("x-courier-signature").expect("signature header").to_str().unwrap();
    let hex = header.strip_prefix("sha256=").expect("sha256= prefix");
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(&call.body);
    mac.verify_slice(&hex::decode(hex).unwrap()).expect("signature matches the body");
    assert_eq!(call.headers.get("content-type").unwrap(), "application/json");
}

/// The notice's idempotency key: the `Idempotency-Key` header, equal to the body's `idempotencyKey` (and `id`).
fn idempotency_key(call: &WebhookCall) -> String {
    let header = call.headers.get("idempotency-key").expect("Idempotency-Key header").to_str().unwrap().to_owned();
    let notice = call.json();
    assert_eq!(notice["idempotencyKey"], header.as_str(), "{notice}");
    assert_eq!(notice["id"], header.as_str(), "{notice}");
    uuid::Uuid::parse_str(&header).expect("the key is a UUID");
    header
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
    let key = idempotency_key(for_bob[0]);
    assert_eq!(idempotency_key(for_bob[1]), key, "a retry carries the same idempotency key");
    for call in &calls {
        assert_signed(call);
    }
    let notice = for_bob[1].json();
    assert_eq!(notice["event"], "offline_messages");
    assert!((1..=3).contains(&notice["pending"].as_i64().unwrap()), "{notice}");
    assert_eq!((notice["newestSenderId"].as_str(), notice["newestSenderName"].as_str()), (Some("alice"), Some("alice name")));
    let for_carol: Vec<&WebhookCall> = calls.iter().filter(|c| c.json()["userId"] == "carol").collect();
    assert_eq!(for_carol.len(), 1);
    assert_ne!(idempotency_key(for_carol[0]), key, "another notice, another key");
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

fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// One captured request as the example verifiers read it: a JSON line with the headers and the raw body in hex.
fn as_line(headers: &axum::http::HeaderMap, body: &[u8]) -> String {
    let headers: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .filter_map(|(name, value)| Some((name.as_str().to_owned(), json!(value.to_str().ok()?))))
        .collect();
    json!({ "headers": headers, "body": hex::encode(body) }).to_string()
}

/// Runs an example verifier with the secret, the lines on stdin; returns its output lines.
async fn run_verifier(program: &str, script: &str, lines: &[String]) -> Vec<String> {
    let mut child = tokio::process::Command::new(program)
        .arg(repo_file(script))
        .env("PUSH_WEBHOOK_SECRET", SECRET)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|error| panic!("cannot run {program} {script}: {error}"));
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all((lines.join("\n") + "\n").as_bytes()).await.unwrap();
    drop(stdin);
    let output = tokio::time::timeout(courier_tests::deadline(), child.wait_with_output()).await.expect("verifier finished").unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{program} {script} failed: {stderr}");
    String::from_utf8(output.stdout).unwrap().lines().map(str::to_owned).collect()
}

/// The Node and Python verifiers of docs/operations.md, run on what the real
/// worker sent: its notice and the notice's retry verify (the retry is a
/// duplicate by its idempotency key), a second notice is new, and a tampered
/// body, a tampered signature or a missing one are rejected.
#[tokio::test]
async fn example_verifiers_accept_the_real_webhook_and_reject_tampering() {
    let receiver = WebhookReceiver::start(&[503]).await;
    let mut env = TestEnv::new().await;
    let addr = start(&mut env, &receiver, Duration::from_secs(3600)).await;
    let alice = Rest::new(&addr, Some(&env.token("alice")));
    let with_bob = alice.create_chat("direct", &["bob"]).await;
    let with_carol = alice.create_chat("direct", &["carol"]).await;
    assert_eq!(alice.post(&format!("/api/chats/{with_bob}/messages"), json!({ "content": "hi bob" })).await.0.as_u16(), 201);
    let bob = eventually("Bob's notice and its retry", || async {
        let calls = receiver.calls();
        (calls.len() == 2).then_some(calls)
    })
    .await;
    assert_eq!(alice.post(&format!("/api/chats/{with_carol}/messages"), json!({ "content": "hi carol" })).await.0.as_u16(), 201);
    let carol = eventually("Carol's notice", || async {
        let calls = receiver.calls();
        (calls.len() == 3).then(|| calls[2].clone())
    })
    .await;
    let (bob_key, carol_key) = (idempotency_key(&bob[0]), idempotency_key(&carol));

    let mut tampered_body = bob[1].body.to_vec();
    let digit = tampered_body.iter().position(u8::is_ascii_digit).expect("a digit in the notice");
    tampered_body[digit] = if tampered_body[digit] == b'9' { b'8' } else { tampered_body[digit] + 1 };
    let mut tampered_signature = bob[1].headers.clone();
    let signature = tampered_signature["x-courier-signature"].to_str().unwrap().to_owned();
    let flipped = format!("{}{}", &signature[..signature.len() - 1], if signature.ends_with('0') { '1' } else { '0' });
    tampered_signature.insert("x-courier-signature", flipped.parse().unwrap());
    let mut unsigned = bob[1].headers.clone();
    unsigned.remove("x-courier-signature");
    let lines = [
        as_line(&bob[0].headers, &bob[0].body),
        as_line(&bob[1].headers, &bob[1].body),
        as_line(&bob[1].headers, &tampered_body),
        as_line(&tampered_signature, &bob[1].body),
        as_line(&unsigned, &bob[1].body),
        as_line(&carol.headers, &carol.body),
    ];
    let expected = [
        format!("accepted {bob_key}"),
        format!("duplicate {bob_key}"),
        "rejected".to_owned(),
        "rejected".to_owned(),
        "rejected".to_owned(),
        format!("accepted {carol_key}"),
    ];
    assert_eq!(run_verifier("node", "examples/webhook/verify.mjs", &lines).await, expected, "Node");
    assert_eq!(run_verifier("python3", "examples/webhook/verify.py", &lines).await, expected, "Python");
    env.cleanup().await;
}

/// docs/operations.md shows the example verifiers verbatim: each code block
/// whose info string names a file under examples/ is that file's content.
#[test]
fn the_docs_show_the_example_verifiers_verbatim() {
    let docs = std::fs::read_to_string(repo_file("docs/operations.md")).unwrap();
    let mut shown = Vec::new();
    let mut lines = docs.lines();
    while let Some(line) = lines.next() {
        let Some(info) = line.strip_prefix("```") else { continue };
        let Some(path) = info.split_whitespace().find(|word| word.starts_with("examples/")) else {
            // Skip the block, so its closing fence is not taken for an opening one.
            lines.by_ref().take_while(|line| !line.starts_with("```")).for_each(drop);
            continue;
        };
        let block: Vec<&str> = lines.by_ref().take_while(|line| !line.starts_with("```")).collect();
        let file = std::fs::read_to_string(repo_file(path)).unwrap_or_else(|error| panic!("{path}: {error}"));
        assert_eq!(block.join("\n") + "\n", file, "the block of docs/operations.md naming {path} differs from the file");
        shown.push(path.to_owned());
    }
    shown.sort();
    assert_eq!(shown, ["examples/webhook/verify.mjs", "examples/webhook/verify.py"]);
}
