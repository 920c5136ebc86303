//! The per-chat ordering gate: what may be pushed now so that, per chat,
//! `message:receive` arrives in `seq` order and never twice on a connection.
//!
//! Every delivery carries `prev_seq`, the seq of this recipient's previous
//! message in the chat. The gate remembers per chat how far it has let
//! through (`through`): a delivery with `prev_seq <= through` is next in
//! line; one with `seq <= through` is a duplicate (a retried or raced job);
//! anything else arrived early and waits briefly for its predecessor, after
//! which the gap is read from PostgreSQL, the source of truth. What does not
//! fit in the ack window is not kept in memory: the gate notes how far the
//! chat goes, and the gap is read when room frees up.
//!
//! The gate does no I/O. It answers with [`Decision`]s ("push these", "read
//! the gap after seq N"); the session carries them out and hands a gap read's
//! rows back through [`OrderGate::gap_read`]. The caller passes the ack
//! window's room and the time, so every rule is unit-tested below with a
//! fake log in place of PostgreSQL.

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use courier_shared::job::{ChatBaseline, Delivery};
use tokio::time::Instant;
use uuid::Uuid;

/// After a failed gap read, try again this much later.
const GAP_RETRY: Duration = Duration::from_secs(1);

/// What the session must do for a chat.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// Push these deliveries now, in this order. Empty when the delivery was
    /// a duplicate, is held for its predecessor, or was left for later.
    Push(Vec<Delivery>),
    /// Read the gap from PostgreSQL now, and hand the rows to [`OrderGate::gap_read`].
    ReadGap(GapRead),
}

/// A read of one chat's undelivered messages with `after < seq <= up_to`, in
/// seq order, at most `limit` (the room left in the ack window).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GapRead {
    pub chat_id: Uuid,
    pub after: i64,
    pub up_to: i64,
    pub limit: usize,
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

pub struct OrderGate {
    /// How long an early delivery waits for its predecessor before the gap is read.
    reorder_wait: Duration,
    chats: HashMap<Uuid, ChatCursor>,
    /// Chats with deliveries that were not kept in memory (too many held or in
    /// flight): read from PostgreSQL up to this seq when there is room.
    overflow: HashMap<Uuid, i64>,
}

impl OrderGate {
    pub fn new(reorder_wait: Duration) -> Self {
        Self { reorder_wait, chats: HashMap::new(), overflow: HashMap::new() }
    }

    /// A live delivery (once the connect-time drain is over). `room`: how
    /// many more frames the ack window takes.
    pub fn offer(&mut self, delivery: Delivery, room: usize, now: Instant) -> Decision {
        let chat_id = delivery.chat_id;
        let cursor = self.chats.entry(chat_id).or_default();
        match cursor.through {
            Some(through) if delivery.seq <= through => Decision::Push(Vec::new()), // already pushed here or delivered before
            Some(through) if delivery.prev_seq <= through => {
                if room == 0 {
                    note_overflow(&mut self.overflow, chat_id, delivery.seq);
                    return Decision::Push(Vec::new());
                }
                cursor.through = Some(delivery.seq);
                let mut push = vec![delivery];
                self.release_early(chat_id, room - 1, &mut push);
                Decision::Push(push)
            }
            known => {
                // Early, or the first delivery of a chat this connection knows
                // nothing about: wait for the predecessor, or read the gap now.
                let wait = if known.is_some() { self.reorder_wait } else { Duration::ZERO };
                cursor.gap_deadline.get_or_insert_with(|| now + wait);
                cursor.early.insert(delivery.seq, delivery);
                if wait.is_zero() {
                    return match self.fill_gap(chat_id, room) {
                        Some(read) => Decision::ReadGap(read),
                        None => Decision::Push(Vec::new()),
                    };
                }
                Decision::Push(Vec::new())
            }
        }
    }

