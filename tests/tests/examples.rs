//! The README walk-through's two clients, `examples/bob.mjs` and
//! `examples/alice.mjs`, run as the README runs them (Node 20, the same
//! environment variables) against an api and a worker started here: Bob gets
//! the message, Alice sees ✓ sent, ✓✓ delivered, then read. The output lines
//! the README shows must be the ones the clients print. And the example
//! frames of docs/protocol.md must be ones the server reads and writes.

use std::{path::PathBuf, process::Stdio, time::Duration};

use courier_tests::{Rest, TestEnv, deadline};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::mpsc,
};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_path_buf()
}

/// `node --experimental-websocket examples/<script> <args>` from the repo root,
/// as in the README, with `vars` set and stdout piped.
fn example(script: &str, args: &[&str], vars: &[(&str, &str)]) -> Command {
    let mut command = Command::new("node");
    command
        .arg("--experimental-websocket")
        .arg(format!("examples/{script}"))
        .args(args)
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    for (key, value) in vars {
        command.env(key, value);
    }
    command
}

/// Forwards the child's stdout lines to a channel (and to the test's output).
fn lines_of(child: &mut Child) -> mpsc::UnboundedReceiver<String> {
    let (sender, receiver) = mpsc::unbounded_channel();
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            println!("{line}");
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    receiver
}

/// Waits for the child to exit and returns its stdout lines; fails after `wait`.
async fn finish(name: &str, mut child: Child, mut lines: mpsc::UnboundedReceiver<String>, wait: Duration) -> Vec<String> {
    let status = tokio::time::timeout(wait, child.wait()).await.unwrap_or_else(|_| panic!("{name} did not exit in time"));
    let status = status.expect("wait for node");
    let mut output = Vec::new();
    while let Some(line) = lines.recv().await {
        output.push(line);
    }
    assert!(status.success(), "{name} failed ({status}); it printed:\n{}", output.join("\n"));
    output
}

/// The lines starting with `prefix` in README.md's walk-through: what it shows
/// the client printing.
fn readme_lines(prefix: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    readme.lines().filter(|line| line.starts_with(prefix)).map(str::to_owned).collect()
}

/// `expected` appears in `output`, in order (other lines may come between).
fn assert_in_order(name: &str, output: &[String], expected: &[String]) {
    let mut rest = output.iter();
    for line in expected {
        assert!(
            rest.any(|printed| printed == line),
            "{name} did not print {line:?} (in this order); it printed:\n{}",
            output.join("\n")
        );
    }
}

#[tokio::test]
async fn readme_walk_through_shows_delivered_then_read() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    env.start_worker().await;
    let url = format!("http://{addr}");
    let alice = env.token_with("alice", Some("Alice"));
    let bob = env.token_with("bob", Some("Bob"));
    let chat = Rest::new(&addr, Some(&alice)).create_chat("direct", &["bob"]).await;

    // Terminal 1: Bob waits for messages.
    let mut bob_process =
        example("bob.mjs", &["--count", "1"], &[("COURIER_URL", &url), ("BOB", &bob)]).spawn().expect("node 20 is on PATH");
    let mut bob_lines = lines_of(&mut bob_process);
    let first = tokio::time::timeout(deadline(), bob_lines.recv()).await.expect("bob connected in time");
    let mut bob_output = vec![first.clone().expect("bob printed a line")];
    assert_eq!(first.as_deref(), Some("bob: connected as bob, waiting for messages"));

    // Terminal 2: Alice sends, and waits for the read receipt.
    let timeout = deadline().as_secs().to_string();
    let mut alice_process = example(
        "alice.mjs",
        &["--timeout", &timeout, "hello bob"],
        &[("COURIER_URL", &url), ("ALICE", &alice), ("CHAT", &chat)],
    )
    .spawn()
    .expect("node 20 is on PATH");
    let alice_lines = lines_of(&mut alice_process);
    let alice_output = finish("alice.mjs", alice_process, alice_lines, deadline() + Duration::from_secs(5)).await;
    bob_output.extend(finish("bob.mjs", bob_process, bob_lines, deadline()).await);

    let expected_alice: Vec<String> = [
        "alice: connected as alice",
        "alice: ✓ sent #1: hello bob",
        "alice: ✓✓ delivered to bob",
        "alice: ✓✓ read by bob",
    ]
    .map(str::to_owned)
    .into();
    let expected_bob: Vec<String> = [
        "bob: connected as bob, waiting for messages",
        "bob: received #1 from Alice: hello bob",
        "bob:   acked: the sender sees ✓✓ delivered",
        "bob:   marked read (1 updated): the sender sees read",
    ]
    .map(str::to_owned)
    .into();
    assert_in_order("alice.mjs", &alice_output, &expected_alice);
    assert_in_order("bob.mjs", &bob_output, &expected_bob);
    // What the README shows is what they print.
    assert_eq!(readme_lines("alice: "), expected_alice, "README.md's alice.mjs output");
    assert_eq!(readme_lines("bob: "), expected_bob, "README.md's bob.mjs output");

    let status: String = sqlx::query_scalar("SELECT status::text FROM message_status WHERE user_id = 'bob'")
        .fetch_one(&env.db)
        .await
        .expect("bob's status row");
    assert_eq!(status, "read");
    env.cleanup().await;
}

