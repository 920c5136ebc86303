// The client's own logic without a server: the backoff schedule, dedupe and
// cursors, sync entries as events, and the reconnect / resend / stop rules
// driven through a scripted WebSocket. The suites against a real Courier are
// client.test.mjs and restart.test.mjs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ChatLog, CourierClient, backoffDelay, entryEvent } from '../dist/index.js';

test('backoff: full jitter under an exponential cap, capped at maxMs', () => {
  const options = { initialMs: 100, maxMs: 1000, factor: 2 };
  assert.equal(backoffDelay(0, options, () => 0), 0);
  assert.equal(backoffDelay(0, options, () => 0.999999), 99);
  assert.equal(backoffDelay(2, options, () => 0.5), 200); // cap 400
  assert.equal(backoffDelay(10, options, () => 0.999999), 999); // cap 1000, not 102 400
  for (let attempt = 0; attempt < 20; attempt++) {
    const delay = backoffDelay(attempt, options);
    assert.ok(delay >= 0 && delay < Math.min(1000, 100 * 2 ** attempt), `attempt ${attempt}: ${delay}`);
  }
});

test('chat log: an entry is new once; per chat the highest seq seen, and the seq up to which all is had', () => {
  const log = new ChatLog(4, { stored: 5 });
  assert.equal(log.record('a', 3), true);
  assert.equal(log.record('a', 3), false);
  assert.equal(log.record('a', 1), true);
  assert.equal(log.record('stored', 4), false, 'below the cursor the application gave');
  assert.equal(log.record('stored', 7), true);
  assert.deepEqual(log.lastSeqs(), { stored: 7, a: 3 });
  // Nothing says what lies below a's first entry: no cursor to catch up from.
  assert.deepEqual(log.cursors(), { stored: 5 });
  // stored:6 fills the gap: the cursor moves over 6 and the 7 after it.
  assert.equal(log.record('stored', 6), true);
  assert.deepEqual(log.cursors(), { stored: 7 });
  // A sync page settles a up to 2: 3 follows without a gap.
  log.settle('a', 2);
  assert.deepEqual(log.cursors(), { stored: 7, a: 3 });
  assert.equal(log.cursorParam(), 'stored:7,a:3');
  log.settle('a', 1);
  assert.equal(log.cursors().a, 3, 'never down');
  // The window keeps the 4 latest; older ones below the cursor still count as had.
  log.record('b', 1);
  log.record('b', 2);
  assert.equal(log.has('a', 1), true);
  assert.equal(log.record('a', 1), false);
});

test('sync entries become the events a connection carries', () => {
  const base = { chatId: 'c', senderId: 'alice', sender: { name: 'Alice', profilePicture: null }, messageType: 'text', clientMsgId: null, createdAt: 't1' };
  assert.deepEqual(entryEvent({ ...base, messageId: 'm', seq: 1, kind: 'message', content: 'hi', editedAt: 't2', deletedAt: 't3' }), {
    event: 'message:receive',
    data: { messageId: 'm', chatId: 'c', senderId: 'alice', content: 'hi', messageType: 'text', createdAt: 't1', seq: 1, sender: base.sender, editedAt: 't2', deleted: true },
  });
  assert.deepEqual(entryEvent({ ...base, messageId: 'e', seq: 2, kind: 'edit', content: 'hello', targetId: 'm' }), {
    event: 'message:edited',
    data: { messageId: 'm', chatId: 'c', senderId: 'alice', content: 'hello', editedAt: 't1', seq: 2 },
  });
  assert.deepEqual(entryEvent({ ...base, messageId: 'd', seq: 3, kind: 'delete', content: '', targetId: 'm' }).data, {
    messageId: 'm', chatId: 'c', senderId: 'alice', deletedAt: 't1', seq: 3,
  });
  assert.deepEqual(entryEvent({ ...base, messageId: 'r', seq: 4, kind: 'unreact', content: '👍', targetId: 'm' }), {
    event: 'message:reaction',
    data: { messageId: 'm', chatId: 'c', userId: 'alice', emoji: '👍', added: false, at: 't1', seq: 4 },
  });
  assert.equal(entryEvent({ ...base, messageId: 'x', seq: 5, kind: 'poll', content: '' }), null);
});

