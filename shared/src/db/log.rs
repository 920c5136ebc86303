//! Reading the log for one device: what it has not acknowledged, after its
//! cursor in each chat, in seq order. A drain and a connection's gap reads
//! both come here, so a device that was off while another device of the same
//! user had everything still gets all of it.
//!
//! The log is gap-free per chat and a member sees every entry after joining,
//! so an entry's predecessor for the device is `seq - 1`. Entries the device
//! must pass over without showing come back `silent`: its own messages (a
//! message sent without a device, over REST or before devices, counts as the
//! `default` device's), and
//! messages that expired for the user (retention) before any device had them.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::messages::ReplyRow;
use crate::{
    job::{ChatBaseline, Delivery},
    protocol::EntryKind,
};

/// The chats a device reads, one row each: `after_seq` (what it has
/// acknowledged, or where it starts), `until_seq` (the chat's end, or where
/// the user left it) and `legacy_seq` (see below). `$1` is the user, `$2` the
/// device. A chat without a cursor for the device counts from the user's
/// delivered watermark, where a new device starts. Chats the user left still
/// count until the device has everything sent while they were in.
const SOURCES: &str = "sources AS (
        SELECT cm.chat_id,
               GREATEST(COALESCE(dc.acked_seq, cm.delivered_seq), cm.joined_seq) AS after_seq,
               c.last_seq AS until_seq,
               cm.legacy_seq
          FROM chat_members cm
          CROSS JOIN LATERAL (SELECT c.last_seq FROM chats c WHERE c.id = cm.chat_id OFFSET 0) c
          LEFT JOIN LATERAL (SELECT dc.acked_seq FROM device_cursors dc
                              WHERE dc.user_id = cm.user_id AND dc.device_id = $2 AND dc.chat_id = cm.chat_id OFFSET 0) dc ON true
         WHERE cm.user_id = $1
        UNION ALL
        SELECT dc.chat_id, dc.acked_seq, dc.until_seq, 0
          FROM device_cursors dc
         WHERE dc.user_id = $1 AND dc.device_id = $2 AND dc.until_seq IS NOT NULL AND dc.acked_seq < dc.until_seq
           AND NOT EXISTS (SELECT 1 FROM chat_members cm WHERE cm.user_id = $1 AND cm.chat_id = dc.chat_id OFFSET 0))";

/// Columns of a log entry every read of it selects, beyond the message's own:
/// what it is about (`t`, the target of an edit, delete or reaction) and
/// what it answers (`r`). [`LOG_JOINS`] joins them.
const ENTRY: &str = "m.kind, m.target_id, m.edited_at, m.deleted_at,
     r.id AS reply_id, r.sender_id AS reply_sender, substring(r.content FROM 1 FOR 4 * 100) AS reply_content,
     r.deleted_at IS NOT NULL AS reply_deleted";
/// The sender (`u`), the target (`t`) and the message answered (`r`) of an
/// entry `m`: each one primary-key lookup per entry, fenced (LATERAL, `OFFSET
/// 0`) so that no plan turns it into a scan, whatever the statistics say (the
/// job check keeps one plan per connection: see [`pending_deliveries`]).
const LOG_JOINS: &str = "CROSS JOIN LATERAL (SELECT u.name, u.profile_picture FROM users u WHERE u.id = m.sender_id OFFSET 0) u
           LEFT JOIN LATERAL (SELECT t.deleted_at FROM messages t WHERE t.id = m.target_id OFFSET 0) t ON true
           LEFT JOIN LATERAL (SELECT r.id, r.sender_id, r.content, r.deleted_at FROM messages r WHERE r.id = m.reply_to OFFSET 0) r ON true";

/// An entry every device passes over without showing, whoever reads it: an
/// edit or reaction of a message since deleted for everyone (the delete
/// erased it), and an edit a later edit of the same message supersedes (the
/// message, read now, already has the later content).
const MOOT: &str = "(m.kind IN ('edit', 'react', 'unreact') AND t.deleted_at IS NOT NULL)
        OR (m.kind = 'edit' AND EXISTS (SELECT 1 FROM messages e
                                         WHERE e.target_id = m.target_id AND e.kind = 'edit' AND e.seq > m.seq OFFSET 0))";

