// What the client has of each chat's log: which entries it has applied (so
// one that comes again is dropped), per chat the highest seq it has seen,
// and per chat the seq up to which it has *every* entry — the cursor it
// catches up from with GET /api/sync, and the one to persist.
//
// Every log entry (a message, an edit, a delete, a reaction) has a seq of its
// own in its chat, so (chatId, seq) names an entry whether it came live, came
// again after a reconnect, came from GET /api/sync, or was this device's own
// (its reply carries the seq).
//
// The two per-chat numbers differ on purpose: a device seen for the first time
// is sent entries from the user's delivered watermark on, not from the start,
// so the highest seq it has seen says nothing about what lies below it. Only a
// sync page (or the application's store) says "everything up to here".
/** Entries remembered for dedupe by default; older ones cannot come again in practice. */
export const DEFAULT_DEDUPE_WINDOW = 10_000;
export class ChatLog {
    window;
    seen = new Set();
    highest = new Map();
    /** Everything up to this seq is had (from a sync page, the application's store, or contiguous entries after them). */
    complete = new Map();
    constructor(window = DEFAULT_DEDUPE_WINDOW, cursors = {}) {
        this.window = window;
        for (const [chatId, seq] of Object.entries(cursors))
            this.settle(chatId, seq);
    }
    /** Records an entry; returns whether it is new (not seen, and not below what is had completely). */
    record(chatId, seq) {
        const key = `${chatId}:${seq}`;
        if (this.seen.has(key) || seq <= (this.complete.get(chatId) ?? -1))
            return false;
        this.seen.add(key);
        // A Set iterates in insertion order: the first key is the oldest.
        if (this.seen.size > this.window) {
            const oldest = this.seen.values().next().value;
            if (oldest !== undefined)
                this.seen.delete(oldest);
        }
        if (seq > (this.highest.get(chatId) ?? -1))
            this.highest.set(chatId, seq);
        this.extend(chatId);
        return true;
    }
    /** Whether the entry is had (recorded and still remembered, or below the complete cursor). */
    has(chatId, seq) {
        return this.seen.has(`${chatId}:${seq}`) || seq <= (this.complete.get(chatId) ?? -1);
    }
    /** Everything of the chat up to `seq` is had (a sync page's cursor, a store's); never moves down. */
    settle(chatId, seq) {
        if (!Number.isSafeInteger(seq) || seq < 0)
            return;
        if (seq > (this.complete.get(chatId) ?? -1))
            this.complete.set(chatId, seq);
        if (seq > (this.highest.get(chatId) ?? -1))
            this.highest.set(chatId, seq);
        this.extend(chatId);
    }
    /** Moves the complete cursor over entries recorded right after it. */
    extend(chatId) {
        let seq = this.complete.get(chatId);
        if (seq === undefined)
            return;
        while (this.seen.has(`${chatId}:${seq + 1}`))
            seq += 1;
        this.complete.set(chatId, seq);
    }
    /** Per chat, the seq up to which every entry is had: persist it, catch up from it. */
    cursors() {
        return Object.fromEntries(this.complete);
    }
    /** Per chat, the highest seq seen (there may be entries below it that this device never got). */
    lastSeqs() {
        return Object.fromEntries(this.highest);
    }
    /** The complete cursors as `GET /api/sync` takes them: `chatId:seq,chatId:seq`. */
    cursorParam() {
        return [...this.complete].map(([chatId, seq]) => `${chatId}:${seq}`).join(',');
    }
}
