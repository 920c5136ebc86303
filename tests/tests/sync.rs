//! Catch-up by cursor: `GET /api/chats/{id}/messages?after=SEQ` pages one chat
//! oldest first, `GET /api/sync?cursors=…` pages every chat of the caller past
//! the seqs it has, with the members' receipts. Nothing before a member's join
//! is ever shown, and bad cursors are refused with a stable code.

use courier_tests::{Rest, TestEnv, WsClient, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Sends over REST; returns the new message's seq.
async fn send(rest: &Rest, chat: &str, content: &str) -> i64 {
    let (status, body) = rest.post(&format!("/api/chats/{chat}/messages"), json!({ "content": content })).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["seq"].as_i64().expect("seq")
}

/// `(chatId, seq)` of each entry, in the order returned.
fn positions(entries: &Value) -> Vec<(String, i64)> {
    entries
        .as_array()
        .expect("an array of entries")
        .iter()
        .map(|e| (e["chatId"].as_str().expect("chatId").to_owned(), e["seq"].as_i64().expect("seq")))
        .collect()
}

/// `GET /api/sync` with the given query; panics unless 200.
async fn sync(rest: &Rest, query: &str) -> Value {
    let (status, body) = rest.get(&format!("/api/sync{query}")).await;
    assert_eq!(status, StatusCode::OK, "sync{query}: {body}");
    body
}

/// The error code of a refused call.
async fn refused(rest: &Rest, path: &str) -> (StatusCode, String, String) {
    let (status, body) = rest.get(path).await;
    let error = &body["error"];
    (status, error["code"].as_str().unwrap_or_default().to_owned(), error["message"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn paging_after_a_seq_gives_every_entry_once_in_seq_order() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    let alice = Rest::new(&addr, Some(&env.token("alice")));
    let bob = Rest::new(&addr, Some(&env.token("bob")));
    let chat = alice.create_chat("group", &["bob"]).await;
    for n in 1..=7 {
        send(&alice, &chat, &format!("m{n}")).await;
    }

    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let (status, page) = bob.get(&format!("/api/chats/{chat}/messages?after={after}&limit=3")).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let page = page.as_array().unwrap().clone();
        assert!(page.len() <= 3, "a page holds at most the limit");
        let Some(last) = page.last() else { break };
        after = last["seq"].as_i64().unwrap();
        for entry in &page {
            assert_eq!((entry["kind"].as_str(), entry["chatId"].as_str()), (Some("message"), Some(chat.as_str())));
            assert!(entry.get("statuses").is_none(), "statuses only on the caller's own messages");
            seen.push((entry["seq"].as_i64().unwrap(), entry["content"].as_str().unwrap().to_owned()));
        }
    }
    let expected: Vec<(i64, String)> = (1..=7).map(|n| (n, format!("m{n}"))).collect();
    assert_eq!(seen, expected, "every entry once, oldest first");

    // The sender's own messages carry statuses, as in newest-first history.
    let (_, own) = alice.get(&format!("/api/chats/{chat}/messages?after=6")).await;
    assert_eq!(own[0]["seq"], 7);
    assert_eq!(own[0]["statuses"].as_array().map(Vec::len), Some(1));

    // Newest first is unchanged.
    let (_, newest) = bob.get(&format!("/api/chats/{chat}/messages?limit=2")).await;
    assert_eq!(newest.as_array().unwrap().iter().map(|m| m["seq"].as_i64().unwrap()).collect::<Vec<_>>(), vec![7, 6]);
    assert_eq!(newest[0]["kind"], "message");
    let (_, older) = bob.get(&format!("/api/chats/{chat}/messages?before=3")).await;
    assert_eq!(older.as_array().unwrap().iter().map(|m| m["seq"].as_i64().unwrap()).collect::<Vec<_>>(), vec![2, 1]);

    // One direction at a time; an outsider sees nothing.
    let (status, code, message) = refused(&bob, &format!("/api/chats/{chat}/messages?before=5&after=2")).await;
    assert_eq!((status, code.as_str()), (StatusCode::BAD_REQUEST, "invalid_payload"));
    assert!(message.contains("before") && message.contains("after"), "{message}");
    let mallory = Rest::new(&addr, Some(&env.token("mallory")));
    let (status, code, _) = refused(&mallory, &format!("/api/chats/{chat}/messages?after=0")).await;
    assert_eq!((status, code.as_str()), (StatusCode::FORBIDDEN, "not_member"));
    env.cleanup().await;
}

#[tokio::test]
async fn sync_without_cursors_returns_everything_since_join_then_only_what_is_new() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    let alice = Rest::new(&addr, Some(&env.token("alice")));
    let bob = Rest::new(&addr, Some(&env.token("bob")));
    let group = alice.create_chat("group", &["bob"]).await;
    let direct = alice.create_chat("direct", &["bob"]).await;
    let quiet = alice.create_chat("group", &["bob", "carol"]).await;
    let mut expected = Vec::new();
    for n in 1..=3 {
        expected.push((group.clone(), send(&alice, &group, &format!("g{n}")).await));
    }
    for n in 1..=2 {
        expected.push((direct.clone(), send(&bob, &direct, &format!("d{n}")).await));
    }
    expected.sort();

    // Five entries in pages of two: (chat, seq) order, each once, hasMore until the end.
    let mut seen = Vec::new();
    let mut query = "?limit=2".to_owned();
    let cursors = loop {
        let page = sync(&bob, &query).await;
        let entries = positions(&page["entries"]);
        assert!(entries.len() <= 2);
        seen.extend(entries);
        let cursors = page["cursors"].as_str().expect("cursors").to_owned();
        if !page["hasMore"].as_bool().expect("hasMore") {
            break cursors;
        }
        query = format!("?cursors={cursors}&limit=2");
    };
    assert_eq!(seen, expected);
    let mut chats = [group.clone(), direct.clone(), quiet.clone()];
    chats.sort();
    let at = |seqs: &[(&str, i64)]| {
        chats
            .iter()
            .map(|chat| format!("{chat}:{}", seqs.iter().find(|(c, _)| *c == chat.as_str()).map_or(0, |(_, seq)| *seq)))
            .collect::<Vec<_>>()
            .join(",")
    };
    assert_eq!(cursors, at(&[(group.as_str(), 3), (direct.as_str(), 2)]), "every chat, the quiet one at its start");

    // Nothing new: nothing returned, the same cursors.
    let page = sync(&bob, &format!("?cursors={cursors}")).await;
    assert_eq!((page["entries"].clone(), page["hasMore"].clone()), (json!([]), json!(false)));
    assert_eq!(page["cursors"], cursors.as_str());

    // A new message: exactly it.
    send(&alice, &quiet, "hello").await;
    let page = sync(&bob, &format!("?cursors={cursors}")).await;
    assert_eq!(positions(&page["entries"]), vec![(quiet.clone(), 1)]);
    let entry = &page["entries"][0];
    assert_eq!((entry["content"].as_str(), entry["senderId"].as_str(), entry["kind"].as_str()), (Some("hello"), Some("alice"), Some("message")));
    assert_eq!(entry["sender"]["name"], "alice name");
    assert_eq!(page["hasMore"], false);
    assert_eq!(page["cursors"], at(&[(group.as_str(), 3), (direct.as_str(), 2), (quiet.as_str(), 1)]).as_str());
    env.cleanup().await;
}

#[tokio::test]
async fn sync_receipts_follow_a_read() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    env.start_worker().await;
    let alice = Rest::new(&addr, Some(&env.token("alice")));
    let chat = alice.create_chat("direct", &["bob"]).await;
    send(&alice, &chat, "one").await;
    let last = send(&alice, &chat, "two").await;

    let receipt = |page: &Value, user: &str| {
        let receipts = page["receipts"].as_array().expect("receipts");
        let found = receipts.iter().find(|r| r["chatId"] == chat.as_str() && r["userId"] == user);
        let found = found.unwrap_or_else(|| panic!("no receipt of {user} in {receipts:?}"));
        (found["deliveredSeq"].as_i64().expect("deliveredSeq"), found["readSeq"].as_i64().expect("readSeq"))
    };
    let page = sync(&alice, "").await;
    assert_eq!(page["receipts"].as_array().map(Vec::len), Some(2), "one per member: {page}");
    assert_eq!(receipt(&page, "bob").1, 0, "bob has read nothing yet");

    let mut bob = WsClient::connect(&addr, &env.token("bob")).await.unwrap();
    bob.receive_messages(2).await;
    bob.request("message:read", json!({ "chatId": chat, "upToSeq": last })).await.unwrap();
    let seen = eventually("bob's read to reach his receipt", || async {
        let page = sync(&alice, "").await;
        let seen = receipt(&page, "bob");
        (seen.1 == last).then_some(seen)
    })
    .await;
    assert_eq!(seen, (last, last), "read implies delivered");
    bob.close().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_member_who_joined_later_sees_nothing_from_before_the_join() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    let alice = Rest::new(&addr, Some(&env.token("alice")));
    let carol = Rest::new(&addr, Some(&env.token("carol")));
    let chat = alice.create_chat("group", &["bob"]).await;
    for n in 1..=3 {
        send(&alice, &chat, &format!("before {n}")).await;
    }
    let (status, body) = alice.post(&format!("/api/chats/{chat}/members"), json!({ "userId": "carol" })).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for n in 4..=5 {
        send(&alice, &chat, &format!("after {n}")).await;
    }

    let after_join = vec![(chat.clone(), 4), (chat.clone(), 5)];
    let page = sync(&carol, "").await;
    assert_eq!(positions(&page["entries"]), after_join);
    assert_eq!(page["cursors"], format!("{chat}:5").as_str());
    // A cursor below the join is raised to it.
    let page = sync(&carol, &format!("?cursors={chat}:0")).await;
    assert_eq!(positions(&page["entries"]), after_join);
    let (_, oldest_first) = carol.get(&format!("/api/chats/{chat}/messages?after=0")).await;
    assert_eq!(positions(&oldest_first), after_join);
    let (_, newest_first) = carol.get(&format!("/api/chats/{chat}/messages")).await;
    assert_eq!(positions(&newest_first), vec![(chat.clone(), 5), (chat.clone(), 4)]);
    env.cleanup().await;
}