/// Columns of a [`Delivery`] read from the log (`m` joined with its `sources`
/// row `s`). Silent: the device's own message (one sent without a device, over
/// REST or before devices, counts as `default`'s); one that expired for the
/// user; and, up to `legacy_seq`, one the `default` device already had when
/// delivery state was a row per message and recipient.
const COLUMNS: &str = "m.id AS message_id, m.chat_id, m.seq, m.sender_id, m.sender_device, m.content, m.message_type, m.created_at,
     u.name AS sender_name, u.profile_picture AS sender_picture,
     (m.sender_id = $1 AND COALESCE(m.sender_device, 'default') = $2)
        OR EXISTS (SELECT 1 FROM hidden_messages h WHERE h.user_id = $1 AND h.message_id = COALESCE(m.target_id, m.id) OFFSET 0)
        OR EXISTS (SELECT 1 FROM expired_ranges er
                    WHERE er.chat_id = m.chat_id AND er.user_id = $1 AND m.seq > er.after_seq AND m.seq <= er.up_to_seq OFFSET 0)
        OR (m.seq <= s.legacy_seq AND $2 = 'default'
            AND EXISTS (SELECT 1 FROM message_status_legacy l WHERE l.message_id = m.id AND l.user_id = $1 OFFSET 0))";

#[derive(sqlx::FromRow)]
struct Row {
    message_id: Uuid,
    chat_id: Uuid,
    seq: i64,
    sender_id: String,
    sender_device: Option<String>,
    content: Vec<u8>,
    message_type: String,
    created_at: DateTime<Utc>,
    sender_name: Option<String>,
    sender_picture: Option<String>,
    silent: bool,
    kind: String,
    target_id: Option<Uuid>,
    edited_at: Option<DateTime<Utc>>,
    deleted_at: Option<DateTime<Utc>>,
    #[sqlx(flatten)]
    reply: ReplyRow,
}

impl From<Row> for Delivery {
    fn from(row: Row) -> Self {
        Delivery {
            // Inbox positions belong to per-recipient rows; the log pages by (chat, seq).
            status_id: 0,
            message_id: row.message_id,
            chat_id: row.chat_id,
            seq: row.seq,
            prev_seq: row.seq - 1,
            sender_id: row.sender_id,
            sender_device: row.sender_device,
            // Stored from a Rust String: always valid UTF-8.
            content: String::from_utf8_lossy(&row.content).into_owned(),
            message_type: row.message_type,
            created_at: row.created_at,
            sender_name: row.sender_name,
            sender_picture: row.sender_picture,
            silent: row.silent,
            kind: EntryKind::from_db(&row.kind),
            target_id: row.target_id,
            reply_to: row.reply.quote(),
            edited_at: row.edited_at,
            deleted_at: row.deleted_at,
        }
    }
}

/// What a device's drain covers, read in one snapshot: each chat it reads
/// with its baseline (the chat's end now, or where the user left it) and
/// where the device stands in it.
#[derive(Debug, Clone)]
pub struct Backlog {
    pub chats: Vec<(ChatBaseline, i64)>,
}

impl Backlog {
    /// Entries the device has not acknowledged below the baselines.
    pub fn pending(&self) -> i64 {
        self.chats.iter().map(|(baseline, after)| (baseline.seq - after).max(0)).sum()
    }

    pub fn baselines(&self) -> Vec<ChatBaseline> {
        self.chats.iter().map(|(baseline, _)| *baseline).collect()
    }
}

pub async fn device_snapshot(pool: &PgPool, user_id: &str, device_id: &str) -> Result<Backlog, sqlx::Error> {
    let rows: Vec<(Uuid, i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(device_snapshot_statement()))
    .bind(user_id)
    .bind(device_id)
    .fetch_all(pool)
    .await?;
    let chats = rows.into_iter().map(|(chat_id, until, after)| (ChatBaseline { chat_id, seq: until }, after)).collect();
    Ok(Backlog { chats })
}

