// The client against a real Courier (an api with --dev-tokens and a worker,
// started by tests/tests/jsclient.rs): two users talking, statuses and
// receipts, repeats dropped, catch-up after a reconnect (the server's drain,
// and GET /api/sync by cursor), two devices of one user, edits, deletes,
// reactions and typing, and the refusals that stop it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CourierError } from '../dist/index.js';
import { TAG, client, createChat, eventually, rest, statusOf } from './helpers.mjs';

/// Connected clients for fresh users `names` (suffixed per test), and a direct chat of the first two.
async function pair(label, options = {}) {
  const [a, b] = [`${label}-a${TAG}`, `${label}-b${TAG}`];
  const alice = await client(a, options);
  const bob = await client(b, options);
  await Promise.all([alice.connect(), bob.connect()]);
  const chatId = await createChat(alice.auth, 'direct', [b]);
  return { alice, bob, chatId, ids: [a, b] };
}

test('two clients: a message goes across, acknowledged, and its sender sees delivered, then read', async () => {
  const { alice, bob, chatId, ids } = await pair('talk');
  const sent = await alice.send({ chatId, content: 'hello Bob' });
  assert.equal(sent.chatId, chatId);
  assert.ok(sent.seq >= 1 && sent.clientMsgId);

  const [received] = await bob.waitFor('message:receive', 1);
  assert.equal(received.messageId, sent.messageId);
  assert.equal(received.content, 'hello Bob');
  assert.equal(received.senderId, ids[0]);
  assert.equal(bob.events.find((e) => e.event === 'message:receive').meta.source, 'live');
  // Bob's client acknowledged it: ✓✓ for Alice, live and in her history.
  await alice.waitFor('message:status', 1, (s) => s.messageId === sent.messageId && s.status === 'delivered');
  assert.equal(await statusOf(alice.auth, chatId, sent.messageId, ids[1]), 'delivered');

  const { updated } = await bob.read({ chatId, upToSeq: received.seq });
  assert.equal(updated, 1);
  await alice.waitFor('message:status', 1, (s) => s.messageId === sent.messageId && s.status === 'read');
  await alice.waitFor('receipt', 1, (r) => r.userId === ids[1] && r.readSeq >= received.seq);
  assert.deepEqual(bob.lastSeqs(), { [chatId]: received.seq });
  assert.equal(alice.all('error').length + bob.all('error').length, 0);
  alice.close();
  bob.close();
});

test('a frame that comes again (its ack was lost) is acknowledged but emitted once', async () => {
  const { alice, bob, chatId } = await pair('dedupe');
  // Bob's first connection drops inside the handler, before the ack goes out.
  let dropped = false;
  bob.on('message:receive', () => {
    if (!dropped) {
      dropped = true;
      bob.reconnect();
    }
  });
  const sent = await alice.send({ chatId, content: 'once only' });
  await bob.waitFor('session:ready', 2);
  // The server sends it again on the new connection; the client acknowledges it there.
  await eventually('the message twice on the wire', () => bob.frames.filter((f) => f.event === 'message:receive').length === 2);
  await alice.waitFor('message:status', 1, (s) => s.messageId === sent.messageId && s.status === 'delivered');
  assert.equal(bob.all('message:receive').length, 1);
  alice.close();
  bob.close();
});

test('after a reconnect the client catches up: what was sent meanwhile comes in order, once, then sync:done', async () => {
  const { alice, bob, chatId, ids } = await pair('catchup');
  const first = await alice.send({ chatId, content: 'before' });
  await bob.waitFor('message:receive', 1);
  bob.close();

  const texts = ['one', 'two', 'three', 'four', 'five'];
  for (const content of texts) await alice.send({ chatId, content });
  // The same device comes back (a new client, as after a page reload): the server drains what it lacks.
  const again = await client(ids[1], { token: bob.auth });
  const syncDone = again.waitFor('sync:done', 1);
  await again.connect();
  const [done] = await syncDone;
  assert.ok(done.count >= 1, `sync:done counted ${done.count}`);
  const received = again.all('message:receive');
  assert.deepEqual(received.map((m) => m.content), texts);
  assert.ok(received.every((m, i) => i === 0 || m.seq > received[i - 1].seq));
  assert.ok(received.every((m) => m.messageId !== first.messageId));

  // A new device that wants history reads it by cursor (GET /api/sync), emitted as the same events.
  const tablet = await client(ids[1], { token: bob.auth, deviceId: 'tablet', catchUp: 'sync' });
  const caughtUp = tablet.waitFor('catchup:done', 1);
  await tablet.connect();
  await caughtUp;
  // It is sent live only what no device of Bob's had when it first connected
  // (maybe some of the five, if their acks were not written yet); the rest,
  // 'before' at least, comes by sync. Each once; in seq order once sorted.
  const history = tablet.all('message:receive').sort((x, y) => x.seq - y.seq);
  assert.deepEqual(history.map((m) => m.content), ['before', ...texts]);
  assert.equal(tablet.events.find((e) => e.event === 'message:receive' && e.data.content === 'before').meta.source, 'sync');
  assert.equal(tablet.cursors()[chatId], received.at(-1).seq);
  // Catching up again finds nothing new.
  assert.equal(await tablet.catchUp(), 0);
  // And a client started from a store's cursors is not given what it has.
  const stored = await client(ids[1], { token: bob.auth, deviceId: 'desk', catchUp: 'sync', cursors: { [chatId]: received[2].seq } });
  const storedDone = stored.waitFor('catchup:done', 1);
  await stored.connect();
  assert.equal((await storedDone)[0].entries, 2);
  assert.deepEqual(stored.all('message:receive').map((m) => m.content), ['four', 'five']);
  for (const c of [alice, again, tablet, stored]) c.close();
});