#[tokio::test]
async fn malformed_cursors_are_refused_naming_the_bad_part() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    let alice = Rest::new(&addr, Some(&env.token("alice")));
    let chat = alice.create_chat("group", &["bob"]).await;
    let too_many = (1..=1001u128).map(|n| format!("{}:0", uuid::Uuid::from_u128(n))).collect::<Vec<_>>().join(",");
    let cases = [
        ("nonsense".to_owned(), "`nonsense` is not chatId:seq"),
        ("not-a-uuid:1".to_owned(), "`not-a-uuid` in `not-a-uuid:1` is not a chat id"),
        (format!("{chat}:-1"), "`-1`"),
        (format!("{chat}:x"), "is not a seq"),
        (format!("{chat}:"), "is not a seq"),
        (format!("{chat}:1,"), "`` is not chatId:seq"),
        (format!("{chat}:1,{chat}:2"), "listed twice"),
        (too_many, "at most 1000 chats"),
    ];
    for (cursors, says) in cases {
        let (status, code, message) = refused(&alice, &format!("/api/sync?cursors={cursors}")).await;
        assert_eq!((status, code.as_str()), (StatusCode::BAD_REQUEST, "invalid_payload"), "{cursors:.80}: {message}");
        assert!(message.contains(says), "{cursors:.80}: {message:?} should say {says:?}");
    }
    let (status, code, _) = refused(&alice, "/api/sync?limit=many").await;
    assert_eq!((status, code.as_str()), (StatusCode::BAD_REQUEST, "invalid_payload"));
    env.cleanup().await;
}

#[tokio::test]
async fn sync_naming_a_chat_of_others_is_not_member() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    let alice = Rest::new(&addr, Some(&env.token("alice")));
    let mallory = Rest::new(&addr, Some(&env.token("mallory")));
    let chat = alice.create_chat("group", &["bob"]).await;
    send(&alice, &chat, "private").await;

    // Someone in no chat gets an empty page.
    let page = sync(&mallory, "").await;
    assert_eq!(page, json!({ "entries": [], "receipts": [], "cursors": "", "hasMore": false }));
    // Someone else's chat and a chat that does not exist: the same answer.
    for other in [chat.clone(), uuid::Uuid::now_v7().to_string()] {
        let (status, code, message) = refused(&mallory, &format!("/api/sync?cursors={other}:0")).await;
        assert_eq!((status, code.as_str()), (StatusCode::FORBIDDEN, "not_member"), "{message}");
        assert!(message.contains(&other), "{message}");
    }
    // Nor without a token.
    let (status, code, _) = refused(&Rest::new(&addr, None), "/api/sync").await;
    assert_eq!((status, code.as_str()), (StatusCode::UNAUTHORIZED, "unauthorized"));
    env.cleanup().await;
}
