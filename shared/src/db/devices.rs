//! A user's devices, and each device's cursor in each of the user's chats.
//!
//! A connection belongs to a device: the JWT's `did` claim, else the
//! `deviceId` connect parameter, else [`DEFAULT_DEVICE`], so clients that name
//! none behave as one device per user. A device seen for the first time starts
//! at the user's delivered watermark in every chat: it gets what no device of
//! the user has yet, and everything after; older history is paged over REST.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use crate::error::{ClientError, ErrorCode};

/// The device of a connection that names none.
pub const DEFAULT_DEVICE: &str = "default";
/// Longest device id, in bytes (the column's CHECK says the same).
pub const MAX_DEVICE_ID_BYTES: usize = 64;

/// Checks a client-chosen device id: 1–64 bytes of letters, digits and `-_.:`.
pub fn validate_device_id(device_id: &str) -> Result<(), ClientError> {
    let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':');
    if device_id.is_empty() || device_id.len() > MAX_DEVICE_ID_BYTES || !device_id.chars().all(valid_char) {
        return Err(ClientError::invalid_payload(format!(
            "deviceId must be 1 to {MAX_DEVICE_ID_BYTES} letters, digits or -_.: characters"
        )));
    }
    Ok(())
}

/// A device as its user sees it in `GET /api/devices`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    pub device_id: String,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    /// Connections the device has open now, on any node.
    pub connections: i64,
}

/// Records that `device_id` of `user_id` is connecting. A new device is
/// created with a cursor at the user's delivered watermark in each chat,
/// unless the user already has `max_devices`; a revoked one is refused.
/// Returns true when the device is new.
pub async fn register(pool: &PgPool, user_id: &str, device_id: &str, max_devices: usize) -> Result<bool, ClientError> {
    let refreshed: Option<Option<DateTime<Utc>>> = sqlx::query_scalar(
        "UPDATE devices SET last_seen_at = now() WHERE user_id = $1 AND device_id = $2 RETURNING revoked_at",
    )
    .bind(user_id)
    .bind(device_id)
    .fetch_optional(pool)
    .await?;
    match refreshed {
        Some(None) => return Ok(false),
        Some(Some(_)) => return Err(revoked()),
        None => {}
    }
    let mut tx = pool.begin().await?;
    // One new device of a user at a time, so two cannot both pass the limit.
    // NO KEY UPDATE: it must not block (or deadlock with) a send, whose
    // foreign keys share-lock the user's row while it holds its chats' rows.
    sqlx::query("SELECT 1 FROM users WHERE id = $1 FOR NO KEY UPDATE").bind(user_id).execute(&mut *tx).await?;
    // `existing`: NULL when there is no such device, else whether it is active.
    let (active, existing): (i64, Option<bool>) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM devices WHERE user_id = $1 AND revoked_at IS NULL),
                (SELECT revoked_at IS NULL FROM devices WHERE user_id = $1 AND device_id = $2)",
    )
    .bind(user_id)
    .bind(device_id)
    .fetch_one(&mut *tx)
    .await?;
    match existing {
        Some(true) => return Ok(false), // created meanwhile by another connection
        Some(false) => return Err(revoked()),
        None => {}
    }
    if active as usize >= max_devices {
        return Err(ClientError::new(
            ErrorCode::TooManyDevices,
            format!("this user already has {max_devices} devices: revoke one with DELETE /api/devices/{{id}}"),
        ));
    }
    sqlx::query("INSERT INTO devices (user_id, device_id) VALUES ($1, $2)")
        .bind(user_id)
        .bind(device_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        // A new device is owed the statuses of the user's messages that no
        // device of theirs has been shown: it starts at the furthest told
        // marks of the user's devices in each chat (at the join if none).
        "INSERT INTO device_cursors (user_id, device_id, chat_id, acked_seq, told_delivered_seq, told_read_seq, told_expired_seq)
         SELECT cm.user_id, $2, cm.chat_id, cm.delivered_seq,
                COALESCE(t.delivered, cm.joined_seq), COALESCE(t.read, cm.joined_seq), COALESCE(t.expired, cm.joined_seq)
           FROM chat_members cm
           LEFT JOIN LATERAL (SELECT max(dc.told_delivered_seq) AS delivered, max(dc.told_read_seq) AS read,
                                     max(dc.told_expired_seq) AS expired
                                FROM device_cursors dc WHERE dc.user_id = cm.user_id AND dc.chat_id = cm.chat_id) t ON true
          WHERE cm.user_id = $1",
    )
    .bind(user_id)
    .bind(device_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(user_id, device_id, "new device");
    Ok(true)
}

