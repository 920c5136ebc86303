//! Storing sent messages and reading history.
//!
//! Sends are stored in batches: concurrent sends from many connections share
//! one transaction (one commit, one fsync). Within it, chats are locked in id
//! order, seqs are assigned gap-free, and the message and its outbox row are
//! written together, so a crash leaves either all of a message or none of
//! it. Nothing is written per recipient: where each member and device stands
//! is a cursor (`status`, `devices`).

use std::collections::{HashMap, HashSet, hash_map::Entry};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::{
    error::{ClientError, ErrorCode},
    protocol::{DeliveryStatus, EntryKind, MAX_DISTINCT_REACTIONS, QUOTE_CHARS, ReplyQuote, SenderInfo, SentMessage},
};

/// A send, validated but not yet stored.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub message_id: Uuid,
    pub chat_id: Uuid,
    pub sender_id: String,
    /// The device it was sent from; `None` for a REST send without a `did` claim.
    pub sender_device: Option<String>,
    pub content: String,
    pub message_type: String,
    pub client_msg_id: Option<String>,
    /// `message`, or an edit, delete or reaction of `target_id`.
    pub kind: EntryKind,
    /// The message an edit, delete or reaction is about (same chat).
    pub target_id: Option<Uuid>,
    /// The message a message answers (same chat).
    pub reply_to: Option<Uuid>,
    /// An edit or delete is refused for a target sent before this (EDIT_WINDOW, DELETE_WINDOW).
    pub window_start: Option<DateTime<Utc>>,
}

impl NewMessage {
    /// A plain message (no reply).
    pub fn message(chat_id: Uuid, sender_id: &str, sender_device: Option<&str>, content: String, message_type: String) -> Self {
        Self {
            message_id: Uuid::now_v7(),
            chat_id,
            sender_id: sender_id.to_owned(),
            sender_device: sender_device.map(str::to_owned),
            content,
            message_type,
            client_msg_id: None,
            kind: EntryKind::Message,
            target_id: None,
            reply_to: None,
            window_start: None,
        }
    }
}

/// A stored message and the recipients whose delivery jobs must be published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub sent: SentMessage,
    pub sender_id: String,
    /// Recipients of a new message; empty when this was a resend of an existing
    /// `clientMsgId` (that message's jobs are already in the outbox).
    pub recipients: Vec<String>,
    /// Nothing was written: a resend of an existing `clientMsgId`, or a
    /// reaction that was already there (or, removed, was not); `sent.seq` is
    /// then the chat's last seq when that was decided.
    pub duplicate: bool,
}

/// Stores a batch of sends in one transaction. The outer error is the
/// database's (nothing was written); each inner result is one send's outcome.
pub async fn store_batch(
    pool: &PgPool,
    batch: &[NewMessage],
) -> Result<Vec<Result<StoredMessage, ClientError>>, sqlx::Error> {
    match try_store_batch(pool, batch).await {
        // Another transaction inserted one of our clientMsgIds between our
        // check and our insert (same sender, two connections). Rolled back;
        // store one by one so only the duplicate is affected and it finds the original.
        Err(error) if super::is_unique_violation(&error) => {
            let mut results = Vec::with_capacity(batch.len());
            for message in batch {
                let mut one = match try_store_batch(pool, std::slice::from_ref(message)).await {
                    Err(error) if super::is_unique_violation(&error) => {
                        try_store_batch(pool, std::slice::from_ref(message)).await?
                    }
                    other => other?,
                };
                results.push(one.remove(0));
            }
            Ok(results)
        }
        other => other,
    }
}

// The statements of a batch of plain messages. The API runs them on a pool
// that keeps one plan per statement ([`super::Plans::Kept`]): planned per
// call, they cost PostgreSQL more to plan than to run. Each reaches every
// table by a key lookup, whatever the statistics say (`tests/tests/plans.rs`
// checks their plans on a fresh database). A batch with entries about other
// messages plans per call (see `try_store_batch`).

/// Locks the batch's chats, in id order, and reads their last seq.
pub const LOCK_CHATS: &str = "SELECT id, last_seq FROM chats WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE";

/// The members of the batch's chats, each with whether they have more than one device.
pub const MEMBERS: &str = "SELECT cm.chat_id, cm.user_id,
        (SELECT count(*) > 1 FROM devices d WHERE d.user_id = cm.user_id AND d.revoked_at IS NULL)
   FROM chat_members cm WHERE cm.chat_id = ANY($1)
  ORDER BY cm.chat_id, cm.user_id";

