//! The real binaries as child processes, for faults that need a real process
//! to kill (SIGKILL) or stop (SIGTERM).

use std::{path::PathBuf, process::Stdio, time::Duration};

use tokio::process::{Child, Command};

use crate::{Rest, TestEnv, eventually};

/// A running `courier-api` or `courier-worker`.
pub struct ServerProcess {
    child: Child,
    pub name: String,
    /// `host:port` of an API node.
    pub addr: Option<String>,
}

/// Where cargo put the binaries: next to the test binary's `deps/` folder.
fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|deps| deps.parent()).expect("target dir");
    let path = dir.join(name);
    assert!(path.exists(), "{} is not built: run `cargo build --workspace --bins` first (./scripts/test does)", path.display());
    path
}

/// A TCP port nobody listens on right now, below the ephemeral range: a server
/// that is still booting on an ephemeral port can look "open" to a connect
/// that happens to pick the same source port (a TCP self-connect).
pub fn free_port() -> u16 {
    let start = 20_000 + (uuid::Uuid::now_v7().as_u128() % 9_000) as u16;
    (start..30_000)
        .chain(20_000..start)
        .find(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .expect("a free port")
}

impl ServerProcess {
    fn spawn(args: Vec<String>, name: String, addr: Option<String>) -> Self {
        let (program, args) = args.split_first().expect("program name");
        let child = Command::new(binary(program))
            .args(args)
            .env("RUST_LOG", std::env::var("TEST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn server process");
        Self { child, name, addr }
    }

    pub fn pid(&self) -> i32 {
        self.child.id().and_then(|id| i32::try_from(id).ok()).unwrap_or(0)
    }

    /// SIGKILL: no chance to clean up, like a crash or an OOM kill.
    pub async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// SIGSTOP: the process freezes, holding whatever it had (sockets, prefetched jobs).
    pub fn pause(&self) {
        // SAFETY: kill(2) with a pid we own and a valid signal number has no memory effects.
        unsafe {
            libc::kill(self.pid(), libc::SIGSTOP);
        }
    }

    /// SIGCONT after [`ServerProcess::pause`].
    pub fn resume(&self) {
        // SAFETY: as above.
        unsafe {
            libc::kill(self.pid(), libc::SIGCONT);
        }
    }

    /// SIGTERM, then waits for the process to exit (up to `patience`); returns whether it exited cleanly.
    pub async fn terminate(&mut self, patience: Duration) -> bool {
        // SAFETY: kill(2) with a pid we own and a valid signal number has no memory effects.
        unsafe {
            libc::kill(self.pid(), libc::SIGTERM);
        }
        match tokio::time::timeout(patience, self.child.wait()).await {
            Ok(Ok(status)) => status.success(),
            _ => {
                self.kill().await;
                false
            }
        }
    }

    /// Resident memory of the process, in KiB (from /proc).
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }
}

/// Resident memory of a process, in KiB (0 if unknown).
pub fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| line.strip_prefix("VmRSS:").and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok()))
        })
        .unwrap_or(0)
}

/// Appends `--flag=value` arguments, replacing earlier values of the same flags.
fn override_args(args: &mut Vec<String>, extra: &[&str]) {
    for arg in extra {
        let flag = arg.split('=').next().unwrap_or(arg);
        args.retain(|existing| existing.split('=').next() != Some(flag));
        args.push((*arg).to_owned());
    }
}

impl TestEnv {
    /// Starts `courier-api` as a process on a free port; waits until it is ready.
    pub async fn api_process(&self, node_id: &str, extra: &[&str]) -> ServerProcess {
        self.api_process_waiting_for(node_id, extra, "/readyz").await
    }

    /// Starts `courier-api` as a process; waits until `probe` answers 2xx.
    pub async fn api_process_waiting_for(&self, node_id: &str, extra: &[&str], probe: &str) -> ServerProcess {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut args = self.api_args(&addr);
        args.push(format!("--node-id={node_id}"));
        override_args(&mut args, extra);
        let process = ServerProcess::spawn(args, node_id.into(), Some(addr.clone()));
        let rest = Rest::new(&addr, None);
        eventually(&format!("{node_id} to be ready"), || {
            let rest = rest.clone();
            async move { rest.try_get(probe).await.is_some_and(|status| status.is_success()).then_some(()) }
        })
        .await;
        process
    }

    /// Starts `courier-worker` as a process.
    pub async fn worker_process(&self, worker_id: &str, extra: &[&str]) -> ServerProcess {
        let mut args = self.worker_args();
        args.push(format!("--worker-id={worker_id}"));
        override_args(&mut args, extra);
        let process = ServerProcess::spawn(args, worker_id.into(), None);
        // Ready when its control queue exists (declared after it connected).
        let queue = self.topology().control_queue(worker_id);
        eventually(&format!("{worker_id} to connect"), || async { self.queue_exists(&queue).await.then_some(()) }).await;
        process
    }
}
