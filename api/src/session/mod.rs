//! One client connection's delivery session, independent of the transport.
//!
//! The session decides what the client sees and when, so that per chat
//! `message:receive` arrives in `seq` order, a message the client acknowledged
//! is never pushed again, and `delivered` is written only after the ack.
//!
//! It is split by the state each part owns; the parts do no I/O and answer
//! with decisions, which this module carries out (PostgreSQL reads, broker
//! messages, transport writes):
//! - `gate.rs`, the per-chat ordering gate: how far each chat has been pushed,
//!   early arrivals, the reorder wait, and chats left in PostgreSQL for want
//!   of room.
//! - `acks.rs`, the ack window: frame numbering, frames awaiting an ack, the
//!   resend schedule, and MAX_UNACKED.
//! - `cursor.rs`, the device's cursor per chat: how far the client has
//!   acknowledged without a hole, whatever order its acks come in.
//! - `drain.rs`, catching up on connect: the drain's phase and credit, live
//!   deliveries held while it runs, and `sync:done`.
//!
//! What the session exchanges with the transports is in `transport.rs`; what
//! the node hands it, in `inbox.rs`.

mod acks;
pub mod cursor;
mod drain;
mod gate;
mod ticks;

use std::{collections::HashMap, sync::Arc};

use chrono::Utc;
use courier_shared::{
    ClientError, ErrorCode,
    db::{devices::Mark, log},
    job::{Delivery, SenderStatus},
    protocol::{DeliveryStatus, SentMessage, server_events},
};
use futures::FutureExt;
use tokio::{sync::mpsc, time::Instant};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use self::{
    acks::{AckWindow, Settled, UnknownFrame},
    cursor::{CursorMove, Cursors},
    drain::{CatchUp, Live, ToWorker},
    gate::{Decision, GapRead, OrderGate},
    ticks::{ReceiptMarks, Ticks},
};
use crate::{
    drain_control,
    inbox::SessionInput,
    registry::SessionHandle,
    state::AppState,
    transport::{ClientInput, CloseReason, Outgoing, Transport, TransportClosed},
};

pub struct Session {
    state: AppState,
    pub user_id: String,
    pub device_id: String,
    pub connection_id: Uuid,
    /// The client asked for `receipt` events only: a `message:status` is
    /// taken as seen without being sent.
    pub receipts_only: bool,
    acks: AckWindow,
    cursors: Cursors,
    gate: OrderGate,
    catch_up: CatchUp,
    ticks: Ticks,
    receipts: ReceiptMarks,
}

impl Session {
    pub fn new(state: AppState, user_id: String, device_id: String, connection_id: Uuid) -> Self {
        let config = &state.config;
        let acks = AckWindow::new(config.ack_timeout, config.ack_timeout_max, config.max_unacked);
        let gate = OrderGate::new(config.reorder_wait);
        let catch_up = CatchUp::new(config.drain_wait, config.max_unacked.max(1), Instant::now());
        let cursors = Cursors::default();
        Self {
            state,
            user_id,
            device_id,
            connection_id,
            receipts_only: false,
            acks,
            gate,
            catch_up,
            cursors,
            ticks: Ticks::default(),
            receipts: ReceiptMarks::default(),
        }
    }

