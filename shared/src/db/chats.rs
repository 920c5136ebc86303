//! Chats and their members. Every membership change locks the chat row, like a
//! send does, so "who receives message N" is decided in one order.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::{
    devices,
    users::{self, UserProfile},
};
use crate::error::{ClientError, ErrorCode};

/// Most members a group may have.
pub const MAX_GROUP_MEMBERS: usize = 1000;
const MAX_CHAT_NAME_CHARS: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChatKind {
    Direct,
    Group,
}

impl ChatKind {
    fn as_str(self) -> &'static str {
        match self {
            ChatKind::Direct => "direct",
            ChatKind::Group => "group",
        }
    }
}

/// A chat as its members see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Chat {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub kind: String,
    pub name: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    /// Seq of the newest message.
    pub last_seq: i64,
    pub last_message_at: Option<DateTime<Utc>>,
    /// Messages to the caller not yet read.
    pub unread: i64,
    pub members: Vec<UserProfile>,
}

#[derive(sqlx::FromRow)]
struct ChatRow {
    id: Uuid,
    kind: String,
    name: Option<String>,
    created_by: String,
    created_at: DateTime<Utc>,
    last_seq: i64,
    last_message_at: Option<DateTime<Utc>>,
}

/// What `POST /api/chats` asks for.
#[derive(Debug, Clone)]
pub struct NewChat {
    pub kind: ChatKind,
    pub name: Option<String>,
    pub members: Vec<String>,
}

/// Creates a chat with the caller as a member. A direct chat between two users
/// exists once: asking again returns it with `created = false`.
pub async fn create(pool: &PgPool, creator: &str, request: NewChat) -> Result<(Chat, bool), ClientError> {
    let mut members: Vec<String> = request.members.into_iter().filter(|m| m != creator).collect();
    members.sort();
    members.dedup();
    for member in &members {
        crate::auth::validate_user_id(member)?;
    }
    let name = request.name.map(|n| n.chars().filter(|&c| c != '\0').take(MAX_CHAT_NAME_CHARS).collect::<String>());
    let direct_key = match request.kind {
        ChatKind::Direct => {
            let [other] = members.as_slice() else {
                return Err(ClientError::invalid_payload("a direct chat has exactly one other member"));
            };
            let (low, high) = if creator < other.as_str() { (creator, other.as_str()) } else { (other.as_str(), creator) };
            Some(format!("{low}\u{1}{high}"))
        }
        ChatKind::Group if members.len() + 1 > MAX_GROUP_MEMBERS => {
            return Err(ClientError::invalid_payload(format!("a group has at most {MAX_GROUP_MEMBERS} members")));
        }
        ChatKind::Group => None,
    };

    let mut tx = pool.begin().await?;
    users::ensure_exist(&mut *tx, &members).await?;
    let created: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO chats (id, kind, name, direct_key, created_by) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (direct_key) DO NOTHING RETURNING id",
    )
    .bind(Uuid::now_v7())
    .bind(request.kind.as_str())
    .bind(&name)
    .bind(&direct_key)
    .bind(creator)
    .fetch_optional(&mut *tx)
    .await?;
    let chat_id = match created {
        Some(id) => {
            let mut everyone = members.clone();
            everyone.push(creator.to_owned());
            sqlx::query(
                "INSERT INTO chat_members (chat_id, user_id, joined_seq, delivered_seq, read_seq)
                 SELECT $1, user_id, 0, 0, 0 FROM UNNEST($2::text[]) AS u(user_id)",
            )
            .bind(id)
            .bind(&everyone)
            .execute(&mut *tx)
            .await?;
            devices::start_cursors(&mut *tx, id, &everyone, 0).await?;
            id
        }
        None => sqlx::query_scalar("SELECT id FROM chats WHERE direct_key = $1")
            .bind(&direct_key)
            .fetch_one(&mut *tx)
            .await?,
    };
    tx.commit().await?;
    let chat = get(pool, creator, chat_id).await?;
    Ok((chat, created.is_some()))
}

