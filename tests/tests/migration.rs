//! Issue 13's upgrade: a database the release before migration 0003 made,
//! with undelivered, delivered and read messages in it, migrates forward with
//! nothing lost or re-delivered.
//!
//! The database is `tests/fixtures/previous-release.sql`, a pg_dump of what
//! that release (commit c11b516) left after `tests/node/fill-previous-release.mjs`
//! drove it through its protocol; `scripts/make-migration-fixture` regenerates it.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use chrono::{DateTime, Utc};
use courier_tests::{Rest, TestEnv, WsClient};
use sqlx::{Connection as _, PgConnection, PgExecutor};
use uuid::Uuid;

const FIXTURE: &str = include_str!("../fixtures/previous-release.sql");

/// One recipient's status of one message.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, sqlx::FromRow)]
struct StatusRow {
    chat_id: Uuid,
    seq: i64,
    user_id: String,
    message_id: Uuid,
    sender_id: String,
    status: String,
    updated_at: DateTime<Utc>,
}

/// The `message_status` table before the upgrade; after it, the view of
/// the same name (its `timestamp` is when the watermark last moved).
async fn status_rows(db: impl PgExecutor<'_>, upgraded: bool) -> Vec<StatusRow> {
    let at = if upgraded { "\"timestamp\"" } else { "updated_at" };
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT chat_id, seq, user_id, message_id, sender_id, status::text AS status, {at} AS updated_at
           FROM message_status ORDER BY chat_id, seq, user_id"
    )))
    .fetch_all(db)
    .await
    .unwrap()
}

/// The rows without their times.
fn strip_time(rows: &[StatusRow]) -> Vec<StatusRow> {
    rows.iter().map(|r| StatusRow { updated_at: DateTime::UNIX_EPOCH, ..r.clone() }).collect()
}

#[derive(Debug, Clone, sqlx::FromRow)]
struct Member {
    chat_id: Uuid,
    user_id: String,
    joined_seq: i64,
    kind: String,
    last_seq: i64,
}

/// Per member `(delivered_seq, read_seq)` as `message_status` says: the seq
/// before their first message (after joining) that is not delivered (sent or
/// expired) — or not read — else the chat's last seq; never below
/// `joined_seq`, and read never above delivered.
fn expected_watermarks(members: &[Member], rows: &[StatusRow]) -> BTreeMap<(Uuid, String), (i64, i64)> {
    members
        .iter()
        .map(|member| {
            let mine: Vec<&StatusRow> = rows
                .iter()
                .filter(|r| r.chat_id == member.chat_id && r.user_id == member.user_id && r.seq > member.joined_seq)
                .collect();
            let first = |pending: &dyn Fn(&str) -> bool| mine.iter().filter(|r| pending(&r.status)).map(|r| r.seq).min();
            let watermark = |first: Option<i64>| first.map_or(member.last_seq, |seq| seq - 1).max(member.joined_seq);
            let delivered = watermark(first(&|s| s == "sent" || s == "expired"));
            let read = watermark(first(&|s| s != "read")).min(delivered);
            ((member.chat_id, member.user_id.clone()), (delivered, read))
        })
        .collect()
}

/// Connects as `user`, waits for `sync:done` and returns the client and the
/// messages it received before it, as `(chatId, seq, messageId)` in arrival order.
async fn connect_and_sync(addr: &str, token: &str) -> (WsClient, Vec<(Uuid, i64, Uuid)>) {
    let mut client = WsClient::connect(addr, token).await.unwrap();
    let done = client.wait_event("sync:done").await;
    client.barrier().await;
    let received: Vec<(Uuid, i64, Uuid)> = client
        .drain_pending("message:receive")
        .iter()
        .map(|frame| {
            let data = &frame["data"];
            let id = |key: &str| Uuid::parse_str(data[key].as_str().unwrap()).unwrap();
            (id("chatId"), data["seq"].as_i64().unwrap(), id("messageId"))
        })
        .collect();
    assert_eq!(done["data"]["count"], received.len(), "{}: sync:done counts what was received", client.user_id);
    (client, received)
}

