//! Delivery state as cursors: per member and chat, `delivered_seq` (some
//! device of theirs acknowledged everything up to it) and `read_seq`; per
//! device, `acked_seq` and the `told_*` marks (what the device has been shown
//! of its own messages' statuses). A status of one message is derived from
//! these (the `message_status` view); nothing is written per message and
//! recipient.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use crate::{
    job::{SenderStatus, WatermarkMove},
    protocol::{DeliveryStatus, Receipt, StatusUpdate},
};

/// A message as one of its recipients sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addressed {
    pub chat_id: Uuid,
    pub seq: i64,
    pub delivered: bool,
}

/// Where `message_id` stands for `user_id`, if they are a recipient of it
/// (a member who joined before it, not its sender).
pub async fn addressed(executor: impl PgExecutor<'_>, message_id: Uuid, user_id: &str) -> Result<Option<Addressed>, sqlx::Error> {
    let row: Option<(Uuid, i64, bool)> = sqlx::query_as(
        "SELECT m.chat_id, m.seq, m.seq <= cm.delivered_seq
           FROM messages m
           JOIN chat_members cm ON cm.chat_id = m.chat_id AND cm.user_id = $2 AND m.seq > cm.joined_seq
          WHERE m.id = $1 AND m.sender_id <> $2 AND m.kind = 'message'",
    )
    .bind(message_id)
    .bind(user_id)
    .fetch_optional(executor)
    .await?;
    Ok(row.map(|(chat_id, seq, delivered)| Addressed { chat_id, seq, delivered }))
}

/// The members in the order every writer of their rows locks them: (chat,
/// user) in byte order, as `messages::store_batch` locks senders (`COLLATE "C"`).
fn lock_order(members: &[(String, Uuid)]) -> (Vec<String>, Vec<Uuid>) {
    let mut members = members.to_vec();
    members.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    members.dedup();
    members.into_iter().unzip()
}

type MovedRow = (Uuid, String, i64, i64, i64, i64);

fn moves_of(rows: Vec<MovedRow>) -> Vec<WatermarkMove> {
    rows.into_iter()
        .map(|(chat_id, user_id, delivered_seq, read_seq, from_delivered, from_read)| WatermarkMove {
            receipt: Receipt { chat_id, user_id, delivered_seq, read_seq },
            from_delivered,
            from_read,
        })
        .collect()
}

/// Moves these members' delivered watermarks up to the furthest cursor of
/// their devices. Call it in the transaction that moved the cursors, after
/// moving them. Returns the moves, for the senders' ticks and `receipt`s.
///
/// A concurrent writer of the same member holds its row until it commits;
/// each writer covers the cursors it moved itself, so the furthest wins.
pub async fn advance_delivered(
    conn: &mut sqlx::PgConnection,
    members: &[(String, Uuid)],
) -> Result<Vec<WatermarkMove>, sqlx::Error> {
    if members.is_empty() {
        return Ok(Vec::new());
    }
    let (user_ids, chat_ids) = lock_order(members);
    let rows: Vec<MovedRow> = sqlx::query_as(ADVANCE_DELIVERED).bind(&user_ids).bind(&chat_ids).fetch_all(&mut *conn).await?;
    Ok(moves_of(rows))
}

/// The statement of [`advance_delivered`]. Runs on connections that keep
/// plans ([`super::Plans::Kept`]): each member is locked by key, and its
/// devices' furthest cursor read by key (LATERAL, so a batch costs one probe
/// per member, never a join of the batch with itself).
pub const ADVANCE_DELIVERED: &str = "WITH locked AS (
        SELECT m.chat_id, m.user_id, m.delivered_seq, m.read_seq
          FROM chat_members m
          JOIN UNNEST($1::text[], $2::uuid[]) WITH ORDINALITY AS p(user_id, chat_id, ord)
            ON m.user_id = p.user_id AND m.chat_id = p.chat_id
         ORDER BY p.ord
           FOR NO KEY UPDATE OF m)
 UPDATE chat_members cm
    SET delivered_seq = a.acked_seq, delivered_at = now()
   FROM locked l
  CROSS JOIN LATERAL (SELECT max(dc.acked_seq) AS acked_seq FROM device_cursors dc
                       WHERE dc.user_id = l.user_id AND dc.chat_id = l.chat_id) a
  WHERE cm.chat_id = l.chat_id AND cm.user_id = l.user_id AND a.acked_seq > l.delivered_seq
  RETURNING cm.chat_id, cm.user_id, cm.delivered_seq, cm.read_seq, l.delivered_seq, l.read_seq";

