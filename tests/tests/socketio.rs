//! `/socket.io/` through the official socket.io-client, and the web page at `/`
//! (which runs on `/ws` through the TypeScript client of `clients/js`) in
//! Chromium: the Node suites in `tests/node` run against an api and a worker
//! started here. `scripts/test` installs their packages (`npm ci`) and
//! Debian's chromium first.

use std::{path::PathBuf, process::Stdio, time::Instant};

use courier_tests::TestEnv;

fn node_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("node")
}

/// Runs `node --test` on one file with the given environment; fails the test
/// (showing node's output) unless every case passed.
async fn run_node_suite(file: &str, vars: &[(&str, String)]) {
    let dir = node_dir();
    assert!(
        dir.join("node_modules/socket.io-client").exists(),
        "tests/node/node_modules is missing: run `npm ci --prefix tests/node` (scripts/test does)"
    );
    let started = Instant::now();
    let mut command = tokio::process::Command::new("node");
    command
        .args(["--experimental-websocket", "--test", "--test-reporter=spec", file])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (key, value) in vars {
        command.env(key, value);
    }
    let output = command.output().await.expect("node 20 is on PATH");
    println!("{}", String::from_utf8_lossy(&output.stdout));
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    println!("{file}: {:.1}s", started.elapsed().as_secs_f64());
    assert!(output.status.success(), "{file} failed ({})", output.status);
}

#[tokio::test]
async fn socket_io_client_runs_the_guides_cases() {
    let mut env = TestEnv::new().await;
    let mut config = env.api_config();
    config.dev_tokens = true;
    config.cors_allow_origins = vec!["http://app.example.com".into()];
    let addr = env.start_api_with(config.clone()).await;
    // A second node with a tight per-user rate limit, for the limit's own case.
    config.rate_limit_per_second = 2;
    config.rate_limit_burst = 5;
    let limited = env.start_api_with(config).await;
    env.start_worker().await;
    run_node_suite(
        "socketio.test.mjs",
        &[("COURIER_URL", format!("http://{addr}")), ("COURIER_LIMITED_URL", format!("http://{limited}"))],
    )
    .await;
    env.cleanup().await;
}

#[tokio::test]
async fn web_page_works_in_chromium() {
    let mut env = TestEnv::new().await;
    let mut config = env.api_config();
    config.dev_tokens = true;
    // clients/js/README.md's frontend is served from an origin of its own, which CORS must allow.
    let readme_page_port = courier_tests::free_port();
    config.cors_allow_origins = vec![format!("http://127.0.0.1:{readme_page_port}")];
    let addr = env.start_api_with(config).await;
    env.start_worker().await;
    // docs/screenshot-{a,b}.png are refreshed with COURIER_SCREENSHOTS=$PWD/docs;
    // otherwise the screenshots go to the target directory.
    let shots = std::env::var("COURIER_SCREENSHOTS").unwrap_or_else(|_| env!("CARGO_TARGET_TMPDIR").to_owned());
    run_node_suite(
        "browser.test.mjs",
        &[
            ("COURIER_URL", format!("http://{addr}")),
            ("SCREENSHOT_DIR", shots.clone()),
            ("README_PAGE_PORT", readme_page_port.to_string()),
        ],
    )
    .await;
    println!("screenshots in {shots}");
    env.cleanup().await;
}

#[tokio::test]
async fn dev_tokens_are_off_by_default() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    let (status, body) = courier_tests::Rest::new(&addr, None)
        .post("/api/dev/token", serde_json::json!({"userId": "mallory"}))
        .await;
    assert_eq!(status.as_u16(), 404);
    assert_eq!(body["error"]["code"], "not_found");
    // The page itself is there; it signs in with a pasted token instead.
    let page = courier_tests::Rest::new(&addr, None).try_get("/").await;
    assert_eq!(page.map(|s| s.as_u16()), Some(200));
    env.cleanup().await;
}

/// A stopping node closes Socket.IO transports instead of disconnecting the
/// sockets, so socket.io-client reconnects by itself (`transport close`, not
/// `io server disconnect`, after which it would wait for `socket.connect()`).
#[tokio::test]
async fn stopping_node_lets_socket_io_clients_reconnect() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    env.start_worker().await;
    let probe = r#"
        import { io } from 'socket.io-client';
        const socket = io(process.env.COURIER_URL, { auth: { token: process.env.TOKEN }, transports: ['websocket'], reconnection: false });
        socket.on('session:ready', () => console.log('ready'));
        socket.on('disconnect', (reason) => { console.log(`disconnect: ${reason}`); process.exit(0); });
        socket.on('connect_error', (error) => { console.log(`refused: ${error.message}`); process.exit(1); });
    "#;
    let mut node = tokio::process::Command::new("node")
        .args(["--input-type=module", "-e", probe])
        .current_dir(node_dir())
        .env("COURIER_URL", format!("http://{addr}"))
        .env("TOKEN", env.token("alice"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node 20 is on PATH");
    let mut lines = BufReader::new(node.stdout.take().expect("piped")).lines();
    let deadline = courier_tests::deadline();
    let ready = tokio::time::timeout(deadline, lines.next_line()).await.expect("connected in time");
    assert_eq!(ready.ok().flatten().as_deref(), Some("ready"));

    env.stop_api(0).await;
    let closed = tokio::time::timeout(deadline, lines.next_line()).await.expect("disconnected in time");
    assert_eq!(closed.ok().flatten().as_deref(), Some("disconnect: transport close"));
    env.cleanup().await;
}