    /// Runs until the client goes, the session is too slow, or the node stops.
    pub async fn run<T: Transport>(
        mut self,
        mut transport: T,
        handle: Arc<SessionHandle>,
        mut pushes: mpsc::Receiver<Box<SessionInput>>,
        mut client: mpsc::Receiver<Box<ClientInput>>,
        node_stopping: CancellationToken,
    ) -> CloseReason {
        let too_slow = handle.too_slow.clone();
        // Every handler runs boxed: a future is as large as the largest state
        // it can be in, and this one lives as long as the connection. Inline,
        // the deepest handler (a gap read from PostgreSQL) would be carried
        // by every idle connection; boxed, it costs an allocation while it runs.
        let mut steps_unflushed = 0;
        let reason = loop {
            let missed = handle.take_missed();
            if !missed.is_empty() && Box::pin(self.on_missed(&mut transport, missed)).await.is_err() {
                break self.why_closed(&too_slow, &node_stopping);
            }
            // One resync at a time: a drain already running re-sends them anyway
            // or is followed by this one; back-to-back drains would re-read
            // every unacknowledged status over and over.
            let resync = self.catch_up.is_complete() && handle.take_statuses_missed();
            if resync && Box::pin(self.on_push(&mut transport, SessionInput::Resync)).await.is_err() {
                break self.why_closed(&too_slow, &node_stopping);
            }
            let wake_at = self.next_wake();
            // Frames are written out when nothing more is ready at once (or
            // after FLUSH_AFTER_STEPS steps), so a burst goes out in one write.
            let ready = if steps_unflushed < FLUSH_AFTER_STEPS {
                next_input(&node_stopping, &too_slow, &mut client, &mut pushes, wake_at).now_or_never()
            } else {
                None
            };
            let wake = match ready {
                Some(wake) => wake,
                None => {
                    steps_unflushed = 0;
                    if Box::pin(transport.flush()).await.is_err() {
                        break self.why_closed(&too_slow, &node_stopping);
                    }
                    next_input(&node_stopping, &too_slow, &mut client, &mut pushes, wake_at).await
                }
            };
            steps_unflushed += 1;
            let step = match wake {
                Wake::Stopping => break CloseReason::ServerRestart,
                Wake::TooSlow => break CloseReason::SlowConsumer,
                Wake::Client(Some(input)) => Box::pin(self.on_client(&mut transport, *input)).await,
                Wake::Push(Some(input)) => Box::pin(self.on_push(&mut transport, *input)).await,
                Wake::Client(None) | Wake::Push(None) => break CloseReason::Normal,
                Wake::Timer => Box::pin(self.on_timer(&mut transport)).await,
            };
            if step.is_err() {
                break self.why_closed(&too_slow, &node_stopping);
            }
        };
        // A session the node ended (e.g. its device was revoked) closes with the node's reason.
        let reason = handle.ended_for().unwrap_or(reason);
        Box::pin(transport.close(reason)).await;
        // A running drain is cancelled: its worker would otherwise wait for
        // credit that never comes.
        if let Some(cancel) = self.catch_up.finish() {
            self.tell_worker(cancel);
        }
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

    fn next_wake(&self) -> Option<Instant> {
        [self.acks.next_due(), self.gate.next_deadline(), self.catch_up.next_wake()].into_iter().flatten().min()
    }

    async fn on_client<T: Transport>(&mut self, transport: &mut T, input: ClientInput) -> Result<(), TransportClosed> {
        match input {
            ClientInput::Reply(reply) => transport.send_reply(reply).await,
            ClientInput::Event { event, data } => {
                let id = self.acks.next_frame_id();
                transport.send_event(id, Outgoing::Other { event, data: &data }).await?;
                if event == server_events::SENT
                    && let Ok(sent) = serde_json::from_value::<SentMessage>(data)
                {
                    // This device has its own message: the chat's order goes on
                    // past it here without waiting for it to come back.
                    let own = self.own_message(sent);
                    self.on_push(transport, SessionInput::Deliver(Box::new(own))).await?;
                }
                Ok(())
            }
            ClientInput::Own(sent) => {
                let own = self.own_message(sent);
                self.on_push(transport, SessionInput::Deliver(Box::new(own))).await
            }
            ClientInput::Ack(id) => match self.acks.ack(id) {
                Ok(settled) => self.on_settled(transport, settled).await,
                Err(UnknownFrame(id)) => {
                    let error = ClientError::new(ErrorCode::UnknownFrame, format!("ack for frame {id}, which was never sent"));
                    transport.send_event(0, Outgoing::Error(&error)).await
                }
            },
            ClientInput::Delivered(message_id) => {
                // The same as an ack of the frame that carried it (and of the
                // entries about messages sent before it in the chat).
                for frame_id in self.acks.frames_delivered_with(message_id) {
                    let settled = self.acks.settle(frame_id);
                    self.on_settled(transport, settled).await?;
                }
                Ok(())
            }
        }
    }

    /// A message this device sent, as the silent entry it is in its chat's sequence here.
    fn own_message(&self, sent: SentMessage) -> Delivery {
        Delivery {
            status_id: 0,
            message_id: sent.message_id,
            chat_id: sent.chat_id,
            seq: sent.seq,
            prev_seq: sent.seq - 1,
            sender_id: self.user_id.clone(),
            sender_device: Some(self.device_id.clone()),
            content: String::new(),
            message_type: String::new(),
            created_at: sent.created_at,
            sender_name: None,
            sender_picture: None,
            silent: true,
            ..Delivery::default()
        }
    }

    async fn on_push<T: Transport>(&mut self, transport: &mut T, input: SessionInput) -> Result<(), TransportClosed> {
        match input {
            SessionInput::Deliver(mut delivery) => {
                // The user's other devices get their own messages; this one passes over its own.
                delivery.silent |= delivery.is_from(&self.user_id, &self.device_id);
                self.on_live(transport, *delivery).await
            }
            SessionInput::Status(status) => self.send_status(transport, status, false).await,
            SessionInput::Presence(notice) => {
                let id = self.acks.next_frame_id();
                transport.send_event(id, Outgoing::Presence(&notice)).await
            }
            SessionInput::Receipt(receipt) => {
                let Some(receipt) = self.receipts.admit(receipt) else { return Ok(()) };
                // Not awaited: the next receipt supersedes it, and /api/sync has the current ones.
                let id = self.acks.next_frame_id();
                let data = serde_json::json!(receipt);
                transport.send_event(id, Outgoing::Other { event: server_events::RECEIPT, data: &data }).await
            }
            SessionInput::Typing(notice) => {
                // Numbered like every server event, but not awaited: it is
                // never sent again, and an ack of it changes nothing.
                let id = self.acks.next_frame_id();
                let data = serde_json::json!(notice);
                transport.send_event(id, Outgoing::Other { event: server_events::TYPING, data: &data }).await
            }
            SessionInput::DrainBegin { drain_id, worker_id, baselines } => {
                if let Some(cancel) = self.catch_up.begin(drain_id, worker_id, baselines, Instant::now()) {
                    self.tell_worker(cancel);
                }
                Ok(())
            }
            SessionInput::DrainPage { drain_id, deliveries, statuses } => {
                self.on_drain_page(transport, drain_id, deliveries, statuses).await
            }
            SessionInput::DrainEnd { drain_id, count } => self.on_drain_end(transport, drain_id, count).await,
            SessionInput::Resync => {
                let resume_after = self.catch_up.resync(Instant::now());
                self.request_drain(resume_after);
                Ok(())
            }
        }
    }

    /// A live delivery: held while the drain runs, else through the ordering gate.
    async fn on_live<T: Transport>(&mut self, transport: &mut T, delivery: Delivery) -> Result<(), TransportClosed> {
        match self.catch_up.live(delivery) {
            Live::PassOn(delivery) => self.offer(transport, delivery).await,
            Live::Held => Ok(()),
            Live::NotKept { chat_id, seq } => {
                self.gate.note_overflow(chat_id, seq);
                Ok(())
            }
        }
    }

    /// Deliveries that did not fit in the queue: read from PostgreSQL in order.
    async fn on_missed<T: Transport>(&mut self, transport: &mut T, missed: HashMap<Uuid, i64>) -> Result<(), TransportClosed> {
        for (chat_id, seq) in missed {
            self.gate.note_overflow(chat_id, seq);
        }
        self.resume_overflow(transport).await
    }

    /// A live delivery through the ordering gate.
    async fn offer<T: Transport>(&mut self, transport: &mut T, delivery: Delivery) -> Result<(), TransportClosed> {
        match self.gate.offer(delivery, self.acks.room(), Instant::now()) {
            Decision::Push(deliveries) => self.push_all(transport, deliveries).await,
            Decision::ReadGap(read) => self.read_gap(transport, read).await,
        }
    }

    /// Reads a chat's missing messages from PostgreSQL and pushes them in order.
    async fn fill_gap<T: Transport>(&mut self, transport: &mut T, chat_id: Uuid) -> Result<(), TransportClosed> {
        match self.gate.fill_gap(chat_id, self.acks.room()) {
            Some(read) => self.read_gap(transport, read).await,
            None => Ok(()),
        }
    }

    async fn read_gap<T: Transport>(&mut self, transport: &mut T, read: GapRead) -> Result<(), TransportClosed> {
        let GapRead { chat_id, after, up_to, limit } = read;
        // What is queued goes out before the session waits for PostgreSQL.
        transport.flush().await?;
        let db = &self.state.db;
        match log::device_gap(db, &self.user_id, &self.device_id, chat_id, after, up_to, limit as i64).await {
            Ok(rows) => {
                let deliveries = self.gate.gap_read(read, rows);
                self.push_all(transport, deliveries).await
            }
            Err(error) => {
                tracing::warn!(%error, %chat_id, "cannot read a gap; retrying");
                self.gate.gap_unreadable(chat_id, Instant::now());
                Ok(())
            }
        }
    }

    /// Chats whose deliveries did not fit in memory: read them now if there is room.
    async fn resume_overflow<T: Transport>(&mut self, transport: &mut T) -> Result<(), TransportClosed> {
        if !self.catch_up.is_complete() {
            return Ok(());
        }
        for chat_id in self.gate.overflowed_chats() {
            if self.acks.room() == 0 {
                break;
            }
            self.fill_gap(transport, chat_id).await?;
        }
        Ok(())
    }

    async fn push_all<T: Transport>(&mut self, transport: &mut T, deliveries: Vec<Delivery>) -> Result<(), TransportClosed> {
        for delivery in deliveries {
            self.push(transport, delivery, false).await?;
        }
        Ok(())
    }

    /// Sends one `message:receive` and tracks it until acked.
    async fn push<T: Transport>(&mut self, transport: &mut T, delivery: Delivery, from_drain: bool) -> Result<(), TransportClosed> {
        if delivery.silent {
            // The device's own message, or one that expired for this user:
            // passed over unseen, as if the client had acknowledged it.
            self.cursors.pushed(delivery.chat_id, delivery.prev_seq, delivery.seq);
            self.move_cursor(delivery.chat_id, delivery.seq).await;
            if from_drain {
                self.drain_settled(1);
            }
            return Ok(());
        }
        let id = self.acks.next_frame_id();
        transport.send_event(id, Outgoing::Receive(&delivery)).await?;
        tracing::debug!(message_id = %delivery.message_id, recipient_id = %self.user_id, frame_id = id, from_drain,
            "message:receive pushed");
        self.cursors.pushed(delivery.chat_id, delivery.prev_seq, delivery.seq);
        self.acks.sent_delivery(id, delivery, from_drain, Instant::now());
        Ok(())
    }

    async fn send_status<T: Transport>(&mut self, transport: &mut T, status: SenderStatus, from_drain: bool) -> Result<(), TransportClosed> {
        // A `delivered` behind its `read` (the client already shows more), or
        // a client that follows `receipt`s: the status counts as shown.
        if !self.ticks.admits(&status.update) || self.receipts_only {
            self.told(&status).await;
            if from_drain {
                self.drain_settled(1);
            }
            return Ok(());
        }
        let id = self.acks.next_frame_id();
        transport.send_event(id, Outgoing::Status(&status.update)).await?;
        self.acks.sent_status(id, status, from_drain, Instant::now());
        Ok(())
    }

    /// The device has been shown `status`: moves its told mark, so that the
    /// next connect does not show it again.
    async fn told(&mut self, status: &SenderStatus) {
        let mark = match status.update.status {
            DeliveryStatus::Read => Mark::ToldRead,
            DeliveryStatus::Expired => Mark::ToldExpired,
            DeliveryStatus::Delivered | DeliveryStatus::Sent => Mark::ToldDelivered,
        };
        let step = CursorMove { chat_id: status.update.chat_id, anchor: status.anchor, acked_seq: status.seq };
        self.state.status_writer.cursor_moved(&self.user_id, &self.device_id, mark, step).await;
    }

    async fn on_drain_page<T: Transport>(
        &mut self,
        transport: &mut T,
        drain_id: Uuid,
        deliveries: Vec<Delivery>,
        statuses: Vec<SenderStatus>,
    ) -> Result<(), TransportClosed> {
        let items = (deliveries.len() + statuses.len()) as u64;
        let last_status_id = deliveries.last().map(|last| last.status_id);
        if !self.catch_up.page(drain_id, items, last_status_id, Instant::now()) {
            return Ok(()); // a superseded drain; it was cancelled
        }
        let (deliveries, skipped) = self.gate.drained(deliveries);
        for delivery in deliveries {
            self.push(transport, delivery, true).await?;
        }
        for status in statuses {
            self.send_status(transport, status, true).await?;
        }
        self.drain_settled(skipped);
        Ok(())
    }

    async fn on_drain_end<T: Transport>(&mut self, transport: &mut T, drain_id: Uuid, count: u64) -> Result<(), TransportClosed> {
        let Some(ended) = self.catch_up.end(drain_id, count) else { return Ok(()) };
        self.gate.cover(&ended.baselines);
        for delivery in ended.held {
            self.offer(transport, delivery).await?;
        }
        self.maybe_sync_done(transport).await?;
        self.resume_overflow(transport).await
    }

    async fn maybe_sync_done<T: Transport>(&mut self, transport: &mut T) -> Result<(), TransportClosed> {
        if let Some(count) = self.catch_up.sync_done_due(self.acks.drain_deliveries_unacked()) {
            let id = self.acks.next_frame_id();
            transport.send_event(id, Outgoing::SyncDone(count)).await?;
        }
        Ok(())
    }

    /// The client has a frame (`settled`, if it was still awaited): record it,
    /// credit the drain, make room.
    async fn on_settled<T: Transport>(&mut self, transport: &mut T, settled: Option<Settled>) -> Result<(), TransportClosed> {
        let Some(settled) = settled else { return Ok(()) };
        let from_drain = settled.is_from_drain();
        match settled {
            Settled::Delivery { delivery, from_drain } => {
                let waited = (Utc::now() - delivery.created_at).to_std().unwrap_or_default();
                let path = if from_drain { "drained" } else { "live" };
                self.state.metrics.delivery_latency.with_label_values(&[path]).observe(waited.as_secs_f64());
                self.state.metrics.delivery("delivered", 1);
                // The guide's "message delivered" line: the device has it (its cursor moves once the run has no hole).
                tracing::info!(message_id = %delivery.message_id, recipient_id = %self.user_id, device_id = %self.device_id,
                    path, latency_ms = waited.as_millis() as u64, "message delivered");
                self.move_cursor(delivery.chat_id, delivery.seq).await;
            }
            Settled::Status { status, .. } => self.told(&status).await,
        }
        if from_drain {
            self.drain_settled(1);
        }
        self.maybe_sync_done(transport).await?;
        if self.gate.has_overflow() && self.acks.has_room_to_resume() {
            self.resume_overflow(transport).await?;
        }
        Ok(())
    }

    /// The device has message `seq` of `chat_id`: moves its cursor if that closes a run.
    async fn move_cursor(&mut self, chat_id: Uuid, seq: i64) {
        for step in self.cursors.acked(chat_id, seq) {
            self.state.status_writer.cursor_moved(&self.user_id, &self.device_id, Mark::Acked, step).await;
        }
    }

    /// Counts settled drain items; the worker gets credit when enough have accumulated.
    fn drain_settled(&mut self, settled: u64) {
        if let Some(credit) = self.catch_up.settled(settled) {
            self.tell_worker(credit);
        }
    }

    async fn on_timer<T: Transport>(&mut self, transport: &mut T) -> Result<(), TransportClosed> {
        let now = Instant::now();
        self.resend_due(transport, now).await?;
        // Statuses the client left unacknowledged come again on its next connection.
        let given_up_from_drain = self.acks.give_up_statuses(now);
        if given_up_from_drain > 0 {
            self.drain_settled(given_up_from_drain);
        }
        for chat_id in self.gate.gaps_due(now) {
            self.fill_gap(transport, chat_id).await?;
        }
        if let Some(resume_after) = self.catch_up.on_timer(now) {
            self.request_drain(resume_after);
        }
        Ok(())
    }

    /// Sends unacknowledged messages again, in their original order, with backoff.
    async fn resend_due<T: Transport>(&mut self, transport: &mut T, now: Instant) -> Result<(), TransportClosed> {
        for resend in self.acks.resends_due(now) {
            if let Some(delivery) = self.acks.delivery(resend.frame_id) {
                tracing::info!(message_id = %delivery.message_id, recipient_id = %self.user_id, attempt = resend.attempt,
                    reason = "ack_timeout", "delivery failed: client did not acknowledge; resending");
                transport.send_event(resend.frame_id, Outgoing::Receive(delivery)).await?;
            }
        }
        Ok(())
    }

    /// Asks a worker to drain this connection's backlog (again), from inbox position `resume_after`.
    fn request_drain(&self, resume_after: i64) {
        drain_control::request(&self.state, self.user_id.clone(), self.device_id.clone(), self.connection_id, resume_after);
    }

    fn tell_worker(&self, message: ToWorker) {
        drain_control::send(&self.state, message.worker_id, message.control);
    }
}

/// Steps a session handles at most before it writes out its queued frames,
/// even while more input is ready: bounds how long a frame waits in a burst.
const FLUSH_AFTER_STEPS: u32 = 64;

/// What woke a session.
enum Wake {
    Stopping,
    TooSlow,
    Client(Option<Box<ClientInput>>),
    Push(Option<Box<SessionInput>>),
    Timer,
}

/// Waits for the session's next input. Every branch is cancel-safe, so the
/// loop can poll it once to see whether anything is ready and drop it.
async fn next_input(
    node_stopping: &CancellationToken,
    too_slow: &CancellationToken,
    client: &mut mpsc::Receiver<Box<ClientInput>>,
    pushes: &mut mpsc::Receiver<Box<SessionInput>>,
    wake_at: Option<Instant>,
) -> Wake {
    tokio::select! {
        biased;
        () = node_stopping.cancelled() => Wake::Stopping,
        () = too_slow.cancelled() => Wake::TooSlow,
        input = client.recv() => Wake::Client(input),
        input = pushes.recv() => Wake::Push(input),
        () = sleep_until(wake_at), if wake_at.is_some() => Wake::Timer,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What the parts' unit tests build their deliveries from.
#[cfg(test)]
mod fixtures {
    use chrono::DateTime;
    use courier_shared::job::Delivery;
    use uuid::Uuid;

    /// The chat of the fixtures.
    pub fn chat() -> Uuid {
        Uuid::from_u128(7)
    }

    /// Message `seq` of [`chat`] from alice, whose predecessor for this
    /// recipient is `prev_seq`, at inbox position `status_id`.
    pub fn delivery(seq: i64, prev_seq: i64, status_id: i64) -> Delivery {
        Delivery {
            status_id,
            message_id: Uuid::from_u128(seq as u128),
            chat_id: chat(),
            seq,
            prev_seq,
            sender_id: "alice".into(),
            sender_device: None,
            content: format!("message {seq}"),
            message_type: "text".into(),
            created_at: DateTime::UNIX_EPOCH,
            sender_name: None,
            sender_picture: None,
            silent: false,
            ..Delivery::default()
        }
    }
}