/// Messages already stored under (sender, clientMsgId) keys: one probe of
/// the unique index per key (joined, not looked up, a kept plan hashes the
/// whole table).
pub const CLIENT_MSG_IDS: &str = "SELECT m.id, m.chat_id, m.seq, m.created_at, m.sender_id, m.client_msg_id
   FROM UNNEST($1::text[], $2::text[]) AS k(sender_id, client_msg_id)
  CROSS JOIN LATERAL (SELECT * FROM messages m
                       WHERE m.sender_id = k.sender_id AND m.client_msg_id = k.client_msg_id OFFSET 0) m";

/// Appends the batch's entries to their chats' logs ($1–$11), writes the
/// relay's record of the entries whose jobs are still to be published, and
/// moves each chat's last seq ($12, $13): one statement, one round trip. The
/// chats are already locked by this transaction, and the three parts write
/// different tables, as one statement with several data-modifying parts needs.
/// A chat's new last seq is found by its position in the arrays (an
/// `UPDATE … FROM UNNEST` join plans to a scan).
pub const APPEND: &str = "WITH appended AS (
      INSERT INTO messages (id, chat_id, seq, sender_id, content, message_type, client_msg_id,
                            sender_device, kind, target_id, reply_to)
      SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::int8[], $4::text[], $5::bytea[], $6::text[], $7::text[],
                           $8::text[], $9::text[], $10::uuid[], $11::uuid[])
      RETURNING id, created_at),
 outboxed AS (
      INSERT INTO outbox (message_id) SELECT * FROM UNNEST($1::uuid[])),
 moved AS (
      UPDATE chats c SET last_seq = ($13::int8[])[array_position($12::uuid[], c.id)] WHERE c.id = ANY($12::uuid[]))
 SELECT id, created_at FROM appended";

/// Per chat, while a batch is assembled: the next seq and the members.
struct ChatState {
    last_seq: i64,
    /// (user_id, whether they have more than one device), in user order.
    members: Vec<(String, bool)>,
    changed: bool,
}

#[derive(Default)]
struct Rows {
    message_ids: Vec<Uuid>,
    chat_ids: Vec<Uuid>,
    seqs: Vec<i64>,
    sender_ids: Vec<String>,
    sender_devices: Vec<Option<String>>,
    contents: Vec<Vec<u8>>,
    types: Vec<String>,
    client_msg_ids: Vec<Option<String>>,
    kinds: Vec<&'static str>,
    target_ids: Vec<Option<Uuid>>,
    reply_tos: Vec<Option<Uuid>>,
}

/// A message an entry of the batch is about (its target, or what it answers),
/// as this batch has changed it so far.
struct Target {
    chat_id: Uuid,
    sender_id: String,
    is_message: bool,
    created_at: DateTime<Utc>,
    deleted: bool,
    /// (user, emoji) reactions; read only for targets of reactions.
    reactions: HashSet<(String, String)>,
}

/// What a batch's entries do to the messages they are about, applied after the inserts.
#[derive(Default)]
struct Effects {
    /// (message, new content, edit entry) in batch order.
    edits: Vec<(Uuid, Vec<u8>, Uuid)>,
    /// (message, delete entry).
    deletes: Vec<(Uuid, Uuid)>,
    /// (message, user, emoji) → present at the end of the batch.
    reactions: HashMap<(Uuid, String, String), bool>,
}

/// Whether `message` may be written given its target; `Ok(false)`: a reaction
/// that changes nothing (already there, or not there to remove).
fn check_entry(message: &NewMessage, targets: &mut HashMap<Uuid, Target>, effects: &mut Effects) -> Result<bool, ClientError> {
    let unknown = || ClientError::new(ErrorCode::NotFound, "no such message in this chat");
    if let Some(reply_to) = message.reply_to {
        let target = targets.get(&reply_to).filter(|t| t.is_message).ok_or_else(unknown)?;
        if target.chat_id != message.chat_id {
            return Err(ClientError::new(ErrorCode::OtherChat, "replyTo names a message of another chat"));
        }
    }
    let Some(target_id) = message.target_id else { return Ok(true) };
    let target = targets.get_mut(&target_id).filter(|t| t.is_message && t.chat_id == message.chat_id).ok_or_else(unknown)?;
    if target.deleted {
        return Err(ClientError::new(ErrorCode::AlreadyDeleted, "the message was deleted"));
    }
    match message.kind {
        EntryKind::Message => Ok(true),
        EntryKind::Edit | EntryKind::Delete => {
            if target.sender_id != message.sender_id {
                return Err(ClientError::new(ErrorCode::NotSender, "only its sender may edit or delete a message"));
            }
            if message.window_start.is_some_and(|start| target.created_at < start) {
                let what = if message.kind == EntryKind::Edit { "edit" } else { "delete" };
                return Err(ClientError::new(ErrorCode::WindowPassed, format!("the message is too old to {what}")));
            }
            if message.kind == EntryKind::Delete {
                target.deleted = true;
            }
            Ok(true)
        }
        EntryKind::React | EntryKind::Unreact => {
            let key = (message.sender_id.clone(), message.content.clone());
            let add = message.kind == EntryKind::React;
            if target.reactions.contains(&key) == add {
                return Ok(false);
            }
            if add {
                let distinct: HashSet<&str> = target.reactions.iter().map(|(_, emoji)| emoji.as_str()).collect();
                if !distinct.contains(message.content.as_str()) && distinct.len() >= MAX_DISTINCT_REACTIONS {
                    return Err(ClientError::new(
                        ErrorCode::TooManyReactions,
                        format!("a message carries at most {MAX_DISTINCT_REACTIONS} distinct reactions"),
                    ));
                }
                target.reactions.insert(key.clone());
            } else {
                target.reactions.remove(&key);
            }
            effects.reactions.insert((target_id, key.0, key.1), add);
            Ok(true)
        }
    }
}

