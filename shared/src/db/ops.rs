//! What operators ask of the database: the backlog in total and per user,
//! parked jobs, requeues, retention (expiry) and the offline push claim.
//!
//! Nothing here reads or writes a row per message and recipient: where a
//! member stands is `chat_members` (`delivered_seq`, `expired_seq`,
//! `parked_seq`, `joined_seq`) and the log is `messages` (gap-free `seq` per
//! chat). A member's undelivered messages are the messages of others after
//! `GREATEST(delivered_seq, expired_seq, joined_seq)`: the expiry sweep
//! starts every range it writes there, so the expired ranges cover every
//! message of others between the delivered watermark and `expired_seq`, and
//! none after it. Counts are index ranges of the log: the entries after the
//! watermark (`last_seq` minus it, the log being gap-free) less the member's
//! own (an index-only range of `messages (chat_id, sender_id, seq)`) and less
//! the few rows kept from before the upgrade that say a message was already
//! delivered out of order (`message_status_legacy`).

use std::{fmt, str::FromStr, time::Duration};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgExecutor, PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::log;
use crate::{
    job::{DeliveryJob, StatusChange},
    protocol::{DeliveryStatus, StatusUpdate},
};

/// Per member with entries after their watermark (`$1`: one user, or NULL
/// for everyone): `pending` and `parked` messages of others, and when the
/// oldest pending one was sent. A member is `behind` when the chat's last
/// seq is past the watermark; nobody else is read.
const MEMBER_BACKLOG: &str = "behind AS (
        SELECT cm.chat_id, cm.user_id, c.last_seq, cm.parked_seq,
               GREATEST(cm.delivered_seq, cm.expired_seq, cm.joined_seq) AS after_seq
          FROM chat_members cm
          JOIN chats c ON c.id = cm.chat_id
         WHERE ($1::text IS NULL OR cm.user_id = $1)
           AND c.last_seq > GREATEST(cm.delivered_seq, cm.expired_seq, cm.joined_seq)),
    member_backlog AS (
        SELECT b.chat_id, b.user_id,
               b.last_seq - b.after_seq - own.total - kept.total AS pending,
               GREATEST(LEAST(b.parked_seq, b.last_seq) - b.after_seq, 0) - own.parked - kept.parked AS parked,
               oldest.created_at AS oldest
          FROM behind b
          CROSS JOIN LATERAL (
                SELECT count(*) AS total, count(*) FILTER (WHERE o.seq <= b.parked_seq) AS parked
                  FROM messages o
                 WHERE o.chat_id = b.chat_id AND o.sender_id = b.user_id AND o.seq > b.after_seq) own
          CROSS JOIN LATERAL (
                SELECT count(*) AS total, count(*) FILTER (WHERE l.seq <= b.parked_seq) AS parked
                  FROM message_status_legacy l
                 WHERE l.user_id = b.user_id AND l.chat_id = b.chat_id AND l.seq > b.after_seq) kept
          LEFT JOIN LATERAL (
                SELECT m.created_at FROM messages m
                 WHERE m.chat_id = b.chat_id AND m.seq > b.after_seq AND m.sender_id <> b.user_id
                   AND NOT EXISTS (SELECT 1 FROM message_status_legacy l WHERE l.message_id = m.id AND l.user_id = b.user_id)
                 ORDER BY m.seq
                 LIMIT 1) oldest ON true)";

/// Whether message `m` of a chat was delivered to member `cm` out of order
/// before the upgrade (a row kept in `message_status_legacy`; all of them
/// say delivered or read).
const DELIVERED_BEFORE_UPGRADE: &str =
    "EXISTS (SELECT 1 FROM message_status_legacy l WHERE l.message_id = m.id AND l.user_id = cm.user_id)";

/// The whole backlog, for the gauges: undelivered, parked, and the oldest's age in seconds.
pub async fn backlog(pool: &PgPool) -> Result<(i64, i64, i64), sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH {MEMBER_BACKLOG}
         SELECT COALESCE(sum(pending), 0)::int8, COALESCE(sum(parked), 0)::int8,
                COALESCE(extract(epoch FROM now() - min(oldest))::int8, 0)
           FROM member_backlog"
    )))
    .bind(None::<String>)
    .fetch_one(pool)
    .await
}

/// Outbox rows and the oldest one's age in seconds (the outbox lag).
pub async fn outbox_lag(pool: &PgPool) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as("SELECT count(*), COALESCE(extract(epoch FROM now() - min(created_at))::int8, 0) FROM outbox")
        .fetch_one(pool)
        .await
}

