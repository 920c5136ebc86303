/** An error reported to a client: `{"code": "...", "message": "..."}`. */
export interface ClientError {
    code: ErrorCode;
    message: string;
}
/**
 * `message:delete {messageId, forMe?}`: for everyone (the sender, within
 * DELETE_WINDOW), or with `forMe: true` hidden from the caller only.
 */
export interface DeleteMessage {
    forMe?: boolean;
    messageId: string;
}
/** `message:deleted`: deleted for everyone; show a tombstone. `seq` is the delete's. */
export interface DeletedMessage {
    chatId: string;
    deletedAt: string;
    messageId: string;
    senderId: string;
    seq: number;
}
/** The reply to `message:delivered`. */
export interface DeliveredReply {
    /** The message had not been delivered to the user before this event. */
    updated: boolean;
}
/** A message's delivery state for one recipient. */
export type DeliveryStatus = 'sent' | 'delivered' | 'read' | 'expired';
/** `message:edit {messageId, content}`: the sender replaces a message's content. */
export interface EditMessage {
    /** The new content, under the rules of `message:send`'s. */
    content: string;
    messageId: string;
}
/** `message:edited`: a log entry; the message keeps its seq, `seq` is the edit's. */
export interface EditedMessage {
    chatId: string;
    content: string;
    editedAt: string;
    messageId: string;
    senderId: string;
    seq: number;
}
/**
 * The reply to `message:edit`, `message:delete` (for everyone) and
 * `message:react`/`unreact`: the entry's seq in the chat's log, or
 * `changed: false` (and no entry, `seq` the chat's last) when there was
 * nothing to change.
 */
export interface EntryAccepted {
    at: string;
    changed: boolean;
    chatId: string;
    /** The entry's own id (none when nothing changed). */
    entryId?: string | null;
    messageId: string;
    /**
     * The entry's seq in the chat's log; when nothing changed, the chat's
     * last seq at that moment: the state asked for holds as of it, and a
     * later entry about the same reaction (from another device) is newer.
     * None for a delete for me.
     */
    seq?: number | null;
}
/** Every error a client can see. The code strings are part of the protocol: never rename one. */
export type ErrorCode = 
/** Missing, malformed, expired or forged credentials. */
'unauthorized'
/** Authenticated, but this action needs a role the caller lacks. */
 | 'forbidden'
/**
 * The caller is not a member of the chat, or the chat does not exist (indistinguishable on
 * purpose).
 */
 | 'not_member'
/** The resource does not exist or is not visible to the caller. */
 | 'not_found'
/** A frame or body that is not valid JSON. */
 | 'invalid_json'
/** Valid JSON without the `{event, data, id}` shape. */
 | 'invalid_frame'
/** A frame naming an event the server does not know. */
 | 'unknown_event'
/** An event or body whose fields are missing or of the wrong type. */
 | 'invalid_payload'
/** Message content that is empty. */
 | 'content_empty'
/** Message content over the size limit. */
 | 'content_too_large'
/** A `messageType` outside the allowed set. */
 | 'invalid_message_type'
/** A binary WebSocket frame; the protocol is JSON text. */
 | 'binary_not_supported'
/** A frame or body over the size limit. */
 | 'payload_too_large'
/** A `clientMsgId` reused for a different chat. */
 | 'client_msg_id_conflict'
/** A change not allowed in the resource's current state (e.g. adding members to a direct chat). */
 | 'conflict'
/** An `ack` for a frame id the server never sent on this connection. */
 | 'unknown_frame'
/** Too many requests; retry later. */
 | 'rate_limited'
/** A new device would exceed MAX_DEVICES_PER_USER: revoke one first (`DELETE /api/devices/{id}`). */
 | 'too_many_devices'
/** The device was revoked (`DELETE /api/devices/{id}`); it may not connect again. */
 | 'device_revoked'
/** Editing or deleting someone else's message. */
 | 'not_sender'
/** The message is older than EDIT_WINDOW / DELETE_WINDOW. */
 | 'window_passed'
/** The message was deleted for everyone; it cannot be edited, deleted or reacted to again. */
 | 'already_deleted'
/** `replyTo` names a message of another chat. */
 | 'other_chat'
/** A new emoji on a message that already has MAX_DISTINCT_REACTIONS distinct ones. */
 | 'too_many_reactions'
/** A dependency (database, broker) is unavailable; safe to retry with the same clientMsgId. */
 | 'unavailable'
/** A bug on our side. */
 | 'internal';
/**
 * A frame number. Client frames: any the client picks; the reply carries the same. Server events:
 * numbered per connection from 1; the client acks them by it.
 */
export type FrameId = number;
/** `message:delivered {messageId}`. */
export interface MessageRef {
    messageId: string;
}
/** The reply to `ping`. */
export interface Pong {
    pong: true;
}
/**
 * `message:reaction`: `userId` added (`added: true`) or removed `emoji` on
 * a message. A device applies them in seq order as a set per (user, emoji).
 */