test('two devices of one user: each gets the other\'s messages and entries, never its own', async () => {
  const [a, b] = [`devices-a${TAG}`, `devices-b${TAG}`];
  const alice = await client(a);
  const phone = await client(b, { deviceId: 'phone' });
  const laptop = await client(b, { token: phone.auth, deviceId: 'laptop' });
  await Promise.all([alice.connect(), phone.connect(), laptop.connect()]);
  const chatId = await createChat(alice.auth, 'direct', [b]);

  const lunch = await alice.send({ chatId, content: 'Lunch at 12:30?' });
  await phone.waitFor('message:receive', 1);
  await laptop.waitFor('message:receive', 1);

  // Bob answers from his phone, replying to it: the laptop gets the answer, the phone does not.
  const answer = await phone.send({ chatId, content: '13:00 suits me better', replyTo: lunch.messageId });
  const [onLaptop] = await laptop.waitFor('message:receive', 1, (m) => m.messageId === answer.messageId);
  assert.equal(onLaptop.senderId, b);
  assert.deepEqual(onLaptop.replyTo, { messageId: lunch.messageId, senderId: a, quote: 'Lunch at 12:30?' });
  await alice.waitFor('message:receive', 1, (m) => m.messageId === answer.messageId);

  // Alice edits; both devices get it. Bob reacts from the laptop: the phone and Alice get it.
  const edit = await alice.edit(lunch.messageId, 'Lunch at 13:00?');
  assert.equal(edit.changed, true);
  for (const device of [phone, laptop]) {
    const [edited] = await device.waitFor('message:edited', 1);
    assert.deepEqual([edited.messageId, edited.content, edited.seq], [lunch.messageId, 'Lunch at 13:00?', edit.seq]);
  }
  const reaction = await laptop.react(lunch.messageId, '👍');
  await phone.waitFor('message:reaction', 1, (r) => r.emoji === '👍' && r.added && r.seq === reaction.seq);
  await alice.waitFor('message:reaction', 1, (r) => r.userId === b);
  assert.equal((await laptop.react(lunch.messageId, '👍')).changed, false, 'the same reaction again changes nothing');
  await laptop.unreact(lunch.messageId, '👍');
  await phone.waitFor('message:reaction', 1, (r) => !r.added);

  // Typing reaches the other user's devices, not the typer's own.
  await phone.startTyping(chatId);
  const [typing] = await alice.waitFor('typing', 1, (t) => t.typing);
  assert.equal(typing.userId, b);
  await phone.stopTyping(chatId);
  await alice.waitFor('typing', 1, (t) => !t.typing);

  // Alice deletes her message for everyone: a tombstone on both devices.
  await alice.delete(lunch.messageId);
  for (const device of [phone, laptop]) await device.waitFor('message:deleted', 1, (d) => d.messageId === lunch.messageId);
  assert.equal(laptop.all('message:reaction').length, 0, 'its own reactions never come back to the laptop');
  assert.equal(phone.all('message:receive').filter((m) => m.messageId === answer.messageId).length, 0);
  // Every device has seen the chat up to its last entry.
  const last = phone.all('message:deleted')[0].seq;
  for (const device of [phone, laptop]) assert.equal(device.lastSeqs()[chatId], last);
  for (const c of [alice, phone, laptop]) c.close();
});

test('refusals come back as typed errors with the server\'s code; the connection stays', async () => {
  const { alice, bob, chatId } = await pair('errors');
  const sent = await alice.send({ chatId, content: 'mine' });
  await assert.rejects(bob.edit(sent.messageId, 'not yours'), (error) => error instanceof CourierError && error.code === 'not_sender');
  await assert.rejects(alice.send({ chatId, content: '   ' }), { code: 'content_empty' });
  await assert.rejects(alice.react(sent.messageId, 'two words'), { code: 'invalid_payload' });
  // A resend with the same clientMsgId is the same message.
  const again = await alice.send({ chatId, content: 'mine', clientMsgId: sent.clientMsgId });
  assert.equal(again.messageId, sent.messageId);
  assert.equal(alice.state, 'open');
  alice.close();
  bob.close();
  await assert.rejects(alice.send({ chatId, content: 'too late' }), { code: 'closed' });
});

test('a refused token and a revoked device stop the client instead of retrying', async () => {
  const user = `refused${TAG}`;
  const good = await client(user, { deviceId: 'old-phone' });
  const [header, payload] = good.auth.split('.');
  const forged = await client(user, { token: `${header}.${payload}.${'A'.repeat(43)}` });
  const closed = forged.waitFor('closed', 1);
  await assert.rejects(forged.connect(), (error) => error.code === 'unauthorized' && /signature/.test(error.message));
  await closed;
  assert.equal(forged.all('session:ready').length, 0);

  await good.connect();
  const revoked = good.waitFor('closed', 1);
  const { status } = await rest(good.auth, 'DELETE', '/devices/old-phone');
  assert.equal(status, 204);
  const [error] = await revoked;
  assert.equal(error.code, 'device_revoked');
  assert.equal(good.state, 'closed');
  assert.equal(good.all('disconnected').length, 0, 'no reconnect was scheduled');
});
