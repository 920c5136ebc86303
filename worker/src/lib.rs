//! `courier-worker`: consumes delivery jobs and routes them to the API nodes
//! holding the recipients' sockets, retries offline recipients through the
//! retry tiers, parks what is left, and drains a user's backlog on connect.

pub mod config;

use std::time::Duration;

use courier_shared::{
    broker::{self, Broker, Topology},
    db,
};
use tokio_util::sync::CancellationToken;

pub use config::WorkerConfig;

const DATABASE_PATIENCE: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Database(#[from] db::SetupError),
}

/// A running worker.
pub struct Worker {
    pub worker_id: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Worker {
    pub async fn start(mut config: WorkerConfig) -> Result<Self, StartError> {
        let worker_id = config.resolve_worker_id();
        let common = &config.common;
        let db = db::connect(&common.database_url, common.database_max_connections, DATABASE_PATIENCE).await?;
        db::migrate(&db).await?;
        let broker = Broker::new(Topology::new(&common.broker_prefix, &common.retry));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(broker::supervise(
            broker,
            common.amqp_url.clone(),
            format!("courier-worker {worker_id}"),
            shutdown.clone(),
            |_link| std::future::pending(),
        ));
        tracing::info!(%worker_id, "courier-worker started");
        Ok(Self { worker_id, shutdown, task })
    }

    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    pub async fn wait(self) {
        let _ = self.task.await;
    }
}
