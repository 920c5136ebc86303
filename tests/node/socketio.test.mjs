// Courier's /socket.io/ endpoint through the official socket.io-client: the
// guide's four test cases, its frontend snippets pasted as written, mixed
// Socket.IO and /ws clients, auth and errors. Needs a running api + worker
// (tests/tests/socketio.rs starts them) at COURIER_URL, with --dev-tokens.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { io } from 'socket.io-client';
import { ENTRY_EVENTS, URL, connect, connectWs, createChat, eventually, rest, statusOf, token } from './lib.mjs';

/// User ids unique to this run, so the cases cannot see each other's chats.
const user = (name) => `${name}-${randomUUID().slice(0, 8)}`;

test('test case 1: send to offline user', async () => {
  const [a, b] = [user('alice'), user('bob')];
  const [ta, tb] = await Promise.all([token(a), token(b)]);
  const chatId = await createChat(ta, 'direct', [b]);
  const alice = await connect(ta).ready();

  const sent = await alice.request('message:send', { chatId, content: 'are you there?', messageType: 'text', clientMsgId: 'c1' });
  assert.equal(sent.error, undefined, JSON.stringify(sent.error));
  assert.equal(sent.seq, 1);
  assert.equal(sent.clientMsgId, 'c1');
  const [echo] = await alice.waitFor('message:sent');
  assert.equal(echo.messageId, sent.messageId, 'message:sent carries the same body as the ack');
  assert.equal(await statusOf(ta, chatId, sent.messageId, b), 'sent', 'stored as sent while B is offline');

  const bob = await connect(tb).ready();
  const [received] = await bob.waitFor('message:receive');
  assert.deepEqual(
    { ...received, createdAt: typeof received.createdAt },
    { messageId: sent.messageId, chatId, senderId: a, content: 'are you there?', messageType: 'text', createdAt: 'string', seq: 1, sender: { name: `${a} name`, profilePicture: null } },
  );
  await eventually('delivered', async () => (await statusOf(ta, chatId, sent.messageId, b)) === 'delivered');
  const [status] = await alice.waitFor('message:status', 1, (s) => s.messageId === sent.messageId);
  assert.equal(status.status, 'delivered');
  assert.equal(status.deliveredTo, b);
  assert.equal(status.userId, b);
  alice.close();
  bob.close();
});

test('test case 2: multiple offline messages arrive in order', async () => {
  const [a, b] = [user('alice'), user('bob')];
  const [ta, tb] = await Promise.all([token(a), token(b)]);
  const chatId = await createChat(ta, 'direct', [b]);
  const alice = await connect(ta).ready();
  const ids = [];
  for (let i = 1; i <= 5; i++) {
    ids.push((await alice.request('message:send', { chatId, content: `message ${i}`, messageType: 'text' })).messageId);
  }

  const bob = await connect(tb).ready();
  const received = await bob.waitFor('message:receive', 5);
  assert.deepEqual(received.map((m) => m.content), ['message 1', 'message 2', 'message 3', 'message 4', 'message 5']);
  assert.deepEqual(received.map((m) => m.seq), [1, 2, 3, 4, 5]);
  const [done] = await bob.waitFor('sync:done');
  assert.equal(done.count, 5);
  for (const id of ids) {
    await eventually(`${id} delivered`, async () => (await statusOf(ta, chatId, id, b)) === 'delivered');
  }
  alice.close();
  bob.close();
});

test('test case 3: group chat with mixed status', async () => {
  const [a, b, c] = [user('alice'), user('bob'), user('carol')];
  const [ta, tb, tc] = await Promise.all([token(a), token(b), token(c)]);
  const chatId = await createChat(ta, 'group', [b, c], 'trio');
  const [alice, carol] = await Promise.all([connect(ta).ready(), connect(tc).ready()]);
  await carol.waitFor('sync:done');

  const sent = await alice.request('message:send', { chatId, content: 'hello group', messageType: 'text' });
  const [atCarol] = await carol.waitFor('message:receive');
  assert.equal(atCarol.messageId, sent.messageId, 'the online member gets it at once');
  await eventually('carol delivered', async () => (await statusOf(ta, chatId, sent.messageId, c)) === 'delivered');
  assert.equal(await statusOf(ta, chatId, sent.messageId, b), 'sent', 'the offline member has it pending');

  const bob = await connect(tb).ready();
  const [atBob] = await bob.waitFor('message:receive');
  assert.equal(atBob.messageId, sent.messageId);
  await eventually('bob delivered', async () => (await statusOf(ta, chatId, sent.messageId, b)) === 'delivered');
  for (const s of [alice, bob, carol]) s.close();
});

