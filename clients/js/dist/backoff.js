// Reconnect and retry delays: exponential with full jitter, so clients cut
// off together (a node restarting) do not come back together.
export const DEFAULT_BACKOFF = { initialMs: 500, maxMs: 30_000, factor: 2 };
/** The delay before attempt `attempt` (0 for the first retry), `random` in [0, 1). */
export function backoffDelay(attempt, options = {}, random = Math.random) {
    const { initialMs, maxMs, factor } = { ...DEFAULT_BACKOFF, ...options };
    const cap = Math.min(maxMs, initialMs * Math.pow(factor, Math.max(0, attempt)));
    return Math.floor(random() * cap);
}
