import type { ErrorCode } from './events.js';
/**
 * Codes of the client's own failures, beside the server's:
 * - `disconnected`: the request could not be sent or answered on this
 *   connection and is not one that is resent (typing, ping);
 * - `closed`: the client was closed (or stopped for good) first;
 * - `handler_failed`: an event handler of the application threw;
 * - `bad_frame`: the server sent a frame that is not JSON of the frame shape.
 */
export type ClientErrorCode = 'disconnected' | 'closed' | 'handler_failed' | 'bad_frame';
/** An error with a stable `code`: the server's error codes, or the client's own. */
export declare class CourierError extends Error {
    readonly code: ErrorCode | ClientErrorCode;
    constructor(code: ErrorCode | ClientErrorCode, message: string, options?: {
        cause?: unknown;
    });
}