async fn try_store_batch(
    pool: &PgPool,
    batch: &[NewMessage],
) -> Result<Vec<Result<StoredMessage, ClientError>>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    if batch.iter().any(|m| m.target_id.is_some() || m.reply_to.is_some()) {
        // Entries about other messages read and change them with joins a
        // kept plan could turn into scans: plan this batch per call.
        sqlx::query("SET LOCAL plan_cache_mode = force_custom_plan").execute(&mut *tx).await?;
    }
    let mut chats = lock_chats(&mut tx, batch).await?;
    let mut originals = existing_client_msg_ids(&mut tx, batch).await?;
    // Read after the chats are locked: every entry about a message of these
    // chats that committed before is seen, and none can commit meanwhile.
    let mut targets = targets_of(&mut tx, batch).await?;
    let mut effects = Effects::default();

    // Decide every send's fate and assign seqs, in batch order.
    enum Plan {
        Rejected(ClientError),
        Original(StoredMessage),
        Unchanged(StoredMessage),
        New { index: usize, recipients: Vec<String> },
    }
    let mut plans = Vec::with_capacity(batch.len());
    let mut rows = Rows::default();
    for message in batch {
        let key = message.client_msg_id.clone().map(|id| (message.sender_id.clone(), id));
        if let Some(original) = key.as_ref().and_then(|key| originals.get(key)) {
            plans.push(match original {
                Ok(stored) if stored.sent.chat_id == message.chat_id => Plan::Original(stored.clone()),
                Ok(_) => Plan::Rejected(ClientError::new(
                    ErrorCode::ClientMsgIdConflict,
                    "this clientMsgId was already used for another chat",
                )),
                Err(error) => Plan::Rejected(error.clone()),
            });
            continue;
        }
        let Some(chat) = chats.get_mut(&message.chat_id) else {
            plans.push(Plan::Rejected(ClientError::not_member()));
            continue;
        };
        if !chat.members.iter().any(|(user, _)| *user == message.sender_id) {
            plans.push(Plan::Rejected(ClientError::not_member()));
            continue;
        }
        match check_entry(message, &mut targets, &mut effects) {
            Err(error) => {
                plans.push(Plan::Rejected(error));
                continue;
            }
            Ok(false) => {
                // The state the client asked for holds as of the chat's
                // last entry: a later entry about the same reaction is newer.
                plans.push(Plan::Unchanged(StoredMessage {
                    sent: SentMessage {
                        message_id: message.message_id,
                        chat_id: message.chat_id,
                        seq: chat.last_seq,
                        created_at: Utc::now(),
                        client_msg_id: None,
                    },
                    sender_id: message.sender_id.clone(),
                    recipients: Vec::new(),
                    duplicate: true,
                }));
                continue;
            }
            Ok(true) => {}
        }
        chat.last_seq += 1;
        chat.changed = true;
        let seq = chat.last_seq;
        let mut recipients = Vec::with_capacity(chat.members.len());
        for (user, several_devices) in &chat.members {
            if *user == message.sender_id {
                // Their other devices get it too: a job of their own.
                if *several_devices {
                    recipients.push(user.clone());
                }
                continue;
            }
            recipients.push(user.clone());
        }
        rows.message_ids.push(message.message_id);
        rows.chat_ids.push(message.chat_id);
        rows.seqs.push(seq);
        rows.sender_ids.push(message.sender_id.clone());
        rows.sender_devices.push(message.sender_device.clone());
        rows.contents.push(message.content.as_bytes().to_vec());
        rows.types.push(message.message_type.clone());
        rows.client_msg_ids.push(message.client_msg_id.clone());
        rows.kinds.push(message.kind.as_str());
        rows.target_ids.push(message.target_id);
        rows.reply_tos.push(message.reply_to);
        match (message.kind, message.target_id) {
            (EntryKind::Edit, Some(target)) => {
                effects.edits.push((target, message.content.as_bytes().to_vec(), message.message_id));
            }
            (EntryKind::Delete, Some(target)) => effects.deletes.push((target, message.message_id)),
            _ => {}
        }
        // A second send with the same key later in this batch gets this one.
        if let Some(key) = key {
            let placeholder = StoredMessage {
                sent: SentMessage {
                    message_id: message.message_id,
                    chat_id: message.chat_id,
                    seq,
                    created_at: DateTime::<Utc>::MIN_UTC,
                    client_msg_id: message.client_msg_id.clone(),
                },
                sender_id: message.sender_id.clone(),
                recipients: Vec::new(),
                duplicate: true,
            };
            originals.insert(key, Ok(placeholder));
        }
        plans.push(Plan::New { index: rows.message_ids.len() - 1, recipients });
    }

    let created_at = append(&mut tx, &rows, &chats).await?;
    let by_id: HashMap<Uuid, DateTime<Utc>> = created_at.into_iter().collect();
    apply_effects(&mut tx, &effects, &by_id).await?;
    tx.commit().await?;

    let stamp = |id: &Uuid| by_id.get(id).copied().unwrap_or_else(Utc::now);
    Ok(plans
        .into_iter()
        .map(|plan| match plan {
            Plan::Rejected(error) => Err(error),
            Plan::Unchanged(stored) => Ok(stored),
            Plan::Original(mut stored) => {
                // An in-batch original has no timestamp until now.
                if stored.sent.created_at == DateTime::<Utc>::MIN_UTC {
                    stored.sent.created_at = stamp(&stored.sent.message_id);
                }
                Ok(stored)
            }
            Plan::New { index, recipients } => Ok(StoredMessage {
                sent: SentMessage {
                    message_id: rows.message_ids[index],
                    chat_id: rows.chat_ids[index],
                    seq: rows.seqs[index],
                    created_at: stamp(&rows.message_ids[index]),
                    client_msg_id: rows.client_msg_ids[index].clone(),
                },
                sender_id: rows.sender_ids[index].clone(),
                recipients,
                duplicate: false,
            }),
        })
        .collect())
}

