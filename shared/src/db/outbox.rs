//! The outbox: one row per message whose delivery jobs RabbitMQ has not yet
//! confirmed. Written in the send transaction, deleted after the confirms, so a
//! crash between commit and publish loses nothing: the relay publishes what is left.

use std::time::Duration;

use sqlx::{PgExecutor, Postgres, Transaction};
use uuid::Uuid;

use crate::job::DeliveryJob;

/// Locks up to `limit` outbox rows older than `age` that no other relay holds.
pub async fn claim_stale(
    tx: &mut Transaction<'_, Postgres>,
    age: Duration,
    limit: i64,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT message_id FROM outbox
          WHERE created_at < now() - make_interval(secs => $1)
          ORDER BY created_at
          LIMIT $2
          FOR UPDATE SKIP LOCKED",
    )
    .bind(age.as_secs_f64())
    .bind(limit)
    .fetch_all(&mut **tx)
    .await
}

/// The delivery jobs of these messages: one per recipient who still lacks
/// it (no device of theirs has acknowledged it, and it has not expired for
/// them), and one for the sender's other devices if they have any, in seq order.
pub async fn jobs_for(executor: impl PgExecutor<'_>, message_ids: &[Uuid]) -> Result<Vec<DeliveryJob>, sqlx::Error> {
    let rows: Vec<(Uuid, String, Uuid, i64)> = sqlx::query_as(
        "SELECT m.id, cm.user_id, m.chat_id, m.seq FROM messages m
           JOIN chat_members cm ON cm.chat_id = m.chat_id AND cm.user_id <> m.sender_id
          WHERE m.id = ANY($1) AND m.seq > cm.joined_seq AND m.seq > GREATEST(cm.delivered_seq, cm.expired_seq)
         UNION ALL
         SELECT m.id, m.sender_id, m.chat_id, m.seq FROM messages m
          WHERE m.id = ANY($1)
            AND (SELECT count(*) FROM devices d WHERE d.user_id = m.sender_id AND d.revoked_at IS NULL) > 1
          ORDER BY chat_id, seq",
    )
    .bind(message_ids)
    .fetch_all(executor)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(message_id, recipient_id, chat_id, seq)| DeliveryJob { message_id, recipient_id, chat_id, seq })
        .collect())
}

/// The statement of [`delete`]: by key, so the API runs it on connections
/// that keep plans ([`super::Plans::Kept`]).
pub const DELETE: &str = "DELETE FROM outbox WHERE message_id = ANY($1)";

/// Deletes rows whose jobs are confirmed.
pub async fn delete(executor: impl PgExecutor<'_>, message_ids: &[Uuid]) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(DELETE).bind(message_ids).execute(executor).await?;
    Ok(done.rows_affected())
}

/// Number of rows waiting (the outbox lag an operator watches).
pub async fn pending(executor: impl PgExecutor<'_>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM outbox").fetch_one(executor).await
}
