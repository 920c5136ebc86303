//! Moves the dead queue into PostgreSQL (`dead_letters`), where the admin API
//! can list, inspect, replay and drop each one by id. A queue can only be read
//! from its front and has no ids; reading it with basic_get and requeueing
//! reorders it and marks everything redelivered, and two operators browsing at
//! once would hide messages from each other.

use std::{sync::Arc, time::Duration};

use courier_shared::{
    broker::{Link, header_str, headers_json},
    db::deadletters,
    job::DEAD_REASON_HEADER,
};
use futures::StreamExt;
use lapin::{
    options::{BasicAckOptions, BasicRejectOptions},
};

use crate::{BoxError, context::Context};

const PREFETCH: u16 = 32;

pub async fn consume(ctx: Arc<Context>, link: Arc<Link>) -> Result<(), BoxError> {
    let queue = ctx.broker.topology().dead();
    // Held for as long as the consumer runs, like the other consumers.
    let (_channel, mut consumer) = ctx.consume(&link, &queue, "dead", PREFETCH).await?;
    loop {
        let next = tokio::select! {
            next = consumer.next() => next,
            () = ctx.stopping.cancelled() => return Ok(()),
        };
        let Some(delivery) = next else { return Ok(()) };
        let delivery = delivery?;
        let properties = &delivery.properties;
        let reason = header_str(properties, DEAD_REASON_HEADER)
            .or_else(|| header_str(properties, "x-first-death-reason"))
            .unwrap_or_else(|| "unknown".into());
        let source = header_str(properties, "x-first-death-queue");
        let headers = headers_json(properties);
        // Stored, then acked: a crash in between stores it twice, which an operator sees and drops.
        match deadletters::insert(&ctx.db, &reason, source.as_deref(), &delivery.data, &headers).await {
            Ok(id) => {
                tracing::warn!(id, %reason, source = source.as_deref().unwrap_or("-"),
                    body = %String::from_utf8_lossy(&delivery.data), "dead letter stored for inspection");
                delivery.ack(BasicAckOptions::default()).await?;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot store a dead letter; it stays in the dead queue");
                tokio::time::sleep(Duration::from_secs(1)).await;
                delivery.reject(BasicRejectOptions { requeue: true }).await?;
            }
        }
    }
}