/// One user's backlog in numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Backlog {
    pub user_id: String,
    pub pending: i64,
    pub parked: i64,
    pub oldest: Option<DateTime<Utc>>,
}

/// A user's pending count, parked count and oldest pending message.
pub async fn backlog_of(pool: &PgPool, user_id: &str) -> Result<Backlog, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH {MEMBER_BACKLOG}
         SELECT $1::text AS user_id, COALESCE(sum(pending), 0)::int8 AS pending,
                COALESCE(sum(parked), 0)::int8 AS parked, min(oldest) AS oldest
           FROM member_backlog"
    )))
    .bind(user_id)
    .fetch_one(pool)
    .await
}

/// The users with the most undelivered messages (an admin query, so the
/// metrics carry no per-user labels).
pub async fn top_backlogs(pool: &PgPool, limit: i64) -> Result<Vec<Backlog>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH {MEMBER_BACKLOG}
         SELECT user_id, sum(pending)::int8 AS pending, sum(parked)::int8 AS parked, min(oldest) AS oldest
           FROM member_backlog
          GROUP BY user_id
         HAVING sum(pending) > 0
          ORDER BY sum(pending) DESC, user_id
          LIMIT $2"
    )))
    .bind(None::<String>)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// A place in a user's pending messages, which page in (chat, seq) order:
/// written `CHAT_ID:SEQ` (`?after=` of the admin API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PendingPosition {
    pub chat_id: Uuid,
    pub seq: i64,
}

impl PendingPosition {
    /// Before every message of every chat.
    pub const START: PendingPosition = PendingPosition { chat_id: Uuid::nil(), seq: 0 };
}

impl fmt::Display for PendingPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.chat_id, self.seq)
    }
}

/// Why a `CHAT_ID:SEQ` position does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a position is CHAT_ID:SEQ, as in nextAfter")]
pub struct BadPosition;

impl FromStr for PendingPosition {
    type Err = BadPosition;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (chat, seq) = text.split_once(':').ok_or(BadPosition)?;
        let chat_id = Uuid::parse_str(chat).map_err(|_| BadPosition)?;
        let seq = seq.parse::<i64>().map_err(|_| BadPosition)?;
        Ok(PendingPosition { chat_id, seq })
    }
}

impl Serialize for PendingPosition {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// One undelivered message of a user, as an operator sees it (no content).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingMessage {
    pub message_id: Uuid,
    pub chat_id: Uuid,
    pub seq: i64,
    pub sender_id: String,
    pub sent_at: DateTime<Utc>,
    /// Since when the user's jobs in this chat are parked, if this one is.
    pub parked_at: Option<DateTime<Utc>>,
}

impl PendingMessage {
    /// Where the next page starts if this message ends one.
    pub fn position(&self) -> PendingPosition {
        PendingPosition { chat_id: self.chat_id, seq: self.seq }
    }
}

/// A page of a user's undelivered messages after `after`, in (chat, seq)
/// order: chats by id (ids are time-ordered, so by creation), each chat's
/// messages oldest first. Only parked ones if `parked_only`. Chats are read
/// one at a time, each an index range of `messages (chat_id, seq)`.
pub async fn pending_of(
    pool: &PgPool,
    user_id: &str,
    after: PendingPosition,
    limit: i64,
    parked_only: bool,
) -> Result<Vec<PendingMessage>, sqlx::Error> {
    // The chats with something pending (parked) after `after`, and where it starts.
    let chats: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT cm.chat_id, GREATEST(cm.delivered_seq, cm.expired_seq, cm.joined_seq) AS after_seq
           FROM chat_members cm JOIN chats c ON c.id = cm.chat_id
          WHERE cm.user_id = $1 AND cm.chat_id >= $2
            AND CASE WHEN $3 THEN LEAST(cm.parked_seq, c.last_seq) ELSE c.last_seq END
                > GREATEST(cm.delivered_seq, cm.expired_seq, cm.joined_seq, CASE WHEN cm.chat_id = $2 THEN $4 ELSE 0 END)
          ORDER BY cm.chat_id",
    )
    .bind(user_id)
    .bind(after.chat_id)
    .bind(parked_only)
    .bind(after.seq)
    .fetch_all(pool)
    .await?;
    let mut page: Vec<PendingMessage> = Vec::new();
    for (chat_id, after_seq) in chats {
        let wanted = limit - page.len() as i64;
        if wanted <= 0 {
            break;
        }
        let from = if chat_id == after.chat_id { after_seq.max(after.seq) } else { after_seq };
        let rows: Vec<PendingMessage> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT m.id AS message_id, m.chat_id, m.seq, m.sender_id, m.created_at AS sent_at,
                    CASE WHEN m.seq <= cm.parked_seq THEN cm.parked_at END AS parked_at
               FROM chat_members cm
               JOIN messages m ON m.chat_id = cm.chat_id AND m.seq > $3 AND m.sender_id <> cm.user_id
              WHERE cm.user_id = $1 AND cm.chat_id = $2
                AND (NOT $4 OR m.seq <= cm.parked_seq)
                AND NOT {DELIVERED_BEFORE_UPGRADE}
              ORDER BY m.seq
              LIMIT $5"
        )))
        .bind(user_id)
        .bind(chat_id)
        .bind(from)
        .bind(parked_only)
        .bind(wanted)
        .fetch_all(pool)
        .await?;
        page.extend(rows);
    }
    Ok(page)
}

