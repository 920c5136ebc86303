// CourierClient: one logical connection to Courier's /ws that outlives its
// sockets. It reconnects with backoff, resends what was not answered (sends
// keep their clientMsgId, so the server stores each once), acknowledges what
// it receives after the application's handlers ran, drops what comes again,
// and tracks per chat the highest seq it has for catch-up by cursor.

import { DEFAULT_BACKOFF, backoffDelay, type BackoffOptions } from './backoff.js';
import { entryEvent, fetchSyncPage, type EntryEvent } from './catchup.js';
import { CourierError } from './errors.js';
import type {
  ClientRequests,
  EntryAccepted,
  ErrorBody,
  ReadReceipt,
  Receipt,
  SendMessage,
  SentMessage,
  ServerEvents,
  SessionReady,
} from './events.js';
import { ChatLog, DEFAULT_DEDUPE_WINDOW, type Cursors } from './log.js';

/** The part of a WebSocket the client uses: the browser's, or the `ws` package's in Node. */
export interface WebSocketLike {
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

export interface CourierClientOptions {
  /** The courier-api address, `https://courier.example.com`; in a browser, the page's origin by default. */
  url?: string;
  /** A JWT, or a function that returns one (called before every connection attempt, so it can refresh). */
  token: string | (() => string | Promise<string>);
  /** This device's id (1 to 64 of `A-Z a-z 0-9 - _ . :`); a token's `did` claim wins. */
  deviceId?: string;
  /** `receipt` events only, no `message:status` per message (`/ws?statuses=receipts`). */
  receiptsOnly?: boolean;
  /** The WebSocket class: the platform's by default (Node 20 has none: pass the `ws` package's). */
  WebSocket?: WebSocketConstructor;
  /** `fetch`, for the auth check after a refused connection and for catch-up by cursor. */
  fetch?: typeof fetch;
  /** Reconnect delays (full jitter). */
  backoff?: BackoffOptions;
  /** A `ping` this often while connected (ms; 0: never). Default 25 000. */
  heartbeatMs?: number;
  /** No reply to a ping within this long drops the connection (ms). Default 20 000. */
  heartbeatTimeoutMs?: number;
  /**
   * How the client catches up after each (re)connect. `drain` (default): the
   * server sends this device what it has not acknowledged, then `sync:done`.
   * `sync`: after `sync:done` it also reads `GET /api/sync` from its cursors
   * and emits what it lacks (for a client that keeps its own store, or a new
   * device that wants history), then `catchup:done`.
   */
  catchUp?: 'drain' | 'sync';
  /** Per chat, the seq up to which the application's store has every entry: those are not emitted again, and catch-up starts after them. */
  cursors?: Cursors;
  /** How many recent entries are remembered to drop repeats. Default 10 000. */
  dedupeWindow?: number;
  /** For tests: the random source of the jitter. */
  random?: () => number;
}

/** Where a log entry came from: a connection, or `GET /api/sync`. */
export interface EntryMeta {
  source: 'live' | 'sync';
}

/** A connection ended; the client tries again after `reconnectInMs`. */
export interface Disconnected {
  /** The WebSocket close code (4000: dropped by the client, e.g. no answer to a ping). */
  code: number;
  reason: string;
  reconnectInMs: number;
}

/** `GET /api/sync` caught up (catchUp `sync`): `entries` new ones were emitted. */
export interface CatchUpDone {
  entries: number;
}

/** The log entries: acknowledged, deduplicated, and tracked per chat. */
export type EntryEventName = 'message:receive' | 'message:edited' | 'message:deleted' | 'message:reaction';

/** Every event a client emits: the server's (entries with their source), and its own. */
export type ClientEvents = {
  [E in keyof ServerEvents]: E extends EntryEventName ? [ServerEvents[E], EntryMeta] : [ServerEvents[E]];
} & {
  'catchup:done': [CatchUpDone];
  /** A connection ended and another will be tried. */
  disconnected: [Disconnected];
  /** Stopped for good: `close()`, or refused (`unauthorized`, `device_revoked`). */
  closed: [CourierError];
  /** An `error` frame without id, a bad frame, or a handler that threw. */
  error: [CourierError];
};

type Handler<E extends keyof ClientEvents> = (...args: ClientEvents[E]) => void;
/** A handler as stored: which event it is for is the map's key. */
type AnyHandler = (...args: unknown[]) => void;

/** What the client is doing now. */
export type ConnectionState = 'idle' | 'connecting' | 'open' | 'closed';

/** Close code the client reports for a connection it dropped itself. */
export const CLOSE_DROPPED = 4000;
/** Close code of a revoked device: never reconnect as it. */
export const CLOSE_DEVICE_REVOKED = 4009;

/** Requests that are sent again after a reconnect until answered: each is idempotent (sends by clientMsgId). */
const RESENT: ReadonlySet<keyof ClientRequests> = new Set([
  'message:send',
  'message:edit',
  'message:delete',
  'message:react',
  'message:unreact',
  'message:delivered',
  'message:read',
] as const);

interface PendingRequest {
  event: string;
  data: unknown;
  resend: boolean;
  /** The frame id it was last written with on the current connection; 0 while waiting to be (re)sent. */
  frameId: number;
  /** `unavailable` answers so far (each retried after a backoff). */
  unavailable: number;
  resolve(data: unknown): void;
  reject(error: CourierError): void;
}

/** One socket and what the client learned on it. */
interface Connection {
  socket: WebSocketLike;
  token: string;
  opened: boolean;
}

export class CourierClient {
  private readonly options: CourierClientOptions;
  private readonly baseUrl: string;
  private readonly WebSocketImpl: WebSocketConstructor;
  private readonly fetcher: typeof fetch;
  private readonly random: () => number;
  private readonly log: ChatLog;
  private readonly listeners = new Map<keyof ClientEvents, Set<AnyHandler>>();

