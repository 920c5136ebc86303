//! Sender notifications. Watermark moves become, for direct chats, a
//! `message:status` per message of the other member they cover (delivered or
//! read), routed to every connection of that sender; and, for every chat, a
//! `receipt` to whoever it is news for: the senders of the messages it
//! covers, and the member's own other devices. The janitor's expiries come
//! per message. Batched per node; moves of one member in one chat are folded
//! per batch. An offline sender's devices get the statuses from the drain
//! when they connect (their told marks stay behind until they acknowledge);
//! receipts are in `GET /api/sync`.

use std::{collections::HashMap, sync::Arc};

use courier_shared::{
    broker::Link,
    db::{log, presence, status},
    job::{NodeItem, SenderStatus, StatusChanges, WatermarkMove},
};
use futures::StreamExt;
use uuid::Uuid;
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
        let mut moves = Vec::new();
        let mut last_tag = None;
        for delivery in &batch {
            match serde_json::from_slice::<StatusChanges>(&delivery.data) {
                Ok(body) => {
                    changes.extend(body.changes);
                    moves.extend(body.moves);
                }
                Err(error) => {
                    tracing::error!(%error, "malformed status message dead-lettered");
                    channel.basic_reject(delivery.delivery_tag, BasicRejectOptions { requeue: false }).await?;
                    continue;
                }
            }
            last_tag = Some(delivery.delivery_tag);
        }
        let moves = fold(moves);
        let mut statuses: Vec<(String, SenderStatus)> = changes
            .into_iter()
            .filter(|change| !change.in_group)
            .map(|change| {
                let anchor = change.seq;
                (change.sender_id, SenderStatus { update: change.update, seq: change.seq, anchor })
            })
            .collect();
        statuses.extend(status::statuses_of_moves(&ctx.db_kept_plans, &moves).await?);
        if !statuses.is_empty() {
            let mut senders: Vec<String> = statuses.iter().map(|(sender_id, _)| sender_id.clone()).collect();
            senders.sort();
            senders.dedup();
            let mut nodes_of: HashMap<String, Vec<String>> = HashMap::new();
            for (user_id, node_id) in presence::locate(&ctx.db_kept_plans, &senders).await? {
                nodes_of.entry(user_id).or_default().push(node_id);
            }
            let mut items: route::NodeItems = HashMap::new();
            for (sender_id, status) in statuses {
                for node_id in nodes_of.get(&sender_id).into_iter().flatten() {
                    items
                        .entry(node_id.clone())
                        .or_default()
                        .push(NodeItem::Status { sender_id: sender_id.clone(), status: status.clone() });
                }
            }
            route::to_nodes(&ctx.broker, items).await?;
        }
        if !moves.is_empty() {
            route::to_nodes(&ctx.broker, receipts(&ctx, moves).await?).await?;
        }
        if let Some(tag) = last_tag {
            channel.basic_ack(tag, BasicAckOptions { multiple: true }).await?;
        }
    }
}

/// The latest move of each (chat, member) in a batch, each from the lowest
/// old value: one contiguous move.
fn fold(moves: Vec<WatermarkMove>) -> Vec<WatermarkMove> {
    let mut latest: HashMap<(Uuid, String), WatermarkMove> = HashMap::new();
    for next in moves {
        let key = (next.receipt.chat_id, next.receipt.user_id.clone());
        match latest.get_mut(&key) {
            Some(kept) => kept.absorb(&next),
            None => {
                latest.insert(key, next);
            }
        }
    }
    latest.into_values().collect()
}

/// The `receipt` items for a batch of folded watermark moves: to the
/// member's own connections and those of everyone who sent a message the
/// move covers.
async fn receipts(ctx: &Context, moves: Vec<WatermarkMove>) -> Result<route::NodeItems, BoxError> {
    let ranges: Vec<(Uuid, String, i64, i64)> = moves
        .iter()
        .map(|m| (m.receipt.chat_id, m.receipt.user_id.clone(), m.from_seq(), m.receipt.delivered_seq.max(m.receipt.read_seq)))
        .collect();
    let mut targets: Vec<Vec<String>> = moves.iter().map(|m| vec![m.receipt.user_id.clone()]).collect();
    for (index, sender_id) in log::senders_between(&ctx.db, &ranges).await? {
        if let Some(list) = usize::try_from(index).ok().and_then(|i| targets.get_mut(i)) {
            list.push(sender_id);
        }
    }
    let mut users: Vec<String> = targets.iter().flatten().cloned().collect();
    users.sort();
    users.dedup();
    let mut nodes_of: HashMap<String, Vec<String>> = HashMap::new();
    for (user_id, node_id) in presence::locate(&ctx.db_kept_plans, &users).await? {
        nodes_of.entry(user_id).or_default().push(node_id);
    }
    let mut items: route::NodeItems = HashMap::new();
    for (moved, to) in moves.iter().zip(targets) {
        for user_id in to {
            for node_id in nodes_of.get(&user_id).into_iter().flatten() {
                let item = NodeItem::Receipt { user_id: user_id.clone(), receipt: moved.receipt.clone() };
                items.entry(node_id.clone()).or_default().push(item);
            }
        }
    }
    Ok(items)
}
