//! Statements that run on connections keeping one plan per statement
//! (`db::Plans::Kept`) must plan to index lookups whatever the statistics say:
//! the plan is made once, maybe while the tables are empty, and kept while
//! they grow. Checked on a fresh database, never analyzed, where a join or a
//! subquery left unfenced plans to a sequential scan.

use courier_shared::db::{
    Plans, devices,
    devices::Mark,
    log, messages, outbox, presence, status,
};
use courier_tests::TestEnv;
use sqlx::Row;

/// The generic plan of `statement` (its parameters' types as `types`), as
/// `EXPLAIN` prints it on a connection set up as `Plans::Kept` sets one up.
async fn generic_plan(env: &TestEnv, statement: &str, types: &str, arguments: &str) -> String {
    let mut connection = env.db.acquire().await.expect("connection");
    let settings: String = Plans::Kept.settings().iter().map(|(name, value)| format!("SET {name} = {value};\n")).collect();
    let explained = format!(
        "{settings}
         PREPARE kept({types}) AS {statement};
         EXPLAIN (COSTS OFF) EXECUTE kept({arguments});"
    );
    let mut plan = String::new();
    for row in sqlx::raw_sql(sqlx::AssertSqlSafe(explained)).fetch_all(&mut *connection).await.expect("explain") {
        if let Ok(line) = row.try_get::<String, _>(0) {
            plan.push_str(&line);
            plan.push('\n');
        }
    }
    // Pooled connections are reused: leave this one as the pool made it.
    let reset: String = Plans::Kept.settings().iter().map(|(name, _)| format!("RESET {name};\n")).collect();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DEALLOCATE kept; {reset}"))).execute(&mut *connection).await.expect("reset");
    plan
}

/// What makes a kept plan a trap: a scan of a whole table (sequential, or
/// a whole index), a hash join or hashed subquery over one, a merge join,
/// a batch read again for every row of another (an UNNEST or a CTE on the
/// inner side of a nested loop: every pair compared), or a range of `messages` read by
/// a key that does not bound it (its bounds left as a filter over every
/// entry of the chat). A message is found by id, by (chat, seq), by
/// (sender, clientMsgId), or by (chat, sender, seq) with the sender given.
fn assert_lookups_only(what: &str, plan: &str) {
    for scan in ["Seq Scan", "Hash Cond", "hashed SubPlan", "Merge Cond"] {
        assert!(!plan.contains(scan), "{what}: the kept plan has a {scan}:\n{plan}");
    }
    let raw: Vec<&str> = plan.lines().collect();
    let indent = |line: &str| line.len() - line.trim_start().len();
    let is_node = |line: &str| line.trim_start().starts_with("->");
    for (i, line) in raw.iter().enumerate().filter(|(_, line)| line.contains("Nested Loop")) {
        // The loop's subtree; its children are the subtree's shallowest nodes, the second one the inner side.
        let subtree: Vec<&str> = raw[i + 1..].iter().take_while(|l| indent(l) > indent(line)).copied().collect();
        let Some(depth) = subtree.iter().filter(|l| is_node(l)).map(|l| indent(l)).min() else { continue };
        let Some(inner) = subtree.iter().enumerate().filter(|(_, l)| is_node(l) && indent(l) == depth).map(|(k, _)| k).nth(1) else {
            continue;
        };
        let inner_side = std::iter::once(subtree[inner]).chain(subtree[inner + 1..].iter().take_while(|l| indent(l) > depth).copied());
        for node in inner_side {
            assert!(
                !node.contains("Function Scan") && !node.contains("CTE Scan"),
                "{what}: `{}` is read again for every row of `{}`:\n{plan}",
                node.trim(),
                line.trim()
            );
        }
    }
    let lines: Vec<&str> = plan.lines().map(str::trim).collect();
    for (i, line) in lines.iter().enumerate() {
        if line.contains("Index Scan") || line.contains("Index Only Scan") {
            let details = lines[i + 1..].iter().take_while(|detail| !detail.starts_with("->"));
            let keyed = details.filter(|detail| detail.starts_with("Index Cond:")).count() > 0;
            assert!(keyed, "{what}: `{line}` reads the whole index:\n{plan}");
        }
        if line.contains("Scan") && line.contains(" on messages ") {
            // The node's own lines, up to its first child.
            let details = lines[i + 1..].iter().take_while(|detail| !detail.starts_with("->"));
            let bounded = details
                .filter(|detail| detail.starts_with("Index Cond:") || detail.starts_with("Recheck Cond:"))
                .any(|cond| cond.contains("Cond: (id = ") || cond.contains("seq") || cond.contains("client_msg_id = "));
            assert!(bounded, "{what}: `{line}` is not bounded by its key:\n{plan}");
            // No kept statement reads messages by time.
            assert!(!line.contains("idx_messages_chat_created"), "{what}: `{line}` reads a range by time:\n{plan}");
            if line.contains("messages_chat_sender_seq") {
                let sender_given = lines[i + 1..]
                    .iter()
                    .take_while(|detail| !detail.starts_with("->"))
                    .any(|detail| detail.starts_with("Index Cond:") && detail.contains("sender_id = "));
                assert!(sender_given, "{what}: `{line}` reads every sender's entries of the chat:\n{plan}");
            }
        }
    }
}