test('test case 4: rapid reconnection delivers once', async () => {
  const [a, b] = [user('alice'), user('bob')];
  const [ta, tb] = await Promise.all([token(a), token(b)]);
  const chatId = await createChat(tb, 'direct', [a]);
  const sent = (await rest(tb, 'POST', `/chats/${chatId}/messages`, { content: 'ping' })).body;

  // Connect and drop at once, several times, acknowledging nothing.
  for (let i = 0; i < 5; i++) {
    const flaky = await connect(ta, { ack: false }).ready();
    flaky.close();
  }
  assert.equal(await statusOf(tb, chatId, sent.messageId, a), 'sent', 'nothing acknowledged yet');

  const alice = await connect(ta).ready();
  const [received] = await alice.waitFor('message:receive');
  assert.equal(received.messageId, sent.messageId);
  assert.equal((await alice.waitFor('sync:done'))[0].count, 1);
  await eventually('delivered', async () => (await statusOf(tb, chatId, sent.messageId, a)) === 'delivered');
  assert.deepEqual(await alice.request('ping'), { pong: true }); // a barrier: everything sent before it has arrived
  assert.equal(alice.all('message:receive').length, 1, 'delivered twice on one connection');
  alice.close();

  for (let i = 0; i < 3; i++) {
    const again = await connect(ta).ready();
    assert.equal((await again.waitFor('sync:done'))[0].count, 0);
    await again.request('ping');
    assert.equal(again.all('message:receive').length, 0, 'an acknowledged message came again');
    again.close();
  }
});

test("the guide's frontend snippets work as written", async () => {
  const [a, b] = [user('alice'), user('bob')];
  const [ta, tb] = await Promise.all([token(a), token(b)]);
  const currentChatId = await createChat(ta, 'direct', [b]);
  const messageText = 'hello from the guide';
  const seen = { added: [], statuses: [], sent: [] };
  const addMessageToChat = (chatId, message) => seen.added.push({ chatId, message });
  const updateMessageStatus = (messageId, status) => seen.statuses.push({ messageId, status });
  const markAsSent = (messageId) => seen.sent.push(messageId);
  const log = { log: () => {} }; // the snippets' console.log, kept quiet

  // The recipient's page: "On Connection (Frontend)", verbatim.
  const recipient = (() => {
    const console = log;
    const socket = io(URL, { auth: { token: tb }, reconnection: false, forceNew: true });
    // When socket connects
    socket.on('connect', () => {
      console.log('Connected to server');
      // Server will automatically push pending messages
    });

    // Listen for incoming messages
    socket.on('message:receive', (message) => {
      // Add message to chat UI
      addMessageToChat(message.chatId, message);

      // Send delivery confirmation (optional)
      socket.emit('message:delivered', {
        messageId: message.messageId
      });
    });

    // Listen for status updates
    socket.on('message:status', (update) => {
      // Update message UI (show double check mark)
      updateMessageStatus(update.messageId, update.status);
    });
    return socket;
  })();

  // The sender's page: "Sending Messages (Frontend)" (and its status listener), verbatim.
  const sender = (() => {
    const socket = io(URL, { auth: { token: ta }, reconnection: false, forceNew: true });
    socket.on('message:status', (update) => {
      // Update message UI (show double check mark)
      updateMessageStatus(update.messageId, update.status);
    });
    socket.on('connect', () => {
      // Send message
      socket.emit('message:send', {
        chatId: currentChatId,
        content: messageText,
        messageType: 'text'
      });

      // Handle confirmation
      socket.on('message:sent', (response) => {
        // Show single check mark (sent)
        markAsSent(response.messageId);
      });
    });
    return socket;
  })();

  const messageId = await eventually('markAsSent', () => seen.sent[0]);
  await eventually('addMessageToChat', () => seen.added.length === 1);
  assert.equal(seen.added[0].chatId, currentChatId);
  assert.equal(seen.added[0].message.messageId, messageId);
  assert.equal(seen.added[0].message.content, messageText);
  await eventually('✓✓ at the sender', () => seen.statuses.some((s) => s.messageId === messageId && s.status === 'delivered'));
  assert.equal(await statusOf(ta, currentChatId, messageId, b), 'delivered', 'message:delivered without an ack callback marks it');
  recipient.close();
  sender.close();
});