/// Locks the batch's chats in id order (so concurrent batches cannot deadlock)
/// and reads their members after the lock, so membership is current (adding
/// and removing members lock the chat too).
async fn lock_chats(
    tx: &mut Transaction<'_, Postgres>,
    batch: &[NewMessage],
) -> Result<HashMap<Uuid, ChatState>, sqlx::Error> {
    let mut chat_ids: Vec<Uuid> = batch.iter().map(|m| m.chat_id).collect();
    chat_ids.sort();
    chat_ids.dedup();
    let locked: Vec<(Uuid, i64)> = sqlx::query_as(LOCK_CHATS).bind(&chat_ids).fetch_all(&mut **tx).await?;
    let mut chats: HashMap<Uuid, ChatState> = locked
        .into_iter()
        .map(|(id, last_seq)| {
            (id, ChatState { last_seq, members: Vec::new(), changed: false })
        })
        .collect();
    let members: Vec<(Uuid, String, bool)> = sqlx::query_as(MEMBERS).bind(&chat_ids).fetch_all(&mut **tx).await?;
    for (chat_id, user_id, several_devices) in members {
        if let Some(chat) = chats.get_mut(&chat_id) {
            chat.members.push((user_id, several_devices));
        }
    }
    Ok(chats)
}

type ClientKey = (String, String);

/// Messages already stored under the batch's (sender, clientMsgId) keys.
async fn existing_client_msg_ids(
    tx: &mut Transaction<'_, Postgres>,
    batch: &[NewMessage],
) -> Result<HashMap<ClientKey, Result<StoredMessage, ClientError>>, sqlx::Error> {
    let (senders, keys): (Vec<String>, Vec<String>) = batch
        .iter()
        .filter_map(|m| m.client_msg_id.clone().map(|id| (m.sender_id.clone(), id)))
        .unzip();
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(Uuid, Uuid, i64, DateTime<Utc>, String, String)> =
        sqlx::query_as(CLIENT_MSG_IDS).bind(&senders).bind(&keys).fetch_all(&mut **tx).await?;
    let mut originals = HashMap::new();
    for (message_id, chat_id, seq, created_at, sender_id, client_msg_id) in rows {
        let stored = StoredMessage {
            sent: SentMessage { message_id, chat_id, seq, created_at, client_msg_id: Some(client_msg_id.clone()) },
            sender_id: sender_id.clone(),
            recipients: Vec::new(),
            duplicate: true,
        };
        if let Entry::Vacant(slot) = originals.entry((sender_id, client_msg_id)) {
            slot.insert(Ok(stored));
        }
    }
    Ok(originals)
}

