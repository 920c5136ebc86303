//! A private Courier deployment per run: its own database and broker prefix,
//! real `courier-api` and `courier-worker` processes from the same build as
//! this binary. Everything is removed again when the run ends.

use std::{
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use courier_shared::{
    auth::{DevTokenRequest, sign_hs256},
    broker::{Topology, broker_addresses},
    config::RetryConfig,
};
use lapin::{
    Connection, ConnectionProperties,
    options::{ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions},
    types::FieldTable,
};
use sqlx::{Connection as _, PgConnection};
use tokio::process::{Child, Command};

use crate::procstat::{self, Processes};

const JWT_SECRET: &str = "courier-bench-secret-0123456789abcdef";

/// Where the services run.
#[derive(Debug, Clone)]
pub struct Services {
    /// PostgreSQL server URL without a database name.
    pub postgres: String,
    pub amqp: String,
}

/// How big a deployment to start.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub apis: usize,
    pub workers: usize,
}

impl Shape {
    /// One API node and one worker.
    pub const SOLO: Shape = Shape { apis: 1, workers: 1 };
}

/// A running deployment.
pub struct Cluster {
    services: Services,
    /// Settings for both the API nodes and the workers (e.g. `--delivery-queues=3`).
    server_args: Vec<String>,
    db_name: String,
    pub database_url: String,
    prefix: String,
    apis: Vec<(Child, String)>,
    workers: Vec<Child>,
    http: reqwest::Client,
}

/// The directory this binary lives in: cargo puts the servers beside it.
fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.parent().context("binary directory")?.join(name);
    if !path.exists() {
        bail!("{} is not built: run `cargo build --release --workspace --bins` first", path.display());
    }
    Ok(path)
}

