//! Batched cursor writes: every acknowledgement on this node (a device has a
//! run of messages; a sender's device has been shown statuses) becomes a
//! row of one `UPDATE … FROM UNNEST` per mark and round, and each batch's
//! watermark moves go to the workers in one broker message, to be routed to
//! the senders as ticks and `receipt`s.
//!
//! This is the one place `delivered` is written: a device's cursor moves
//! here, and the member's delivered watermark (the furthest of their
//! devices) with it, in the same transaction.

use std::{collections::HashMap, time::Duration};

use backon::{BackoffBuilder, ExponentialBuilder};
use courier_shared::{
    broker::{Broker, PublishOptions},
    db::{
        devices::{self, Mark},
        status,
    },
    job::{StatusChange, StatusChanges, WatermarkMove},
};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::session::cursor::CursorMove;

const MAX_BATCH: usize = 1000;

enum Write {
    /// A device acknowledged a run of messages without a hole, or was shown a run of statuses.
    Cursor(DeviceCursorMove),
    /// Answered once everything queued before it is written.
    Flush(oneshot::Sender<()>),
}

/// Queues cursor writes for the node's writer task.
#[derive(Clone)]
pub struct StatusWriter {
    queue: mpsc::Sender<Write>,
}

impl StatusWriter {
    pub fn start(db: PgPool, broker: Broker) -> Self {
        let (queue, incoming) = mpsc::channel(64 * 1024);
        tokio::spawn(write_loop(db, broker, incoming));
        Self { queue }
    }

    /// Moves `device_id`'s `mark` as `step` says, if the mark already stands
    /// at the step's anchor. Retried until PostgreSQL takes it: an
    /// acknowledgement is never dropped.
    pub async fn cursor_moved(&self, user_id: &str, device_id: &str, mark: Mark, step: CursorMove) {
        let write = DeviceCursorMove { user_id: user_id.to_owned(), device_id: device_id.to_owned(), mark, step };
        let _ = self.queue.send(Write::Cursor(write)).await;
    }

    /// Waits until every write queued so far is in PostgreSQL.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.queue.send(Write::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

async fn write_loop(db: PgPool, broker: Broker, mut incoming: mpsc::Receiver<Write>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while incoming.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let mut cursors = Vec::new();
        let mut flushes = Vec::new();
        for write in batch.drain(..) {
            match write {
                Write::Cursor(step) => cursors.push(step),
                Write::Flush(done) => flushes.push(done),
            }
        }
        // An acknowledgement is never dropped: retry until PostgreSQL takes the batch.
        let mut delays = retry_delays();
        let moves = loop {
            match write_batch(&db, &cursors).await {
                Ok(moves) => break moves,
                Err(error) => {
                    tracing::warn!(%error, "cannot write acknowledgements; retrying");
                    tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(5))).await;
                }
            }
        };
        publish_changes(&broker, Vec::new(), moves).await;
        for done in flushes {
            let _ = done.send(());
        }
    }
}

async fn write_batch(db: &PgPool, cursors: &[DeviceCursorMove]) -> Result<Vec<WatermarkMove>, sqlx::Error> {
    if cursors.is_empty() {
        return Ok(Vec::new());
    }
    // A delivered watermark is announced to the senders (✓✓) right after this
    // commit, so it must survive a crash: courier-chaos (seed 11, 600 s) saw
    // a PostgreSQL crash 9 ms after an ack lose a relaxed `delivered` write the
    // sender had already been shown, and the message was pushed again. A
    // batch of told marks alone is redone harmlessly if lost (the sender's
    // device is shown the statuses again), so it does not wait for the disk.
    let relaxed = cursors.iter().all(|write| write.mark != Mark::Acked);
    let mut tx = if relaxed { courier_shared::db::begin_relaxed(db).await? } else { db.begin().await? };
    write_cursor_moves(&mut tx, cursors).await?;
    let mut members: Vec<(String, Uuid)> = cursors
        .iter()
        .filter(|write| write.mark == Mark::Acked)
        .map(|write| (write.user_id.clone(), write.step.chat_id))
        .collect();
    members.sort();
    members.dedup();
    let moves = status::advance_delivered(&mut tx, &members).await?;
    tx.commit().await?;
    for moved in &moves {
        tracing::debug!(chat_id = %moved.receipt.chat_id, recipient_id = %moved.receipt.user_id,
            delivered_seq = moved.receipt.delivered_seq, "delivered watermark moved");
    }
    Ok(moves)
}

/// A move of one mark of one device, queued for the next batch.
struct DeviceCursorMove {
    user_id: String,
    device_id: String,
    mark: Mark,
    step: CursorMove,
}

