//! The deployment a chaos run may break: its own PostgreSQL cluster and
//! RabbitMQ node (private instances, as the fault tests use), two API nodes
//! and two workers as real processes whose logs go to the run's folder.
//! API nodes keep their port and node id across restarts, so clients
//! reconnect to the same addresses and a restarted node clears its old rows.

use std::{
    fs::OpenOptions,
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, bail};
use courier_tests::{PrivatePostgres, PrivateRabbit, PrivateRabbitCluster, Services, TestEnv, free_port, test_retry};
use tokio::process::{Child, Command};

use crate::history::{ServerMessage, ServerState};

/// One server process slot: what to run, and the running child if it is up.
pub struct Server {
    pub name: String,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
    /// `host:port` of an API node.
    pub addr: Option<String>,
}

impl Server {
    fn spawn(&mut self) -> anyhow::Result<()> {
        let (program, args) = self.args.split_first().context("program name")?;
        let log = OpenOptions::new().create(true).append(true).open(&self.log)?;
        let child = Command::new(binary(program)?)
            .args(args)
            .env("RUST_LOG", std::env::var("CHAOS_SERVER_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawn {}", self.name))?;
        self.child = Some(child);
        Ok(())
    }

    pub fn is_up(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILL, like a crash or an OOM kill.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// Takes the running process out of the slot (e.g. to stop it without holding a lock).
    pub fn take_child(&mut self) -> Option<Child> {
        self.child.take()
    }

    /// Starts the process again unless it runs.
    pub fn ensure_up(&mut self) -> anyhow::Result<()> {
        if !self.is_up() { self.spawn() } else { Ok(()) }
    }
}

/// SIGTERM, then wait for the graceful stop (SIGKILL after `patience`).
pub async fn terminate(mut child: Child, patience: Duration) {
    if let Some(pid) = child.id().and_then(|id| i32::try_from(id).ok()) {
        // SAFETY: kill(2) on our own child's pid with a valid signal.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    if tokio::time::timeout(patience, child.wait()).await.is_err() {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
}

/// The binaries sit next to this one (one cargo build).
fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::current_exe()?.parent().context("binary directory")?.join(name);
    if !path.exists() {
        bail!("{} is not built: run `cargo build --workspace --bins` first", path.display());
    }
    Ok(path)
}

/// The broker of a run: one node, or a cluster of them.
pub enum Broker {
    Single(Arc<PrivateRabbit>),
    Cluster(Arc<PrivateRabbitCluster>),
}

pub struct Deployment {
    /// Shared, so a fault can stop and start them without holding the deployment.
    pub postgres: Arc<PrivatePostgres>,
    pub broker: Broker,
    pub env: TestEnv,
    pub apis: Vec<Server>,
    pub workers: Vec<Server>,
}

impl Deployment {
    /// Boots everything and waits until the API nodes answer `/readyz`.
    /// `broker_nodes` 0: one RabbitMQ node; otherwise a cluster of that many,
    /// with every durable queue replicated (`--broker-replicated`).
    pub async fn start(apis: usize, workers: usize, broker_nodes: usize, logs: &Path) -> anyhow::Result<Self> {
        let postgres = PrivatePostgres::start().await;
        let (broker, amqp) = if broker_nodes == 0 {
            let rabbit = PrivateRabbit::start().await;
            let url = rabbit.url();
            (Broker::Single(Arc::new(rabbit)), url)
        } else {
            let cluster = PrivateRabbitCluster::start(broker_nodes).await;
            let url = cluster.url();
            (Broker::Cluster(Arc::new(cluster)), url)
        };
        let replicated: Vec<String> = if broker_nodes == 0 { Vec::new() } else { vec!["--broker-replicated".into()] };
        let services = Services { postgres: postgres.url(), amqp };
        let env = TestEnv::on(services, test_retry()).await;
        std::fs::create_dir_all(logs)?;
        let chaos_args = |mut args: Vec<String>, extra: &[String]| {
            args.extend_from_slice(extra);
            args
        };
        let api_servers = (0..apis)
            .map(|index| {
                let addr = format!("127.0.0.1:{}", free_port());
                let mut extra = vec![
                    format!("--node-id=api-{index}"),
                    // Above the clients' late acks (up to 3 s), so only lost acks cause resends.
                    "--ack-timeout=5s".to_owned(),
                ];
                extra.extend(replicated.iter().cloned());
                Server {
                    name: format!("api-{index}"),
                    args: chaos_args(env.api_args(&addr), &extra),
                    log: logs.join(format!("api-{index}.log")),
                    child: None,
                    addr: Some(addr),
                }
            })
            .collect();
        let worker_servers = (0..workers)
            .map(|index| Server {
                name: format!("worker-{index}"),
                // A killed API node's connections are reaped after 5 s, not 30.
                args: chaos_args(
                    env.worker_args(),
                    &[&[format!("--worker-id=worker-{index}"), "--node-lease=5s".to_owned()][..], &replicated[..]].concat(),
                ),
                log: logs.join(format!("worker-{index}.log")),
                child: None,
                addr: None,
            })
            .collect();
        let mut deployment = Deployment { postgres: Arc::new(postgres), broker, env, apis: api_servers, workers: worker_servers };
        for server in deployment.apis.iter_mut().chain(deployment.workers.iter_mut()) {
            server.spawn()?;
        }
        for index in 0..apis {
            deployment.wait_ready(index, Duration::from_secs(60)).await?;
        }
        Ok(deployment)
    }

