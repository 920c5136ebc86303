//! The ticks a connection has shown its (sender) client: statuses only move
//! forward on a connection. A message's `delivered` and `read` for one
//! recipient reach the session by different paths — the ack's batched write
//! and the read receipt's direct write are published separately, and two
//! workers route the status queue concurrently — so a `delivered` can arrive
//! after its `read`. courier-chaos (seed 11, 600 s) saw a sender shown
//! `read` and then `delivered`. This keeps the final ticks shown lately and
//! drops a `delivered` that would follow one of them.

use std::collections::{HashMap, HashSet, VecDeque};

use courier_shared::protocol::{DeliveryStatus, Receipt, StatusUpdate};
use uuid::Uuid;

/// How many final ticks are remembered. A late `delivered` trails its `read`
/// by milliseconds to seconds; the oldest entries go first. Nothing is kept
/// for a connection that shows no read receipts (idle connections stay small).
const REMEMBERED: usize = 1024;

/// `read`/`expired` ticks shown on this connection, by (message, recipient).
#[derive(Default)]
pub struct Ticks {
    shown_final: HashSet<(Uuid, String)>,
    order: VecDeque<(Uuid, String)>,
}

impl Ticks {
    /// Whether `update` may be shown: everything may, except a `delivered` for
    /// a message and recipient already shown as read (or expired).
    pub fn admits(&mut self, update: &StatusUpdate) -> bool {
        let key = (update.message_id, update.user_id.clone());
        match update.status {
            DeliveryStatus::Read | DeliveryStatus::Expired => {
                if self.shown_final.insert(key.clone()) {
                    self.order.push_back(key);
                    if self.order.len() > REMEMBERED
                        && let Some(oldest) = self.order.pop_front()
                    {
                        self.shown_final.remove(&oldest);
                    }
                }
                true
            }
            DeliveryStatus::Delivered | DeliveryStatus::Sent => !self.shown_final.contains(&key),
        }
    }
}

/// The receipts a connection has shown, per (chat, member): watermarks only
/// move forward on a connection. Two workers route the status queue
/// concurrently, and a worker folds only its own batch, so an older receipt
/// can arrive after a newer one: courier-chaos (seeds 6 and 33, with devices)
/// saw `deliveredSeq` 35 then 34. A receipt is shown with each watermark at
/// the highest this connection has shown, and not at all if neither moves.
#[derive(Default)]
pub struct ReceiptMarks {
    shown: HashMap<(Uuid, String), (i64, i64)>,
}

impl ReceiptMarks {
    /// The receipt to show for `receipt`, or `None` if it moves nothing forward.
    pub fn admit(&mut self, mut receipt: Receipt) -> Option<Receipt> {
        let key = (receipt.chat_id, receipt.user_id.clone());
        let shown = self.shown.entry(key).or_insert((i64::MIN, i64::MIN));
        if receipt.delivered_seq <= shown.0 && receipt.read_seq <= shown.1 {
            return None;
        }
        receipt.delivered_seq = receipt.delivered_seq.max(shown.0);
        receipt.read_seq = receipt.read_seq.max(shown.1);
        *shown = (receipt.delivered_seq, receipt.read_seq);
        Some(receipt)
    }
}

#[cfg(test)]
mod receipt_tests {
    use super::*;

    fn receipt(user: &str, delivered_seq: i64, read_seq: i64) -> Receipt {
        Receipt { chat_id: Uuid::from_u128(9), user_id: user.into(), delivered_seq, read_seq }
    }

    #[test]
    fn receipts_only_move_forward() {
        let mut marks = ReceiptMarks::default();
        assert_eq!(marks.admit(receipt("bob", 32, 0)), Some(receipt("bob", 32, 0)));
        assert_eq!(marks.admit(receipt("bob", 35, 0)), Some(receipt("bob", 35, 0)));
        assert_eq!(marks.admit(receipt("bob", 34, 0)), None, "an older receipt arriving late is not shown");
        assert_eq!(marks.admit(receipt("bob", 35, 0)), None, "nor a repeat");
    }

    #[test]
    fn a_receipt_that_moves_one_watermark_keeps_the_other_at_its_highest() {
        let mut marks = ReceiptMarks::default();
        marks.admit(receipt("bob", 10, 2));
        assert_eq!(marks.admit(receipt("bob", 8, 5)), Some(receipt("bob", 10, 5)));
    }

    #[test]
    fn members_and_chats_are_apart() {
        let mut marks = ReceiptMarks::default();
        marks.admit(receipt("bob", 10, 10));
        assert_eq!(marks.admit(receipt("carol", 1, 0)), Some(receipt("carol", 1, 0)));
        let other_chat = Receipt { chat_id: Uuid::from_u128(10), ..receipt("bob", 1, 0) };
        assert_eq!(marks.admit(other_chat.clone()), Some(other_chat));
    }
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;

    use super::*;

    fn tick(message: u128, recipient: &str, status: DeliveryStatus) -> StatusUpdate {
        StatusUpdate {
            message_id: Uuid::from_u128(message),
            chat_id: Uuid::from_u128(99),
            status,
            user_id: recipient.into(),
            delivered_to: recipient.into(),
            timestamp: DateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn delivered_then_read_are_both_shown() {
        let mut ticks = Ticks::default();
        assert!(ticks.admits(&tick(1, "bob", DeliveryStatus::Delivered)));
        assert!(ticks.admits(&tick(1, "bob", DeliveryStatus::Read)));
    }

    #[test]
    fn a_delivered_arriving_after_its_read_is_not_shown() {
        let mut ticks = Ticks::default();
        assert!(ticks.admits(&tick(1, "bob", DeliveryStatus::Read)));
        assert!(!ticks.admits(&tick(1, "bob", DeliveryStatus::Delivered)));
        assert!(ticks.admits(&tick(1, "bob", DeliveryStatus::Read)), "the same final tick again is harmless");
    }

    #[test]
    fn other_recipients_and_messages_are_not_affected() {
        let mut ticks = Ticks::default();
        assert!(ticks.admits(&tick(1, "bob", DeliveryStatus::Read)));
        assert!(ticks.admits(&tick(1, "carol", DeliveryStatus::Delivered)), "another recipient of a group message");
        assert!(ticks.admits(&tick(2, "bob", DeliveryStatus::Delivered)), "another message");
    }

    #[test]
    fn nothing_follows_an_expired_tick() {
        let mut ticks = Ticks::default();
        assert!(ticks.admits(&tick(1, "bob", DeliveryStatus::Expired)));
        assert!(!ticks.admits(&tick(1, "bob", DeliveryStatus::Delivered)));
    }

    #[test]
    fn memory_is_bounded_and_the_oldest_final_ticks_are_forgotten_first() {
        let mut ticks = Ticks::default();
        for message in 0..(REMEMBERED as u128 + 10) {
            ticks.admits(&tick(message, "bob", DeliveryStatus::Read));
        }
        assert_eq!(ticks.shown_final.len(), REMEMBERED);
        assert!(ticks.admits(&tick(0, "bob", DeliveryStatus::Delivered)), "forgotten");
        assert!(!ticks.admits(&tick(REMEMBERED as u128 + 9, "bob", DeliveryStatus::Delivered)), "still remembered");
    }
}
