//! Batched status writes: every client ack on this node becomes one row in an
//! `UPDATE … FROM UNNEST` of up to a thousand, and each batch's changes go to
//! the workers in one broker message, to be routed to the senders.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use courier_shared::{
    broker::{Broker, PublishOptions},
    db::status,
    metrics::Metrics,
    job::{StatusChange, StatusChanges},
    protocol::DeliveryStatus,
};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

const MAX_BATCH: usize = 1000;

enum Write {
    /// The recipient's client acknowledged `message:receive`.
    Delivered { message_id: Uuid, user_id: String },
    /// The sender's client acknowledged `message:status`.
    SenderSynced { message_id: Uuid, recipient_id: String, status: DeliveryStatus },
    /// Answered once everything queued before it is written.
    Flush(oneshot::Sender<()>),
}

/// Queues status writes for the node's writer task.
#[derive(Clone)]
pub struct StatusWriter {
    queue: mpsc::Sender<Write>,
}

impl StatusWriter {
    pub fn start(db: PgPool, broker: Broker, metrics: Metrics) -> Self {
        let (queue, incoming) = mpsc::channel(64 * 1024);
        tokio::spawn(write_loop(db, broker, metrics, incoming));
        Self { queue }
    }

    pub async fn delivered(&self, message_id: Uuid, user_id: String) {
        let _ = self.queue.send(Write::Delivered { message_id, user_id }).await;
    }

    pub async fn sender_synced(&self, message_id: Uuid, recipient_id: String, status: DeliveryStatus) {
        let _ = self.queue.send(Write::SenderSynced { message_id, recipient_id, status }).await;
    }

    /// Waits until every write queued so far is in PostgreSQL.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.queue.send(Write::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

async fn write_loop(db: PgPool, broker: Broker, metrics: Metrics, mut incoming: mpsc::Receiver<Write>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while incoming.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let mut delivered = (Vec::new(), Vec::new());
        let mut synced = (Vec::new(), Vec::new(), Vec::new());
        let mut flushes = Vec::new();
        for write in batch.drain(..) {
            match write {
                Write::Delivered { message_id, user_id } => {
                    delivered.0.push(message_id);
                    delivered.1.push(user_id);
                }
                Write::SenderSynced { message_id, recipient_id, status } => {
                    synced.0.push(message_id);
                    synced.1.push(recipient_id);
                    synced.2.push(status);
                }
                Write::Flush(done) => flushes.push(done),
            }
        }
        // An ack is never dropped: retry until PostgreSQL takes the batch.
        let mut delays = retry_delays();
        let changes = loop {
            match write_batch(&db, &delivered, &synced).await {
                Ok(changes) => break changes,
                Err(error) => {
                    tracing::warn!(%error, "cannot write acknowledged statuses; retrying");
                    tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(5))).await;
                }
            }
        };
        metrics.delivery("delivered", changes.len() as u64);
        publish_changes(&broker, changes).await;
        for done in flushes {
            let _ = done.send(());
        }
    }
}

async fn write_batch(
    db: &PgPool,
    delivered: &(Vec<Uuid>, Vec<String>),
    synced: &(Vec<Uuid>, Vec<String>, Vec<DeliveryStatus>),
) -> Result<Vec<StatusChange>, sqlx::Error> {
    let mut changes = Vec::new();
    // `delivered` is announced to the sender (✓✓) right after this commit, so
    // it must survive a crash: courier-chaos (seed 11, 600 s) saw a PostgreSQL
    // crash 9 ms after an ack lose a relaxed `delivered` write the sender had
    // already been shown, and the message was pushed to the recipient again.
    // A batch of sender acknowledgements alone is redone harmlessly if lost (the
    // sender is sent the status again), so it does not wait for the disk.
    let mut tx = if delivered.0.is_empty() { courier_shared::db::begin_relaxed(db).await? } else { db.begin().await? };
    if !delivered.0.is_empty() {
        changes = status::mark_delivered(&mut *tx, &delivered.0, &delivered.1).await?;
    }
    if !synced.0.is_empty() {
        status::mark_sender_synced(&mut *tx, &synced.0, &synced.1, &synced.2).await?;
    }
    tx.commit().await?;
    for change in &changes {
        tracing::info!(message_id = %change.update.message_id, recipient_id = %change.update.user_id, "message delivered");
    }
    Ok(changes)
}

/// Hands committed status changes to the workers, who tell the senders. If
/// this fails the senders still learn them on their next connect
/// (`sender_synced` stays false until they acknowledge).
pub async fn publish_changes(broker: &Broker, changes: Vec<StatusChange>) {
    if changes.is_empty() {
        return;
    }
    let exchange = broker.topology().status();
    let body = StatusChanges { changes };
    if let Err(error) = broker.publish_json(&exchange, "", &body, PublishOptions::persistent()).await {
        tracing::warn!(%error, count = body.changes.len(), "cannot publish status changes; senders get them on reconnect");
    }
}

fn retry_delays() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .without_max_times()
        .build()
}