test('mixed clients: a Socket.IO sender and a /ws recipient, and back', async () => {
  const [a, b] = [user('alice'), user('bob')];
  const [ta, tb] = await Promise.all([token(a), token(b)]);
  const chatId = await createChat(ta, 'direct', [b]);
  const alice = await connect(ta).ready();
  const sent = await alice.request('message:send', { chatId, content: 'from socket.io', messageType: 'text' });

  const bob = connectWs(tb);
  await bob.open();
  const [atBob] = await bob.waitFor('message:receive');
  assert.equal(atBob.messageId, sent.messageId);
  assert.equal(atBob.content, 'from socket.io');
  const [status] = await alice.waitFor('message:status', 1, (s) => s.messageId === sent.messageId && s.status === 'delivered');
  assert.equal(status.userId, b, 'the /ws ack reaches the Socket.IO sender as ✓✓');

  const reply = await bob.request('message:send', { chatId, content: 'from /ws', messageType: 'text' });
  assert.equal(reply.event, 'ack', JSON.stringify(reply));
  const [atAlice] = await alice.waitFor('message:receive');
  assert.equal(atAlice.content, 'from /ws');
  assert.equal(atAlice.seq, 2);
  await bob.waitFor('message:status');

  // Reads go both ways too: Alice reads Bob's message, Bob sees it.
  assert.deepEqual(await alice.request('message:read', { chatId, upToSeq: 2 }), { updated: 1 });
  const statuses = await bob.waitFor('message:status', 2);
  assert.equal(statuses.at(-1).status, 'read');
  alice.close();
  bob.close();
});

test('typing indicators: a Socket.IO typer, Socket.IO and /ws members, never the typer', async () => {
  const [a, b, c, m] = [user('alice'), user('bob'), user('carol'), user('mallory')];
  const [ta, tb, tc, tm] = await Promise.all([token(a), token(b), token(c), token(m)]);
  const chatId = await createChat(ta, 'group', [b, c]);
  const alice = await connect(ta).ready();
  const bob = await connect(tb).ready();
  const carol = connectWs(tc);
  await carol.open();
  // Each connection is recorded (and so reachable) once its catch-up is done.
  await Promise.all([alice.waitFor('sync:done'), bob.waitFor('sync:done'), carol.waitFor('sync:done')]);

  assert.deepEqual(await alice.request('typing:start', { chatId }), {});
  const [atBob] = await bob.waitFor('typing');
  assert.deepEqual(atBob, { chatId, userId: a, typing: true, expiresInMs: 6000 });
  const [atCarol] = await carol.waitFor('typing');
  assert.deepEqual(atCarol, { chatId, userId: a, typing: true, expiresInMs: 6000 });
  alice.emit('typing:stop', { chatId }); // no callback: no reply on success
  const stops = await bob.waitFor('typing', 2);
  assert.deepEqual(stops[1], { chatId, userId: a, typing: false, expiresInMs: 0 });

  // Bob types: Alice gets his, and never saw her own before it.
  assert.deepEqual(await bob.request('typing:start', { chatId }), {});
  const [atAlice] = await alice.waitFor('typing');
  assert.equal(atAlice.userId, b);
  assert.deepEqual(alice.all('typing').map((t) => t.userId), [b]);
  assert.equal(alice.all('error').length, 0);

  const stranger = await connect(tm).ready();
  assert.equal((await stranger.request('typing:start', { chatId })).error.code, 'not_member');
  assert.equal((await alice.request('typing:start', {})).error.code, 'invalid_payload');
  assert.equal((await alice.request('typing:stop', { chatId: 'nope' })).error.code, 'invalid_payload');
  for (const socket of [alice, bob, stranger]) socket.close();
  carol.close();
});

