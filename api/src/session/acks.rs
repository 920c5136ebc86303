//! The ack window of one connection: the numbering of its server frames, the
//! frames that wait for the client's ack, and when each unacknowledged message
//! is sent again.
//!
//! At most `max_unacked` live messages should be in flight: the window says
//! how much [`AckWindow::room`] is left, and the ordering gate leaves what does
//! not fit in PostgreSQL. Drain pages are not held back here (the worker
//! bounds a drain by the credit the session reports), nor are status updates:
//! they take no room from messages, and one not acknowledged within
//! ACK_TIMEOUT is given up (it comes again on the next connection), so a
//! client that never acknowledges them holds neither messages nor memory.
//!
//! Pure bookkeeping: no I/O and no clock of its own (callers pass `now`), so
//! its rules are unit-tested below; the session sends what it returns.

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use backon::{BackoffBuilder, ExponentialBuilder};
use courier_shared::job::{Delivery, SenderStatus};
use tokio::time::Instant;
use uuid::Uuid;

/// A message frame waiting for the client's ack, sent again at `due`.
struct PendingDelivery {
    delivery: Delivery,
    from_drain: bool,
    due: Instant,
    sends: u32,
}

/// A status frame waiting for the client's ack, given up at `give_up_at`.
struct PendingStatus {
    status: SenderStatus,
    from_drain: bool,
    give_up_at: Instant,
}

/// A frame the client acknowledged, handed back for the session to record.
#[derive(Debug, PartialEq)]
pub enum Settled {
    /// A `message:receive`: the recipient has the message.
    Delivery { delivery: Delivery, from_drain: bool },
    /// A `message:status`: the sender has seen the change.
    Status { status: SenderStatus, from_drain: bool },
}

impl Settled {
    /// Whether the frame was part of the connect-time drain (it counts towards the drain's credit).
    pub fn is_from_drain(&self) -> bool {
        match self {
            Settled::Delivery { from_drain, .. } | Settled::Status { from_drain, .. } => *from_drain,
        }
    }
}

/// An ack of a frame this connection never sent.
#[derive(Debug, PartialEq, Eq)]
pub struct UnknownFrame(pub u64);

/// A message due to be sent again under its frame id.
#[derive(Debug, PartialEq, Eq)]
pub struct Resend {
    pub frame_id: u64,
    /// How many times it will have been sent, this one included.
    pub attempt: u32,
}

pub struct AckWindow {
    ack_timeout: Duration,
    ack_timeout_max: Duration,
    max_unacked: usize,
    last_frame_id: u64,
    deliveries: HashMap<u64, PendingDelivery>,
    /// By frame id, which is also the order they are given up in: all wait ACK_TIMEOUT.
    statuses: BTreeMap<u64, PendingStatus>,
    /// Message frames from the drain not yet acked (`sync:done` waits for
    /// none). Entries about messages (edits, deletes, reactions) are not
    /// counted: a client written for messages only never acks them.
    drain_deliveries: u64,
    /// Earliest time a message's resend may be due.
    next_resend: Option<Instant>,
}

impl AckWindow {
    pub fn new(ack_timeout: Duration, ack_timeout_max: Duration, max_unacked: usize) -> Self {
        Self {
            ack_timeout,
            ack_timeout_max,
            max_unacked: max_unacked.max(1),
            last_frame_id: 0,
            deliveries: HashMap::new(),
            statuses: BTreeMap::new(),
            drain_deliveries: 0,
            next_resend: None,
        }
    }

    /// Numbers the next server frame (every event gets one, awaited or not).
    pub fn next_frame_id(&mut self) -> u64 {
        self.last_frame_id += 1;
        self.last_frame_id
    }

    /// How many more messages may be in flight.
    pub fn room(&self) -> usize {
        self.max_unacked.saturating_sub(self.deliveries.len())
    }

    /// Whether at most half the window is in use: only then are deliveries
    /// left in PostgreSQL read back, so that a trickle of acks does not turn
    /// into a read per ack.
    pub fn has_room_to_resume(&self) -> bool {
        self.deliveries.len() < self.max_unacked / 2
    }

