//! `dead_letters`: poison jobs moved out of the RabbitMQ dead queue, so an
//! operator can list, inspect, replay and drop them by id.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;

/// A dead letter as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    pub id: i64,
    pub reason: String,
    pub source_queue: Option<String>,
    /// The body as JSON when it is JSON, else as (lossy) text.
    pub body: Value,
    pub headers: Value,
    pub received_at: DateTime<Utc>,
    /// The raw body, for replay.
    #[serde(skip)]
    pub raw: Vec<u8>,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    reason: String,
    source_queue: Option<String>,
    body: Vec<u8>,
    headers: Value,
    received_at: DateTime<Utc>,
}

impl From<Row> for DeadLetter {
    fn from(row: Row) -> Self {
        let body = serde_json::from_slice(&row.body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&row.body).into_owned()));
        DeadLetter {
            id: row.id,
            reason: row.reason,
            source_queue: row.source_queue,
            body,
            headers: row.headers,
            received_at: row.received_at,
            raw: row.body,
        }
    }
}

/// Stores one dead letter; returns its id.
pub async fn insert(
    pool: &PgPool,
    reason: &str,
    source_queue: Option<&str>,
    body: &[u8],
    headers: &Value,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("INSERT INTO dead_letters (reason, source_queue, body, headers) VALUES ($1, $2, $3, $4) RETURNING id")
        .bind(reason)
        .bind(source_queue)
        .bind(body)
        .bind(headers)
        .fetch_one(pool)
        .await
}

/// Dead letters after id `after`, oldest first.
pub async fn list(pool: &PgPool, after: i64, limit: i64) -> Result<Vec<DeadLetter>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, reason, source_queue, body, headers, received_at FROM dead_letters WHERE id > $1 ORDER BY id LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(DeadLetter::from).collect())
}

pub async fn get(pool: &PgPool, id: i64) -> Result<Option<DeadLetter>, sqlx::Error> {
    let row: Option<Row> =
        sqlx::query_as("SELECT id, reason, source_queue, body, headers, received_at FROM dead_letters WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?;
    Ok(row.map(DeadLetter::from))
}

/// Deletes one; false if it was not there.
pub async fn delete(pool: &PgPool, id: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM dead_letters WHERE id = $1").bind(id).execute(pool).await?;
    Ok(done.rows_affected() == 1)
}

pub async fn count(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM dead_letters").fetch_one(pool).await
}

/// Retention of dead letters: deletes those older than `age`.
pub async fn purge_older_than(pool: &PgPool, age: Duration) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM dead_letters WHERE received_at < now() - make_interval(secs => $1)")
        .bind(age.as_secs_f64())
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}
