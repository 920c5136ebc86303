//! Sender notifications: committed status changes (delivered, read) routed to
//! every connection of each sender, batched per node. An offline sender gets
//! them from the drain when they connect (their rows stay unsynced until acked).

use std::{collections::HashMap, sync::Arc};

use courier_shared::{
    broker::Link,
    db::presence,
    job::{NodeItem, StatusChanges},
};
use futures::StreamExt;
use lapin::{
    options::{BasicAckOptions, BasicRejectOptions},
};

use crate::{
    BoxError,
    context::{Context, take_ready},
    route,
};

const PREFETCH: u16 = 64;

pub async fn consume(ctx: Arc<Context>, link: Arc<Link>) -> Result<(), BoxError> {
    let queue = ctx.broker.topology().status();
    let (channel, mut consumer) = ctx.consume(&link, &queue, "status", PREFETCH).await?;
    loop {
        let first = tokio::select! {
            next = consumer.next() => next,
            () = ctx.stopping.cancelled() => return Ok(()),
        };
        let Some(first) = first else { return Ok(()) };
        let _working = ctx.in_flight.token();
        let mut batch = vec![first?];
        take_ready(&mut consumer, &mut batch, usize::from(PREFETCH))?;
        let mut changes = Vec::new();
        let mut last_tag = None;
        for delivery in &batch {
            match serde_json::from_slice::<StatusChanges>(&delivery.data) {
                Ok(body) => changes.extend(body.changes),
                Err(error) => {
                    tracing::error!(%error, "malformed status message dead-lettered");
                    channel.basic_reject(delivery.delivery_tag, BasicRejectOptions { requeue: false }).await?;
                    continue;
                }
            }
            last_tag = Some(delivery.delivery_tag);
        }
        if !changes.is_empty() {
            let mut senders: Vec<String> = changes.iter().map(|c| c.sender_id.clone()).collect();
            senders.sort();
            senders.dedup();
            let mut nodes_of: HashMap<String, Vec<String>> = HashMap::new();
            for (user_id, node_id) in presence::locate(&ctx.db, &senders).await? {
                nodes_of.entry(user_id).or_default().push(node_id);
            }
            let mut items: route::NodeItems = HashMap::new();
            for change in changes {
                for node_id in nodes_of.get(&change.sender_id).into_iter().flatten() {
                    items.entry(node_id.clone()).or_default().push(NodeItem::Status {
                        sender_id: change.sender_id.clone(),
                        update: change.update.clone(),
                    });
                }
            }
            route::to_nodes(&ctx.broker, items).await?;
        }
        if let Some(tag) = last_tag {
            channel.basic_ack(tag, BasicAckOptions { multiple: true }).await?;
        }
    }
}
