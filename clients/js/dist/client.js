// CourierClient: one logical connection to Courier's /ws that outlives its
// sockets. It reconnects with backoff, resends what was not answered (sends
// keep their clientMsgId, so the server stores each once), acknowledges what
// it receives after the application's handlers ran, drops what comes again,
// and tracks per chat the highest seq it has for catch-up by cursor.
import { DEFAULT_BACKOFF, backoffDelay } from './backoff.js';
import { entryEvent, fetchSyncPage } from './catchup.js';
import { CourierError } from './errors.js';
import { ChatLog, DEFAULT_DEDUPE_WINDOW } from './log.js';
/** Close code the client reports for a connection it dropped itself. */
export const CLOSE_DROPPED = 4000;
/** Close code of a revoked device: never reconnect as it. */
export const CLOSE_DEVICE_REVOKED = 4009;
/** Requests that are sent again after a reconnect until answered: each is idempotent (sends by clientMsgId). */
const RESENT = new Set([
    'message:send',
    'message:edit',
    'message:delete',
    'message:react',
    'message:unreact',
    'message:delivered',
    'message:read',
]);
export class CourierClient {
    options;
    baseUrl;
    WebSocketImpl;
    fetcher;
    random;
    log;
    listeners = new Map();
    connection = null;
    currentState = 'idle';
    session = null;
    /** Failed attempts since the last `session:ready`: the backoff's exponent. */
    attempt = 0;
    nextFrameId = 0;
    /** Unanswered requests, in the order the application made them. */
    queue = [];
    inFlight = new Map();
    /** `message:sent` ids already emitted (a resend's reply is emitted again by the server). */
    sentIds = new Set();
    /** The last receipt emitted per chat and member: a sync's copy of it is not news. */
    receipts = new Map();
    readyWaiters = [];
    reconnectTimer = null;
    heartbeatTimer = null;
    pingDeadline = null;
    pingId = 0;
    /** A refused connection gets one retry with a fresh token from a token function. */
    refreshedAfterRefusal = false;
    /** The last catch-up started: the next one waits for it. */
    catchUpChain = Promise.resolve(0);
    lastToken = '';
    constructor(options) {
        this.options = options;
        const origin = globalThis.location?.origin;
        const url = options.url ?? origin;
        if (!url)
            throw new TypeError('CourierClient: `url` is required outside a browser');
        this.baseUrl = url.replace(/\/+$/, '').replace(/^ws(s?):/, 'http$1:');
        const platform = globalThis.WebSocket;
        const WebSocketImpl = options.WebSocket ?? platform;
        if (!WebSocketImpl)
            throw new TypeError('CourierClient: no WebSocket here: pass one (`WebSocket` option, e.g. the `ws` package)');
        this.WebSocketImpl = WebSocketImpl;
        // Called as a plain function: browsers refuse `fetch` called as another object's method.
        this.fetcher = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
        this.random = options.random ?? Math.random;
        this.log = new ChatLog(options.dedupeWindow ?? DEFAULT_DEDUPE_WINDOW, options.cursors);
    }
    // ---- lifecycle ----------------------------------------------------------
    /** Connects (once; later reconnects are automatic); resolves on the first `session:ready`. */
    connect() {
        if (this.currentState === 'closed')
            return Promise.reject(new CourierError('closed', 'the client was closed'));
        if (this.currentState === 'open' && this.session)
            return Promise.resolve(this.session);
        const ready = new Promise((resolve, reject) => this.readyWaiters.push({ resolve, reject }));
        if (this.currentState === 'idle')
            void this.openSocket();
        return ready;
    }
    /** Stops for good: no reconnect; unanswered requests fail with `closed`. */
    close() {
        this.stop(new CourierError('closed', 'the client was closed'));
    }
    /** Drops the current connection and connects again at once (e.g. when the network changed). */
    reconnect() {
        if (this.currentState === 'closed')
            return;
        if (this.reconnectTimer !== null) {
            clearTimeout(this.reconnectTimer);
            this.reconnectTimer = null;
            void this.openSocket();
            return;
        }
        this.attempt = 0;
        this.drop('reconnect requested');
    }
    get state() {
        return this.currentState;
    }
    /** Connected, and the server said `session:ready`. */
    get connected() {
        return this.currentState === 'open';
    }
    /** The current (or last) connection's `session:ready`: who the server says this is. */
    get ready() {
        return this.session;
    }
    /** Requests not answered yet (sent and waiting, or waiting for a connection). */
    get pending() {
        return this.queue.length;
    }
    /**
     * Per chat, the seq up to which the client has every entry (from
     * `GET /api/sync`, the `cursors` it was given, and what came after them
     * without a gap): persist it and pass it back as `cursors`.
     */
    cursors() {
        return this.log.cursors();
    }
    /** Per chat, the highest seq the client has seen (a new device may lack entries below it). */
    lastSeqs() {
        return this.log.lastSeqs();
    }
    // ---- events -------------------------------------------------------------
    /** Adds a handler; returns a function that removes it. */
    on(event, handler) {
        let handlers = this.listeners.get(event);
        if (!handlers)
            this.listeners.set(event, (handlers = new Set()));
        handlers.add(handler);
        return () => this.off(event, handler);
    }
    off(event, handler) {
        this.listeners.get(event)?.delete(handler);
    }
    /** Runs the handlers; one that throws is reported as an `error` event, never stops the others. */
    emit(event, ...args) {
        this.emitAny(event, ...args);
    }
    /** `emit` for events named at run time (the server's, as they come). */
    emitAny(event, ...args) {
        for (const handler of [...(this.listeners.get(event) ?? [])]) {
            try {
                handler(...args);
            }
            catch (cause) {
                if (event !== 'error')
                    this.emit('error', new CourierError('handler_failed', `a ${event} handler threw: ${String(cause)}`, { cause }));
            }
        }
    }
    // ---- requests -----------------------------------------------------------
    /**
     * Sends a message. It gets a `clientMsgId` if it has none, and is sent
     * again with it after a reconnect until answered: stored once, whatever
     * happened to the first try.
     */
    send(message) {
        const clientMsgId = message.clientMsgId ?? newClientMsgId();
        return this.request('message:send', { messageType: 'text', ...message, clientMsgId });
    }
    edit(messageId, content) {
        return this.request('message:edit', { messageId, content });
    }
    /** Deletes for everyone, or (`forMe`) hides from this user only. */
    delete(messageId, options = {}) {
        return this.request('message:delete', options.forMe ? { messageId, forMe: true } : { messageId });
    }
    react(messageId, emoji) {
        return this.request('message:react', { messageId, emoji });
    }
    unreact(messageId, emoji) {
        return this.request('message:unreact', { messageId, emoji });
    }
    /** Moves the user's read mark: up to a seq of a chat, or up to a message. */
    read(target) {
        return this.request('message:read', target);
    }
    /** `typing:start`; not queued: fails with `disconnected` while there is no connection. */
    startTyping(chatId) {
        return this.request('typing:start', { chatId });
    }
    stopTyping(chatId) {
        return this.request('typing:stop', { chatId });
    }
    /**
     * Any client event with a reply. Resent events wait for a connection and
     * are sent again after a reconnect until answered; the others (typing,
     * ping) fail with `disconnected` instead.
     */
    request(event, data) {
        if (this.currentState === 'closed')
            return Promise.reject(new CourierError('closed', 'the client was closed'));
        const resend = RESENT.has(event);
        if (!resend && this.currentState !== 'open') {
            return Promise.reject(new CourierError('disconnected', `not connected: ${event} is not sent later`));
        }
        return new Promise((resolve, reject) => {
            const request = {
                event,
                data,
                resend,
                frameId: 0,
                unavailable: 0,
                resolve: (reply) => resolve(reply),
                reject,
            };
            this.queue.push(request);
            if (this.currentState === 'open')
                this.write(request);
        });
    }
    write(request) {
        const socket = this.connection?.socket;
        if (!socket)
            return;
        request.frameId = ++this.nextFrameId;
        this.inFlight.set(request.frameId, request);
        this.sendFrame(socket, { event: request.event, id: request.frameId, data: request.data });
    }
    /** Writes every request that waits for a connection, oldest first. */
    flush() {
        for (const request of this.queue) {
            if (request.frameId === 0)
                this.write(request);
        }
    }
    sendFrame(socket, frame) {
        try {
            socket.send(JSON.stringify(frame));
        }
        catch {
            // The socket is closing: its close handler puts the request back in line.
        }
    }
    /** A reply (`ack` or `error` with the id of a request). */
    settle(id, frame) {
        if (id === this.pingId)
            return this.pongReceived();
        const request = this.inFlight.get(id);
        if (!request)
            return;
        this.inFlight.delete(id);
        if (frame.event === 'error' && frame.error?.code === 'unavailable' && request.resend) {
            return this.retryLater(request);
        }
        this.queue.splice(this.queue.indexOf(request), 1);
        if (frame.event === 'ack') {
            this.recordOwn(request.event, frame.data);
            request.resolve(frame.data ?? {});
        }
        else {
            request.reject(new CourierError(frame.error?.code ?? 'internal', frame.error?.message ?? 'the server refused the request'));
        }
    }
    /** `unavailable` (the database or broker is away): the same request again after a backoff. */
    retryLater(request) {
        request.frameId = 0;
        const delay = backoffDelay(request.unavailable++, this.options.backoff, this.random);
        setTimeout(() => {
            if (this.currentState === 'open' && request.frameId === 0 && this.queue.includes(request))
                this.write(request);
        }, delay);
    }
    /** This device's own messages and entries are never sent back to it: its replies say what it has. */
    recordOwn(event, reply) {
        if (event === 'message:send') {
            const sent = reply;
            this.log.record(sent.chatId, sent.seq);
            this.rememberSent(sent.messageId);
        }
        else if (event === 'message:edit' || event === 'message:delete' || event === 'message:react' || event === 'message:unreact') {
            const accepted = reply;
            if (accepted.changed && typeof accepted.seq === 'number')
                this.log.record(accepted.chatId, accepted.seq);
        }
    }
    rememberSent(messageId) {
        if (this.sentIds.has(messageId))
            return false;
        this.sentIds.add(messageId);
        if (this.sentIds.size > 1000) {
            const oldest = this.sentIds.values().next().value;
            if (oldest !== undefined)
                this.sentIds.delete(oldest);
        }
        return true;
    }
    // ---- the socket ---------------------------------------------------------
    async currentToken() {
        const { token } = this.options;
        this.lastToken = typeof token === 'function' ? await token() : token;
        return this.lastToken;
    }
    socketUrl(token) {
        const query = new URLSearchParams({ token });
        if (this.options.deviceId)
            query.set('deviceId', this.options.deviceId);
        if (this.options.receiptsOnly)
            query.set('statuses', 'receipts');
        return `${this.baseUrl.replace(/^http/, 'ws')}/ws?${query}`;
    }
    async openSocket() {
        this.currentState = 'connecting';
        let token;
        try {
            token = await this.currentToken();
        }
        catch (cause) {
            this.emit('error', new CourierError('unauthorized', `the token function failed: ${String(cause)}`, { cause }));
            return this.scheduleReconnect(CLOSE_DROPPED, 'no token');
        }
        if (this.currentState !== 'connecting')
            return; // closed meanwhile
        let socket;
        try {
            socket = new this.WebSocketImpl(this.socketUrl(token));
        }
        catch (cause) {
            return this.stop(new CourierError('closed', `cannot open a WebSocket to ${this.baseUrl}: ${String(cause)}`, { cause }));
        }
        const connection = { socket, token, opened: false };
        this.connection = connection;
        socket.onopen = () => {
            connection.opened = true;
        };
        socket.onmessage = (event) => this.onFrame(connection, event.data);
        socket.onclose = (event) => this.onClosed(connection, event.code, event.reason);
        socket.onerror = () => { }; // a close follows, with what is known
    }
    /** Lets go of the current socket without waiting for its close (which a dead network may take minutes to report). */
    drop(reason) {
        const connection = this.connection;
        if (!connection)
            return;
        this.onClosed(connection, CLOSE_DROPPED, reason);
        try {
            connection.socket.close(1000, reason);
        }
        catch {
            // Already closed.
        }
    }
    detach(socket) {
        socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
    }
    onClosed(connection, code, reason) {
        if (this.connection !== connection)
            return; // one already let go of
        this.detach(connection.socket);
        this.connection = null;
        this.stopHeartbeat();
        this.requeueInFlight();
        if (this.currentState === 'closed')
            return;
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
    requeueInFlight() {
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
    async afterRefusal(token, code, reason) {
        let refused = null;
        try {
            const response = await this.fetcher(`${this.baseUrl}/api/devices`, { headers: { authorization: `Bearer ${token}` } });
            if (response.status === 401) {
                const body = (await response.json().catch(() => null));
                refused = body?.error ?? { code: 'unauthorized', message: 'the token was refused' };
            }
        }
        catch {
            // Not reachable: the server is away.
        }
        if (this.currentState === 'closed')
            return;
        if (!refused)
            return this.scheduleReconnect(code, reason);
        if (typeof this.options.token === 'function' && !this.refreshedAfterRefusal) {
            this.refreshedAfterRefusal = true;
            return this.scheduleReconnect(code, refused.message);
        }
        this.stop(new CourierError('unauthorized', refused.message));
    }
    scheduleReconnect(code, reason) {
        const reconnectInMs = backoffDelay(this.attempt++, this.options.backoff ?? DEFAULT_BACKOFF, this.random);
        this.currentState = 'connecting';
        this.reconnectTimer = setTimeout(() => {
            this.reconnectTimer = null;
            void this.openSocket();
        }, reconnectInMs);
        this.emit('disconnected', { code, reason, reconnectInMs });
    }
    /** Stops for good with `error`: every waiting request and `connect()` fails with it. */
    stop(error) {
        if (this.currentState === 'closed')
            return;
        this.currentState = 'closed';
        if (this.reconnectTimer !== null)
            clearTimeout(this.reconnectTimer);
        this.reconnectTimer = null;
        this.stopHeartbeat();
        const connection = this.connection;
        this.connection = null;
        if (connection) {
            this.detach(connection.socket);
            try {
                connection.socket.close(1000, 'closed by the client');
            }
            catch {
                // Already closed.
            }
        }
        this.inFlight.clear();
        for (const request of this.queue.splice(0))
            request.reject(error);
        for (const waiter of this.readyWaiters.splice(0))
            waiter.reject(error);
        this.emit('closed', error);
    }
    // ---- frames from the server ---------------------------------------------
    onFrame(connection, raw) {
        const text = typeof raw === 'string' ? raw : new TextDecoder().decode(raw);
        let frame;
        try {
            frame = JSON.parse(text);
        }
        catch {
            return this.emit('error', new CourierError('bad_frame', 'the server sent a frame that is not JSON'));
        }
        const { event, id } = frame ?? {};
        if (typeof event !== 'string')
            return this.emit('error', new CourierError('bad_frame', 'a frame without an event'));
        if (event === 'ack' || event === 'error') {
            if (typeof id === 'number')
                return this.settle(id, frame);
            if (event === 'error')
                this.emit('error', new CourierError(frame.error?.code ?? 'internal', frame.error?.message ?? 'error'));
            return;
        }
        this.dispatch(event, frame.data);
        // After the handlers: an acknowledged entry is the application's now. A
        // repeat is acknowledged too, or it would keep coming.
        if (typeof id === 'number' && this.connection === connection)
            this.sendFrame(connection.socket, { event: 'ack', id });
    }
    dispatch(event, data) {
        switch (event) {
            case 'session:ready':
                return this.onReady(data);
            case 'message:receive':
            case 'message:edited':
            case 'message:deleted':
            case 'message:reaction':
                this.deliver({ event, data }, 'live');
                return;
            case 'message:sent': {
                const sent = data;
                this.log.record(sent.chatId, sent.seq);
                if (this.rememberSent(sent.messageId))
                    this.emit('message:sent', sent);
                return;
            }
            case 'receipt':
                return this.receipt(data);
            case 'sync:done':
                this.emit('sync:done', data);
                if (this.options.catchUp === 'sync')
                    this.catchUp().catch((error) => this.emit('error', asCourierError(error)));
                return;
            default:
                // Status, presence, typing, and events newer than this client: as they are.
                this.emitAny(event, data);
        }
    }
    onReady(ready) {
        this.session = ready;
        this.attempt = 0;
        this.refreshedAfterRefusal = false;
        this.currentState = 'open';
        this.startHeartbeat();
        // Unanswered requests go first, in their order, before anything a handler sends.
        this.flush();
        this.emit('session:ready', ready);
        for (const waiter of this.readyWaiters.splice(0))
            waiter.resolve(ready);
    }
    /** A log entry, emitted once whichever way it came. */
    deliver(entry, source) {
        if (!this.log.record(entry.data.chatId, entry.data.seq))
            return false;
        this.emitAny(entry.event, entry.data, { source });
        return true;
    }
    receipt(receipt) {
        const key = `${receipt.chatId}:${receipt.userId}`;
        const marks = `${receipt.deliveredSeq}:${receipt.readSeq}`;
        if (this.receipts.get(key) === marks)
            return;
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
    catchUp() {
        const run = this.catchUpChain.then(() => this.catchUpOnce());
        this.catchUpChain = run.catch(() => 0);
        return run;
    }
    async catchUpOnce() {
        let emitted = 0;
        for (;;) {
            const token = this.lastToken || (await this.currentToken());
            const page = await fetchSyncPage(this.fetcher, this.baseUrl, token, this.log.cursorParam());
            for (const entry of page.entries) {
                const event = entryEvent(entry);
                if (event) {
                    if (this.deliver(event, 'sync'))
                        emitted += 1;
                }
                else {
                    // A kind this client does not know is skipped, but it is had.
                    this.log.record(entry.chatId, entry.seq);
                }
            }
            for (const receipt of page.receipts)
                this.receipt(receipt);
            // The page covers every entry up to these, per chat.
            for (const part of page.cursors.split(',')) {
                const [chatId, seq] = part.split(':');
                if (chatId && seq)
                    this.log.settle(chatId, Number(seq));
            }
            if (!page.hasMore)
                break;
        }
        this.emit('catchup:done', { entries: emitted });
        return emitted;
    }
    // ---- heartbeat ----------------------------------------------------------
    /** A connection whose peer vanished (a laptop lid, a NAT timeout) shows no close: a ping without answer does. */
    startHeartbeat() {
        this.stopHeartbeat();
        const every = this.options.heartbeatMs ?? 25_000;
        if (every <= 0)
            return;
        this.heartbeatTimer = setInterval(() => {
            this.ping();
        }, every);
    }
    ping() {
        const socket = this.connection?.socket;
        if (!socket || this.pingId !== 0)
            return;
        this.pingId = ++this.nextFrameId;
        this.sendFrame(socket, { event: 'ping', id: this.pingId });
        this.pingDeadline = setTimeout(() => this.drop('no answer to a ping'), this.options.heartbeatTimeoutMs ?? 20_000);
    }
    pongReceived() {
        this.pingId = 0;
        if (this.pingDeadline !== null)
            clearTimeout(this.pingDeadline);
        this.pingDeadline = null;
    }
    stopHeartbeat() {
        if (this.heartbeatTimer !== null)
            clearInterval(this.heartbeatTimer);
        this.heartbeatTimer = null;
        this.pongReceived();
    }
}
function asCourierError(error) {
    return error instanceof CourierError ? error : new CourierError('unavailable', String(error), { cause: error });
}
/** A random UUID (v4), also where `crypto.randomUUID` is missing (pages served over plain http from another host). */
export function newClientMsgId() {
    const crypto = globalThis.crypto;
    if (typeof crypto?.randomUUID === 'function')
        return crypto.randomUUID();
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    bytes[6] = ((bytes[6] ?? 0) & 0x0f) | 0x40;
    bytes[8] = ((bytes[8] ?? 0) & 0x3f) | 0x80;
    const hex = [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('');
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