/// Appends the entries and their outbox rows and moves the chats' last seqs
/// ([`APPEND`]); returns each entry's created_at.
async fn append(
    tx: &mut Transaction<'_, Postgres>,
    rows: &Rows,
    chats: &HashMap<Uuid, ChatState>,
) -> Result<Vec<(Uuid, DateTime<Utc>)>, sqlx::Error> {
    if rows.message_ids.is_empty() {
        return Ok(Vec::new());
    }
    // One row per chat, not per member.
    let (mut chat_ids, mut last_seqs) = (Vec::new(), Vec::new());
    for (chat_id, chat) in chats.iter().filter(|(_, chat)| chat.changed) {
        chat_ids.push(*chat_id);
        last_seqs.push(chat.last_seq);
    }
    sqlx::query_as(APPEND)
        .bind(&rows.message_ids)
        .bind(&rows.chat_ids)
        .bind(&rows.seqs)
        .bind(&rows.sender_ids)
        .bind(&rows.contents)
        .bind(&rows.types)
        .bind(&rows.client_msg_ids)
        .bind(&rows.sender_devices)
        .bind(&rows.kinds)
        .bind(&rows.target_ids)
        .bind(&rows.reply_tos)
        .bind(&chat_ids)
        .bind(&last_seqs)
        .fetch_all(&mut **tx)
        .await
}

/// The messages the batch's entries are about or answer, with the reactions
/// of those reacted to, in one query. Empty (no query) for a batch of plain messages.
async fn targets_of(tx: &mut Transaction<'_, Postgres>, batch: &[NewMessage]) -> Result<HashMap<Uuid, Target>, sqlx::Error> {
    let mut ids: Vec<Uuid> = batch.iter().flat_map(|m| [m.target_id, m.reply_to]).flatten().collect();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    ids.sort();
    ids.dedup();
    let reacted: Vec<Uuid> = batch
        .iter()
        .filter(|m| matches!(m.kind, EntryKind::React | EntryKind::Unreact))
        .filter_map(|m| m.target_id)
        .collect();
    type TargetRow = (Uuid, Uuid, String, String, DateTime<Utc>, bool, Vec<String>, Vec<String>);
    // The two arrays list a message's reactions in the same (key) order.
    let rows: Vec<TargetRow> = sqlx::query_as(
        "SELECT m.id, m.chat_id, m.sender_id, m.kind, m.created_at, m.deleted_at IS NOT NULL,
                CASE WHEN m.id = ANY($2) THEN ARRAY(SELECT r.user_id FROM reactions r WHERE r.message_id = m.id
                                                     ORDER BY r.user_id, r.emoji) ELSE '{}' END,
                CASE WHEN m.id = ANY($2) THEN ARRAY(SELECT r.emoji FROM reactions r WHERE r.message_id = m.id
                                                     ORDER BY r.user_id, r.emoji) ELSE '{}' END
           FROM messages m WHERE m.id = ANY($1)",
    )
    .bind(&ids)
    .bind(&reacted)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, chat_id, sender_id, kind, created_at, deleted, users, emojis)| {
            let is_message = EntryKind::from_db(&kind) == EntryKind::Message;
            let reactions = users.into_iter().zip(emojis).collect();
            (id, Target { chat_id, sender_id, is_message, created_at, deleted, reactions })
        })
        .collect())
}