/// One chat, if the caller is a member.
pub async fn get(pool: &PgPool, user_id: &str, chat_id: Uuid) -> Result<Chat, ClientError> {
    let mut chats = list_where(pool, user_id, Some(chat_id)).await?;
    chats.pop().ok_or_else(ClientError::not_member)
}

/// The caller's chats, most recently active first.
pub async fn list(pool: &PgPool, user_id: &str) -> Result<Vec<Chat>, ClientError> {
    list_where(pool, user_id, None).await
}

async fn list_where(pool: &PgPool, user_id: &str, only: Option<Uuid>) -> Result<Vec<Chat>, ClientError> {
    let rows: Vec<ChatRow> = sqlx::query_as(
        "SELECT c.id, c.kind, c.name, c.created_by, c.created_at, c.last_seq,
                -- the last message: an edit or a reaction does not bring a chat up
                (SELECT m.created_at FROM messages m WHERE m.chat_id = c.id AND m.kind = 'message'
                  ORDER BY m.seq DESC LIMIT 1) AS last_message_at
           FROM chat_members cm JOIN chats c ON c.id = cm.chat_id
          WHERE cm.user_id = $1 AND ($2::uuid IS NULL OR c.id = $2)
          ORDER BY last_message_at DESC NULLS LAST, c.created_at DESC",
    )
    .bind(user_id)
    .bind(only)
    .fetch_all(pool)
    .await?;
    let ids: Vec<Uuid> = rows.iter().map(|row| row.id).collect();

    // Unread: messages of others after the read watermark (an index range
    // of the chat's log), less those that expired for the caller and those
    // read out of order before the upgrade (rows kept in `message_status_legacy`).
    let mut unread: HashMap<Uuid, i64> = sqlx::query_as(
        "SELECT cm.chat_id, n.unread
           FROM chat_members cm
           JOIN chats c ON c.id = cm.chat_id
          CROSS JOIN LATERAL (
                SELECT count(*) AS unread FROM messages m
                 WHERE m.chat_id = cm.chat_id AND m.seq > GREATEST(cm.read_seq, cm.joined_seq)
                   AND m.sender_id <> cm.user_id AND m.kind = 'message'
                   AND NOT EXISTS (SELECT 1 FROM expired_ranges er
                                    WHERE er.chat_id = m.chat_id AND er.user_id = cm.user_id
                                      AND m.seq > er.after_seq AND m.seq <= er.up_to_seq)
                   AND NOT EXISTS (SELECT 1 FROM message_status_legacy l
                                    WHERE l.message_id = m.id AND l.user_id = cm.user_id AND l.status = 'read')) n
          WHERE cm.user_id = $1 AND cm.chat_id = ANY($2) AND c.last_seq > GREATEST(cm.read_seq, cm.joined_seq)",
    )
    .bind(user_id)
    .bind(&ids)
    .fetch_all(pool)
    .await?
    .into_iter()
    .collect();

    #[derive(sqlx::FromRow)]
    struct MemberRow {
        chat_id: Uuid,
        #[sqlx(flatten)]
        profile: UserProfile,
    }
    let mut members: HashMap<Uuid, Vec<UserProfile>> = HashMap::new();
    let member_rows: Vec<MemberRow> = sqlx::query_as(
        "SELECT cm.chat_id, u.id, u.name, u.profile_picture, u.last_seen,
                EXISTS (SELECT 1 FROM connections c WHERE c.user_id = u.id) AS online
           FROM chat_members cm JOIN users u ON u.id = cm.user_id
          WHERE cm.chat_id = ANY($1) ORDER BY cm.chat_id, u.id",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    for row in member_rows {
        members.entry(row.chat_id).or_default().push(row.profile);
    }

    Ok(rows
        .into_iter()
        .map(|row| Chat {
            unread: unread.remove(&row.id).unwrap_or(0),
            members: members.remove(&row.id).unwrap_or_default(),
            id: row.id,
            kind: row.kind,
            name: row.name,
            created_by: row.created_by,
            created_at: row.created_at,
            last_seq: row.last_seq,
            last_message_at: row.last_message_at,
        })
        .collect())
}