#[tokio::test]
async fn the_job_check_keeps_a_plan_of_index_lookups() {
    let env = TestEnv::new().await;
    let plan = generic_plan(&env, &log::pending_deliveries_statement(), "uuid[], text[]", "'{}', '{}'").await;
    assert!(plan.contains("Index Scan using messages_pkey"), "the job check reads messages by key:\n{plan}");
    assert_lookups_only("the job check", &plan);
    env.cleanup().await;
}

#[tokio::test]
async fn the_statuses_of_watermark_moves_keep_a_plan_of_index_ranges() {
    let env = TestEnv::new().await;
    let types = "uuid[], text[], int8[], int8[], int8[], int8[]";
    let plan = generic_plan(&env, status::STATUSES_OF_MOVES, types, "'{}', '{}', '{}', '{}', '{}', '{}'").await;
    assert!(plan.contains("messages_chat_id_seq_key"), "the moves' ranges are read in seq order:\n{plan}");
    assert_lookups_only("statuses of moves", &plan);
    env.cleanup().await;
}

#[tokio::test]
async fn a_drain_keeps_plans_of_index_lookups() {
    let env = TestEnv::new().await;
    let snapshot = generic_plan(&env, &log::device_snapshot_statement(), "text, text", "'alice', 'phone'").await;
    assert!(snapshot.contains("chat_members"), "the snapshot reads the user's memberships:\n{snapshot}");
    assert_lookups_only("the drain's snapshot", &snapshot);

    let types = "text, text, uuid, int8, int8, int8";
    let page = generic_plan(&env, &log::device_gap_statement(), types, "'alice', 'phone', gen_random_uuid(), 0, 10, 500").await;
    assert!(page.contains("messages_chat_id_seq_key"), "a page is read in seq order:\n{page}");
    assert_lookups_only("a drain page", &page);

    let types = "text, text, uuid, int8, int8";
    let owed = generic_plan(&env, status::OWED_STATUSES, types, "'alice', 'phone', gen_random_uuid(), 0, 500").await;
    assert_lookups_only("the statuses a device is owed", &owed);
    env.cleanup().await;
}

#[tokio::test]
async fn locating_users_keeps_a_plan_of_index_probes() {
    let env = TestEnv::new().await;
    let plan = generic_plan(&env, presence::LOCATE, "text[]", "'{alice,bob}'").await;
    assert!(plan.contains("connections_by_user"), "users are found by their index:\n{plan}");
    assert_lookups_only("locating users", &plan);
    env.cleanup().await;
}

#[tokio::test]
async fn a_send_keeps_plans_of_index_lookups() {
    let env = TestEnv::new().await;
    let lock = generic_plan(&env, messages::LOCK_CHATS, "uuid[]", "'{}'").await;
    assert!(lock.contains("chats_pkey") && lock.contains("LockRows"), "the chats are locked by key:\n{lock}");
    assert_lookups_only("locking the chats", &lock);

    let members = generic_plan(&env, messages::MEMBERS, "uuid[]", "'{}'").await;
    assert!(members.contains("chat_members_pkey"), "members are read by chat:\n{members}");
    assert_lookups_only("the members", &members);

    let originals = generic_plan(&env, messages::CLIENT_MSG_IDS, "text[], text[]", "'{}', '{}'").await;
    assert!(originals.contains("messages_sender_client_msg_id"), "a clientMsgId is a probe of its index:\n{originals}");
    assert_lookups_only("the clientMsgId check", &originals);

    let types = "uuid[], uuid[], int8[], text[], bytea[], text[], text[], text[], text[], uuid[], uuid[], uuid[], int8[]";
    let arguments = ["'{}'"; 13].join(", ");
    let append = generic_plan(&env, messages::APPEND, types, &arguments).await;
    for part in ["Insert on messages", "Insert on outbox", "Update on chats"] {
        assert!(append.contains(part), "the append writes all three ({part}):\n{append}");
    }
    assert!(append.contains("chats_pkey"), "last seqs move by key:\n{append}");
    assert_lookups_only("the append", &append);
    env.cleanup().await;
}

#[tokio::test]
async fn acknowledgement_writes_keep_plans_of_index_lookups() {
    let env = TestEnv::new().await;
    for mark in [Mark::Acked, Mark::ToldDelivered, Mark::ToldRead, Mark::ToldExpired] {
        let types = "text[], text[], uuid[], int8[], int8[]";
        let plan = generic_plan(&env, &devices::move_marks_statement(mark), types, "'{}', '{}', '{}', '{}', '{}'").await;
        assert!(plan.contains("device_cursors_pkey"), "{mark:?}: cursors are moved by key:\n{plan}");
        assert_lookups_only(&format!("moving the {mark:?} marks"), &plan);
    }
    let advance = generic_plan(&env, status::ADVANCE_DELIVERED, "text[], uuid[]", "'{}', '{}'").await;
    assert!(advance.contains("chat_members_pkey") && advance.contains("device_cursors_pkey"), "{advance}");
    assert_lookups_only("advancing the delivered watermarks", &advance);

    let deleted = generic_plan(&env, outbox::DELETE, "uuid[]", "'{}'").await;
    assert!(deleted.contains("outbox_pkey"), "outbox rows are deleted by key:\n{deleted}");
    assert_lookups_only("deleting outbox rows", &deleted);

    env.cleanup().await;
}
