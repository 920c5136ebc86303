//! What the worker's consumers share.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use courier_shared::{broker::Broker, metrics::Metrics};
use sqlx::PgPool;
use tokio::sync::{Semaphore, watch};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use uuid::Uuid;

use crate::{config::WorkerConfig, webhook::Webhook};

pub struct Context {
    pub config: WorkerConfig,
    pub worker_id: String,
    pub db: PgPool,
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