/// A scripted server: every socket the client opens is kept; the test plays the server's part.
function scriptedSockets() {
  const sockets = [];
  class ScriptedSocket {
    constructor(url) {
      this.url = url;
      this.sent = [];
      this.closed = null;
      sockets.push(this);
    }
    send(text) {
      this.sent.push(JSON.parse(text));
    }
    close(code, reason) {
      this.closed = { code, reason };
    }
    open() {
      this.onopen?.({});
    }
    frame(frame) {
      this.onmessage?.({ data: JSON.stringify(frame) });
    }
    ready() {
      this.open();
      this.frame({ event: 'session:ready', id: 1, data: { userId: 'alice', connectionId: 'c1', nodeId: 'n1' } });
    }
    end(code, reason = '') {
      this.onclose?.({ code, reason });
    }
  }
  return { sockets, ScriptedSocket };
}

/// Resolves once `check()` holds (the client works on timers and promises).
async function until(check, what) {
  for (let i = 0; i < 200; i++) {
    if (check()) return;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  throw new Error(`never: ${what}`);
}

test('an unanswered send goes again after a reconnect with the same clientMsgId, before newer requests', async () => {
  const { sockets, ScriptedSocket } = scriptedSockets();
  const client = new CourierClient({ url: 'http://courier.test', token: 't', deviceId: 'phone', WebSocket: ScriptedSocket, random: () => 0, heartbeatMs: 0 });
  const disconnects = [];
  client.on('disconnected', (info) => disconnects.push(info));
  const ready = client.connect();
  await until(() => sockets.length === 1, 'a socket');
  assert.equal(sockets[0].url, 'ws://courier.test/ws?token=t&deviceId=phone');
  sockets[0].ready();
  assert.equal((await ready).nodeId, 'n1');
  assert.deepEqual(sockets[0].sent, [{ event: 'ack', id: 1 }]);

  const first = client.send({ chatId: 'chat', content: 'one' });
  const [frame] = sockets[0].sent.slice(1);
  assert.equal(frame.event, 'message:send');
  const clientMsgId = frame.data.clientMsgId;
  assert.match(clientMsgId, /^[0-9a-f-]{36}$/);

  sockets[0].end(1012, 'server restarting');
  assert.deepEqual(disconnects, [{ code: 1012, reason: 'server restarting', reconnectInMs: 0 }]);
  const second = client.send({ chatId: 'chat', content: 'two' }); // while away: waits
  await until(() => sockets.length === 2, 'a second socket');
  sockets[1].ready();
  const resent = sockets[1].sent.filter((f) => f.event === 'message:send');
  assert.deepEqual(resent.map((f) => f.data.content), ['one', 'two']);
  assert.equal(resent[0].data.clientMsgId, clientMsgId);
  sockets[1].frame({ event: 'ack', id: resent[0].id, data: { messageId: 'm1', chatId: 'chat', seq: 1, createdAt: 't', clientMsgId } });
  sockets[1].frame({ event: 'error', id: resent[1].id, error: { code: 'not_member', message: 'no' } });
  assert.equal((await first).messageId, 'm1');
  await assert.rejects(second, { name: 'CourierError', code: 'not_member' });
  assert.equal(client.pending, 0);
  client.close();
});

test('entries are acknowledged after the handlers, repeats too, and emitted once', async () => {
  const { sockets, ScriptedSocket } = scriptedSockets();
  const client = new CourierClient({ url: 'http://courier.test', token: 't', WebSocket: ScriptedSocket, heartbeatMs: 0 });
  const seen = [];
  client.on('message:receive', (message, meta) => {
    seen.push([message.messageId, meta.source, sockets[0].sent.length]);
  });
  const ready = client.connect();
  await until(() => sockets.length === 1, 'a socket');
  sockets[0].ready();
  await ready;
  const message = { messageId: 'm1', chatId: 'c', senderId: 'bob', content: 'hi', messageType: 'text', createdAt: 't', seq: 4, sender: { name: null, profilePicture: null } };
  sockets[0].frame({ event: 'message:receive', id: 2, data: message });
  sockets[0].frame({ event: 'message:receive', id: 3, data: message });
  assert.deepEqual(seen, [['m1', 'live', 1]], 'once, and before its ack was written');
  assert.deepEqual(sockets[0].sent.slice(1), [{ event: 'ack', id: 2 }, { event: 'ack', id: 3 }]);
  assert.deepEqual(client.lastSeqs(), { c: 4 });
  assert.deepEqual(client.cursors(), {}, 'nothing says what came before it');
  client.close();
});

test('a revoked device (4009) and a refused token stop the client; nothing is tried again', async () => {
  const { sockets, ScriptedSocket } = scriptedSockets();
  const revoked = new CourierClient({ url: 'http://courier.test', token: 't', WebSocket: ScriptedSocket, random: () => 0, heartbeatMs: 0 });
  const ready = revoked.connect();
  await until(() => sockets.length === 1, 'a socket');
  sockets[0].ready();
  await ready;
  const waiting = revoked.send({ chatId: 'c', content: 'x' });
  const closed = new Promise((resolve) => revoked.on('closed', resolve));
  sockets[0].end(4009, 'device revoked');
  assert.equal((await closed).code, 'device_revoked');
  await assert.rejects(waiting, { code: 'device_revoked' });

  // A handshake refused (no open): a REST call with the token says why.
  const asked = [];
  const fetch401 = async (url, init) => {
    asked.push([url, init.headers.authorization]);
    return new Response(JSON.stringify({ error: { code: 'unauthorized', message: 'token expired' } }), { status: 401 });
  };
  const refused = new CourierClient({ url: 'https://courier.test/', token: 'old', WebSocket: ScriptedSocket, fetch: fetch401, random: () => 0 });
  const refusal = refused.connect();
  await until(() => sockets.length === 2, 'a socket');
  assert.match(sockets[1].url, /^wss:\/\/courier\.test\/ws\?/);
  sockets[1].end(1006, '');
  await assert.rejects(refusal, { code: 'unauthorized', message: 'token expired' });
  assert.deepEqual(asked, [['https://courier.test/api/devices', 'Bearer old']]);
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal(sockets.length, 2, 'no retry after a refusal');
  assert.equal(refused.state, 'closed');
});

test('a silent connection is dropped when a ping gets no answer, and replaced', async () => {
  const { sockets, ScriptedSocket } = scriptedSockets();
  const client = new CourierClient({ url: 'http://courier.test', token: 't', WebSocket: ScriptedSocket, random: () => 0, heartbeatMs: 10, heartbeatTimeoutMs: 20 });
  const ready = client.connect();
  await until(() => sockets.length === 1, 'a socket');
  sockets[0].ready();
  await ready;
  await until(() => sockets[0].sent.some((f) => f.event === 'ping'), 'a ping');
  await until(() => sockets.length === 2, 'a new socket after the ping went unanswered');
  assert.deepEqual(sockets[0].closed, { code: 1000, reason: 'no answer to a ping' });
  client.close();
});

test('a refused token from a token function gets one more try with a fresh one', async () => {
  const { sockets, ScriptedSocket } = scriptedSockets();
  const tokens = ['expired', 'fresh'];
  const refusedToken = async (url, init) =>
    new Response(JSON.stringify({ error: { code: 'unauthorized', message: 'token expired' } }), { status: init.headers.authorization === 'Bearer expired' ? 401 : 200 });
  const client = new CourierClient({ url: 'http://courier.test', token: () => tokens.shift() ?? 'none', WebSocket: ScriptedSocket, fetch: refusedToken, random: () => 0, heartbeatMs: 0 });
  const ready = client.connect();
  await until(() => sockets.length === 1, 'a socket');
  assert.match(sockets[0].url, /token=expired/);
  sockets[0].end(1006, '');
  await until(() => sockets.length === 2, 'a second try');
  assert.match(sockets[1].url, /token=fresh/);
  sockets[1].ready();
  assert.equal((await ready).userId, 'alice');
  client.close();
});
