// Helpers for the Node suites: tokens, REST, and clients that wait for events
// with a deadline (never a fixed sleep). COURIER_URL names the API under test.
import { io } from 'socket.io-client';

export const URL = process.env.COURIER_URL ?? 'http://127.0.0.1:8080';
export const DEADLINE_MS = Number(process.env.COURIER_DEADLINE_MS ?? 15000);

/// A dev token from `POST /api/dev/token` (the API runs with --dev-tokens).
export async function token(userId, base = URL) {
  const res = await fetch(`${base}/api/dev/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ userId, name: `${userId} name` }),
  });
  if (!res.ok) throw new Error(`dev token for ${userId}: ${res.status} ${await res.text()}`);
  return (await res.json()).token;
}

export async function rest(auth, method, path, body, base = URL) {
  const res = await fetch(`${base}/api${path}`, {
    method,
    headers: { authorization: `Bearer ${auth}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

export async function createChat(auth, type, members, name) {
  const { status, body } = await rest(auth, 'POST', '/chats', { type, members, name });
  if (status >= 300) throw new Error(`create chat: ${status} ${JSON.stringify(body)}`);
  return body.id;
}

/// One recipient's status of a message, as its sender's history shows it.
export async function statusOf(senderToken, chatId, messageId, userId) {
  const { body } = await rest(senderToken, 'GET', `/chats/${chatId}/messages?limit=100`);
  const message = body.find((m) => m.messageId === messageId);
  return message?.statuses?.find((s) => s.userId === userId)?.status;
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

/// Runs `check` on every event `emitter` reports until it holds, or fails after the deadline.
function waitOn(subscribe, check, what, ms) {
  return new Promise((resolve, reject) => {
    let unsubscribe = () => {};
    const timer = setTimeout(() => {
      unsubscribe();
      reject(new Error(`timed out waiting for ${what}`));
    }, ms);
    const attempt = () => {
      const value = check();
      if (value) {
        clearTimeout(timer);
        unsubscribe();
        resolve(value);
      }
    };
    unsubscribe = subscribe(attempt);
    attempt();
  });
}

/// The log entries a device acknowledges like messages: `message:receive`,
/// and the edits, deletes and reactions of messages.
export const ENTRY_EVENTS = ['message:receive', 'message:edited', 'message:deleted', 'message:reaction'];

/// A socket.io-client connection that records every event. By default it
/// acknowledges every log entry with `{received: true}`, as the guide's edge case 3 does.
export function connect(auth, { ack = true, options = {}, base = URL } = {}) {
  const socket = io(base, { auth: { token: auth }, transports: ['websocket'], reconnection: false, forceNew: true, ...options });
  const events = [];
  const listeners = new Set();
  socket.onAny((event, ...args) => {
    const reply = typeof args.at(-1) === 'function' ? args.pop() : null;
    if (ENTRY_EVENTS.includes(event) && ack && reply) reply({ received: true });
    if (event === 'message:status' && reply) reply();
    events.push({ event, data: args[0] });
    for (const listener of listeners) listener();
  });
  const subscribe = (listener) => {
    listeners.add(listener);
    socket.on('connect_error', listener);
    socket.on('disconnect', listener);
    return () => {
      listeners.delete(listener);
      socket.off('connect_error', listener);
      socket.off('disconnect', listener);
    };
  };
  return Object.assign(socket, {
    events,
    /// Data of every `name` event so far.
    all: (name) => events.filter((e) => e.event === name).map((e) => e.data),
    /// Waits until `count` `name` events have arrived (that match `where`); returns them.
    waitFor: (name, count = 1, where = () => true, ms = DEADLINE_MS) =>
      waitOn(subscribe, () => {
        const found = events.filter((e) => e.event === name && where(e.data)).map((e) => e.data);
        return found.length >= count ? found : null;
      }, `${count} × ${name}`, ms),
    /// Resolves once connected, rejects with the connect_error.
    ready: () =>
      new Promise((resolve, reject) => {
        if (socket.connected) return resolve(socket);
        socket.once('connect', () => resolve(socket));
        socket.once('connect_error', reject);
      }),
    /// `emit` with an ack callback, as a promise (with a deadline).
    request: (event, data, ms = DEADLINE_MS) => socket.timeout(ms).emitWithAck(event, data),
  });
}

/// A plain `/ws` client (Node 20's WebSocket, behind --experimental-websocket).
export function connectWs(auth, base = URL) {
  const ws = new WebSocket(`${base.replace(/^http/, 'ws')}/ws?token=${encodeURIComponent(auth)}`);
  const frames = [];
  const listeners = new Set();
  let nextId = 1;
  ws.onmessage = (e) => {
    const frame = JSON.parse(e.data);
    frames.push(frame);
    // Acknowledge every numbered server event, as a /ws client must.
    if (frame.id && frame.event !== 'ack' && frame.event !== 'error') ws.send(JSON.stringify({ event: 'ack', id: frame.id }));
    for (const listener of listeners) listener();
  };
  const subscribe = (listener) => {
    listeners.add(listener);
    return () => listeners.delete(listener);
  };
  return {
    ws,
    frames,
    open: () => new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = reject;
    }),
    waitFor: (event, count = 1, ms = DEADLINE_MS) =>
      waitOn(subscribe, () => {
        const found = frames.filter((f) => f.event === event).map((f) => f.data);
        return found.length >= count ? found : null;
      }, `${count} × ${event} on /ws`, ms),
    /// A client frame with an id; resolves with its `ack` or `error` reply.
    request: (event, data, ms = DEADLINE_MS) => {
      const id = 1_000_000 + nextId++; // apart from the server's own frame ids
      const reply = waitOn(subscribe, () => frames.find((f) => f.id === id && (f.event === 'ack' || f.event === 'error')), `reply to ${event}`, ms);
      ws.send(JSON.stringify({ event, id, data }));
      return reply;
    },
    close: () => ws.close(),
  };
}