/// A user's devices as an operator sees them: how far behind each one is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceBacklog {
    pub device_id: String,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub revoked: bool,
    pub revoked_at: Option<DateTime<Utc>>,
    /// Connections the device has open now, on any node.
    pub connections: i64,
    /// Log entries after the device's cursor, summed over its chats: what its
    /// next catch-up covers (its own and expired entries included, which it
    /// passes over unseen). 0 for a revoked device (its cursors are gone).
    pub behind: i64,
    /// Chats in which the device is behind.
    pub chats_behind: i64,
}

/// Every device of `user_id`, revoked ones included, most recently seen
/// first, with how far behind each is (where a drain of it would start: the
/// drain's own reading of the cursors).
pub async fn devices_of(pool: &PgPool, user_id: &str) -> Result<Vec<DeviceBacklog>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        device_id: String,
        created_at: DateTime<Utc>,
        last_seen_at: DateTime<Utc>,
        revoked_at: Option<DateTime<Utc>>,
        connections: i64,
    }
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT d.device_id, d.created_at, d.last_seen_at, d.revoked_at,
                (SELECT count(*) FROM connections c WHERE c.user_id = d.user_id AND c.device_id = d.device_id) AS connections
           FROM devices d
          WHERE d.user_id = $1
          ORDER BY d.last_seen_at DESC, d.device_id",
    )
    .bind(user_id)
    .fetch_all(pool)
    .await?;
    let mut devices = Vec::with_capacity(rows.len());
    for row in rows {
        let (behind, chats_behind) = if row.revoked_at.is_some() {
            (0, 0)
        } else {
            let snapshot = log::device_snapshot(pool, user_id, &row.device_id).await?;
            let chats = snapshot.chats.iter().filter(|(baseline, after)| baseline.seq > *after).count();
            (snapshot.pending(), chats as i64)
        };
        devices.push(DeviceBacklog {
            device_id: row.device_id,
            created_at: row.created_at,
            last_seen_at: row.last_seen_at,
            revoked: row.revoked_at.is_some(),
            revoked_at: row.revoked_at,
            connections: row.connections,
            behind,
            chats_behind,
        });
    }
    Ok(devices)
}

/// Marks jobs parked: they ran out of retry tiers while the recipient was
/// offline. Per member, `parked_seq` moves up to the newest such job's seq
/// (their undelivered messages up to it are parked) and `parked_at` keeps
/// when the parking began. Jobs whose recipient has the message meanwhile
/// (or who sent it: a copy for their other devices) park nothing. Returns
/// how many jobs were parked.
pub async fn park(pool: &PgPool, message_ids: &[Uuid], user_ids: &[String]) -> Result<u64, sqlx::Error> {
    // Members are locked in (chat, user) byte order, the order of every
    // writer of `chat_members` (sends, status writes, the expiry sweep), so
    // none of them waits on another in a circle.
    let parked: i64 = sqlx::query_scalar(
        "WITH jobs AS (
                SELECT m.chat_id, j.user_id, m.seq
                  FROM UNNEST($1::uuid[], $2::text[]) AS j(message_id, user_id)
                  JOIN messages m ON m.id = j.message_id AND m.sender_id <> j.user_id),
              locked AS (
                SELECT cm.chat_id, cm.user_id, GREATEST(cm.delivered_seq, cm.expired_seq, cm.joined_seq) AS after_seq
                  FROM chat_members cm
                 WHERE (cm.chat_id, cm.user_id) IN (SELECT chat_id, user_id FROM jobs)
                 ORDER BY cm.chat_id, cm.user_id COLLATE \"C\"
                   FOR NO KEY UPDATE),
              due AS (
                SELECT l.chat_id, l.user_id, max(j.seq) AS up_to, count(*) AS jobs
                  FROM locked l
                  JOIN jobs j ON j.chat_id = l.chat_id AND j.user_id = l.user_id AND j.seq > l.after_seq
                 GROUP BY l.chat_id, l.user_id),
              parked AS (
                UPDATE chat_members cm
                   -- A parking the watermarks have passed is over: this one starts now.
                   SET parked_at = CASE WHEN cm.parked_seq > GREATEST(cm.delivered_seq, cm.expired_seq, cm.joined_seq)
                                        THEN COALESCE(cm.parked_at, now()) ELSE now() END,
                       parked_seq = GREATEST(cm.parked_seq, d.up_to)
                  FROM due d
                 WHERE cm.chat_id = d.chat_id AND cm.user_id = d.user_id
                RETURNING d.jobs)
         SELECT COALESCE(sum(jobs), 0)::int8 FROM parked",
    )
    .bind(message_ids)
    .bind(user_ids)
    .fetch_one(pool)
    .await?;
    Ok(parked as u64)
}

