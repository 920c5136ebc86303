export { CourierClient, CLOSE_DEVICE_REVOKED, CLOSE_DROPPED, newClientMsgId, type CatchUpDone, type ClientEvents, type ConnectionState, type CourierClientOptions, type Disconnected, type EntryEventName, type EntryMeta, type WebSocketConstructor, type WebSocketLike, } from './client.js';
export { CourierError, type ClientErrorCode } from './errors.js';
export { backoffDelay, DEFAULT_BACKOFF, type BackoffOptions } from './backoff.js';
export { ChatLog, DEFAULT_DEDUPE_WINDOW, type Cursors } from './log.js';
export { entryEvent, type EntryEvent, type HistoryEntry, type SyncPage } from './catchup.js';
export type * from './events.js';