    /// Drain deliveries, in the drain's order: the ones not yet pushed, and how
    /// many were skipped as already pushed (they count as settled for the drain).
    pub fn drained(&mut self, deliveries: Vec<Delivery>) -> (Vec<Delivery>, u64) {
        let mut skipped = 0;
        let mut push = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            let cursor = self.chats.entry(delivery.chat_id).or_default();
            if cursor.through.is_some_and(|through| delivery.seq <= through) {
                skipped += 1;
                continue;
            }
            cursor.through = Some(delivery.seq);
            push.push(delivery);
        }
        (push, skipped)
    }

    /// The drain ended: it covered each chat up to its baseline.
    pub fn cover(&mut self, baselines: &[ChatBaseline]) {
        for baseline in baselines {
            let cursor = self.chats.entry(baseline.chat_id).or_default();
            cursor.through = Some(cursor.through.map_or(baseline.seq, |t| t.max(baseline.seq)));
        }
    }

    /// Notes that a chat's deliveries up to `seq` were not kept in memory.
    pub fn note_overflow(&mut self, chat_id: Uuid, seq: i64) {
        note_overflow(&mut self.overflow, chat_id, seq);
    }

    pub fn has_overflow(&self) -> bool {
        !self.overflow.is_empty()
    }

    /// Chats with deliveries left in PostgreSQL for want of room.
    pub fn overflowed_chats(&self) -> Vec<Uuid> {
        self.overflow.keys().copied().collect()
    }

    /// Chats whose early deliveries have waited long enough (or whose gap read failed and is due again).
    pub fn gaps_due(&self, now: Instant) -> Vec<Uuid> {
        self.chats.iter().filter(|(_, c)| c.gap_deadline.is_some_and(|at| at <= now)).map(|(chat_id, _)| *chat_id).collect()
    }

    /// The earliest gap deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.chats.values().filter_map(|c| c.gap_deadline).min()
    }

    /// What to read to close a chat's gap, up to the highest early delivery
    /// (or overflow mark). `None` when there is nothing to read, or no room:
    /// then the chat is noted, and read again when acks free up room.
    pub fn fill_gap(&mut self, chat_id: Uuid, room: usize) -> Option<GapRead> {
        let cursor = self.chats.entry(chat_id).or_default();
        let early_max = cursor.early.last_key_value().map(|(seq, _)| *seq);
        let overflow_max = self.overflow.get(&chat_id).copied();
        let Some(up_to) = early_max.max(overflow_max) else {
            cursor.gap_deadline = None;
            return None;
        };
        let after = cursor.through.unwrap_or(0);
        if room == 0 {
            // Resumes when acks free up room.
            cursor.gap_deadline = None;
            self.overflow.insert(chat_id, up_to);
            return None;
        }
        Some(GapRead { chat_id, after, up_to, limit: room })
    }

    /// The rows a [`GapRead`] returned (undelivered messages, in seq order):
    /// what to push, in order — those rows, then early deliveries they made next in line.
    pub fn gap_read(&mut self, read: GapRead, rows: Vec<Delivery>) -> Vec<Delivery> {
        let GapRead { chat_id, after, up_to, limit: room } = read;
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
        let room = room.saturating_sub(rows.len());
        let mut push = rows;
        self.release_early(chat_id, room, &mut push);
        push
    }

    /// A gap read failed: try again in a moment.
    pub fn gap_unreadable(&mut self, chat_id: Uuid, now: Instant) {
        self.chats.entry(chat_id).or_default().gap_deadline = Some(now + GAP_RETRY);
    }

    /// Appends early deliveries of a chat that have become next in line, while `room` lasts.
    fn release_early(&mut self, chat_id: Uuid, mut room: usize, push: &mut Vec<Delivery>) {
        loop {
            let Some(cursor) = self.chats.get_mut(&chat_id) else { return };
            let Some(through) = cursor.through else { return };
            let Some(entry) = cursor.early.first_entry() else {
                cursor.gap_deadline = None;
                return;
            };
            if entry.get().seq <= through {
                entry.remove();
                continue;
            }
            if entry.get().prev_seq > through {
                return;
            }
            if room == 0 {
                let seq = entry.get().seq;
                note_overflow(&mut self.overflow, chat_id, seq);
                return;
            }
            let delivery = entry.remove();
            cursor.through = Some(delivery.seq);
            room -= 1;
            push.push(delivery);
        }
    }
}

fn note_overflow(overflow: &mut HashMap<Uuid, i64>, chat_id: Uuid, seq: i64) {
    let mark = overflow.entry(chat_id).or_insert(seq);
    *mark = (*mark).max(seq);
}

