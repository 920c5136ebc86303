-- Edits, deletes and reactions: further kinds of entry in the same per-chat
-- log as messages (issue 14). Each has its own seq, so every device gets them
-- in order after the message they are about, through the same cursors.
--
-- A `message` entry holds what history shows: its latest content (an edit
-- writes it in place, `edited_at`), or nothing once deleted for everyone
-- (`deleted_at`: the content is erased, the row stays as the tombstone).
-- `edit` entries hold the content they set (erased too when the message is
-- deleted), `react`/`unreact` the emoji, `delete` nothing. `target_id` is the
-- message an edit, delete or reaction is about; `reply_to`, the message a
-- message answers (same chat).
ALTER TABLE messages DROP CONSTRAINT messages_kind_known;
ALTER TABLE messages
    ADD CONSTRAINT messages_kind_known CHECK (kind IN ('message', 'edit', 'delete', 'react', 'unreact')),
    ADD COLUMN target_id  uuid,
    ADD COLUMN reply_to   uuid,
    ADD COLUMN edited_at  timestamptz,
    ADD COLUMN deleted_at timestamptz,
    ADD CONSTRAINT messages_target_iff_not_message CHECK ((kind = 'message') = (target_id IS NULL));

-- A message's edits (a later edit supersedes an earlier one; a delete erases them).
CREATE INDEX messages_by_target ON messages (target_id, seq) WHERE target_id IS NOT NULL;

-- Current reactions, one per (message, user, emoji): what history aggregates.
-- The log's `react`/`unreact` entries are how devices learn of them.
CREATE TABLE reactions (
    message_id uuid NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    user_id    text NOT NULL,
    emoji      text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (message_id, user_id, emoji)
);

-- "Delete for me": hidden from that user's history and catch-up only.
CREATE TABLE hidden_messages (
    user_id    text NOT NULL,
    message_id uuid NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    hidden_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, message_id)
);

-- The guide's `message_status` view covers messages only: an edit, a delete
-- or a reaction has no delivery status of its own.
CREATE OR REPLACE VIEW message_status AS
SELECT m.id AS message_id,
       cm.user_id,
       s.status,
       CASE s.status
           WHEN 'expired' THEN e.expired_at
           WHEN 'read' THEN COALESCE(CASE WHEN m.seq <= cm.read_seq THEN cm.read_at END, l.updated_at, m.created_at)
           WHEN 'delivered' THEN COALESCE(CASE WHEN m.seq <= cm.delivered_seq THEN cm.delivered_at END, l.updated_at, m.created_at)
           ELSE m.created_at
       END AS "timestamp",
       m.chat_id,
       m.seq,
       m.sender_id
  FROM messages m
  JOIN chat_members cm ON cm.chat_id = m.chat_id AND cm.user_id <> m.sender_id AND m.seq > cm.joined_seq
  LEFT JOIN message_status_legacy l ON l.message_id = m.id AND l.user_id = cm.user_id
  LEFT JOIN LATERAL (
        SELECT er.expired_at FROM expired_ranges er
         WHERE er.chat_id = m.chat_id AND er.user_id = cm.user_id AND m.seq > er.after_seq AND m.seq <= er.up_to_seq
         LIMIT 1) e ON true
  CROSS JOIN LATERAL (
        SELECT CASE
                   -- (a row kept from before the upgrade says it was delivered: it was)
                   WHEN e.expired_at IS NOT NULL AND l.status IS NULL THEN 'expired'::delivery_status
                   ELSE GREATEST(
                       CASE WHEN m.seq <= cm.read_seq THEN 'read'
                            WHEN m.seq <= cm.delivered_seq THEN 'delivered'
                            ELSE 'sent' END::delivery_status,
                       l.status)
               END AS status) s
 WHERE m.kind = 'message';
