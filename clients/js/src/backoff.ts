// Reconnect and retry delays: exponential with full jitter, so clients cut
// off together (a node restarting) do not come back together.

/** The delay schedule: attempt n waits a random time in [0, min(maxMs, initialMs × factorⁿ)). */
export interface BackoffOptions {
  /** The cap of the first attempt's delay (ms). Default 500. */
  initialMs?: number;
  /** No delay is longer than this (ms). Default 30 000. */
  maxMs?: number;
  /** Growth of the cap per attempt. Default 2. */
  factor?: number;
}

export const DEFAULT_BACKOFF: Required<BackoffOptions> = { initialMs: 500, maxMs: 30_000, factor: 2 };

/** The delay before attempt `attempt` (0 for the first retry), `random` in [0, 1). */
export function backoffDelay(attempt: number, options: BackoffOptions = {}, random: () => number = Math.random): number {
  const { initialMs, maxMs, factor } = { ...DEFAULT_BACKOFF, ...options };
  const cap = Math.min(maxMs, initialMs * Math.pow(factor, Math.max(0, attempt)));
  return Math.floor(random() * cap);
}
