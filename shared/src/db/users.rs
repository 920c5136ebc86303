//! The `users` table: the host app's users as Courier knows them.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgExecutor, PgPool};

use crate::auth::Claims;

const MAX_NAME_CHARS: usize = 256;
const MAX_PICTURE_CHARS: usize = 2048;

/// A user as other users see them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserProfile {
    #[serde(rename = "userId")]
    pub id: String,
    pub name: Option<String>,
    pub profile_picture: Option<String>,
    pub last_seen: Option<DateTime<Utc>>,
    /// Whether the user has a connection open on some node now.
    pub online: bool,
}

/// Creates the caller's row on first sight and refreshes name and picture from
/// the token; writes nothing when they are unchanged.
pub async fn upsert_from_claims(pool: &PgPool, claims: &Claims) -> Result<(), sqlx::Error> {
    let name = claims.name.as_deref().map(|n| clean(n, MAX_NAME_CHARS));
    let picture = claims.picture.as_deref().map(|p| clean(p, MAX_PICTURE_CHARS));
    sqlx::query(
        "INSERT INTO users (id, name, profile_picture) VALUES ($1, $2, $3)
         ON CONFLICT (id) DO UPDATE
            SET name = COALESCE(EXCLUDED.name, users.name),
                profile_picture = COALESCE(EXCLUDED.profile_picture, users.profile_picture)
          WHERE (EXCLUDED.name IS NOT NULL AND EXCLUDED.name IS DISTINCT FROM users.name)
             OR (EXCLUDED.profile_picture IS NOT NULL AND EXCLUDED.profile_picture IS DISTINCT FROM users.profile_picture)",
    )
    .bind(&claims.sub)
    .bind(name)
    .bind(picture)
    .execute(pool)
    .await?;
    Ok(())
}

/// Ensures rows exist for ids named before their owners ever logged in; they fill in on first login.
pub async fn ensure_exist(executor: impl PgExecutor<'_>, ids: &[String]) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO users (id) SELECT * FROM UNNEST($1::text[]) ON CONFLICT (id) DO NOTHING")
        .bind(ids)
        .execute(executor)
        .await?;
    Ok(())
}

/// PostgreSQL text cannot hold NUL; names are display strings, so drop it and cap the length.
fn clean(text: &str, max_chars: usize) -> String {
    text.chars().filter(|&c| c != '\0').take(max_chars).collect()
}