    /// Frames awaiting an ack.
    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.deliveries.len() + self.statuses.len()
    }

    /// Drain deliveries still awaiting an ack.
    pub fn drain_deliveries_unacked(&self) -> u64 {
        self.drain_deliveries
    }

    /// `message:receive` frame `frame_id` went out at `now`; it is sent again
    /// after ACK_TIMEOUT unless acknowledged.
    pub fn sent_delivery(&mut self, frame_id: u64, delivery: Delivery, from_drain: bool, now: Instant) {
        let due = now + self.ack_timeout;
        self.next_resend = Some(self.next_resend.map_or(due, |at| at.min(due)));
        if from_drain && delivery.kind.is_message() {
            self.drain_deliveries += 1;
        }
        self.deliveries.insert(frame_id, PendingDelivery { delivery, from_drain, due, sends: 1 });
    }

    /// `message:status` frame `frame_id` went out at `now`; it is not sent
    /// again on this connection (the next drain does if it is never
    /// acknowledged), and is given up after ACK_TIMEOUT.
    pub fn sent_status(&mut self, frame_id: u64, status: SenderStatus, from_drain: bool, now: Instant) {
        let give_up_at = now + self.ack_timeout;
        self.statuses.insert(frame_id, PendingStatus { status, from_drain, give_up_at });
    }

    /// The client's ack of frame `frame_id`. `Ok(None)` for a frame already
    /// settled (or one that awaited no ack).
    pub fn ack(&mut self, frame_id: u64) -> Result<Option<Settled>, UnknownFrame> {
        if frame_id == 0 || frame_id > self.last_frame_id {
            return Err(UnknownFrame(frame_id));
        }
        Ok(self.settle(frame_id))
    }

    /// Frame `frame_id` no longer awaits an ack.
    pub fn settle(&mut self, frame_id: u64) -> Option<Settled> {
        if let Some(PendingDelivery { delivery, from_drain, .. }) = self.deliveries.remove(&frame_id) {
            if from_drain && delivery.kind.is_message() {
                self.drain_deliveries = self.drain_deliveries.saturating_sub(1);
            }
            return Some(Settled::Delivery { delivery, from_drain });
        }
        let PendingStatus { status, from_drain, .. } = self.statuses.remove(&frame_id)?;
        Some(Settled::Status { status, from_drain })
    }

    /// What `message:delivered {messageId}` acknowledges (it names messages,
    /// not frames): the frame carrying that message, if it awaits an ack, and
    /// the frames of entries about messages (edits, deletes, reactions) sent
    /// before it in its chat. A client that acknowledges with
    /// `message:delivered` (the guide's) has no id to name those by, and has
    /// been sent them: frames go out in seq order per chat.
    pub fn frames_delivered_with(&self, message_id: Uuid) -> Vec<u64> {
        let Some((frame_id, chat_id, seq)) = self.deliveries.iter().find_map(|(id, PendingDelivery { delivery, .. })| {
            (delivery.message_id == message_id && delivery.kind.is_message()).then_some((*id, delivery.chat_id, delivery.seq))
        }) else {
            return Vec::new();
        };
        let mut frames: Vec<u64> = self
            .deliveries
            .iter()
            .filter(|(_, PendingDelivery { delivery, .. })| {
                !delivery.kind.is_message() && delivery.chat_id == chat_id && delivery.seq < seq
            })
            .map(|(id, _)| *id)
            .collect();
        frames.push(frame_id);
        frames.sort_unstable();
        frames
    }

    /// Gives up the status frames unacknowledged since ACK_TIMEOUT before
    /// `now` (the device's told mark stays behind, so the next drain sends
    /// them again): returns how many of them came from the drain. Messages are
    /// never given up: they are resent until acknowledged.
    pub fn give_up_statuses(&mut self, now: Instant) -> u64 {
        let mut from_drain = 0;
        while let Some(entry) = self.statuses.first_entry()
            && entry.get().give_up_at <= now
        {
            from_drain += u64::from(entry.remove().from_drain);
        }
        from_drain
    }

    /// When the earliest resend, or the earliest give-up of a status, may be due.
    pub fn next_due(&self) -> Option<Instant> {
        let give_up = self.statuses.first_key_value().map(|(_, status)| status.give_up_at);
        [self.next_resend, give_up].into_iter().flatten().min()
    }

    /// The messages whose ack is overdue at `now`, in frame order, each
    /// rescheduled on the backoff of [`resend_delay`].
    pub fn resends_due(&mut self, now: Instant) -> Vec<Resend> {
        if self.next_resend.is_none_or(|at| at > now) {
            return Vec::new();
        }
        let mut due: Vec<u64> =
            self.deliveries.iter().filter(|(_, pending)| pending.due <= now).map(|(id, _)| *id).collect();
        due.sort_unstable();
        let mut resends = Vec::with_capacity(due.len());
        for frame_id in due {
            if let Some(PendingDelivery { due, sends, .. }) = self.deliveries.get_mut(&frame_id) {
                *sends += 1;
                *due = now + resend_delay(self.ack_timeout, self.ack_timeout_max, *sends);
                resends.push(Resend { frame_id, attempt: *sends });
            }
        }
        self.next_resend = self.deliveries.values().map(|pending| pending.due).min();
        resends
    }

    /// The message frame `frame_id` carries, while it awaits its ack.
    pub fn delivery(&self, frame_id: u64) -> Option<&Delivery> {
        self.deliveries.get(&frame_id).map(|pending| &pending.delivery)
    }
}