test('edits, deletes, reactions and replies: ack callbacks, the other user\'s events in order, error codes', async () => {
  const [a, b, m] = [user('alice'), user('bob'), user('mallory')];
  const [ta, tb, tm] = await Promise.all([token(a), token(b), token(m)]);
  const chatId = await createChat(ta, 'direct', [b]);
  const alice = await connect(ta).ready();
  const bob = await connect(tb).ready();
  await Promise.all([alice.waitFor('sync:done'), bob.waitFor('sync:done')]);
  /// (event, seq) of the log entries a connection has been sent, in arrival order.
  const entries = (socket) => socket.events.filter((e) => ENTRY_EVENTS.includes(e.event)).map((e) => [e.event, e.data.seq]);
  const code = async (socket, event, data) => (await socket.request(event, data)).error?.code;

  const sent = await alice.request('message:send', { chatId, content: 'Lunch at 12:30?', messageType: 'text' });
  const { messageId } = sent;
  assert.equal((await bob.waitFor('message:receive'))[0].messageId, messageId);

  // A reply: Alice's copy carries a quote of what it answers.
  const reply = await bob.request('message:send', { chatId, content: '13:00 suits me better', messageType: 'text', replyTo: messageId });
  assert.equal(reply.error, undefined, JSON.stringify(reply.error));
  const [answer] = await alice.waitFor('message:receive');
  assert.equal(answer.messageId, reply.messageId);
  assert.deepEqual(answer.replyTo, { messageId, senderId: a, quote: 'Lunch at 12:30?' });

  // An edit: the ack callback names the edit's own entry; Bob gets message:edited.
  const edit = await alice.request('message:edit', { messageId, content: 'Lunch at 13:00?' });
  assert.deepEqual({ ...edit, entryId: typeof edit.entryId }, { messageId, chatId, changed: true, entryId: 'string', seq: 3, at: edit.at });
  const [edited] = await bob.waitFor('message:edited');
  assert.deepEqual(edited, { messageId, chatId, senderId: a, content: 'Lunch at 13:00?', editedAt: edit.at, seq: 3 });

  // Reactions: one per user and emoji, so a repeat changes nothing and writes nothing.
  const react = await bob.request('message:react', { messageId, emoji: '👍' });
  assert.deepEqual([react.changed, react.seq], [true, 4]);
  const again = await bob.request('message:react', { messageId, emoji: '👍' });
  assert.deepEqual({ ...again, at: typeof again.at }, { messageId, chatId, changed: false, seq: 4, at: 'string' });
  const [added] = await alice.waitFor('message:reaction');
  assert.deepEqual(added, { messageId, chatId, userId: b, emoji: '👍', added: true, at: react.at, seq: 4 });
  assert.equal((await bob.request('message:unreact', { messageId, emoji: '👍' })).seq, 5);
  const [, removed] = await alice.waitFor('message:reaction', 2);
  assert.deepEqual([removed.userId, removed.emoji, removed.added, removed.seq], [b, '👍', false, 5]);

  // Bad input: a code each, and the connection stays.
  assert.equal(await code(bob, 'message:edit', { messageId, content: 'mine now' }), 'not_sender');
  assert.equal(await code(bob, 'message:delete', { messageId }), 'not_sender');
  assert.equal(await code(alice, 'message:edit', { messageId: randomUUID(), content: 'x' }), 'not_found');
  assert.equal(await code(alice, 'message:edit', { messageId, content: '   ' }), 'content_empty');
  assert.equal(await code(alice, 'message:edit', { messageId: 'nope', content: 'x' }), 'invalid_payload');
  assert.equal(await code(bob, 'message:react', { messageId, emoji: 'two words' }), 'invalid_payload');
  assert.equal(await code(bob, 'message:react', { messageId, emoji: '🙂'.repeat(9) }), 'content_too_large');
  assert.equal(await code(bob, 'message:send', { chatId, content: 're', replyTo: randomUUID() }), 'not_found');
  const stranger = await connect(tm).ready();
  assert.equal(await code(stranger, 'message:react', { messageId, emoji: '👀' }), 'not_member');
  stranger.close();

  // Delete for everyone: Bob gets message:deleted; nothing may change the message after it.
  const deleted = await alice.request('message:delete', { messageId });
  assert.deepEqual([deleted.changed, deleted.seq], [true, 6]);
  const [gone] = await bob.waitFor('message:deleted');
  assert.deepEqual(gone, { messageId, chatId, senderId: a, deletedAt: deleted.at, seq: 6 });
  assert.equal(await code(bob, 'message:react', { messageId, emoji: '👍' }), 'already_deleted');
  assert.equal(await code(alice, 'message:edit', { messageId, content: 'too late' }), 'already_deleted');
  // Without a callback, the error comes as an `error` event.
  alice.emit('message:delete', { messageId });
  assert.equal((await alice.waitFor('error'))[0].code, 'already_deleted');

  // Delete for me: no entry, nobody told; gone from Alice's history only.
  const hidden = await alice.request('message:delete', { messageId: reply.messageId, forMe: true });
  assert.deepEqual({ ...hidden, at: typeof hidden.at }, { messageId: reply.messageId, chatId, changed: true, at: 'string' });

  // Each saw the other's entries once, in seq order, and never its own.
  await Promise.all([alice.request('ping'), bob.request('ping')]); // barriers: all sent before them has arrived
  assert.deepEqual(entries(bob), [['message:receive', 1], ['message:edited', 3], ['message:deleted', 6]]);
  assert.deepEqual(entries(alice), [['message:receive', 2], ['message:reaction', 4], ['message:reaction', 5]]);

  const history = async (auth) => (await rest(auth, 'GET', `/chats/${chatId}/messages`)).body;
  const [bobsReply, bobsOriginal] = await history(tb);
  assert.deepEqual([bobsOriginal.content, typeof bobsOriginal.deletedAt, bobsOriginal.reactions], ['', 'string', []]);
  assert.deepEqual(bobsReply.replyTo, { messageId, senderId: a, quote: '', deleted: true });
  assert.deepEqual((await history(ta)).map((h) => h.messageId), [messageId]);

  // The callbacks acknowledged them: once Bob's position is past the delete, a reconnect sends nothing again.
  await eventually('bob delivered up to seq 6', async () => {
    const { body } = await rest(tb, 'GET', '/sync');
    return body.receipts.some((r) => r.chatId === chatId && r.userId === b && r.deliveredSeq === 6);
  });
  alice.close();
  bob.close();
  const bobAgain = await connect(tb).ready();
  assert.equal((await bobAgain.waitFor('sync:done'))[0].count, 0);
  await bobAgain.request('ping');
  assert.deepEqual(entries(bobAgain), []);
  bobAgain.close();
});

