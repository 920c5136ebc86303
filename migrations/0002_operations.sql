-- Operations (issue 7): retention, dead letters an operator can inspect, and
-- offline push notifications. `expired` is already a delivery_status value
-- (0001); this adds what finding, expiring and reporting on the backlog needs.

-- The backlog: every `sent` row, by age. Serves the backlog gauges (an
-- index-only count of pending and parked rows, not a scan of the whole table)
-- and the retention sweep (oldest first). `updated_at` of a `sent` row is when
-- it was sent.
CREATE INDEX message_status_pending_age ON message_status (updated_at) INCLUDE (parked_at) WHERE status = 'sent';

-- Poison jobs moved out of the RabbitMQ dead queue by a worker, so an operator
-- can list, inspect, replay and drop them by id (a queue has no ids and can
-- only be read from the front).
CREATE TABLE dead_letters (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Why: the worker's x-courier-dead-reason, or RabbitMQ's x-death reason
    -- (`rejected`, `delivery_limit`, `expired`).
    reason       text NOT NULL,
    -- The queue the message died in (x-first-death-queue), when RabbitMQ says.
    source_queue text,
    body         bytea NOT NULL,
    -- The AMQP headers as JSON, for inspection.
    headers      jsonb NOT NULL DEFAULT '{}',
    received_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_letters_by_age ON dead_letters (received_at);

-- Offline push webhook: when each user was last notified, so several workers
-- together notify a user at most once per quiet period.
CREATE TABLE push_notifications (
    user_id     text PRIMARY KEY,
    notified_at timestamptz NOT NULL
);
