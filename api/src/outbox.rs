//! Publishing delivery jobs. The fast path publishes a message's jobs right
//! after its transaction commits and deletes its outbox row once every job is
//! confirmed; the relay publishes whatever the fast path left behind (a crash,
//! a broker outage) and is safe to run on every node at once.

use std::{sync::Arc, time::Duration};

use courier_shared::{
    broker::{Broker, PublishOptions},
    db::{messages::StoredMessage, outbox},
    job::DeliveryJob,
};
use futures::{StreamExt, future::join_all, stream::FuturesUnordered};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Publishes at most this many messages' jobs at once on the fast path.
const IN_FLIGHT: usize = 512;
const RELAY_BATCH: i64 = 500;
/// Confirmed outbox rows are deleted at most this often (see `delete_loop`).
const DELETE_LINGER: Duration = Duration::from_millis(100);
const DELETE_BATCH: usize = 10_000;

/// Hands committed messages to the fast-path publisher.
#[derive(Clone)]
pub struct JobPublisher {
    queue: mpsc::UnboundedSender<(Uuid, Vec<DeliveryJob>)>,
}

impl JobPublisher {
    /// `relay_after`: how old a row must be before the relay publishes it
    /// again (`OUTBOX_RELAY_AFTER`); confirmed rows are deleted well before.
    pub fn start(db: PgPool, broker: Broker, relay_after: Duration) -> Self {
        let (queue, incoming) = mpsc::unbounded_channel();
        let (done, confirmed) = mpsc::unbounded_channel();
        tokio::spawn(publish_loop(broker, incoming, done));
        tokio::spawn(delete_loop(db, confirmed, DELETE_LINGER.min(relay_after / 10)));
        Self { queue }
    }

    /// Publishes a newly stored message's jobs, one per recipient. Returns at
    /// once; a failure leaves the outbox row for the relay.
    pub fn publish(&self, stored: &StoredMessage) {
        if stored.duplicate {
            return;
        }
        let jobs = stored
            .recipients
            .iter()
            .map(|recipient_id| DeliveryJob {
                message_id: stored.sent.message_id,
                recipient_id: recipient_id.clone(),
                chat_id: stored.sent.chat_id,
                seq: stored.sent.seq,
            })
            .collect::<Vec<_>>();
        // A message nobody else receives (a group of one) has no jobs; the relay
        // clears its outbox row.
        if !jobs.is_empty() {
            let _ = self.queue.send((stored.sent.message_id, jobs));
        }
    }
}

async fn publish_loop(
    broker: Broker,
    mut incoming: mpsc::UnboundedReceiver<(Uuid, Vec<DeliveryJob>)>,
    done: mpsc::UnboundedSender<Uuid>,
) {
    let mut in_flight = FuturesUnordered::new();
    loop {
        tokio::select! {
            jobs = incoming.recv(), if in_flight.len() < IN_FLIGHT => match jobs {
                Some((message_id, jobs)) => {
                    let broker = broker.clone();
                    in_flight.push(async move { publish_jobs(&broker, &jobs).await.then_some(message_id) });
                }
                None => break,
            },
            Some(confirmed) = in_flight.next() => {
                if let Some(message_id) = confirmed {
                    let _ = done.send(message_id);
                }
            }
        }
    }
    while let Some(confirmed) = in_flight.next().await {
        if let Some(message_id) = confirmed {
            let _ = done.send(message_id);
        }
    }
}

/// Publishes jobs and waits for every confirm. True if all were confirmed.
pub async fn publish_jobs(broker: &Broker, jobs: &[DeliveryJob]) -> bool {
    let topology = broker.topology();
    let exchange = topology.delivery();
    let keys: Vec<String> = jobs.iter().map(|job| topology.job_key_for(&job.recipient_id)).collect();
    let publishes = jobs.iter().zip(&keys).map(|(job, key)| broker.publish_json(&exchange, key, job, PublishOptions::persistent()));
    let results = join_all(publishes).await;
    match results.into_iter().find_map(Result::err) {
        None => true,
        Some(error) => {
            tracing::debug!(%error, "job publish failed; the outbox relay will retry");
            false
        }
    }
}

/// Deletes outbox rows of confirmed messages, many per statement: after the
/// first confirmation, those of the next `linger` join it. Nothing waits for
/// these deletes, and at a moderate rate this turns a transaction per one or
/// two messages into one per `linger`.
async fn delete_loop(db: PgPool, mut confirmed: mpsc::UnboundedReceiver<Uuid>, linger: Duration) {
    let mut batch = Vec::new();
    while confirmed.recv_many(&mut batch, DELETE_BATCH).await > 0 {
        if batch.len() < DELETE_BATCH {
            tokio::time::sleep(linger).await;
        }
        while batch.len() < DELETE_BATCH
            && let Ok(message_id) = confirmed.try_recv()
        {
            batch.push(message_id);
        }
        // If this fails (or a crash undoes it) the relay republishes them: a
        // duplicate job is harmless. So the commit need not wait for the disk.
        if let Err(error) = delete_confirmed(&db, &batch).await {
            tracing::warn!(%error, "cannot delete confirmed outbox rows");
        }
        batch.clear();
    }
}

async fn delete_confirmed(db: &PgPool, message_ids: &[Uuid]) -> Result<u64, sqlx::Error> {
    let mut tx = courier_shared::db::begin_relaxed(db).await?;
    let deleted = outbox::delete(&mut *tx, message_ids).await?;
    tx.commit().await?;
    Ok(deleted)
}

/// The relay: every `interval`, publishes jobs of outbox rows older than `age`.
pub async fn relay(db: PgPool, broker: Broker, age: Duration, interval: Duration, stop: CancellationToken) {
    let broker = Arc::new(broker);
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = stop.cancelled() => return,
        }
        if !broker.is_connected() {
            continue;
        }
        loop {
            match relay_once(&db, &broker, age).await {
                Ok(relayed) if relayed as i64 == RELAY_BATCH => continue, // more may be waiting
                Ok(_) => break,
                Err(error) => {
                    tracing::warn!(%error, "outbox relay failed; retrying later");
                    break;
                }
            }
        }
    }
}

/// Publishes one batch of stale outbox rows. The rows stay locked (so no other
/// node relays them) until their jobs are confirmed and the rows deleted.
pub async fn relay_once(db: &PgPool, broker: &Broker, age: Duration) -> Result<usize, sqlx::Error> {
    let mut tx = db.begin().await?;
    let claimed = outbox::claim_stale(&mut tx, age, RELAY_BATCH).await?;
    if claimed.is_empty() {
        return Ok(0);
    }
    let jobs = outbox::jobs_for(&mut *tx, &claimed).await?;
    if !publish_jobs(broker, &jobs).await {
        tx.rollback().await?;
        return Ok(0);
    }
    outbox::delete(&mut *tx, &claimed).await?;
    tx.commit().await?;
    tracing::info!(messages = claimed.len(), jobs = jobs.len(), "outbox relay published jobs left behind");
    Ok(claimed.len())
}
