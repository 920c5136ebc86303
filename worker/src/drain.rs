//! Reconnect drain: what the connection's device has not acknowledged (the
//! guide's getUndeliveredMessages, per device: the log after the device's
//! cursor in each chat, parked or still retrying), in seq order per chat,
//! pushed to the new connection in pages. The next page goes only when the client has
//! acknowledged enough of the previous ones (credit from the API node), so a
//! user back after a week is neither flooded nor starved, and other users'
//! deliveries keep flowing through the same push queue meanwhile. Then the
//! statuses of the user's messages the device has not been shown, then the
//! end marker.

use std::sync::Arc;

use courier_shared::{
    db::{log, status},
    job::{NodeItem, PresenceEvent},
};
use tokio::sync::watch;
use uuid::Uuid;

use crate::{
    BoxError,
    context::{Context, Credit},
    route,
};

/// Starts a drain for the connection in `event` on its own task once a drain
/// slot is free (so at most DRAIN_CONCURRENCY run at once). A drain starts
/// from the device's cursors, so one asked for again (`Resync`) resumes where
/// the client's acknowledgements got to; `_resume_after` (an inbox position
/// of the per-recipient rows) is no longer needed.
pub async fn start(ctx: Arc<Context>, event: &PresenceEvent, _resume_after: i64) {
    let Ok(slot) = ctx.drain_slots.clone().acquire_owned().await else { return };
    let event = event.clone();
    tokio::spawn(async move {
        let drain_id = Uuid::now_v7();
        let credit = ctx.drains.register(drain_id);
        let span = tracing::info_span!("drain", %drain_id, user_id = %event.user_id, node_id = %event.node_id);
        let started = std::time::Instant::now();
        let result = tracing::Instrument::instrument(run(&ctx, &event, drain_id, credit), span).await;
        ctx.drains.unregister(drain_id);
        drop(slot);
        ctx.metrics.drain_duration.observe(started.elapsed().as_secs_f64());
        ctx.metrics.drains.with_label_values(&[if result.is_ok() { "complete" } else { "stopped" }]).inc();
        if let Err(error) = result {
            tracing::info!(%error, user_id = %event.user_id, "drain stopped; the connection asks again if it is still there");
        }
    });
}

#[derive(Debug, thiserror::Error)]
enum Stopped {
    #[error("the connection is gone")]
    Gone,
    #[error("the client acknowledged nothing for too long")]
    NoCredit,
}

async fn run(
    ctx: &Context,
    event: &PresenceEvent,
    drain_id: Uuid,
    mut credit: watch::Receiver<Credit>,
) -> Result<(), BoxError> {
    let started = std::time::Instant::now();
    let (user_id, device_id) = (&event.user_id, &event.device_id);
    let backlog = log::device_snapshot(&ctx.db_kept_plans, user_id, device_id).await?;
    let pending = backlog.pending();
    tracing::info!(%user_id, %device_id, pending, "user came online: delivering what this device has not acknowledged");
    send(ctx, event, NodeItem::DrainBegin {
        connection_id: event.connection_id,
        drain_id,
        worker_id: ctx.worker_id.clone(),
        baselines: backlog.baselines(),
    })
    .await?;

    let page_size = ctx.config.drain_page.max(1);
    let window = u64::from(ctx.config.drain_window.max(page_size));
    let mut sent = 0u64;
    let mut drained = 0u64;
    let mut position = (Uuid::nil(), 0);
    loop {
        wait_for_room(ctx, &mut credit, sent, window - u64::from(page_size)).await?;
        let page = log::device_page(&ctx.db_kept_plans, user_id, device_id, &backlog, position, i64::from(page_size)).await?;
        let Some(last) = page.last() else { break };
        position = (last.chat_id, last.seq);
        let full = page.len() == page_size as usize;
        let shown = page.iter().filter(|delivery| !delivery.silent).count() as u64;
        sent += page.len() as u64;
        drained += shown;
        ctx.metrics.drained_messages.inc_by(shown);
        let item = NodeItem::DrainPage { connection_id: event.connection_id, drain_id, deliveries: page, statuses: Vec::new() };
        send(ctx, event, item).await?;
        if !full {
            break;
        }
    }

    // Statuses of the user's own messages this device has not been shown.
    let mut owed = status::OwedPosition::default();
    loop {
        wait_for_room(ctx, &mut credit, sent, window - u64::from(page_size)).await?;
        let statuses = status::owed_statuses(&ctx.db_kept_plans, user_id, device_id, &mut owed, i64::from(page_size)).await?;
        if statuses.is_empty() {
            break;
        }
        let full = statuses.len() == page_size as usize;
        sent += statuses.len() as u64;
        send(ctx, event, NodeItem::DrainPage { connection_id: event.connection_id, drain_id, deliveries: Vec::new(), statuses })
            .await?;
        if !full {
            break;
        }
    }

    send(ctx, event, NodeItem::DrainEnd { connection_id: event.connection_id, drain_id, count: drained }).await?;
    tracing::info!(%user_id, drained, elapsed_ms = started.elapsed().as_millis() as u64, "drain complete");
    Ok(())
}

/// Waits until at most `limit` drained frames are unacknowledged.
async fn wait_for_room(ctx: &Context, credit: &mut watch::Receiver<Credit>, sent: u64, limit: u64) -> Result<(), BoxError> {
    loop {
        let current = *credit.borrow_and_update();
        if current.cancelled {
            return Err(Stopped::Gone.into());
        }
        if sent.saturating_sub(current.acked) <= limit {
            return Ok(());
        }
        match tokio::time::timeout(ctx.config.drain_credit_timeout, credit.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(Stopped::Gone.into()),
            Err(_) => return Err(Stopped::NoCredit.into()),
        }
    }
}

async fn send(ctx: &Context, event: &PresenceEvent, item: NodeItem) -> Result<(), BoxError> {
    let routed = route::to_nodes(&ctx.broker, [(event.node_id.clone(), vec![item])].into_iter().collect()).await?;
    if routed.unroutable.is_empty() { Ok(()) } else { Err(Stopped::Gone.into()) }
}
