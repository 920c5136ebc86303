//! Retention: messages that waited longer than MESSAGE_RETENTION for their
//! recipient become `expired` and their senders are told (the ordinary
//! message:status path); dead letters past DEAD_LETTER_RETENTION, outbox
//! rows with nothing left to publish and devices not seen for DEVICE_TTL are
//! deleted, so no table grows without bound. Presence rows of dead nodes are
//! the reaper's job (reaper.rs).

use std::{sync::Arc, time::Duration};

use courier_shared::{
    db::{deadletters, devices, ops},
    job::StatusChanges,
    broker::PublishOptions,
};

use crate::{BoxError, context::Context};

/// Log entries expired per statement (about); the sweep repeats until none are due.
const EXPIRE_BATCH: i64 = 1000;
/// Devices dropped per statement; the sweep repeats until none are due.
const DEVICE_BATCH: i64 = 1000;
/// Outbox rows this old with no recipient left are garbage.
const OUTBOX_GARBAGE_AGE: Duration = Duration::from_secs(3600);

pub async fn run(ctx: Arc<Context>) {
    loop {
        if let Err(error) = sweep(&ctx).await {
            tracing::warn!(%error, "janitor sweep failed; retrying next interval");
        }
        tokio::select! {
            () = tokio::time::sleep(ctx.config.janitor_interval.max(Duration::from_millis(50))) => {}
            () = ctx.stopping.cancelled() => return,
        }
    }
}

async fn sweep(ctx: &Context) -> Result<(), BoxError> {
    loop {
        // Each call expires whole ranges of some members' backlogs (a long one
        // is cut and continues in the next call), so a short answer does not
        // mean nothing is due: repeat until one finds nothing.
        let expired = ops::expire(&ctx.db, ctx.config.message_retention, EXPIRE_BATCH).await?;
        if expired.is_empty() {
            break;
        }
        let count = expired.len();
        for change in &expired {
            tracing::info!(message_id = %change.update.message_id, recipient_id = %change.update.user_id,
                reason = "retention", "delivery failed: message expired undelivered");
        }
        ctx.metrics.delivery("expired", count as u64);
        // The worker's status consumer routes these to the senders' sockets; an
        // offline sender's devices get them on reconnect (their told_expired_seq
        // is behind).
        let exchange = ctx.broker.topology().status();
        let body = StatusChanges { changes: expired, moves: Vec::new() };
        if let Err(error) = ctx.broker.publish_json(&exchange, "", &body, PublishOptions::persistent()).await {
            tracing::warn!(%error, count, "cannot publish expiries; senders get them on reconnect");
        }
        if ctx.stopping.is_cancelled() {
            break;
        }
    }
    let dropped = deadletters::purge_older_than(&ctx.db, ctx.config.dead_letter_retention).await?;
    let garbage = ops::clean_outbox(&ctx.db, OUTBOX_GARBAGE_AGE).await?;
    let devices = drop_stale_devices(ctx).await?;
    if dropped + garbage + devices > 0 {
        tracing::info!(dead_letters = dropped, outbox_rows = garbage, devices, "janitor cleaned up");
    }
    Ok(())
}

/// Drops devices not seen for DEVICE_TTL and not connected, in batches (a
/// device's cursors go with it, so a device that never comes back stops
/// holding its user's backlog). Returns how many.
async fn drop_stale_devices(ctx: &Context) -> Result<u64, BoxError> {
    let mut total = 0;
    loop {
        let dropped = devices::drop_stale(&ctx.db, ctx.config.device_ttl, DEVICE_BATCH).await?;
        total += dropped;
        if dropped < DEVICE_BATCH as u64 || ctx.stopping.is_cancelled() {
            return Ok(total);
        }
    }
}
