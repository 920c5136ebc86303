// bob.mjs — the recipient's client: prints each message it receives, acks it
// (the sender sees ✓✓ delivered), then marks it read (the sender sees read).
//
//   BOB=<token> node --experimental-websocket examples/bob.mjs [--count N]
//
// COURIER_URL (default http://localhost:8080) is the courier-api address.
// --count N exits after N messages (default: run until Ctrl-C).
// --read-after MS waits that long before marking a message read, as a person
// would; default 1000. (Read right away, the read can overtake the ack's
// delivered: then Alice gets only "read", which also means delivered.)
import { parseArgs } from 'node:util';

const { values: args } = parseArgs({
  options: { count: { type: 'string' }, 'read-after': { type: 'string', default: '1000' } },
});
const count = args.count === undefined ? Infinity : Number(args.count);
const readAfter = Number(args['read-after']);
if (!process.env.BOB) {
  console.error('bob: set BOB to a token for bob (see README.md)');
  process.exit(2);
}

// http://host:port → ws://host:port/ws?token=…  (https → wss)
const url = new URL('/ws', process.env.COURIER_URL ?? 'http://localhost:8080');
url.protocol = url.protocol.replace('http', 'ws');
url.searchParams.set('token', process.env.BOB);

const ws = new WebSocket(url);
const send = (frame) => ws.send(JSON.stringify(frame));
let nextId = 1; // ids of our own frames; each gets one reply with the same id
let received = 0;

ws.onmessage = (event) => {
  const frame = JSON.parse(event.data);
  // Every server event with an id wants {"event":"ack","id":N} back. For
  // message:receive this ack is what makes the message ✓✓ delivered.
  if (frame.event !== 'ack' && frame.event !== 'error' && frame.id !== undefined)
    send({ event: 'ack', id: frame.id });

  switch (frame.event) {
    case 'session:ready':
      console.log(`bob: connected as ${frame.data.userId}, waiting for messages`);
      break;
    case 'message:receive': {
      const m = frame.data;
      console.log(`bob: received #${m.seq} from ${m.sender?.name ?? m.senderId}: ${m.content}`);
      console.log('bob:   acked: the sender sees ✓✓ delivered');
      // Later, when Bob has seen it: everything in the chat up to this seq is read.
      setTimeout(() => send({ event: 'message:read', id: nextId++, data: { chatId: m.chatId, upToSeq: m.seq } }), readAfter);
      break;
    }
    case 'ack': // the reply to our message:read
      if (frame.data?.updated !== undefined) {
        console.log(`bob:   marked read (${frame.data.updated} updated): the sender sees read`);
        if (++received >= count) ws.close();
      }
      break;
    case 'error':
      console.error(`bob: error ${frame.error.code}: ${frame.error.message}`);
      process.exitCode = 1;
      break;
  }
};
ws.onerror = () => {
  console.error(`bob: cannot connect to ${url.origin} (is courier-api running? is BOB a valid token?)`);
  process.exit(1);
};
ws.onclose = (event) => {
  if (received < count) {
    console.error(`bob: disconnected (${event.code} ${event.reason})`);
    process.exit(1);
  }
};