/// Un-parks a user's parked jobs: clears the parked state of each chat
/// where it is ahead of the delivered watermark, and returns one job per
/// such chat to publish again, a doorbell for the first message the user
/// still lacks there (the worker reads the rest from PostgreSQL; a
/// duplicate is harmless). In chat order. Call in a transaction committed
/// only after the publishes are confirmed, so a failed publish leaves them parked.
pub async fn unpark(tx: &mut Transaction<'_, Postgres>, user_id: &str) -> Result<Vec<DeliveryJob>, sqlx::Error> {
    let rows: Vec<(Uuid, String, Uuid, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH locked AS (
                SELECT cm.chat_id, cm.user_id FROM chat_members cm
                 WHERE cm.user_id = $1 AND cm.parked_seq > cm.delivered_seq
                 ORDER BY cm.chat_id, cm.user_id COLLATE \"C\"
                   FOR NO KEY UPDATE),
              unparked AS (
                UPDATE chat_members cm SET parked_seq = 0, parked_at = NULL
                  FROM locked l
                 WHERE cm.chat_id = l.chat_id AND cm.user_id = l.user_id
                RETURNING cm.chat_id, cm.user_id, GREATEST(cm.delivered_seq, cm.expired_seq, cm.joined_seq) AS after_seq)
         SELECT earliest.id, cm.user_id, cm.chat_id, earliest.seq
           FROM unparked cm
           CROSS JOIN LATERAL (
                SELECT m.id, m.seq FROM messages m
                 WHERE m.chat_id = cm.chat_id AND m.seq > cm.after_seq AND m.sender_id <> cm.user_id
                   AND NOT {DELIVERED_BEFORE_UPGRADE}
                 ORDER BY m.seq
                 LIMIT 1) earliest
          ORDER BY cm.chat_id"
    )))
    .bind(user_id)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(message_id, recipient_id, chat_id, seq)| DeliveryJob { message_id, recipient_id, chat_id, seq })
        .collect())
}

/// A user's connections: (connection id, device id, node id), oldest first.
pub async fn connections_of(
    executor: impl PgExecutor<'_>,
    user_id: &str,
) -> Result<Vec<(Uuid, String, String)>, sqlx::Error> {
    sqlx::query_as("SELECT id, device_id, node_id FROM connections WHERE user_id = $1 ORDER BY connected_at")
        .bind(user_id)
        .fetch_all(executor)
        .await
}

