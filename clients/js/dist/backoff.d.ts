/** The delay schedule: attempt n waits a random time in [0, min(maxMs, initialMs × factorⁿ)). */
export interface BackoffOptions {
    /** The cap of the first attempt's delay (ms). Default 500. */
    initialMs?: number;
    /** No delay is longer than this (ms). Default 30 000. */
    maxMs?: number;
    /** Growth of the cap per attempt. Default 2. */
    factor?: number;
}
export declare const DEFAULT_BACKOFF: Required<BackoffOptions>;
/** The delay before attempt `attempt` (0 for the first retry), `random` in [0, 1). */
export declare function backoffDelay(attempt: number, options?: BackoffOptions, random?: () => number): number;
