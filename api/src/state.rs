//! What every request and connection handler shares.

use std::sync::Arc;

use courier_shared::{auth::JwtVerifier, broker::Broker, metrics::Metrics};
use sqlx::PgPool;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    config::ApiConfig, outbox::JobPublisher, ratelimit::UserRateLimit, registry::Sessions, send::SendBatcher,
    status_writer::StatusWriter, typing::TypingRelay,
};

/// Shared handles; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

pub struct Inner {
    pub config: ApiConfig,
    pub node_id: String,
    pub db: PgPool,
    /// Connections that keep plans ([`Plans::Kept`](courier_shared::db::Plans::Kept)),
    /// for the sends, the acknowledgement writer and the outbox deletes: only
    /// for statements checked in `tests/tests/plans.rs`.
    pub db_kept_plans: PgPool,
    pub broker: Broker,
    pub jwt: JwtVerifier,
    pub sends: SendBatcher,
    pub jobs: JobPublisher,
    pub status_writer: StatusWriter,
    pub rate_limit: UserRateLimit,
    /// Typing indicators: their own per-user limit, and their way to other nodes.
    pub typing: TypingRelay,
    /// The connections this node holds.
    pub sessions: Sessions,
    /// Every connection's task, so shutdown can wait for them.
    pub connections: TaskTracker,
    /// Cancelled when the node starts shutting down: sessions close with 1012.
    pub stopping: CancellationToken,
    /// This node's Prometheus series (`GET /metrics`).
    pub metrics: Metrics,
}

impl AppState {
    pub fn new(inner: Inner) -> Self {
        Self { inner: Arc::new(inner) }
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.inner
    }
}