/// Retention: expires, for members whose oldest undelivered message waited
/// longer than `retention`, every message up to the newest one that old (one
/// `expired_ranges` row per member and sweep, `expired_seq` moved to its end,
/// the parked state it covers cleared). Returns a change per expired message
/// of others, for the senders (`in_group` for a group's); a sender's devices
/// that miss it get it on reconnect (their `told_expired_seq` is behind).
///
/// At most about `limit` log entries per call (oldest backlogs first; a
/// longer backlog is cut at `limit` and continues on the next call), so call
/// it until it returns nothing. Safe on several workers at once: members
/// another sweep (or any writer) holds are skipped.
pub async fn expire(pool: &PgPool, retention: Duration, limit: i64) -> Result<Vec<StatusChange>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        message_id: Uuid,
        user_id: String,
        chat_id: Uuid,
        seq: i64,
        sender_id: String,
        expired_at: DateTime<Utc>,
        in_group: bool,
    }
    // `due` finds candidates from the statement's snapshot and `picked` the
    // oldest within the budget; `locked` takes their rows (in the order every
    // writer of `chat_members` uses, skipping those held) and re-reads the
    // watermarks as they are now, and `swept` decides from those: a member
    // whose watermark moved meanwhile is left alone, and a range is never
    // longer than the budget estimated (the watermark only moves forward).
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH due AS (
                SELECT cm.chat_id, cm.user_id, earliest.created_at,
                       -- At most this many entries to expire (the range ends by the chat's end).
                       LEAST(c.last_seq - GREATEST(cm.delivered_seq, cm.expired_seq, cm.joined_seq), $2) AS entries
                  FROM chat_members cm
                  JOIN chats c ON c.id = cm.chat_id
                 CROSS JOIN LATERAL (
                        SELECT m.created_at FROM messages m
                         WHERE m.chat_id = cm.chat_id AND m.sender_id <> cm.user_id
                           AND m.seq > GREATEST(cm.delivered_seq, cm.expired_seq, cm.joined_seq)
                           AND NOT {DELIVERED_BEFORE_UPGRADE}
                         ORDER BY m.seq
                         LIMIT 1) earliest
                 WHERE c.last_seq > GREATEST(cm.delivered_seq, cm.expired_seq, cm.joined_seq)
                   AND earliest.created_at < now() - make_interval(secs => $1)
                 ORDER BY earliest.created_at
                 LIMIT $2),
              picked AS (
                -- Oldest first, whole members while fewer than `limit` entries came before them.
                SELECT d.chat_id, d.user_id
                  FROM (SELECT due.*, sum(entries) OVER (ORDER BY created_at, chat_id, user_id COLLATE \"C\"
                                                         ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS before
                          FROM due) d
                 WHERE COALESCE(d.before, 0) < $2),
              locked AS (
                SELECT cm.chat_id, cm.user_id, cm.parked_seq,
                       GREATEST(cm.delivered_seq, cm.expired_seq, cm.joined_seq) AS after_seq
                  FROM chat_members cm
                 WHERE (cm.chat_id, cm.user_id) IN (SELECT chat_id, user_id FROM picked)
                 ORDER BY cm.chat_id, cm.user_id COLLATE \"C\"
                   FOR NO KEY UPDATE SKIP LOCKED),
              swept AS (
                SELECT l.chat_id, l.user_id, l.after_seq, l.parked_seq, c.kind = 'group' AS in_group,
                       -- The newest message older than the retention (never before the
                       -- first undelivered one), at most `limit` entries on.
                       LEAST(GREATEST(newest.seq, earliest.seq), l.after_seq + $2) AS up_to_seq
                  FROM locked l
                  JOIN chats c ON c.id = l.chat_id
                 CROSS JOIN LATERAL (
                        SELECT m.seq, m.created_at FROM messages m
                         WHERE m.chat_id = l.chat_id AND m.sender_id <> l.user_id AND m.seq > l.after_seq
                           AND NOT EXISTS (SELECT 1 FROM message_status_legacy k WHERE k.message_id = m.id AND k.user_id = l.user_id)
                         ORDER BY m.seq
                         LIMIT 1) earliest
                 CROSS JOIN LATERAL (
                        SELECT m.seq FROM messages m
                         WHERE m.chat_id = l.chat_id AND m.created_at < now() - make_interval(secs => $1)
                         ORDER BY m.created_at DESC
                         LIMIT 1) newest
                 WHERE earliest.created_at < now() - make_interval(secs => $1)),
              recorded AS (
                INSERT INTO expired_ranges (chat_id, user_id, after_seq, up_to_seq)
                SELECT chat_id, user_id, after_seq, up_to_seq FROM swept),
              moved AS (
                UPDATE chat_members cm
                   SET expired_seq = s.up_to_seq,
                       parked_seq = CASE WHEN cm.parked_seq <= s.up_to_seq THEN 0 ELSE cm.parked_seq END,
                       parked_at = CASE WHEN cm.parked_seq <= s.up_to_seq THEN NULL ELSE cm.parked_at END
                  FROM swept s
                 WHERE cm.chat_id = s.chat_id AND cm.user_id = s.user_id)
         SELECT m.id AS message_id, cm.user_id, m.chat_id, m.seq, m.sender_id, now() AS expired_at, cm.in_group
           FROM swept cm
           JOIN messages m ON m.chat_id = cm.chat_id AND m.seq > cm.after_seq AND m.seq <= cm.up_to_seq
                          AND m.sender_id <> cm.user_id
          WHERE NOT {DELIVERED_BEFORE_UPGRADE}
          ORDER BY m.chat_id, cm.user_id, m.seq"
    )))
    .bind(retention.as_secs_f64())
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| StatusChange {
            sender_id: row.sender_id,
            update: StatusUpdate {
                message_id: row.message_id,
                chat_id: row.chat_id,
                status: DeliveryStatus::Expired,
                delivered_to: row.user_id.clone(),
                user_id: row.user_id,
                timestamp: row.expired_at,
            },
            seq: row.seq,
            in_group: row.in_group,
        })
        .collect())
}

