//! The connections this node holds, by user and by connection id, so pushes
//! from workers reach the right sessions.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
};

use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use courier_shared::job::Delivery;

use crate::inbox::SessionInput;

/// A session's address on this node.
pub struct SessionHandle {
    pub connection_id: Uuid,
    pub user_id: String,
    inbox: mpsc::Sender<SessionInput>,
    /// Cancelled when the session must close because it cannot keep up.
    pub too_slow: CancellationToken,
    /// Deliveries that found the queue full: per chat, the highest seq. The
    /// session reads them from PostgreSQL instead (a burst is not a slow client).
    missed: Mutex<HashMap<Uuid, i64>>,
    has_missed: AtomicBool,
    /// Status changes did not fit: the session resyncs (a drain re-sends them).
    statuses_missed: AtomicBool,
}

impl SessionHandle {
    pub fn new(connection_id: Uuid, user_id: String, inbox: mpsc::Sender<SessionInput>, too_slow: CancellationToken) -> Self {
        Self {
            connection_id,
            user_id,
            inbox,
            too_slow,
            missed: Mutex::default(),
            has_missed: AtomicBool::new(false),
            statuses_missed: AtomicBool::new(false),
        }
    }

    /// Queues an input without waiting. Live deliveries and status changes may
    /// fill only half the queue: both can be read again from PostgreSQL, so
    /// beyond that deliveries are noted and gap-filled later, and a status
    /// change asks for a resync (a drain re-sends every status the sender has
    /// not acknowledged). The other half stays free for inputs that cannot be
    /// re-read (drain pages). Anything else
    /// that does not fit means the session cannot keep up: it is closed
    /// (4008), and what it misses is still in PostgreSQL for the next connection.
    pub fn offer(&self, input: SessionInput) -> bool {
        let crowded = self.inbox.capacity() <= self.inbox.max_capacity() / 2;
        match &input {
            SessionInput::Deliver(delivery) if crowded => {
                self.note_missed(delivery);
                return true;
            }
            SessionInput::Status(_) if crowded => {
                self.statuses_missed.store(true, Ordering::Release);
                return true;
            }
            _ => {}
        }
        match self.inbox.try_send(input) {
            Ok(()) => true,
            Err(TrySendError::Full(SessionInput::Deliver(delivery))) => {
                self.note_missed(&delivery);
                true
            }
            Err(TrySendError::Full(SessionInput::Status(_))) => {
                self.statuses_missed.store(true, Ordering::Release);
                true
            }
            Err(TrySendError::Full(_)) => {
                tracing::warn!(connection_id = %self.connection_id, user_id = %self.user_id, "send queue full: closing slow connection");
                self.too_slow.cancel();
                false
            }
            Err(TrySendError::Closed(_)) => false,
        }
    }

    fn note_missed(&self, delivery: &Delivery) {
        let mut missed = self.missed.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let seq = missed.entry(delivery.chat_id).or_insert(delivery.seq);
        *seq = (*seq).max(delivery.seq);
        self.has_missed.store(true, Ordering::Release);
    }

    /// Whether status changes were left out since the last call.
    pub fn take_statuses_missed(&self) -> bool {
        self.statuses_missed.swap(false, Ordering::AcqRel)
    }

    /// Takes the deliveries noted by [`SessionHandle::offer`] (cheap when there are none).
    pub fn take_missed(&self) -> HashMap<Uuid, i64> {
        if !self.has_missed.swap(false, Ordering::AcqRel) {
            return HashMap::new();
        }
        std::mem::take(&mut *self.missed.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }
}

#[derive(Default)]
pub struct Sessions {
    maps: Mutex<Maps>,
}

#[derive(Default)]
struct Maps {
    by_user: HashMap<String, Vec<Arc<SessionHandle>>>,
    by_connection: HashMap<Uuid, Arc<SessionHandle>>,
}

impl Sessions {
    fn maps(&self) -> MutexGuard<'_, Maps> {
        // A panic while holding this lock would be a bug; keep serving anyway.
        self.maps.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn insert(&self, handle: Arc<SessionHandle>) {
        let mut maps = self.maps();
        maps.by_user.entry(handle.user_id.clone()).or_default().push(handle.clone());
        maps.by_connection.insert(handle.connection_id, handle);
    }

    pub fn remove(&self, connection_id: Uuid) {
        let mut maps = self.maps();
        if let Some(handle) = maps.by_connection.remove(&connection_id)
            && let Some(list) = maps.by_user.get_mut(&handle.user_id)
        {
            list.retain(|h| h.connection_id != connection_id);
            if list.is_empty() {
                maps.by_user.remove(&handle.user_id);
            }
        }
    }

    /// The sessions of one user on this node.
    pub fn of_user(&self, user_id: &str) -> Vec<Arc<SessionHandle>> {
        self.maps().by_user.get(user_id).cloned().unwrap_or_default()
    }

    pub fn get(&self, connection_id: Uuid) -> Option<Arc<SessionHandle>> {
        self.maps().by_connection.get(&connection_id).cloned()
    }

    /// Every session (for broadcasts such as "the broker reconnected").
    pub fn all(&self) -> Vec<Arc<SessionHandle>> {
        self.maps().by_connection.values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.maps().by_connection.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
