//! The connections this node holds, by user and by connection id, so pushes
//! from workers reach the right sessions.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
};

use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use courier_shared::job::Delivery;

use crate::{inbox::SessionInput, transport::CloseReason};

/// A session's address on this node.
pub struct SessionHandle {
    pub connection_id: Uuid,
    pub user_id: String,
    pub device_id: String,
    /// Inputs are boxed: a channel allocates its first block of 32 slots
    /// up front, per connection, so a slot is a pointer, not an input.
    inbox: mpsc::Sender<Box<SessionInput>>,
    /// Cancelled when the session must close because it cannot keep up, or
    /// because the node ends it ([`SessionHandle::end`]).
    pub too_slow: CancellationToken,
    /// Why the node ended the session, when it did ([`SessionHandle::end`]).
    ended_for: OnceLock<CloseReason>,
    /// Deliveries that found the queue full: per chat, the highest seq. The
    /// session reads them from PostgreSQL instead (a burst is not a slow client).
    missed: Mutex<HashMap<Uuid, i64>>,
    has_missed: AtomicBool,
    /// Status changes did not fit: the session resyncs (a drain re-sends them).
    statuses_missed: AtomicBool,
}

impl SessionHandle {
    pub fn new(
        connection_id: Uuid,
        user_id: String,
        device_id: String,
        inbox: mpsc::Sender<Box<SessionInput>>,
        too_slow: CancellationToken,
    ) -> Self {
        Self {
            connection_id,
            user_id,
            device_id,
            inbox,
            too_slow,
            ended_for: OnceLock::new(),
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
            // A receipt is superseded by the next one and readable from
            // `GET /api/sync`: under a burst it is dropped, not queued.
            SessionInput::Receipt(_) if crowded => return true,
            // Typing notices are ephemeral: under a burst they are dropped,
            // and never cost the connection.
            SessionInput::Typing(_) if crowded => return true,
            _ => {}
        }
        let full = match self.inbox.try_send(Box::new(input)) {
            Ok(()) => return true,
            Err(TrySendError::Closed(_)) => return false,
            Err(TrySendError::Full(input)) => input,
        };
        match *full {
            SessionInput::Deliver(delivery) => {
                self.note_missed(&delivery);
                true
            }
            SessionInput::Status(_) => {
                self.statuses_missed.store(true, Ordering::Release);
                true
            }
            SessionInput::Receipt(_) | SessionInput::Typing(_) => true,
            _ => {
                tracing::warn!(connection_id = %self.connection_id, user_id = %self.user_id, "send queue full: closing slow connection");
                self.too_slow.cancel();
                false
            }
        }
    }

    /// Ends the session with `reason`: the same path as a client too slow to
    /// keep up (a blocked send is given up at once), with its own close code.
    pub fn end(&self, reason: CloseReason) {
        let _ = self.ended_for.set(reason);
        self.too_slow.cancel();
    }

    /// The reason given to [`SessionHandle::end`], if the node ended the session.
    pub fn ended_for(&self) -> Option<CloseReason> {
        self.ended_for.get().copied()
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

    /// Ends every session of one device of a user on this node; returns how many.
    pub fn end_device(&self, user_id: &str, device_id: &str, reason: CloseReason) -> usize {
        let sessions: Vec<Arc<SessionHandle>> =
            self.of_user(user_id).into_iter().filter(|session| session.device_id == device_id).collect();
        for session in &sessions {
            session.end(reason);
        }
        sessions.len()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn session(sessions: &Sessions, user_id: &str, device_id: &str) -> Arc<SessionHandle> {
        let (inbox, _) = mpsc::channel(4);
        let handle = Arc::new(SessionHandle::new(
            Uuid::now_v7(),
            user_id.to_owned(),
            device_id.to_owned(),
            inbox,
            CancellationToken::new(),
        ));
        sessions.insert(handle.clone());
        handle
    }

    #[test]
    fn ending_a_device_ends_only_its_sessions_with_the_reason() {
        let sessions = Sessions::default();
        let phone = [session(&sessions, "alice", "phone"), session(&sessions, "alice", "phone")];
        let laptop = session(&sessions, "alice", "laptop");
        let bobs_phone = session(&sessions, "bob", "phone");

        assert_eq!(sessions.end_device("alice", "phone", CloseReason::DeviceRevoked), 2);
        for handle in &phone {
            assert!(handle.too_slow.is_cancelled());
            assert_eq!(handle.ended_for(), Some(CloseReason::DeviceRevoked));
        }
        for other in [&laptop, &bobs_phone] {
            assert!(!other.too_slow.is_cancelled());
            assert_eq!(other.ended_for(), None);
        }
        assert_eq!(sessions.end_device("alice", "tablet", CloseReason::DeviceRevoked), 0);
    }

    #[test]
    fn a_client_too_slow_has_no_reason_from_the_node() {
        let sessions = Sessions::default();
        let handle = session(&sessions, "alice", "phone");
        handle.too_slow.cancel();
        assert_eq!(handle.ended_for(), None);
        // The first reason stands.
        handle.end(CloseReason::DeviceRevoked);
        handle.end(CloseReason::Normal);
        assert_eq!(handle.ended_for(), Some(CloseReason::DeviceRevoked));
    }
}
