//! One test's private world: its own PostgreSQL database and RabbitMQ name prefix.

use std::{future::Future, time::Duration};

use clap::Parser;
use courier_api::{ApiConfig, ApiServer};
use courier_worker::{Worker, WorkerConfig};
use courier_shared::{
    auth,
    broker::{Broker, Topology, supervise},
    config::RetryConfig,
};
use tokio_util::sync::CancellationToken;
use lapin::{
    Connection, ConnectionProperties,
    options::{ExchangeDeleteOptions, QueueDeleteOptions},
};
use sqlx::{Connection as _, PgConnection, PgPool};
use uuid::Uuid;

/// The shared local services every ordinary test uses, unless
/// `COURIER_TEST_POSTGRES_URL` / `COURIER_TEST_AMQP_URL` say otherwise (as
/// `./scripts/test` does when it starts them with `docker compose`).
pub const POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432";
pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// `COURIER_TEST_POSTGRES_URL` (`postgres://user@host:port`, without a database), or [`POSTGRES_URL`].
pub fn postgres_url() -> String {
    service_url("COURIER_TEST_POSTGRES_URL", POSTGRES_URL).trim_end_matches('/').to_string()
}

/// `COURIER_TEST_AMQP_URL`, or [`AMQP_URL`].
pub fn amqp_url() -> String {
    service_url("COURIER_TEST_AMQP_URL", AMQP_URL)
}

fn service_url(variable: &str, default: &str) -> String {
    std::env::var(variable).ok().filter(|url| !url.trim().is_empty()).unwrap_or_else(|| default.to_string())
}

pub const JWT_SECRET: &str = "courier-test-secret-0123456789";

