//! Catch-up by cursor (`GET /api/sync`): a client that keeps its own store, or
//! a new device, names the highest seq it has per chat and reads what follows
//! from the log (`messages`) in pages, with the members' receipt watermarks,
//! instead of waiting for a drain.
//!
//! Paging is keyset over (chat_id, seq): a page is the first `limit` entries
//! in that order past the cursors, and the cursors it hands back are where the
//! next page starts. That the cursors never skip an entry rests on seqs
//! becoming visible in order within a chat: a send holds its chat's row lock
//! (`FOR NO KEY UPDATE` in `messages::store_batch`) until it commits, so seq N+1
//! commits after seq N and no snapshot shows N+1 without N.

use std::{collections::BTreeMap, fmt, str::FromStr};

use serde::{Serialize, Serializer};
use sqlx::PgPool;
use uuid::Uuid;

use super::messages::{ENTRY_COLUMNS, ENTRY_JOINS, EntryRow, HistoryMessage};
use crate::{
    error::{ClientError, ErrorCode},
    protocol::Receipt,
};

/// Most chats one `cursors` parameter may name.
pub const MAX_CURSORS: usize = 1000;

/// Per chat, the highest seq a client has: `chatId:seq,chatId:seq`, in chat id order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursors(BTreeMap<Uuid, i64>);

impl Cursors {
    /// The seq given for `chat_id`, if any.
    pub fn get(&self, chat_id: &Uuid) -> Option<i64> {
        self.0.get(chat_id).copied()
    }

    /// (chat id, seq) pairs in chat id order.
    pub fn iter(&self) -> impl Iterator<Item = (Uuid, i64)> + '_ {
        self.0.iter().map(|(chat_id, seq)| (*chat_id, *seq))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<(Uuid, i64)> for Cursors {
    fn from_iter<I: IntoIterator<Item = (Uuid, i64)>>(pairs: I) -> Self {
        Self(pairs.into_iter().collect())
    }
}

impl FromStr for Cursors {
    type Err = ClientError;

    /// Parses `chatId:seq,chatId:seq` strictly: an empty string is no cursors;
    /// an empty part, a part without `:`, a chat id that is not a UUID, a seq
    /// that is not a whole number ≥ 0, a chat named twice or more than
    /// [`MAX_CURSORS`] chats are errors naming the offending part.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut cursors = BTreeMap::new();
        if text.is_empty() {
            return Ok(Self(cursors));
        }
        for part in text.split(',') {
            if cursors.len() == MAX_CURSORS {
                return Err(invalid(format!("cursors: at most {MAX_CURSORS} chats")));
            }
            let Some((chat, seq)) = part.split_once(':') else {
                return Err(invalid(format!("cursors: `{}` is not chatId:seq", shown(part))));
            };
            let chat_id = Uuid::try_parse(chat)
                .map_err(|_| invalid(format!("cursors: `{}` in `{}` is not a chat id", shown(chat), shown(part))))?;
            // Digits only: `+1`, `-1` and ` 1` are mistakes, not seqs.
            let seq = Some(seq)
                .filter(|seq| !seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|seq| seq.parse::<i64>().ok())
                .ok_or_else(|| {
                    invalid(format!("cursors: `{}` in `{}` is not a seq (a whole number ≥ 0)", shown(seq), shown(part)))
                })?;
            if cursors.insert(chat_id, seq).is_some() {
                return Err(invalid(format!("cursors: chat {chat_id} is listed twice")));
            }
        }
        Ok(Self(cursors))
    }
}

impl fmt::Display for Cursors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, (chat_id, seq)) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            write!(f, "{chat_id}:{seq}")?;
        }
        Ok(())
    }
}

/// Serialized as the string a client passes back as `?cursors=`.
impl Serialize for Cursors {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

fn invalid(message: String) -> ClientError {
    ClientError::invalid_payload(message)
}

/// A part of the client's input as quoted in an error: at most 80 characters.
fn shown(part: &str) -> String {
    const MAX: usize = 80;
    if part.chars().count() <= MAX { part.to_owned() } else { format!("{}…", part.chars().take(MAX).collect::<String>()) }
}

/// One page of catch-up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncPage {
    /// Log entries past the cursors, in (chat id, seq) order, without
    /// per-recipient `statuses`: the receipts say the same per member.
    pub entries: Vec<HistoryMessage>,
    /// Every member's watermarks in every chat of the caller, in (chat id, user id) order.
    pub receipts: Vec<Receipt>,
    /// Where the next call starts: per chat of the caller, the highest seq
    /// returned, else the seq given (raised to the caller's join).
    /// Written `chatId:seq,chatId:seq`, as `?cursors=` takes it.
    #[schema(value_type = String)]
    pub cursors: Cursors,
    /// Whether entries past this page exist already: call again with `cursors`.
    pub has_more: bool,
}

