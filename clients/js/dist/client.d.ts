import { type BackoffOptions } from './backoff.js';
import { CourierError } from './errors.js';
import type { ClientRequests, EntryAccepted, ReadReceipt, SendMessage, SentMessage, ServerEvents, SessionReady } from './events.js';
import { type Cursors } from './log.js';
/** The part of a WebSocket the client uses: the browser's, or the `ws` package's in Node. */
export interface WebSocketLike {
    onopen: ((event: unknown) => void) | null;
    onmessage: ((event: {
        data: unknown;
    }) => void) | null;
    onclose: ((event: {
        code: number;
        reason: string;
    }) => void) | null;
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
/** What the client is doing now. */
export type ConnectionState = 'idle' | 'connecting' | 'open' | 'closed';
/** Close code the client reports for a connection it dropped itself. */
export declare const CLOSE_DROPPED = 4000;
/** Close code of a revoked device: never reconnect as it. */
export declare const CLOSE_DEVICE_REVOKED = 4009;
export declare class CourierClient {
    private readonly options;
    private readonly baseUrl;
    private readonly WebSocketImpl;
    private readonly fetcher;
    private readonly random;
    private readonly log;
    private readonly listeners;
    private connection;
    private currentState;
    private session;
    /** Failed attempts since the last `session:ready`: the backoff's exponent. */
    private attempt;
    private nextFrameId;
    /** Unanswered requests, in the order the application made them. */
    private readonly queue;
    private readonly inFlight;
    /** `message:sent` ids already emitted (a resend's reply is emitted again by the server). */
    private readonly sentIds;
    /** The last receipt emitted per chat and member: a sync's copy of it is not news. */
    private readonly receipts;
    private readyWaiters;
    private reconnectTimer;
    private heartbeatTimer;
    private pingDeadline;
    private pingId;
    /** A refused connection gets one retry with a fresh token from a token function. */
    private refreshedAfterRefusal;
    /** The last catch-up started: the next one waits for it. */
    private catchUpChain;
    private lastToken;
    constructor(options: CourierClientOptions);
    /** Connects (once; later reconnects are automatic); resolves on the first `session:ready`. */
    connect(): Promise<SessionReady>;
    /** Stops for good: no reconnect; unanswered requests fail with `closed`. */
    close(): void;
    /** Drops the current connection and connects again at once (e.g. when the network changed). */
    reconnect(): void;
    get state(): ConnectionState;
    /** Connected, and the server said `session:ready`. */
    get connected(): boolean;
    /** The current (or last) connection's `session:ready`: who the server says this is. */
    get ready(): SessionReady | null;
    /** Requests not answered yet (sent and waiting, or waiting for a connection). */
    get pending(): number;
    /**
     * Per chat, the seq up to which the client has every entry (from
     * `GET /api/sync`, the `cursors` it was given, and what came after them
     * without a gap): persist it and pass it back as `cursors`.
     */
    cursors(): Cursors;
    /** Per chat, the highest seq the client has seen (a new device may lack entries below it). */
    lastSeqs(): Cursors;
    /** Adds a handler; returns a function that removes it. */
    on<E extends keyof ClientEvents>(event: E, handler: Handler<E>): () => void;
    off<E extends keyof ClientEvents>(event: E, handler: Handler<E>): void;
    /** Runs the handlers; one that throws is reported as an `error` event, never stops the others. */
    private emit;
    /** `emit` for events named at run time (the server's, as they come). */
    private emitAny;
    /**
     * Sends a message. It gets a `clientMsgId` if it has none, and is sent
     * again with it after a reconnect until answered: stored once, whatever
     * happened to the first try.
     */
    send(message: SendMessage): Promise<SentMessage>;
    edit(messageId: string, content: string): Promise<EntryAccepted>;
    /** Deletes for everyone, or (`forMe`) hides from this user only. */
    delete(messageId: string, options?: {
        forMe?: boolean;
    }): Promise<EntryAccepted>;
    react(messageId: string, emoji: string): Promise<EntryAccepted>;
    unreact(messageId: string, emoji: string): Promise<EntryAccepted>;
    /** Moves the user's read mark: up to a seq of a chat, or up to a message. */
    read(target: ReadReceipt): Promise<ClientRequests['message:read'][1]>;
    /** `typing:start`; not queued: fails with `disconnected` while there is no connection. */
    startTyping(chatId: string): Promise<ClientRequests['typing:start'][1]>;
    stopTyping(chatId: string): Promise<ClientRequests['typing:stop'][1]>;
    /**
     * Any client event with a reply. Resent events wait for a connection and
     * are sent again after a reconnect until answered; the others (typing,
     * ping) fail with `disconnected` instead.
     */
    request<E extends keyof ClientRequests>(event: E, data: ClientRequests[E][0]): Promise<ClientRequests[E][1]>;
    private write;
    /** Writes every request that waits for a connection, oldest first. */
    private flush;
    private sendFrame;
    /** A reply (`ack` or `error` with the id of a request). */
    private settle;
    /** `unavailable` (the database or broker is away): the same request again after a backoff. */
    private retryLater;
    /** This device's own messages and entries are never sent back to it: its replies say what it has. */
    private recordOwn;
    private rememberSent;
    private currentToken;
    private socketUrl;
    private openSocket;
    /** Lets go of the current socket without waiting for its close (which a dead network may take minutes to report). */
    private drop;
    private detach;
    private onClosed;
    /** Requests written to a connection that ended: resent on the next one, or failed. */
    private requeueInFlight;
    /**
     * The handshake failed. A browser does not say why (the 401 body is not
     * readable), so a REST call with the same token tells a refused token
     * (stop, unless a token function gives a new one) from a server that is
     * away (try again later).
     */
    private afterRefusal;
    private scheduleReconnect;
    /** Stops for good with `error`: every waiting request and `connect()` fails with it. */
    private stop;
    private onFrame;
    private dispatch;
    private onReady;
    /** A log entry, emitted once whichever way it came. */
    private deliver;
    private receipt;
    /**
     * Reads `GET /api/sync` from the client's cursors until caught up, emits
     * the entries it lacks (source `sync`) and the receipts that moved, then
     * `catchup:done`. Resolves with how many entries were new. Runs one at a
     * time: a call made while one runs starts after it, from where it ended.
     */
    catchUp(): Promise<number>;
    private catchUpOnce;
    /** A connection whose peer vanished (a laptop lid, a NAT timeout) shows no close: a ping without answer does. */
    private startHeartbeat;
    private ping;
    private pongReceived;
    private stopHeartbeat;
}
/** A random UUID (v4), also where `crypto.randomUUID` is missing (pages served over plain http from another host). */
export declare function newClientMsgId(): string;
export {};