/// How long a test waits for something that should happen, before failing.
pub fn deadline() -> Duration {
    let secs = std::env::var("COURIER_TEST_DEADLINE_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    Duration::from_secs(secs)
}

/// Polls `check` until it returns `Some`, failing after [`deadline`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + deadline();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Where a test's PostgreSQL server and RabbitMQ broker are.
#[derive(Debug, Clone)]
pub struct Services {
    /// `postgres://user@host:port`, without a database.
    pub postgres: String,
    pub amqp: String,
}

impl Default for Services {
    fn default() -> Self {
        Self { postgres: postgres_url(), amqp: amqp_url() }
    }
}

/// The retry schedule of ordinary tests: short, so parking is quick to reach.
pub fn test_retry() -> RetryConfig {
    RetryConfig {
        retry_min_delay: Duration::from_millis(200),
        retry_factor: 2.0,
        retry_max_delay: Duration::from_secs(1),
        retry_tiers: 3,
    }
}

/// A test's database, broker prefix and the servers it started.
pub struct TestEnv {
    pub services: Services,
    pub db_name: String,
    pub database_url: String,
    pub prefix: String,
    pub db: PgPool,
    pub retry: RetryConfig,
    /// Delivery queues of this environment's servers (`--delivery-queues`); set
    /// before starting them. Cleanup deletes every shard's queues.
    pub delivery_queues: u16,
    apis: Vec<Option<ApiServer>>,
    workers: Vec<Option<Worker>>,
    /// Stops broker connections the test opened itself.
    own_brokers: CancellationToken,
    cleaned: bool,
}

#[derive(Parser)]
struct ApiArgs {
    #[command(flatten)]
    config: ApiConfig,
}

#[derive(Parser)]
struct WorkerArgs {
    #[command(flatten)]
    config: WorkerConfig,
}

impl TestEnv {
    /// A fresh, migrated database and an unused broker prefix.
    pub async fn new() -> Self {
        Self::on(Services::default(), test_retry()).await
    }

    /// Like [`TestEnv::new`] with a given retry schedule.
    pub async fn with_retry(retry: RetryConfig) -> Self {
        Self::on(Services::default(), retry).await
    }

    /// A fresh database and prefix on the given services (e.g. private instances for fault tests).
    pub async fn on(services: Services, retry: RetryConfig) -> Self {
        let env = Self::unmigrated_on(services, retry).await;
        courier_shared::db::migrate(&env.db).await.expect("migrate");
        env
    }

    /// A fresh, empty database (no migrations applied) and an unused prefix, for
    /// a test that loads an older schema itself: the API node migrates it at start-up.
    pub async fn unmigrated() -> Self {
        Self::unmigrated_on(Services::default(), test_retry()).await
    }

    async fn unmigrated_on(services: Services, retry: RetryConfig) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("TEST_LOG").unwrap_or_else(|_| "warn".into()))
            .with_test_writer()
            .try_init();
        let tag = Uuid::now_v7().simple().to_string();
        let db_name = format!("courier_test_{tag}");
        let mut admin = PgConnection::connect(&format!("{}/postgres", services.postgres)).await.unwrap_or_else(|error| {
            panic!("PostgreSQL at {} does not answer ({error}); start it, or set COURIER_TEST_POSTGRES_URL", services.postgres)
        });
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db_name}")))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let database_url = format!("{}/{db_name}", services.postgres);
        let db = courier_shared::db::connect(&database_url, 8, Duration::from_secs(10)).await.expect("connect");
        Self { services, db_name, database_url, prefix: format!("t{}", &tag[tag.len() - 12..]), db, retry, delivery_queues: 1, apis: Vec::new(), workers: Vec::new(), own_brokers: CancellationToken::new(), cleaned: false }
    }

    /// The settings every component of this environment shares.
    fn common_args(&self, binary: &str) -> Vec<String> {
        let retry = &self.retry;
        vec![
            binary.to_string(),
            format!("--database-url={}", self.database_url),
            "--database-max-connections=8".into(),
            format!("--amqp-url={}", self.services.amqp),
            format!("--broker-prefix={}", self.prefix),
            format!("--retry-min-delay={}ms", retry.retry_min_delay.as_millis()),
            format!("--retry-factor={}", retry.retry_factor),
            format!("--retry-max-delay={}ms", retry.retry_max_delay.as_millis()),
            format!("--retry-tiers={}", retry.retry_tiers),
            format!("--delivery-queues={}", self.delivery_queues),
        ]
    }

    /// Configuration of an API node of this environment, on a free port.
    pub fn api_config(&self) -> ApiConfig {
        ApiArgs::try_parse_from(self.api_args("127.0.0.1:0")).expect("valid test config").config
    }

    /// Command line of an API node of this environment (program name first).
    pub fn api_args(&self, addr: &str) -> Vec<String> {
        let mut args = self.common_args("courier-api");
        args.extend([
            format!("--jwt-secret={JWT_SECRET}"),
            format!("--api-addr={addr}"),
            "--admin-addr=127.0.0.1:0".into(),
            "--heartbeat-interval=1s".into(),
            "--outbox-relay-after=1s".into(),
            "--outbox-relay-interval=200ms".into(),
            "--drain-wait=3s".into(),
            "--shutdown-grace=5s".into(),
            // Tests send in bulk as one user; the rate limit has its own test.
            "--rate-limit-per-second=0".into(),
        ]);
        args
    }

    /// Configuration of a worker of this environment.
    pub fn worker_config(&self) -> WorkerConfig {
        WorkerArgs::try_parse_from(self.worker_args()).expect("valid test config").config
    }

    /// Command line of a worker of this environment (program name first).
    pub fn worker_args(&self) -> Vec<String> {
        let mut args = self.common_args("courier-worker");
        args.extend([
            "--reap-interval=500ms".into(),
            "--shutdown-grace=5s".into(),
            "--drain-credit-timeout=10s".into(),
            "--metrics-addr=127.0.0.1:0".into(),
            "--metrics-refresh-interval=200ms".into(),
        ]);
        args
    }

    /// Starts a worker with the default test configuration; returns its index.
    pub async fn start_worker(&mut self) -> usize {
        let config = self.worker_config();
        self.start_worker_with(config).await
    }

    pub async fn start_worker_with(&mut self, config: WorkerConfig) -> usize {
        let worker = Worker::start(config).await.expect("start worker");
        eventually("the worker to connect to RabbitMQ", || async { worker.is_connected().then_some(()) }).await;
        self.workers.push(Some(worker));
        self.workers.len() - 1
    }

    /// In-process API node `index` (panics if stopped).
    pub fn api(&self, index: usize) -> &ApiServer {
        self.apis[index].as_ref().expect("api node running")
    }

    /// In-process worker `index` (panics if stopped).
    pub fn worker(&self, index: usize) -> &Worker {
        self.workers[index].as_ref().expect("worker running")
    }

    /// Stops worker `index` gracefully.
    pub async fn stop_worker(&mut self, index: usize) {
        if let Some(worker) = self.workers.get_mut(index).and_then(Option::take) {
            worker.stop().await;
        }
    }

    /// Stops worker `index` abruptly, as if it crashed: in-flight jobs are not finished.
    pub async fn kill_worker(&mut self, index: usize) {
        if let Some(worker) = self.workers.get_mut(index).and_then(Option::take) {
            worker.abort().await;
        }
    }

    /// Stops API node `index` gracefully (its clients see close code 1012).
    pub async fn stop_api(&mut self, index: usize) {
        if let Some(server) = self.apis.get_mut(index).and_then(Option::take) {
            server.shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(20), server.wait()).await;
        }
    }

    /// A broker connection of the test's own (topology declared), e.g. to publish jobs by hand.
    pub async fn broker(&self) -> Broker {
        let broker = Broker::new(self.topology());
        let stop = self.own_brokers.child_token();
        tokio::spawn(supervise(broker.clone(), self.services.amqp.clone(), "courier test".into(), stop, |_| std::future::pending()));
        broker.connected().await;
        broker
    }

    /// Whether a queue exists.
    pub async fn queue_exists(&self, queue: &str) -> bool {
        let Ok(connection) = Connection::connect(&self.services.amqp, ConnectionProperties::default()).await else { return false };
        let exists = match connection.create_channel().await {
            Ok(channel) => channel
                .queue_declare(
                    queue.into(),
                    lapin::options::QueueDeclareOptions { passive: true, ..Default::default() },
                    lapin::types::FieldTable::default(),
                )
                .await
                // An exclusive queue of another connection answers RESOURCE_LOCKED: it exists.
                .map_or_else(|error| matches!(error.kind(), lapin::ErrorKind::ProtocolError(e) if e.get_id() == 405), |_| true),
            Err(_) => false,
        };
        let _ = connection.close(200, "done".into()).await;
        exists
    }

    /// Messages in a queue of this environment (0 if it does not exist).
    pub async fn queue_depth(&self, queue: &str) -> u32 {
        let Ok(connection) = Connection::connect(&self.services.amqp, ConnectionProperties::default()).await else { return 0 };
        let depth = match connection.create_channel().await {
            Ok(channel) => channel
                .queue_declare(
                    queue.into(),
                    lapin::options::QueueDeclareOptions { passive: true, ..Default::default() },
                    lapin::types::FieldTable::default(),
                )
                .await
                .map(|q| q.message_count())
                .unwrap_or(0),
            Err(_) => 0,
        };
        let _ = connection.close(200, "done".into()).await;
        depth
    }

    /// Starts an API node with the default test configuration.
    pub async fn start_api(&mut self) -> String {
        let config = self.api_config();
        self.start_api_with(config).await
    }

    /// Starts an API node; returns its `host:port`.
    pub async fn start_api_with(&mut self, config: ApiConfig) -> String {
        let server = ApiServer::start(config).await.expect("start api");
        let addr = server.local_addr.to_string();
        let ready = crate::Rest::new(&addr, None);
        eventually("the API node to be ready", || {
            let ready = ready.clone();
            async move { ready.get("/readyz").await.0.is_success().then_some(()) }
        })
        .await;
        self.apis.push(Some(server));
        addr
    }

    /// A valid HS256 token for `user`.
    pub fn token(&self, user: &str) -> String {
        self.token_with(user, Some(&format!("{user} name")))
    }

    pub fn token_with(&self, user: &str, name: Option<&str>) -> String {
        let request = auth::DevTokenRequest {
            user_id: user.into(),
            name: name.map(str::to_owned),
            ttl: Duration::from_secs(3600),
            ..Default::default()
        };
        auth::sign_hs256(JWT_SECRET, &request).expect("sign")
    }

    /// A valid HS256 token for `user` whose `did` claim names `device`.
    pub fn device_token(&self, user: &str, device: &str) -> String {
        let request = auth::DevTokenRequest {
            user_id: user.into(),
            name: Some(format!("{user} name")),
            device_id: Some(device.into()),
            ttl: Duration::from_secs(3600),
            ..Default::default()
        };
        auth::sign_hs256(JWT_SECRET, &request).expect("sign")
    }

    /// The broker topology of this environment.
    /// The user's parked messages: per chat, the messages of others they
    /// still lack up to `parked_seq`.
    pub async fn parked_count(&self, user: &str) -> i64 {
        sqlx::query_scalar(
            "SELECT COALESCE(sum(n), 0)::int8 FROM chat_members cm
              CROSS JOIN LATERAL (SELECT count(*) AS n FROM messages m
                                   WHERE m.chat_id = cm.chat_id AND m.sender_id <> cm.user_id
                                     AND m.seq > GREATEST(cm.delivered_seq, cm.expired_seq, cm.joined_seq)
                                     AND m.seq <= cm.parked_seq) p
              WHERE cm.user_id = $1",
        )
        .bind(user)
        .fetch_one(&self.db)
        .await
        .unwrap()
    }

    pub fn topology(&self) -> Topology {
        Topology::new(&self.prefix, &self.retry).sharded(self.delivery_queues.into())
    }

    /// Stops servers and deletes the database and broker objects.
    /// Stops the servers, checks the invariants every test must leave intact
    /// (the member watermarks agree with `message_status`), and removes the
    /// database and queues.
    pub async fn cleanup(mut self) {
        self.stop_servers().await;
        let invariants = crate::watermarks::check_watermarks(&self.db).await;
        cleanup(&self.services, &self.db_name, &self.topology()).await;
        self.cleaned = true;
        // A database the test stopped cannot be read: nothing to check there.
        if let Err(crate::watermarks::Disagreement::Wrong(wrong)) = invariants {
            panic!("{wrong}");
        }
    }

    async fn stop_servers(&mut self) {
        for server in self.apis.drain(..).flatten() {
            server.shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(10), server.wait()).await;
        }
        for worker in self.workers.drain(..).flatten() {
            worker.abort().await;
        }
        self.own_brokers.cancel();
        self.db.close().await;
    }
}

impl Drop for TestEnv {
    /// A failed test still leaves nothing behind.
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        for server in self.apis.iter().flatten() {
            server.shutdown();
        }
        let db_name = self.db_name.clone();
        let topology = self.topology();
        let services = self.services.clone();
        let _ = std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                runtime.block_on(cleanup(&services, &db_name, &topology));
            }
        })
        .join();
    }
}

async fn cleanup(services: &Services, db_name: &str, topology: &Topology) {
    if let Ok(mut admin) = PgConnection::connect(&format!("{}/postgres", services.postgres)).await {
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)")))
            .execute(&mut admin)
            .await;
    }
    if let Ok(connection) = Connection::connect(&services.amqp, ConnectionProperties::default()).await {
        if let Ok(channel) = connection.create_channel().await {
            let (exchanges, queues) = topology.durable_names();
            for queue in queues {
                let _ = channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
            }
            for exchange in exchanges {
                let _ = channel.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default()).await;
            }
        }
        let _ = connection.close(200, "cleanup".into()).await;
    }
}
