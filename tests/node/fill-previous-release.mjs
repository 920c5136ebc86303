// Fills a database through a running Courier api + worker over Socket.IO and
// REST, leaving messages in every delivery state: sent (undelivered),
// delivered and read, in a direct chat and in a group. Run by
// scripts/make-migration-fixture against the release before migration 0003;
// tests/tests/migration.rs checks the upgrade against what it leaves.
//
// Environment: COURIER_URL (the api), ALICE_TOKEN, BOB_TOKEN (JWTs the api
// accepts). Carol never connects. Every step waits for the event that shows it
// happened (with a deadline), never for a fixed time. On success it prints the
// chats and the status each recipient was left with, as JSON.
//
// The chats end up as (recipient: status per seq):
//   direct alice–bob, seqs 1–11
//     1–5  alice→bob   bob: 1 read, 2 delivered, 3 sent (received, never acked),
//                           4 delivered, 5 read (read by id, out of order)
//     6–7  bob→alice   alice: 6 read, 7 delivered
//     8–9  alice→bob   bob: sent (bob offline)
//     10–11 bob→alice  alice: sent (alice offline; sent over REST)
//   group alice/bob/carol, seqs 1–7 (carol: sent for all of them)
//     1–3  alice       bob: 1 read, 2 delivered, 3 sent (received, never acked)
//     4–5  bob         alice: 4 read, 5 delivered
//     6    alice       bob: sent (offline)
//     7    bob         alice: sent (offline; sent over REST)
import { io } from 'socket.io-client';

const URL = process.env.COURIER_URL ?? 'http://127.0.0.1:8080';
const DEADLINE_MS = Number(process.env.COURIER_DEADLINE_MS ?? 20000);
const TOKENS = { alice: process.env.ALICE_TOKEN, bob: process.env.BOB_TOKEN };
for (const [user, token] of Object.entries(TOKENS)) {
  if (!token) throw new Error(`${user.toUpperCase()}_TOKEN is not set`);
}

function check(condition, what) {
  if (!condition) throw new Error(`unexpected: ${what}`);
}

async function rest(user, method, path, body) {
  const res = await fetch(`${URL}/api${path}`, {
    method,
    headers: { authorization: `Bearer ${TOKENS[user]}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  const parsed = text ? JSON.parse(text) : null;
  if (!res.ok) throw new Error(`${method} ${path} as ${user}: ${res.status} ${text}`);
  return parsed;
}

/// A Socket.IO client that records every event. `message:status` is always
/// acknowledged; `message:receive` only when `autoAck`, else its ack callback
/// is kept (by messageId) for the script to call, or not.
function connect(user, { autoAck }) {
  const socket = io(URL, { auth: { token: TOKENS[user] }, transports: ['websocket'], reconnection: false, forceNew: true });
  const events = [];
  const acks = new Map();
  const listeners = new Set();
  socket.onAny((event, ...args) => {
    const reply = typeof args.at(-1) === 'function' ? args.pop() : null;
    if (event === 'message:receive' && reply) {
      if (autoAck) reply({ received: true });
      else acks.set(args[0].messageId, reply);
    }
    if (event === 'message:status' && reply) reply();
    events.push({ event, data: args[0] });
    for (const listener of listeners) listener();
  });
  socket.on('disconnect', (reason) => {
    if (!socket.closing) console.error(`${user}: disconnected unexpectedly (${reason})`);
  });
  return {
    user,
    socket,
    acks,
    ready: () =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${user}: connect timed out`)), DEADLINE_MS);
        socket.once('connect', () => { clearTimeout(timer); resolve(); });
        socket.once('connect_error', (error) => { clearTimeout(timer); reject(error); });
      }),
    /// Waits until `count` events `name` matching `where` arrived; returns their data.
    waitFor: (name, count, where = () => true) =>
      new Promise((resolve, reject) => {
        const attempt = () => {
          const found = events.filter((e) => e.event === name && where(e.data)).map((e) => e.data);
          if (found.length < count) return false;
          listeners.delete(attempt);
          clearTimeout(timer);
          resolve(found);
          return true;
        };
        const timer = setTimeout(() => {
          listeners.delete(attempt);
          reject(new Error(`${user}: timed out waiting for ${count} × ${name}`));
        }, DEADLINE_MS);
        listeners.add(attempt);
        attempt();
      }),
    /// An event with an ack callback; fails on an `{error}` reply.
    request: async (event, data) => {
      const reply = await socket.timeout(DEADLINE_MS).emitWithAck(event, data);
      if (reply?.error) throw new Error(`${user} ${event}: ${JSON.stringify(reply.error)}`);
      return reply;
    },
    close: () => {
      socket.closing = true;
      socket.close();
    },
  };
}