/// Applies the batch's edits, deletes and reactions to the messages they are
/// about, in one statement. A message deleted in this batch takes none of
/// its edits' content (only the time of the last one) and keeps no reaction.
async fn apply_effects(
    tx: &mut Transaction<'_, Postgres>,
    effects: &Effects,
    created_at: &HashMap<Uuid, DateTime<Utc>>,
) -> Result<(), sqlx::Error> {
    if effects.edits.is_empty() && effects.deletes.is_empty() && effects.reactions.is_empty() {
        return Ok(());
    }
    let at = |entry: &Uuid| created_at.get(entry).copied().unwrap_or_else(Utc::now);
    // The last edit of each message wins.
    let mut last_edit: HashMap<Uuid, (&[u8], DateTime<Utc>)> = HashMap::new();
    for (target, content, entry) in &effects.edits {
        last_edit.insert(*target, (content, at(entry)));
    }
    let deleted: HashMap<Uuid, DateTime<Utc>> = effects.deletes.iter().map(|(target, entry)| (*target, at(entry))).collect();

    let (mut edit_ids, mut edit_contents, mut edit_times) = (Vec::new(), Vec::new(), Vec::new());
    for (target, (content, edited_at)) in &last_edit {
        if !deleted.contains_key(target) {
            edit_ids.push(*target);
            edit_contents.push(content.to_vec());
            edit_times.push(*edited_at);
        }
    }
    let (mut delete_ids, mut delete_times, mut delete_edit_times) = (Vec::new(), Vec::new(), Vec::new());
    for (target, deleted_at) in &deleted {
        delete_ids.push(*target);
        delete_times.push(*deleted_at);
        delete_edit_times.push(last_edit.get(target).map(|(_, edited_at)| *edited_at));
    }
    let mut added: (Vec<Uuid>, Vec<&str>, Vec<&str>) = Default::default();
    let mut removed: (Vec<Uuid>, Vec<&str>, Vec<&str>) = Default::default();
    for ((message_id, user_id, emoji), present) in &effects.reactions {
        if deleted.contains_key(message_id) {
            continue;
        }
        let rows = if *present { &mut added } else { &mut removed };
        rows.0.push(*message_id);
        rows.1.push(user_id);
        rows.2.push(emoji);
    }
    // Each part changes rows no other part touches (edits and deletes name
    // different messages; erased edits are entries, not messages), as one
    // statement with several data-modifying parts needs.
    sqlx::query(
        "WITH edited AS (
              UPDATE messages m SET content = e.content, edited_at = e.edited_at
                FROM UNNEST($1::uuid[], $2::bytea[], $3::timestamptz[]) AS e(id, content, edited_at)
               WHERE m.id = e.id),
         deleted AS (
              UPDATE messages m SET content = '', deleted_at = d.deleted_at, edited_at = COALESCE(d.edited_at, m.edited_at)
                FROM UNNEST($4::uuid[], $5::timestamptz[], $6::timestamptz[]) AS d(id, deleted_at, edited_at)
               WHERE m.id = d.id),
         -- Erased, not hidden: every edit's content too.
         erased AS (
              UPDATE messages SET content = '' WHERE target_id = ANY($4) AND kind = 'edit'),
         unreacted_deleted AS (
              DELETE FROM reactions WHERE message_id = ANY($4)),
         reacted AS (
              INSERT INTO reactions (message_id, user_id, emoji)
              SELECT * FROM UNNEST($7::uuid[], $8::text[], $9::text[]) ON CONFLICT DO NOTHING),
         unreacted AS (
              DELETE FROM reactions r USING UNNEST($10::uuid[], $11::text[], $12::text[]) AS d(message_id, user_id, emoji)
               WHERE r.message_id = d.message_id AND r.user_id = d.user_id AND r.emoji = d.emoji)
         SELECT 1",
    )
    .bind(&edit_ids)
    .bind(&edit_contents)
    .bind(&edit_times)
    .bind(&delete_ids)
    .bind(&delete_times)
    .bind(&delete_edit_times)
    .bind(&added.0)
    .bind(&added.1)
    .bind(&added.2)
    .bind(&removed.0)
    .bind(&removed.1)
    .bind(&removed.2)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The chat a message (kind `message`) is in, if it exists.
pub async fn chat_of(pool: &PgPool, message_id: Uuid) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT chat_id FROM messages WHERE id = $1 AND kind = 'message'")
        .bind(message_id)
        .fetch_optional(pool)
        .await
}

/// "Delete for me": hides a message of a chat `user_id` is in from their
/// history and catch-up. Returns false if there is no such message for them.
pub async fn hide_for(pool: &PgPool, user_id: &str, message_id: Uuid) -> Result<bool, sqlx::Error> {
    let hidden = sqlx::query(
        "INSERT INTO hidden_messages (user_id, message_id)
         SELECT $1, m.id FROM messages m
           JOIN chat_members cm ON cm.chat_id = m.chat_id AND cm.user_id = $1 AND m.seq > cm.joined_seq
          WHERE m.id = $2 AND m.kind = 'message'
         ON CONFLICT DO NOTHING",
    )
    .bind(user_id)
    .bind(message_id)
    .execute(pool)
    .await?;
    if hidden.rows_affected() > 0 {
        return Ok(true);
    }
    // Already hidden counts as done.
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM hidden_messages WHERE user_id = $1 AND message_id = $2)")
        .bind(user_id)
        .bind(message_id)
        .fetch_one(pool)
        .await
}

