//! `courier-api`: holds client sockets and serves REST. Stores sends, publishes
//! delivery jobs, and hands pushed messages to the right sockets.

pub mod config;
pub mod connection;
mod drain_control;
pub mod events;
pub mod http;
mod inbox;
pub mod outbox;
mod presence;
mod push;
mod ratelimit;
mod registry;
mod send;
pub mod session;
pub mod state;
pub mod socketio;
mod status_writer;
pub mod transport;
mod typing;
pub mod ws;

use std::{net::SocketAddr, time::Duration};

use courier_shared::{
    auth::{JwtConfigError, JwtVerifier},
    broker::{self, Broker, Topology},
    db::{self, Plans},
    metrics::{Metrics, Role},
};
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

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
    #[error("cannot register this node: {0}")]
    Register(sqlx::Error),
    #[error("cannot listen on {addr}: {source}; set {setting} to a free address")]
    Bind { setting: &'static str, addr: SocketAddr, source: std::io::Error },
}

/// A running API node.
pub struct ApiServer {
    pub local_addr: SocketAddr,
    /// Where the admin API listens (ADMIN_ADDR).
    pub admin_addr: SocketAddr,
    pub node_id: String,
    state: AppState,
    task: tokio::task::JoinHandle<()>,
}

impl ApiServer {
    /// Starts the node: database (migrated), broker connection, HTTP listener.
    pub async fn start(mut config: ApiConfig) -> Result<Self, StartError> {
        let node_id = config.resolve_node_id();
        let jwt = JwtVerifier::new(&config.jwt, config.dev_tokens)?;
        if jwt.uses_dev_secret {
            tracing::warn!("no JWT_SECRET: tokens are checked with the public built-in secret (--insecure-dev-secret or --dev-tokens); anyone can sign tokens, never run this in production");
        }
        let common = &config.common;
        let metrics = Metrics::new(Role::Api);
        let opened = Some(metrics.db_connections_opened.clone());
        let db =
            db::connect_observed(&common.database_url, common.database_max_connections, DATABASE_PATIENCE, opened, Plans::PerCall).await?;
        db::migrate(&db).await?;
        db::presence::register_node(&db, &node_id).await.map_err(StartError::Register)?;
        // Connections that keep one plan per statement, for the hot writes:
        // one per send transaction in flight (`db::messages::LOCK_CHATS` and
        // on), one for the acknowledgement writer, one for the outbox deletes.
        let db_kept_plans = db::connect_observed(
            &common.database_url,
            u32::try_from(config.send_batch_concurrency.max(1) + 2).unwrap_or(u32::MAX),
            DATABASE_PATIENCE,
            None, // replaced every minute by design: not counted
            Plans::Kept,
        )
        .await?;

        let broker = Broker::new(Topology::new(&common.broker_prefix, &common.retry).replicated(common.broker_replicated).sharded(common.delivery_queues.into()));
        let (listener, local_addr) = bind("API_ADDR", config.api_addr).await?;
        let (admin_listener, admin_addr) = bind("ADMIN_ADDR", config.admin_addr).await?;

        let state = AppState::new(Inner {
            sends: send::SendBatcher::start(db_kept_plans.clone(), config.send_batch_max, config.send_batch_concurrency),
            jobs: outbox::JobPublisher::start(db_kept_plans.clone(), broker.clone(), config.outbox_relay_after),
            status_writer: status_writer::StatusWriter::start(db_kept_plans.clone(), broker.clone()),
            rate_limit: ratelimit::UserRateLimit::new(config.rate_limit_per_second, config.rate_limit_burst)
                .counting(metrics.rate_limited.clone()),
            typing: typing::TypingRelay::start(
                broker.clone(),
                ratelimit::UserRateLimit::per_window(config.typing_rate_limit, config.typing_rate_window)
                    .counting(metrics.rate_limited.clone()),
            ),
            sessions: registry::Sessions::default(),
            connections: TaskTracker::new(),
            stopping: CancellationToken::new(),
            metrics,
            config,
            node_id: node_id.clone(),
            db,
            db_kept_plans,
            broker,
            jwt,
        });

        let broker_stop = CancellationToken::new();
        let push_state = state.clone();
        tokio::spawn(broker::supervise(
            state.broker.clone(),
            state.config.common.amqp_url.clone(),
            format!("courier-api {node_id}"),
            broker_stop.clone(),
            move |link| push::consume(push_state.clone(), link),
        ));
        let background_stop = CancellationToken::new();
        // JWT_JWKS_URL: first load (retried until it answers), then periodic refreshes.
        tokio::spawn(state.jwt.keep_keys_fresh(background_stop.clone()));
        tokio::spawn(presence::heartbeat(state.clone(), state.config.heartbeat_interval, background_stop.clone()));
        tokio::spawn(outbox::relay(
            state.db.clone(),
            state.broker.clone(),
            state.config.outbox_relay_after,
            state.config.outbox_relay_interval,
            background_stop.clone(),
        ));

        let (sio_layer, sio) = socketio::layer(state.clone());
        let app = http::router(state.clone(), sio_layer);
        let admin_app = http::admin_router(state.clone());
        // Socket.IO transports are closed as the node stops, so their clients
        // reconnect (to another node) by themselves; a long poll would
        // otherwise hold up the graceful stop.
        let stopping = state.stopping.clone();
        tokio::spawn(async move {
            stopping.cancelled().await;
            if tokio::time::timeout(socketio::CLOSE_PATIENCE, sio.close()).await.is_err() {
                tracing::warn!("Socket.IO transports still open");
            }
        });
        let serve_state = state.clone();
        // A chat protocol writes many small frames both ways: without
        // TCP_NODELAY the second of two back-to-back writes (an answer and
        // `message:sent`) waits for the client's delayed ACK, ~40 ms.
        let nodelay = state.config.tcp_nodelay;
        let listener = listener.tap_io(move |tcp| {
            if let Err(error) = tcp.set_nodelay(nodelay) {
                tracing::debug!(%error, "cannot set TCP_NODELAY on a client socket");
            }
        });
        let task = tokio::spawn(async move {
            let stopping = serve_state.stopping.clone();
            let server = axum::serve(listener, app).with_graceful_shutdown(stopping.clone().cancelled_owned());
            let admin = axum::serve(admin_listener, admin_app).with_graceful_shutdown(stopping.cancelled_owned());
            let (served, admin_served) = tokio::join!(server.into_future(), admin.into_future());
            if let Err(error) = served.and(admin_served) {
                tracing::error!(%error, "HTTP server failed");
            }
            shutdown(&serve_state).await;
            background_stop.cancel();
            broker_stop.cancel();
        });
        tracing::info!(%local_addr, %admin_addr, %node_id, "courier-api listening");
        Ok(Self { local_addr, admin_addr, node_id, state, task })
    }