/// `received` is exactly the fixture's undelivered messages to `user`, each
/// once, in seq order within each chat.
fn assert_exactly_undelivered(user: &str, received: &[(Uuid, i64, Uuid)], before: &[StatusRow]) {
    let mut ids = HashSet::new();
    for (_, _, id) in received {
        assert!(ids.insert(*id), "{user} received {id} twice: {received:?}");
    }
    let mut chats: BTreeMap<Uuid, Vec<i64>> = BTreeMap::new();
    for (chat, seq, _) in received {
        chats.entry(*chat).or_default().push(*seq);
    }
    for (chat, seqs) in &chats {
        assert!(seqs.is_sorted(), "{user} received chat {chat} out of order: {seqs:?}");
    }
    for row in before.iter().filter(|r| r.user_id == user && ids.contains(&r.message_id)) {
        assert_eq!(row.status, "sent", "{user} was sent message seq {} again, which was {} before the upgrade", row.seq, row.status);
    }
    let got: BTreeSet<(Uuid, i64, Uuid)> = received.iter().copied().collect();
    let want: BTreeSet<(Uuid, i64, Uuid)> =
        before.iter().filter(|r| r.user_id == user && r.status == "sent").map(|r| (r.chat_id, r.seq, r.message_id)).collect();
    assert_eq!(got, want, "{user}'s messages after the upgrade: exactly the undelivered ones");
}

/// Waits until `client` (a sender) is told that `recipient` has each of
/// `messages` (chat, seq, id): by `message:status delivered` in a direct
/// chat; in the group by a receipt reaching the highest of their seqs (one
/// receipt covers every message up to it), live or, for a sender who was
/// away when it moved, in `GET /api/sync`.
async fn wait_delivered(client: &mut WsClient, rest: &Rest, recipient: &str, group: Uuid, messages: &[(Uuid, i64, Uuid)]) {
    for &(_, seq, message) in messages.iter().filter(|m| m.0 != group) {
        let what = format!("delivered of {message} (seq {seq}) for {recipient}");
        let message = message.to_string();
        client
            .wait_for(&what, |f| {
                f["event"] == "message:status"
                    && f["data"]["messageId"] == message.as_str()
                    && f["data"]["userId"] == recipient
                    && f["data"]["status"] == "delivered"
            })
            .await;
    }
    if let Some(seq) = messages.iter().filter(|m| m.0 == group).map(|m| m.1).max() {
        let what = format!("{recipient}'s receipt reaching seq {seq} for {}", client.user_id);
        courier_tests::eventually(&what, || async {
            let (status, body) = rest.get("/api/sync?limit=1").await;
            assert!(status.is_success(), "{status} {body}");
            body["receipts"].as_array().unwrap().iter().any(|r| {
                r["chatId"] == group.to_string().as_str() && r["userId"] == recipient && r["deliveredSeq"].as_i64() >= Some(seq)
            })
            .then_some(())
        })
        .await;
    }
}

