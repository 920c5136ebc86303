//! Private PostgreSQL and RabbitMQ instances, for faults that stop or restart
//! the service itself: they must not disturb the other tests.
//!
//! They need the servers' binaries on this machine (not a container): Debian's
//! `postgresql-15` (`COURIER_PG_BIN` overrides its bin directory) with root to
//! run it as the `postgres` user, and `rabbitmq-server` (`COURIER_RABBITMQ_BIN`).
//! A test that cannot have them fails at once saying what is missing.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use tokio::process::Command;

use crate::{eventually, process::free_port};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
const RABBIT_BIN: &str = "/usr/lib/rabbitmq/bin";

fn bin_dir(variable: &str, default: &str) -> String {
    std::env::var(variable).ok().filter(|dir| !dir.trim().is_empty()).unwrap_or_else(|| default.to_string()).trim_end_matches('/').to_string()
}

/// The running test's name (libtest names the thread after it), for the messages below.
fn this_test() -> String {
    match std::thread::current().name() {
        Some(name) if name != "main" => format!("`{name}`"),
        _ => "this fault test".to_string(),
    }
}

/// Panics with one message naming what is missing, instead of a failed command later.
fn require(what: &str, missing: Vec<String>) {
    if !missing.is_empty() {
        panic!("{} needs {what}, which cannot run here: {}", this_test(), missing.join("; "));
    }
}

