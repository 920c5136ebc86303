//! This worker's control queue: drain credits and cancels from API nodes.

use std::sync::Arc;

use courier_shared::{broker::Link, job::DrainControl};
use futures::StreamExt;
use lapin::{options::BasicConsumeOptions, types::FieldTable};

use crate::{BoxError, context::Context};

pub async fn consume(ctx: Arc<Context>, link: Arc<Link>) -> Result<(), BoxError> {
    let topology = ctx.broker.topology();
    let queue = topology.control_queue(&ctx.worker_id);
    let channel = link.channel().await?;
    topology.declare_private_queue(&channel, &queue, &topology.control(), &ctx.worker_id).await?;
    // Credits are idempotent (the highest wins) and lost ones are re-sent with
    // the next ack, so no acks are needed.
    let options = BasicConsumeOptions { no_ack: true, ..Default::default() };
    let mut consumer = channel.basic_consume(queue.as_str().into(), "control".into(), options, FieldTable::default()).await?;
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery?;
        match serde_json::from_slice::<DrainControl>(&delivery.data) {
            Ok(DrainControl::Credit { drain_id, acked }) => {
                ctx.drains.update(drain_id, |credit| credit.acked = credit.acked.max(acked));
            }
            Ok(DrainControl::Cancel { drain_id }) => ctx.drains.update(drain_id, |credit| credit.cancelled = true),
            Err(error) => tracing::warn!(%error, "malformed control message dropped"),
        }
    }
    Ok(())
}
