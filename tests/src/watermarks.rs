//! The invariants that keep the cursors honest: in any snapshot, for every
//! member, `joined_seq <= read_seq <= delivered_seq <= last_seq`, and the
//! delivered watermark is never behind a cursor of one of their devices (it
//! moves in the transaction that moves the cursor); every cursor stays within
//! its chat. Tests call it after their flows; it reads everything in one
//! snapshot, so it needs no waiting.

use sqlx::{Connection, PgPool};

/// Panics (naming the members) unless every member's watermarks and every
/// device cursor hold the invariants. Returns how many members it checked.
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
    let (members, wrong) = read_snapshot(db).await.map_err(Disagreement::Unreadable)?;
    if !wrong.is_empty() {
        return Err(Disagreement::Wrong(format!("cursors break their invariants:\n{}", wrong.join("\n"))));
    }
    Ok(members)
}

/// The number of members, and a line per broken invariant, read in one snapshot.
async fn read_snapshot(db: &PgPool) -> Result<(usize, Vec<String>), sqlx::Error> {
    let mut conn = db.acquire().await?;
    let mut tx = conn.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ").execute(&mut *tx).await?;
    let members: i64 = sqlx::query_scalar("SELECT count(*) FROM chat_members").fetch_one(&mut *tx).await?;
    let wrong: Vec<String> = sqlx::query_scalar(
        "SELECT format('%s in %s: joined %s, read %s, delivered %s, chat ends at %s, furthest device cursor %s',
                       m.user_id, m.chat_id, m.joined_seq, m.read_seq, m.delivered_seq, c.last_seq, d.acked_seq)
           FROM chat_members m
           JOIN chats c ON c.id = m.chat_id
           LEFT JOIN LATERAL (SELECT max(acked_seq) AS acked_seq FROM device_cursors dc
                               WHERE dc.user_id = m.user_id AND dc.chat_id = m.chat_id) d ON true
          WHERE NOT (m.joined_seq <= m.read_seq AND m.read_seq <= m.delivered_seq AND m.delivered_seq <= c.last_seq
                     AND m.delivered_seq >= COALESCE(d.acked_seq, m.delivered_seq))
         UNION ALL
         SELECT format('device %s of %s in %s: acked %s, told %s/%s/%s, chat ends at %s',
                       dc.device_id, dc.user_id, dc.chat_id, dc.acked_seq,
                       dc.told_delivered_seq, dc.told_read_seq, dc.told_expired_seq, c.last_seq)
           FROM device_cursors dc
           JOIN chats c ON c.id = dc.chat_id
          WHERE dc.acked_seq > c.last_seq OR dc.told_delivered_seq > c.last_seq
             OR dc.told_read_seq > c.last_seq OR dc.told_expired_seq > c.last_seq",
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((usize::try_from(members).unwrap_or(0), wrong))
}
