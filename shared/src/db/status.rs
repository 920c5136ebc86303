//! `message_status`: each recipient's inbox and each sender's ticks. Statuses
//! only move forward: sent → delivered → read (or sent → expired).

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use crate::{
    job::{StatusChange, WatermarkMove},
    protocol::{DeliveryStatus, Receipt, StatusUpdate},
};

#[derive(sqlx::FromRow)]
struct ChangedRow {
    message_id: Uuid,
    user_id: String,
    chat_id: Uuid,
    sender_id: String,
    status: DeliveryStatus,
    updated_at: DateTime<Utc>,
    in_group: bool,
}

impl From<ChangedRow> for StatusChange {
    fn from(row: ChangedRow) -> Self {
        StatusChange {
            sender_id: row.sender_id,
            update: StatusUpdate {
                message_id: row.message_id,
                chat_id: row.chat_id,
                status: row.status,
                delivered_to: row.user_id.clone(),
                user_id: row.user_id,
                timestamp: row.updated_at,
            },
            in_group: row.in_group,
        }
    }
}

const CHANGED: &str = "ms.message_id, ms.user_id, ms.chat_id, ms.sender_id, ms.status, ms.updated_at, c.kind = 'group' AS in_group";

/// A group's sender learns of deliveries and reads by `receipt`: its rows
/// never wait for the sender to acknowledge a `message:status`.
const SYNCED: &str = "sender_synced = (c.kind = 'group')";

/// The order every status write locks rows in, so that an ack batch and a
/// read of the same messages never wait on each other in a circle.
const LOCK_ORDER: &str = "ORDER BY ms.user_id COLLATE \"C\", ms.chat_id, ms.seq FOR NO KEY UPDATE OF ms";

/// Marks (message, recipient) pairs delivered where they are still `sent`.
/// Returns the rows that changed, for the senders' ✓✓.
pub async fn mark_delivered(
    executor: impl PgExecutor<'_>,
    message_ids: &[Uuid],
    user_ids: &[String],
) -> Result<Vec<StatusChange>, sqlx::Error> {
    let rows: Vec<ChangedRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH locked AS (
                SELECT ms.message_id, ms.user_id FROM message_status ms
                  JOIN UNNEST($1::uuid[], $2::text[]) AS j(message_id, user_id)
                    ON ms.message_id = j.message_id AND ms.user_id = j.user_id
                 WHERE ms.status = 'sent'
                 {LOCK_ORDER})
         UPDATE message_status ms
            SET status = 'delivered', updated_at = now(), {SYNCED}
           FROM locked l, chats c
          WHERE ms.message_id = l.message_id AND ms.user_id = l.user_id AND ms.status = 'sent' AND c.id = ms.chat_id
          RETURNING {CHANGED}"
    )))
    .bind(message_ids)
    .bind(user_ids)
    .fetch_all(executor)
    .await?;
    Ok(rows.into_iter().map(StatusChange::from).collect())
}

/// Marks (message, recipient) pairs read where they are `sent` or `delivered`.
pub async fn mark_read(
    executor: impl PgExecutor<'_>,
    message_ids: &[Uuid],
    user_ids: &[String],
) -> Result<Vec<StatusChange>, sqlx::Error> {
    let rows: Vec<ChangedRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH locked AS (
                SELECT ms.message_id, ms.user_id FROM message_status ms
                  JOIN UNNEST($1::uuid[], $2::text[]) AS j(message_id, user_id)
                    ON ms.message_id = j.message_id AND ms.user_id = j.user_id
                 WHERE ms.status IN ('sent', 'delivered')
                 {LOCK_ORDER})
         UPDATE message_status ms
            SET status = 'read', updated_at = now(), {SYNCED}
           FROM locked l, chats c
          WHERE ms.message_id = l.message_id AND ms.user_id = l.user_id AND ms.status IN ('sent', 'delivered')
            AND c.id = ms.chat_id
          RETURNING {CHANGED}"
    )))
    .bind(message_ids)
    .bind(user_ids)
    .fetch_all(executor)
    .await?;
    Ok(rows.into_iter().map(StatusChange::from).collect())
}