/// The chat's kind and last seq, locked for the rest of the transaction, if `user_id` is a member.
async fn lock_as_member(
    tx: &mut Transaction<'_, Postgres>,
    chat_id: Uuid,
    user_id: &str,
) -> Result<(String, i64), ClientError> {
    let chat: Option<(String, i64)> = sqlx::query_as("SELECT kind, last_seq FROM chats WHERE id = $1 FOR NO KEY UPDATE")
        .bind(chat_id)
        .fetch_optional(&mut **tx)
        .await?;
    let Some(chat) = chat else { return Err(ClientError::not_member()) };
    if !is_member(&mut **tx, chat_id, user_id).await? {
        return Err(ClientError::not_member());
    }
    Ok(chat)
}

/// Whether `user_id` is currently a member of `chat_id`.
pub async fn is_member(executor: impl sqlx::PgExecutor<'_>, chat_id: Uuid, user_id: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM chat_members WHERE chat_id = $1 AND user_id = $2)")
        .bind(chat_id)
        .bind(user_id)
        .fetch_one(executor)
        .await
}

/// Adds `new_member` to a group the caller belongs to. They receive messages
/// sent from now on, not earlier ones. Returns false if they were already a member.
pub async fn add_member(pool: &PgPool, caller: &str, chat_id: Uuid, new_member: &str) -> Result<bool, ClientError> {
    crate::auth::validate_user_id(new_member)?;
    let mut tx = pool.begin().await?;
    let (kind, last_seq) = lock_as_member(&mut tx, chat_id, caller).await?;
    if kind == "direct" {
        return Err(ClientError::new(ErrorCode::Conflict, "the members of a direct chat are fixed"));
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM chat_members WHERE chat_id = $1")
        .bind(chat_id)
        .fetch_one(&mut *tx)
        .await?;
    if count as usize >= MAX_GROUP_MEMBERS {
        return Err(ClientError::new(ErrorCode::Conflict, format!("a group has at most {MAX_GROUP_MEMBERS} members")));
    }
    users::ensure_exist(&mut *tx, &[new_member.to_owned()]).await?;
    let added = sqlx::query(
        "INSERT INTO chat_members (chat_id, user_id, joined_seq, delivered_seq, read_seq)
         VALUES ($1, $2, $3, $3, $3)
         ON CONFLICT (chat_id, user_id) DO NOTHING",
    )
    .bind(chat_id)
    .bind(new_member)
    .bind(last_seq)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if added {
        devices::start_cursors(&mut *tx, chat_id, &[new_member.to_owned()], last_seq).await?;
    }
    tx.commit().await?;
    Ok(added)
}

/// Removes `member` (the caller themselves, to leave) from a group the caller
/// belongs to. Messages sent afterwards never reach them.
pub async fn remove_member(pool: &PgPool, caller: &str, chat_id: Uuid, member: &str) -> Result<(), ClientError> {
    let mut tx = pool.begin().await?;
    let (kind, last_seq) = lock_as_member(&mut tx, chat_id, caller).await?;
    if kind == "direct" {
        return Err(ClientError::new(ErrorCode::Conflict, "the members of a direct chat are fixed"));
    }
    let removed: Option<i64> =
        sqlx::query_scalar("DELETE FROM chat_members WHERE chat_id = $1 AND user_id = $2 RETURNING delivered_seq")
            .bind(chat_id)
            .bind(member)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(delivered_seq) = removed else {
        return Err(ClientError::new(ErrorCode::NotFound, "no such member"));
    };
    devices::leave(&mut tx, chat_id, member, delivered_seq, last_seq).await?;
    tx.commit().await?;
    Ok(())
}