/// Applies a batch's moves, in the rounds [`cursor_rounds`] plans, one
/// statement per mark and round.
async fn write_cursor_moves(tx: &mut sqlx::PgConnection, moves: &[DeviceCursorMove]) -> Result<(), sqlx::Error> {
    for round in cursor_rounds(moves) {
        for mark in [Mark::Acked, Mark::ToldDelivered, Mark::ToldRead, Mark::ToldExpired] {
            let steps: Vec<&Planned<'_>> = round.iter().filter(|planned| planned.2 == mark).collect();
            if steps.is_empty() {
                continue;
            }
            let user_ids: Vec<&str> = steps.iter().map(|m| m.0).collect();
            let device_ids: Vec<&str> = steps.iter().map(|m| m.1).collect();
            let chat_ids: Vec<Uuid> = steps.iter().map(|m| m.3.chat_id).collect();
            let anchors: Vec<i64> = steps.iter().map(|m| m.3.anchor).collect();
            let seqs: Vec<i64> = steps.iter().map(|m| m.3.acked_seq).collect();
            devices::move_marks(&mut *tx, mark, &user_ids, &device_ids, &chat_ids, &anchors, &seqs).await?;
        }
    }
    Ok(())
}

/// (user, device, mark, move)
type Planned<'a> = (&'a str, &'a str, Mark, CursorMove);

/// Plans a batch's cursor moves as UPDATE rounds. Moves of one (device,
/// chat) are joined where one starts within the reach of the one before;
/// what cannot be joined (runs a connection could not connect) goes to a
/// later round, in order, since one UPDATE moves a row once.
///
/// Steps are planned lowest anchor first. Each says "everything in (anchor,
/// seq] was acknowledged (or shown)", true whatever order they arrive in, and
/// told steps do arrive out of order: a status the client already shows is
/// told when it is pushed, one it is shown when the client acks the frame.
/// Taken in arrival order, (1, 2] then (0, 1] joined into (1, 2] and the mark,
/// standing at 0, moved nowhere.
fn cursor_rounds(moves: &[DeviceCursorMove]) -> Vec<Vec<Planned<'_>>> {
    let mut ordered: Vec<&DeviceCursorMove> = moves.iter().collect();
    ordered.sort_by_key(|write| write.step.anchor);
    let mut rounds: Vec<Vec<Planned<'_>>> = Vec::new();
    let mut latest: HashMap<(&str, &str, Mark, Uuid), (usize, usize)> = HashMap::new(); // → (round, index)
    for write in ordered {
        let key = (write.user_id.as_str(), write.device_id.as_str(), write.mark, write.step.chat_id);
        let step = write.step;
        match latest.get(&key).copied() {
            Some((round, index)) if step.anchor <= rounds[round][index].3.acked_seq => {
                let joined = &mut rounds[round][index].3;
                joined.acked_seq = joined.acked_seq.max(step.acked_seq);
            }
            found => {
                let round = found.map_or(0, |(round, _)| round + 1);
                if rounds.len() <= round {
                    rounds.push(Vec::new());
                }
                rounds[round].push((key.0, key.1, key.2, step));
                latest.insert(key, (round, rounds[round].len() - 1));
            }
        }
    }
    rounds
}

/// Hands committed watermark moves (and the janitor's expiries) to the
/// workers, who tell the senders: per message for direct chats
/// (`message:status`), and `receipt`s for every chat — a group's sender gets
/// receipts only, so a message to 500 members does not cost its sender 500
/// frames. If this fails the senders of direct chats still learn them on
/// their next connect (their devices' told marks stay behind), and anyone
/// can read the current receipts from `GET /api/sync`.
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
        DeviceCursorMove { user_id: "bob".into(), device_id: device.into(), mark: Mark::Acked, step }
    }

    fn plan(moves: &[DeviceCursorMove]) -> Vec<Vec<(String, u128, i64, i64)>> {
        cursor_rounds(moves)
            .into_iter()
            .map(|round| round.into_iter().map(|(_, d, _, m)| (d.to_owned(), m.chat_id.as_u128(), m.anchor, m.acked_seq)).collect())
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
    fn steps_that_arrive_out_of_order_are_planned_lowest_first() {
        let moves = [write("phone", 1, 1, 2), write("phone", 1, 0, 1)];
        assert_eq!(plan(&moves), vec![vec![("phone".into(), 1, 0, 2)]], "(1, 2] then (0, 1] is (0, 2]");
        let moves = [write("phone", 1, 3, 5), write("phone", 1, 0, 1)];
        assert_eq!(plan(&moves), vec![vec![("phone".into(), 1, 0, 1)], vec![("phone".into(), 1, 3, 5)]]);
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
