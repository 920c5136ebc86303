-- pgbench script: what a batch of sends costs PostgreSQL at its floor, outside
-- Courier: lock 100 chats, insert one message in each (with RETURNING), move
-- their last_seq, commit. Courier's send also reads the members and the
-- clientMsgId keys and writes outbox rows, so it costs more than this.
-- docs/benchmarks.md ("Issue 13, fourth session") has the command and figures.
\set b random(0, 1)
BEGIN;
SELECT id, last_seq FROM chats WHERE id IN (SELECT md5('c'||(:b*100+i))::uuid FROM generate_series(1,100) i) ORDER BY id FOR NO KEY UPDATE;
INSERT INTO messages (id, chat_id, seq, sender_id, content, message_type, client_msg_id, sender_device, kind)
SELECT gen_random_uuid(), c.id, c.last_seq + 1, 'u'||(2*(:b*100+i)-1), 'hello there, a message of some length', 'text', gen_random_uuid()::text, 'default', 'message'
  FROM generate_series(1,100) i JOIN chats c ON c.id = md5('c'||(:b*100+i))::uuid
RETURNING id, created_at;
UPDATE chats SET last_seq = last_seq + 1 WHERE id IN (SELECT md5('c'||(:b*100+i))::uuid FROM generate_series(1,100) i);
COMMIT;
