//! This node's push queue: what workers route here (live deliveries, status
//! changes, presence notices, drain pages) handed to the right sessions, and
//! what other API nodes send (close a revoked device's connections, typing
//! notices).

use std::sync::Arc;

use courier_shared::{
    broker::Link,
    job::{DeliveryJob, NodeBatch, NodeItem},
    retry::{AttemptedJob, retry_or_park},
};
use futures::StreamExt;
use lapin::{
    options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions},
    types::FieldTable,
};

use crate::{drain_control, inbox::SessionInput, state::AppState, transport::CloseReason, typing};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Push messages (batches of items) this node takes ahead of handing them out.
const PREFETCH: u16 = 64;

/// Consumes the push queue until the broker connection fails.
pub async fn consume(state: AppState, link: Arc<Link>) -> Result<(), BoxError> {
    let topology = state.broker.topology();
    let queue = topology.push_queue(&state.node_id);
    let channel = link.channel().await?;
    topology.declare_private_queue(&channel, &queue, &topology.push(), &state.node_id).await?;
    // Acknowledged once handed out, so the prefetch bounds what this node
    // holds: without acks RabbitMQ ignores the prefetch and pushes as fast as
    // workers publish, and a node that falls behind (a drain's pages and
    // its senders' statuses on a busy machine) buffers the backlog in memory
    // instead of leaving it in the queue. Nothing is redelivered: the queue
    // lives and dies with this connection, anything in it is also in
    // PostgreSQL, and sessions resync below after a reconnect.
    channel.basic_qos(PREFETCH, BasicQosOptions::default()).await?;
    let options = BasicConsumeOptions { no_ack: false, ..Default::default() };
    let mut consumer = channel.basic_consume(queue.as_str().into(), "push".into(), options, FieldTable::default()).await?;

    // A new connection means a new, empty queue: whatever was in the old one
    // is gone, so every session drains again (duplicates are filtered by seq).
    for session in state.sessions.all() {
        session.offer(SessionInput::Resync);
    }

    while let Some(delivery) = consumer.next().await {
        let delivery = delivery?;
        match serde_json::from_slice::<NodeBatch>(&delivery.data) {
            Ok(batch) => dispatch(&state, batch).await,
            Err(error) => tracing::error!(%error, "unreadable push message dropped"),
        }
        delivery.ack(BasicAckOptions::default()).await?;
    }
    Ok(())
}

async fn dispatch(state: &AppState, batch: NodeBatch) {
    let mut bounced = Vec::new();
    for item in batch.items {
        match item {
            NodeItem::Deliver { recipient_id, attempt, delivery } => {
                let sessions = state.sessions.of_user(&recipient_id);
                let mut reached = false;
                for session in &sessions {
                    reached |= session.offer(SessionInput::Deliver(Box::new(delivery.clone())));
                }
                if !reached {
                    let job = DeliveryJob {
                        message_id: delivery.message_id,
                        recipient_id,
                        chat_id: delivery.chat_id,
                        seq: delivery.seq,
                    };
                    bounced.push(AttemptedJob { job, attempt });
                }
            }
            NodeItem::Status { sender_id, status } => {
                for session in state.sessions.of_user(&sender_id) {
                    session.offer(SessionInput::Status(status.clone()));
                }
            }
            NodeItem::Receipt { user_id, receipt } => {
                for session in state.sessions.of_user(&user_id) {
                    session.offer(SessionInput::Receipt(receipt.clone()));
                }
            }
            NodeItem::Presence { user_ids, notice } => {
                for user_id in user_ids {
                    for session in state.sessions.of_user(&user_id) {
                        session.offer(SessionInput::Presence(notice.clone()));
                    }
                }
            }
            NodeItem::DrainBegin { connection_id, drain_id, worker_id, baselines } => {
                match state.sessions.get(connection_id) {
                    Some(session) => {
                        session.offer(SessionInput::DrainBegin { drain_id, worker_id, baselines });
                    }
                    None => drain_control::cancel(state, worker_id, drain_id),
                }
            }
            NodeItem::DrainPage { connection_id, drain_id, deliveries, statuses } => {
                if let Some(session) = state.sessions.get(connection_id) {
                    session.offer(SessionInput::DrainPage { drain_id, deliveries, statuses });
                }
            }
            NodeItem::DrainEnd { connection_id, drain_id, count } => {
                if let Some(session) = state.sessions.get(connection_id) {
                    session.offer(SessionInput::DrainEnd { drain_id, count });
                }
            }
            NodeItem::CloseDevice { user_id, device_id } => {
                let closed = state.sessions.end_device(&user_id, &device_id, CloseReason::DeviceRevoked);
                tracing::info!(%user_id, %device_id, closed, "device revoked: closing its connections");
            }
            NodeItem::Typing { user_ids, notice } => typing::hand_out(&state.sessions, &user_ids, &notice),
        }
    }
    if !bounced.is_empty() {
        // The recipient left this node after the worker looked them up: back
        // to the retry tiers, as for any offline recipient.
        let broker = state.broker.clone();
        let db = state.db.clone();
        let metrics = state.metrics.clone();
        tokio::spawn(async move {
            match retry_or_park(&broker, &db, bounced).await {
                Ok(outcome) => outcome.record(&metrics, broker.topology()),
                Err(error) => tracing::warn!(%error, "cannot bounce deliveries; they stay pending in PostgreSQL"),
            }
        });
    }
}
