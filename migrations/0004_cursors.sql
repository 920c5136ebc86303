-- Delivery state without a row per message and recipient (issue 13, step 5).
--
-- Until now a send inserted a `message_status` row per recipient and every
-- ack, read and sender acknowledgement updated it. From here on nothing is
-- written per message and recipient:
--   delivered: `chat_members.delivered_seq`, the highest seq some device of
--              the member acknowledged contiguously (the max of its devices'
--              `device_cursors.acked_seq`; a read or the member's own
--              message moves it too);
--   read:      `chat_members.read_seq`;
--   expired:   `expired_ranges`, a row per member and sweep, not per message;
--   parked:    `chat_members.parked_seq`/`parked_at`;
--   what a sender's device has been shown of its messages' statuses:
--              `device_cursors.told_*_seq` (replaces `sender_synced`).
-- `message_status` becomes a view computing the guide's columns from these.

-- Per member: where the expiry sweep has got to (messages after the delivered
-- watermark up to here that no device acknowledged within the retention are
-- expired, see `expired_ranges`) and the parked jobs (the newest parked seq;
-- the member's undelivered messages up to it are parked until they connect).
ALTER TABLE chat_members
    ADD COLUMN expired_seq bigint NOT NULL DEFAULT 0,
    ADD COLUMN parked_seq  bigint NOT NULL DEFAULT 0,
    ADD COLUMN parked_at   timestamptz,
    DROP COLUMN last_recv_seq;

-- Messages with after_seq < seq <= up_to_seq, from others, expired for
-- user_id: past the retention before any device of theirs acknowledged them.
-- One row per member and sweep that found some.
CREATE TABLE expired_ranges (
    chat_id    uuid NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    user_id    text NOT NULL,
    after_seq  bigint NOT NULL,
    up_to_seq  bigint NOT NULL,
    expired_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (chat_id, user_id, after_seq),
    CONSTRAINT expired_ranges_not_empty CHECK (after_seq < up_to_seq)
);

INSERT INTO expired_ranges (chat_id, user_id, after_seq, up_to_seq, expired_at)
SELECT chat_id, user_id, seq - 1, seq, updated_at FROM message_status WHERE status = 'expired'
ON CONFLICT DO NOTHING;
UPDATE chat_members cm SET expired_seq = x.up_to
  FROM (SELECT chat_id, user_id, max(seq) AS up_to FROM message_status WHERE status = 'expired' GROUP BY chat_id, user_id) x
 WHERE cm.chat_id = x.chat_id AND cm.user_id = x.user_id;
UPDATE chat_members cm SET parked_seq = x.up_to, parked_at = x.since
  FROM (SELECT chat_id, user_id, max(seq) AS up_to, min(parked_at) AS since FROM message_status
         WHERE status = 'sent' AND parked_at IS NOT NULL GROUP BY chat_id, user_id) x
 WHERE cm.chat_id = x.chat_id AND cm.user_id = x.user_id;

-- What each device of a sender has been shown (and acknowledged) of its
-- messages' statuses in a direct chat, as seqs of the sender's messages:
-- every message of theirs up to `told_delivered_seq` was shown delivered (or
-- read), up to `told_read_seq` read; every expired one up to
-- `told_expired_seq` expired. A connecting device is sent what is newer.
ALTER TABLE device_cursors
    ADD COLUMN told_delivered_seq bigint NOT NULL DEFAULT 0,
    ADD COLUMN told_read_seq      bigint NOT NULL DEFAULT 0,
    ADD COLUMN told_expired_seq   bigint NOT NULL DEFAULT 0;
-- From `sender_synced`: up to just before the first change the sender had
-- not acknowledged (every device of theirs starts there), and never past
-- where the other members are: nothing beyond has been shown yet.
UPDATE device_cursors dc
   SET told_delivered_seq = LEAST(COALESCE(u.first_delivered - 1, u.last_seq), u.others_delivered),
       told_read_seq = LEAST(COALESCE(u.first_read - 1, u.last_seq), u.others_read),
       told_expired_seq = LEAST(COALESCE(u.first_expired - 1, u.last_seq), u.others_expired)
  FROM (SELECT c.id AS chat_id, c.last_seq, s.sender_id,
               min(ms.seq) FILTER (WHERE ms.status IN ('delivered', 'read')) AS first_delivered,
               min(ms.seq) FILTER (WHERE ms.status = 'read') AS first_read,
               min(ms.seq) FILTER (WHERE ms.status = 'expired') AS first_expired,
               COALESCE(min(o.delivered_seq), c.last_seq) AS others_delivered,
               COALESCE(min(o.read_seq), c.last_seq) AS others_read,
               COALESCE(min(o.expired_seq), c.last_seq) AS others_expired
          FROM chats c
          JOIN (SELECT DISTINCT chat_id, user_id AS sender_id FROM device_cursors) s ON s.chat_id = c.id
          LEFT JOIN chat_members o ON o.chat_id = c.id AND o.user_id <> s.sender_id
          LEFT JOIN message_status ms ON ms.chat_id = c.id AND ms.sender_id = s.sender_id AND NOT ms.sender_synced
         GROUP BY c.id, c.last_seq, s.sender_id) u
 WHERE u.chat_id = dc.chat_id AND u.sender_id = dc.user_id;

-- A sender's messages in a chat, in order: the statuses a device is owed are
-- an index range of these.
CREATE INDEX messages_chat_sender_seq ON messages (chat_id, sender_id, seq);

-- The rows the watermarks cannot express stay: a message delivered or read
-- out of order before the upgrade (the watermarks stop before a hole). They
-- only ever count for the `default` device up to `legacy_seq`, and for the view.
ALTER TABLE message_status RENAME TO message_status_legacy;
DELETE FROM message_status_legacy l
 WHERE NOT EXISTS (
        SELECT 1 FROM chat_members cm
         WHERE cm.chat_id = l.chat_id AND cm.user_id = l.user_id
           AND ((l.status = 'delivered' AND l.seq > cm.delivered_seq)
                OR (l.status = 'read' AND l.seq > cm.read_seq)));
DROP INDEX idx_message_status_user_status;
DROP INDEX message_status_unsynced;

-- The guide's `message_status` (message_id, user_id, status, timestamp), one
-- row per message and recipient, computed: expired if an expired range of
-- the recipient holds it (and no row from before the upgrade); else read up to `read_seq`, delivered up to
-- `delivered_seq`, else sent (or what a row kept from before the upgrade
-- says, if that is further). `timestamp` is when that watermark last moved
-- (the message's own time while it is `sent`). Recipients are the members
-- who joined before it; a member who left has no rows.
CREATE VIEW message_status AS
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
               END AS status) s;
