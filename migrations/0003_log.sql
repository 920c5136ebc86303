-- One ordered log per chat, a cursor per device (issue 13, step 1: the schema).
--
-- `messages` (gap-free `seq` per chat) is the log. Where a user is in it is
-- kept as watermarks per member (`delivered_seq`, `read_seq`) and a cursor per
-- device (`device_cursors.acked_seq`) instead of a row per message and
-- recipient. `message_status` stays the delivery state until the write path
-- moves onto the cursors (the next step); until then both are kept, and the
-- watermarks are exactly what `message_status` says (tests check it).

-- Entries carry a kind. Every entry so far is a message; edits, deletes and
-- reactions are to become further kinds of the same log.
ALTER TABLE messages
    ADD COLUMN kind text NOT NULL DEFAULT 'message' CONSTRAINT messages_kind_known CHECK (kind IN ('message')),
    -- The device it was sent from, so it reaches the sender's other devices
    -- and never comes back to this one. NULL for entries from before devices.
    ADD COLUMN sender_device text;

-- Per member: the highest seq up to which every message of the chat to them
-- has reached some device of theirs (their own messages count as delivered),
-- and the read watermark (`message:read {chatId, upToSeq}` moves it, never
-- back). Both start at `joined_seq`; `read_seq <= delivered_seq` always.
ALTER TABLE chat_members
    ADD COLUMN delivered_seq bigint,
    ADD COLUMN delivered_at  timestamptz,
    ADD COLUMN read_seq      bigint,
    ADD COLUMN read_at       timestamptz;

-- The watermarks of what `message_status` says today: contiguous from the
-- start, so a message read out of order leaves `read_seq` before it (it stays
-- `read` in `message_status`; no message is ever claimed read or delivered
-- that was not).
UPDATE chat_members cm
   SET delivered_seq = GREATEST(cm.joined_seq, COALESCE(s.first_undelivered - 1, s.last_seq)),
       read_seq      = GREATEST(cm.joined_seq, COALESCE(s.first_unread - 1, s.last_seq)),
       delivered_at  = s.delivered_at,
       read_at       = s.read_at
  FROM (SELECT m.chat_id, m.user_id, c.last_seq, p.*
          FROM chat_members m
          JOIN chats c ON c.id = m.chat_id
          CROSS JOIN LATERAL (
                SELECT min(ms.seq) FILTER (WHERE ms.status IN ('sent', 'expired')) AS first_undelivered,
                       min(ms.seq) FILTER (WHERE ms.status <> 'read') AS first_unread,
                       max(ms.updated_at) FILTER (WHERE ms.status IN ('delivered', 'read')) AS delivered_at,
                       max(ms.updated_at) FILTER (WHERE ms.status = 'read') AS read_at
                  FROM message_status ms
                 WHERE ms.user_id = m.user_id AND ms.chat_id = m.chat_id AND ms.seq > m.joined_seq) p
       ) s
 WHERE s.chat_id = cm.chat_id AND s.user_id = cm.user_id;
UPDATE chat_members SET read_seq = LEAST(read_seq, delivered_seq);

-- Up to which seq the `default` device (the only one before devices) may
-- hold messages out of order: `message_status` rows say which it has, so a
-- drain does not send them again. Cursors alone describe everything after.
ALTER TABLE chat_members ADD COLUMN legacy_seq bigint NOT NULL DEFAULT 0;
UPDATE chat_members cm SET legacy_seq = c.last_seq FROM chats c WHERE c.id = cm.chat_id;

ALTER TABLE chat_members
    ALTER COLUMN delivered_seq SET NOT NULL,
    ALTER COLUMN read_seq SET NOT NULL,
    ADD CONSTRAINT chat_members_read_after_delivered CHECK (read_seq <= delivered_seq);

-- A user's devices: a JWT `did` claim, else a `deviceId` connect parameter,
-- else the one device `default`. A device not seen for DEVICE_TTL is dropped
-- with its cursors.
CREATE TABLE devices (
    user_id      text NOT NULL REFERENCES users (id),
    device_id    text NOT NULL CHECK (octet_length(device_id) BETWEEN 1 AND 64),
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    -- Set by `DELETE /api/devices/{id}`: the device is closed and refused
    -- from then on (a token naming it may still be valid). Kept until DEVICE_TTL.
    revoked_at   timestamptz,
    PRIMARY KEY (user_id, device_id)
);
CREATE INDEX devices_by_last_seen ON devices (last_seen_at);

-- Per device and chat: the highest seq the device has acknowledged
-- contiguously (its own sends count as acknowledged).
CREATE TABLE device_cursors (
    user_id   text NOT NULL,
    device_id text NOT NULL,
    chat_id   uuid NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    acked_seq bigint NOT NULL,
    -- Set when the user leaves the chat (the chat's last seq then): the device
    -- still gets what was sent while the user was a member, and no more.
    until_seq bigint,
    PRIMARY KEY (user_id, device_id, chat_id),
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);

-- Every user who is in a chat had one device so far: `default`, at the
-- user's delivered watermark in each chat.
INSERT INTO devices (user_id, device_id, created_at, last_seen_at)
SELECT u.id, 'default', u.created_at, COALESCE(u.last_seen, now())
  FROM users u
 WHERE EXISTS (SELECT 1 FROM chat_members cm WHERE cm.user_id = u.id);
INSERT INTO device_cursors (user_id, device_id, chat_id, acked_seq)
SELECT user_id, 'default', chat_id, delivered_seq FROM chat_members;

ALTER TABLE connections ADD COLUMN device_id text NOT NULL DEFAULT 'default';