test('auth: a bad or missing token is refused at connect with the reason', async () => {
  const forged = io(URL, { auth: { token: 'not.a.jwt' }, reconnection: false, forceNew: true, transports: ['websocket'] });
  const refused = await new Promise((resolve) => forged.once('connect_error', resolve));
  assert.match(refused.message, /^unauthorized: /);
  forged.close();

  const anonymous = io(URL, { reconnection: false, forceNew: true });
  const missing = await new Promise((resolve) => anonymous.once('connect_error', resolve));
  assert.match(missing.message, /^unauthorized: missing token/);
  anonymous.close();

  // Old clients pass the token in the query; long polling works as well as WebSocket.
  const viaQuery = await connect(await token(user('query')), { options: { auth: {}, query: { token: await token(user('q2')) }, transports: ['polling'] } }).ready();
  assert.deepEqual(await viaQuery.request('ping'), { pong: true });
  viaQuery.close();
});

test('errors: bad input gets a typed error, with or without an ack callback', async () => {
  const socket = await connect(await token(user('errors'))).ready();
  const bad = await socket.request('message:send', { chatId: 'nope', content: 'x' });
  assert.equal(bad.error.code, 'invalid_payload');
  const empty = await socket.request('message:send', { chatId: randomUUID(), content: '   ' });
  assert.equal(empty.error.code, 'content_empty');
  const stranger = await socket.request('message:send', { chatId: randomUUID(), content: 'hi' });
  assert.equal(stranger.error.code, 'not_member');
  assert.equal((await socket.request('no:such', {})).error.code, 'unknown_event');
  assert.equal((await socket.request('message:read', { messageId: randomUUID() })).error.code, 'not_found');
  const big = await socket.request('message:send', { chatId: randomUUID(), content: 'x'.repeat(200 * 1024) });
  assert.equal(big.error.code, 'payload_too_large');

  // Without a callback the error comes back as an `error` event.
  socket.emit('message:send', { content: 42 });
  const [error] = await socket.waitFor('error');
  assert.equal(error.code, 'invalid_payload');
  assert.ok(socket.connected, 'bad input does not cost the connection');
  socket.close();
});

test('the per-user rate limit applies to Socket.IO events', { skip: !process.env.COURIER_LIMITED_URL }, async () => {
  const base = process.env.COURIER_LIMITED_URL;
  const socket = await connect(await token(user('flood'), base), { base }).ready();
  const replies = await Promise.all(Array.from({ length: 20 }, () => socket.request('ping')));
  const limited = replies.filter((r) => r.error?.code === 'rate_limited').length;
  assert.ok(limited > 0 && limited < 20, `${limited} of 20 pings limited`);
  socket.close();
});

test('a frontend on another origin may connect when CORS_ALLOW_ORIGINS names it', async () => {
  // socket.io-client in a browser starts with long-polling: the handshake must carry CORS headers.
  const allowed = await fetch(`${URL}/socket.io/?EIO=4&transport=polling`, { headers: { origin: 'http://app.example.com' } });
  assert.equal(allowed.status, 200);
  assert.equal(allowed.headers.get('access-control-allow-origin'), 'http://app.example.com');
  const preflight = await fetch(`${URL}/api/chats`, {
    method: 'OPTIONS',
    headers: { origin: 'http://app.example.com', 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization,content-type' },
  });
  assert.equal(preflight.headers.get('access-control-allow-origin'), 'http://app.example.com');
  assert.match(preflight.headers.get('access-control-allow-headers') ?? '', /authorization/);
  const other = await fetch(`${URL}/socket.io/?EIO=4&transport=polling`, { headers: { origin: 'http://elsewhere.example.com' } });
  assert.equal(other.headers.get('access-control-allow-origin'), null);
});
