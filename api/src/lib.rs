//! `courier-api`: holds client sockets and serves REST. Stores sends, publishes
//! delivery jobs, and hands pushed messages to the right sockets.

pub mod config;
pub mod events;
pub mod http;
mod send;
pub mod state;
pub mod ws;

use std::{net::SocketAddr, time::Duration};

use courier_shared::{
    auth::{JwtConfigError, JwtVerifier},
    broker::{self, Broker, Topology},
    db,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::ApiConfig;
use state::{AppState, Inner};

/// How long start-up waits for PostgreSQL before giving up.
const DATABASE_PATIENCE: Duration = Duration::from_secs(60);

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Jwt(#[from] JwtConfigError),
    #[error(transparent)]
    Database(#[from] db::SetupError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// A running API node.
pub struct ApiServer {
    pub local_addr: SocketAddr,
    pub node_id: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl ApiServer {
    /// Starts the node: database (migrated), broker connection, HTTP listener.
    pub async fn start(mut config: ApiConfig) -> Result<Self, StartError> {
        let node_id = config.resolve_node_id();
        let jwt = JwtVerifier::new(&config.jwt)?;
        if jwt.uses_dev_secret {
            tracing::warn!("JWT_SECRET is not set: using the built-in development secret; never do this in production");
        }
        let common = &config.common;
        let db = db::connect(&common.database_url, common.database_max_connections, DATABASE_PATIENCE).await?;
        db::migrate(&db).await?;

        let broker = Broker::new(Topology::new(&common.broker_prefix, &common.retry));
        let listener = TcpListener::bind(config.api_addr)
            .await
            .map_err(|source| StartError::Bind { addr: config.api_addr, source })?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Bind { addr: config.api_addr, source })?;

        let shutdown = CancellationToken::new();
        let broker_shutdown = CancellationToken::new();
        tokio::spawn(broker::supervise(
            broker.clone(),
            common.amqp_url.clone(),
            format!("courier-api {node_id}"),
            broker_shutdown.clone(),
            |_link| std::future::pending(),
        ));

        let sends = crate::send::SendBatcher::start(db.clone(), config.send_batch_max, config.send_batch_concurrency);
        let state = AppState::new(Inner { config, node_id: node_id.clone(), db, broker, jwt, sends });
        let app = http::router(state.clone());
        let stopping = shutdown.clone();
        let task = tokio::spawn(async move {
            let server = axum::serve(listener, app).with_graceful_shutdown(stopping.cancelled_owned());
            if let Err(error) = server.await {
                tracing::error!(%error, "HTTP server failed");
            }
            broker_shutdown.cancel();
        });
        tracing::info!(%local_addr, %node_id, "courier-api listening");
        Ok(Self { local_addr, node_id, shutdown, task })
    }

    /// Asks the node to stop.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits until the node has stopped.
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}
