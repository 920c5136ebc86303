//! `LOG_FORMAT=json` and the guide's three log lines, from the real binaries:
//! "user came online, delivering N", "message delivered", "delivery failed: reason",
//! each with the message and recipient ids, so one message can be followed.

use std::{
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex},
};

use courier_tests::{Rest, TestEnv, WsClient, eventually, free_port};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

/// Where cargo put the binaries: next to the test binary's `deps/` folder.
fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent().and_then(|deps| deps.parent()).expect("target dir").join(name)
}

/// Spawns a binary with JSON logs at `info`, collecting its stdout lines.
fn spawn_json(args: Vec<String>, lines: Arc<Mutex<Vec<Value>>>) -> Child {
    let (program, args) = args.split_first().expect("program name");
    let mut child = Command::new(binary(program))
        .args(args)
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("piped stdout");
    tokio::spawn(async move {
        let mut reader = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            let value = serde_json::from_str(&line).unwrap_or_else(|_| json!({ "not_json": line }));
            lines.lock().unwrap().push(value);
        }
    });
    child
}

/// The first line whose message starts with `prefix` and whose fields (or span fields) match.
fn find(lines: &Mutex<Vec<Value>>, prefix: &str, fields: &[(&str, Value)]) -> Option<Value> {
    lines.lock().unwrap().iter().find(|line| {
        line["message"].as_str().is_some_and(|m| m.starts_with(prefix))
            && fields.iter().all(|(key, want)| &line[*key] == want || &line["span"][*key] == want)
    }).cloned()
}

#[tokio::test]
async fn json_logs_carry_the_guides_three_lines_with_message_and_recipient() {
    let env = TestEnv::new().await;
    let api_lines = Arc::new(Mutex::new(Vec::new()));
    let worker_lines = Arc::new(Mutex::new(Vec::new()));
    let addr = format!("127.0.0.1:{}", free_port());
    let mut api_args = env.api_args(&addr);
    api_args.push("--node-id=api-logs".into());
    let _api = spawn_json(api_args, api_lines.clone());
    let _worker = spawn_json(env.worker_args(), worker_lines.clone());
    let rest = Rest::new(&addr, None);
    eventually("the API node to be ready", || {
        let rest = rest.clone();
        async move { rest.try_get("/readyz").await.is_some_and(|s| s.is_success()).then_some(()) }
    })
    .await;
    eventually("the worker to connect", || async {
        find(&worker_lines, "connected to RabbitMQ", &[]).map(|_| ())
    })
    .await;

    let alice = Rest::new(&addr, Some(&env.token("alice")));
    let chat = alice.create_chat("direct", &["bob"]).await;
    let sent = alice.post(&format!("/api/chats/{chat}/messages"), json!({ "content": "hi" })).await.1;
    let message_id = sent["messageId"].clone();

    // Bob is offline: the worker says why the delivery failed, for this message and recipient.
    let failed = eventually("delivery failed", || async {
        find(&worker_lines, "delivery failed", &[("message_id", message_id.clone()), ("recipient_id", json!("bob"))])
    })
    .await;
    assert_eq!(failed["reason"], "recipient_offline");
    assert_eq!(failed["level"], "INFO");
    assert_eq!(failed["span"]["name"], "job", "the job span carries the ids: {failed}");

    let mut bob = WsClient::connect(&addr, &env.token("bob")).await.unwrap();
    bob.receive_messages(1).await;
    let online = eventually("user came online", || async {
        find(&worker_lines, "user came online", &[("user_id", json!("bob"))])
    })
    .await;
    assert_eq!(online["pending"], 1);
    eventually("message delivered", || async {
        find(&api_lines, "message delivered", &[("message_id", message_id.clone()), ("recipient_id", json!("bob"))])
    })
    .await;
    assert!(api_lines.lock().unwrap().iter().all(|line| line.get("not_json").is_none()), "every line is JSON");
    env.cleanup().await;
}