fn revoked() -> ClientError {
    ClientError::new(ErrorCode::DeviceRevoked, "this device was revoked")
}

/// Records that a device was just seen (its connection closed).
pub async fn touch(pool: &PgPool, user_id: &str, device_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE devices SET last_seen_at = now() WHERE user_id = $1 AND device_id = $2")
        .bind(user_id)
        .bind(device_id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Cursors for members who just joined `chat_id` (or its creators): every
/// device of theirs starts at `joined_seq`. (A member who left and rejoins
/// starts there too: what was sent to them before they left and never
/// reached a device is given up.)
pub async fn start_cursors(
    executor: impl PgExecutor<'_>,
    chat_id: Uuid,
    user_ids: &[String],
    joined_seq: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO device_cursors (user_id, device_id, chat_id, acked_seq, told_delivered_seq, told_read_seq, told_expired_seq)
         SELECT d.user_id, d.device_id, $1, $3, $3, $3, $3 FROM devices d
          WHERE d.user_id = ANY($2) AND d.revoked_at IS NULL
         ON CONFLICT (user_id, device_id, chat_id)
         DO UPDATE SET acked_seq = GREATEST(device_cursors.acked_seq, EXCLUDED.acked_seq), until_seq = NULL,
                       told_delivered_seq = GREATEST(device_cursors.told_delivered_seq, EXCLUDED.told_delivered_seq),
                       told_read_seq = GREATEST(device_cursors.told_read_seq, EXCLUDED.told_read_seq),
                       told_expired_seq = GREATEST(device_cursors.told_expired_seq, EXCLUDED.told_expired_seq)",
    )
    .bind(chat_id)
    .bind(user_ids)
    .bind(joined_seq)
    .execute(executor)
    .await?;
    Ok(())
}

/// Which of a device's marks in a chat a step moves: its cursor, or how far
/// it has been shown its own messages' statuses (see `SenderStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mark {
    Acked,
    ToldDelivered,
    ToldRead,
    ToldExpired,
}

/// Moves one mark of each (user, device, chat) to its seq, where the mark
/// already reaches the step's anchor (an expired mark needs no anchor: the
/// expiry sweep's notices come in order). Never back.
pub async fn move_marks(
    executor: impl PgExecutor<'_>,
    mark: Mark,
    user_ids: &[&str],
    device_ids: &[&str],
    chat_ids: &[Uuid],
    anchors: &[i64],
    seqs: &[i64],
) -> Result<u64, sqlx::Error> {
    let moved = sqlx::query(sqlx::AssertSqlSafe(move_marks_statement(mark)))
        .bind(user_ids)
        .bind(device_ids)
        .bind(chat_ids)
        .bind(anchors)
        .bind(seqs)
        .execute(executor)
        .await?;
    Ok(moved.rows_affected())
}

/// The statement of [`move_marks`] for `mark`: the batch joined to the
/// cursors' key, so it may run on connections that keep plans
/// ([`super::Plans::Kept`]).
pub fn move_marks_statement(mark: Mark) -> String {
    let (set, reaches) = match mark {
        Mark::Acked => ("acked_seq", "dc.acked_seq >= m.anchor"),
        Mark::ToldDelivered => ("told_delivered_seq", "GREATEST(dc.told_delivered_seq, dc.told_read_seq) >= m.anchor"),
        Mark::ToldRead => ("told_read_seq", "dc.told_read_seq >= m.anchor"),
        Mark::ToldExpired => ("told_expired_seq", "true"),
    };
    format!(
        "UPDATE device_cursors dc SET {set} = m.seq
           FROM UNNEST($1::text[], $2::text[], $3::uuid[], $4::int8[], $5::int8[])
                AS m(user_id, device_id, chat_id, anchor, seq)
          WHERE dc.user_id = m.user_id AND dc.device_id = m.device_id AND dc.chat_id = m.chat_id
            AND {reaches} AND dc.{set} < m.seq"
    )
}

