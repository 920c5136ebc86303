//! The ticks a connection has shown its (sender) client: statuses only move
//! forward on a connection. A message's `delivered` and `read` for one
//! recipient reach the session by different paths — the ack's batched write
//! and the read receipt's direct write are published separately, and two
//! workers route the status queue concurrently — so a `delivered` can arrive
//! after its `read`. courier-chaos (seed 11, 600 s) saw a sender shown
//! `read` and then `delivered`. This keeps the final ticks shown lately and
//! drops a `delivered` that would follow one of them.

use std::collections::{HashSet, VecDeque};

use courier_shared::protocol::{DeliveryStatus, StatusUpdate};
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