/// `message:read`: moves `user_id`'s read watermark in `chat_id` to
/// `up_to_seq` (at most the chat's end; never back) and over their own
/// messages right after it, and the delivered one with it: what was read
/// was delivered. Returns how many messages of
/// others it newly covers, and the move.
pub async fn read_up_to(
    conn: &mut sqlx::PgConnection,
    user_id: &str,
    chat_id: Uuid,
    up_to_seq: i64,
) -> Result<(i64, Option<WatermarkMove>), sqlx::Error> {
    let rows: Vec<MovedRow> = sqlx::query_as(
        "WITH locked AS (
                SELECT m.chat_id, m.user_id, m.delivered_seq, m.read_seq,
                       -- and over the member's own messages right after it
                       COALESCE((SELECT min(o.seq) - 1 FROM messages o
                                  WHERE o.chat_id = m.chat_id AND o.seq > LEAST($3, c.last_seq) AND o.sender_id <> m.user_id),
                                c.last_seq) AS up_to
                  FROM chat_members m JOIN chats c ON c.id = m.chat_id
                 WHERE m.user_id = $1 AND m.chat_id = $2
                   FOR NO KEY UPDATE OF m)
         UPDATE chat_members cm
            SET read_seq = l.up_to, read_at = now(),
                delivered_seq = GREATEST(cm.delivered_seq, l.up_to),
                delivered_at = CASE WHEN l.up_to > cm.delivered_seq THEN now() ELSE cm.delivered_at END
           FROM locked l
          WHERE cm.chat_id = l.chat_id AND cm.user_id = l.user_id AND l.up_to > l.read_seq
          RETURNING cm.chat_id, cm.user_id, cm.delivered_seq, cm.read_seq, l.delivered_seq, l.read_seq",
    )
    .bind(user_id)
    .bind(chat_id)
    .bind(up_to_seq)
    .fetch_all(&mut *conn)
    .await?;
    let Some(moved) = moves_of(rows).pop() else { return Ok((0, None)) };
    let newly_read: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM messages WHERE chat_id = $1 AND seq > $2 AND seq <= $3 AND sender_id <> $4 AND kind = 'message'",
    )
    .bind(chat_id)
    .bind(moved.from_read)
    .bind(moved.receipt.read_seq)
    .bind(user_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok((newly_read, Some(moved)))
}

/// The statement of [`statuses_of_moves`]. Every table is reached by index
/// lookups or ranges, each fenced (LATERAL or a subquery with `OFFSET 0`) so
/// that one plan fits any statistics: it runs on a pool that keeps plans
/// ([`super::Plans::Kept`]). Per move, two ranges of `messages (chat_id,
/// seq)`: what became read, and what became delivered and is not read. As a
/// join, the planner of a young table read every message of the chat; and
/// without `ORDER BY m.seq` it took `(chat_id, created_at)` for the range,
/// with the bounds as a filter over the whole chat.
pub const STATUSES_OF_MOVES: &str = "WITH r AS (
                SELECT r.* FROM UNNEST($1::uuid[], $2::text[], $3::int8[], $4::int8[], $5::int8[], $6::int8[])
                       WITH ORDINALITY AS r(chat_id, user_id, from_delivered, to_delivered, from_read, to_read, ord)
                 WHERE EXISTS (SELECT 1 FROM chats c WHERE c.id = r.chat_id AND c.kind = 'direct' OFFSET 0)),
              news AS (
                SELECT r.ord, r.user_id, m.id, m.chat_id, m.seq, m.sender_id, 'read'::delivery_status AS status,
                       r.from_read AS chain_start
                  FROM r CROSS JOIN LATERAL (
                        SELECT m.* FROM messages m
                         WHERE m.chat_id = r.chat_id AND m.seq > r.from_read AND m.seq <= r.to_read
                           AND m.sender_id <> r.user_id AND m.kind = 'message'
                         ORDER BY m.seq OFFSET 0) m
                 WHERE r.to_read > r.from_read
                UNION ALL
                SELECT r.ord, r.user_id, m.id, m.chat_id, m.seq, m.sender_id, 'delivered', r.from_delivered
                  FROM r CROSS JOIN LATERAL (
                        SELECT m.* FROM messages m
                         WHERE m.chat_id = r.chat_id AND m.seq > GREATEST(r.from_delivered, r.to_read)
                           AND m.seq <= r.to_delivered AND m.sender_id <> r.user_id AND m.kind = 'message'
                         ORDER BY m.seq OFFSET 0) m
                 WHERE r.to_delivered > GREATEST(r.from_delivered, r.to_read))
         SELECT n.id AS message_id, n.chat_id, n.seq, n.sender_id, n.user_id, n.status,
                COALESCE(LAG(n.seq) OVER (PARTITION BY n.ord, n.status ORDER BY n.seq),
                         (SELECT max(p.seq) FROM messages p
                           WHERE p.chat_id = n.chat_id AND p.sender_id = n.sender_id AND p.seq <= n.chain_start
                             AND p.kind = 'message' OFFSET 0),
                         0) AS anchor
           FROM news n
          WHERE NOT EXISTS (SELECT 1 FROM expired_ranges er
                             WHERE er.chat_id = n.chat_id AND er.user_id = n.user_id
                               AND n.seq > er.after_seq AND n.seq <= er.up_to_seq OFFSET 0)
          ORDER BY n.ord, n.seq";