  private connection: Connection | null = null;
  private currentState: ConnectionState = 'idle';
  private session: SessionReady | null = null;
  /** Failed attempts since the last `session:ready`: the backoff's exponent. */
  private attempt = 0;
  private nextFrameId = 0;
  /** Unanswered requests, in the order the application made them. */
  private readonly queue: PendingRequest[] = [];
  private readonly inFlight = new Map<number, PendingRequest>();
  /** `message:sent` ids already emitted (a resend's reply is emitted again by the server). */
  private readonly sentIds = new Set<string>();
  /** The last receipt emitted per chat and member: a sync's copy of it is not news. */
  private readonly receipts = new Map<string, string>();
  private readyWaiters: { resolve(ready: SessionReady): void; reject(error: CourierError): void }[] = [];
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  private heartbeatTimer: ReturnType<typeof setInterval> | null = null;
  private pingDeadline: ReturnType<typeof setTimeout> | null = null;
  private pingId = 0;
  /** A refused connection gets one retry with a fresh token from a token function. */
  private refreshedAfterRefusal = false;
  /** The last catch-up started: the next one waits for it. */
  private catchUpChain: Promise<number> = Promise.resolve(0);
  private lastToken = '';

  constructor(options: CourierClientOptions) {
    this.options = options;
    const origin = (globalThis as { location?: { origin?: string } }).location?.origin;
    const url = options.url ?? origin;
    if (!url) throw new TypeError('CourierClient: `url` is required outside a browser');
    this.baseUrl = url.replace(/\/+$/, '').replace(/^ws(s?):/, 'http$1:');
    const platform = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    const WebSocketImpl = options.WebSocket ?? platform;
    if (!WebSocketImpl) throw new TypeError('CourierClient: no WebSocket here: pass one (`WebSocket` option, e.g. the `ws` package)');
    this.WebSocketImpl = WebSocketImpl;
    // Called as a plain function: browsers refuse `fetch` called as another object's method.
    this.fetcher = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
    this.random = options.random ?? Math.random;
    this.log = new ChatLog(options.dedupeWindow ?? DEFAULT_DEDUPE_WINDOW, options.cursors);
  }

  // ---- lifecycle ----------------------------------------------------------