/// Marks everything in a chat up to `up_to_seq` read for `user_id`.
pub async fn mark_read_up_to(
    executor: impl PgExecutor<'_>,
    user_id: &str,
    chat_id: Uuid,
    up_to_seq: i64,
) -> Result<Vec<StatusChange>, sqlx::Error> {
    let rows: Vec<ChangedRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH locked AS (
                SELECT ms.message_id, ms.user_id FROM message_status ms
                 WHERE ms.user_id = $1 AND ms.chat_id = $2 AND ms.seq <= $3 AND ms.status IN ('sent', 'delivered')
                 {LOCK_ORDER})
         UPDATE message_status ms
            SET status = 'read', updated_at = now(), {SYNCED}
           FROM locked l, chats c
          WHERE ms.message_id = l.message_id AND ms.user_id = l.user_id AND ms.status IN ('sent', 'delivered')
            AND c.id = ms.chat_id
          RETURNING {CHANGED}"
    )))
    .bind(user_id)
    .bind(chat_id)
    .bind(up_to_seq)
    .fetch_all(executor)
    .await?;
    Ok(rows.into_iter().map(StatusChange::from).collect())
}

/// Whether `user_id` is a recipient of `message_id` (for acks by message id).
pub async fn is_recipient(executor: impl PgExecutor<'_>, message_id: Uuid, user_id: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM message_status WHERE message_id = $1 AND user_id = $2)")
        .bind(message_id)
        .bind(user_id)
        .fetch_one(executor)
        .await
}

/// Records that senders have seen these status changes (they acked the
/// `message:status` frame). Only if the status is still the one they saw.
pub async fn mark_sender_synced(
    executor: impl PgExecutor<'_>,
    message_ids: &[Uuid],
    user_ids: &[String],
    statuses: &[DeliveryStatus],
) -> Result<u64, sqlx::Error> {
    // Locked in the order every status write uses: two nodes' writers (one
    // marking delivered, the other recording the sender's acknowledgement of
    // the same rows) otherwise deadlock, and PostgreSQL breaks that after a second.
    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
        "WITH locked AS (
                SELECT ms.message_id, ms.user_id FROM message_status ms
                  JOIN UNNEST($1::uuid[], $2::text[], $3::delivery_status[]) AS j(message_id, user_id, status)
                    ON ms.message_id = j.message_id AND ms.user_id = j.user_id AND ms.status = j.status
                 WHERE NOT ms.sender_synced
                 {LOCK_ORDER})
         UPDATE message_status ms SET sender_synced = true
           FROM locked l
          WHERE ms.message_id = l.message_id AND ms.user_id = l.user_id AND NOT ms.sender_synced"
    )))
    .bind(message_ids)
    .bind(user_ids)
    .bind(statuses)
    .execute(executor)
    .await?;
    Ok(done.rows_affected())
}

/// Marks jobs parked: they ran out of retry tiers while the recipient was offline.
pub async fn park(pool: &PgPool, message_ids: &[Uuid], user_ids: &[String]) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
        "WITH locked AS (
                SELECT ms.message_id, ms.user_id FROM message_status ms
                  JOIN UNNEST($1::uuid[], $2::text[]) AS j(message_id, user_id)
                    ON ms.message_id = j.message_id AND ms.user_id = j.user_id
                 WHERE ms.status = 'sent'
                 {LOCK_ORDER})
         UPDATE message_status ms SET parked_at = now()
           FROM locked l
          WHERE ms.message_id = l.message_id AND ms.user_id = l.user_id AND ms.status = 'sent'"
    )))
    .bind(message_ids)
    .bind(user_ids)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Status changes a sender has not acknowledged, in order, after `after_status_id`.
pub async fn unsynced_for_sender(
    pool: &PgPool,
    sender_id: &str,
    after_status_id: i64,
    limit: i64,
) -> Result<Vec<(i64, StatusUpdate)>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        id: i64,
        #[sqlx(flatten)]
        changed: ChangedRow,
    }
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT ms.id, {CHANGED} FROM message_status ms JOIN chats c ON c.id = ms.chat_id
          WHERE ms.sender_id = $1 AND NOT ms.sender_synced AND ms.id > $2
          ORDER BY ms.id LIMIT $3"
    )))
    .bind(sender_id)
    .bind(after_status_id)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|row| (row.id, StatusChange::from(row.changed).update)).collect())
}

/// Counts of a user's pending (sent) and parked messages.
pub async fn pending_counts(pool: &PgPool, user_id: &str) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*), count(parked_at) FROM message_status WHERE user_id = $1 AND status = 'sent'",
    )
    .bind(user_id)
    .fetch_one(pool)
    .await
}

/// Total parked jobs (operators' view until metrics exist).
pub async fn parked_total(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM message_status WHERE status = 'sent' AND parked_at IS NOT NULL")
        .fetch_one(pool)
        .await
}


