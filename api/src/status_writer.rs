//! Batched status writes: every client ack on this node becomes one row in an
//! `UPDATE … FROM UNNEST` of up to a thousand, and each batch's changes go to
//! the workers in one broker message, to be routed to the senders.
//!
//! This is the one place `delivered` is written. The recipient's client says
//! it has a message in two ways, an ack of `message:receive` (the session) and
//! a `message:delivered` event (the event layer), and both come through
//! [`StatusWriter::delivered`]: the same batch, the same durable commit, the
//! same count and the same notice to the sender.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use backon::{BackoffBuilder, ExponentialBuilder};
use courier_shared::{
    ClientError,
    broker::{Broker, PublishOptions},
    db::{devices, status},
    metrics::Metrics,
    job::{StatusChange, StatusChanges, WatermarkMove},
    protocol::DeliveryStatus,
};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::session::cursor::CursorMove;

const MAX_BATCH: usize = 1000;

enum Write {
    Delivered(DeliveredWrite),
    /// The sender's client acknowledged `message:status`.
    SenderSynced { message_id: Uuid, recipient_id: String, status: DeliveryStatus },
    /// A device acknowledged a run of messages without a hole.
    Cursor(DeviceCursorMove),
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

    /// Moves `device_id`'s cursor as `step` says, if the cursor already stands
    /// at the step's anchor. Retried until PostgreSQL takes it, like an ack.
    pub async fn cursor_moved(&self, user_id: &str, device_id: &str, step: CursorMove) {
        let write = DeviceCursorMove { user_id: user_id.to_owned(), device_id: device_id.to_owned(), step };
        let _ = self.queue.send(Write::Cursor(write)).await;
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
        let mut cursors = Vec::new();
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
                Write::Cursor(step) => cursors.push(step),
                Write::Flush(done) => flushes.push(done),
            }
        }
        // An ack is never dropped: retry until PostgreSQL takes the batch.
        let mut delays = retry_delays();
        let (changes, moves) = loop {
            match write_batch(&db, &delivered, &synced, &cursors).await {
                Ok(written) => break written,
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
                        if delivered.0.is_empty() && synced.0.is_empty() && cursors.is_empty() {
                            break (Vec::new(), Vec::new());
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
        publish_changes(&broker, changes, moves).await;
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
    cursors: &[DeviceCursorMove],
) -> Result<(Vec<StatusChange>, Vec<WatermarkMove>), sqlx::Error> {
    let (mut changes, mut moves) = (Vec::new(), Vec::new());
    // `delivered` is announced to the sender (✓✓) right after this commit, so
    // it must survive a crash: courier-chaos (seed 11, 600 s) saw a PostgreSQL
    // crash 9 ms after an ack lose a relaxed `delivered` write the sender had
    // already been shown, and the message was pushed to the recipient again.
    // A batch of sender acknowledgements alone is redone harmlessly if lost (the
    // sender is sent the status again), so it does not wait for the disk.
    // A lost cursor move would push the device messages it has again: it waits for the disk too.
    let relaxed = delivered.0.is_empty() && cursors.is_empty();
    let mut tx = if relaxed { courier_shared::db::begin_relaxed(db).await? } else { db.begin().await? };
    if !delivered.0.is_empty() {
        changes = status::mark_delivered(&mut *tx, &delivered.0, &delivered.1).await?;
        moves = status::advance_watermarks(&mut tx, &status::members_of(&changes)).await?;
    }
    if !synced.0.is_empty() {
        status::mark_sender_synced(&mut *tx, &synced.0, &synced.1, &synced.2).await?;
    }
    write_cursor_moves(&mut tx, cursors).await?;
    tx.commit().await?;
    for change in &changes {
        tracing::info!(message_id = %change.update.message_id, recipient_id = %change.update.user_id, "message delivered");
    }
    Ok((changes, moves))
}

/// A cursor move of one device, queued for the next batch.
struct DeviceCursorMove {
    user_id: String,
    device_id: String,
    step: CursorMove,
}

/// Applies a batch's cursor moves, in the rounds [`cursor_rounds`] plans.
async fn write_cursor_moves(tx: &mut sqlx::PgConnection, moves: &[DeviceCursorMove]) -> Result<(), sqlx::Error> {
    for round in cursor_rounds(moves) {
        let user_ids: Vec<&str> = round.iter().map(|m| m.0).collect();
        let device_ids: Vec<&str> = round.iter().map(|m| m.1).collect();
        let chat_ids: Vec<Uuid> = round.iter().map(|m| m.2.chat_id).collect();
        let anchors: Vec<i64> = round.iter().map(|m| m.2.anchor).collect();
        let acked: Vec<i64> = round.iter().map(|m| m.2.acked_seq).collect();
        devices::move_cursors(&mut *tx, &user_ids, &device_ids, &chat_ids, &anchors, &acked).await?;
    }
    Ok(())
}

/// (user, device, move)
type Planned<'a> = (&'a str, &'a str, CursorMove);

/// Plans a batch's cursor moves as UPDATE rounds. Moves of one (device,
/// chat) are joined where one starts within the reach of the one before;
/// what cannot be joined (runs a connection could not connect) goes to a
/// later round, in order, since one UPDATE moves a row once.
fn cursor_rounds(moves: &[DeviceCursorMove]) -> Vec<Vec<Planned<'_>>> {
    let mut rounds: Vec<Vec<Planned<'_>>> = Vec::new();
    let mut latest: HashMap<(&str, &str, Uuid), (usize, usize)> = HashMap::new(); // → (round, index)
    for write in moves {
        let key = (write.user_id.as_str(), write.device_id.as_str(), write.step.chat_id);
        let step = write.step;
        match latest.get(&key).copied() {
            Some((round, index)) if step.anchor <= rounds[round][index].2.acked_seq => {
                let joined = &mut rounds[round][index].2;
                joined.acked_seq = joined.acked_seq.max(step.acked_seq);
            }
            found => {
                let round = found.map_or(0, |(round, _)| round + 1);
                if rounds.len() <= round {
                    rounds.push(Vec::new());
                }
                rounds[round].push((key.0, key.1, step));
                latest.insert(key, (round, rounds[round].len() - 1));
            }
        }
    }
    rounds
}

/// Hands committed status changes to the workers, who tell the senders: per
/// message for direct chats (`message:status`), and the watermark moves
/// (`receipt`) for every chat — a group's sender gets receipts only, so a
/// message to 500 members does not cost its sender 500 frames. If this fails
/// the senders of direct chats still learn them on their next connect
/// (`sender_synced` stays false until they acknowledge), and anyone can read
/// the current receipts from `GET /api/sync`.
pub async fn publish_changes(broker: &Broker, mut changes: Vec<StatusChange>, moves: Vec<WatermarkMove>) {
    changes.retain(|change| !change.in_group);
    if changes.is_empty() && moves.is_empty() {
        return;
    }
    let exchange = broker.topology().status();
    let body = StatusChanges { changes, moves };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn write(device: &str, chat: u128, anchor: i64, acked_seq: i64) -> DeviceCursorMove {
        let step = CursorMove { chat_id: Uuid::from_u128(chat), anchor, acked_seq };
        DeviceCursorMove { user_id: "bob".into(), device_id: device.into(), step }
    }

    fn plan(moves: &[DeviceCursorMove]) -> Vec<Vec<(String, u128, i64, i64)>> {
        cursor_rounds(moves)
            .into_iter()
            .map(|round| round.into_iter().map(|(_, d, m)| (d.to_owned(), m.chat_id.as_u128(), m.anchor, m.acked_seq)).collect())
            .collect()
    }

    #[test]
    fn moves_of_one_run_are_joined_into_one() {
        let moves = [write("phone", 1, 0, 1), write("phone", 1, 0, 3), write("phone", 1, 3, 5)];
        assert_eq!(plan(&moves), vec![vec![("phone".into(), 1, 0, 5)]]);
    }

    #[test]
    fn runs_that_do_not_touch_go_in_later_rounds_in_order() {
        let moves = [write("phone", 1, 0, 2), write("phone", 1, 5, 6), write("phone", 1, 6, 8), write("phone", 1, 9, 9)];
        assert_eq!(
            plan(&moves),
            vec![vec![("phone".into(), 1, 0, 2)], vec![("phone".into(), 1, 5, 8)], vec![("phone".into(), 1, 9, 9)]]
        );
    }

    #[test]
    fn devices_and_chats_are_planned_apart() {
        let moves = [write("phone", 1, 0, 2), write("laptop", 1, 4, 6), write("phone", 2, 7, 9)];
        assert_eq!(
            plan(&moves),
            vec![vec![("phone".into(), 1, 0, 2), ("laptop".into(), 1, 4, 6), ("phone".into(), 2, 7, 9)]]
        );
    }
}
