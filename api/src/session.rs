//! One client connection's delivery session, independent of the transport.
//!
//! The session decides what the client sees and when, so that per chat
//! `message:receive` arrives in `seq` order, a message the client acknowledged
//! is never pushed again, and `delivered` is written only after the ack.
//!
//! - Every delivery carries `prev_seq`, the seq of this recipient's previous
//!   message in the chat. The session remembers per chat how far it has pushed
//!   (`through`): a delivery with `prev_seq <= through` is next in line; one
//!   with `seq <= through` is a duplicate (a retried or raced job); anything
//!   else arrived early and waits briefly for its predecessor, after which the
//!   session reads the gap from PostgreSQL, the source of truth.
//! - On connect, a worker drains the backlog in pages. Live deliveries are held
//!   until the drain ends, so they cannot overtake it; the drain's baselines
//!   then say how far each chat is covered.
//! - Unacknowledged messages are sent again with backoff; at most MAX_UNACKED
//!   are in flight, the rest wait in PostgreSQL and are read when room frees up.

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    sync::Arc,
    time::Duration,
};

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::Utc;
use courier_shared::{
    ClientError, ErrorCode,
    broker::PublishOptions,
    db::status,
    job::{ChatBaseline, Delivery, DrainControl, PresenceEvent, PresenceKind, PresenceNotice},
    protocol::StatusUpdate,
};
use serde_json::Value;
use tokio::{sync::mpsc, time::Instant};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{presence, registry::SessionHandle, state::AppState, ws::CloseReason};

/// Credit is reported to the draining worker at least every this many settled frames.
const CREDIT_STEP: u64 = 64;
/// After a failed gap read, try again this much later.
const GAP_RETRY: Duration = Duration::from_secs(1);

/// Input from the node's push consumer.
#[derive(Debug)]
pub enum SessionInput {
    /// A live delivery for this user.
    Deliver(Box<Delivery>),
    /// A status change of one of this user's sent messages.
    Status(StatusUpdate),
    Presence(PresenceNotice),
    DrainBegin { drain_id: Uuid, worker_id: String, baselines: Vec<ChatBaseline> },
    DrainPage { drain_id: Uuid, deliveries: Vec<Delivery>, statuses: Vec<StatusUpdate> },
    DrainEnd { drain_id: Uuid, count: u64 },
    /// The broker connection was rebuilt: pushes in the old queue are lost, so drain again.
    Resync,
}

