//! Batched status writes: every client ack on this node becomes one row in an
//! `UPDATE … FROM UNNEST` of up to a thousand, and each batch's changes go to
//! the workers in one broker message, to be routed to the senders.
//!
//! This is the one place `delivered` is written. The recipient's client says
//! it has a message in two ways, an ack of `message:receive` (the session) and
//! a `message:delivered` event (the event layer), and both come through
//! [`StatusWriter::delivered`]: the same batch, the same durable commit, the
//! same count and the same notice to the sender.

use std::{collections::HashSet, time::Duration};

use backon::{BackoffBuilder, ExponentialBuilder};
use courier_shared::{
    ClientError,
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
    Delivered(DeliveredWrite),
    /// The sender's client acknowledged `message:status`.
    SenderSynced { message_id: Uuid, recipient_id: String, status: DeliveryStatus },
    /// Answered once everything queued before it is written.
    Flush(oneshot::Sender<()>),
}

/// The recipient's client has the message: it acknowledged `message:receive`
/// or sent `message:delivered`.
struct DeliveredWrite {
    message_id: Uuid,
    recipient_id: String,
    /// Whether the status changed, once the batch has committed; or why it
    /// failed. Closed when nobody waits (an ack).
    answer: oneshot::Sender<Result<bool, ClientError>>,
}

/// Resolves when a `delivered` write has committed.
#[must_use = "await `changed` for the outcome, or drop it not to wait"]
pub struct Delivered(oneshot::Receiver<Result<bool, ClientError>>);

impl Delivered {
    /// Whether the write changed the status (false when it was already
    /// `delivered` or `read`, or the message is not addressed to this user).
    pub async fn changed(self) -> Result<bool, ClientError> {
        self.0.await.unwrap_or_else(|_| Err(ClientError::unavailable("the database")))
    }
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

    /// Marks `message_id` delivered to `recipient_id` (if it is still `sent`).
    /// Await the returned [`Delivered`] to learn whether the status changed, or
    /// drop it not to wait. A write someone waits for fails with its batch, so
    /// that the caller can report the error (and nothing is written); one
    /// nobody waits for (an ack) is retried until PostgreSQL takes it.
    pub async fn delivered(&self, message_id: Uuid, recipient_id: String) -> Delivered {
        let (answer, outcome) = oneshot::channel();
        let _ = self.queue.send(Write::Delivered(DeliveredWrite { message_id, recipient_id, answer })).await;
        Delivered(outcome)
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
        // One per entry of `delivered`, in the same order.
        let mut answers = Vec::new();
        let mut synced = (Vec::new(), Vec::new(), Vec::new());
        let mut flushes = Vec::new();
        for write in batch.drain(..) {
            match write {
                Write::Delivered(DeliveredWrite { message_id, recipient_id, answer }) => {
                    delivered.0.push(message_id);
                    delivered.1.push(recipient_id);
                    answers.push(answer);
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
                    if answers.iter().any(|answer| !answer.is_closed()) {
                        // A `message:delivered` waiting for its answer gets the
                        // error now and leaves the batch: its client is told
                        // it failed, so it must not be written behind its back.
                        let failure = ClientError::from(error);
                        let (message_ids, recipient_ids) = std::mem::take(&mut delivered);
                        let writes = message_ids.into_iter().zip(recipient_ids).zip(std::mem::take(&mut answers));
                        for ((message_id, recipient_id), answer) in writes {
                            if answer.is_closed() {
                                delivered.0.push(message_id);
                                delivered.1.push(recipient_id);
                                answers.push(answer);
                            } else {
                                let _ = answer.send(Err(failure.clone()));
                            }
                        }
                        if delivered.0.is_empty() && synced.0.is_empty() {
                            break Vec::new();
                        }
                    }
                    tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(5))).await;
                }
            }
        };
        metrics.delivery("delivered", changes.len() as u64);
        let waiting = answers.iter().any(|answer| !answer.is_closed());
        let mut changed: HashSet<(Uuid, String)> = HashSet::new();
        if waiting {
            changed = changes.iter().map(|change| (change.update.message_id, change.update.user_id.clone())).collect();
        }
        publish_changes(&broker, changes).await;
        if waiting {
            // Answered once the senders are told, as a direct write would be.
            // A pair written twice in one batch changed once, by its first write.
            for ((message_id, recipient_id), answer) in delivered.0.into_iter().zip(delivered.1).zip(answers) {
                let first = changed.remove(&(message_id, recipient_id));
                let _ = answer.send(Ok(first));
            }
        }
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