/// The `message:status` frames a batch of watermark moves is news of, for
/// the senders of direct chats (a group's sender follows `receipt`s): each
/// message of the other member in the moved range, `read` if the read
/// watermark covers it, else `delivered`. Messages that expired for the
/// member stay expired. Each frame's anchor is the sender's previous
/// message the same news is about (see [`SenderStatus`]).
pub async fn statuses_of_moves(pool: &PgPool, moves: &[WatermarkMove]) -> Result<Vec<(String, SenderStatus)>, sqlx::Error> {
    if moves.is_empty() {
        return Ok(Vec::new());
    }
    let column = |f: fn(&WatermarkMove) -> i64| moves.iter().map(f).collect::<Vec<i64>>();
    let chat_ids: Vec<Uuid> = moves.iter().map(|m| m.receipt.chat_id).collect();
    let user_ids: Vec<&str> = moves.iter().map(|m| m.receipt.user_id.as_str()).collect();
    #[derive(sqlx::FromRow)]
    struct Row {
        message_id: Uuid,
        chat_id: Uuid,
        seq: i64,
        sender_id: String,
        user_id: String,
        status: DeliveryStatus,
        anchor: i64,
    }
    let rows: Vec<Row> = sqlx::query_as(STATUSES_OF_MOVES)
        .bind(&chat_ids)
        .bind(&user_ids)
        .bind(column(|m| m.from_delivered))
        .bind(column(|m| m.receipt.delivered_seq))
        .bind(column(|m| m.from_read))
        .bind(column(|m| m.receipt.read_seq))
        .fetch_all(pool)
        .await?;
    let now = Utc::now();
    Ok(rows
        .into_iter()
        .map(|row| {
            let update = StatusUpdate {
                message_id: row.message_id,
                chat_id: row.chat_id,
                status: row.status,
                delivered_to: row.user_id.clone(),
                user_id: row.user_id,
                timestamp: now,
            };
            (row.sender_id, SenderStatus { update, seq: row.seq, anchor: row.anchor })
        })
        .collect())
}

/// Where a device's replay of owed statuses stands: the last (chat, seq)
/// sent and, per chat and status, the last seq of the chain (the next
/// frame's anchor).
#[derive(Debug, Default)]
pub struct OwedPosition {
    pub after: (Uuid, i64),
    chains: HashMap<(Uuid, DeliveryStatus), i64>,
}