  /** Connects (once; later reconnects are automatic); resolves on the first `session:ready`. */
  connect(): Promise<SessionReady> {
    if (this.currentState === 'closed') return Promise.reject(new CourierError('closed', 'the client was closed'));
    if (this.currentState === 'open' && this.session) return Promise.resolve(this.session);
    const ready = new Promise<SessionReady>((resolve, reject) => this.readyWaiters.push({ resolve, reject }));
    if (this.currentState === 'idle') void this.openSocket();
    return ready;
  }

  /** Stops for good: no reconnect; unanswered requests fail with `closed`. */
  close(): void {
    this.stop(new CourierError('closed', 'the client was closed'));
  }

  /** Drops the current connection and connects again at once (e.g. when the network changed). */
  reconnect(): void {
    if (this.currentState === 'closed') return;
    if (this.reconnectTimer !== null) {
      clearTimeout(this.reconnectTimer);
      this.reconnectTimer = null;
      void this.openSocket();
      return;
    }
    this.attempt = 0;
    this.drop('reconnect requested');
  }

  get state(): ConnectionState {
    return this.currentState;
  }

  /** Connected, and the server said `session:ready`. */
  get connected(): boolean {
    return this.currentState === 'open';
  }

  /** The current (or last) connection's `session:ready`: who the server says this is. */
  get ready(): SessionReady | null {
    return this.session;
  }

  /** Requests not answered yet (sent and waiting, or waiting for a connection). */
  get pending(): number {
    return this.queue.length;
  }

  /**
   * Per chat, the seq up to which the client has every entry (from
   * `GET /api/sync`, the `cursors` it was given, and what came after them
   * without a gap): persist it and pass it back as `cursors`.
   */
  cursors(): Cursors {
    return this.log.cursors();
  }

  /** Per chat, the highest seq the client has seen (a new device may lack entries below it). */
  lastSeqs(): Cursors {
    return this.log.lastSeqs();
  }

  // ---- events -------------------------------------------------------------

  /** Adds a handler; returns a function that removes it. */
  on<E extends keyof ClientEvents>(event: E, handler: Handler<E>): () => void {
    let handlers = this.listeners.get(event);
    if (!handlers) this.listeners.set(event, (handlers = new Set()));
    handlers.add(handler as unknown as AnyHandler);
    return () => this.off(event, handler);
  }

  off<E extends keyof ClientEvents>(event: E, handler: Handler<E>): void {
    this.listeners.get(event)?.delete(handler as unknown as AnyHandler);
  }

  /** Runs the handlers; one that throws is reported as an `error` event, never stops the others. */
  private emit<E extends keyof ClientEvents>(event: E, ...args: ClientEvents[E]): void {
    this.emitAny(event, ...args);
  }

  /** `emit` for events named at run time (the server's, as they come). */
  private emitAny(event: keyof ClientEvents, ...args: unknown[]): void {
    for (const handler of [...(this.listeners.get(event) ?? [])]) {
      try {
        handler(...args);
      } catch (cause) {
        if (event !== 'error') this.emit('error', new CourierError('handler_failed', `a ${event} handler threw: ${String(cause)}`, { cause }));
      }
    }
  }

  // ---- requests -----------------------------------------------------------

  /**
   * Sends a message. It gets a `clientMsgId` if it has none, and is sent
   * again with it after a reconnect until answered: stored once, whatever
   * happened to the first try.
   */
  send(message: SendMessage): Promise<SentMessage> {
    const clientMsgId = message.clientMsgId ?? newClientMsgId();
    return this.request('message:send', { messageType: 'text', ...message, clientMsgId });
  }

  edit(messageId: string, content: string): Promise<EntryAccepted> {
    return this.request('message:edit', { messageId, content });
  }

  /** Deletes for everyone, or (`forMe`) hides from this user only. */
  delete(messageId: string, options: { forMe?: boolean } = {}): Promise<EntryAccepted> {
    return this.request('message:delete', options.forMe ? { messageId, forMe: true } : { messageId });
  }