/// One page of a device's backlog: entries after its cursor in each chat, up
/// to the chat's baseline, after position `after` = (chat, seq), in (chat,
/// seq) order. Chats are read one at a time, each an index range of its own
/// (one statement over every chat sorted and limited them all: ten times the
/// rows for a page); chats the snapshot found nothing in are skipped.
pub async fn device_page(
    pool: &PgPool,
    user_id: &str,
    device_id: &str,
    backlog: &Backlog,
    after: (Uuid, i64),
    limit: i64,
) -> Result<Vec<Delivery>, sqlx::Error> {
    let mut page = Vec::new();
    for (baseline, from) in &backlog.chats {
        if baseline.chat_id < after.0 || baseline.seq <= *from {
            continue;
        }
        let after_seq = if baseline.chat_id == after.0 { after.1.max(*from) } else { *from };
        if after_seq >= baseline.seq {
            continue;
        }
        let wanted = limit - page.len() as i64;
        page.extend(device_gap(pool, user_id, device_id, baseline.chat_id, after_seq, baseline.seq, wanted).await?);
        if page.len() as i64 >= limit {
            break;
        }
    }
    Ok(page)
}

/// Entries of one chat with `after_seq < seq <= up_to_seq` for the device, in
/// seq order, from the user's join on and past what the device has
/// acknowledged: what a connection pushes when it finds a hole in a chat's
/// sequence.
pub async fn device_gap(
    pool: &PgPool,
    user_id: &str,
    device_id: &str,
    chat_id: Uuid,
    after_seq: i64,
    up_to_seq: i64,
    limit: i64,
) -> Result<Vec<Delivery>, sqlx::Error> {
    // The limit is taken inside, on the index range of `messages (chat_id,
    // seq)` in order, before anything is joined: with the range joined and
    // sorted first, the planner of a young table (statistics saying a few
    // rows) read and joined the whole rest of the chat for every page, and a
    // drain of n entries cost n²/page rows (a 100,000 drain: 20 pages of up
    // to 10,000 rows per chat).
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(device_gap_statement()))
    .bind(user_id)
    .bind(device_id)
    .bind(chat_id)
    .bind(after_seq)
    .bind(up_to_seq)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(Delivery::from).collect())
}

/// The statement of [`device_snapshot`] (a test checks the plan it keeps).
pub fn device_snapshot_statement() -> String {
    format!("WITH {SOURCES} SELECT chat_id, until_seq, after_seq FROM sources ORDER BY chat_id")
}

/// The statement of [`device_gap`] (a test checks the plan it keeps).
pub fn device_gap_statement() -> String {
    format!(
        "WITH {SOURCES}
         SELECT {COLUMNS} OR {MOOT} AS silent, {ENTRY}
           FROM sources s
           CROSS JOIN LATERAL (
                SELECT * FROM messages m
                 WHERE m.chat_id = s.chat_id AND m.seq > GREATEST($4, s.after_seq) AND m.seq <= LEAST($5, s.until_seq)
                 ORDER BY m.seq
                 LIMIT $6) m
           {LOG_JOINS}
          WHERE s.chat_id = $3
          ORDER BY m.seq"
    )
}

/// Live deliveries for (message, recipient) jobs, in the order given: those
/// the recipient still needs (a member when it was sent, not expired for
/// them, and some device of theirs has not acknowledged it, or they have no
/// device yet). A job of the sender is their other devices' copy.
///
/// Meant for a pool that keeps plans ([`super::Plans::Kept`]): every table is
/// reached by one index lookup per job, fenced (LATERAL or a subquery with
/// `OFFSET 0`, which the planner neither flattens into a join nor turns into
/// a hashed scan), so the one plan fits any statistics. Planned per call it
/// cost about 1 ms to plan, more than it took to run.
pub async fn pending_deliveries(pool: &PgPool, message_ids: &[Uuid], user_ids: &[String]) -> Result<Vec<(String, Delivery)>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Pending {
        recipient_id: String,
        #[sqlx(flatten)]
        row: Row,
    }
    let rows: Vec<Pending> =
        sqlx::query_as(sqlx::AssertSqlSafe(pending_deliveries_statement())).bind(message_ids).bind(user_ids).fetch_all(pool).await?;
    Ok(rows.into_iter().map(|pending| (pending.recipient_id, Delivery::from(pending.row))).collect())
}

