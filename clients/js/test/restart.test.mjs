// A server restart mid-conversation: the api process is killed (SIGKILL) or
// stopped (SIGTERM: close code 1012) while Alice sends, she goes on sending
// while it is away, and it comes back on the same address. Every message is
// stored once (unanswered sends went again with their clientMsgId), and Bob
// is shown each exactly once, in the order Alice sent them.
// tests/tests/jsclient.rs runs the api and answers COURIER_CONTROL:
// a line `kill-api`, `stop-api` or `start-api`, answered `ok` when done.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { TAG, client, createChat, rest } from './helpers.mjs';

const CONTROL = process.env.COURIER_CONTROL;

/// Asks the Rust test to act on the api process; resolves when it has.
function control(command) {
  if (!CONTROL) throw new Error('COURIER_CONTROL is not set (tests/tests/jsclient.rs sets it)');
  const [host, port] = CONTROL.split(':');
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(port), host, () => socket.write(`${command}\n`));
    let answer = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk) => {
      answer += chunk;
      if (answer.endsWith('\n')) {
        socket.end();
        answer.trim() === 'ok' ? resolve() : reject(new Error(`${command}: ${answer.trim()}`));
      }
    });
    socket.on('error', reject);
  });
}

/// Alice sends `texts` one after another without waiting for replies; returns the promises.
const sendAll = (alice, chatId, texts) => texts.map((content) => alice.send({ chatId, content }));
const range = (label, from, to) => Array.from({ length: to - from + 1 }, (_, i) => `${label} ${from + i}`);

for (const [how, command] of [['killed', 'kill-api'], ['stopped', 'stop-api']]) {
  test(`the api ${how} mid-conversation: nothing lost, nothing shown twice, in order`, async (t) => {
    const [a, b] = [`restart-${how}-a${TAG}`, `restart-${how}-b${TAG}`];
    const alice = await client(a);
    const bob = await client(b);
    // Closed however the case ends: their timers would keep node running.
    t.after(() => {
      alice.close();
      bob.close();
    });
    await Promise.all([alice.connect(), bob.connect()]);
    const chatId = await createChat(alice.auth, 'direct', [b]);

    const before = range('before', 1, 5);
    await Promise.all(sendAll(alice, chatId, before));
    await bob.waitFor('message:receive', before.length);

    // Sends in flight as the api goes down (three answered first): some may be
    // stored without Alice hearing back.
    const during = sendAll(alice, chatId, range('during', 1, 10));
    await Promise.all(during.slice(0, 3));
    await control(command);
    await alice.waitFor('disconnected', 1);
    const unanswered = alice.pending;
    // And sends while it is away: they wait for the connection.
    const away = sendAll(alice, chatId, range('away', 1, 5));
    assert.ok(alice.pending >= 5, `${alice.pending} requests wait`);
    await control('start-api');

    const sent = await Promise.all([...during, ...away]);
    const after = range('after', 1, 3);
    sent.push(...(await Promise.all(sendAll(alice, chatId, after))));
    const expected = [...before, ...range('during', 1, 10), ...range('away', 1, 5), ...after];
    // Each send got its own message, in the order Alice sent them.
    assert.equal(new Set(sent.map((s) => s.messageId)).size, sent.length);
    assert.ok(sent.every((s, i) => i === 0 || s.seq > sent[i - 1].seq), 'seqs follow the sending order');

    const shown = await bob.waitFor('message:receive', expected.length);
    assert.deepEqual(shown.map((m) => m.content), expected, 'Bob sees every message once, in order');
    // The server stored each once.
    const { body: history } = await rest(alice.auth, 'GET', `/chats/${chatId}/messages?limit=100`);
    assert.deepEqual(history.map((m) => m.content).reverse(), expected);
    // Both came back by themselves, and what Bob was shown is delivered.
    assert.ok(bob.all('session:ready').length >= 2 && alice.all('session:ready').length >= 2);
    if (command === 'stop-api') {
      const closes = bob.all('disconnected');
      assert.ok(closes.some((d) => d.code === 1012), `a stopping node says 1012; Bob saw ${JSON.stringify(closes)}`);
    }
    assert.equal(bob.all('message:receive').length, expected.length, 'nothing more came after');
    const repeats = bob.frames.filter((f) => f.event === 'message:receive').length - expected.length;
    console.log(`api ${how}: ${expected.length} messages, ${unanswered} sends unanswered when it went, ${repeats} repeated on the wire and dropped by Bob's client`);
  });
}