/// The entries of `user_id`'s chats past `given` (a chat not named starts at
/// the caller's join, a seq below the join is raised to it), at most `limit`,
/// and the receipts of those chats. A named chat the caller is not in is
/// `not_member`.
pub async fn sync(pool: &PgPool, user_id: &str, given: &Cursors, limit: i64) -> Result<SyncPage, ClientError> {
    let mut tx = pool.begin().await?;
    // One snapshot for both reads, so receipts and entries describe the same
    // moment and a chat joined or left meanwhile is wholly in or wholly out.
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await?;

    #[derive(sqlx::FromRow)]
    struct ReceiptRow {
        #[sqlx(flatten)]
        receipt: Receipt,
        caller_joined_seq: i64,
    }
    let rows: Vec<ReceiptRow> = sqlx::query_as(
        "SELECT cm.chat_id, cm.user_id, cm.delivered_seq, cm.read_seq, me.joined_seq AS caller_joined_seq
           FROM chat_members me JOIN chat_members cm ON cm.chat_id = me.chat_id
          WHERE me.user_id = $1
          ORDER BY cm.chat_id, cm.user_id",
    )
    .bind(user_id)
    .fetch_all(&mut *tx)
    .await?;

    let mut starts: BTreeMap<Uuid, i64> = BTreeMap::new();
    for row in &rows {
        starts.entry(row.receipt.chat_id).or_insert(row.caller_joined_seq);
    }
    for (chat_id, seq) in given.iter() {
        let Some(start) = starts.get_mut(&chat_id) else {
            return Err(ClientError::new(ErrorCode::NotMember, format!("not a member of chat {chat_id}")));
        };
        *start = (*start).max(seq);
    }
    let receipts = rows.into_iter().map(|row| row.receipt).collect();
    let (chat_ids, after_seqs): (Vec<Uuid>, Vec<i64>) = starts.iter().map(|(chat_id, seq)| (*chat_id, *seq)).unzip();
    let mut cursors = Cursors(starts);
    if chat_ids.is_empty() {
        tx.commit().await?;
        return Ok(SyncPage { entries: Vec::new(), receipts, cursors, has_more: false });
    }

    // Each chat reads at most a page (the inner LIMIT) along its (chat_id, seq)
    // index. The chats come sorted, so the planner can produce the page in order
    // chat by chat (incremental sort on seq) and stop at the outer LIMIT instead
    // of reading a page from every chat.
    // Every kind of entry, so a client applies edits, deletes and reactions
    // in order; a message the caller deleted for themselves (and the entries
    // about it) is left out, but still moves the cursors.
    let mut rows: Vec<EntryRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT e.*
           FROM (SELECT * FROM UNNEST($1::uuid[], $2::int8[]) AS g(chat_id, after_seq) ORDER BY chat_id) c
          CROSS JOIN LATERAL (
                SELECT {ENTRY_COLUMNS},
                       EXISTS (SELECT 1 FROM hidden_messages h
                                WHERE h.user_id = $4 AND h.message_id = COALESCE(m.target_id, m.id)) AS hidden
                  FROM messages m {ENTRY_JOINS}
                 WHERE m.chat_id = c.chat_id AND m.seq > c.after_seq
                 ORDER BY m.seq
                 LIMIT $3) e
          ORDER BY e.chat_id, e.seq
          LIMIT $3"
    )))
    .bind(&chat_ids)
    .bind(&after_seqs)
    // One more than the page, to know whether there is more.
    .bind(limit.saturating_add(1))
    .bind(user_id)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;

    let has_more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    for row in &rows {
        if let Some(cursor) = cursors.0.get_mut(&row.chat_id) {
            *cursor = (*cursor).max(row.seq);
        }
    }
    let entries = rows.into_iter().filter(|row| !row.hidden).map(|row| row.into_history(None)).collect();
    Ok(SyncPage { entries, receipts, cursors, has_more })
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0190f0f0-0000-7000-8000-000000000001";
    const B: &str = "0190f0f0-0000-7000-8000-000000000002";

    fn error(text: &str) -> String {
        let error = text.parse::<Cursors>().unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidPayload);
        error.message
    }

    #[test]
    fn cursors_round_trip_in_chat_order() {
        let cursors: Cursors = format!("{B}:7,{A}:0").parse().unwrap();
        assert_eq!(cursors.len(), 2);
        assert_eq!(cursors.get(&Uuid::parse_str(B).unwrap()), Some(7));
        assert_eq!(cursors.to_string(), format!("{A}:0,{B}:7"));
        assert_eq!(serde_json::to_value(&cursors).unwrap(), serde_json::json!(format!("{A}:0,{B}:7")));
        assert!("".parse::<Cursors>().unwrap().is_empty());
    }

    #[test]
    fn malformed_cursors_name_the_bad_part() {
        assert!(error(&format!("{A}:1,")).contains("`` is not chatId:seq"));
        assert!(error(&format!("{A}-1")).contains("is not chatId:seq"));
        assert!(error("nope:1").contains("`nope` in `nope:1` is not a chat id"));
        for seq in ["", "-1", "+1", " 1", "1.5", "x", "99999999999999999999"] {
            assert!(error(&format!("{A}:{seq}")).contains("is not a seq"), "{seq:?}");
        }
        assert!(error(&format!("{A}:1,{A}:2")).contains("listed twice"));
        assert!(error(&"x".repeat(500)).contains('…'), "long parts are cut in the message");
    }

    #[test]
    fn at_most_max_cursors_chats() {
        let many = |n: u128| (1..=n).map(|i| format!("{}:0", Uuid::from_u128(i))).collect::<Vec<_>>().join(",");
        assert_eq!(many(MAX_CURSORS as u128).parse::<Cursors>().unwrap().len(), MAX_CURSORS);
        assert!(error(&many(MAX_CURSORS as u128 + 1)).contains("at most 1000 chats"));
    }
}
