//! A device's view of the messages it has seen: what a chat app shows for
//! each — its content, whether it was deleted for everyone, and its reactions
//! — built only from what the device received (`message:receive`, with the
//! latest content or as a tombstone; `message:edited`; `message:deleted`;
//! `message:reaction`) and what it did itself (its sends, and its edits,
//! deletes and reactions: the server does not echo those back to the device
//! that made them).
//!
//! Every change carries the seq of its entry in the chat's log, and the view
//! keeps, per part of a message, the seq it last took: a change applies only
//! if it is newer. So the view does not depend on the order changes reach the
//! device in (an edit of another device may arrive after this device's own,
//! later edit was answered), and a redelivered entry changes nothing. A
//! delete is final. The clients keep one live (to choose what to edit or
//! react to); the checker folds each device's recorded history into one to
//! compare with the server's at the end.

use std::collections::{BTreeMap, BTreeSet};

use crate::history::Change;

/// One message as a device shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageView {
    pub chat_id: String,
    /// The message's own seq in its chat.
    pub seq: i64,
    pub sender_id: String,
    pub content: String,
    /// The seq of the entry `content` comes from: the message's own until an
    /// edit is applied.
    content_seq: i64,
    pub deleted: bool,
    /// (user, emoji) → (present, seq of the entry that said so; 0 when a
    /// reply said so without an entry).
    reactions: BTreeMap<(String, String), (bool, i64)>,
}

impl MessageView {
    fn new(chat_id: &str, seq: i64, sender_id: &str, content: &str, deleted: bool) -> Self {
        let mut view = Self {
            chat_id: chat_id.to_owned(),
            seq,
            sender_id: sender_id.to_owned(),
            content: content.to_owned(),
            content_seq: seq,
            deleted: false,
            reactions: BTreeMap::new(),
        };
        if deleted {
            view.delete();
        }
        view
    }

    /// The reactions shown: (user, emoji) pairs.
    pub fn reactions(&self) -> BTreeSet<(String, String)> {
        self.reactions.iter().filter(|(_, (present, _))| *present).map(|(key, _)| key.clone()).collect()
    }

    /// Whether `user` has reacted with `emoji`, as far as this view knows.
    pub fn has_reaction(&self, user: &str, emoji: &str) -> bool {
        self.reactions.get(&(user.to_owned(), emoji.to_owned())).is_some_and(|(present, _)| *present)
    }

    fn delete(&mut self) {
        self.deleted = true;
        self.content.clear();
        self.reactions.clear();
    }

    /// Entry `seq` of `user` changes the message.
    fn apply(&mut self, seq: i64, user: &str, change: &Change) {
        if self.deleted {
            return;
        }
        match change {
            Change::Delete => self.delete(),
            Change::Edit { content } => {
                if seq > self.content_seq {
                    self.content = content.clone();
                    self.content_seq = seq;
                }
            }
            Change::React { emoji } | Change::Unreact { emoji } => {
                let present = matches!(change, Change::React { .. });
                let slot = self.reactions.entry((user.to_owned(), emoji.clone())).or_insert((!present, i64::MIN));
                if seq > slot.1 {
                    *slot = (present, seq);
                }
            }
        }
    }
}

/// Every message a device has seen, by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceView {
    pub messages: BTreeMap<String, MessageView>,
}

impl DeviceView {
    /// A `message:receive`: the message as it was when the server read it
    /// (latest content, or a tombstone). A second copy (a redelivery) can
    /// only add the tombstone: the entries after the message bring every
    /// change since.
    pub fn received(&mut self, message_id: &str, chat_id: &str, seq: i64, sender_id: &str, content: &str, deleted: bool) {
        match self.messages.get_mut(message_id) {
            Some(view) => {
                if deleted {
                    view.delete();
                }
            }
            None => {
                self.messages.insert(message_id.to_owned(), MessageView::new(chat_id, seq, sender_id, content, deleted));
            }
        }
    }

    /// A message this device sent, as answered.
    pub fn sent(&mut self, message_id: &str, chat_id: &str, seq: i64, sender_id: &str, content: &str) {
        self.messages
            .entry(message_id.to_owned())
            .or_insert_with(|| MessageView::new(chat_id, seq, sender_id, content, false));
    }

