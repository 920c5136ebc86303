//! The README walk-through's two clients, `examples/bob.mjs` and
//! `examples/alice.mjs`, run as the README runs them (Node 20, the same
//! environment variables) against an api and a worker started here: Bob gets
//! the message, Alice sees ✓ sent, ✓✓ delivered, then read. The output lines
//! the README shows must be the ones the clients print.

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