  react(messageId: string, emoji: string): Promise<EntryAccepted> {
    return this.request('message:react', { messageId, emoji });
  }

  unreact(messageId: string, emoji: string): Promise<EntryAccepted> {
    return this.request('message:unreact', { messageId, emoji });
  }

  /** Moves the user's read mark: up to a seq of a chat, or up to a message. */
  read(target: ReadReceipt): Promise<ClientRequests['message:read'][1]> {
    return this.request('message:read', target);
  }

  /** `typing:start`; not queued: fails with `disconnected` while there is no connection. */
  startTyping(chatId: string): Promise<ClientRequests['typing:start'][1]> {
    return this.request('typing:start', { chatId });
  }

  stopTyping(chatId: string): Promise<ClientRequests['typing:stop'][1]> {
    return this.request('typing:stop', { chatId });
  }

  /**
   * Any client event with a reply. Resent events wait for a connection and
   * are sent again after a reconnect until answered; the others (typing,
   * ping) fail with `disconnected` instead.
   */
  request<E extends keyof ClientRequests>(event: E, data: ClientRequests[E][0]): Promise<ClientRequests[E][1]> {
    if (this.currentState === 'closed') return Promise.reject(new CourierError('closed', 'the client was closed'));
    const resend = RESENT.has(event);
    if (!resend && this.currentState !== 'open') {
      return Promise.reject(new CourierError('disconnected', `not connected: ${event} is not sent later`));
    }
    return new Promise<ClientRequests[E][1]>((resolve, reject) => {
      const request: PendingRequest = {
        event,
        data,
        resend,
        frameId: 0,
        unavailable: 0,
        resolve: (reply) => resolve(reply as ClientRequests[E][1]),
        reject,
      };
      this.queue.push(request);
      if (this.currentState === 'open') this.write(request);
    });
  }

  private write(request: PendingRequest): void {
    const socket = this.connection?.socket;
    if (!socket) return;
    request.frameId = ++this.nextFrameId;
    this.inFlight.set(request.frameId, request);
    this.sendFrame(socket, { event: request.event, id: request.frameId, data: request.data });
  }

  /** Writes every request that waits for a connection, oldest first. */
  private flush(): void {
    for (const request of this.queue) {
      if (request.frameId === 0) this.write(request);
    }
  }

  private sendFrame(socket: WebSocketLike, frame: object): void {
    try {
      socket.send(JSON.stringify(frame));
    } catch {
      // The socket is closing: its close handler puts the request back in line.
    }
  }

  /** A reply (`ack` or `error` with the id of a request). */
  private settle(id: number, frame: { event: string; data?: unknown; error?: ErrorBody }): void {
    if (id === this.pingId) return this.pongReceived();
    const request = this.inFlight.get(id);
    if (!request) return;
    this.inFlight.delete(id);
    if (frame.event === 'error' && frame.error?.code === 'unavailable' && request.resend) {
      return this.retryLater(request);
    }
    this.queue.splice(this.queue.indexOf(request), 1);
    if (frame.event === 'ack') {
      this.recordOwn(request.event, frame.data);
      request.resolve(frame.data ?? {});
    } else {
      request.reject(new CourierError(frame.error?.code ?? 'internal', frame.error?.message ?? 'the server refused the request'));
    }
  }

  /** `unavailable` (the database or broker is away): the same request again after a backoff. */
  private retryLater(request: PendingRequest): void {
    request.frameId = 0;
    const delay = backoffDelay(request.unavailable++, this.options.backoff, this.random);
    setTimeout(() => {
      if (this.currentState === 'open' && request.frameId === 0 && this.queue.includes(request)) this.write(request);
    }, delay);
  }

  /** This device's own messages and entries are never sent back to it: its replies say what it has. */
  private recordOwn(event: string, reply: unknown): void {
    if (event === 'message:send') {
      const sent = reply as SentMessage;
      this.log.record(sent.chatId, sent.seq);
      this.rememberSent(sent.messageId);
    } else if (event === 'message:edit' || event === 'message:delete' || event === 'message:react' || event === 'message:unreact') {
      const accepted = reply as EntryAccepted;
      if (accepted.changed && typeof accepted.seq === 'number') this.log.record(accepted.chatId, accepted.seq);
    }
  }

