// Catch-up by cursor: `GET /api/sync?cursors=…` pages, and its entries
// turned into the events a live connection would have carried, so an
// application handles both with the same handlers.

import { CourierError } from './errors.js';
import type {
  DeletedMessage,
  EditedMessage,
  ErrorBody,
  MessageType,
  ReactionChange,
  ReceivedMessage,
  Receipt,
  ReplyQuote,
  SenderInfo,
} from './events.js';

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
export type EntryEvent =
  | { event: 'message:receive'; data: ReceivedMessage }
  | { event: 'message:edited'; data: EditedMessage }
  | { event: 'message:deleted'; data: DeletedMessage }
  | { event: 'message:reaction'; data: ReactionChange };

/** The event for a sync entry, or null for a kind this client does not know. */
export function entryEvent(entry: HistoryEntry): EntryEvent | null {
  const { chatId, seq, senderId } = entry;
  const about = entry.targetId ?? entry.messageId;
  switch (entry.kind) {
    case 'message': {
      const data: ReceivedMessage = {
        messageId: entry.messageId,
        chatId,
        senderId,
        content: entry.content,
        messageType: entry.messageType,
        createdAt: entry.createdAt,
        seq,
        sender: entry.sender,
      };
      if (entry.replyTo) data.replyTo = entry.replyTo;
      if (entry.editedAt) data.editedAt = entry.editedAt;
      if (entry.deletedAt) data.deleted = true;
      return { event: 'message:receive', data };
    }
    case 'edit':
      return { event: 'message:edited', data: { messageId: about, chatId, senderId, content: entry.content, editedAt: entry.createdAt, seq } };
    case 'delete':
      return { event: 'message:deleted', data: { messageId: about, chatId, senderId, deletedAt: entry.createdAt, seq } };
    case 'react':
    case 'unreact':
      return {
        event: 'message:reaction',
        data: { messageId: about, chatId, userId: senderId, emoji: entry.content, added: entry.kind === 'react', at: entry.createdAt, seq },
      };
    default:
      return null;
  }
}

/** Entries in all per sync page the client asks for (the server allows up to 1000). */
export const SYNC_PAGE_LIMIT = 500;

/** One `GET /api/sync` call; a refusal is a CourierError with the server's code. */
export async function fetchSyncPage(
  fetcher: typeof fetch,
  baseUrl: string,
  token: string,
  cursors: string,
  limit: number = SYNC_PAGE_LIMIT,
): Promise<SyncPage> {
  const query = new URLSearchParams({ limit: String(limit) });
  if (cursors) query.set('cursors', cursors);
  const response = await fetcher(`${baseUrl}/api/sync?${query}`, { headers: { authorization: `Bearer ${token}` } });
  const body = (await response.json().catch(() => null)) as (SyncPage & { error?: ErrorBody }) | null;
  if (!response.ok || !body) {
    const error = body?.error;
    throw new CourierError(error?.code ?? 'unavailable', error?.message ?? `GET /api/sync answered ${response.status}`);
  }
  return body;
}