export interface ReactionChange {
    added: boolean;
    at: string;
    chatId: string;
    emoji: string;
    messageId: string;
    seq: number;
    userId: string;
}
/** `message:react` / `message:unreact {messageId, emoji}`. */
export interface ReactionRef {
    /**
     * 1 to 32 bytes of UTF-8 without whitespace or control characters (the
     * server does not check that it is an emoji).
     */
    emoji: string;
    messageId: string;
}
/** `message:read`: one message, or everything in a chat up to a seq. */
export type ReadReceipt = {
    chatId: string;
    upToSeq: number;
} | {
    messageId: string;
};
/** The reply to `message:read`. */
export interface ReadReply {
    /** How many messages of others became read (0: the mark was already there). */
    updated: number;
}
/**
 * `receipt`: a member's watermarks in a chat moved. Every message of the
 * chat up to `deliveredSeq` has reached one of their devices (or is their
 * own); up to `readSeq` they have read. One receipt covers all of them.
 * The same shape is each receipt of `GET /api/sync`.
 */
export interface Receipt {
    chatId: string;
    deliveredSeq: number;
    readSeq: number;
    userId: string;
}
/**
 * `message:receive`: the guide's payload plus `seq`, and what happened to
 * the message before this device got it: its latest content (`editedAt`),
 * or a tombstone (`deleted`, empty content) if it was deleted for everyone.
 */
export interface ReceivedMessage {
    chatId: string;
    content: string;
    createdAt: string;
    deleted?: boolean;
    editedAt?: string | null;
    messageId: string;
    messageType: string;
    replyTo?: ReplyQuote | null;
    sender: SenderInfo;
    senderId: string;
    seq: number;
}
/**
 * What a reply shows of the message it answers: the first QUOTE_CHARS
 * characters, or nothing if that message was deleted.
 */
export interface ReplyQuote {
    deleted?: boolean;
    messageId: string;
    quote: string;
    senderId: string;
}
/** `message:send`. */
export interface SendMessage {
    chatId: string;
    /**
     * The sender's idempotency key (1 to 128 bytes, no NUL): a resend with
     * the same one returns the original message and stores nothing new.
     */
    clientMsgId?: string | null;
    /** 1 byte to 64 KiB of UTF-8, not blank; stored and returned verbatim. */
    content: string;
    messageType?: 'text' | 'image' | 'video' | 'audio' | 'file' | 'location' | 'sticker';
    /** The message this one answers (same chat). */
    replyTo?: string | null;
}
/** The sender's public profile, as the guide's `message:receive` carries it. */
export interface SenderInfo {
    name: string | null;
    profilePicture: string | null;
}
/** Reply to `message:send` and body of `message:sent`: ✓ sent. */
export interface SentMessage {
    chatId: string;
    clientMsgId: string | null;
    createdAt: string;
    messageId: string;
    seq: number;
}
/** `session:ready`: sent once after the upgrade. */
export interface SessionReady {
    connectionId: string;
    nodeId: string;
    userId: string;
}
/** `message:status`: ✓✓ delivered or read, per recipient. */
export interface StatusUpdate {
    chatId: string;
    /** The guide's name for `userId`, kept for clients written against it. */
    deliveredTo: string;
    messageId: string;
    status: DeliveryStatus;
    timestamp: string;
    /** The recipient whose status changed. */
    userId: string;
}
/** `sync:done`: everything pending when the connection opened has been delivered. */
export interface SyncDone {
    count: number;
}
/** The reply to `typing:start` and `typing:stop`: `{}`. */
export type TypingAccepted = Record<string, unknown>;
/** `typing:start {chatId}` / `typing:stop {chatId}`: the data both carry. */
export interface TypingData {
    chatId: string;
}
/**
 * `typing`: member `userId` started (`typing: true`) or stopped typing in
 * `chatId`. Ephemeral: never stored, never resent. A `true` ends by itself
 * after `expiresInMs` unless another `typing` of the member and chat comes
 * first; a `false` carries 0.
 */
export interface TypingNotice {
    chatId: string;
    expiresInMs: number;
    typing: boolean;
    userId: string;
}
/** `user:offline`. */
export interface UserOffline {
    lastSeen: string;
    userId: string;
}
/** `user:online`. */
export interface UserOnline {
    timestamp: string;
    userId: string;
}
/** The body of an `error` frame (and of a REST error's `error`). */
export type ErrorBody = ClientError;
/** `messageType` values; `text` when absent. */
export type MessageType = NonNullable<SendMessage['messageType']>;
/** Server events: event name → data. */
export interface ServerEvents {
    'message:deleted': DeletedMessage;
    'message:edited': EditedMessage;
    'message:reaction': ReactionChange;
    'message:receive': ReceivedMessage;
    'message:sent': SentMessage;
    'message:status': StatusUpdate;
    'receipt': Receipt;
    'session:ready': SessionReady;
    'sync:done': SyncDone;
    'typing': TypingNotice;
    'user:offline': UserOffline;
    'user:online': UserOnline;
}
/** Client events that get a reply: event name → [data, reply data]. */
export interface ClientRequests {
    'message:delete': [DeleteMessage, EntryAccepted];
    'message:delivered': [MessageRef, DeliveredReply];
    'message:edit': [EditMessage, EntryAccepted];
    'message:react': [ReactionRef, EntryAccepted];
    'message:read': [ReadReceipt, ReadReply];
    'message:send': [SendMessage, SentMessage];
    'message:unreact': [ReactionRef, EntryAccepted];
    'ping': [undefined, Pong];
    'typing:start': [TypingData, TypingAccepted];
    'typing:stop': [TypingData, TypingAccepted];
}
/** Server events the client must acknowledge (`{"event": "ack", "id": N}`) or they come again. */
export type EventsNeedingAck = 'message:deleted' | 'message:edited' | 'message:reaction' | 'message:receive' | 'message:status';