  private rememberSent(messageId: string): boolean {
    if (this.sentIds.has(messageId)) return false;
    this.sentIds.add(messageId);
    if (this.sentIds.size > 1000) {
      const oldest = this.sentIds.values().next().value;
      if (oldest !== undefined) this.sentIds.delete(oldest);
    }
    return true;
  }

  // ---- the socket ---------------------------------------------------------

  private async currentToken(): Promise<string> {
    const { token } = this.options;
    this.lastToken = typeof token === 'function' ? await token() : token;
    return this.lastToken;
  }

  private socketUrl(token: string): string {
    const query = new URLSearchParams({ token });
    if (this.options.deviceId) query.set('deviceId', this.options.deviceId);
    if (this.options.receiptsOnly) query.set('statuses', 'receipts');
    return `${this.baseUrl.replace(/^http/, 'ws')}/ws?${query}`;
  }

  private async openSocket(): Promise<void> {
    this.currentState = 'connecting';
    let token: string;
    try {
      token = await this.currentToken();
    } catch (cause) {
      this.emit('error', new CourierError('unauthorized', `the token function failed: ${String(cause)}`, { cause }));
      return this.scheduleReconnect(CLOSE_DROPPED, 'no token');
    }
    if (this.currentState !== 'connecting') return; // closed meanwhile
    let socket: WebSocketLike;
    try {
      socket = new this.WebSocketImpl(this.socketUrl(token));
    } catch (cause) {
      return this.stop(new CourierError('closed', `cannot open a WebSocket to ${this.baseUrl}: ${String(cause)}`, { cause }));
    }
    const connection: Connection = { socket, token, opened: false };
    this.connection = connection;
    socket.onopen = () => {
      connection.opened = true;
    };
    socket.onmessage = (event) => this.onFrame(connection, event.data);
    socket.onclose = (event) => this.onClosed(connection, event.code, event.reason);
    socket.onerror = () => {}; // a close follows, with what is known
  }

  /** Lets go of the current socket without waiting for its close (which a dead network may take minutes to report). */
  private drop(reason: string): void {
    const connection = this.connection;
    if (!connection) return;
    this.onClosed(connection, CLOSE_DROPPED, reason);
    try {
      connection.socket.close(1000, reason);
    } catch {
      // Already closed.
    }
  }

  private detach(socket: WebSocketLike): void {
    socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
  }

  private onClosed(connection: Connection, code: number, reason: string): void {
    if (this.connection !== connection) return; // one already let go of
    this.detach(connection.socket);
    this.connection = null;
    this.stopHeartbeat();
    this.requeueInFlight();
    if (this.currentState === 'closed') return;
    if (code === CLOSE_DEVICE_REVOKED) {
      return this.stop(new CourierError('device_revoked', reason || 'this device was revoked: it may not connect again'));
    }
    if (!connection.opened) {
      void this.afterRefusal(connection.token, code, reason);
      return;
    }
    this.scheduleReconnect(code, reason);
  }

  /** Requests written to a connection that ended: resent on the next one, or failed. */
  private requeueInFlight(): void {
    for (const request of this.inFlight.values()) {
      request.frameId = 0;
      if (!request.resend) {
        this.queue.splice(this.queue.indexOf(request), 1);
        request.reject(new CourierError('disconnected', `the connection ended before ${request.event} was answered`));
      }
    }
    this.inFlight.clear();
  }

