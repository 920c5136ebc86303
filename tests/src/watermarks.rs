//! The invariant that keeps the member watermarks honest while
//! `message_status` is still the delivery state: in any snapshot, each
//! member's `delivered_seq` / `read_seq` is exactly what their status rows
//! say. Tests call it after their flows; it reads both in one snapshot, so
//! it needs no waiting.

use std::collections::HashMap;

use sqlx::{Connection, PgPool};
use uuid::Uuid;

/// A member's watermarks as stored and as their status rows imply.
#[derive(Debug, PartialEq, Eq)]
pub struct Expected {
    pub delivered_seq: i64,
    pub read_seq: i64,
}

/// Panics (naming the members) unless every member's watermarks match their
/// `message_status` rows. Returns how many members it checked.
pub async fn assert_watermarks_agree(db: &PgPool) -> usize {
    match check_watermarks(db).await {
        Ok(members) => members,
        Err(Disagreement::Wrong(wrong)) => panic!("{wrong}"),
        Err(Disagreement::Unreadable(error)) => panic!("cannot read the watermarks: {error}"),
    }
}

/// Why [`check_watermarks`] failed.
#[derive(Debug)]
pub enum Disagreement {
    /// The members whose watermarks are wrong, one per line.
    Wrong(String),
    /// The database could not be read (a test that stopped it, say).
    Unreadable(sqlx::Error),
}

/// [`assert_watermarks_agree`] without the panic.
pub async fn check_watermarks(db: &PgPool) -> Result<usize, Disagreement> {
    let (members, rows) = read_snapshot(db).await.map_err(Disagreement::Unreadable)?;

    let mut statuses: HashMap<(Uuid, String), Vec<(i64, String)>> = HashMap::new();
    for (chat_id, user_id, seq, status) in rows {
        statuses.entry((chat_id, user_id)).or_default().push((seq, status));
    }
    let mut wrong = Vec::new();
    for (chat_id, user_id, joined_seq, last_seq, delivered_seq, read_seq) in &members {
        let rows = statuses.get(&(*chat_id, user_id.clone())).map(Vec::as_slice).unwrap_or_default();
        let first = |stops: &dyn Fn(&str) -> bool| {
            rows.iter().filter(|(seq, status)| *seq > *joined_seq && stops(status)).map(|(seq, _)| *seq).min()
        };
        let watermark = |first: Option<i64>| first.map_or(*last_seq, |seq| seq - 1).max(*joined_seq);
        let expected = Expected {
            delivered_seq: watermark(first(&|status| status == "sent" || status == "expired")),
            read_seq: watermark(first(&|status| status != "read")),
        };
        let actual = Expected { delivered_seq: *delivered_seq, read_seq: *read_seq };
        if actual != expected {
            wrong.push(format!("{user_id} in {chat_id}: stored {actual:?}, statuses say {expected:?}"));
        }
    }
    if !wrong.is_empty() {
        return Err(Disagreement::Wrong(format!("watermarks disagree with message_status:\n{}", wrong.join("\n"))));
    }
    Ok(members.len())
}

type Members = Vec<(Uuid, String, i64, i64, i64, i64)>;
type StatusRows = Vec<(Uuid, String, i64, String)>;

/// Members and status rows, read in one snapshot.
async fn read_snapshot(db: &PgPool) -> Result<(Members, StatusRows), sqlx::Error> {
    let mut conn = db.acquire().await?;
    let mut tx = conn.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ").execute(&mut *tx).await?;
    let members: Members = sqlx::query_as(
        "SELECT m.chat_id, m.user_id, m.joined_seq, c.last_seq, m.delivered_seq, m.read_seq
           FROM chat_members m JOIN chats c ON c.id = m.chat_id",
    )
    .fetch_all(&mut *tx)
    .await?;
    let rows: StatusRows =
        sqlx::query_as("SELECT chat_id, user_id, seq, status::text FROM message_status ORDER BY chat_id, user_id, seq")
            .fetch_all(&mut *tx)
            .await?;
    tx.commit().await?;
    Ok((members, rows))
}
