//! The worker's `GET /metrics` listener (METRICS_ADDR) and the periodic
//! refresh of the backlog gauges, read from the members' watermarks (index
//! ranges of the log for the members behind, nothing per message and
//! recipient) instead of one label per user.

use std::{sync::Arc, time::Duration};

use axum::{Router, extract::State, http::header::CONTENT_TYPE, response::IntoResponse, routing::get};
use courier_shared::{
    db::{deadletters, ops},
    metrics::{self, Metrics},
};
use tokio::net::TcpListener;

use crate::context::Context;

/// Serves `/metrics` (and `/healthz`) until the worker stops.
pub async fn serve(ctx: Arc<Context>, listener: TcpListener) {
    let app = Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(ctx.clone());
    let stopping = ctx.stopping.clone();
    if let Err(error) = axum::serve(listener, app).with_graceful_shutdown(stopping.cancelled_owned()).await {
        tracing::error!(%error, "metrics listener failed");
    }
}

async fn scrape(State(ctx): State<Arc<Context>>) -> impl IntoResponse {
    Metrics::sync_counter(&ctx.metrics.broker_reconnects, ctx.broker.reconnects());
    ctx.metrics.observe_pool("main", &ctx.db);
    ctx.metrics.observe_pool("kept", &ctx.db_kept_plans);
    ([(CONTENT_TYPE, metrics::CONTENT_TYPE)], ctx.metrics.render())
}

/// Every METRICS_REFRESH_INTERVAL: the backlog in total, parked, its age, and dead letters.
pub async fn refresh(ctx: Arc<Context>) {
    loop {
        if let Err(error) = refresh_once(&ctx).await {
            tracing::debug!(%error, "cannot refresh the backlog gauges");
        }
        tokio::select! {
            () = tokio::time::sleep(ctx.config.metrics_refresh_interval.max(Duration::from_millis(50))) => {}
            () = ctx.stopping.cancelled() => return,
        }
    }
}

async fn refresh_once(ctx: &Context) -> Result<(), sqlx::Error> {
    let (undelivered, parked, oldest) = ops::backlog(&ctx.db).await?;
    ctx.metrics.undelivered.set(undelivered);
    ctx.metrics.parked.set(parked);
    ctx.metrics.oldest_undelivered_age.set(oldest);
    ctx.metrics.dead_letters.set(deadletters::count(&ctx.db).await?);
    Ok(())
}
