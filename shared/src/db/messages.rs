//! Storing sent messages and reading history.
//!
//! Sends are stored in batches: concurrent sends from many connections share
//! one transaction (one commit, one fsync). Within it, chats are locked in id
//! order, seqs are assigned gap-free, and the message and its outbox row are
//! written together, so a crash leaves either all of a message or none of
//! it. Nothing is written per recipient: where each member and device stands
//! is a cursor (`status`, `devices`).

use std::collections::{HashMap, hash_map::Entry};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::{
    error::{ClientError, ErrorCode},
    protocol::{DeliveryStatus, SenderInfo, SentMessage},
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
}

/// A stored message and the recipients whose delivery jobs must be published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub sent: SentMessage,
    pub sender_id: String,
    /// Recipients of a new message; empty when this was a resend of an existing
    /// `clientMsgId` (that message's jobs are already in the outbox).
    pub recipients: Vec<String>,
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
}

async fn try_store_batch(
    pool: &PgPool,
    batch: &[NewMessage],
) -> Result<Vec<Result<StoredMessage, ClientError>>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut chats = lock_chats(&mut tx, batch).await?;
    let mut originals = existing_client_msg_ids(&mut tx, batch).await?;

    // Decide every send's fate and assign seqs, in batch order.
    enum Plan {
        Rejected(ClientError),
        Original(StoredMessage),
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

    let created_at = insert_rows(&mut tx, &rows).await?;
    update_counters(&mut tx, &chats).await?;
    tx.commit().await?;

    let by_id: HashMap<Uuid, DateTime<Utc>> = created_at.into_iter().collect();
    let stamp = |id: &Uuid| by_id.get(id).copied().unwrap_or_else(Utc::now);
    Ok(plans
        .into_iter()
        .map(|plan| match plan {
            Plan::Rejected(error) => Err(error),
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
    let locked: Vec<(Uuid, i64)> = sqlx::query_as("SELECT id, last_seq FROM chats WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE")
        .bind(&chat_ids)
        .fetch_all(&mut **tx)
        .await?;
    let mut chats: HashMap<Uuid, ChatState> = locked
        .into_iter()
        .map(|(id, last_seq)| {
            (id, ChatState { last_seq, members: Vec::new(), changed: false })
        })
        .collect();
    let members: Vec<(Uuid, String, bool)> = sqlx::query_as(
        "SELECT cm.chat_id, cm.user_id,
                (SELECT count(*) > 1 FROM devices d WHERE d.user_id = cm.user_id AND d.revoked_at IS NULL)
           FROM chat_members cm WHERE cm.chat_id = ANY($1)
          ORDER BY cm.chat_id, cm.user_id",
    )
    .bind(&chat_ids)
    .fetch_all(&mut **tx)
    .await?;
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
    let rows: Vec<(Uuid, Uuid, i64, DateTime<Utc>, String, String)> = sqlx::query_as(
        "SELECT m.id, m.chat_id, m.seq, m.created_at, m.sender_id, m.client_msg_id
           FROM messages m
           JOIN UNNEST($1::text[], $2::text[]) AS k(sender_id, client_msg_id)
             ON m.sender_id = k.sender_id AND m.client_msg_id = k.client_msg_id",
    )
    .bind(&senders)
    .bind(&keys)
    .fetch_all(&mut **tx)
    .await?;
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

/// Inserts messages and outbox rows; returns each message's created_at.
async fn insert_rows(tx: &mut Transaction<'_, Postgres>, rows: &Rows) -> Result<Vec<(Uuid, DateTime<Utc>)>, sqlx::Error> {
    if rows.message_ids.is_empty() {
        return Ok(Vec::new());
    }
    let created: Vec<(Uuid, DateTime<Utc>)> = sqlx::query_as(
        "INSERT INTO messages (id, chat_id, seq, sender_id, content, message_type, client_msg_id, sender_device)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::int8[], $4::text[], $5::bytea[], $6::text[], $7::text[], $8::text[])
         RETURNING id, created_at",
    )
    .bind(&rows.message_ids)
    .bind(&rows.chat_ids)
    .bind(&rows.seqs)
    .bind(&rows.sender_ids)
    .bind(&rows.contents)
    .bind(&rows.types)
    .bind(&rows.client_msg_ids)
    .bind(&rows.sender_devices)
    .fetch_all(&mut **tx)
    .await?;
    sqlx::query("INSERT INTO outbox (message_id) SELECT * FROM UNNEST($1::uuid[])")
        .bind(&rows.message_ids)
        .execute(&mut **tx)
        .await?;
    Ok(created)
}

/// Writes back the chats' last_seq (one row per chat, not per member).
async fn update_counters(tx: &mut Transaction<'_, Postgres>, chats: &HashMap<Uuid, ChatState>) -> Result<(), sqlx::Error> {
    let (mut chat_ids, mut last_seqs) = (Vec::new(), Vec::new());
    for (chat_id, chat) in chats.iter().filter(|(_, chat)| chat.changed) {
        chat_ids.push(*chat_id);
        last_seqs.push(chat.last_seq);
    }
    if chat_ids.is_empty() {
        return Ok(());
    }
    sqlx::query("UPDATE chats c SET last_seq = u.last_seq FROM UNNEST($1::uuid[], $2::int8[]) AS u(id, last_seq) WHERE c.id = u.id")
        .bind(&chat_ids)
        .bind(&last_seqs)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// An entry of a chat's log, as history and sync return it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryMessage {
    pub message_id: Uuid,
    pub chat_id: Uuid,
    pub seq: i64,
    /// What the entry is: `message` so far; edits, deletes and reactions are
    /// to become further kinds of the same log, so clients skip kinds they do not know.
    pub kind: String,
    pub sender_id: String,
    pub sender: SenderInfo,
    pub content: String,
    pub message_type: String,
    pub client_msg_id: Option<String>,
    pub created_at: DateTime<Utc>,
    /// Per-recipient statuses; only on the caller's own messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statuses: Option<Vec<RecipientStatus>>,
}

/// One recipient's status of a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct RecipientStatus {
    pub user_id: String,
    pub status: DeliveryStatus,
    pub timestamp: DateTime<Utc>,
}

/// A log entry as read from `messages` joined with its sender's profile.
/// Queries select `m.id, m.chat_id, m.seq, m.kind, m.sender_id, m.content,
/// m.message_type, m.client_msg_id, m.created_at, u.name, u.profile_picture`.
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

    let rows: Vec<EntryRow> = match page {
        HistoryPage::Before(before) => sqlx::query_as(
            "SELECT m.id, m.chat_id, m.seq, m.kind, m.sender_id, m.content, m.message_type, m.client_msg_id,
                    m.created_at, u.name, u.profile_picture
               FROM messages m JOIN users u ON u.id = m.sender_id
              WHERE m.chat_id = $1 AND m.seq > $2 AND m.seq < $3
              ORDER BY m.seq DESC LIMIT $4",
        )
        .bind(chat_id)
        .bind(joined_seq)
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(pool)
        .await?,
        HistoryPage::After(after) => sqlx::query_as(
            "SELECT m.id, m.chat_id, m.seq, m.kind, m.sender_id, m.content, m.message_type, m.client_msg_id,
                    m.created_at, u.name, u.profile_picture
               FROM messages m JOIN users u ON u.id = m.sender_id
              WHERE m.chat_id = $1 AND m.seq > GREATEST($2, $3)
              ORDER BY m.seq LIMIT $4",
        )
        .bind(chat_id)
        .bind(joined_seq)
        .bind(after)
        .bind(limit)
        .fetch_all(pool)
        .await?,
    };

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
            row.into_history(own)
        })
        .collect())
}