async function send(client, chatId, content, wantSeq) {
  const reply = await client.request('message:send', { chatId, content, messageType: 'text', clientMsgId: `fixture-${content.replaceAll(' ', '-')}` });
  check(reply.seq === wantSeq, `${content}: seq ${reply.seq}, expected ${wantSeq}`);
  return reply.messageId;
}

async function sendRest(user, chatId, content, wantSeq) {
  const reply = await rest(user, 'POST', `/chats/${chatId}/messages`, { content, messageType: 'text', clientMsgId: `fixture-${content.replaceAll(' ', '-')}` });
  check(reply.seq === wantSeq, `${content}: seq ${reply.seq}, expected ${wantSeq}`);
  return reply.messageId;
}

/// Waits until `client` (a sender) was told `status` for each of `ids` by `by`.
async function statusesSeen(client, by, status, ids) {
  const wanted = new Set(ids);
  await client.waitFor('message:status', wanted.size, (s) => s.userId === by && s.status === status && wanted.has(s.messageId));
}

// Chats (created over REST, as the web page does).
const direct = (await rest('alice', 'POST', '/chats', { type: 'direct', members: ['bob'] })).id;
const group = (await rest('alice', 'POST', '/chats', { type: 'group', members: ['bob', 'carol'], name: 'trio' })).id;
const d = {}; // seq → messageId, direct chat
const g = {}; // seq → messageId, group

// 1. Alice online, bob (and carol) offline.
const alice = connect('alice', { autoAck: true });
await alice.ready();
for (let i = 1; i <= 5; i++) d[i] = await send(alice, direct, `alice to bob ${i}`, i);
for (let i = 1; i <= 3; i++) g[i] = await send(alice, group, `alice to group ${i}`, i);

// 2. Bob connects and is drained everything; he acknowledges some, reads some.
const bob = connect('bob', { autoAck: false });
await bob.ready();
const drained = await bob.waitFor('message:receive', 8);
check(
  JSON.stringify(drained.map((m) => [m.chatId === direct ? 'd' : 'g', m.seq]).sort()) ===
    JSON.stringify([['d', 1], ['d', 2], ['d', 3], ['d', 4], ['d', 5], ['g', 1], ['g', 2], ['g', 3]]),
  `bob's drain: ${JSON.stringify(drained.map((m) => [m.chatId, m.seq]))}`,
);
const acked = [d[1], d[2], d[4], d[5], g[1], g[2]]; // not d[3], g[3]: received, never acknowledged
for (const id of acked) bob.acks.get(id)({ received: true });
await statusesSeen(alice, 'bob', 'delivered', acked);

check((await bob.request('message:read', { chatId: direct, upToSeq: 1 })).updated === 1, 'read d1');
check((await bob.request('message:read', { messageId: d[5] })).updated === 1, 'read d5');
check((await bob.request('message:read', { chatId: group, upToSeq: 1 })).updated === 1, 'read g1');
await statusesSeen(alice, 'bob', 'read', [d[1], d[5], g[1]]);

// Bob answers while alice is online: she receives and acknowledges, and reads some.
d[6] = await send(bob, direct, 'bob to alice 1', 6);
d[7] = await send(bob, direct, 'bob to alice 2', 7);
g[4] = await send(bob, group, 'bob to group 1', 4);
g[5] = await send(bob, group, 'bob to group 2', 5);
await alice.waitFor('message:receive', 4, (m) => m.senderId === 'bob');
await statusesSeen(bob, 'alice', 'delivered', [d[6], d[7], g[4], g[5]]);
check((await alice.request('message:read', { chatId: direct, upToSeq: 6 })).updated === 1, 'alice reads d6');
check((await alice.request('message:read', { chatId: group, upToSeq: 4 })).updated === 1, 'alice reads g4');
await statusesSeen(bob, 'alice', 'read', [d[6], g[4]]);

bob.close();
await alice.waitFor('user:offline', 1, (u) => u.userId === 'bob');

// 3. Bob offline: alice sends more (they stay sent), then leaves too.
d[8] = await send(alice, direct, 'alice to bob 6', 8);
d[9] = await send(alice, direct, 'alice to bob 7', 9);
g[6] = await send(alice, group, 'alice to group 4', 6);
alice.close();

// 4. Both offline: bob sends over REST (it stays sent for alice and carol).
d[10] = await sendRest('bob', direct, 'bob to alice 3', 10);
d[11] = await sendRest('bob', direct, 'bob to alice 4', 11);
g[7] = await sendRest('bob', group, 'bob to group 3', 7);

console.log(JSON.stringify({ direct, group, directMessages: d, groupMessages: g }));
process.exit(0);