/// An entry of a chat's log, as history and sync return it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryMessage {
    pub message_id: Uuid,
    pub chat_id: Uuid,
    pub seq: i64,
    /// `message`, or (in catch-up) `edit`, `delete`, `react`, `unreact`:
    /// an entry about `targetId`. Clients skip kinds they do not know.
    pub kind: String,
    pub sender_id: String,
    pub sender: SenderInfo,
    /// A message's latest content (empty once deleted); an edit's new
    /// content; a reaction's emoji.
    pub content: String,
    pub message_type: String,
    pub client_msg_id: Option<String>,
    pub created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<ReplyQuote>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<DateTime<Utc>>,
    /// Deleted for everyone: a tombstone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<DateTime<Utc>>,
    /// A message's reactions, per emoji (history only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reactions: Option<Vec<ReactionCount>>,
    /// Per-recipient statuses; only on the caller's own messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statuses: Option<Vec<RecipientStatus>>,
}

/// How many reacted with one emoji, and whether the caller did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReactionCount {
    pub emoji: String,
    pub count: i64,
    pub mine: bool,
}

/// One recipient's status of a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecipientStatus {
    pub user_id: String,
    pub status: DeliveryStatus,
    pub timestamp: DateTime<Utc>,
}

/// The columns an [`EntryRow`] reads, from `messages m` joined with
/// [`ENTRY_JOINS`].
pub(crate) const ENTRY_COLUMNS: &str = "m.id, m.chat_id, m.seq, m.kind, m.sender_id, m.content, m.message_type,
    m.client_msg_id, m.created_at, u.name, u.profile_picture, m.target_id, m.edited_at, m.deleted_at,
    r.id AS reply_id, r.sender_id AS reply_sender, substring(r.content FROM 1 FOR 4 * 100) AS reply_content,
    r.deleted_at IS NOT NULL AS reply_deleted";
/// The sender's profile and the message replied to.
pub(crate) const ENTRY_JOINS: &str = "JOIN users u ON u.id = m.sender_id LEFT JOIN messages r ON r.id = m.reply_to";

/// A log entry as read with [`ENTRY_COLUMNS`].
#[derive(sqlx::FromRow)]
pub(crate) struct EntryRow {
    id: Uuid,
    pub(crate) chat_id: Uuid,
    pub(crate) seq: i64,
    kind: String,
    sender_id: String,
    content: Vec<u8>,
    message_type: String,
    client_msg_id: Option<String>,
    created_at: DateTime<Utc>,
    name: Option<String>,
    profile_picture: Option<String>,
    target_id: Option<Uuid>,
    edited_at: Option<DateTime<Utc>>,
    deleted_at: Option<DateTime<Utc>>,
    #[sqlx(flatten)]
    reply: ReplyRow,
    /// Catch-up only: the caller deleted it (or its target) for themselves.
    #[sqlx(default)]
    pub(crate) hidden: bool,
}

/// The message a reply answers, as [`ENTRY_COLUMNS`] and the log's reads select it.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ReplyRow {
    reply_id: Option<Uuid>,
    reply_sender: Option<String>,
    /// Its first bytes: enough for QUOTE_CHARS characters.
    reply_content: Option<Vec<u8>>,
    reply_deleted: Option<bool>,
}

impl ReplyRow {
    pub(crate) fn quote(self) -> Option<ReplyQuote> {
        let message_id = self.reply_id?;
        let deleted = self.reply_deleted.unwrap_or(false);
        let bytes = self.reply_content.unwrap_or_default();
        // Cut at a character boundary: a prefix of UTF-8 may end mid-character.
        let text = match std::str::from_utf8(&bytes) {
            Ok(text) => text,
            Err(error) => std::str::from_utf8(&bytes[..error.valid_up_to()]).unwrap_or_default(),
        };
        let quote = if deleted { String::new() } else { text.chars().take(QUOTE_CHARS).collect() };
        Some(ReplyQuote { message_id, sender_id: self.reply_sender.unwrap_or_default(), quote, deleted })
    }
}