/// Deletes outbox rows older than `age` whose message has no recipient left
/// to publish to (a safety net: the relay normally clears them): no member
/// but the sender who joined before it still lacks it (it is after their
/// delivered watermark and not expired for them). Rows of messages that are
/// gone go too.
pub async fn clean_outbox(pool: &PgPool, age: Duration) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM outbox o
          WHERE o.created_at < now() - make_interval(secs => $1)
            AND NOT EXISTS (
                SELECT 1 FROM messages m
                  JOIN chat_members cm ON cm.chat_id = m.chat_id AND cm.user_id <> m.sender_id
                 WHERE m.id = o.message_id
                   AND m.seq > GREATEST(cm.delivered_seq, cm.expired_seq, cm.joined_seq))",
    )
    .bind(age.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Offline push: claims the right to notify `user_id` now. True for exactly
/// one caller per quiet period, across every worker.
pub async fn claim_push(pool: &PgPool, user_id: &str, quiet: Duration) -> Result<bool, sqlx::Error> {
    let claimed: Option<String> = sqlx::query_scalar(
        "INSERT INTO push_notifications (user_id, notified_at) VALUES ($1, now())
         ON CONFLICT (user_id) DO UPDATE SET notified_at = now()
          WHERE push_notifications.notified_at < now() - make_interval(secs => $2)
         RETURNING user_id",
    )
    .bind(user_id)
    .bind(quiet.as_secs_f64())
    .fetch_optional(pool)
    .await?;
    Ok(claimed.is_some())
}

/// What an offline push says: how many messages wait, and the newest one's sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct PushSummary {
    pub pending: i64,
    pub newest_sender_id: Option<String>,
    pub newest_sender_name: Option<String>,
    pub newest_message_at: Option<DateTime<Utc>>,
}

/// A user's undelivered messages across their chats: how many, and the
/// newest one's sender and time.
pub async fn push_summary(pool: &PgPool, user_id: &str) -> Result<PushSummary, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH {MEMBER_BACKLOG},
              newest AS (
                SELECT n.sender_id, n.created_at
                  FROM behind cm
                 CROSS JOIN LATERAL (
                        SELECT m.sender_id, m.created_at FROM messages m
                         WHERE m.chat_id = cm.chat_id AND m.seq > cm.after_seq AND m.sender_id <> cm.user_id
                           AND NOT {DELIVERED_BEFORE_UPGRADE}
                         ORDER BY m.seq DESC
                         LIMIT 1) n
                 ORDER BY n.created_at DESC
                 LIMIT 1)
         SELECT (SELECT COALESCE(sum(pending), 0)::int8 FROM member_backlog) AS pending,
                newest.sender_id AS newest_sender_id, u.name AS newest_sender_name, newest.created_at AS newest_message_at
           FROM (SELECT 1) AS one
           LEFT JOIN newest ON true
           LEFT JOIN users u ON u.id = newest.sender_id"
    )))
    .bind(user_id)
    .fetch_one(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_and_order_by_chat_then_seq() {
        let position = PendingPosition { chat_id: Uuid::from_u128(7), seq: 42 };
        assert_eq!(position.to_string().parse::<PendingPosition>(), Ok(position));
        assert_eq!(serde_json::to_value(position).unwrap(), serde_json::json!(position.to_string()));
        assert!(PendingPosition::START < position);
        assert!(PendingPosition { chat_id: Uuid::from_u128(7), seq: 43 } > position);
        assert!(PendingPosition { chat_id: Uuid::from_u128(8), seq: 1 } > position);
        for bad in ["", "17", "nope:1", &format!("{}:x", Uuid::nil()), &format!("{}", Uuid::nil())] {
            assert_eq!(bad.parse::<PendingPosition>(), Err(BadPosition), "{bad}");
        }
    }
}
