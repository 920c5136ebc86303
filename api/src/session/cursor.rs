//! The device's cursor in each chat, as far as this connection can vouch for
//! it: the highest seq up to which the device has acknowledged every message
//! this connection pushed it, without a hole.
//!
//! Acks arrive out of order (a client acks as it renders; a resend is acked
//! late), so the cursor moves over contiguous runs only, as Lemmy's federation
//! sender moves its `last_successful_id`. A run is anchored at the `prev_seq`
//! of its first message: the database moves the device's cursor to the run's
//! end only if it already stands at the anchor or beyond, so a run this
//! connection cannot connect to the cursor (messages another connection had)
//! never makes the cursor jump over what the device has not seen.
//!
//! Pure bookkeeping like the other parts: unit-tested below without PostgreSQL.

use std::collections::{HashMap, VecDeque};

use uuid::Uuid;

/// "The device has every message of `chat_id` in (`anchor`, `acked_seq`]."
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CursorMove {
    pub chat_id: Uuid,
    pub anchor: i64,
    pub acked_seq: i64,
}

/// A pushed message, until the run reaches it.
struct Pushed {
    prev_seq: i64,
    seq: i64,
    acked: bool,
}

#[derive(Default)]
struct Chain {
    /// In push order, which the ordering gate makes seq order.
    pending: VecDeque<Pushed>,
    /// The run the last acks extended: (anchor, end).
    run: Option<(i64, i64)>,
}

#[derive(Default)]
pub struct Cursors {
    chats: HashMap<Uuid, Chain>,
}

impl Cursors {
    /// Message `seq` of `chat_id`, whose predecessor for this recipient is
    /// `prev_seq`, was pushed. Pushes of a chat come in seq order.
    pub fn pushed(&mut self, chat_id: Uuid, prev_seq: i64, seq: i64) {
        let chain = self.chats.entry(chat_id).or_default();
        if chain.pending.back().is_some_and(|last| last.seq >= seq) {
            return; // already tracked (a resend is the same message)
        }
        chain.pending.push_back(Pushed { prev_seq, seq, acked: false });
    }

    /// The client has message `seq` of `chat_id`. Returns where the cursor may
    /// move: one move per run the ack completed (usually none or one).
    pub fn acked(&mut self, chat_id: Uuid, seq: i64) -> Vec<CursorMove> {
        let Some(chain) = self.chats.get_mut(&chat_id) else { return Vec::new() };
        let Ok(index) = chain.pending.binary_search_by_key(&seq, |pushed| pushed.seq) else { return Vec::new() };
        chain.pending[index].acked = true;
        let mut moves = Vec::new();
        let mut passed = false;
        while chain.pending.front().is_some_and(|first| first.acked) {
            let Some(first) = chain.pending.pop_front() else { break };
            passed = true;
            let run = match chain.run {
                Some((anchor, end)) if first.prev_seq == end => (anchor, first.seq),
                // Not next to the run: messages between went elsewhere. A new run.
                Some(_) | None => {
                    if let Some((anchor, end)) = chain.run {
                        push_move(&mut moves, chat_id, anchor, end);
                    }
                    (first.prev_seq, first.seq)
                }
            };
            chain.run = Some(run);
        }
        if let Some((anchor, end)) = chain.run.filter(|_| passed) {
            push_move(&mut moves, chat_id, anchor, end);
        }
        moves
    }
}

/// Adds a move unless it repeats the last one.
fn push_move(moves: &mut Vec<CursorMove>, chat_id: Uuid, anchor: i64, acked_seq: i64) {
    let next = CursorMove { chat_id, anchor, acked_seq };
    if moves.last() != Some(&next) {
        moves.push(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat() -> Uuid {
        Uuid::from_u128(7)
    }

    fn cursors_with(pushes: &[(i64, i64)]) -> Cursors {
        let mut cursors = Cursors::default();
        for &(prev_seq, seq) in pushes {
            cursors.pushed(chat(), prev_seq, seq);
        }
        cursors
    }

    fn mv(anchor: i64, acked_seq: i64) -> CursorMove {
        CursorMove { chat_id: chat(), anchor, acked_seq }
    }

    #[test]
    fn in_order_acks_move_the_cursor_one_by_one() {
        let mut cursors = cursors_with(&[(0, 1), (1, 2), (2, 3)]);
        assert_eq!(cursors.acked(chat(), 1), vec![mv(0, 1)]);
        assert_eq!(cursors.acked(chat(), 2), vec![mv(0, 2)]);
        assert_eq!(cursors.acked(chat(), 3), vec![mv(0, 3)]);
    }

    #[test]
    fn out_of_order_acks_move_it_only_over_contiguous_runs() {
        let mut cursors = cursors_with(&[(4, 5), (5, 6), (6, 7), (7, 8)]);
        assert_eq!(cursors.acked(chat(), 7), vec![], "5 and 6 are not acked: no move");
        assert_eq!(cursors.acked(chat(), 6), vec![]);
        assert_eq!(cursors.acked(chat(), 5), vec![mv(4, 7)], "5 closes the hole: the run reaches 7");
        assert_eq!(cursors.acked(chat(), 8), vec![mv(4, 8)]);
    }

    #[test]
    fn a_message_that_is_never_acked_holds_the_cursor() {
        let mut cursors = cursors_with(&[(0, 1), (1, 2), (2, 3)]);
        assert_eq!(cursors.acked(chat(), 1), vec![mv(0, 1)]);
        assert_eq!(cursors.acked(chat(), 3), vec![]);
        assert_eq!(cursors.acked(chat(), 3), vec![], "a second ack of 3 changes nothing");
    }

    #[test]
    fn the_recipients_own_messages_between_are_no_hole() {
        // prev_seq skips what the recipient sent (4): 3 → 5 is contiguous for them.
        let mut cursors = cursors_with(&[(2, 3), (3, 5)]);
        assert_eq!(cursors.acked(chat(), 5), vec![]);
        assert_eq!(cursors.acked(chat(), 3), vec![mv(2, 5)]);
    }

    #[test]
    fn messages_that_went_elsewhere_start_a_new_run() {
        // 4 and 5 reached another connection: 6's prev_seq is 5, which this one never pushed.
        let mut cursors = cursors_with(&[(2, 3), (5, 6), (6, 7)]);
        assert_eq!(cursors.acked(chat(), 6), vec![]);
        assert_eq!(cursors.acked(chat(), 3), vec![mv(2, 3), mv(5, 6)], "two runs, the database joins them if it can");
        assert_eq!(cursors.acked(chat(), 7), vec![mv(5, 7)]);
    }

    #[test]
    fn acks_of_unknown_or_repeated_messages_are_ignored() {
        let mut cursors = cursors_with(&[(0, 1)]);
        assert_eq!(cursors.acked(chat(), 9), vec![]);
        assert_eq!(cursors.acked(Uuid::from_u128(8), 1), vec![]);
        cursors.pushed(chat(), 0, 1); // a resend of the same message
        assert_eq!(cursors.acked(chat(), 1), vec![mv(0, 1)]);
        assert_eq!(cursors.acked(chat(), 1), vec![], "settled already");
    }

    #[test]
    fn chats_are_independent() {
        let other = Uuid::from_u128(8);
        let mut cursors = cursors_with(&[(0, 1), (1, 2)]);
        cursors.pushed(other, 10, 11);
        assert_eq!(cursors.acked(other, 11), vec![CursorMove { chat_id: other, anchor: 10, acked_seq: 11 }]);
        assert_eq!(cursors.acked(chat(), 2), vec![]);
        assert_eq!(cursors.acked(chat(), 1), vec![mv(0, 2)]);
    }
}