/// The statement of [`owed_statuses`]. Every table is reached by index
/// lookups or ranges fenced with LATERAL or `OFFSET 0`, so that one plan fits
/// any statistics: the worker's drain runs it on a pool that keeps plans
/// ([`super::Plans::Kept`]); planned per call it cost 2.6 ms at every connect.
pub const OWED_STATUSES: &str = "WITH owed AS (
            SELECT dc.chat_id, dc.told_delivered_seq, dc.told_read_seq, dc.told_expired_seq,
                   p.user_id AS recipient_id, p.delivered_seq, p.read_seq, p.delivered_at, p.read_at, p.joined_seq
              FROM device_cursors dc
              CROSS JOIN LATERAL (SELECT p.* FROM chat_members p
                                   WHERE p.chat_id = dc.chat_id AND p.user_id <> dc.user_id OFFSET 0) p
             WHERE dc.user_id = $1 AND dc.device_id = $2 AND dc.until_seq IS NULL
               AND EXISTS (SELECT 1 FROM chats c WHERE c.id = dc.chat_id AND c.kind = 'direct' OFFSET 0))
         SELECT * FROM (
            SELECT m.id AS message_id, m.chat_id, m.seq, o.recipient_id,
                   CASE WHEN m.seq <= o.read_seq THEN 'read' ELSE 'delivered' END::delivery_status AS status,
                   CASE WHEN m.seq <= o.read_seq THEN o.read_at ELSE o.delivered_at END AS at,
                   CASE WHEN m.seq <= o.read_seq THEN o.told_read_seq
                        ELSE GREATEST(o.told_delivered_seq, o.told_read_seq) END AS chain_start
              FROM owed o
              -- At most a page per chat, in seq order off the index, taken
              -- before the page is sorted: read whole, a resync of a sender
              -- owed n statuses cost n²/page rows.
              CROSS JOIN LATERAL (
                SELECT m.id, m.chat_id, m.seq FROM messages m
                 WHERE m.chat_id = o.chat_id AND m.sender_id = $1 AND m.kind = 'message'
                   AND m.seq > GREATEST(o.told_read_seq, o.joined_seq) AND m.seq <= o.delivered_seq
                   AND (m.seq <= o.read_seq OR m.seq > GREATEST(o.told_delivered_seq, o.read_seq))
                   AND (m.chat_id, m.seq) > ($3, $4)
                   AND NOT EXISTS (SELECT 1 FROM expired_ranges er
                                    WHERE er.chat_id = m.chat_id AND er.user_id = o.recipient_id
                                      AND m.seq > er.after_seq AND m.seq <= er.up_to_seq OFFSET 0)
                 ORDER BY m.seq
                 LIMIT $5) m
            UNION ALL
            SELECT m.id, m.chat_id, m.seq, o.recipient_id, 'expired', er.expired_at, o.told_expired_seq
              FROM owed o
              CROSS JOIN LATERAL (SELECT er.* FROM expired_ranges er
                                   WHERE er.chat_id = o.chat_id AND er.user_id = o.recipient_id
                                     AND er.up_to_seq > o.told_expired_seq OFFSET 0) er
              CROSS JOIN LATERAL (
                SELECT m.id, m.chat_id, m.seq FROM messages m
                 WHERE m.chat_id = o.chat_id AND m.sender_id = $1 AND m.kind = 'message'
                   AND m.seq > GREATEST(er.after_seq, o.told_expired_seq) AND m.seq <= er.up_to_seq
                   AND (m.chat_id, m.seq) > ($3, $4)
                 ORDER BY m.seq
                 LIMIT $5) m) s
          ORDER BY s.chat_id, s.seq
          LIMIT $5";

/// A page of the statuses `device_id` of `user_id` is owed for its own
/// messages in direct chats: what the other member's watermarks and expired
/// ranges say beyond what the device acknowledged being shown (its `told_*`
/// marks), in (chat, seq) order.
pub async fn owed_statuses(
    pool: &PgPool,
    user_id: &str,
    device_id: &str,
    position: &mut OwedPosition,
    limit: i64,
) -> Result<Vec<SenderStatus>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        message_id: Uuid,
        chat_id: Uuid,
        seq: i64,
        recipient_id: String,
        status: DeliveryStatus,
        at: Option<DateTime<Utc>>,
        chain_start: i64,
    }
    let rows: Vec<Row> = sqlx::query_as(OWED_STATUSES)
    .bind(user_id)
    .bind(device_id)
    .bind(position.after.0)
    .bind(position.after.1)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let mut page = Vec::with_capacity(rows.len());
    for row in rows {
        position.after = (row.chat_id, row.seq);
        let chain = position.chains.entry((row.chat_id, row.status)).or_insert(row.chain_start);
        let anchor = std::mem::replace(chain, row.seq);
        let update = StatusUpdate {
            message_id: row.message_id,
            chat_id: row.chat_id,
            status: row.status,
            delivered_to: row.recipient_id.clone(),
            user_id: row.recipient_id,
            timestamp: row.at.unwrap_or_else(Utc::now),
        };
        page.push(SenderStatus { update, seq: row.seq, anchor });
    }
    Ok(page)
}
