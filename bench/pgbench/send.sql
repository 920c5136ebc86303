-- pgbench script: what a batch of sends costs PostgreSQL at its floor, outside
-- Courier: lock `batch` chats (pgbench -D batch=25; 200 must be a multiple of
-- it), insert one message in each (with RETURNING), move their last_seq,
-- commit. Courier's send also reads the members and the clientMsgId keys and
-- writes outbox rows, so it costs more than this. docs/benchmarks.md ("Issue
-- 13, fourth session") has the commands and figures.
\set b random(0, 200 / :batch - 1)
BEGIN;
SELECT id, last_seq FROM chats WHERE id IN (SELECT md5('c'||(:b*:batch+i))::uuid FROM generate_series(1,:batch) i) ORDER BY id FOR NO KEY UPDATE;
INSERT INTO messages (id, chat_id, seq, sender_id, content, message_type, client_msg_id, sender_device, kind)
SELECT gen_random_uuid(), c.id, c.last_seq + 1, 'u'||(2*(:b*:batch+i)-1), 'hello there, a message of some length', 'text', gen_random_uuid()::text, 'default', 'message'
  FROM generate_series(1,:batch) i JOIN chats c ON c.id = md5('c'||(:b*:batch+i))::uuid
RETURNING id, created_at;
UPDATE chats SET last_seq = last_seq + 1 WHERE id IN (SELECT md5('c'||(:b*:batch+i))::uuid FROM generate_series(1,:batch) i);
COMMIT;
