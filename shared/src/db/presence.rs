//! Presence: which API node holds which user's connections, with node leases,
//! so a node that dies without cleaning up is noticed and its rows removed.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// Registers a node at start-up. A node restarting under the same id first
/// removes the connections its previous life left behind.
pub async fn register_node(pool: &PgPool, node_id: &str) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM connections WHERE node_id = $1").bind(node_id).execute(&mut *tx).await?;
    sqlx::query(
        "INSERT INTO api_nodes (node_id) VALUES ($1)
         ON CONFLICT (node_id) DO UPDATE SET started_at = now(), heartbeat_at = now()",
    )
    .bind(node_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Renews the node's lease. False if the row is gone: a worker judged the node
/// dead (e.g. it could not reach PostgreSQL for a while) and removed its connections.
pub async fn heartbeat(pool: &PgPool, node_id: &str) -> Result<bool, sqlx::Error> {
    let renewed = sqlx::query("UPDATE api_nodes SET heartbeat_at = now() WHERE node_id = $1")
        .bind(node_id)
        .execute(pool)
        .await?;
    Ok(renewed.rows_affected() == 1)
}

/// Re-registers a node and its live connections after its lease was lost.
pub async fn restore_node(pool: &PgPool, node_id: &str, connections: &[(Uuid, String, String)]) -> Result<(), sqlx::Error> {
    let ids: Vec<Uuid> = connections.iter().map(|c| c.0).collect();
    let users: Vec<&str> = connections.iter().map(|c| c.1.as_str()).collect();
    let devices: Vec<&str> = connections.iter().map(|c| c.2.as_str()).collect();
    let mut tx = pool.begin().await?;
    sqlx::query("INSERT INTO api_nodes (node_id) VALUES ($1) ON CONFLICT (node_id) DO UPDATE SET heartbeat_at = now()")
        .bind(node_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO connections (id, user_id, device_id, node_id)
         SELECT id, user_id, device_id, $4 FROM UNNEST($1::uuid[], $2::text[], $3::text[]) AS c(id, user_id, device_id)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&ids)
    .bind(&users)
    .bind(&devices)
    .bind(node_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Deletes a stopping node's rows. Returns users left without any connection.
pub async fn unregister_node(pool: &PgPool, node_id: &str) -> Result<Vec<(String, DateTime<Utc>)>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let users: Vec<String> = sqlx::query_scalar("DELETE FROM connections WHERE node_id = $1 RETURNING user_id")
        .bind(node_id)
        .fetch_all(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM api_nodes WHERE node_id = $1").bind(node_id).execute(&mut *tx).await?;
    let offline = mark_offline_if_gone(&mut tx, &users).await?;
    tx.commit().await?;
    Ok(offline)
}

/// Records an open connection of a device that is not revoked; false (and
/// nothing recorded) if it is. The device row is share-locked while the
/// connection row goes in, so a revoke either waits and then finds the
/// connection to close, or has committed and the connection is refused.
pub async fn add_connection(
    pool: &PgPool,
    connection_id: Uuid,
    user_id: &str,
    device_id: &str,
    node_id: &str,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let active: Option<bool> = sqlx::query_scalar(
        "SELECT revoked_at IS NULL FROM devices WHERE user_id = $1 AND device_id = $2 FOR SHARE",
    )
    .bind(user_id)
    .bind(device_id)
    .fetch_optional(&mut *tx)
    .await?;
    if active != Some(true) {
        return Ok(false); // revoked, or dropped as stale in between
    }
    sqlx::query(
        "INSERT INTO connections (id, user_id, device_id, node_id) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING",
    )
    .bind(connection_id)
    .bind(user_id)
    .bind(device_id)
    .bind(node_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// Removes a closed connection. If it was the user's last, stores and returns last_seen.
pub async fn remove_connection(
    pool: &PgPool,
    connection_id: Uuid,
    user_id: &str,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM connections WHERE id = $1").bind(connection_id).execute(&mut *tx).await?;
    let offline = mark_offline_if_gone(&mut tx, &[user_id.to_owned()]).await?;
    tx.commit().await?;
    Ok(offline.into_iter().next().map(|(_, last_seen)| last_seen))
}

/// Sets last_seen for those of `users` with no connection left; returns them.
/// Call after deleting their connections, in the same transaction.
async fn mark_offline_if_gone(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    users: &[String],
) -> Result<Vec<(String, DateTime<Utc>)>, sqlx::Error> {
    // Two connections of one user closing at once: without this lock each
    // transaction still sees the other's (uncommitted) row and neither
    // declares the user offline. Locked in id order, so no deadlock.
    sqlx::query("SELECT id FROM users WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE")
        .bind(users)
        .execute(&mut **tx)
        .await?;
    sqlx::query_as(
        "UPDATE users u SET last_seen = now()
          WHERE u.id = ANY($1) AND NOT EXISTS (SELECT 1 FROM connections c WHERE c.user_id = u.id)
          RETURNING u.id, u.last_seen",
    )
    .bind(users)
    .fetch_all(&mut **tx)
    .await
}

/// Removes the connections of nodes whose lease expired, and those nodes.
/// Returns users left without any connection. Safe to run on several workers:
/// each row is deleted, and each user reported, once.
pub async fn reap_dead_nodes(pool: &PgPool, lease: Duration) -> Result<Vec<(String, DateTime<Utc>)>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let dead: Vec<String> = sqlx::query_scalar(
        "DELETE FROM api_nodes WHERE heartbeat_at < now() - make_interval(secs => $1) RETURNING node_id",
    )
    .bind(lease.as_secs_f64())
    .fetch_all(&mut *tx)
    .await?;
    // Also connections whose node row is gone altogether.
    let users: Vec<String> = sqlx::query_scalar(
        "DELETE FROM connections c
          WHERE c.node_id = ANY($1) OR NOT EXISTS (SELECT 1 FROM api_nodes n WHERE n.node_id = c.node_id)
          RETURNING c.user_id",
    )
    .bind(&dead)
    .fetch_all(&mut *tx)
    .await?;
    let offline = mark_offline_if_gone(&mut tx, &users).await?;
    tx.commit().await?;
    if !dead.is_empty() {
        tracing::warn!(nodes = ?dead, connections = users.len(), "reaped API nodes whose lease expired");
    }
    Ok(offline)
}

/// The statement of [`locate`]: one index probe per user, whatever the
/// statistics say, so the worker keeps its plan ([`super::Plans::Kept`]);
/// planned per call, it planned for longer than it ran.
pub const LOCATE: &str = "SELECT DISTINCT user_id, node_id FROM connections WHERE user_id = ANY($1)";

/// The nodes holding connections of these users: (user_id, node_id), one row per pair.
pub async fn locate(pool: &PgPool, user_ids: &[String]) -> Result<Vec<(String, String)>, sqlx::Error> {
    sqlx::query_as(LOCATE)
        .bind(user_ids)
        .fetch_all(pool)
        .await
}

/// Online users who share a chat with `user_id`, and where they are connected.
pub async fn online_co_members(pool: &PgPool, user_id: &str) -> Result<Vec<(String, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT DISTINCT c.user_id, c.node_id
           FROM chat_members mine
           JOIN chat_members theirs ON theirs.chat_id = mine.chat_id AND theirs.user_id <> mine.user_id
           JOIN connections c ON c.user_id = theirs.user_id
          WHERE mine.user_id = $1",
    )
    .bind(user_id)
    .fetch_all(pool)
    .await
}

/// Where a `typing` of `user_id` in `chat_id` goes: the chat's other members
/// that are connected, and their nodes (user_id, node_id), one row per pair.
/// `None` if `user_id` is not a member of the chat (or there is no such chat).
/// One statement, on the chat's member key and `connections_by_user`.
pub async fn typing_audience(
    pool: &PgPool,
    chat_id: Uuid,
    user_id: &str,
) -> Result<Option<Vec<(String, String)>>, sqlx::Error> {
    // The typer's own row, then (lateral) the others' connections: no row at
    // all means not a member; one row of NULLs, a member nobody else hears.
    let rows: Vec<(Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT DISTINCT online.user_id, online.node_id
           FROM chat_members me
           LEFT JOIN LATERAL (
                SELECT c.user_id, c.node_id
                  FROM chat_members them
                  JOIN connections c ON c.user_id = them.user_id
                 WHERE them.chat_id = me.chat_id AND them.user_id <> me.user_id
           ) online ON true
          WHERE me.chat_id = $1 AND me.user_id = $2",
    )
    .bind(chat_id)
    .bind(user_id)
    .fetch_all(pool)
    .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    Ok(Some(rows.into_iter().filter_map(|(user, node)| Some((user?, node?))).collect()))
}