#[cfg(test)]
mod tests {

    use super::*;

    const WAIT: Duration = Duration::from_millis(500);
    const ROOM: usize = 1024;

    use super::super::fixtures::chat;

    /// Message `seq` of `chat()`, whose predecessor for this recipient is `prev_seq`.
    fn message(seq: i64, prev_seq: i64) -> Delivery {
        super::super::fixtures::delivery(seq, prev_seq, seq)
    }

    fn seqs(deliveries: &[Delivery]) -> Vec<i64> {
        deliveries.iter().map(|d| d.seq).collect()
    }

    fn pushed(decision: Decision) -> Vec<i64> {
        match decision {
            Decision::Push(deliveries) => seqs(&deliveries),
            Decision::ReadGap(read) => panic!("expected pushes, got a gap read {read:?}"),
        }
    }

    /// Stands in for PostgreSQL: one recipient's undelivered messages of `chat()`.
    struct FakeLog {
        undelivered: Vec<Delivery>,
    }

    impl FakeLog {
        /// Messages `1..=last`, one after another.
        fn through(last: i64) -> Self {
            Self { undelivered: (1..=last).map(|seq| message(seq, seq - 1)).collect() }
        }

        /// What `status::undelivered_in_chat` returns for `read`.
        fn read(&self, read: GapRead) -> Vec<Delivery> {
            assert_eq!(read.chat_id, chat());
            self.undelivered.iter().filter(|d| d.seq > read.after && d.seq <= read.up_to).take(read.limit).cloned().collect()
        }
    }

    /// A gate that has pushed `chat()` through `seq`.
    fn gate_through(seq: i64) -> OrderGate {
        let mut gate = OrderGate::new(WAIT);
        gate.cover(&[ChatBaseline { chat_id: chat(), seq }]);
        gate
    }

    #[test]
    fn in_order_arrivals_pass_straight_through() {
        let now = Instant::now();
        let mut gate = gate_through(0);
        for seq in 1..=3 {
            assert_eq!(pushed(gate.offer(message(seq, seq - 1), ROOM, now)), vec![seq]);
        }
        assert_eq!(gate.next_deadline(), None, "nothing waits");
    }

    #[test]
    fn a_delivery_whose_predecessor_belongs_to_someone_else_is_next_in_line() {
        // Seq 4 and 5 went to other members: this recipient's 6 follows its 3.
        let mut gate = gate_through(3);
        assert_eq!(pushed(gate.offer(message(6, 3), ROOM, Instant::now())), vec![6]);
    }

    #[test]
    fn duplicates_of_something_already_pushed_are_dropped() {
        let now = Instant::now();
        let mut gate = gate_through(0);
        assert_eq!(pushed(gate.offer(message(1, 0), ROOM, now)), vec![1]);
        assert_eq!(pushed(gate.offer(message(2, 1), ROOM, now)), vec![2]);
        assert!(pushed(gate.offer(message(1, 0), ROOM, now)).is_empty(), "a retried job");
        assert!(pushed(gate.offer(message(2, 1), ROOM, now)).is_empty(), "a raced job");
        assert_eq!(gate.next_deadline(), None);
    }

    #[test]
    fn an_arrival_ahead_of_its_predecessor_is_held_and_released_when_the_gap_fills() {
        let now = Instant::now();
        let mut gate = gate_through(1);
        assert!(pushed(gate.offer(message(3, 2), ROOM, now)).is_empty(), "held for 2");
        assert!(pushed(gate.offer(message(4, 3), ROOM, now)).is_empty(), "held behind 3");
        assert_eq!(gate.next_deadline(), Some(now + WAIT));

        assert_eq!(pushed(gate.offer(message(2, 1), ROOM, now)), vec![2, 3, 4]);
        assert_eq!(gate.next_deadline(), None, "no gap left to read");
    }