/// `user_id` left `chat_id`, whose last seq is `last_seq`: their devices
/// still get what was sent while they were in, and no more. A user who never
/// connected gets the `default` device here, so what was sent to them is not
/// lost with the membership.
pub async fn leave(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    chat_id: Uuid,
    user_id: &str,
    delivered_seq: i64,
    last_seq: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO devices (user_id, device_id) SELECT $1, $2
          WHERE NOT EXISTS (SELECT 1 FROM devices WHERE user_id = $1)
         ON CONFLICT DO NOTHING",
    )
    .bind(user_id)
    .bind(DEFAULT_DEVICE)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO device_cursors (user_id, device_id, chat_id, acked_seq, until_seq)
         SELECT user_id, device_id, $2, $3, $4 FROM devices WHERE user_id = $1 AND revoked_at IS NULL
         ON CONFLICT (user_id, device_id, chat_id) DO UPDATE SET until_seq = EXCLUDED.until_seq",
    )
    .bind(user_id)
    .bind(chat_id)
    .bind(delivered_seq)
    .bind(last_seq)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The user's devices that are not revoked, most recently seen first.
pub async fn list(pool: &PgPool, user_id: &str) -> Result<Vec<Device>, sqlx::Error> {
    sqlx::query_as(
        "SELECT d.device_id, d.created_at, d.last_seen_at,
                (SELECT count(*) FROM connections c WHERE c.user_id = d.user_id AND c.device_id = d.device_id) AS connections
           FROM devices d
          WHERE d.user_id = $1 AND d.revoked_at IS NULL
          ORDER BY d.last_seen_at DESC, d.device_id",
    )
    .bind(user_id)
    .fetch_all(pool)
    .await
}

/// Revokes a device: it is refused from now on and its cursors are dropped (so
/// they stop holding the backlog). Returns the nodes that hold connections of
/// it, which must close them; `NotFound` if the user has no such device.
pub async fn revoke(pool: &PgPool, user_id: &str, device_id: &str) -> Result<Vec<String>, ClientError> {
    let mut tx = pool.begin().await?;
    let revoked = sqlx::query(
        "UPDATE devices SET revoked_at = now() WHERE user_id = $1 AND device_id = $2 AND revoked_at IS NULL",
    )
    .bind(user_id)
    .bind(device_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if revoked == 0 {
        return Err(ClientError::new(ErrorCode::NotFound, "no such device"));
    }
    sqlx::query("DELETE FROM device_cursors WHERE user_id = $1 AND device_id = $2")
        .bind(user_id)
        .bind(device_id)
        .execute(&mut *tx)
        .await?;
    let nodes: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT node_id FROM connections WHERE user_id = $1 AND device_id = $2")
            .bind(user_id)
            .bind(device_id)
            .fetch_all(&mut *tx)
            .await?;
    tx.commit().await?;
    tracing::info!(user_id, device_id, "device revoked");
    Ok(nodes)
}

/// Whether a device may hold a connection (it exists and is not revoked).
pub async fn is_active(executor: impl PgExecutor<'_>, user_id: &str, device_id: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM devices WHERE user_id = $1 AND device_id = $2 AND revoked_at IS NULL)")
        .bind(user_id)
        .bind(device_id)
        .fetch_one(executor)
        .await
}

/// Drops devices not seen for `ttl` and without a connection (their cursors
/// go with them), revoked ones included. Returns how many.
pub async fn drop_stale(pool: &PgPool, ttl: std::time::Duration, limit: i64) -> Result<u64, sqlx::Error> {
    let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
    let cutoff = Utc::now().checked_sub_signed(ttl).unwrap_or(DateTime::<Utc>::MIN_UTC);
    let dropped = sqlx::query(
        "DELETE FROM devices d
          WHERE (d.user_id, d.device_id) IN (
                SELECT s.user_id, s.device_id FROM devices s
                 WHERE s.last_seen_at < $1
                   AND NOT EXISTS (SELECT 1 FROM connections c WHERE c.user_id = s.user_id AND c.device_id = s.device_id)
                 LIMIT $2)",
    )
    .bind(cutoff)
    .bind(limit)
    .execute(pool)
    .await?;
    Ok(dropped.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids() {
        for good in ["default", "phone-1", "a", "laptop.work:2", &"x".repeat(64)] {
            assert!(validate_device_id(good).is_ok(), "{good}");
        }
        for bad in ["", "with space", "ünï", "a/b", &"x".repeat(65)] {
            let error = validate_device_id(bad).expect_err(bad);
            assert_eq!(error.code, ErrorCode::InvalidPayload);
        }
    }
}