/// How long a delivery sent `sends` times waits for its ack before the next
/// resend: ACK_TIMEOUT, doubling with every resend, at most ACK_TIMEOUT_MAX.
pub fn resend_delay(ack_timeout: Duration, ack_timeout_max: Duration, sends: u32) -> Duration {
    let resends = sends.saturating_sub(1).min(64) as usize;
    ExponentialBuilder::default()
        .with_min_delay(ack_timeout)
        .with_factor(2.0)
        .with_max_delay(ack_timeout_max)
        .without_max_times()
        .build()
        .nth(resends)
        .unwrap_or(ack_timeout_max)
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;
    use courier_shared::protocol::DeliveryStatus;

    use super::*;

    const ACK_TIMEOUT: Duration = Duration::from_secs(10);
    const ACK_TIMEOUT_MAX: Duration = Duration::from_secs(120);

    fn window(max_unacked: usize) -> AckWindow {
        AckWindow::new(ACK_TIMEOUT, ACK_TIMEOUT_MAX, max_unacked)
    }

    fn delivery(seq: i64) -> Delivery {
        super::super::fixtures::delivery(seq, seq - 1, seq)
    }

    fn status(seq: i64) -> SenderStatus {
        let update = courier_shared::protocol::StatusUpdate {
            message_id: Uuid::from_u128(seq as u128),
            chat_id: Uuid::from_u128(7),
            status: DeliveryStatus::Delivered,
            user_id: "bob".into(),
            delivered_to: "bob".into(),
            timestamp: DateTime::UNIX_EPOCH,
        };
        SenderStatus { update, seq, anchor: seq - 1 }
    }

    /// Numbers a frame and records `message:receive` of `seq` in it.
    fn send(window: &mut AckWindow, seq: i64, from_drain: bool, now: Instant) -> u64 {
        let id = window.next_frame_id();
        window.sent_delivery(id, delivery(seq), from_drain, now);
        id
    }

    #[test]
    fn unacknowledged_deliveries_are_resent_with_doubling_waits_up_to_the_maximum() {
        let waits: Vec<u64> =
            (1..=7).map(|sends| resend_delay(ACK_TIMEOUT, ACK_TIMEOUT_MAX, sends).as_secs()).collect();
        assert_eq!(waits, vec![10, 20, 40, 80, 120, 120, 120]);
        assert_eq!(resend_delay(ACK_TIMEOUT, ACK_TIMEOUT_MAX, u32::MAX), Duration::from_secs(120));
    }

    #[test]
    fn frames_are_numbered_from_one_whether_or_not_they_await_an_ack() {
        let mut window = window(8);
        assert_eq!(window.next_frame_id(), 1);
        assert_eq!(send(&mut window, 1, false, Instant::now()), 2);
        assert_eq!(window.next_frame_id(), 3);
        assert_eq!(window.in_flight(), 1, "only the message awaits an ack");
    }

    #[test]
    fn an_ack_settles_exactly_its_frame_even_out_of_order() {
        let now = Instant::now();
        let mut window = window(8);
        let ids: Vec<u64> = (1..=3).map(|seq| send(&mut window, seq, false, now)).collect();

        let settled = window.ack(ids[2]).unwrap();
        assert_eq!(settled, Some(Settled::Delivery { delivery: delivery(3), from_drain: false }));
        let settled = window.ack(ids[0]).unwrap();
        assert_eq!(settled, Some(Settled::Delivery { delivery: delivery(1), from_drain: false }));

        assert_eq!(window.in_flight(), 1);
        assert_eq!(window.delivery(ids[1]), Some(&delivery(2)), "the unacknowledged one stays");
        assert_eq!(window.delivery(ids[0]), None);
    }

    #[test]
    fn a_second_ack_of_the_same_frame_settles_nothing() {
        let mut window = window(8);
        let id = send(&mut window, 1, false, Instant::now());
        assert!(window.ack(id).unwrap().is_some());
        assert_eq!(window.ack(id), Ok(None));
    }

    #[test]
    fn an_ack_of_a_frame_never_sent_is_refused() {
        let mut window = window(8);
        let id = send(&mut window, 1, false, Instant::now());
        assert_eq!(window.ack(0), Err(UnknownFrame(0)));
        assert_eq!(window.ack(id + 1), Err(UnknownFrame(id + 1)));
        assert_eq!(window.in_flight(), 1, "a refused ack settles nothing");
    }

    #[test]
    fn an_ack_of_a_frame_that_awaited_none_is_accepted_and_settles_nothing() {
        let mut window = window(8);
        let event = window.next_frame_id(); // e.g. `message:sent`
        assert_eq!(window.ack(event), Ok(None));
    }

    #[test]
    fn resends_come_due_on_the_backoff_schedule_and_stop_after_the_ack() {
        let start = Instant::now();
        let mut window = window(8);
        let id = send(&mut window, 1, false, start);
        assert_eq!(window.next_due(), Some(start + ACK_TIMEOUT));

        assert!(window.resends_due(start + ACK_TIMEOUT - Duration::from_millis(1)).is_empty());
        let first = start + ACK_TIMEOUT;
        assert_eq!(window.resends_due(first), vec![Resend { frame_id: id, attempt: 2 }]);
        // Then 20 s, 40 s, ... under the same frame id.
        assert_eq!(window.next_due(), Some(first + Duration::from_secs(20)));
        assert!(window.resends_due(first + Duration::from_secs(19)).is_empty());
        let second = first + Duration::from_secs(20);
        assert_eq!(window.resends_due(second), vec![Resend { frame_id: id, attempt: 3 }]);
        assert_eq!(window.next_due(), Some(second + Duration::from_secs(40)));

        assert!(window.ack(id).unwrap().is_some());
        assert!(window.resends_due(second + Duration::from_secs(3600)).is_empty());
        assert_eq!(window.next_due(), None, "nothing left to resend");
    }

    #[test]
    fn overdue_messages_are_resent_in_frame_order() {
        let start = Instant::now();
        let mut window = window(8);
        let ids: Vec<u64> = (1..=4).map(|seq| send(&mut window, seq, false, start)).collect();
        window.ack(ids[1]).unwrap();
        let due: Vec<u64> = window.resends_due(start + ACK_TIMEOUT).into_iter().map(|r| r.frame_id).collect();
        assert_eq!(due, vec![ids[0], ids[2], ids[3]]);
    }

    #[test]
    fn only_overdue_messages_are_resent() {
        let start = Instant::now();
        let mut window = window(8);
        let early = send(&mut window, 1, false, start);
        let later = send(&mut window, 2, false, start + Duration::from_secs(5));
        assert_eq!(window.resends_due(start + ACK_TIMEOUT), vec![Resend { frame_id: early, attempt: 2 }]);
        assert_eq!(window.next_due(), Some(start + Duration::from_secs(15)), "the later one is next");
        assert_eq!(
            window.resends_due(start + Duration::from_secs(15)),
            vec![Resend { frame_id: later, attempt: 2 }]
        );
    }

    #[test]
    fn status_updates_are_never_resent_on_the_connection() {
        let now = Instant::now();
        let mut window = window(8);
        let id = window.next_frame_id();
        window.sent_status(id, status(1), false, now);
        assert!(window.resends_due(now + ACK_TIMEOUT).is_empty());
        assert_eq!(window.in_flight(), 1);
        assert_eq!(window.ack(id), Ok(Some(Settled::Status { status: status(1), from_drain: false })));
    }

    #[test]
    fn room_runs_out_at_max_unacked_and_comes_back_with_acks() {
        let now = Instant::now();
        let mut window = window(4);
        let ids: Vec<u64> = (1..=4).map(|seq| send(&mut window, seq, false, now)).collect();
        assert_eq!(window.room(), 0);
        window.ack(ids[0]).unwrap();
        assert_eq!(window.room(), 1);
        // Statuses take no room from messages, however many await their ack.
        for seq in 10..20 {
            let id = window.next_frame_id();
            window.sent_status(id, status(seq), false, now);
        }
        assert_eq!(window.room(), 1);
        assert!(!window.has_room_to_resume(), "3 messages of 4 in flight");
    }

    #[test]
    fn a_window_of_zero_is_taken_as_one() {
        let mut window = window(0);
        assert_eq!(window.room(), 1);
        send(&mut window, 1, false, Instant::now());
        assert_eq!(window.room(), 0);
    }

    #[test]
    fn overflow_is_read_back_only_once_the_window_is_under_half_full() {
        let now = Instant::now();
        let mut window = window(4);
        let ids: Vec<u64> = (1..=3).map(|seq| send(&mut window, seq, false, now)).collect();
        assert!(!window.has_room_to_resume());
        window.ack(ids[0]).unwrap();
        assert!(!window.has_room_to_resume(), "2 of 4 in flight is not under half");
        window.ack(ids[1]).unwrap();
        assert!(window.has_room_to_resume());
    }

    #[test]
    fn message_delivered_also_acknowledges_the_entries_sent_before_it_in_its_chat() {
        use courier_shared::protocol::EntryKind;
        let mut window = window(8);
        let now = Instant::now();
        let entry = |seq: i64, kind: EntryKind| Delivery { kind, ..delivery(seq) };
        window.sent_delivery(1, entry(1, EntryKind::Message), true, now);
        window.sent_delivery(2, entry(2, EntryKind::Edit), true, now);
        window.sent_delivery(3, entry(3, EntryKind::React), true, now);
        window.sent_delivery(4, entry(4, EntryKind::Message), true, now);
        window.sent_delivery(5, entry(5, EntryKind::Delete), true, now);
        // Entries do not hold `sync:done` back: only the two messages count.
        assert_eq!(window.drain_deliveries_unacked(), 2);
        // Message 4 covers the edit and the reaction before it, not message 1 nor the delete after it.
        assert_eq!(window.frames_delivered_with(Uuid::from_u128(4)), [2, 3, 4]);
        // An entry's own id is not a message a client can report delivered.
        assert!(window.frames_delivered_with(Uuid::from_u128(5)).is_empty());
    }

    #[test]
    fn drain_deliveries_are_counted_until_acked_or_reported_delivered() {
        let now = Instant::now();
        let mut window = window(8);
        let first = send(&mut window, 1, true, now);
        let _live = send(&mut window, 2, false, now);
        let second = send(&mut window, 3, true, now);
        assert_eq!(window.drain_deliveries_unacked(), 2);

        assert!(window.ack(first).unwrap().is_some_and(|settled| settled.is_from_drain()));
        assert_eq!(window.drain_deliveries_unacked(), 1);
        // `message:delivered` names the message; its frame is settled the same way.
        assert_eq!(window.frames_delivered_with(delivery(3).message_id), [second]);
        assert!(window.settle(second).is_some());
        assert_eq!(window.drain_deliveries_unacked(), 0);
        assert!(window.frames_delivered_with(delivery(3).message_id).is_empty());
    }

    #[test]
    fn statuses_unanswered_for_the_ack_timeout_are_given_up_in_frame_order_but_messages_are_not() {
        let now = Instant::now();
        let mut window = window(8);
        let first = window.next_frame_id();
        window.sent_status(first, status(1), true, now);
        let second = window.next_frame_id();
        window.sent_status(second, status(2), false, now + Duration::from_secs(1));
        let message = send(&mut window, 3, false, now + Duration::from_secs(2));
        assert_eq!(window.next_due(), Some(now + ACK_TIMEOUT), "the first status's give-up");

        assert_eq!(window.give_up_statuses(now + ACK_TIMEOUT - Duration::from_millis(1)), 0);
        assert_eq!(window.in_flight(), 3);
        assert_eq!(window.give_up_statuses(now + ACK_TIMEOUT), 1, "the first, from the drain");
        assert_eq!(window.next_due(), Some(now + Duration::from_secs(1) + ACK_TIMEOUT), "then the second's");
        assert_eq!(window.ack(first), Ok(None), "a late ack of a status given up settles nothing");

        assert_eq!(window.give_up_statuses(now + Duration::from_secs(3600)), 0, "the second was live");
        assert_eq!(window.in_flight(), 1);
        assert!(window.delivery(message).is_some(), "a message is resent until acknowledged");
        assert_eq!(window.next_due(), Some(now + Duration::from_secs(2) + ACK_TIMEOUT), "its resend");
    }
}
