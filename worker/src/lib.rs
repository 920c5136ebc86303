//! `courier-worker`: consumes delivery jobs and routes them to the API nodes
//! holding the recipients' sockets, retries offline recipients through the
//! retry tiers, parks what is left, and drains a user's backlog on connect.

pub mod config;
mod context;
mod control;
mod deadletters;
mod deliver;
mod drain;
mod janitor;
mod metrics;
mod notify;
mod presence;
mod reaper;
mod route;
mod status;
pub mod webhook;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use courier_shared::{
    broker::{self, Broker, Link, Topology},
    db::{self, Plans},
    metrics::{Metrics, Role},
};
use tokio::net::TcpListener;
use tokio::{sync::Semaphore, task::JoinSet};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use config::WorkerConfig;
use context::Context;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const DATABASE_PATIENCE: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Database(#[from] db::SetupError),
    #[error(
        "cannot listen on {addr} for /metrics: {source}; set METRICS_ADDR to a free address \
         (each worker on a host needs its own port; 127.0.0.1:0 picks any)"
    )]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Webhook(#[from] webhook::WebhookConfigError),
}

/// A running worker.
pub struct Worker {
    pub worker_id: String,
    /// Where `GET /metrics` listens.
    pub metrics_addr: SocketAddr,
    ctx: Arc<Context>,
    broker_stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Worker {
    pub async fn start(mut config: WorkerConfig) -> Result<Self, StartError> {
        let worker_id = config.resolve_worker_id();
        let common = &config.common;
        // The port first: a taken one is a setting to change, not worth waiting for the database.
        let bind_error = |source| StartError::Bind { addr: config.metrics_addr, source };
        let listener = TcpListener::bind(config.metrics_addr).await.map_err(bind_error)?;
        let metrics_addr = listener.local_addr().map_err(bind_error)?;
        let metrics = Metrics::new(Role::Worker);
        let opened = Some(metrics.db_connections_opened.clone());
        let db =
            db::connect_observed(&common.database_url, common.database_max_connections, DATABASE_PATIENCE, opened, Plans::PerCall)
                .await?;
        db::migrate(&db).await?;
        let db_kept_plans = db::connect_observed(
            &common.database_url,
            (common.database_max_connections / 2).max(2),
            DATABASE_PATIENCE,
            None, // replaced every minute by design: not counted
            Plans::Kept,
        )
        .await?;
        let webhook = webhook::Webhook::start(&config.webhook, db.clone(), metrics.clone())?;
        let broker = Broker::new(Topology::new(&common.broker_prefix, &common.retry).replicated(common.broker_replicated).sharded(common.delivery_queues.into()));
        let ctx = Arc::new(Context {
            drain_slots: Arc::new(Semaphore::new(config.drain_concurrency.max(1))),
            drains: Default::default(),
            stopping: CancellationToken::new(),
            in_flight: TaskTracker::new(),
            metrics,
            webhook,
            worker_id: worker_id.clone(),
            config,
            db,
            db_kept_plans,
            broker,
        });
        tokio::spawn(reaper::run(ctx.clone()));
        tokio::spawn(janitor::run(ctx.clone()));
        tokio::spawn(metrics::refresh(ctx.clone()));
        tokio::spawn(metrics::serve(ctx.clone(), listener));
        let broker_stop = CancellationToken::new();
        let run_ctx = ctx.clone();
        let task = tokio::spawn(broker::supervise(
            ctx.broker.clone(),
            ctx.config.common.amqp_url.clone(),
            format!("courier-worker {worker_id}"),
            broker_stop.clone(),
            move |link| consume_all(run_ctx.clone(), link),
        ));
        tracing::info!(%worker_id, %metrics_addr, "courier-worker started");
        Ok(Self { worker_id, metrics_addr, ctx, broker_stop, task })
    }

    /// The worker's broker handle (connection state and counters).
    pub fn broker(&self) -> &Broker {
        &self.ctx.broker
    }

    /// Whether the worker is connected to RabbitMQ.
    pub fn is_connected(&self) -> bool {
        self.ctx.broker.is_connected()
    }

    /// Stops taking work, lets in-flight batches finish (up to SHUTDOWN_GRACE),
    /// then closes the broker connection: whatever is still unacked goes back
    /// to the queue for another worker.
    pub async fn stop(self) {
        self.ctx.stopping.cancel();
        self.ctx.in_flight.close();
        if tokio::time::timeout(self.ctx.config.shutdown_grace, self.ctx.in_flight.wait()).await.is_err() {
            tracing::warn!("in-flight work did not finish within the grace period; it returns to the queues");
        }
        self.broker_stop.cancel();
        let _ = self.task.await;
        tracing::info!("courier-worker stopped");
    }

    /// Stops at once, like a crash: nothing is finished, unacked jobs return to the queues.
    pub async fn abort(self) {
        self.ctx.stopping.cancel();
        self.broker_stop.cancel();
        let _ = self.task.await;
    }
}

/// Every consumer of this worker on one connection; returns when one of them stops.
async fn consume_all(ctx: Arc<Context>, link: Arc<Link>) -> Result<(), BoxError> {
    let mut consumers = JoinSet::new();
    // DELIVERY_CONSUMERS per delivery queue: every worker serves every shard.
    for shard in 0..ctx.broker.topology().shards() {
        for index in 0..ctx.config.delivery_consumers.max(1) {
            consumers.spawn(deliver::consume(ctx.clone(), link.clone(), shard, index));
        }
    }
    consumers.spawn(presence::consume(ctx.clone(), link.clone()));
    consumers.spawn(status::consume(ctx.clone(), link.clone()));
    consumers.spawn(control::consume(ctx.clone(), link.clone()));
    consumers.spawn(deadletters::consume(ctx.clone(), link.clone()));
    let first = consumers.join_next().await;
    if ctx.stopping.is_cancelled() {
        // Graceful stop: every consumer finishes its batch; the connection
        // stays for their acks until the broker is stopped.
        while consumers.join_next().await.is_some() {}
        std::future::pending::<()>().await;
    }
    consumers.abort_all();
    match first {
        Some(Ok(result)) => result,
        Some(Err(join_error)) => Err(Box::new(join_error)),
        None => Ok(()),
    }
}