/// The statement of [`pending_deliveries`] (a test checks the plan it keeps).
pub fn pending_deliveries_statement() -> String {
    format!(
        "SELECT j.user_id AS recipient_id, m.id AS message_id, m.chat_id, m.seq, m.sender_id, m.sender_device,
                m.content, m.message_type, m.created_at, u.name AS sender_name, u.profile_picture AS sender_picture,
                {MOOT} OR EXISTS (SELECT 1 FROM hidden_messages h
                                   WHERE h.user_id = j.user_id AND h.message_id = COALESCE(m.target_id, m.id) OFFSET 0) AS silent,
                {ENTRY}
           FROM UNNEST($1::uuid[], $2::text[]) WITH ORDINALITY AS j(message_id, user_id, ord)
           CROSS JOIN LATERAL (SELECT * FROM messages m WHERE m.id = j.message_id OFFSET 0) m
           CROSS JOIN LATERAL (SELECT cm.delivered_seq FROM chat_members cm
                                WHERE cm.chat_id = m.chat_id AND cm.user_id = j.user_id AND m.seq > cm.joined_seq OFFSET 0) cm
           {LOG_JOINS}
          WHERE NOT EXISTS (SELECT 1 FROM expired_ranges er
                             WHERE er.chat_id = m.chat_id AND er.user_id = j.user_id
                               AND m.seq > er.after_seq AND m.seq <= er.up_to_seq OFFSET 0)
            AND (NOT EXISTS (SELECT 1 FROM devices d WHERE d.user_id = j.user_id AND d.revoked_at IS NULL OFFSET 0)
                 OR EXISTS (SELECT 1 FROM devices d
                              LEFT JOIN device_cursors dc
                                     ON dc.user_id = d.user_id AND dc.device_id = d.device_id AND dc.chat_id = m.chat_id
                             WHERE d.user_id = j.user_id AND d.revoked_at IS NULL
                               AND COALESCE(dc.acked_seq, cm.delivered_seq) < m.seq OFFSET 0))
          ORDER BY j.ord"
    )
}

/// Which of these messages exist (a job of a message that does not is poison).
pub async fn existing(pool: &PgPool, message_ids: &[Uuid]) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM messages WHERE id = ANY($1)").bind(message_ids).fetch_all(pool).await
}

/// For each (chat, user, after, up_to) range: the other users who sent
/// entries in it, as (index into the ranges, sender). Whom a `receipt` is news for.
pub async fn senders_between(
    pool: &PgPool,
    ranges: &[(Uuid, String, i64, i64)],
) -> Result<Vec<(i64, String)>, sqlx::Error> {
    let chat_ids: Vec<Uuid> = ranges.iter().map(|r| r.0).collect();
    let user_ids: Vec<&str> = ranges.iter().map(|r| r.1.as_str()).collect();
    let after: Vec<i64> = ranges.iter().map(|r| r.2).collect();
    let up_to: Vec<i64> = ranges.iter().map(|r| r.3).collect();
    sqlx::query_as(SENDERS_BETWEEN).bind(&chat_ids).bind(&user_ids).bind(&after).bind(&up_to).fetch_all(pool).await
}

/// The statement of [`senders_between`]: a range of `messages` per range
/// (LATERAL). Planned per call: as a kept plan on a table without statistics
/// it tied between the indexes that start with `chat_id` and could read a
/// whole chat (docs/benchmarks.md, "Issue 13, fifth session").
const SENDERS_BETWEEN: &str = "SELECT r.ord - 1, s.sender_id
   FROM UNNEST($1::uuid[], $2::text[], $3::int8[], $4::int8[]) WITH ORDINALITY AS r(chat_id, user_id, after_seq, up_to_seq, ord)
   CROSS JOIN LATERAL (
        SELECT DISTINCT m.sender_id FROM messages m
         WHERE m.chat_id = r.chat_id AND m.seq > r.after_seq AND m.seq <= r.up_to_seq AND m.sender_id <> r.user_id) s";
