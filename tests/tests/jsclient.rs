//! The TypeScript client (`clients/js`) against a real Courier: its Node
//! suites run here, against an api and a worker of a test environment of
//! their own. `scripts/test` installs the client's dev packages
//! (`npm ci --prefix clients/js`) and checks that its committed `dist/` is
//! what `npm run build` makes; the suites import `dist/`.
//!
//! The restart suite needs an api it can kill and start again on the same
//! address, so that one runs as a real `courier-api` process (built by
//! `cargo build --workspace --bins`, as for tests/tests/faults.rs), and the
//! suite asks for each fault over a line protocol on a local TCP port.

use std::{
    path::PathBuf,
    process::{Output, Stdio},
    time::{Duration, Instant},
};

use courier_tests::{Rest, TestEnv, eventually, free_port};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    process::{Child, Command},
};

fn client_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../clients/js")
}

/// `node --test` on the client's suites with the given environment.
fn node_suite(files: &[&str], vars: &[(&str, String)]) -> Command {
    let dir = client_dir();
    assert!(
        dir.join("node_modules/ws").exists(),
        "clients/js/node_modules is missing: run `npm ci --prefix clients/js` (scripts/test does)"
    );
    let mut command = Command::new("node");
    command
        // A case that fails (or waits forever) must not leave node running:
        // its clients' heartbeat timers would keep it alive, and this test
        // would time out with none of node's output shown.
        .args(["--test", "--test-reporter=spec", "--test-force-exit", "--test-timeout=120000"])
        .args(files.iter().map(|file| format!("test/{file}")))
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (key, value) in vars {
        command.env(key, value);
    }
    command
}

/// Shows node's output and fails the test unless every case passed.
fn assert_passed(what: &str, output: &Output, started: Instant) {
    println!("{}", String::from_utf8_lossy(&output.stdout));
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    println!("{what}: {:.1}s", started.elapsed().as_secs_f64());
    assert!(output.status.success(), "{what} failed ({})", output.status);
}

#[tokio::test]
async fn js_client_suites_pass_against_a_real_courier() {
    let mut env = TestEnv::new().await;
    let mut config = env.api_config();
    config.dev_tokens = true;
    let addr = env.start_api_with(config).await;
    env.start_worker().await;
    let started = Instant::now();
    let output = node_suite(&["unit.test.mjs", "client.test.mjs"], &[("COURIER_URL", format!("http://{addr}"))])
        .output()
        .await
        .expect("node 20 is on PATH");
    assert_passed("clients/js unit + client suites", &output, started);
    env.cleanup().await;
}

/// `courier-api` as a child process on a fixed address, so that it can be
/// killed and started again where its clients look for it.
struct ApiProcess {
    child: Child,
    addr: String,
}

/// Where cargo put the binaries: next to the test binary's `deps/` folder.
fn api_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|deps| deps.parent()).expect("target dir");
    let path = dir.join("courier-api");
    assert!(path.exists(), "{} is not built: run `cargo build --workspace --bins` first (./scripts/test does)", path.display());
    path
}

impl ApiProcess {
    async fn start(env: &TestEnv, addr: &str) -> Self {
        let mut args = env.api_args(addr);
        args.remove(0); // the program name
        args.extend(["--node-id=js-restart".to_owned(), "--dev-tokens".to_owned()]);
        let child = Command::new(api_binary())
            .args(args)
            .env("RUST_LOG", std::env::var("TEST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn courier-api");
        let ready = Rest::new(addr, None);
        eventually("the api process to be ready", || {
            let ready = ready.clone();
            async move { ready.try_get("/readyz").await.is_some_and(|status| status.is_success()).then_some(()) }
        })
        .await;
        Self { child, addr: addr.to_owned() }
    }

    /// SIGKILL: no close frames, nothing finished.
    async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// SIGTERM: a graceful stop (clients see close code 1012); SIGKILL if it takes too long.
    async fn stop(&mut self) {
        if let Some(pid) = self.child.id().and_then(|id| i32::try_from(id).ok()) {
            // SAFETY: kill(2) with a pid we own and a valid signal number has no memory effects.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        if tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await.is_err() {
            self.kill().await;
        }
    }
}

/// Runs one line of the control protocol; answers `ok` or what went wrong.
async fn control(env: &TestEnv, api: &mut ApiProcess, stream: TcpStream) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let Ok(Some(command)) = lines.next_line().await else { return };
    let answer = match command.trim() {
        "kill-api" => {
            api.kill().await;
            "ok".to_owned()
        }
        "stop-api" => {
            api.stop().await;
            "ok".to_owned()
        }
        "start-api" => {
            let addr = api.addr.clone();
            *api = ApiProcess::start(env, &addr).await;
            "ok".to_owned()
        }
        other => format!("unknown command {other:?}"),
    };
    println!("control: {command} → {answer}");
    let _ = write.write_all(format!("{answer}\n").as_bytes()).await;
}

#[tokio::test]
async fn js_client_loses_nothing_when_the_api_restarts_mid_conversation() {
    let mut env = TestEnv::new().await;
    env.start_worker().await;
    let addr = format!("127.0.0.1:{}", free_port());
    let mut api = ApiProcess::start(&env, &addr).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a control port");
    let control_addr = listener.local_addr().expect("bound").to_string();

    let started = Instant::now();
    let suite = node_suite(
        &["restart.test.mjs"],
        &[("COURIER_URL", format!("http://{addr}")), ("COURIER_CONTROL", control_addr)],
    )
    .spawn()
    .expect("node 20 is on PATH");
    let mut output = tokio::spawn(suite.wait_with_output());
    let output = loop {
        tokio::select! {
            finished = &mut output => break finished.expect("node's task").expect("node's output"),
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    control(&env, &mut api, stream).await;
                }
            }
        }
    };
    assert_passed("clients/js restart suite", &output, started);
    api.kill().await;
    env.cleanup().await;
}