/// One line naming the programs not in `dir`, and how to get them.
fn missing_programs(dir: &str, programs: &[&str], fix: &str) -> Vec<String> {
    let missing: Vec<String> =
        programs.iter().map(|program| Path::new(dir).join(program)).filter(|path| !path.is_file()).map(|path| path.display().to_string()).collect();
    if missing.is_empty() { Vec::new() } else { vec![format!("{} not found; {fix}", missing.join(", "))] }
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

fn scratch_dir(kind: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("courier-{kind}-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A PostgreSQL cluster of its own (initdb), run as the `postgres` user on a free port.
pub struct PrivatePostgres {
    dir: PathBuf,
    bin: String,
    pub port: u16,
}

impl PrivatePostgres {
    /// Checks what a private cluster needs: PostgreSQL's server binaries, root
    /// (`su postgres`), and the `postgres` user. Returns the bin directory.
    fn prerequisites() -> String {
        let bin = bin_dir("COURIER_PG_BIN", PG_BIN);
        let mut missing = missing_programs(
            &bin,
            &["initdb", "pg_ctl", "postgres"],
            "install Debian's postgresql-15 (or set COURIER_PG_BIN to a PostgreSQL bin directory)",
        );
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            missing.push("root: it runs the server as the `postgres` user with `su` (run the tests as root)".into());
        } else if !std::process::Command::new("id").arg("postgres").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success()) {
            missing.push("a `postgres` system user (Debian's postgresql package creates it)".into());
        }
        require("a private PostgreSQL (stopped and restarted by the test)", missing);
        bin
    }

    pub async fn start() -> Self {
        let bin = Self::prerequisites();
        let dir = scratch_dir("pg");
        let port = free_port();
        run_as_root(&format!("chown postgres {dir}", dir = dir.display())).await;
        let data = dir.join("data");
        run_as_postgres(&format!("{bin}/initdb -D {} -A trust -U postgres", data.display())).await;
        let this = Self { dir, bin, port };
        this.start_again().await;
        this
    }

    /// `postgres://postgres@127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    /// Starts the (stopped) server and waits until it accepts connections.
    pub async fn start_again(&self) {
        let command = format!(
            "{bin}/pg_ctl -D {data} -l {log} -w -o \"-p {port} -k {dir} -c listen_addresses=127.0.0.1\" start",
            bin = self.bin,
            data = self.dir.join("data").display(),
            log = self.dir.join("log").display(),
            dir = self.dir.display(),
            port = self.port,
        );
        run_as_postgres(&command).await;
    }

    /// Stops the server (fast mode: open connections are cut, like a crash of the connection).
    pub async fn stop(&self) {
        let command = format!("{}/pg_ctl -D {} -m fast -w stop", self.bin, self.dir.join("data").display());
        run_as_postgres(&command).await;
    }

    /// Stops the server as a crash would (immediate mode: no checkpoint; it
    /// recovers from its WAL on the next start).
    pub async fn stop_immediate(&self) {
        let command = format!("{}/pg_ctl -D {} -m immediate -w stop", self.bin, self.dir.join("data").display());
        run_as_postgres(&command).await;
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let command = format!("{}/pg_ctl -D {} -m immediate -w stop", self.bin, self.dir.join("data").display());
        let _ = std::process::Command::new("su").args(["postgres", "-s", "/bin/sh", "-c", &command]).stdout(Stdio::null()).stderr(Stdio::null()).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// PostgreSQL's tools refuse to run as root.
async fn run_as_postgres(command: &str) {
    let status = Command::new("su").args(["postgres", "-s", "/bin/sh", "-c", command]).stdout(Stdio::null()).status().await;
    assert!(status.is_ok_and(|s| s.success()), "failed: {command}");
}

async fn run_as_root(command: &str) {
    let status = Command::new("sh").args(["-c", command]).stdout(Stdio::null()).status().await;
    assert!(status.is_ok_and(|s| s.success()), "failed: {command}");
}

/// A RabbitMQ node of its own: own node name, port, data directory, no plugins.
pub struct PrivateRabbit {
    dir: PathBuf,
    bin: String,
    node: String,
    pub port: u16,
}

impl PrivateRabbit {
    /// Checks that RabbitMQ's server scripts are here (with Erlang behind them). Returns their directory.
    fn prerequisites() -> String {
        let bin = bin_dir("COURIER_RABBITMQ_BIN", RABBIT_BIN);
        require(
            "a private RabbitMQ node (stopped and restarted by the test)",
            missing_programs(&bin, &["rabbitmq-server", "rabbitmqctl"], "install Debian's rabbitmq-server (or set COURIER_RABBITMQ_BIN to its bin directory)"),
        );
        bin
    }

    pub async fn start() -> Self {
        let this = Self::prepare(None);
        this.start_again().await;
        this
    }

    /// A node's files, not started yet; `cookie` is the Erlang cookie its
    /// cluster shares (nodes join only with the same one).
    fn prepare(cookie: Option<&str>) -> Self {
        let bin = Self::prerequisites();
        let dir = scratch_dir("rabbit");
        let port = free_port();
        let node = format!("courier-test-{}@localhost", dir.file_name().and_then(|n| n.to_str()).unwrap_or("x"));
        std::fs::write(dir.join("enabled_plugins"), "[].").expect("plugins file");
        std::fs::write(dir.join("rabbitmq.conf"), format!("listeners.tcp.default = 127.0.0.1:{port}\nloopback_users = none\n"))
            .expect("config file");
        if let Some(cookie) = cookie {
            use std::os::unix::fs::PermissionsExt;
            let path = dir.join(".erlang.cookie");
            std::fs::write(&path, cookie).expect("cookie file");
            // Erlang refuses a cookie file others can read.
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).expect("cookie file mode");
        }
        Self { dir, bin, node, port }
    }

    /// The node's Erlang name (`name@localhost`).
    pub fn node_name(&self) -> &str {
        &self.node
    }

    /// SIGKILL the node's Erlang VM: no goodbye to the cluster, like a crashed machine.
    pub async fn kill(&self) {
        // The VM tells its own OS pid; then it gets no chance to say goodbye.
        let pid = self.ctl(&["eval", "os:getpid()."]).await.ok().and_then(|out| out.trim().trim_matches('"').parse::<i32>().ok());
        let Some(pid) = pid else { panic!("cannot find the pid of {}", self.node) };
        // SAFETY: kill(2) with a valid signal on the pid the node reported.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
        let port = self.port;
        eventually("private RabbitMQ to die", || async move { (!port_open(port)).then_some(()) }).await;
    }

    /// `rabbitmqctl -n <this node> args…`; its output, or why it failed.
    pub async fn ctl(&self, args: &[&str]) -> Result<String, String> {
        let output = self
            .command("rabbitmqctl")
            .args(["-n", &self.node])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .await
            .map_err(|error| error.to_string())?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(format!("rabbitmqctl {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr)))
        }
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(format!("{}/{program}", self.bin));
        command
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_DIST_PORT", (self.port - 10_000).to_string())
            .env("RABBITMQ_CONFIG_FILE", self.dir.join("rabbitmq.conf"))
            .env("RABBITMQ_CONF_ENV_FILE", self.dir.join("rabbitmq-env.conf"))
            .env("RABBITMQ_MNESIA_BASE", self.dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", self.dir.join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", self.dir.join("enabled_plugins"))
            .env("HOME", &self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    }

    /// Boots the node (keeping its data) and waits until it accepts AMQP connections.
    pub async fn start_again(&self) {
        let mut child = self.command("rabbitmq-server").spawn().unwrap_or_else(|error| panic!("{}/rabbitmq-server: {error}", self.bin));
        let port = self.port;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !port_open(port) {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("private RabbitMQ ({}/rabbitmq-server) exited ({status}) before accepting connections on {port}", self.bin);
            }
            assert!(tokio::time::Instant::now() < deadline, "private RabbitMQ did not start in 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The node runs until stopped; reap it in the background.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
    }

    /// Stops the node; waits until its port is closed.
    pub async fn stop(&self) {
        let _ = self.command("rabbitmqctl").args(["-n", &self.node, "stop"]).status().await;
        let port = self.port;
        eventually("private RabbitMQ to stop", || async move { (!port_open(port)).then_some(()) }).await;
    }
}

impl Drop for PrivateRabbit {
    fn drop(&mut self) {
        let _ = std::process::Command::new(format!("{}/rabbitmqctl", self.bin))
            .args(["-n", &self.node, "stop"])
            .env("HOME", &self.dir)
            .env("RABBITMQ_CONF_ENV_FILE", self.dir.join("rabbitmq-env.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Three private RabbitMQ nodes joined into one cluster (`rabbitmqctl
/// join_cluster`), each on its own ports: quorum queues replicate over them.
pub struct PrivateRabbitCluster {
    pub nodes: Vec<PrivateRabbit>,
}

impl PrivateRabbitCluster {
    pub async fn start(size: usize) -> Self {
        let cookie = format!("COURIERTEST{}", uuid::Uuid::now_v7().simple()).to_uppercase();
        let nodes: Vec<PrivateRabbit> = (0..size).map(|_| PrivateRabbit::prepare(Some(&cookie))).collect();
        futures::future::join_all(nodes.iter().map(PrivateRabbit::start_again)).await;
        let first = nodes[0].node_name().to_owned();
        for node in &nodes[1..] {
            for step in [vec!["stop_app"], vec!["join_cluster", first.as_str()], vec!["start_app"]] {
                if let Err(error) = node.ctl(&step).await {
                    panic!("cannot join {} to {first}: {error}", node.node_name());
                }
            }
        }
        let cluster = Self { nodes };
        for node in &cluster.nodes {
            let port = node.port;
            eventually("a joined node to accept connections", || async move { port_open(port).then_some(()) }).await;
        }
        cluster
    }

    /// `AMQP_URL` naming every node, comma separated.
    pub fn url(&self) -> String {
        self.nodes.iter().map(PrivateRabbit::url).collect::<Vec<_>>().join(",")
    }

    /// Which node leads quorum queue `queue` (index into `nodes`), if one does.
    pub async fn leader_of(&self, queue: &str) -> Option<usize> {
        for node in &self.nodes {
            let Ok(listing) = node.ctl(&["list_queues", "name", "leader", "--no-table-headers", "--quiet"]).await else { continue };
            let leader = listing.lines().find_map(|line| {
                let mut fields = line.split_whitespace();
                (fields.next() == Some(queue)).then(|| fields.next().map(str::to_owned)).flatten()
            })?;
            return self.nodes.iter().position(|n| n.node_name() == leader);
        }
        None
    }
}