impl EntryRow {
    pub(crate) fn into_history(self, statuses: Option<Vec<RecipientStatus>>) -> HistoryMessage {
        HistoryMessage {
            message_id: self.id,
            chat_id: self.chat_id,
            seq: self.seq,
            kind: self.kind,
            sender: SenderInfo { name: self.name, profile_picture: self.profile_picture },
            sender_id: self.sender_id,
            content: String::from_utf8_lossy(&self.content).into_owned(),
            message_type: self.message_type,
            client_msg_id: self.client_msg_id,
            created_at: self.created_at,
            target_id: self.target_id,
            reply_to: self.reply.quote(),
            edited_at: self.edited_at,
            deleted_at: self.deleted_at,
            reactions: None,
            statuses,
        }
    }
}

/// Which page of a chat's log [`history`] reads; both exclusive of the bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryPage {
    /// Newest first, below this seq (`None`: from the newest).
    Before(Option<i64>),
    /// Oldest first, above this seq: catching up from a seq the client has.
    After(i64),
}

/// A page of a chat's history from the caller's join onwards. The caller must be a member.
pub async fn history(
    pool: &PgPool,
    user_id: &str,
    chat_id: Uuid,
    page: HistoryPage,
    limit: i64,
) -> Result<Vec<HistoryMessage>, ClientError> {
    let joined_seq: Option<i64> =
        sqlx::query_scalar("SELECT joined_seq FROM chat_members WHERE chat_id = $1 AND user_id = $2")
            .bind(chat_id)
            .bind(user_id)
            .fetch_optional(pool)
            .await?;
    let Some(joined_seq) = joined_seq else { return Err(ClientError::not_member()) };

    // Messages only (edits, deletes and reactions are already applied to
    // them), less those the caller deleted for themselves.
    let rows: Vec<EntryRow> = match page {
        HistoryPage::Before(before) => sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {ENTRY_COLUMNS}
               FROM messages m {ENTRY_JOINS}
              WHERE m.chat_id = $1 AND m.seq > $2 AND m.seq < $3 AND m.kind = 'message'
                AND NOT EXISTS (SELECT 1 FROM hidden_messages h WHERE h.user_id = $5 AND h.message_id = m.id)
              ORDER BY m.seq DESC LIMIT $4"
        )))
        .bind(chat_id)
        .bind(joined_seq)
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit)
        .bind(user_id)
        .fetch_all(pool)
        .await?,
        HistoryPage::After(after) => sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {ENTRY_COLUMNS}
               FROM messages m {ENTRY_JOINS}
              WHERE m.chat_id = $1 AND m.seq > GREATEST($2, $3) AND m.kind = 'message'
                AND NOT EXISTS (SELECT 1 FROM hidden_messages h WHERE h.user_id = $5 AND h.message_id = m.id)
              ORDER BY m.seq LIMIT $4"
        )))
        .bind(chat_id)
        .bind(joined_seq)
        .bind(after)
        .bind(limit)
        .bind(user_id)
        .fetch_all(pool)
        .await?,
    };
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let mut reactions: HashMap<Uuid, Vec<ReactionCount>> = HashMap::new();
    let counted: Vec<(Uuid, String, i64, bool)> = sqlx::query_as(
        "SELECT message_id, emoji, count(*), bool_or(user_id = $2) FROM reactions
          WHERE message_id = ANY($1) GROUP BY message_id, emoji ORDER BY message_id, min(created_at), emoji",
    )
    .bind(&ids)
    .bind(user_id)
    .fetch_all(pool)
    .await?;
    for (message_id, emoji, count, mine) in counted {
        reactions.entry(message_id).or_default().push(ReactionCount { emoji, count, mine });
    }

    let mine: Vec<Uuid> = rows.iter().filter(|r| r.sender_id == user_id).map(|r| r.id).collect();
    let mut statuses: HashMap<Uuid, Vec<RecipientStatus>> = HashMap::new();
    if !mine.is_empty() {
        #[derive(sqlx::FromRow)]
        struct StatusRow {
            message_id: Uuid,
            #[sqlx(flatten)]
            status: RecipientStatus,
        }
        let status_rows: Vec<StatusRow> = sqlx::query_as(
            // The `message_status` view: each recipient's status from their watermarks.
            "SELECT message_id, user_id, status, \"timestamp\"
               FROM message_status WHERE message_id = ANY($1) ORDER BY message_id, user_id",
        )
        .bind(&mine)
        .fetch_all(pool)
        .await?;
        for row in status_rows {
            statuses.entry(row.message_id).or_default().push(row.status);
        }
    }

    Ok(rows
        .into_iter()
        .map(|row| {
            let own = (row.sender_id == user_id).then(|| statuses.remove(&row.id).unwrap_or_default());
            let counts = reactions.remove(&row.id).unwrap_or_default();
            let mut message = row.into_history(own);
            message.reactions = Some(counts);
            message
        })
        .collect())
}
