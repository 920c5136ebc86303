import type { DeletedMessage, EditedMessage, MessageType, ReactionChange, ReceivedMessage, Receipt, ReplyQuote, SenderInfo } from './events.js';
/** One entry of `GET /api/sync` (and of chat history). */
export interface HistoryEntry {
    messageId: string;
    chatId: string;
    seq: number;
    /** `message`, `edit`, `delete`, `react` or `unreact`; skip others. */
    kind: string;
    senderId: string;
    sender: SenderInfo;
    content: string;
    messageType: MessageType;
    clientMsgId: string | null;
    createdAt: string;
    targetId?: string;
    replyTo?: ReplyQuote;
    editedAt?: string;
    deletedAt?: string;
}
/** A page of `GET /api/sync`. */
export interface SyncPage {
    entries: HistoryEntry[];
    receipts: Receipt[];
    cursors: string;
    hasMore: boolean;
}
/** A log entry as the event a connection carries for it. */
export type EntryEvent = {
    event: 'message:receive';
    data: ReceivedMessage;
} | {
    event: 'message:edited';
    data: EditedMessage;
} | {
    event: 'message:deleted';
    data: DeletedMessage;
} | {
    event: 'message:reaction';
    data: ReactionChange;
};
/** The event for a sync entry, or null for a kind this client does not know. */
export declare function entryEvent(entry: HistoryEntry): EntryEvent | null;
/** Entries in all per sync page the client asks for (the server allows up to 1000). */
export declare const SYNC_PAGE_LIMIT = 500;
/** One `GET /api/sync` call; a refusal is a CourierError with the server's code. */
export declare function fetchSyncPage(fetcher: typeof fetch, baseUrl: string, token: string, cursors: string, limit?: number): Promise<SyncPage>;
