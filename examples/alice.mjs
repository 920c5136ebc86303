// alice.mjs — the sender's client: sends one message to CHAT and prints its
// ticks as they come: ✓ sent (the server stored it), ✓✓ delivered (Bob's
// client acked it), read (Bob marked it read). Exits once it is read.
//
//   ALICE=<token> CHAT=<chat id> node --experimental-websocket examples/alice.mjs "hello bob"
//
// COURIER_URL (default http://localhost:8080) is the courier-api address.
// --timeout S gives up (exit code 1) when the message is not read within S
// seconds; default 30.
import { parseArgs } from 'node:util';

const { values: args, positionals } = parseArgs({
  options: { timeout: { type: 'string', default: '30' } },
  allowPositionals: true,
});
const content = positionals.join(' ') || 'hello bob';
const { ALICE, CHAT } = process.env;
if (!ALICE || !CHAT) {
  console.error('alice: set ALICE to a token for alice and CHAT to a chat id (see README.md)');
  process.exit(2);
}

// http://host:port → ws://host:port/ws?token=…  (https → wss)
const url = new URL('/ws', process.env.COURIER_URL ?? 'http://localhost:8080');
url.protocol = url.protocol.replace('http', 'ws');
url.searchParams.set('token', ALICE);

const ws = new WebSocket(url);
const send = (frame) => ws.send(JSON.stringify(frame));
let messageId; // from the ✓ sent reply
let done = false;

const timer = setTimeout(() => {
  console.error(`alice: no read receipt within ${args.timeout}s: is bob.mjs running with BOB's token? is courier-worker running?`);
  process.exit(1);
}, Number(args.timeout) * 1000);

ws.onmessage = (event) => {
  const frame = JSON.parse(event.data);
  // Every server event with an id wants {"event":"ack","id":N} back; for
  // message:status it tells the server we have seen the change.
  if (frame.event !== 'ack' && frame.event !== 'error' && frame.id !== undefined)
    send({ event: 'ack', id: frame.id });

  switch (frame.event) {
    case 'session:ready':
      console.log(`alice: connected as ${frame.data.userId}`);
      // clientMsgId makes a resend (after a lost reply) safe: it is stored once.
      send({ event: 'message:send', id: 1,
        data: { chatId: CHAT, content, messageType: 'text', clientMsgId: crypto.randomUUID() } });
      break;
    case 'ack': // the reply to our frame 1, message:send
      if (frame.id === 1) {
        messageId = frame.data.messageId;
        console.log(`alice: ✓ sent #${frame.data.seq}: ${content}`);
      }
      break;
    case 'message:status': { // {messageId, status, userId, …} for each recipient
      const s = frame.data;
      if (s.messageId !== messageId) break; // a tick for an older message
      if (s.status === 'delivered') console.log(`alice: ✓✓ delivered to ${s.userId}`);
      if (s.status === 'read') {
        console.log(`alice: ✓✓ read by ${s.userId}`);
        done = true;
        clearTimeout(timer);
        ws.close();
      }
      if (s.status === 'expired') {
        console.error(`alice: expired: ${s.userId} did not connect within the server's retention`);
        process.exit(1);
      }
      break;
    }
    case 'error':
      console.error(`alice: error ${frame.error.code}: ${frame.error.message}`);
      process.exit(1);
  }
};
ws.onclose = (event) => {
  if (!done) {
    console.error(`alice: disconnected (${event.code} ${event.reason})`);
    process.exit(1);
  }
};
ws.onerror = () => {
  console.error(`alice: cannot connect to ${url.origin} (is courier-api running? is ALICE a valid token?)`);
  process.exit(1);
};
