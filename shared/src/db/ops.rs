//! What operators ask of the database: the backlog in total and per user,
//! parked jobs, requeues, retention (expiry) and the offline push claim.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgExecutor, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::job::{DeliveryJob, StatusChange};

/// The whole backlog, for the gauges: undelivered, parked, and the oldest's age in seconds.
pub async fn backlog(pool: &PgPool) -> Result<(i64, i64, i64), sqlx::Error> {
    // Both counts read only the partial index of `sent` rows.
    sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE parked_at IS NOT NULL),
                COALESCE(extract(epoch FROM now() - min(updated_at))::int8, 0)
           FROM message_status WHERE status = 'sent'",
    )
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct Backlog {
    pub user_id: String,
    pub pending: i64,
    pub parked: i64,
    pub oldest: Option<DateTime<Utc>>,
}

/// A user's pending count, parked count and oldest pending message.
pub async fn backlog_of(pool: &PgPool, user_id: &str) -> Result<Backlog, sqlx::Error> {
    sqlx::query_as(
        "SELECT $1::text AS user_id, count(*) AS pending, count(*) FILTER (WHERE parked_at IS NOT NULL) AS parked,
                min(updated_at) AS oldest
           FROM message_status WHERE user_id = $1 AND status = 'sent'",
    )
    .bind(user_id)
    .fetch_one(pool)
    .await
}

/// The users with the most undelivered messages (an admin query, so the
/// metrics carry no per-user labels).
pub async fn top_backlogs(pool: &PgPool, limit: i64) -> Result<Vec<Backlog>, sqlx::Error> {
    sqlx::query_as(
        "SELECT user_id, count(*) AS pending, count(*) FILTER (WHERE parked_at IS NOT NULL) AS parked,
                min(updated_at) AS oldest
           FROM message_status WHERE status = 'sent'
          GROUP BY user_id ORDER BY count(*) DESC, user_id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// One undelivered message of a user, as an operator sees it (no content).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct PendingMessage {
    /// Inbox position: page with `?after=`.
    pub status_id: i64,
    pub message_id: Uuid,
    pub chat_id: Uuid,
    pub seq: i64,
    pub sender_id: String,
    pub sent_at: DateTime<Utc>,
    pub parked_at: Option<DateTime<Utc>>,
}

/// A page of a user's undelivered messages in inbox order after `after`;
/// only parked ones if `parked_only`.
pub async fn pending_of(
    pool: &PgPool,
    user_id: &str,
    after: i64,
    limit: i64,
    parked_only: bool,
) -> Result<Vec<PendingMessage>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id AS status_id, message_id, chat_id, seq, sender_id, updated_at AS sent_at, parked_at
           FROM message_status
          WHERE user_id = $1 AND status = 'sent' AND id > $2 AND (NOT $4 OR parked_at IS NOT NULL)
          ORDER BY id LIMIT $3",
    )
    .bind(user_id)
    .bind(after)
    .bind(limit)
    .bind(parked_only)
    .fetch_all(pool)
    .await
}

/// Un-parks a user's parked jobs and returns them, in inbox order, to be
/// published again. Call in a transaction committed only after the publishes
/// are confirmed, so a failed publish leaves them parked.
pub async fn unpark(tx: &mut Transaction<'_, Postgres>, user_id: &str) -> Result<Vec<DeliveryJob>, sqlx::Error> {
    let rows: Vec<(Uuid, String, Uuid, i64)> = sqlx::query_as(
        "WITH unparked AS (
            UPDATE message_status SET parked_at = NULL
             WHERE user_id = $1 AND status = 'sent' AND parked_at IS NOT NULL
            RETURNING id, message_id, user_id, chat_id, seq)
         SELECT message_id, user_id, chat_id, seq FROM unparked ORDER BY id",
    )
    .bind(user_id)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(message_id, recipient_id, chat_id, seq)| DeliveryJob { message_id, recipient_id, chat_id, seq })
        .collect())
}

/// The user's live connections: (connection id, node id).
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

/// Retention: marks up to `limit` messages `expired` that have waited longer
/// than `retention` for their recipient. Returns the changes for the senders
/// (who also get them on reconnect: `sender_synced` is reset). Safe on several
/// workers at once: rows another sweep holds are skipped.
pub async fn expire(pool: &PgPool, retention: Duration, limit: i64) -> Result<Vec<StatusChange>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        message_id: Uuid,
        user_id: String,
        chat_id: Uuid,
        sender_id: String,
        updated_at: DateTime<Utc>,
    }
    let rows: Vec<Row> = sqlx::query_as(
        "WITH due AS (
            SELECT message_id, user_id FROM message_status
             WHERE status = 'sent' AND updated_at < now() - make_interval(secs => $1)
             ORDER BY updated_at LIMIT $2
             FOR UPDATE SKIP LOCKED)
         UPDATE message_status ms
            SET status = 'expired', updated_at = now(), sender_synced = false, parked_at = NULL
           FROM due
          WHERE ms.message_id = due.message_id AND ms.user_id = due.user_id AND ms.status = 'sent'
         RETURNING ms.message_id, ms.user_id, ms.chat_id, ms.sender_id, ms.updated_at",
    )
    .bind(retention.as_secs_f64())
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| StatusChange {
            sender_id: row.sender_id,
            update: crate::protocol::StatusUpdate {
                message_id: row.message_id,
                chat_id: row.chat_id,
                status: crate::protocol::DeliveryStatus::Expired,
                delivered_to: row.user_id.clone(),
                user_id: row.user_id,
                timestamp: row.updated_at,
            },
            // An expiry moves no watermark (no device had the message): every
            // sender, in a group too, is told per message.
            in_group: false,
        })
        .collect())
}

/// Deletes outbox rows older than `age` whose message has no recipient left
/// to publish to (a safety net: the relay normally clears them).
pub async fn clean_outbox(pool: &PgPool, age: Duration) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM outbox o
          WHERE o.created_at < now() - make_interval(secs => $1)
            AND NOT EXISTS (SELECT 1 FROM message_status ms WHERE ms.message_id = o.message_id AND ms.status = 'sent')",
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

pub async fn push_summary(pool: &PgPool, user_id: &str) -> Result<PushSummary, sqlx::Error> {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM message_status WHERE user_id = $1 AND status = 'sent') AS pending,
                newest.sender_id AS newest_sender_id, u.name AS newest_sender_name, newest.updated_at AS newest_message_at
           FROM (SELECT 1) AS one
           LEFT JOIN LATERAL (SELECT sender_id, updated_at FROM message_status
                               WHERE user_id = $1 AND status = 'sent' ORDER BY id DESC LIMIT 1) newest ON true
           LEFT JOIN users u ON u.id = newest.sender_id",
    )
    .bind(user_id)
    .fetch_one(pool)
    .await
}