#[tokio::test]
async fn a_previous_release_database_upgrades_without_loss_or_redelivery() {
    let mut env = TestEnv::unmigrated().await;

    // The previous release's database, on a connection of its own: the dump
    // sets the session's search_path to nothing.
    let mut conn = PgConnection::connect(&env.database_url).await.unwrap();
    sqlx::raw_sql(FIXTURE).execute(&mut conn).await.expect("load the fixture");
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM public._sqlx_migrations ORDER BY version").fetch_all(&mut conn).await.unwrap();
    assert_eq!(applied, [1, 2], "the fixture is a database of the release before 0003");
    conn.close().await.unwrap();

    let before = status_rows(&env.db, false).await;
    let members: Vec<Member> = sqlx::query_as(
        "SELECT m.chat_id, m.user_id, m.joined_seq, c.kind, c.last_seq
           FROM chat_members m JOIN chats c ON c.id = m.chat_id ORDER BY c.kind, m.user_id",
    )
    .fetch_all(&env.db)
    .await
    .unwrap();
    let chat_of = |kind: &str| members.iter().find(|m| m.kind == kind).unwrap().chat_id;
    let (direct, group) = (chat_of("direct"), chat_of("group"));

    // What the fixture must hold for this test to mean anything: every status
    // in both chats, nothing expired, and a message delivered after one that
    // was not (so the delivered watermark is not just "the last delivered").
    for chat in [direct, group] {
        let statuses: BTreeSet<&str> = before.iter().filter(|r| r.chat_id == chat).map(|r| r.status.as_str()).collect();
        assert_eq!(statuses, BTreeSet::from(["delivered", "read", "sent"]), "statuses in chat {chat}");
    }
    let gap = before.iter().any(|late| {
        late.status != "sent"
            && before.iter().any(|r| r.user_id == late.user_id && r.chat_id == late.chat_id && r.seq < late.seq && r.status == "sent")
    });
    assert!(gap, "the fixture has a delivered message after an undelivered one");

    let expected = expected_watermarks(&members, &before);
    // The same, worked out by hand from fill-previous-release.mjs's scenario.
    let by_name: BTreeMap<(&str, &str), (i64, i64)> = members
        .iter()
        .map(|m| ((m.kind.as_str(), m.user_id.as_str()), expected[&(m.chat_id, m.user_id.clone())]))
        .collect();
    assert_eq!(
        by_name,
        BTreeMap::from([
            (("direct", "alice"), (9, 6)),
            (("direct", "bob"), (2, 1)),
            (("group", "alice"), (6, 4)),
            (("group", "bob"), (2, 1)),
            (("group", "carol"), (0, 0)),
        ])
    );

    // The current release: the API node applies 0003 at start-up.
    let addr = env.start_api().await;
    env.start_worker().await;
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
        .fetch_all(&env.db)
        .await
        .unwrap();
    assert!(applied.contains(&3) && applied.contains(&4), "0003 and 0004 applied: {applied:?}");

    // The view answers what the table did. Its times are when each watermark
    // last moved, which for a row delivered out of order is its own time.
    let upgraded = status_rows(&env.db, true).await;
    assert_eq!(strip_time(&upgraded), strip_time(&before), "message_status (now a view) says what the table did");
    for (old, new) in before.iter().zip(&upgraded) {
        if old.status == "sent" {
            // The message's own time; the row's was taken a moment later in the same transaction.
            let apart = (new.updated_at - old.updated_at).num_milliseconds().abs();
            assert!(apart < 1000, "a sent message's time is its own (seq {} for {}): {apart} ms apart", old.seq, old.user_id);
        } else {
            assert!(new.updated_at >= old.updated_at - chrono::Duration::seconds(60) && new.updated_at <= Utc::now(),
                "{} of seq {} for {} at {} (was {})", old.status, old.seq, old.user_id, new.updated_at, old.updated_at);
        }
    }

    let watermarks: BTreeMap<(Uuid, String), (i64, i64)> =
        sqlx::query_as::<_, (Uuid, String, i64, i64)>("SELECT chat_id, user_id, delivered_seq, read_seq FROM chat_members")
            .fetch_all(&env.db)
            .await
            .unwrap()
            .into_iter()
            .map(|(chat, user, delivered, read)| ((chat, user), (delivered, read)))
            .collect();
    assert_eq!(watermarks, expected, "watermarks per member: (delivered_seq, read_seq)");

    let devices: Vec<(String, String)> =
        sqlx::query_as("SELECT user_id, device_id FROM devices ORDER BY user_id").fetch_all(&env.db).await.unwrap();
    assert_eq!(devices, [("alice".into(), "default".into()), ("bob".into(), "default".into()), ("carol".into(), "default".into())]);
    let cursors: BTreeMap<(Uuid, String), i64> =
        sqlx::query_as::<_, (Uuid, String, i64)>("SELECT chat_id, user_id, acked_seq FROM device_cursors WHERE device_id = 'default'")
            .fetch_all(&env.db)
            .await
            .unwrap()
            .into_iter()
            .map(|(chat, user, acked)| ((chat, user), acked))
            .collect();
    let want_cursors: BTreeMap<(Uuid, String), i64> = expected.iter().map(|(key, (delivered, _))| (key.clone(), *delivered)).collect();
    assert_eq!(cursors, want_cursors, "each member's default device is at their delivered watermark");
    let (messages, old_kind): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE kind = 'message' AND sender_device IS NULL) FROM messages",
    )
    .fetch_one(&env.db)
    .await
    .unwrap();
    assert_eq!((messages, old_kind), (18, 18), "every old entry is a message from before devices");

    // Alice first: she gets what bob sent while she was away.
    let (mut alice, at_alice) = connect_and_sync(&addr, &env.token("alice")).await;
    assert_exactly_undelivered("alice", &at_alice, &before);

    // Bob: exactly his undelivered messages, in order, once; alice sees ✓✓.
    let (mut bob, at_bob) = connect_and_sync(&addr, &env.token("bob")).await;
    assert_exactly_undelivered("bob", &at_bob, &before);
    let group: Uuid = sqlx::query_scalar("SELECT id FROM chats WHERE kind = 'group'").fetch_one(&env.db).await.unwrap();
    wait_delivered(&mut alice, &Rest::new(&addr, Some(&env.token("alice"))), "bob", group, &at_bob).await;
    // Bob was away as a sender too: he is told alice got his.
    wait_delivered(&mut bob, &Rest::new(&addr, Some(&env.token("bob"))), "alice", group, &at_alice).await;

    // Carol never connected before: the whole group.
    let (carol, at_carol) = connect_and_sync(&addr, &env.token("carol")).await;
    assert_exactly_undelivered("carol", &at_carol, &before);
    assert_eq!(at_carol.len(), 7);
    let to_carol_from = |sender: &str| -> Vec<(Uuid, i64, Uuid)> {
        before.iter().filter(|r| r.user_id == "carol" && r.sender_id == sender).map(|r| (r.chat_id, r.seq, r.message_id)).collect()
    };
    wait_delivered(&mut alice, &Rest::new(&addr, Some(&env.token("alice"))), "carol", group, &to_carol_from("alice")).await;
    wait_delivered(&mut bob, &Rest::new(&addr, Some(&env.token("bob"))), "carol", group, &to_carol_from("bob")).await;

    // Every status row: what the fixture had, except that each undelivered one
    // is now delivered; delivered and read ones are untouched (time included).
    let after = status_rows(&env.db, true).await;
    let want_after: Vec<StatusRow> = before
        .iter()
        .map(|r| if r.status == "sent" { StatusRow { status: "delivered".into(), ..r.clone() } } else { r.clone() })
        .collect();
    assert_eq!(strip_time(&after), strip_time(&want_after), "statuses after the upgrade and the deliveries");

    // REST history, as each sender sees their messages' ticks.
    for sender in ["alice", "bob"] {
        let rest = Rest::new(&addr, Some(&env.token(sender)));
        let mut seen: BTreeMap<(Uuid, String), (String, DateTime<Utc>)> = BTreeMap::new();
        for chat in [direct, group] {
            let (status, body) = rest.get(&format!("/api/chats/{chat}/messages?limit=100")).await;
            assert!(status.is_success(), "{sender}'s history of {chat}: {status} {body}");
            for message in body.as_array().unwrap().iter().filter(|m| m["senderId"] == sender) {
                let id = Uuid::parse_str(message["messageId"].as_str().unwrap()).unwrap();
                for recipient in message["statuses"].as_array().unwrap() {
                    let at: DateTime<Utc> = serde_json::from_value(recipient["timestamp"].clone()).unwrap();
                    let state = recipient["status"].as_str().unwrap().to_owned();
                    seen.insert((id, recipient["userId"].as_str().unwrap().to_owned()), (state, at));
                }
            }
        }
        let want: BTreeMap<(Uuid, String), (String, DateTime<Utc>)> = before
            .iter()
            .zip(&after)
            .filter(|(old, _)| old.sender_id == sender)
            .map(|(old, new)| ((old.message_id, old.user_id.clone()), (new.status.clone(), new.updated_at)))
            .collect();
        assert_eq!(seen, want, "{sender}'s ticks in the history");
        for ((id, user), (state, _)) in &seen {
            let old = before.iter().find(|r| r.message_id == *id && r.user_id == *user).unwrap();
            if old.status != "sent" {
                assert_eq!(state, &old.status, "history keeps {user}'s {} of {id}", old.status);
            }
        }
    }

    // Nothing more arrives on a reconnect.
    for client in [alice, bob, carol] {
        client.close().await;
    }
    for user in ["alice", "bob", "carol"] {
        let (client, again) = connect_and_sync(&addr, &env.token(user)).await;
        assert_eq!(again, [], "{user} got messages again after reconnecting");
        client.close().await;
    }
    env.cleanup().await;
}