    /// The node's broker handle (connection state and counters).
    pub fn broker(&self) -> &Broker {
        &self.state.broker
    }

    /// Asks the node to stop: no new connections, clients told to reconnect
    /// (close code 1012), pending acks written, outbox flushed.
    pub fn shutdown(&self) {
        self.state.stopping.cancel();
    }

    /// Waits until the node has stopped.
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Binds one of the node's listeners; a failure names the setting to change.
async fn bind(setting: &'static str, addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartError> {
    let error = |source| StartError::Bind { setting, addr, source };
    let listener = TcpListener::bind(addr).await.map_err(error)?;
    let local_addr = listener.local_addr().map_err(error)?;
    Ok((listener, local_addr))
}

/// The end of a graceful stop: every session closed, acks written, presence
/// rows removed, and nothing left in the outbox that this node could publish.
async fn shutdown(state: &AppState) {
    let grace = state.config.shutdown_grace;
    state.connections.close();
    if tokio::time::timeout(grace, state.connections.wait()).await.is_err() {
        tracing::warn!(open = state.sessions.len(), "connections still open after the grace period");
    }
    state.status_writer.flush().await;
    match db::presence::unregister_node(&state.db, &state.node_id).await {
        Ok(offline) => {
            // Connections that outlived the grace period: their users are offline now.
            for (user_id, _) in offline {
                presence::announce_offline(state, &user_id).await;
            }
        }
        Err(error) => tracing::warn!(%error, "cannot remove this node's presence rows; a worker will reap them"),
    }
    let flush = async {
        while matches!(outbox::relay_once(&state.db, &state.broker, Duration::ZERO).await, Ok(n) if n > 0) {}
    };
    let _ = tokio::time::timeout(grace, flush).await;
    tracing::info!("courier-api stopped");
}
