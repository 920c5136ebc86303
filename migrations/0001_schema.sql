-- Courier schema: the guide's tables (users, chats, chat_members, messages,
-- message_status) plus what reliable delivery needs (per-chat seq, outbox,
-- presence with leases). PostgreSQL is the truth; RabbitMQ carries doorbells.

-- The host app's users. `id` is the host app's opaque user id (JWT `sub`).
CREATE TABLE users (
    id              text PRIMARY KEY CHECK (octet_length(id) BETWEEN 1 AND 128),
    name            text,
    profile_picture text,
    last_seen       timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE chats (
    id         uuid PRIMARY KEY,
    kind       text NOT NULL CHECK (kind IN ('direct', 'group')),
    name       text,
    -- "lo\x01hi" of the two member ids for direct chats, so a pair has one chat.
    direct_key text UNIQUE,
    created_by text NOT NULL REFERENCES users (id),
    -- Highest seq handed out. Every send locks this row, so seqs are gap-free
    -- and commit in seq order within a chat.
    last_seq   bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE chat_members (
    chat_id       uuid NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    user_id       text NOT NULL REFERENCES users (id),
    joined_at     timestamptz NOT NULL DEFAULT now(),
    -- The chat's last_seq when this member joined: history starts after it.
    joined_seq    bigint NOT NULL,
    -- Seq of the newest message this member is a recipient of (or the chat's
    -- last_seq when they joined). It becomes the next message's prev_seq, which
    -- lets a connection tell "next in order" from "something is missing".
    last_recv_seq bigint NOT NULL,
    PRIMARY KEY (chat_id, user_id)
);
CREATE INDEX chat_members_by_user ON chat_members (user_id);

CREATE TABLE messages (
    id            uuid PRIMARY KEY,
    chat_id       uuid NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    seq           bigint NOT NULL,
    sender_id     text NOT NULL REFERENCES users (id),
    -- UTF-8 bytes, stored verbatim: text columns cannot hold NUL.
    content       bytea NOT NULL,
    message_type  text NOT NULL,
    client_msg_id text,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (chat_id, seq)
);
CREATE UNIQUE INDEX messages_sender_client_msg_id
    ON messages (sender_id, client_msg_id) WHERE client_msg_id IS NOT NULL;
-- The guide's index for chat queries.
CREATE INDEX idx_messages_chat_created ON messages (chat_id, created_at);

CREATE TYPE delivery_status AS ENUM ('sent', 'delivered', 'read', 'expired');

-- One row per message and recipient: the recipient's inbox and the sender's ticks.
CREATE TABLE message_status (
    message_id    uuid NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    user_id       text NOT NULL REFERENCES users (id),
    -- Inbox order for this recipient. Rows of one chat are inserted under the
    -- chat's row lock, so within a chat `id` grows with `seq`.
    id            bigint GENERATED ALWAYS AS IDENTITY,
    chat_id       uuid NOT NULL,
    seq           bigint NOT NULL,
    prev_seq      bigint NOT NULL,
    sender_id     text NOT NULL,
    status        delivery_status NOT NULL DEFAULT 'sent',
    -- The guide's `timestamp`: when `status` last changed.
    updated_at    timestamptz NOT NULL DEFAULT now(),
    -- False while the sender has not acknowledged the latest status change;
    -- a reconnecting sender is sent every such row.
    sender_synced boolean NOT NULL DEFAULT true,
    -- Set when the job ran out of retry tiers while the recipient was offline.
    parked_at     timestamptz,
    PRIMARY KEY (message_id, user_id)
);
-- The guide's index, extended with `id` so a user's undelivered messages page in inbox order.
CREATE INDEX idx_message_status_user_status ON message_status (user_id, status, id);
-- Per-chat ranges: read-up-to-seq and gap fills.
CREATE INDEX message_status_user_chat_seq ON message_status (user_id, chat_id, seq);
-- Status changes a sender has not yet seen.
CREATE INDEX message_status_unsynced ON message_status (sender_id, id) WHERE NOT sender_synced;

-- Jobs committed with their message and not yet confirmed by RabbitMQ.
CREATE TABLE outbox (
    message_id uuid PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    attempts   integer NOT NULL DEFAULT 0
);
CREATE INDEX outbox_by_age ON outbox (created_at);

-- API nodes and their lease: a node whose heartbeat is older than the lease is
-- dead, and its connections are removed by a worker.
CREATE TABLE api_nodes (
    node_id      text PRIMARY KEY,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);

-- Live client connections: which node holds which user's sockets.
CREATE TABLE connections (
    id           uuid PRIMARY KEY,
    user_id      text NOT NULL,
    node_id      text NOT NULL,
    connected_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX connections_by_user ON connections (user_id);
CREATE INDEX connections_by_node ON connections (node_id);
