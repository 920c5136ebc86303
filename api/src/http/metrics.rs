//! `GET /metrics`: this node's Prometheus series. Values that live elsewhere
//! (open connections, broker reconnects, pool, outbox lag) are read at scrape time.

use std::time::Duration;

use axum::{extract::State, http::header::CONTENT_TYPE, response::IntoResponse};
use courier_shared::{
    db::ops,
    metrics::{self, Metrics},
};

use crate::state::AppState;

/// The outbox query must not hold up a scrape while PostgreSQL is down.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// This node's series in the Prometheus text format.
#[utoipa::path(
    get, path = "/metrics", tag = "operations", operation_id = "metrics",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4.", content_type = "text/plain; version=0.0.4", body = String)),
)]
pub async fn scrape(State(state): State<AppState>) -> impl IntoResponse {
    let m = &state.metrics;
    m.connections_open.set(i64::try_from(state.sessions.len()).unwrap_or(i64::MAX));
    Metrics::sync_counter(&m.broker_reconnects, state.broker.reconnects());
    m.observe_pool("main", &state.db);
    m.observe_pool("kept", &state.db_kept_plans);
    match tokio::time::timeout(QUERY_TIMEOUT, ops::outbox_lag(&state.db)).await {
        Ok(Ok((pending, oldest))) => {
            m.outbox_pending.set(pending);
            m.outbox_oldest_age.set(oldest);
        }
        // Keep the last known values; the pool metrics show the database trouble.
        Ok(Err(error)) => tracing::debug!(%error, "cannot read the outbox lag"),
        Err(_) => tracing::debug!("reading the outbox lag timed out"),
    }
    ([(CONTENT_TYPE, metrics::CONTENT_TYPE)], m.render())
}