/// Without Bob, nothing acks or reads the message: alice.mjs says so and fails.
#[tokio::test]
async fn alice_fails_when_nobody_reads() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    env.start_worker().await;
    let alice = env.token_with("alice", Some("Alice"));
    let chat = Rest::new(&addr, Some(&alice)).create_chat("direct", &["bob"]).await;
    let url = format!("http://{addr}");
    let output = example(
        "alice.mjs",
        &["--timeout", "2", "hello bob"],
        &[("COURIER_URL", &url), ("ALICE", &alice), ("CHAT", &chat)],
    )
    .stderr(Stdio::piped())
    .spawn()
    .expect("node 20 is on PATH")
    .wait_with_output();
    let output = tokio::time::timeout(deadline(), output).await.expect("alice.mjs exited in time").expect("node ran");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "alice.mjs succeeded without a reader:\n{stdout}");
    assert!(stdout.contains("alice: ✓ sent #1: hello bob"), "{stdout}");
    assert!(!stdout.contains("delivered"), "{stdout}");
    assert!(stderr.contains("no read receipt within 2s"), "{stderr}");
    env.cleanup().await;
}

/// The fenced ```json blocks of a Markdown text.
fn json_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_start()) {
            (None, fence) if fence.starts_with("```json") => current = Some(String::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

/// `data` reads as `T` and `T` writes it back the same: no field missing,
/// misnamed, mistyped or extra.
fn round_trips<T: serde::de::DeserializeOwned + serde::Serialize>(what: &str, data: &serde_json::Value) {
    let parsed: T = serde_json::from_value(data.clone()).unwrap_or_else(|error| panic!("{what}: {error}\n{data}"));
    let written = serde_json::to_value(&parsed).expect("serializes");
    assert_eq!(&written, data, "{what}: the server writes this payload differently");
}

/// The data fields each client event takes (serde ignores others, so a typo
/// in the docs would otherwise parse).
fn client_fields(event: &str) -> Option<&'static [&'static str]> {
    Some(match event {
        "message:send" => &["chatId", "content", "messageType", "clientMsgId", "replyTo"],
        "message:edit" => &["messageId", "content"],
        "message:delete" => &["messageId", "forMe"],
        "message:react" | "message:unreact" => &["messageId", "emoji"],
        "message:delivered" => &["messageId"],
        "message:read" => &["chatId", "upToSeq", "messageId"],
        "typing:start" | "typing:stop" => &["chatId"],
        "ping" => &[],
        _ => return None,
    })
}

/// docs/protocol.md's example frames are what the code reads and writes:
/// each client frame parses as the server parses it (and names no field the
/// event does not take), each server event and each reply round-trips
/// through its type in `courier_shared::protocol`, and every frame matches
/// its message in the AsyncAPI document (a reply, the reply messages of the
/// event it answers). Frames abbreviated with
/// "…" are skipped; the events of edits, deletes, reactions, replies and
/// typing must each have an example.
#[test]
fn protocol_md_example_frames_match_the_code() {
    use std::collections::{BTreeSet, HashMap};

    use courier_shared::protocol::{
        DeletedMessage, EditedMessage, EntryAccepted, ReactionChange, Receipt, ReceivedMessage, SentMessage, SessionReady,
        StatusUpdate, SyncDone, TypingNotice, UserOffline, UserOnline, parse_client_frame,
    };
    use serde_json::{Value, json};

    let schemas = courier_tests::FrameSchemas::get();
    let asyncapi = |verdict: Result<(), String>| {
        if let Err(error) = verdict {
            panic!("docs/protocol.md has a frame the AsyncAPI document refuses: {error}");
        }
    };
    let protocol = std::fs::read_to_string(repo_root().join("docs/protocol.md")).expect("docs/protocol.md");
    let mut shown = BTreeSet::new();
    for block in json_blocks(&protocol) {
        // Client frame ids of this block → their event, for the replies below them.
        let mut requests: HashMap<u64, String> = HashMap::new();
        for line in block.lines().map(str::trim).filter(|line| line.starts_with("{\"event\"")) {
            if line.contains('…') {
                continue;
            }
            let frame: Value = serde_json::from_str(line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}"));
            let event = frame["event"].as_str().unwrap_or_else(|| panic!("no event: {line}")).to_owned();
            let id = frame["id"].as_u64();
            let data = frame.get("data").cloned();
            match (event.as_str(), data) {
                ("ack", None) => {
                    assert!(id.is_some(), "a client ack names the frame it acknowledges: {line}");
                    asyncapi(schemas.check_client(&frame));
                    shown.insert("ack".to_owned());
                }
                ("ack", Some(reply)) => {
                    let request = id
                        .and_then(|id| requests.get(&id))
                        .unwrap_or_else(|| panic!("a reply to no frame above it: {line}"));
                    let what = format!("reply to {request}: {line}");
                    asyncapi(schemas.check_server(&frame, Some(request.as_str())));
                    match request.as_str() {
                        "message:send" => round_trips::<SentMessage>(&what, &reply),
                        "message:edit" | "message:delete" | "message:react" | "message:unreact" => {
                            round_trips::<EntryAccepted>(&what, &reply);
                            let label = if reply["changed"] == json!(false) { "unchanged" } else { "changed" };
                            shown.insert(format!("reply to {request}: {label}"));
                        }
                        "typing:start" | "typing:stop" => assert_eq!(reply, json!({}), "{what}"),
                        "ping" => assert_eq!(reply, json!({ "pong": true }), "{what}"),
                        "message:delivered" | "message:read" => {
                            assert!(reply["updated"].is_number() || reply["updated"].is_boolean(), "{what}");
                        }
                        other => panic!("no check for replies to {other}: {line}"),
                    }
                }
                (name, data) if client_fields(name).is_some() => {
                    let parsed = parse_client_frame(line);
                    assert!(parsed.is_ok(), "the server refuses {line}: {:?}", parsed.err());
                    asyncapi(schemas.check_client(&frame));
                    let fields = client_fields(name).unwrap_or_default();
                    for key in data.as_ref().and_then(Value::as_object).into_iter().flat_map(|data| data.keys()) {
                        assert!(fields.contains(&key.as_str()), "{name} takes no `{key}`: {line}");
                    }
                    if let Some(id) = id {
                        requests.insert(id, name.to_owned());
                    }
                    let data = data.unwrap_or(Value::Null);
                    for optional in ["replyTo", "forMe"] {
                        if data.get(optional).is_some() {
                            shown.insert(format!("{name} with {optional}"));
                        }
                    }
                    shown.insert(name.to_owned());
                }
                (name, Some(data)) => {
                    assert!(id.is_some(), "server events are numbered: {line}");
                    asyncapi(schemas.check_server(&frame, None));
                    match name {
                        "message:receive" => round_trips::<ReceivedMessage>(line, &data),
                        "message:edited" => round_trips::<EditedMessage>(line, &data),
                        "message:deleted" => round_trips::<DeletedMessage>(line, &data),
                        "message:reaction" => round_trips::<ReactionChange>(line, &data),
                        "message:sent" => round_trips::<SentMessage>(line, &data),
                        "message:status" => round_trips::<StatusUpdate>(line, &data),
                        "receipt" => round_trips::<Receipt>(line, &data),
                        "session:ready" => round_trips::<SessionReady>(line, &data),
                        "sync:done" => round_trips::<SyncDone>(line, &data),
                        "user:online" => round_trips::<UserOnline>(line, &data),
                        "user:offline" => round_trips::<UserOffline>(line, &data),
                        "typing" => round_trips::<TypingNotice>(line, &data),
                        other => panic!("no check for the server event {other}: {line}"),
                    }
                    for optional in ["replyTo", "editedAt", "deleted"] {
                        if data.get(optional).is_some() {
                            shown.insert(format!("{name} with {optional}"));
                        }
                    }
                    shown.insert(name.to_owned());
                }
                (name, None) => panic!("{name} without data: {line}"),
            }
        }
    }
    let wanted = [
        "message:send with replyTo",
        "message:receive with replyTo",
        "message:receive with editedAt",
        "message:receive with deleted",
        "message:edit",
        "reply to message:edit: changed",
        "message:edited",
        "message:delete",
        "message:delete with forMe",
        "reply to message:delete: changed",
        "message:deleted",
        "message:react",
        "reply to message:react: changed",
        "reply to message:react: unchanged",
        "message:unreact",
        "message:reaction",
        "ack",
        "typing:start",
        "typing:stop",
        "typing",
    ];
    let missing: Vec<&str> = wanted.into_iter().filter(|label| !shown.contains(*label)).collect();
    assert!(missing.is_empty(), "docs/protocol.md has no example of {missing:?} (it shows {shown:?})");
}
