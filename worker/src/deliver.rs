//! The delivery consumer: routes each job to the API nodes holding the
//! recipient's sockets, or through the retry tiers while they are offline.
//!
//! Jobs are handled in batches (one presence lookup, one status read, one push
//! per node, one multiple-ack), so throughput does not pay a round trip per job.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use backon::{BackoffBuilder, ExponentialBuilder};
use courier_shared::{
    broker::{Link, PublishOptions, header_u32},
    db::{log, presence},
    job::{ATTEMPT_HEADER, DEAD_REASON_HEADER, Delivery, DeliveryJob, NodeItem},
    retry::{AttemptedJob, job_span, retry_or_park},
};
use futures::StreamExt;
use lapin::{
    Channel,
    message::Delivery as AmqpDelivery,
    options::{BasicAckOptions, BasicRejectOptions},
    types::AMQPValue,
};
use uuid::Uuid;

use crate::{
    BoxError,
    context::{Context, take_ready},
    route::{self, NodeItems},
};

/// Consumes delivery queue `shard` until the connection fails or the worker stops.
pub async fn consume(ctx: Arc<Context>, link: Arc<Link>, shard: usize, index: usize) -> Result<(), BoxError> {
    let queue = ctx.broker.topology().delivery_queue(shard);
    let role = format!("delivery-{shard}-{index}");
    let (channel, mut consumer) = ctx.consume(&link, &queue, &role, ctx.config.delivery_prefetch).await?;
    let max_batch = ctx.config.delivery_batch.max(1);
    loop {
        let first = tokio::select! {
            next = consumer.next() => next,
            () = ctx.stopping.cancelled() => return Ok(()),
        };
        let Some(first) = first else { return Ok(()) };
        let _working = ctx.in_flight.token();
        let mut batch = vec![first?];
        take_ready(&mut consumer, &mut batch, max_batch)?;
        handle_batch(&ctx, &channel, batch).await?;
    }
}

/// Jobs of a batch, sorted by what happens to them.
#[derive(Default)]
struct Plan {
    /// Recipient online: items per node, and the jobs behind them in case a node is gone.
    online: NodeItems,
    online_jobs: HashMap<(Uuid, String), AttemptedJob>,
    offline: Vec<AttemptedJob>,
    /// The message or its status row is gone: dead-letter, do not retry.
    poison: Vec<(u64, &'static str)>,
    /// Already delivered or read: nothing to do.
    done: usize,
}

async fn handle_batch(ctx: &Context, channel: &Channel, batch: Vec<AmqpDelivery>) -> Result<(), BoxError> {
    let mut jobs = Vec::with_capacity(batch.len());
    for delivery in &batch {
        match serde_json::from_slice::<DeliveryJob>(&delivery.data) {
            Ok(job) => {
                let attempt = header_u32(&delivery.properties, ATTEMPT_HEADER).unwrap_or(0);
                jobs.push((delivery.delivery_tag, AttemptedJob { job, attempt }));
            }
            Err(error) => {
                // Malformed: no retry can help. Rejected without requeue, the
                // queue dead-letters it to the dead queue.
                tracing::error!(%error, delivery_tag = delivery.delivery_tag, reason = "malformed",
                    "delivery failed: malformed job dead-lettered");
                channel.basic_reject(delivery.delivery_tag, BasicRejectOptions { requeue: false }).await?;
                ctx.metrics.delivery("dead_lettered", 1);
            }
        }
    }

    // Acked together at the end (multiple): every job this batch did not reject.
    let Some(last_tag) = jobs.iter().map(|(tag, _)| *tag).max() else { return Ok(()) };

    // The plan only reads PostgreSQL. While it is down, keep the jobs (unacked,
    // so their delivery count does not grow) and try again.
    let mut delays = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .without_max_times()
        .build();
    let plan = loop {
        match plan(ctx, &jobs).await {
            Ok(plan) => break plan,
            Err(error) => {
                tracing::warn!(%error, "cannot read delivery state; retrying");
                tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(5))).await;
            }
        }
    };

    let Plan { online, mut online_jobs, mut offline, poison, done } = plan;
    let routed = route::to_nodes(&ctx.broker, online).await?;
    for (node_id, items) in routed.unroutable {
        tracing::debug!(%node_id, "push queue gone; recipients treated as offline");
        for item in items {
            if let NodeItem::Deliver { recipient_id, delivery, .. } = item
                && let Some(job) = online_jobs.remove(&(delivery.message_id, recipient_id))
            {
                offline.push(job);
            }
        }
    }
    // First sight of the recipient offline (not a retry): the host app may want to wake their phone.
    let mut notify: Vec<&str> = offline.iter().filter(|j| j.attempt == 0).map(|j| j.job.recipient_id.as_str()).collect();
    notify.sort_unstable();
    notify.dedup();
    for user_id in notify {
        ctx.webhook.offer(user_id);
    }
    let outcome = retry_or_park(&ctx.broker, &ctx.db, offline).await?;
    for (tag, reason) in &poison {
        dead_letter(ctx, &batch, *tag, reason).await?;
    }
    channel.basic_ack(last_tag, BasicAckOptions { multiple: true }).await?;
    outcome.record(&ctx.metrics, ctx.broker.topology());
    ctx.metrics.delivery("pushed", online_jobs.len() as u64);
    ctx.metrics.delivery("dead_lettered", poison.len() as u64);
    for attempted in online_jobs.values() {
        let span = job_span(attempted);
        span.in_scope(|| tracing::debug!("pushed to the recipient's API nodes"));
    }
    tracing::debug!(
        jobs = jobs.len(),
        pushed = online_jobs.len(),
        retried = outcome.retried.iter().sum::<u64>(),
        parked = outcome.parked,
        dead = poison.len(),
        done,
        "delivery batch routed"
    );
    Ok(())
}

