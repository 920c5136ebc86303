-- A database for bench/pgbench/send.sql: Courier's schema (apply
-- migrations/*.sql first), 400 users, 200 direct chats of 50 messages each.
INSERT INTO users (id, name) SELECT 'u'||i, 'User '||i FROM generate_series(1,400) i;
INSERT INTO chats (id, kind, direct_key, created_by, last_seq)
  SELECT md5('c'||i)::uuid, 'direct', 'k'||i, 'u'||(2*i-1), 50 FROM generate_series(1,200) i;
INSERT INTO chat_members (chat_id, user_id, joined_seq, delivered_seq, read_seq)
  SELECT md5('c'||i)::uuid, 'u'||(2*i-1+j), 0, 0, 0 FROM generate_series(1,200) i, generate_series(0,1) j;
INSERT INTO devices (user_id, device_id) SELECT 'u'||i, 'default' FROM generate_series(1,400) i;
INSERT INTO messages (id, chat_id, seq, sender_id, content, message_type, sender_device)
  SELECT md5('m'||i||'-'||s)::uuid, md5('c'||i)::uuid, s, 'u'||(2*i-1), 'hello there', 'text', 'default'
  FROM generate_series(1,200) i, generate_series(1,50) s;
