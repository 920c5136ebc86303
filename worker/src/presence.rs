//! The presence consumer: connects make co-members see `user:online` and start
//! a drain of the user's backlog; a last disconnect makes them see `user:offline`.

use std::{sync::Arc, time::Duration};

use backon::{ExponentialBuilder, Retryable};
use courier_shared::{
    broker::Link,
    job::{PresenceEvent, PresenceKind},
};
use futures::StreamExt;
use lapin::{
    options::{BasicAckOptions, BasicRejectOptions},
};

use crate::{BoxError, context::Context, drain, notify};

const PREFETCH: u16 = 64;
/// First pause before handling a failed presence event again (then doubling, jittered).
const HANDLE_RETRY_MIN: Duration = Duration::from_millis(400);
/// Retries in this worker before the event goes back to the queue.
const HANDLE_RETRIES: usize = 5;

pub async fn consume(ctx: Arc<Context>, link: Arc<Link>) -> Result<(), BoxError> {
    let queue = ctx.broker.topology().presence();
    // Held for as long as the consumer runs, like the other consumers.
    let (_channel, mut consumer) = ctx.consume(&link, &queue, "presence", PREFETCH).await?;
    loop {
        let next = tokio::select! {
            next = consumer.next() => next,
            () = ctx.stopping.cancelled() => return Ok(()),
        };
        let Some(delivery) = next else { return Ok(()) };
        let delivery = delivery?;
        let event = match serde_json::from_slice::<PresenceEvent>(&delivery.data) {
            Ok(event) => event,
            Err(error) => {
                tracing::error!(%error, "malformed presence event dead-lettered");
                delivery.reject(BasicRejectOptions { requeue: false }).await?;
                continue;
            }
        };
        // Each event is handled on its own task, so a slow one (a user in huge
        // groups) does not hold up the others; it is acked when handled.
        let ctx = ctx.clone();
        let working = ctx.in_flight.token();
        tokio::spawn(async move {
            let _working = working;
            // A failed event (database or broker briefly away) is retried here a
            // few times with jittered backoff, then handed back to the queue.
            let retry = ExponentialBuilder::default()
                .with_min_delay(HANDLE_RETRY_MIN)
                .with_max_times(HANDLE_RETRIES)
                .with_jitter();
            let handled = (|| handle(&ctx, &event))
                .retry(retry)
                .notify(|error, wait| {
                    tracing::warn!(%error, user_id = %event.user_id, wait_ms = wait.as_millis() as u64, "presence event failed; retrying");
                })
                .await;
            match handled {
                Ok(()) => {
                    let _ = delivery.ack(BasicAckOptions::default()).await;
                }
                Err(error) => {
                    tracing::error!(%error, user_id = %event.user_id, "presence event failed; returned to the queue");
                    let _ = delivery.reject(BasicRejectOptions { requeue: true }).await;
                }
            }
        });
    }
}

async fn handle(ctx: &Arc<Context>, event: &PresenceEvent) -> Result<(), BoxError> {
    match event.kind {
        PresenceKind::Connected => {
            notify::online(ctx, &event.user_id, event.at).await?;
            drain::start(ctx.clone(), event, 0).await;
        }
        PresenceKind::Resync { resume_after } => drain::start(ctx.clone(), event, resume_after).await,
        PresenceKind::Disconnected { last: true } => notify::offline(ctx, &event.user_id, event.at).await?,
        PresenceKind::Disconnected { last: false } => {}
    }
    Ok(())
}
