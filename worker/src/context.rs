//! What the worker's consumers share.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use courier_shared::{
    broker::{Broker, Link},
    metrics::Metrics,
};
use futures::{FutureExt, StreamExt};
use lapin::{
    Channel, Consumer,
    message::Delivery,
    options::{BasicConsumeOptions, BasicQosOptions},
    types::FieldTable,
};
use sqlx::PgPool;
use tokio::sync::{Semaphore, watch};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use uuid::Uuid;

use crate::{config::WorkerConfig, webhook::Webhook};

pub struct Context {
    pub config: WorkerConfig,
    pub worker_id: String,
    pub db: PgPool,
    /// The same database on connections that keep one plan per statement
    /// ([`Plans::Kept`](courier_shared::db::Plans::Kept)): only for statements fenced for it.
    pub db_kept_plans: PgPool,
    pub broker: Broker,
    pub drains: DrainCredits,
    pub drain_slots: Arc<Semaphore>,
    /// Cancelled at shutdown: consumers take no new work.
    pub stopping: CancellationToken,
    /// Work that shutdown waits for (a batch being routed).
    pub in_flight: TaskTracker,
    pub metrics: Metrics,
    /// The offline push webhook (a no-op when not configured).
    pub webhook: Webhook,
}

impl Context {
    /// Opens a channel that holds at most `prefetch` unacked messages and
    /// consumes `queue` on it, tagged `{worker_id}-{role}` (what the management UI shows).
    pub async fn consume(&self, link: &Link, queue: &str, role: &str, prefetch: u16) -> Result<(Channel, Consumer), lapin::Error> {
        let channel = link.channel().await?;
        channel.basic_qos(prefetch, BasicQosOptions::default()).await?;
        let tag = format!("{}-{role}", self.worker_id);
        let consumer = channel.basic_consume(queue.into(), tag.into(), BasicConsumeOptions::default(), FieldTable::default()).await?;
        Ok((channel, consumer))
    }
}

/// Adds to `batch` what the consumer already holds, without waiting, up to `max` in all.
pub fn take_ready(consumer: &mut Consumer, batch: &mut Vec<Delivery>, max: usize) -> Result<(), lapin::Error> {
    while batch.len() < max {
        match consumer.next().now_or_never() {
            Some(Some(next)) => batch.push(next?),
            _ => break,
        }
    }
    Ok(())
}

/// A drain's progress as its connection reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Credit {
    pub acked: u64,
    pub cancelled: bool,
}

/// Credit channels of the drains running on this worker, by drain id.
#[derive(Default)]
pub struct DrainCredits {
    channels: Mutex<HashMap<Uuid, watch::Sender<Credit>>>,
}

impl DrainCredits {
    pub fn register(&self, drain_id: Uuid) -> watch::Receiver<Credit> {
        let (sender, receiver) = watch::channel(Credit::default());
        self.lock().insert(drain_id, sender);
        receiver
    }

    pub fn unregister(&self, drain_id: Uuid) {
        self.lock().remove(&drain_id);
    }

    pub fn update(&self, drain_id: Uuid, change: impl FnOnce(&mut Credit)) {
        if let Some(sender) = self.lock().get(&drain_id) {
            sender.send_modify(change);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, watch::Sender<Credit>>> {
        self.channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