/// Moves the watermarks of these (user, chat) members up to what their
/// `message_status` rows now say: `delivered_seq` to just before their first
/// message still `sent` or `expired` (else the chat's end: their own messages
/// count), `read_seq` likewise before the first not `read`. Call it in the
/// transaction that changed the statuses, after the change. Returns the
/// moves, for the `receipt`s.
///
/// The members' rows are locked first, in a fixed order, by a statement of
/// its own: a concurrent writer of the same member then commits before the
/// recomputation starts, and READ COMMITTED gives that next statement a
/// snapshot with its changes in it.
pub async fn advance_watermarks(
    conn: &mut sqlx::PgConnection,
    members: &[(String, Uuid)],
) -> Result<Vec<WatermarkMove>, sqlx::Error> {
    if members.is_empty() {
        return Ok(Vec::new());
    }
    let mut members = members.to_vec();
    // (chat, user) in byte order, as `messages::store_batch` locks senders (`COLLATE "C"`).
    members.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    members.dedup();
    let (user_ids, chat_ids): (Vec<String>, Vec<Uuid>) = members.into_iter().unzip();
    sqlx::query(
        "SELECT 1 FROM chat_members m
           JOIN UNNEST($1::text[], $2::uuid[]) WITH ORDINALITY AS p(user_id, chat_id, ord)
             ON m.user_id = p.user_id AND m.chat_id = p.chat_id
          ORDER BY p.ord
            FOR NO KEY UPDATE OF m",
    )
    .bind(&user_ids)
    .bind(&chat_ids)
    .execute(&mut *conn)
    .await?;
    let moved: Vec<(Uuid, String, i64, i64, i64)> = sqlx::query_as(
        "UPDATE chat_members cm
            SET delivered_seq = w.delivered_seq,
                delivered_at = CASE WHEN w.delivered_seq > cm.delivered_seq THEN now() ELSE cm.delivered_at END,
                read_seq = w.read_seq,
                read_at = CASE WHEN w.read_seq > cm.read_seq THEN now() ELSE cm.read_at END
           FROM (SELECT m.chat_id, m.user_id,
                        GREATEST(m.delivered_seq, COALESCE(
                            (SELECT min(ms.seq) - 1 FROM message_status ms
                              WHERE ms.user_id = m.user_id AND ms.chat_id = m.chat_id AND ms.seq > m.delivered_seq
                                AND ms.status IN ('sent', 'expired')),
                            c.last_seq)) AS delivered_seq,
                        GREATEST(m.read_seq, COALESCE(
                            (SELECT min(ms.seq) - 1 FROM message_status ms
                              WHERE ms.user_id = m.user_id AND ms.chat_id = m.chat_id AND ms.seq > m.read_seq
                                AND ms.status <> 'read'),
                            c.last_seq)) AS read_seq,
                        m.delivered_seq AS old_delivered_seq,
                        m.read_seq AS old_read_seq
                   FROM UNNEST($1::text[], $2::uuid[]) AS p(user_id, chat_id)
                   JOIN chat_members m ON m.user_id = p.user_id AND m.chat_id = p.chat_id
                   JOIN chats c ON c.id = m.chat_id) w
          WHERE cm.chat_id = w.chat_id AND cm.user_id = w.user_id
            AND (w.delivered_seq > cm.delivered_seq OR w.read_seq > cm.read_seq)
          RETURNING cm.chat_id, cm.user_id, cm.delivered_seq, cm.read_seq,
                    -- Where the news starts: the lower old value of the watermarks that moved
                    -- (a read watermark far behind must not make every receipt cover the whole chat).
                    LEAST(CASE WHEN w.delivered_seq > w.old_delivered_seq THEN w.old_delivered_seq END,
                          CASE WHEN w.read_seq > w.old_read_seq THEN w.old_read_seq END)",
    )
    .bind(&user_ids)
    .bind(&chat_ids)
    .fetch_all(&mut *conn)
    .await?;
    Ok(moved
        .into_iter()
        .map(|(chat_id, user_id, delivered_seq, read_seq, from_seq)| WatermarkMove {
            receipt: Receipt { chat_id, user_id, delivered_seq, read_seq },
            from_seq,
        })
        .collect())
}

/// The members whose status rows these changes touched.
pub fn members_of(changes: &[StatusChange]) -> Vec<(String, Uuid)> {
    changes.iter().map(|change| (change.update.user_id.clone(), change.update.chat_id)).collect()
}