/// Input from the connection's reader.
#[derive(Debug)]
pub enum ClientInput {
    /// A reply to a client event, sent in order with the server's events
    /// (Socket.IO answers through ack callbacks and sends only errors of
    /// events that had none).
    Reply(Reply),
    /// A server event to number and send, e.g. `message:sent`.
    Event { event: &'static str, data: Value },
    /// The client acknowledged server frame `id`.
    Ack(u64),
    /// The client reported `message:delivered` for a message (already written).
    Delivered(Uuid),
    /// The client will not acknowledge server frame `id` (a Socket.IO ack
    /// that timed out). A status update stops taking up room and is sent again
    /// on the next connection; a message is still resent until acknowledged.
    Unanswered(u64),
}

/// The answer to one client event.
#[derive(Debug)]
pub struct Reply {
    /// The client's frame id on `/ws`; `None` when the event had none.
    pub id: Option<u64>,
    pub result: Result<Value, ClientError>,
}

/// A server event as the session hands it to the transport.
pub enum Outgoing<'a> {
    Receive(&'a Delivery),
    Status(&'a StatusUpdate),
    Presence(&'a PresenceNotice),
    SyncDone(u64),
    Other { event: &'static str, data: &'a Value },
    /// An `error` frame that answers no client frame (e.g. an ack of an unknown frame).
    Error(&'a ClientError),
}

/// The socket closed under us.
#[derive(Debug)]
pub struct TransportClosed;

/// How a session talks to its client: `/ws` frames or Socket.IO emits.
pub trait Transport: Send {
    /// Sends server event `id`.
    fn send_event(&mut self, id: u64, event: Outgoing<'_>) -> impl Future<Output = Result<(), TransportClosed>> + Send;
    /// Sends the reply to a client event.
    fn send_reply(&mut self, reply: Reply) -> impl Future<Output = Result<(), TransportClosed>> + Send;
    /// Closes the connection with a reason.
    fn close(&mut self, reason: CloseReason) -> impl Future<Output = ()> + Send;
}

/// Timing and limits of a session (from the API config).
#[derive(Debug, Clone)]
pub struct SessionLimits {
    pub ack_timeout: Duration,
    pub ack_timeout_max: Duration,
    pub max_unacked: usize,
    pub reorder_wait: Duration,
    pub drain_wait: Duration,
}

/// A frame waiting for the client's ack.
enum Pending {
    Delivery { delivery: Delivery, from_drain: bool, due: Instant, sends: u32 },
    Status { update: StatusUpdate, from_drain: bool },
}

/// How far one chat has been pushed on this connection, and what arrived early.
#[derive(Default)]
struct ChatCursor {
    /// Every message of this chat for this user with seq <= `through` has been
    /// pushed on this connection or was delivered before.
    through: Option<i64>,
    /// Deliveries that arrived before their predecessor, by seq.
    early: BTreeMap<i64, Delivery>,
    /// When the gap is read from PostgreSQL if still open.
    gap_deadline: Option<Instant>,
}

enum DrainPhase {
    /// Connected; the worker has not started the drain yet.
    AwaitingBegin { asked_at: Instant },
    Running(RunningDrain),
    Complete,
}

struct RunningDrain {
    drain_id: Uuid,
    worker_id: String,
    baselines: Vec<ChatBaseline>,
    /// Drain items received, and those settled (acked, or skipped as already pushed).
    received: u64,
    settled: u64,
    credited: u64,
    /// Inbox position of the last drained message, to resume from.
    last_status_id: i64,
    last_progress: Instant,
}

pub struct Session {
    state: AppState,
    pub user_id: String,
    pub connection_id: Uuid,
    limits: SessionLimits,
    last_frame_id: u64,
    unacked: HashMap<u64, Pending>,
    /// Delivery frames from the drain not yet acked (for `sync:done`).
    drain_unacked: u64,
    /// `sync:done {count}` waits for `drain_unacked` to reach zero.
    sync_done: Option<u64>,
    sync_done_sent: bool,
    chats: HashMap<Uuid, ChatCursor>,
    drain: DrainPhase,
    /// Live deliveries held while the drain runs.
    held: Vec<Delivery>,
    /// Chats with deliveries that were not kept in memory (too many held or in
    /// flight): read from PostgreSQL up to this seq when there is room.
    overflow: HashMap<Uuid, i64>,
    /// Earliest time a resend may be due.
    next_resend: Option<Instant>,
}

impl Session {
    pub fn new(state: AppState, user_id: String, connection_id: Uuid) -> Self {
        let config = &state.config;
        let limits = SessionLimits {
            ack_timeout: config.ack_timeout,
            ack_timeout_max: config.ack_timeout_max,
            max_unacked: config.max_unacked.max(1),
            reorder_wait: config.reorder_wait,
            drain_wait: config.drain_wait,
        };
        Self {
            state,
            user_id,
            connection_id,
            limits,
            last_frame_id: 0,
            unacked: HashMap::new(),
            drain_unacked: 0,
            sync_done: None,
            sync_done_sent: false,
            chats: HashMap::new(),
            drain: DrainPhase::AwaitingBegin { asked_at: Instant::now() },
            held: Vec::new(),
            overflow: HashMap::new(),
            next_resend: None,
        }
    }

    /// Runs until the client goes, the session is too slow, or the node stops.
    pub async fn run<T: Transport>(
        mut self,
        mut transport: T,
        handle: Arc<SessionHandle>,
        mut pushes: mpsc::Receiver<SessionInput>,
        mut client: mpsc::Receiver<ClientInput>,
        node_stopping: CancellationToken,
    ) -> CloseReason {
        let too_slow = handle.too_slow.clone();
        let reason = loop {
            let missed = handle.take_missed();
            if !missed.is_empty() && self.on_missed(&mut transport, missed).await.is_err() {
                break self.why_closed(&too_slow, &node_stopping);
            }
            // One resync at a time: a drain already running re-sends them anyway
            // or is followed by this one; back-to-back drains would re-read
            // every unacknowledged status over and over.
            let resync = matches!(self.drain, DrainPhase::Complete) && handle.take_statuses_missed();
            if resync && self.on_push(&mut transport, SessionInput::Resync).await.is_err() {
                break self.why_closed(&too_slow, &node_stopping);
            }
            let wake_at = self.next_wake();
            let step = tokio::select! {
                biased;
                () = node_stopping.cancelled() => break CloseReason::ServerRestart,
                () = too_slow.cancelled() => break CloseReason::SlowConsumer,
                input = client.recv() => match input {
                    Some(input) => self.on_client(&mut transport, input).await,
                    None => break CloseReason::Normal,
                },
                input = pushes.recv() => match input {
                    Some(input) => self.on_push(&mut transport, input).await,
                    None => break CloseReason::Normal,
                },
                () = sleep_until(wake_at), if wake_at.is_some() => self.on_timer(&mut transport).await,
            };
            if step.is_err() {
                break self.why_closed(&too_slow, &node_stopping);
            }
        };
        transport.close(reason).await;
        self.finish();
        reason
    }

    /// Why a send failed: the node is stopping, the transport gave up on a
    /// client that does not read (it cancels `too_slow`), or the socket closed.
    fn why_closed(&self, too_slow: &CancellationToken, node_stopping: &CancellationToken) -> CloseReason {
        if node_stopping.is_cancelled() {
            CloseReason::ServerRestart
        } else if too_slow.is_cancelled() {
            CloseReason::SlowConsumer
        } else {
            CloseReason::Normal
        }
    }

    /// Deliveries that did not fit in the queue: read from PostgreSQL in order.
    async fn on_missed<T: Transport>(&mut self, transport: &mut T, missed: HashMap<Uuid, i64>) -> Result<(), TransportClosed> {
        for (chat_id, seq) in missed {
            self.note_overflow(chat_id, seq);
        }
        self.resume_overflow(transport).await
    }

    fn next_frame_id(&mut self) -> u64 {
        self.last_frame_id += 1;
        self.last_frame_id
    }

    async fn on_client<T: Transport>(&mut self, transport: &mut T, input: ClientInput) -> Result<(), TransportClosed> {
        match input {
            ClientInput::Reply(reply) => transport.send_reply(reply).await,
            ClientInput::Event { event, data } => {
                let id = self.next_frame_id();
                transport.send_event(id, Outgoing::Other { event, data: &data }).await
            }
            ClientInput::Ack(id) => self.on_ack(transport, id).await,
            ClientInput::Delivered(message_id) => {
                // Written by the reader already; just stop resending it here.
                let frame = self.unacked.iter().find_map(|(id, pending)| match pending {
                    Pending::Delivery { delivery, .. } if delivery.message_id == message_id => Some(*id),
                    _ => None,
                });
                match frame {
                    Some(id) => self.settle(transport, id, false).await,
                    None => Ok(()),
                }
            }
            ClientInput::Unanswered(id) => {
                if matches!(self.unacked.get(&id), Some(Pending::Status { .. })) {
                    // sender_synced stays false: the next drain sends it again.
                    if let Some(Pending::Status { from_drain: true, .. }) = self.unacked.remove(&id) {
                        self.add_settled(1);
                    }
                    if !self.overflow.is_empty() && self.unacked.len() < self.limits.max_unacked / 2 {
                        self.resume_overflow(transport).await?;
                    }
                }
                Ok(())
            }
        }
    }

    async fn on_push<T: Transport>(&mut self, transport: &mut T, input: SessionInput) -> Result<(), TransportClosed> {
        match input {
            SessionInput::Deliver(delivery) => self.on_live(transport, *delivery).await,
            SessionInput::Status(update) => self.send_status(transport, update, false).await,
            SessionInput::Presence(notice) => {
                let id = self.next_frame_id();
                transport.send_event(id, Outgoing::Presence(&notice)).await
            }
            SessionInput::DrainBegin { drain_id, worker_id, baselines } => {
                if let DrainPhase::Running(old) = &self.drain {
                    presence::cancel_drain(&self.state, old.worker_id.clone(), old.drain_id);
                }
                self.drain = DrainPhase::Running(RunningDrain {
                    drain_id,
                    worker_id,
                    baselines,
                    received: 0,
                    settled: 0,
                    credited: 0,
                    last_status_id: 0,
                    last_progress: Instant::now(),
                });
                Ok(())
            }
            SessionInput::DrainPage { drain_id, deliveries, statuses } => {
                self.on_drain_page(transport, drain_id, deliveries, statuses).await
            }
            SessionInput::DrainEnd { drain_id, count } => self.on_drain_end(transport, drain_id, count).await,
            SessionInput::Resync => {
                // Whatever the drain's state, pages may have been lost with the old queue.
                let resume_after = match &self.drain {
                    DrainPhase::Running(drain) => drain.last_status_id,
                    _ => 0,
                };
                self.request_drain(resume_after);
                if matches!(self.drain, DrainPhase::AwaitingBegin { .. }) {
                    self.drain = DrainPhase::AwaitingBegin { asked_at: Instant::now() };
                }
                Ok(())
            }
        }
    }

    /// A live delivery: held during the drain, otherwise through the order gate.
    async fn on_live<T: Transport>(&mut self, transport: &mut T, delivery: Delivery) -> Result<(), TransportClosed> {
        if matches!(self.drain, DrainPhase::Complete) {
            return self.offer(transport, delivery).await;
        }
        if self.held.len() < self.limits.max_unacked {
            self.held.push(delivery);
        } else {
            self.note_overflow(delivery.chat_id, delivery.seq);
        }
        Ok(())
    }

    /// The order gate for one delivery.
    async fn offer<T: Transport>(&mut self, transport: &mut T, delivery: Delivery) -> Result<(), TransportClosed> {
        let chat_id = delivery.chat_id;
        let cursor = self.chats.entry(chat_id).or_default();
        match cursor.through {
            Some(through) if delivery.seq <= through => Ok(()), // already pushed here or delivered before
            Some(through) if delivery.prev_seq <= through => {
                if self.unacked.len() >= self.limits.max_unacked {
                    self.note_overflow(chat_id, delivery.seq);
                    return Ok(());
                }
                cursor.through = Some(delivery.seq);
                self.push(transport, delivery, false).await?;
                self.release_early(transport, chat_id).await
            }
            known => {
                // Early, or the first delivery of a chat this connection knows
                // nothing about: wait for the predecessor, or read the gap now.
                let wait = if known.is_some() { self.limits.reorder_wait } else { Duration::ZERO };
                cursor.gap_deadline.get_or_insert_with(|| Instant::now() + wait);
                cursor.early.insert(delivery.seq, delivery);
                if wait.is_zero() {
                    return self.fill_gap(transport, chat_id).await;
                }
                Ok(())
            }
        }
    }

    /// Pushes early deliveries of a chat that have become next in line.
    async fn release_early<T: Transport>(&mut self, transport: &mut T, chat_id: Uuid) -> Result<(), TransportClosed> {
        loop {
            let room = self.unacked.len() < self.limits.max_unacked;
            let Some(cursor) = self.chats.get_mut(&chat_id) else { return Ok(()) };
            let Some(through) = cursor.through else { return Ok(()) };
            let Some(entry) = cursor.early.first_entry() else {
                cursor.gap_deadline = None;
                return Ok(());
            };
            if entry.get().seq <= through {
                entry.remove();
                continue;
            }
            if entry.get().prev_seq > through {
                return Ok(());
            }
            if !room {
                let seq = entry.get().seq;
                self.note_overflow(chat_id, seq);
                return Ok(());
            }
            let delivery = entry.remove();
            cursor.through = Some(delivery.seq);
            self.push(transport, delivery, false).await?;
        }
    }

    /// Reads a chat's missing messages from PostgreSQL and pushes them in order,
    /// up to the highest early delivery (or overflow mark).
    async fn fill_gap<T: Transport>(&mut self, transport: &mut T, chat_id: Uuid) -> Result<(), TransportClosed> {
        let cursor = self.chats.entry(chat_id).or_default();
        let early_max = cursor.early.last_key_value().map(|(seq, _)| *seq);
        let overflow_max = self.overflow.get(&chat_id).copied();
        let Some(up_to) = early_max.max(overflow_max) else {
            cursor.gap_deadline = None;
            return Ok(());
        };
        let after = cursor.through.unwrap_or(0);
        let room = self.limits.max_unacked.saturating_sub(self.unacked.len());
        if room == 0 {
            // Resumes when acks free up room.
            cursor.gap_deadline = None;
            self.overflow.insert(chat_id, up_to);
            return Ok(());
        }
        let rows = status::undelivered_in_chat(&self.state.db, &self.user_id, chat_id, after, up_to, room as i64).await;
        let rows = match rows {
            Ok(rows) => rows,
            Err(error) => {
                tracing::warn!(%error, %chat_id, "cannot read a gap; retrying");
                cursor.gap_deadline = Some(Instant::now() + GAP_RETRY);
                return Ok(());
            }
        };
        let complete = rows.len() < room;
        let covered = if complete { up_to } else { rows.last().map_or(after, |d| d.seq) };
        let cursor = self.chats.entry(chat_id).or_default();
        cursor.through = Some(covered.max(after));
        cursor.gap_deadline = None;
        // Early deliveries the gap read covered are either in `rows` or no longer pending.
        cursor.early.retain(|seq, _| *seq > covered);
        if complete {
            self.overflow.remove(&chat_id);
        } else {
            self.overflow.insert(chat_id, up_to);
        }
        for delivery in rows {
            self.push(transport, delivery, false).await?;
        }
        self.release_early(transport, chat_id).await
    }

    fn note_overflow(&mut self, chat_id: Uuid, seq: i64) {
        let mark = self.overflow.entry(chat_id).or_insert(seq);
        *mark = (*mark).max(seq);
    }

    /// Sends one `message:receive` and tracks it until acked.
    async fn push<T: Transport>(&mut self, transport: &mut T, delivery: Delivery, from_drain: bool) -> Result<(), TransportClosed> {
        let id = self.next_frame_id();
        transport.send_event(id, Outgoing::Receive(&delivery)).await?;
        tracing::debug!(message_id = %delivery.message_id, recipient_id = %self.user_id, frame_id = id, from_drain,
            "message:receive pushed");
        let due = Instant::now() + self.limits.ack_timeout;
        self.next_resend = Some(self.next_resend.map_or(due, |at| at.min(due)));
        if from_drain {
            self.drain_unacked += 1;
        }
        self.unacked.insert(id, Pending::Delivery { delivery, from_drain, due, sends: 1 });
        Ok(())
    }

    async fn send_status<T: Transport>(&mut self, transport: &mut T, update: StatusUpdate, from_drain: bool) -> Result<(), TransportClosed> {
        let id = self.next_frame_id();
        transport.send_event(id, Outgoing::Status(&update)).await?;
        self.unacked.insert(id, Pending::Status { update, from_drain });
        Ok(())
    }

    async fn on_drain_page<T: Transport>(
        &mut self,
        transport: &mut T,
        drain_id: Uuid,
        deliveries: Vec<Delivery>,
        statuses: Vec<StatusUpdate>,
    ) -> Result<(), TransportClosed> {
        let DrainPhase::Running(drain) = &mut self.drain else { return Ok(()) };
        if drain.drain_id != drain_id {
            return Ok(()); // a superseded drain; it was cancelled
        }
        drain.last_progress = Instant::now();
        drain.received += (deliveries.len() + statuses.len()) as u64;
        if let Some(last) = deliveries.last() {
            drain.last_status_id = drain.last_status_id.max(last.status_id);
        }
        let mut skipped = 0;
        for delivery in deliveries {
            let cursor = self.chats.entry(delivery.chat_id).or_default();
            if cursor.through.is_some_and(|through| delivery.seq <= through) {
                skipped += 1;
                continue;
            }
            cursor.through = Some(delivery.seq);
            self.push(transport, delivery, true).await?;
        }
        for update in statuses {
            self.send_status(transport, update, true).await?;
        }
        self.add_settled(skipped);
        Ok(())
    }

    async fn on_drain_end<T: Transport>(&mut self, transport: &mut T, drain_id: Uuid, count: u64) -> Result<(), TransportClosed> {
        let DrainPhase::Running(drain) = &self.drain else { return Ok(()) };
        if drain.drain_id != drain_id {
            return Ok(());
        }
        for baseline in &drain.baselines {
            let cursor = self.chats.entry(baseline.chat_id).or_default();
            cursor.through = Some(cursor.through.map_or(baseline.seq, |t| t.max(baseline.seq)));
        }
        self.drain = DrainPhase::Complete;
        if !self.sync_done_sent {
            self.sync_done = Some(count);
        }
        tracing::debug!(count, "drain complete");
        for delivery in std::mem::take(&mut self.held) {
            self.offer(transport, delivery).await?;
        }
        self.maybe_sync_done(transport).await?;
        self.resume_overflow(transport).await
    }

    async fn maybe_sync_done<T: Transport>(&mut self, transport: &mut T) -> Result<(), TransportClosed> {
        if self.drain_unacked == 0
            && let Some(count) = self.sync_done.take()
        {
            self.sync_done_sent = true;
            let id = self.next_frame_id();
            transport.send_event(id, Outgoing::SyncDone(count)).await?;
        }
        Ok(())
    }

    /// Chats whose deliveries did not fit in memory: read them now if there is room.
    async fn resume_overflow<T: Transport>(&mut self, transport: &mut T) -> Result<(), TransportClosed> {
        if !matches!(self.drain, DrainPhase::Complete) {
            return Ok(());
        }
        let chats: Vec<Uuid> = self.overflow.keys().copied().collect();
        for chat_id in chats {
            if self.unacked.len() >= self.limits.max_unacked {
                break;
            }
            self.fill_gap(transport, chat_id).await?;
        }
        Ok(())
    }

    async fn on_ack<T: Transport>(&mut self, transport: &mut T, id: u64) -> Result<(), TransportClosed> {
        if id == 0 || id > self.last_frame_id {
            let error = ClientError::new(ErrorCode::UnknownFrame, format!("ack for frame {id}, which was never sent"));
            return transport.send_event(0, Outgoing::Error(&error)).await;
        }
        self.settle(transport, id, true).await
    }

    /// The client has frame `id`: record it, credit the drain, make room.
    async fn settle<T: Transport>(&mut self, transport: &mut T, id: u64, write: bool) -> Result<(), TransportClosed> {
        let Some(pending) = self.unacked.remove(&id) else { return Ok(()) };
        let from_drain = match pending {
            Pending::Delivery { delivery, from_drain, .. } => {
                let waited = (Utc::now() - delivery.created_at).to_std().unwrap_or_default();
                let path = if from_drain { "drained" } else { "live" };
                self.state.metrics.delivery_latency.with_label_values(&[path]).observe(waited.as_secs_f64());
                tracing::debug!(message_id = %delivery.message_id, recipient_id = %self.user_id, path,
                    latency_ms = waited.as_millis() as u64, "client acknowledged message");
                if write {
                    self.state.status_writer.delivered(delivery.message_id, self.user_id.clone()).await;
                }
                if from_drain {
                    self.drain_unacked = self.drain_unacked.saturating_sub(1);
                }
                from_drain
            }
            Pending::Status { update, from_drain } => {
                self.state.status_writer.sender_synced(update.message_id, update.user_id, update.status).await;
                from_drain
            }
        };
        if from_drain {
            self.add_settled(1);
        }
        self.maybe_sync_done(transport).await?;
        if !self.overflow.is_empty() && self.unacked.len() < self.limits.max_unacked / 2 {
            self.resume_overflow(transport).await?;
        }
        Ok(())
    }

    /// Counts settled drain items and tells the worker when enough have accumulated.
    fn add_settled(&mut self, settled: u64) {
        let DrainPhase::Running(drain) = &mut self.drain else { return };
        drain.settled += settled;
        let caught_up = drain.settled >= drain.received;
        if drain.settled > drain.credited && (drain.settled - drain.credited >= CREDIT_STEP || caught_up) {
            drain.credited = drain.settled;
            let control = DrainControl::Credit { drain_id: drain.drain_id, acked: drain.settled };
            presence::send_control(&self.state, drain.worker_id.clone(), control);
        }
    }

    fn next_wake(&self) -> Option<Instant> {
        let gap = self.chats.values().filter_map(|c| c.gap_deadline).min();
        let drain = match &self.drain {
            DrainPhase::AwaitingBegin { asked_at } => Some(*asked_at + self.limits.drain_wait),
            DrainPhase::Running(drain) => Some(drain.last_progress + self.limits.drain_wait),
            DrainPhase::Complete => None,
        };
        [self.next_resend, gap, drain].into_iter().flatten().min()
    }

    async fn on_timer<T: Transport>(&mut self, transport: &mut T) -> Result<(), TransportClosed> {
        let now = Instant::now();
        if self.next_resend.is_some_and(|at| at <= now) {
            self.resend_due(transport, now).await?;
        }
        let gaps: Vec<Uuid> = self
            .chats
            .iter()
            .filter(|(_, c)| c.gap_deadline.is_some_and(|at| at <= now))
            .map(|(chat_id, _)| *chat_id)
            .collect();
        for chat_id in gaps {
            self.fill_gap(transport, chat_id).await?;
        }
        match &mut self.drain {
            DrainPhase::AwaitingBegin { asked_at } if *asked_at + self.limits.drain_wait <= now => {
                // The presence event or the drain's start got lost (broker down, worker died).
                *asked_at = now;
                self.request_drain(0);
            }
            DrainPhase::Running(drain) if drain.last_progress + self.limits.drain_wait <= now => {
                drain.last_progress = now;
                // Waiting on our client is not a stall; waiting on the worker is.
                if drain.settled >= drain.received {
                    let resume_after = drain.last_status_id;
                    tracing::info!(drain_id = %drain.drain_id, resume_after, "drain stalled; asking again");
                    self.request_drain(resume_after);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Sends unacknowledged messages again, in their original order, with backoff.
    async fn resend_due<T: Transport>(&mut self, transport: &mut T, now: Instant) -> Result<(), TransportClosed> {
        let mut due: Vec<u64> = self
            .unacked
            .iter()
            .filter(|(_, p)| matches!(p, Pending::Delivery { due, .. } if *due <= now))
            .map(|(id, _)| *id)
            .collect();
        due.sort_unstable();
        for id in due {
            if let Some(Pending::Delivery { delivery, due, sends, .. }) = self.unacked.get_mut(&id) {
                *sends += 1;
                *due = now + resend_delay(&self.limits, *sends);
                tracing::info!(message_id = %delivery.message_id, recipient_id = %self.user_id, attempt = *sends,
                    reason = "ack_timeout", "delivery failed: client did not acknowledge; resending");
                transport.send_event(id, Outgoing::Receive(delivery)).await?;
            }
        }
        self.next_resend = self
            .unacked
            .values()
            .filter_map(|p| match p {
                Pending::Delivery { due, .. } => Some(*due),
                Pending::Status { .. } => None,
            })
            .min();
        Ok(())
    }

    /// Asks a worker to drain this connection's backlog (again), from inbox position `resume_after`.
    fn request_drain(&self, resume_after: i64) {
        let event = PresenceEvent {
            user_id: self.user_id.clone(),
            node_id: self.state.node_id.clone(),
            connection_id: self.connection_id,
            kind: PresenceKind::Resync { resume_after },
            at: Utc::now(),
        };
        let broker = self.state.broker.clone();
        tokio::spawn(async move {
            let exchange = broker.topology().presence();
            if let Err(error) = broker.publish_json(&exchange, "", &event, PublishOptions::persistent()).await {
                tracing::warn!(%error, "cannot ask for a drain; will ask again");
            }
        });
    }

    /// Called when the session ends: a running drain is cancelled.
    fn finish(&mut self) {
        if let DrainPhase::Running(drain) = &self.drain {
            presence::cancel_drain(&self.state, drain.worker_id.clone(), drain.drain_id);
        }
    }
}

/// How long a delivery sent `sends` times waits for its ack before the next
/// resend: ACK_TIMEOUT, doubling with every resend, at most ACK_TIMEOUT_MAX.
fn resend_delay(limits: &SessionLimits, sends: u32) -> Duration {
    let resends = sends.saturating_sub(1).min(64) as usize;
    ExponentialBuilder::default()
        .with_min_delay(limits.ack_timeout)
        .with_factor(2.0)
        .with_max_delay(limits.ack_timeout_max)
        .without_max_times()
        .build()
        .nth(resends)
        .unwrap_or(limits.ack_timeout_max)
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unacknowledged_deliveries_are_resent_with_doubling_waits_up_to_the_maximum() {
        let limits = SessionLimits {
            ack_timeout: Duration::from_secs(10),
            ack_timeout_max: Duration::from_secs(120),
            max_unacked: 1024,
            reorder_wait: Duration::from_millis(500),
            drain_wait: Duration::from_secs(10),
        };
        let waits: Vec<u64> = (1..=7).map(|sends| resend_delay(&limits, sends).as_secs()).collect();
        assert_eq!(waits, vec![10, 20, 40, 80, 120, 120, 120]);
        assert_eq!(resend_delay(&limits, u32::MAX), Duration::from_secs(120));
    }
}