async fn plan(ctx: &Context, jobs: &[(u64, AttemptedJob)]) -> Result<Plan, sqlx::Error> {
    let (message_ids, user_ids): (Vec<Uuid>, Vec<String>) =
        jobs.iter().map(|(_, j)| (j.job.message_id, j.job.recipient_id.clone())).unzip();
    let pending: HashMap<(Uuid, String), Delivery> = log::pending_deliveries(&ctx.db_kept_plans, &message_ids, &user_ids)
        .await?
        .into_iter()
        .map(|(recipient, delivery)| ((delivery.message_id, recipient), delivery))
        .collect();

    // Jobs nobody needs: every device of the recipient has the message, they
    // were not a member when it was sent, or the message is gone (poison).
    let settled: Vec<usize> = (0..jobs.len()).filter(|&i| !pending.contains_key(&(message_ids[i], user_ids[i].clone()))).collect();
    let mut plan = Plan::default();
    if !settled.is_empty() {
        let ids: Vec<Uuid> = settled.iter().map(|&i| message_ids[i]).collect();
        let existing: HashSet<Uuid> = log::existing(&ctx.db, &ids).await?.into_iter().collect();
        for &i in &settled {
            if existing.contains(&message_ids[i]) {
                plan.done += 1;
            } else {
                plan.poison.push((jobs[i].0, "message_gone"));
            }
        }
    }

    let mut recipients: Vec<String> = pending.keys().map(|(_, user)| user.clone()).collect();
    recipients.sort();
    recipients.dedup();
    let mut nodes_of: HashMap<String, Vec<String>> = HashMap::new();
    for (user_id, node_id) in presence::locate(&ctx.db_kept_plans, &recipients).await? {
        nodes_of.entry(user_id).or_default().push(node_id);
    }

    for (_, attempted) in jobs {
        let key = (attempted.job.message_id, attempted.job.recipient_id.clone());
        let Some(delivery) = pending.get(&key) else { continue };
        match nodes_of.get(&attempted.job.recipient_id) {
            Some(nodes) => {
                for node_id in nodes {
                    plan.online.entry(node_id.clone()).or_default().push(NodeItem::Deliver {
                        recipient_id: attempted.job.recipient_id.clone(),
                        attempt: attempted.attempt,
                        delivery: delivery.clone(),
                    });
                }
                plan.online_jobs.insert(key, attempted.clone());
            }
            None => plan.offline.push(attempted.clone()),
        }
    }
    Ok(plan)
}

/// Moves a poison job to the dead queue with the reason, for an operator to inspect.
async fn dead_letter(ctx: &Context, batch: &[AmqpDelivery], tag: u64, reason: &str) -> Result<(), BoxError> {
    let Some(delivery) = batch.iter().find(|d| d.delivery_tag == tag) else { return Ok(()) };
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    headers.insert(DEAD_REASON_HEADER.into(), AMQPValue::LongString(reason.into()));
    let exchange = ctx.broker.topology().dead();
    ctx.broker.publish(&exchange, "", &delivery.data, PublishOptions::persistent().with_headers(headers)).await?;
    tracing::warn!(reason, body = %String::from_utf8_lossy(&delivery.data), "delivery failed: job dead-lettered");
    Ok(())
}