    /// Entry `seq` of `user` changes `message_id` (received, or this device's
    /// own, answered). `false` if the device has not seen that message.
    pub fn entry(&mut self, message_id: &str, seq: i64, user: &str, change: &Change) -> bool {
        match self.messages.get_mut(message_id) {
            Some(view) => {
                view.apply(seq, user, change);
                true
            }
            None => false,
        }
    }

    /// The server said the message is deleted for everyone (`already_deleted`).
    pub fn deleted(&mut self, message_id: &str) {
        if let Some(view) = self.messages.get_mut(message_id) {
            view.delete();
        }
    }

    /// A reply without an entry (`changed: false`) says `user`'s `emoji` is
    /// `present` now; an entry already applied for it is more precise, so
    /// this only fills in what the view has no entry for.
    pub fn assume_reaction(&mut self, message_id: &str, user: &str, emoji: &str, present: bool) {
        let Some(view) = self.messages.get_mut(message_id) else { return };
        if view.deleted {
            return;
        }
        let slot = view.reactions.entry((user.to_owned(), emoji.to_owned())).or_insert((present, 0));
        if slot.1 <= 0 {
            *slot = (present, 0);
        }
    }

    pub fn get(&self, message_id: &str) -> Option<&MessageView> {
        self.messages.get(message_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn react(emoji: &str) -> Change {
        Change::React { emoji: emoji.into() }
    }

    fn unreact(emoji: &str) -> Change {
        Change::Unreact { emoji: emoji.into() }
    }

    fn edit(content: &str) -> Change {
        Change::Edit { content: content.into() }
    }

    #[test]
    fn the_newest_entry_wins_whatever_order_they_arrive_in() {
        let mut view = DeviceView::default();
        view.received("m", "c", 3, "bob", "hi", false);
        assert!(view.entry("m", 9, "bob", &edit("second")));
        assert!(view.entry("m", 7, "bob", &edit("first")));
        assert!(view.entry("m", 8, "alice", &react("+1")));
        assert!(view.entry("m", 5, "alice", &unreact("+1")));
        assert!(view.entry("m", 6, "carol", &react("+1")));
        assert!(view.entry("m", 10, "carol", &unreact("+1")));
        let message = view.get("m").expect("seen");
        assert_eq!(message.content, "second");
        assert_eq!(message.reactions(), BTreeSet::from([("alice".to_string(), "+1".to_string())]));
    }

    #[test]
    fn a_delete_is_final_and_erases_content_and_reactions() {
        let mut view = DeviceView::default();
        view.sent("m", "c", 3, "bob", "hi");
        view.entry("m", 4, "alice", &react("+1"));
        view.entry("m", 6, "bob", &Change::Delete);
        view.entry("m", 5, "bob", &edit("late"));
        view.entry("m", 7, "alice", &react("+1"));
        view.received("m", "c", 3, "bob", "hi", false);
        let message = view.get("m").expect("seen");
        assert!(message.deleted);
        assert_eq!(message.content, "");
        assert!(message.reactions().is_empty());
    }

    #[test]
    fn a_tombstone_is_deleted_and_an_entry_about_an_unseen_message_is_refused() {
        let mut view = DeviceView::default();
        view.received("m", "c", 3, "bob", "", true);
        assert!(view.get("m").expect("seen").deleted);
        assert!(!view.entry("other", 4, "bob", &Change::Delete));
        assert!(view.get("other").is_none());
    }

    #[test]
    fn an_assumed_reaction_yields_to_any_entry() {
        let mut view = DeviceView::default();
        view.received("m", "c", 3, "bob", "hi", false);
        view.assume_reaction("m", "alice", "+1", true);
        assert!(view.get("m").expect("seen").has_reaction("alice", "+1"));
        view.entry("m", 4, "alice", &unreact("+1"));
        view.assume_reaction("m", "alice", "+1", true);
        assert!(!view.get("m").expect("seen").has_reaction("alice", "+1"));
    }
}
