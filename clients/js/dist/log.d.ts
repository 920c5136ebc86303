/** Per chat, a seq: `chatId → seq`. */
export type Cursors = Record<string, number>;
/** Entries remembered for dedupe by default; older ones cannot come again in practice. */
export declare const DEFAULT_DEDUPE_WINDOW = 10000;
export declare class ChatLog {
    private readonly window;
    private readonly seen;
    private readonly highest;
    /** Everything up to this seq is had (from a sync page, the application's store, or contiguous entries after them). */
    private readonly complete;
    constructor(window?: number, cursors?: Cursors);
    /** Records an entry; returns whether it is new (not seen, and not below what is had completely). */
    record(chatId: string, seq: number): boolean;
    /** Whether the entry is had (recorded and still remembered, or below the complete cursor). */
    has(chatId: string, seq: number): boolean;
    /** Everything of the chat up to `seq` is had (a sync page's cursor, a store's); never moves down. */
    settle(chatId: string, seq: number): void;
    /** Moves the complete cursor over entries recorded right after it. */
    private extend;
    /** Per chat, the seq up to which every entry is had: persist it, catch up from it. */
    cursors(): Cursors;
    /** Per chat, the highest seq seen (there may be entries below it that this device never got). */
    lastSeqs(): Cursors;
    /** The complete cursors as `GET /api/sync` takes them: `chatId:seq,chatId:seq`. */
    cursorParam(): string;
}