fn free_port() -> anyhow::Result<u16> {
    // Below the ephemeral range, so thousands of client sockets cannot collide with it.
    let start = 20_000 + (uuid::Uuid::now_v7().as_u128() % 9_000) as u16;
    (start..30_000)
        .chain(20_000..start)
        .find(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .context("no free port")
}

impl Cluster {
    pub async fn start(services: &Services, shape: Shape) -> anyhow::Result<Self> {
        Self::start_with(services, shape, &[]).await
    }

    /// Like [`Cluster::start`], with extra settings for the API nodes (e.g. `--tcp-nodelay=false`).
    pub async fn start_with(services: &Services, shape: Shape, api_args: &[String]) -> anyhow::Result<Self> {
        Self::start_with_servers(services, shape, api_args, &[]).await
    }

    /// Like [`Cluster::start_with`], with settings for every server process too.
    pub async fn start_with_servers(services: &Services, shape: Shape, api_args: &[String], server_args: &[String]) -> anyhow::Result<Self> {
        let tag = uuid::Uuid::now_v7().simple().to_string();
        let db_name = format!("courier_bench_{}", &tag[tag.len() - 12..]);
        let mut admin = PgConnection::connect(&format!("{}/postgres", services.postgres)).await.context("PostgreSQL")?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db_name}"))).execute(&mut admin).await?;
        let mut cluster = Cluster {
            services: services.clone(),
            server_args: server_args.to_vec(),
            database_url: format!("{}/{db_name}", services.postgres),
            db_name,
            prefix: format!("bench{}", &tag[tag.len() - 8..]),
            apis: Vec::new(),
            workers: Vec::new(),
            http: reqwest::Client::new(),
        };
        for index in 0..shape.apis {
            cluster.start_api(index, api_args).await?;
        }
        for index in 0..shape.workers {
            cluster.start_worker(index).await?;
        }
        Ok(cluster)
    }

    /// Settings of every server; `process` picks which broker node it tries
    /// first when AMQP_URL lists several (so processes spread over a cluster).
    fn common_args(&self, process: usize) -> Vec<String> {
        let mut nodes = broker_addresses(&self.services.amqp);
        let first = process % nodes.len();
        nodes.rotate_left(first);
        let mut args = vec![
            format!("--database-url={}", self.database_url),
            format!("--amqp-url={}", nodes.join(",")),
            format!("--broker-prefix={}", self.prefix),
        ];
        args.extend(self.server_args.iter().cloned());
        args
    }

    fn spawn(&self, program: &str, args: Vec<String>) -> anyhow::Result<Child> {
        Command::new(binary(program)?)
            .args(args)
            .env("RUST_LOG", std::env::var("BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into()))
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawn {program}"))
    }

    async fn start_api(&mut self, index: usize, extra: &[String]) -> anyhow::Result<()> {
        let addr = format!("127.0.0.1:{}", free_port()?);
        let mut args = self.common_args(index * 2);
        args.extend([
            format!("--api-addr={addr}"),
            "--admin-addr=127.0.0.1:0".into(),
            format!("--node-id=bench-api-{index}"),
            format!("--jwt-secret={JWT_SECRET}"),
            // The load generator is one very busy client per user; the limit has its own test.
            "--rate-limit-per-second=0".into(),
        ]);
        args.extend_from_slice(extra);
        let child = self.spawn("courier-api", args)?;
        self.apis.push((child, addr.clone()));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = self.http.get(format!("http://{addr}/readyz")).send().await.is_ok_and(|r| r.status().is_success());
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("courier-api on {addr} did not become ready");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn start_worker(&mut self, index: usize) -> anyhow::Result<()> {
        let worker_id = format!("bench-worker-{index}");
        let mut args = self.common_args(index * 2 + 1);
        // Several workers on one host: each its own metrics port.
        args.extend([format!("--worker-id={worker_id}"), "--metrics-addr=127.0.0.1:0".into()]);
        let child = self.spawn("courier-worker", args)?;
        self.workers.push(child);
        // Ready once its control queue exists: it declares that after connecting.
        let queue = self.topology().control_queue(&worker_id);
        let connection = Connection::connect(&self.first_broker_node(), ConnectionProperties::default()).await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let channel = connection.create_channel().await?;
            let passive = QueueDeclareOptions { passive: true, ..Default::default() };
            let declared = channel.queue_declare(queue.as_str().into(), passive, FieldTable::default()).await;
            // An exclusive queue of another connection answers RESOURCE_LOCKED (405): it exists.
            let exists = declared.map_or_else(|error| matches!(error.kind(), lapin::ErrorKind::ProtocolError(e) if e.get_id() == 405), |_| true);
            if exists {
                let _ = connection.close(200, "ready".into()).await;
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{worker_id} did not connect");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn first_broker_node(&self) -> String {
        broker_addresses(&self.services.amqp).remove(0)
    }

    pub fn topology(&self) -> Topology {
        let shards = self.server_args.iter().find_map(|arg| arg.strip_prefix("--delivery-queues=")?.parse().ok()).unwrap_or(1);
        Topology::new(&self.prefix, &RetryConfig::default()).sharded(shards)
    }

    /// `host:port` of API node `index`.
    pub fn api_addr(&self, index: usize) -> &str {
        &self.apis[index % self.apis.len()].1
    }

    pub fn processes(&self) -> Processes {
        Processes {
            api: self.apis.iter().filter_map(|(child, _)| child.id()).map(|id| id as i32).collect(),
            worker: self.workers.iter().filter_map(Child::id).map(|id| id as i32).collect(),
        }
    }

    /// Peak RSS of the API nodes and of the workers, KiB (the largest of each kind).
    pub fn peak_rss_kib(&self) -> (u64, u64) {
        let processes = self.processes();
        let peak = |pids: &[i32]| pids.iter().map(|&pid| procstat::peak_rss_kib(pid)).max().unwrap_or(0);
        (peak(&processes.api), peak(&processes.worker))
    }

    pub fn token(&self, user_id: &str) -> String {
        let request = DevTokenRequest { user_id: user_id.into(), name: Some(user_id.into()), ttl: Duration::from_secs(86_400), ..Default::default() };
        sign_hs256(JWT_SECRET, &request).unwrap_or_default()
    }

    /// Creates a chat as `creator`; returns its id.
    pub async fn create_chat(&self, creator: &str, kind: &str, members: &[String]) -> anyhow::Result<String> {
        let body = serde_json::json!({ "type": kind, "members": members, "name": "bench" });
        let response = self
            .http
            .post(format!("http://{}/api/chats", self.api_addr(0)))
            .bearer_auth(self.token(creator))
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let value: serde_json::Value = response.json().await?;
        if !status.is_success() {
            bail!("create chat: {status} {value}");
        }
        value["id"].as_str().map(str::to_owned).context("chat id in reply")
    }

    /// Stops the servers and removes the database and broker objects.
    pub async fn stop(mut self) {
        for (child, _) in &mut self.apis {
            let _ = child.kill().await;
        }
        for child in &mut self.workers {
            let _ = child.kill().await;
        }
        if let Ok(mut admin) = PgConnection::connect(&format!("{}/postgres", self.services.postgres)).await {
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db_name))).execute(&mut admin).await;
        }
        if let Ok(connection) = Connection::connect(&self.first_broker_node(), ConnectionProperties::default()).await {
            if let Ok(channel) = connection.create_channel().await {
                let (exchanges, queues) = self.topology().durable_names();
                for queue in queues {
                    let _ = channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
                }
                for exchange in exchanges {
                    let _ = channel.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default()).await;
                }
            }
            let _ = connection.close(200, "bench done".into()).await;
        }
    }
}