    #[test]
    fn a_gap_not_filled_within_the_reorder_wait_asks_for_a_read_after_the_last_pushed_seq() {
        let now = Instant::now();
        let mut gate = gate_through(1);
        assert!(pushed(gate.offer(message(4, 3), ROOM, now)).is_empty());
        assert!(gate.gaps_due(now + WAIT - Duration::from_millis(1)).is_empty());
        assert_eq!(gate.gaps_due(now + WAIT), vec![chat()]);

        let read = gate.fill_gap(chat(), ROOM).unwrap();
        assert_eq!(read, GapRead { chat_id: chat(), after: 1, up_to: 4, limit: ROOM });
        let log = FakeLog::through(4);
        assert_eq!(seqs(&gate.gap_read(read, log.read(read))), vec![2, 3, 4]);
        assert_eq!(gate.next_deadline(), None);
        assert!(pushed(gate.offer(message(4, 3), ROOM, now)).is_empty(), "4 came from the log; the job is a duplicate");
        assert_eq!(pushed(gate.offer(message(5, 4), ROOM, now)), vec![5]);
    }

    #[test]
    fn the_first_delivery_of_an_unknown_chat_reads_its_gap_at_once() {
        // Nothing says where this connection stands in the chat: PostgreSQL does.
        let mut gate = OrderGate::new(WAIT);
        let decision = gate.offer(message(3, 2), ROOM, Instant::now());
        let Decision::ReadGap(read) = decision else { panic!("expected a gap read, got {decision:?}") };
        assert_eq!(read, GapRead { chat_id: chat(), after: 0, up_to: 3, limit: ROOM });
        // Seq 1 was delivered on an earlier connection: the log no longer has it.
        let log = FakeLog { undelivered: vec![message(2, 1), message(3, 2)] };
        assert_eq!(seqs(&gate.gap_read(read, log.read(read))), vec![2, 3]);
        assert_eq!(pushed(gate.offer(message(4, 3), ROOM, Instant::now())), vec![4]);
    }

    #[test]
    fn an_early_delivery_already_delivered_elsewhere_is_not_pushed_after_a_gap_read() {
        // The log has nothing between 1 and 3: 2 and 3 were acknowledged on
        // another connection meanwhile.
        let now = Instant::now();
        let mut gate = gate_through(1);
        gate.offer(message(3, 2), ROOM, now);
        let read = gate.fill_gap(chat(), ROOM).unwrap();
        assert!(gate.gap_read(read, Vec::new()).is_empty());
        assert!(pushed(gate.offer(message(3, 2), ROOM, now)).is_empty(), "covered by the read");
    }

    #[test]
    fn a_failed_gap_read_is_tried_again_a_second_later() {
        let now = Instant::now();
        let mut gate = gate_through(1);
        gate.offer(message(3, 2), ROOM, now);
        let read = gate.fill_gap(chat(), ROOM).unwrap();
        gate.gap_unreadable(read.chat_id, now + WAIT);
        assert_eq!(gate.next_deadline(), Some(now + WAIT + GAP_RETRY));
        assert_eq!(gate.gaps_due(now + WAIT + GAP_RETRY), vec![chat()]);
        assert_eq!(gate.fill_gap(chat(), ROOM), Some(read), "the same read again");
    }

    #[test]
    fn a_late_predecessor_keeps_the_first_deadline() {
        let now = Instant::now();
        let mut gate = gate_through(1);
        gate.offer(message(4, 3), ROOM, now);
        gate.offer(message(3, 2), ROOM, now + Duration::from_millis(300));
        assert_eq!(gate.next_deadline(), Some(now + WAIT));
    }

    #[test]
    fn a_next_in_line_delivery_without_room_is_left_for_a_later_read() {
        let now = Instant::now();
        let mut gate = gate_through(1);
        assert!(pushed(gate.offer(message(2, 1), 0, now)).is_empty());
        assert!(gate.has_overflow());
        assert_eq!(gate.overflowed_chats(), vec![chat()]);

        // Room again: the chat is read from where it stood.
        let read = gate.fill_gap(chat(), 8).unwrap();
        assert_eq!(read, GapRead { chat_id: chat(), after: 1, up_to: 2, limit: 8 });
        assert_eq!(seqs(&gate.gap_read(read, FakeLog::through(2).read(read))), vec![2]);
        assert!(!gate.has_overflow());
    }

