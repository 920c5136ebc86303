// @courier/client: a typed client for Courier's /ws protocol (docs/protocol.md).
export { CourierClient, CLOSE_DEVICE_REVOKED, CLOSE_DROPPED, newClientMsgId, } from './client.js';
export { CourierError } from './errors.js';
export { backoffDelay, DEFAULT_BACKOFF } from './backoff.js';
export { ChatLog, DEFAULT_DEDUPE_WINDOW } from './log.js';
export { entryEvent } from './catchup.js';