  /**
   * The handshake failed. A browser does not say why (the 401 body is not
   * readable), so a REST call with the same token tells a refused token
   * (stop, unless a token function gives a new one) from a server that is
   * away (try again later).
   */
  private async afterRefusal(token: string, code: number, reason: string): Promise<void> {
    let refused: ErrorBody | null = null;
    try {
      const response = await this.fetcher(`${this.baseUrl}/api/devices`, { headers: { authorization: `Bearer ${token}` } });
      if (response.status === 401) {
        const body = (await response.json().catch(() => null)) as { error?: ErrorBody } | null;
        refused = body?.error ?? { code: 'unauthorized', message: 'the token was refused' };
      }
    } catch {
      // Not reachable: the server is away.
    }
    if (this.currentState === 'closed') return;
    if (!refused) return this.scheduleReconnect(code, reason);
    if (typeof this.options.token === 'function' && !this.refreshedAfterRefusal) {
      this.refreshedAfterRefusal = true;
      return this.scheduleReconnect(code, refused.message);
    }
    this.stop(new CourierError('unauthorized', refused.message));
  }

  private scheduleReconnect(code: number, reason: string): void {
    const reconnectInMs = backoffDelay(this.attempt++, this.options.backoff ?? DEFAULT_BACKOFF, this.random);
    this.currentState = 'connecting';
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      void this.openSocket();
    }, reconnectInMs);
    this.emit('disconnected', { code, reason, reconnectInMs });
  }

  /** Stops for good with `error`: every waiting request and `connect()` fails with it. */
  private stop(error: CourierError): void {
    if (this.currentState === 'closed') return;
    this.currentState = 'closed';
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    this.stopHeartbeat();
    const connection = this.connection;
    this.connection = null;
    if (connection) {
      this.detach(connection.socket);
      try {
        connection.socket.close(1000, 'closed by the client');
      } catch {
        // Already closed.
      }
    }
    this.inFlight.clear();
    for (const request of this.queue.splice(0)) request.reject(error);
    for (const waiter of this.readyWaiters.splice(0)) waiter.reject(error);
    this.emit('closed', error);
  }

  // ---- frames from the server ---------------------------------------------

  private onFrame(connection: Connection, raw: unknown): void {
    const text = typeof raw === 'string' ? raw : new TextDecoder().decode(raw as ArrayBuffer);
    let frame: { event?: unknown; id?: unknown; data?: unknown; error?: ErrorBody };
    try {
      frame = JSON.parse(text);
    } catch {
      return this.emit('error', new CourierError('bad_frame', 'the server sent a frame that is not JSON'));
    }
    const { event, id } = frame ?? {};
    if (typeof event !== 'string') return this.emit('error', new CourierError('bad_frame', 'a frame without an event'));
    if (event === 'ack' || event === 'error') {
      if (typeof id === 'number') return this.settle(id, frame as { event: string; data?: unknown; error?: ErrorBody });
      if (event === 'error') this.emit('error', new CourierError(frame.error?.code ?? 'internal', frame.error?.message ?? 'error'));
      return;
    }
    this.dispatch(event, frame.data);
    // After the handlers: an acknowledged entry is the application's now. A
    // repeat is acknowledged too, or it would keep coming.
    if (typeof id === 'number' && this.connection === connection) this.sendFrame(connection.socket, { event: 'ack', id });
  }

  private dispatch(event: string, data: unknown): void {
    switch (event) {
      case 'session:ready':
        return this.onReady(data as SessionReady);
      case 'message:receive':
      case 'message:edited':
      case 'message:deleted':
      case 'message:reaction':
        this.deliver({ event, data } as EntryEvent, 'live');
        return;
      case 'message:sent': {
        const sent = data as SentMessage;
        this.log.record(sent.chatId, sent.seq);
        if (this.rememberSent(sent.messageId)) this.emit('message:sent', sent);
        return;
      }
      case 'receipt':
        return this.receipt(data as Receipt);
      case 'sync:done':
        this.emit('sync:done', data as ServerEvents['sync:done']);
        if (this.options.catchUp === 'sync') this.catchUp().catch((error) => this.emit('error', asCourierError(error)));
        return;
      default:
        // Status, presence, typing, and events newer than this client: as they are.
        this.emitAny(event as keyof ClientEvents, data);
    }
  }

  private onReady(ready: SessionReady): void {
    this.session = ready;
    this.attempt = 0;
    this.refreshedAfterRefusal = false;
    this.currentState = 'open';
    this.startHeartbeat();
    // Unanswered requests go first, in their order, before anything a handler sends.
    this.flush();
    this.emit('session:ready', ready);
    for (const waiter of this.readyWaiters.splice(0)) waiter.resolve(ready);
  }

  /** A log entry, emitted once whichever way it came. */
  private deliver(entry: EntryEvent, source: EntryMeta['source']): boolean {
    if (!this.log.record(entry.data.chatId, entry.data.seq)) return false;
    this.emitAny(entry.event, entry.data, { source });
    return true;
  }

  private receipt(receipt: Receipt): void {
    const key = `${receipt.chatId}:${receipt.userId}`;
    const marks = `${receipt.deliveredSeq}:${receipt.readSeq}`;
    if (this.receipts.get(key) === marks) return;
    this.receipts.set(key, marks);
    this.emit('receipt', receipt);
  }

  // ---- catch-up by cursor -------------------------------------------------

  /**
   * Reads `GET /api/sync` from the client's cursors until caught up, emits
   * the entries it lacks (source `sync`) and the receipts that moved, then
   * `catchup:done`. Resolves with how many entries were new. Runs one at a
   * time: a call made while one runs starts after it, from where it ended.
   */
  catchUp(): Promise<number> {
    const run = this.catchUpChain.then(() => this.catchUpOnce());
    this.catchUpChain = run.catch(() => 0);
    return run;
  }

  private async catchUpOnce(): Promise<number> {
    let emitted = 0;
    for (;;) {
      const token = this.lastToken || (await this.currentToken());
      const page = await fetchSyncPage(this.fetcher, this.baseUrl, token, this.log.cursorParam());
      for (const entry of page.entries) {
        const event = entryEvent(entry);
        if (event) {
          if (this.deliver(event, 'sync')) emitted += 1;
        } else {
          // A kind this client does not know is skipped, but it is had.
          this.log.record(entry.chatId, entry.seq);
        }
      }
      for (const receipt of page.receipts) this.receipt(receipt);
      // The page covers every entry up to these, per chat.
      for (const part of page.cursors.split(',')) {
        const [chatId, seq] = part.split(':');
        if (chatId && seq) this.log.settle(chatId, Number(seq));
      }
      if (!page.hasMore) break;
    }
    this.emit('catchup:done', { entries: emitted });
    return emitted;
  }

  // ---- heartbeat ----------------------------------------------------------

  /** A connection whose peer vanished (a laptop lid, a NAT timeout) shows no close: a ping without answer does. */
  private startHeartbeat(): void {
    this.stopHeartbeat();
    const every = this.options.heartbeatMs ?? 25_000;
    if (every <= 0) return;
    this.heartbeatTimer = setInterval(() => {
      this.ping();
    }, every);
  }

  private ping(): void {
    const socket = this.connection?.socket;
    if (!socket || this.pingId !== 0) return;
    this.pingId = ++this.nextFrameId;
    this.sendFrame(socket, { event: 'ping', id: this.pingId });
    this.pingDeadline = setTimeout(() => this.drop('no answer to a ping'), this.options.heartbeatTimeoutMs ?? 20_000);
  }

  private pongReceived(): void {
    this.pingId = 0;
    if (this.pingDeadline !== null) clearTimeout(this.pingDeadline);
    this.pingDeadline = null;
  }

  private stopHeartbeat(): void {
    if (this.heartbeatTimer !== null) clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = null;
    this.pongReceived();
  }
}

function asCourierError(error: unknown): CourierError {
  return error instanceof CourierError ? error : new CourierError('unavailable', String(error), { cause: error });
}

/** A random UUID (v4), also where `crypto.randomUUID` is missing (pages served over plain http from another host). */
export function newClientMsgId(): string {
  const crypto = globalThis.crypto;
  if (typeof crypto?.randomUUID === 'function') return crypto.randomUUID();
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  bytes[6] = ((bytes[6] ?? 0) & 0x0f) | 0x40;
  bytes[8] = ((bytes[8] ?? 0) & 0x3f) | 0x80;
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