    #[test]
    fn released_early_deliveries_stop_where_the_room_ends_and_the_rest_is_read_later() {
        let now = Instant::now();
        let mut gate = gate_through(1);
        for seq in 3..=6 {
            gate.offer(message(seq, seq - 1), ROOM, now);
        }
        // Room for 2 + its first two successors.
        assert_eq!(pushed(gate.offer(message(2, 1), 3, now)), vec![2, 3, 4]);
        assert_eq!(gate.overflowed_chats(), vec![chat()]);

        let read = gate.fill_gap(chat(), ROOM).unwrap();
        assert_eq!(read, GapRead { chat_id: chat(), after: 4, up_to: 6, limit: ROOM });
        assert_eq!(seqs(&gate.gap_read(read, FakeLog::through(6).read(read))), vec![5, 6]);
        assert!(!gate.has_overflow());
        assert_eq!(gate.next_deadline(), None);
    }

    #[test]
    fn a_gap_read_without_room_is_put_off_until_acks_free_some() {
        let now = Instant::now();
        let mut gate = gate_through(1);
        gate.offer(message(3, 2), ROOM, now);
        assert_eq!(gate.fill_gap(chat(), 0), None);
        assert_eq!(gate.next_deadline(), None, "no timer: acks resume it");
        assert_eq!(gate.overflowed_chats(), vec![chat()]);
    }

    #[test]
    fn a_gap_larger_than_the_room_is_read_in_parts() {
        let mut gate = gate_through(0);
        gate.note_overflow(chat(), 5);
        let log = FakeLog::through(5);

        let read = gate.fill_gap(chat(), 2).unwrap();
        assert_eq!(seqs(&gate.gap_read(read, log.read(read))), vec![1, 2]);
        assert!(gate.has_overflow(), "3..=5 still to read");

        let read = gate.fill_gap(chat(), 2).unwrap();
        assert_eq!(read, GapRead { chat_id: chat(), after: 2, up_to: 5, limit: 2 });
        assert_eq!(seqs(&gate.gap_read(read, log.read(read))), vec![3, 4]);

        let read = gate.fill_gap(chat(), 2).unwrap();
        assert_eq!(seqs(&gate.gap_read(read, log.read(read))), vec![5]);
        assert!(!gate.has_overflow());
    }

    #[test]
    fn overflow_marks_keep_the_highest_seq() {
        let mut gate = gate_through(0);
        gate.note_overflow(chat(), 5);
        gate.note_overflow(chat(), 3);
        assert_eq!(gate.fill_gap(chat(), 10).map(|read| read.up_to), Some(5));
    }

    #[test]
    fn nothing_to_read_clears_the_deadline() {
        let mut gate = gate_through(3);
        assert_eq!(gate.fill_gap(chat(), ROOM), None);
        assert_eq!(gate.next_deadline(), None);
    }

    #[test]
    fn drained_deliveries_skip_what_was_already_pushed() {
        let now = Instant::now();
        let mut gate = gate_through(0);
        gate.offer(message(1, 0), ROOM, now);
        let (push, skipped) = gate.drained(vec![message(1, 0), message(2, 1), message(3, 2)]);
        assert_eq!((seqs(&push), skipped), (vec![2, 3], 1));
        assert!(pushed(gate.offer(message(3, 2), ROOM, now)).is_empty(), "the drain pushed it");
    }

    #[test]
    fn a_baseline_only_moves_a_chat_forward() {
        let now = Instant::now();
        let mut gate = gate_through(5);
        gate.cover(&[ChatBaseline { chat_id: chat(), seq: 2 }]);
        assert!(pushed(gate.offer(message(5, 4), ROOM, now)).is_empty());
        assert_eq!(pushed(gate.offer(message(6, 5), ROOM, now)), vec![6]);
    }

    #[test]
    fn chats_are_gated_independently() {
        let now = Instant::now();
        let mut gate = gate_through(1);
        let other = Uuid::from_u128(8);
        gate.cover(&[ChatBaseline { chat_id: other, seq: 0 }]);
        gate.offer(message(3, 2), ROOM, now);
        let mut elsewhere = message(1, 0);
        elsewhere.chat_id = other;
        assert_eq!(pushed(gate.offer(elsewhere, ROOM, now)), vec![1], "a gap in one chat holds up no other");
    }
}
