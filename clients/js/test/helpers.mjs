// Helpers for the suites that run against a real Courier (tests/tests/jsclient.rs
// starts an api with --dev-tokens and a worker, and passes COURIER_URL): tokens,
// REST, and clients that record their events and wait for them with a deadline.
import WebSocket from 'ws';
import { CourierClient } from '../dist/index.js';

export const URL = process.env.COURIER_URL;
if (!URL) throw new Error('COURIER_URL is not set: these suites run against a real Courier (cargo nextest run -p courier-tests --test jsclient)');
export const DEADLINE_MS = Number(process.env.COURIER_DEADLINE_MS ?? 15000);
/// Keeps users of one run apart from another's against a long-lived server.
export const TAG = process.env.COURIER_TAG ?? '';

/// A dev token from `POST /api/dev/token`.
export async function token(userId) {
  const res = await fetch(`${URL}/api/dev/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ userId, name: `${userId} name` }),
  });
  if (!res.ok) throw new Error(`dev token for ${userId}: ${res.status} ${await res.text()}`);
  return (await res.json()).token;
}

export async function rest(auth, method, path, body) {
  const res = await fetch(`${URL}/api${path}`, {
    method,
    headers: { authorization: `Bearer ${auth}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

export async function createChat(auth, type, members) {
  const { status, body } = await rest(auth, 'POST', '/chats', { type, members });
  if (status >= 300) throw new Error(`create chat: ${status} ${JSON.stringify(body)}`);
  return body.id;
}

/// Every event a CourierClient emits.
const EVENTS = [
  'session:ready', 'message:sent', 'message:receive', 'message:edited', 'message:deleted', 'message:reaction',
  'message:status', 'receipt', 'user:online', 'user:offline', 'sync:done', 'typing',
  'catchup:done', 'disconnected', 'closed', 'error',
];

/// A WebSocket class (the `ws` package's) that also keeps every frame the server sent, as parsed JSON.
function recordingWebSocket(frames) {
  return class RecordingWebSocket extends WebSocket {
    constructor(url) {
      super(url);
      this.addEventListener('message', (event) => frames.push(JSON.parse(String(event.data))));
    }
  };
}

/// A CourierClient for `userId` (a fresh dev token) that records what it emits
/// (`events`) and what came over the wire (`frames`). Not connected yet.
export async function client(userId, options = {}) {
  const auth = options.token ?? (await token(userId));
  const frames = [];
  const courier = new CourierClient({
    url: URL,
    token: auth,
    WebSocket: recordingWebSocket(frames),
    backoff: { initialMs: 100, maxMs: 1000 },
    ...options,
  });
  const events = [];
  const listeners = new Set();
  for (const name of EVENTS) {
    courier.on(name, (...args) => {
      events.push({ event: name, data: args[0], meta: args[1] });
      for (const listener of [...listeners]) listener();
    });
  }
  const all = (name, where = () => true) => events.filter((e) => e.event === name && where(e.data, e.meta)).map((e) => e.data);
  return Object.assign(courier, {
    auth,
    events,
    frames,
    all,
    /// Waits until `count` `name` events (matching `where`) were emitted; returns them.
    waitFor: (name, count = 1, where = () => true, ms = DEADLINE_MS) =>
      new Promise((resolve, reject) => {
        const check = () => {
          const found = all(name, where);
          if (found.length < count) return false;
          clearTimeout(timer);
          listeners.delete(check);
          resolve(found);
          return true;
        };
        const timer = setTimeout(() => {
          listeners.delete(check);
          reject(new Error(`timed out waiting for ${count} × ${name} (have ${all(name, where).length})`));
        }, ms);
        if (!check()) listeners.add(check);
      }),
  });
}

/// Polls `check` until it returns a truthy value (for state only REST shows).
export async function eventually(what, check, ms = DEADLINE_MS) {
  const until = Date.now() + ms;
  for (let pause = 10; ; pause = Math.min(pause * 2, 200)) {
    const value = await check();
    if (value) return value;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, pause));
  }
}

/// One recipient's status of a message, as its sender's history shows it.
export async function statusOf(senderToken, chatId, messageId, userId) {
  const { body } = await rest(senderToken, 'GET', `/chats/${chatId}/messages?limit=100`);
  return body.find((m) => m.messageId === messageId)?.statuses?.find((s) => s.userId === userId)?.status;
}