    pub fn api_addr(&self, index: usize) -> &str {
        self.apis[index].addr.as_deref().unwrap_or_default()
    }

    /// Waits until API node `index` answers `/readyz` (database and broker reachable).
    pub async fn wait_ready(&self, index: usize, patience: Duration) -> anyhow::Result<()> {
        let url = format!("http://{}/readyz", self.api_addr(index));
        let http = reqwest::Client::new();
        let until = tokio::time::Instant::now() + patience;
        loop {
            if http.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if tokio::time::Instant::now() > until {
                bail!("api-{index} not ready after {patience:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What the server holds now: every message (kind `message`: its content,
    /// deleted or not, edited or not) and every reaction. Read once the run
    /// has settled, for the checker's final views. Tried a few times: the
    /// pool's connections may predate a PostgreSQL restart.
    pub async fn server_state(&self) -> anyhow::Result<ServerState> {
        let mut tries = 0;
        loop {
            match read_server_state(&self.env.db).await {
                Ok(state) => return Ok(state),
                Err(error) if tries < 5 => {
                    tries += 1;
                    eprintln!("reading the server's state: {error:#}; again");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Stops every process (the private services stop when dropped).
    pub async fn stop(&mut self) {
        for server in self.apis.iter_mut().chain(self.workers.iter_mut()) {
            server.kill().await;
        }
    }
}

async fn read_server_state(db: &sqlx::PgPool) -> anyhow::Result<ServerState> {
    let messages: Vec<(String, String, i64, Vec<u8>, bool, bool)> = sqlx::query_as(
        "SELECT id::text, chat_id::text, seq, content, deleted_at IS NOT NULL, edited_at IS NOT NULL
           FROM messages WHERE kind = 'message'",
    )
    .fetch_all(db)
    .await
    .context("reading the messages")?;
    let reactions: Vec<(String, String, String)> = sqlx::query_as("SELECT message_id::text, user_id, emoji FROM reactions")
        .fetch_all(db)
        .await
        .context("reading the reactions")?;
    let mut state = ServerState::default();
    for (id, chat_id, seq, content, deleted, edited) in messages {
        let content = String::from_utf8_lossy(&content).into_owned();
        state.messages.insert(id, ServerMessage { chat_id, seq, content, deleted, edited, reactions: Default::default() });
    }
    for (message_id, user_id, emoji) in reactions {
        // (The server only lets reactions be added to messages; a row about
        // anything else would be kept under its id, with no chat, and show
        // in the report's count of reactions only.)
        state.messages.entry(message_id).or_default().reactions.insert((user_id, emoji));
    }
    Ok(state)
}
