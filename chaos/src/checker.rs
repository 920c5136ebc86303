//! The verdict on a run: a pure function over the clients' recorded history
//! (and, for the final views, the server's state at the end).
//!
//! It reads no database on purpose: whatever the clients could not observe
//! does not count, and whatever they did observe must be consistent with
//! Courier's promises (at-least-once delivery with no loss to any device of
//! any member, one message per `clientMsgId`, per-connection order, nothing
//! sent back to the device that sent it, no redelivery to a device whose
//! cursor is known to be past the message, monotonic statuses, ✓✓ for
//! everything acknowledged). The runner reads the server's messages and
//! reactions once the run has settled and hands them in as [`ServerState`]:
//! every device's final view of every message it has seen (folded from what
//! it recorded, `view.rs`) must equal them.
//!
//! Entries about a message (edits, deletes for everyone, reactions) are log
//! entries like messages: each has its own seq in the chat, is pushed and
//! acknowledged like a `message:receive`, and is judged by the same order,
//! redelivery and cursor checks under its [`entry_key`]. On top of those: an
//! entry is owed to every device of every member but the one that made it
//! (unless it became moot: an edit a later edit superseded, or an edit or
//! reaction of a message since deleted, which devices reading it later pass
//! over), never reaches a device before the message it is about, and the
//! replies to a device's own edits, deletes and reactions are ones the
//! protocol allows.
//!
//! Devices: a user's events carry the device they happened on, and a device
//! is known from its first connection on. Delivery promises are per device
//! (each device of a member gets every message, once as it sees it; the
//! user's own messages reach their other devices, never the sending one);
//! statuses are per user, as the protocol has them.
//!
//! Everything is iterated in a fixed order (time, then recording order; maps
//! are `BTreeMap` wherever their order reaches the output), so the same history
//! always gives the same verdict, byte for byte.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::{self, Write as _};

use serde::Serialize;

use crate::{
    history::{About, AppliedFault, Change, Chats, Event, EventKind, ServerState, entry_key},
    view::DeviceView,
};

/// Error codes that end an edit, delete or reaction legitimately: the message
/// was deleted for everyone meanwhile (perhaps by this very action's first,
/// unanswered try, or by another device of the user), or is too old.
pub const LEGITIMATE_REFUSALS: [&str; 2] = ["already_deleted", "window_passed"];

/// Tunables of the checker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rules {
    /// How long after an ack the server may still not have processed it (the
    /// ack can sit in a socket buffer or a broker queue when a node dies).
    /// A copy delivered to another connection of the same device that opened
    /// within this window is at-least-once, not a redelivery bug.
    pub redelivery_grace_ms: u64,
}

impl Default for Rules {
    fn default() -> Self {
        Self { redelivery_grace_ms: 3000 }
    }
}

/// The checks, in the order they are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    Lost,
    EchoedToSendingDevice,
    DuplicateCreation,
    Inconsistent,
    OutOfOrder,
    EntryBeforeMessage,
    RedeliveredSameConnection,
    RedeliveredOtherConnection,
    StatusRegression,
    MissingDeliveredStatus,
    UnexpectedRefusal,
    FinalView,
}

impl Check {
    pub const ALL: [Check; 12] = [
        Check::Lost,
        Check::EchoedToSendingDevice,
        Check::DuplicateCreation,
        Check::Inconsistent,
        Check::OutOfOrder,
        Check::EntryBeforeMessage,
        Check::RedeliveredSameConnection,
        Check::RedeliveredOtherConnection,
        Check::StatusRegression,
        Check::MissingDeliveredStatus,
        Check::UnexpectedRefusal,
        Check::FinalView,
    ];

    /// Stable name, the same as its JSON form: reports and scripts key on it.
    pub fn name(self) -> &'static str {
        match self {
            Check::Lost => "lost",
            Check::EchoedToSendingDevice => "echoed_to_sending_device",
            Check::DuplicateCreation => "duplicate_creation",
            Check::Inconsistent => "inconsistent",
            Check::OutOfOrder => "out_of_order",
            Check::EntryBeforeMessage => "entry_before_message",
            Check::RedeliveredSameConnection => "redelivered_same_connection",
            Check::RedeliveredOtherConnection => "redelivered_other_connection",
            Check::StatusRegression => "status_regression",
            Check::MissingDeliveredStatus => "missing_delivered_status",
            Check::UnexpectedRefusal => "unexpected_refusal",
            Check::FinalView => "final_view",
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One broken promise, located as precisely as the history allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub check: Check,
    /// The user it happened to (for `lost`: the member who never got it).
    pub user: String,
    /// The user's device it happened to (for `lost`: the device that never
    /// got it); `None` when it is about the user as a whole (statuses, or a
    /// member none of whose devices ever connected).
    pub device: Option<String>,
    /// The connection it happened on; 0 when no single connection is at fault
    /// (a loss is the absence of a receipt on all of them).
    pub conn: u64,
    pub message_id: Option<String>,
    pub chat_id: Option<String>,
    pub seq: Option<i64>,
    pub at_ms: u64,
    pub detail: String,
}

/// Figures of the run, for the report; none of them fails a check by itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Distinct (user, client_msg_id) ever written.
    pub sends_attempted: u64,
    /// Distinct (user, client_msg_id) that got a reply.
    pub sends_answered: u64,
    /// Attempted but never answered (the run ended, or every try failed).
    pub sends_unanswered: u64,
    /// `Received` events of `message:receive`, resends and redeliveries included.
    pub received: u64,
    /// Distinct (message, user, device) received.
    pub deliveries: u64,
    /// Edits, deletes and reactions: distinct actions tried, by kind
    /// (`edit`, `delete`, `react`, `unreact`).
    pub actions_attempted: BTreeMap<String, u64>,
    /// Actions answered with an entry (`changed: true`), by kind.
    pub actions_changed: BTreeMap<String, u64>,
    /// Reactions answered `changed: false` (nothing to change, no entry).
    pub actions_unchanged: u64,
    /// Actions refused, by error code (`already_deleted`, …).
    pub actions_refused: BTreeMap<String, u64>,
    /// Actions tried and never answered nor refused.
    pub actions_unanswered: u64,
    /// Entry frames received (`message:edited`, `message:deleted`,
    /// `message:reaction`), resends and redeliveries included.
    pub entries_received: u64,
    /// Distinct (entry, user, device) received.
    pub entry_deliveries: u64,
    /// (device, message) final views compared with the server's (0 when the
    /// server's state was not read).
    pub views_checked: u64,
    /// Of those, views of a message that was edited, deleted, or carries
    /// reactions at the end.
    pub views_checked_changed: u64,
    /// The server's messages at the end: edited (and not deleted), deleted,
    /// and the reactions on them.
    pub server_edited: u64,
    pub server_deleted: u64,
    pub server_reactions: u64,
    /// Receipts of a message again on the same connection, under the same
    /// frame, before it was acked there (the server's resend).
    pub resends: u64,
    /// First receipts on a connection of a message its device had acked on
    /// an earlier connection, allowed because the device's cursor was not
    /// known to be past it (a hole before it, or the ack maybe unprocessed).
    pub redeliveries_behind_cursor: u64,
    pub acks: u64,
    /// `message:status` frames.
    pub statuses: u64,
    /// `receipt` frames.
    pub receipts_pushed: u64,
    /// Receipts read from `GET /api/sync`.
    pub receipts_read: u64,
    pub reads_sent: u64,
    /// `Connected` events (a reconnect is a new connection).
    pub connections: u64,
    /// Distinct (user, device) that connected at least once.
    pub devices: u64,
    /// Devices with a connection that is open and has had its `sync:done`
    /// (what the settle phase waits for; 0 once the clients have stopped).
    pub devices_caught_up: u64,
    /// Client-side send failures by reason.
    pub send_failures: BTreeMap<String, u64>,
    /// Client-side failures of edits, deletes and reactions by reason (each retried).
    pub action_failures: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub counts: Counts,
    /// Every check, with zero for those that passed.
    pub violations_by_check: BTreeMap<Check, u64>,
    /// Sorted by `at_ms` (ties keep check order, then discovery order).
    pub violations: Vec<Violation>,
}

/// Judges a run. Deterministic and free of I/O. `server`: what the server
/// holds once the run has settled; without it (while the run settles, or a
/// folder judged again without one) the final views are not judged.
pub fn check(events: &[Event], chats: &Chats, server: Option<&ServerState>, rules: &Rules) -> Verdict {
    let history = History::new(events);
    let mut found = Found::default();
    let mut counts = count(&history);

    check_lost(&history, chats, &mut found);
    check_lost_entries(&history, chats, server, &mut found);
    check_echoed_to_sending_device(&history, &mut found);
    check_duplicate_creation(&history, &mut found);
    check_inconsistent(&history, chats, &mut found);
    counts.resends = check_connection_order_and_acks(&history, &mut found);
    check_entry_before_message(&history, &mut found);
    counts.redeliveries_behind_cursor = check_redelivered_other_connection(&history, chats, rules, &mut found);
    check_status_regression(&history, &mut found);
    check_missing_delivered_status(&history, &mut found);
    check_unexpected_refusal(&history, server, &mut found);
    if let Some(server) = server {
        check_final_views(&history, server, &mut counts, &mut found);
    }

    let mut violations = found.0;
    // Stable: equal times keep the order above, so the output is reproducible.
    violations.sort_by_key(|violation| violation.at_ms);
    let mut violations_by_check: BTreeMap<Check, u64> = Check::ALL.iter().map(|&check| (check, 0)).collect();
    for violation in &violations {
        *violations_by_check.entry(violation.check).or_default() += 1;
    }
    Verdict { counts, violations_by_check, violations }
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    pub fn violation_count(&self, check: Check) -> u64 {
        self.violations_by_check.get(&check).copied().unwrap_or(0)
    }

    /// Nothing more can still arrive: every answered send and entry reached
    /// every device that should have it, every ack's ✓✓ reached its sender,
    /// no send or action is left unanswered, and every device is connected
    /// and through its catch-up. The runner polls this while the deployment
    /// settles; the other checks are about things that already happened and
    /// cannot heal.
    pub fn is_settled(&self) -> bool {
        self.violation_count(Check::Lost) == 0
            && self.violation_count(Check::MissingDeliveredStatus) == 0
            && self.counts.sends_unanswered == 0
            && self.counts.actions_unanswered == 0
            && self.counts.devices_caught_up == self.counts.devices
    }

    /// The checks with at least one violation, in report order.
    pub fn failed_checks(&self) -> Vec<Check> {
        Check::ALL.into_iter().filter(|&check| self.violation_count(check) > 0).collect()
    }

    /// A plain-text table of the run's figures, ending with the line
    /// `N passed, M failed` (over the 12 checks).
    pub fn report(&self, faults: &[AppliedFault]) -> String {
        let counts = &self.counts;
        let mut rows: Vec<(String, u64)> = vec![
            ("sends attempted".into(), counts.sends_attempted),
            ("sends answered".into(), counts.sends_answered),
            ("sends unanswered".into(), counts.sends_unanswered),
            ("receives".into(), counts.received),
            ("deliveries (message, device)".into(), counts.deliveries),
            ("resends before ack".into(), counts.resends),
            ("redeliveries behind the cursor".into(), counts.redeliveries_behind_cursor),
            ("entries received".into(), counts.entries_received),
            ("entry deliveries (entry, device)".into(), counts.entry_deliveries),
            ("acks".into(), counts.acks),
            ("statuses".into(), counts.statuses),
            ("receipts pushed".into(), counts.receipts_pushed),
            ("receipts read".into(), counts.receipts_read),
            ("reads sent".into(), counts.reads_sent),
            ("devices".into(), counts.devices),
            ("connections".into(), counts.connections),
        ];
        let kinds = ["edit", "delete", "react", "unreact"];
        for kind in kinds {
            rows.push((format!("{kind}s attempted"), counts.actions_attempted.get(kind).copied().unwrap_or(0)));
        }
        for kind in kinds {
            rows.push((format!("{kind}s made (an entry)"), counts.actions_changed.get(kind).copied().unwrap_or(0)));
        }
        rows.push(("reactions unchanged (changed: false)".into(), counts.actions_unchanged));
        for (code, n) in &counts.actions_refused {
            rows.push((format!("actions refused: {code}"), *n));
        }
        rows.push(("actions unanswered".into(), counts.actions_unanswered));
        rows.push(("final views checked (message, device)".into(), counts.views_checked));
        rows.push(("final views of edited/deleted/reacted messages".into(), counts.views_checked_changed));
        rows.push(("server: messages edited".into(), counts.server_edited));
        rows.push(("server: messages deleted".into(), counts.server_deleted));
        rows.push(("server: reactions".into(), counts.server_reactions));
        for check in Check::ALL {
            rows.push((format!("violations: {check}"), self.violation_count(check)));
        }
        let mut faults_by_kind: BTreeMap<&str, u64> = BTreeMap::new();
        for fault in faults {
            *faults_by_kind.entry(fault.kind.as_str()).or_default() += 1;
        }
        rows.push(("faults applied".into(), faults.len() as u64));
        for (kind, n) in faults_by_kind {
            rows.push((format!("faults: {kind}"), n));
        }
        rows.push(("client-side errors".into(), counts.send_failures.values().sum()));
        for (reason, n) in &counts.send_failures {
            rows.push((format!("client-side errors: {reason}"), *n));
        }
        rows.push(("client-side action errors".into(), counts.action_failures.values().sum()));
        for (reason, n) in &counts.action_failures {
            rows.push((format!("client-side action errors: {reason}"), *n));
        }

        let label_width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
        let value_width = rows.iter().map(|(_, value)| value.to_string().len()).max().unwrap_or(1);
        let mut out = String::new();
        for (label, value) in &rows {
            let _ = writeln!(out, "{label:<label_width$}  {value:>value_width$}");
        }
        let failed = self.failed_checks().len();
        let _ = writeln!(out, "{} passed, {} failed", Check::ALL.len() - failed, failed);
        out
    }

    /// The earliest violation with what led to it: the history of its message
    /// (at most ~30 events, those nearest the violation) and the faults applied
    /// within 10 s either side. `None` when the run passed.
    pub fn first_violation_context(&self, events: &[Event], faults: &[AppliedFault]) -> Option<String> {
        const MAX_EVENTS: usize = 30;
        const FAULT_WINDOW_MS: u64 = 10_000;

        let violation = self.violations.first()?;
        let mut out = String::new();
        // The caller titles it ("first violation:"), so it starts with the check.
        let _ = writeln!(out, "{} at {} ms", violation.check, violation.at_ms);
        let _ = writeln!(
            out,
            "  message {}  seq {}  chat {}  user {}  device {}  conn {}",
            violation.message_id.as_deref().unwrap_or("-"),
            violation.seq.map_or_else(|| "-".to_string(), |seq| seq.to_string()),
            violation.chat_id.as_deref().unwrap_or("-"),
            violation.user,
            violation.device.as_deref().unwrap_or("-"),
            violation.conn,
        );
        let _ = writeln!(out, "  {}", violation.detail);

        let history = History::new(events);
        let related: Vec<&Event> = match &violation.message_id {
            Some(message_id) => history.events_of_message(message_id),
            // Not tied to a message: what its connection did around then.
            None => history
                .timeline
                .iter()
                .copied()
                .filter(|event| {
                    event.user == violation.user
                        && event.conn == violation.conn
                        && event.at_ms.abs_diff(violation.at_ms) <= FAULT_WINDOW_MS
                })
                .collect(),
        };
        let shown = window_around(&related, violation.at_ms, MAX_EVENTS);
        match &violation.message_id {
            Some(message_id) if shown.len() < related.len() => {
                let _ = writeln!(
                    out,
                    "history of {message_id} ({} of {} events, nearest the violation):",
                    shown.len(),
                    related.len()
                );
            }
            Some(message_id) => {
                let _ = writeln!(out, "history of {message_id} ({} events):", related.len());
            }
            None => {
                let _ = writeln!(out, "events of {} conn {} within 10 s:", violation.user, violation.conn);
            }
        }
        for event in shown {
            let _ = writeln!(
                out,
                "  {:>9} ms  {} conn {}  {}",
                event.at_ms,
                who(event),
                event.conn,
                describe(&event.kind)
            );
        }

        let mut nearby: Vec<&AppliedFault> = faults
            .iter()
            .filter(|fault| fault.at_ms.abs_diff(violation.at_ms) <= FAULT_WINDOW_MS)
            .collect();
        nearby.sort_by_key(|fault| fault.at_ms);
        let _ = writeln!(out, "faults within 10 s ({}):", nearby.len());
        for fault in nearby {
            let _ = writeln!(out, "  {:>9} ms  {}  {}", fault.at_ms, fault.kind, fault.detail);
        }
        Some(out)
    }
}

/// Who recorded an event, for the context: the device when its id names the
/// user (`u3-phone`), else `user/device`.
fn who(event: &Event) -> String {
    match event.device.strip_prefix(event.user.as_str()) {
        Some(rest) if rest.starts_with('-') => event.device.clone(),
        _ => format!("{}/{}", event.user, event.device),
    }
}

/// At most `max` events of `events` (time-ordered), centred on `at_ms`.
fn window_around<'a>(events: &[&'a Event], at_ms: u64, max: usize) -> Vec<&'a Event> {
    if events.len() <= max {
        return events.to_vec();
    }
    let pivot = events.partition_point(|event| event.at_ms < at_ms);
    let start = pivot.saturating_sub(max / 2).min(events.len() - max);
    events[start..start + max].to_vec()
}

fn describe(kind: &EventKind) -> String {
    match kind {
        EventKind::Connected { node } => format!("connected (api node {node})"),
        EventKind::Disconnected => "disconnected".to_string(),
        EventKind::SendAttempt { chat_id, client_msg_id } => {
            format!("send attempt: chat {chat_id}, client_msg_id {client_msg_id}")
        }
        EventKind::SendAnswered { chat_id, client_msg_id, message_id, seq, .. } => {
            format!("send answered: {message_id} seq {seq} in chat {chat_id}, client_msg_id {client_msg_id}")
        }
        EventKind::SendFailed { client_msg_id, reason } => {
            format!("send failed: client_msg_id {client_msg_id}: {reason}")
        }
        EventKind::Received { chat_id, message_id, sender_id, seq, frame_id, deleted, about, .. } => {
            let frame = frame_id.map_or_else(String::new, |id| format!(" (frame {id})"));
            match about {
                None => {
                    let tombstone = if *deleted { " (tombstone)" } else { "" };
                    format!("received {message_id} seq {seq} in chat {chat_id} from {sender_id}{tombstone}{frame}")
                }
                Some(About { message_id: target, change }) => {
                    format!("received entry {message_id}: {} of {target} by {sender_id}{frame}", describe_change(change))
                }
            }
        }
        EventKind::ActionAttempt { action_id, message_id, change, .. } => {
            format!("action attempt {action_id}: {} of {message_id}", describe_change(change))
        }
        EventKind::ActionAnswered { action_id, chat_id, message_id, change, changed, seq } => match (changed, seq) {
            (true, Some(seq)) => format!(
                "action answered {action_id}: {} of {message_id}, entry {}",
                describe_change(change),
                entry_key(chat_id, *seq)
            ),
            _ => format!("action answered {action_id}: {} of {message_id}, changed: false", describe_change(change)),
        },
        EventKind::ActionRefused { action_id, message_id, change, code, .. } => {
            format!("action refused {action_id}: {} of {message_id}: {code}", describe_change(change))
        }
        EventKind::ActionFailed { action_id, reason } => format!("action failed {action_id}: {reason}"),
        EventKind::Acked { message_id } => format!("acked {message_id}"),
        EventKind::Status { message_id, recipient, status } => {
            format!("status of {message_id} for {recipient}: {status}")
        }
        EventKind::ReadSent { chat_id, up_to_seq } => format!("read sent: chat {chat_id} up to seq {up_to_seq}"),
        EventKind::SyncDone { count } => format!("sync:done ({count})"),
        EventKind::Receipt { chat_id, user_id, delivered_seq, read_seq, pushed } => {
            let how = if *pushed { "receipt" } else { "receipt read from /api/sync" };
            format!("{how}: {user_id} in chat {chat_id} delivered up to seq {delivered_seq}, read up to seq {read_seq}")
        }
    }
}

fn describe_change(change: &Change) -> String {
    match change {
        Change::Edit { content } => format!("edit to {content:?}"),
        Change::Delete => "delete".to_string(),
        Change::React { emoji } => format!("react {emoji}"),
        Change::Unreact { emoji } => format!("unreact {emoji}"),
    }
}

// ---------------------------------------------------------------------------
// Indexes over the history, built once.

/// A device: (user, device id).
type DeviceKey<'a> = (&'a str, &'a str);

/// The first answer for a message id: who sent it, from which device, where, and as what.
struct Answer<'a> {
    user: &'a str,
    device: &'a str,
    conn: u64,
    at_ms: u64,
    chat_id: &'a str,
    client_msg_id: &'a str,
    seq: i64,
    /// When its first try was written (the message cannot be older).
    first_attempt_ms: u64,
}

#[derive(Default, Clone, Copy)]
struct Lifetime {
    connected_at: Option<u64>,
    disconnected_at: Option<u64>,
    /// When it got its `sync:done` (first).
    synced_at: Option<u64>,
}

/// What the history says about one device.
#[derive(Clone)]
struct DeviceInfo {
    /// Its first connection's `Connected`: it exists on the server from then on at the latest.
    created_at: u64,
    /// Its connections, by `Connected` time.
    conns: Vec<u64>,
}

/// A log entry about a message (an edit, delete or reaction), as the history
/// knows it: from its maker's answer, or from any device that received it.
struct EntryInfo<'a> {
    chat_id: &'a str,
    seq: i64,
    /// Who wrote it (a reaction's user).
    user: &'a str,
    /// The message it is about.
    target: &'a str,
    change: &'a Change,
    /// The maker's answer, if one came.
    answer: Option<EntryAnswer<'a>>,
    /// When it was first seen, answered or received.
    first_seen_ms: u64,
}

/// Where and when an entry's maker got its answer.
#[derive(Clone, Copy)]
struct EntryAnswer<'a> {
    device: &'a str,
    conn: u64,
    at_ms: u64,
    /// When the action's first try was written (the entry cannot be older).
    first_attempt_ms: u64,
}

/// One edit, delete, react or unreact of a device, over all its tries.
struct Action<'a> {
    device: &'a str,
    target: &'a str,
    change: &'a Change,
    first_attempt_ms: u64,
    /// Tries that failed on the client's side: each may have written an
    /// entry whose answer never came (the device then knows nothing of its seq).
    failed_tries: u32,
    /// The answer: `Some(true)` an entry, `Some(false)` `changed: false`.
    changed: Option<bool>,
    /// The refusal's code, if it was refused.
    refused: Option<&'a str>,
}

struct History<'a> {
    /// Every event by time; equal times keep the recording order, which is the
    /// order one client saw them in.
    timeline: Vec<&'a Event>,
    /// message id → its first answer. The sender of a message is whoever got it.
    answers: BTreeMap<&'a str, Answer<'a>>,
    /// entry key → what is known of that entry (edits, deletes, reactions).
    entries: BTreeMap<String, EntryInfo<'a>>,
    /// (user, action id) → the action.
    actions: BTreeMap<(&'a str, &'a str), Action<'a>>,
    /// (user, conn) → when it was opened and closed (first of each).
    lifetimes: HashMap<(&'a str, u64), Lifetime>,
    /// Every device that ever connected.
    devices: BTreeMap<DeviceKey<'a>, DeviceInfo>,
    /// (chat, seq) → the first message (id) or entry (key) seen there
    /// (answered or received).
    at_seq: HashMap<(&'a str, i64), String>,
}

impl<'a> History<'a> {
    fn new(events: &'a [Event]) -> Self {
        let mut timeline: Vec<&Event> = events.iter().collect();
        timeline.sort_by_key(|event| event.at_ms);

        let mut answers = BTreeMap::new();
        let mut entries: BTreeMap<String, EntryInfo> = BTreeMap::new();
        let mut actions: BTreeMap<(&str, &str), Action> = BTreeMap::new();
        let mut lifetimes: HashMap<(&str, u64), Lifetime> = HashMap::new();
        let mut devices: BTreeMap<DeviceKey, DeviceInfo> = BTreeMap::new();
        let mut at_seq: HashMap<(&str, i64), String> = HashMap::new();
        let mut first_attempts: HashMap<(&str, &str), u64> = HashMap::new();
        for event in &timeline {
            match &event.kind {
                EventKind::SendAttempt { client_msg_id, .. } => {
                    first_attempts.entry((event.user.as_str(), client_msg_id.as_str())).or_insert(event.at_ms);
                }
                EventKind::ActionAttempt { action_id, message_id, change, .. } => {
                    actions.entry((event.user.as_str(), action_id.as_str())).or_insert(Action {
                        device: &event.device,
                        target: message_id,
                        change,
                        first_attempt_ms: event.at_ms,
                        failed_tries: 0,
                        changed: None,
                        refused: None,
                    });
                }
                EventKind::ActionFailed { action_id, .. } => {
                    if let Some(action) = actions.get_mut(&(event.user.as_str(), action_id.as_str())) {
                        action.failed_tries += 1;
                    }
                }
                EventKind::ActionRefused { action_id, code, .. } => {
                    if let Some(action) = actions.get_mut(&(event.user.as_str(), action_id.as_str())) {
                        action.refused.get_or_insert(code);
                    }
                }
                EventKind::ActionAnswered { action_id, chat_id, message_id, change, changed, seq } => {
                    let first_attempt_ms = match actions.get_mut(&(event.user.as_str(), action_id.as_str())) {
                        Some(action) => {
                            action.changed.get_or_insert(*changed);
                            action.first_attempt_ms
                        }
                        None => event.at_ms,
                    };
                    if let (true, Some(seq)) = (*changed, *seq) {
                        let key = entry_key(chat_id, seq);
                        at_seq.entry((chat_id.as_str(), seq)).or_insert_with(|| key.clone());
                        let entry = entries.entry(key).or_insert(EntryInfo {
                            chat_id,
                            seq,
                            user: &event.user,
                            target: message_id,
                            change,
                            answer: None,
                            first_seen_ms: event.at_ms,
                        });
                        entry.answer.get_or_insert(EntryAnswer {
                            device: &event.device,
                            conn: event.conn,
                            at_ms: event.at_ms,
                            first_attempt_ms,
                        });
                    }
                }
                EventKind::SendAnswered { chat_id, client_msg_id, message_id, seq, .. } => {
                    let first_attempt_ms = first_attempts
                        .get(&(event.user.as_str(), client_msg_id.as_str()))
                        .copied()
                        .unwrap_or(event.at_ms);
                    answers.entry(message_id.as_str()).or_insert(Answer {
                        user: &event.user,
                        device: &event.device,
                        conn: event.conn,
                        at_ms: event.at_ms,
                        chat_id,
                        client_msg_id,
                        seq: *seq,
                        first_attempt_ms,
                    });
                    at_seq.entry((chat_id.as_str(), *seq)).or_insert_with(|| message_id.clone());
                }
                EventKind::Received { chat_id, message_id, sender_id, seq, about, .. } => {
                    at_seq.entry((chat_id.as_str(), *seq)).or_insert_with(|| message_id.clone());
                    if let Some(about) = about {
                        entries.entry(message_id.clone()).or_insert(EntryInfo {
                            chat_id,
                            seq: *seq,
                            user: sender_id,
                            target: &about.message_id,
                            change: &about.change,
                            answer: None,
                            first_seen_ms: event.at_ms,
                        });
                    }
                }
                EventKind::Connected { .. } => {
                    let lifetime = lifetimes.entry((event.user.as_str(), event.conn)).or_default();
                    lifetime.connected_at.get_or_insert(event.at_ms);
                    devices
                        .entry((event.user.as_str(), event.device.as_str()))
                        .or_insert(DeviceInfo { created_at: event.at_ms, conns: Vec::new() })
                        .conns
                        .push(event.conn);
                }
                EventKind::Disconnected => {
                    let lifetime = lifetimes.entry((event.user.as_str(), event.conn)).or_default();
                    lifetime.disconnected_at.get_or_insert(event.at_ms);
                }
                EventKind::SyncDone { .. } => {
                    lifetimes.entry((event.user.as_str(), event.conn)).or_default().synced_at.get_or_insert(event.at_ms);
                }
                _ => {}
            }
        }
        Self { timeline, answers, entries, actions, lifetimes, devices, at_seq }
    }

    /// Whether the history shows `message_id` deleted for everyone: a delete
    /// entry about it (answered or received), a tombstone received, or an
    /// action on it refused `already_deleted`.
    fn deleted_messages(&self) -> HashSet<&'a str> {
        let mut deleted: HashSet<&str> = self
            .entries
            .values()
            .filter(|entry| *entry.change == Change::Delete)
            .map(|entry| entry.target)
            .collect();
        for event in &self.timeline {
            match &event.kind {
                EventKind::Received { message_id, deleted: true, about: None, .. } => {
                    deleted.insert(message_id);
                }
                EventKind::ActionRefused { message_id, code, .. } if code == "already_deleted" => {
                    deleted.insert(message_id);
                }
                _ => {}
            }
        }
        deleted
    }

    fn lifetime(&self, user: &str, conn: u64) -> Lifetime {
        self.lifetimes.get(&(user, conn)).copied().unwrap_or_default()
    }

    /// The devices of `user` that ever connected, with their info.
    fn devices_of(&self, user: &'a str) -> impl Iterator<Item = (&'a str, &DeviceInfo)> + '_ {
        self.devices.range((user, "")..).take_while(move |((u, _), _)| *u == user).map(|((_, device), info)| (*device, info))
    }

    /// Every event naming `message_id` (a message, or an entry's key), plus
    /// the send tries that produced it (same sender and client_msg_id), and,
    /// for a message, the entries and actions about it, in time order.
    fn events_of_message(&self, message_id: &str) -> Vec<&'a Event> {
        let tries: BTreeSet<(&str, &str)> = self
            .timeline
            .iter()
            .filter_map(|event| match &event.kind {
                EventKind::SendAnswered { message_id: answered, client_msg_id, .. } if answered == message_id => {
                    Some((event.user.as_str(), client_msg_id.as_str()))
                }
                _ => None,
            })
            .collect();
        // The entries about it, and the action that made an entry named here.
        let entry_keys: HashSet<&str> = self
            .entries
            .iter()
            .filter(|(_, entry)| entry.target == message_id)
            .map(|(key, _)| key.as_str())
            .collect();
        let action_ids: HashSet<(&str, &str)> = self
            .timeline
            .iter()
            .filter_map(|event| match &event.kind {
                EventKind::ActionAttempt { action_id, message_id: target, .. } if target == message_id => {
                    Some((event.user.as_str(), action_id.as_str()))
                }
                EventKind::ActionAnswered { action_id, chat_id, seq: Some(seq), changed: true, .. }
                    if entry_key(chat_id, *seq) == message_id =>
                {
                    Some((event.user.as_str(), action_id.as_str()))
                }
                _ => None,
            })
            .collect();
        self.timeline
            .iter()
            .copied()
            .filter(|event| match &event.kind {
                EventKind::Received { message_id: id, about: Some(about), .. } => {
                    id == message_id || about.message_id == message_id
                }
                EventKind::Acked { message_id: id } => id == message_id || entry_keys.contains(id.as_str()),
                EventKind::SendAnswered { message_id: id, .. }
                | EventKind::Received { message_id: id, .. }
                | EventKind::Status { message_id: id, .. } => id == message_id,
                EventKind::SendAttempt { client_msg_id, .. } | EventKind::SendFailed { client_msg_id, .. } => {
                    tries.contains(&(event.user.as_str(), client_msg_id.as_str()))
                }
                EventKind::ActionAttempt { action_id, .. }
                | EventKind::ActionAnswered { action_id, .. }
                | EventKind::ActionRefused { action_id, .. }
                | EventKind::ActionFailed { action_id, .. } => action_ids.contains(&(event.user.as_str(), action_id.as_str())),
                EventKind::Connected { .. }
                | EventKind::Disconnected
                | EventKind::ReadSent { .. }
                | EventKind::SyncDone { .. }
                | EventKind::Receipt { .. } => false,
            })
            .collect()
    }
}

/// Where a violation happened: a user, maybe one of their devices, maybe one connection.
struct At<'a> {
    user: &'a str,
    device: Option<&'a str>,
    conn: u64,
}

impl<'a> At<'a> {
    fn event(event: &'a Event) -> Self {
        Self { user: &event.user, device: Some(&event.device), conn: event.conn }
    }
}

#[derive(Default)]
struct Found(Vec<Violation>);

impl Found {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        check: Check,
        at: At,
        message_id: Option<&str>,
        chat_id: Option<&str>,
        seq: Option<i64>,
        at_ms: u64,
        detail: String,
    ) {
        self.0.push(Violation {
            check,
            user: at.user.to_string(),
            device: at.device.map(str::to_string),
            conn: at.conn,
            message_id: message_id.map(str::to_string),
            chat_id: chat_id.map(str::to_string),
            seq,
            at_ms,
            detail,
        });
    }
}

fn count(history: &History) -> Counts {
    let mut counts = Counts::default();
    let mut attempted: BTreeSet<(&str, &str)> = BTreeSet::new();
    let mut answered: BTreeSet<(&str, &str)> = BTreeSet::new();
    let mut deliveries: HashSet<(&str, &str, &str)> = HashSet::new();
    let mut entry_deliveries: HashSet<(&str, &str, &str)> = HashSet::new();
    for event in &history.timeline {
        match &event.kind {
            EventKind::ActionAttempt { .. } | EventKind::ActionAnswered { .. } | EventKind::ActionRefused { .. } => {}
            EventKind::ActionFailed { reason, .. } => {
                *counts.action_failures.entry(reason.clone()).or_default() += 1;
            }
            EventKind::Received { message_id, about: Some(_), .. } => {
                counts.entries_received += 1;
                entry_deliveries.insert((message_id, &event.user, &event.device));
            }
            EventKind::Connected { .. } => counts.connections += 1,
            EventKind::Disconnected | EventKind::SyncDone { .. } => {}
            EventKind::SendAttempt { client_msg_id, .. } => {
                attempted.insert((&event.user, client_msg_id));
            }
            EventKind::SendAnswered { client_msg_id, .. } => {
                answered.insert((&event.user, client_msg_id));
            }
            EventKind::SendFailed { reason, .. } => {
                *counts.send_failures.entry(reason.clone()).or_default() += 1;
            }
            EventKind::Received { message_id, .. } => {
                counts.received += 1;
                deliveries.insert((message_id, &event.user, &event.device));
            }
            EventKind::Acked { .. } => counts.acks += 1,
            EventKind::Status { .. } => counts.statuses += 1,
            EventKind::Receipt { pushed: true, .. } => counts.receipts_pushed += 1,
            EventKind::Receipt { pushed: false, .. } => counts.receipts_read += 1,
            EventKind::ReadSent { .. } => counts.reads_sent += 1,
        }
    }
    counts.sends_attempted = attempted.len() as u64;
    counts.sends_answered = answered.len() as u64;
    counts.sends_unanswered = attempted.difference(&answered).count() as u64;
    counts.deliveries = deliveries.len() as u64;
    counts.entry_deliveries = entry_deliveries.len() as u64;
    for action in history.actions.values() {
        let kind = action.change.kind().to_string();
        *counts.actions_attempted.entry(kind.clone()).or_default() += 1;
        match (action.changed, action.refused) {
            (Some(true), _) => *counts.actions_changed.entry(kind).or_default() += 1,
            (Some(false), _) => counts.actions_unchanged += 1,
            (None, Some(code)) => *counts.actions_refused.entry(code.to_string()).or_default() += 1,
            (None, None) => counts.actions_unanswered += 1,
        }
    }
    counts.devices = history.devices.len() as u64;
    counts.devices_caught_up = history
        .devices
        .iter()
        .filter(|((user, _), info)| {
            info.conns.iter().any(|&conn| {
                let lifetime = history.lifetime(user, conn);
                lifetime.synced_at.is_some() && lifetime.disconnected_at.is_none()
            })
        })
        .count() as u64;
    counts
}

// ---------------------------------------------------------------------------
// The checks.

/// `lost`: every answered send reaches every device of every member of its
/// chat — the sender's other devices included — except the device that sent
/// it. A device is owed the messages sent after it first connected (a device
/// new to the server starts at its user's delivered watermark, so what was
/// sent before may or may not come; the runner creates every device first).
fn check_lost(history: &History, chats: &Chats, found: &mut Found) {
    let mut received: HashSet<(&str, &str, &str)> = HashSet::new();
    let mut expired: HashSet<(&str, &str)> = HashSet::new();
    for event in &history.timeline {
        match &event.kind {
            EventKind::Received { message_id, .. } => {
                received.insert((message_id, &event.user, &event.device));
            }
            EventKind::Status { message_id, recipient, status } if status == "expired" => {
                expired.insert((message_id, recipient));
            }
            _ => {}
        }
    }
    for (&message_id, answer) in &history.answers {
        // An answer in a chat the run does not know is reported as
        // `inconsistent`; without members there is nobody to have lost it.
        let Some(members) = chats.get(answer.chat_id) else { continue };
        for member in members {
            // Expiry is the server giving up on an offline recipient; it is
            // still a loss from the run's point of view, but say so.
            let expiry_note = if expired.contains(&(message_id, member.as_str())) {
                "; the sender saw it expire for them"
            } else {
                ""
            };
            let mut devices = history.devices_of(member).peekable();
            if devices.peek().is_none() {
                if member != answer.user {
                    found.push(
                        Check::Lost,
                        At { user: member, device: None, conn: 0 },
                        Some(message_id),
                        Some(answer.chat_id),
                        Some(answer.seq),
                        answer.at_ms,
                        format!(
                            "sent by {} (conn {}, answered at {} ms), never received by {member}: none of their devices ever connected",
                            answer.user, answer.conn, answer.at_ms
                        ),
                    );
                }
                continue;
            }
            for (device, info) in devices {
                let sending_device = member == answer.user && device == answer.device;
                if sending_device || info.created_at > answer.first_attempt_ms {
                    continue;
                }
                if received.contains(&(message_id, member.as_str(), device)) {
                    continue;
                }
                let whose = if member == answer.user { "the sender's other device" } else { "their device" };
                found.push(
                    Check::Lost,
                    At { user: member, device: Some(device), conn: 0 },
                    Some(message_id),
                    Some(answer.chat_id),
                    Some(answer.seq),
                    answer.at_ms,
                    format!(
                        "sent by {} from {} (conn {}, answered at {} ms), never received by {whose} {device} \
                         (created at {} ms) on any connection{expiry_note}",
                        answer.user, answer.device, answer.conn, answer.at_ms, info.created_at
                    ),
                );
            }
        }
    }
}

/// `lost`, for entries about a message: every answered edit, delete and
/// reaction reaches every device of every member of its chat except the one
/// that made it (the maker's other devices included) — unless it became moot,
/// which devices reading it after that pass over: an edit that a later edit
/// of the same message supersedes, an edit or reaction of a message since
/// deleted. (A delete is never moot.)
fn check_lost_entries(history: &History, chats: &Chats, server: Option<&ServerState>, found: &mut Found) {
    let mut received: HashSet<(&str, &str, &str)> = HashSet::new();
    for event in &history.timeline {
        if let EventKind::Received { message_id, about: Some(_), .. } = &event.kind {
            received.insert((message_id, &event.user, &event.device));
        }
    }
    let mut deleted = history.deleted_messages();
    if let Some(server) = server {
        deleted.extend(server.messages.iter().filter(|(_, message)| message.deleted).map(|(id, _)| id.as_str()));
    }
    // message → the seq of its latest edit the history knows of.
    let mut latest_edit: HashMap<&str, i64> = HashMap::new();
    for entry in history.entries.values() {
        if let Change::Edit { .. } = entry.change {
            let latest = latest_edit.entry(entry.target).or_insert(entry.seq);
            *latest = (*latest).max(entry.seq);
        }
    }
    for (key, entry) in &history.entries {
        let moot = match entry.change {
            Change::Delete => false,
            Change::Edit { .. } => {
                deleted.contains(entry.target) || latest_edit.get(entry.target).is_some_and(|&latest| latest > entry.seq)
            }
            Change::React { .. } | Change::Unreact { .. } => deleted.contains(entry.target),
        };
        if moot {
            continue;
        }
        let Some(members) = chats.get(entry.chat_id) else { continue };
        // The device that made it: the one answered; without an answer, any
        // device of the user whose same action had a try go unanswered.
        let (makers, made_ms, whence): (Vec<&str>, u64, String) = match entry.answer {
            Some(answer) => (
                vec![answer.device],
                answer.first_attempt_ms,
                format!("from {} (conn {}, answered at {} ms)", answer.device, answer.conn, answer.at_ms),
            ),
            None => (
                history
                    .actions
                    .iter()
                    .filter(|((user, _), action)| {
                        *user == entry.user
                            && action.target == entry.target
                            && action.change == entry.change
                            && (action.failed_tries > 0 || (action.changed.is_none() && action.refused.is_none()))
                    })
                    .map(|(_, action)| action.device)
                    .collect(),
                entry.first_seen_ms,
                format!("(its answer never came; first seen at {} ms)", entry.first_seen_ms),
            ),
        };
        for member in members {
            for (device, info) in history.devices_of(member) {
                let making_device = member == entry.user && makers.contains(&device);
                if making_device || info.created_at > made_ms {
                    continue;
                }
                if received.contains(&(key.as_str(), member.as_str(), device)) {
                    continue;
                }
                let whose = if member == entry.user { "the maker's other device" } else { "their device" };
                found.push(
                    Check::Lost,
                    At { user: member, device: Some(device), conn: 0 },
                    Some(key),
                    Some(entry.chat_id),
                    Some(entry.seq),
                    entry.answer.map_or(entry.first_seen_ms, |answer| answer.at_ms),
                    format!(
                        "{} of {} by {} {whence}, never received by {whose} {device} on any connection",
                        describe_change(entry.change),
                        entry.target,
                        entry.user,
                    ),
                );
            }
        }
    }
}

/// `echoed_to_sending_device`: a device never receives a message it sent
/// itself (its user's other devices do), on any of its connections; nor an
/// edit, delete or reaction it made.
fn check_echoed_to_sending_device(history: &History, found: &mut Found) {
    let mut reported: HashSet<(&str, &str, &str)> = HashSet::new();
    for event in &history.timeline {
        let EventKind::Received { chat_id, message_id, seq, about, .. } = &event.kind else { continue };
        if about.is_some() {
            let Some(entry) = history.entries.get(message_id.as_str()) else { continue };
            let Some(answer) = entry.answer else { continue };
            if entry.user != event.user || answer.device != event.device {
                continue;
            }
            if !reported.insert((&event.user, &event.device, message_id)) {
                continue;
            }
            found.push(
                Check::EchoedToSendingDevice,
                At::event(event),
                Some(message_id),
                Some(chat_id),
                Some(*seq),
                event.at_ms,
                format!(
                    "{} made this {} (conn {}, answered at {} ms) and got it back on conn {}",
                    event.device,
                    describe_change(entry.change),
                    answer.conn,
                    answer.at_ms,
                    event.conn
                ),
            );
            continue;
        }
        let Some(answer) = history.answers.get(message_id.as_str()) else { continue };
        if answer.user != event.user || answer.device != event.device {
            continue;
        }
        if !reported.insert((&event.user, &event.device, message_id)) {
            continue;
        }
        found.push(
            Check::EchoedToSendingDevice,
            At::event(event),
            Some(message_id),
            Some(chat_id),
            Some(*seq),
            event.at_ms,
            format!(
                "{} sent it (conn {}, client_msg_id {}, answered at {} ms) and got it back on conn {}",
                event.device, answer.conn, answer.client_msg_id, answer.at_ms, event.conn
            ),
        );
    }
}

/// `duplicate_creation`: a (sender, client_msg_id) names one message: retries get the original back.
fn check_duplicate_creation(history: &History, found: &mut Found) {
    // (user, client_msg_id) → the first answer's (message_id, seq), and every
    // other (message_id, seq) already reported.
    let mut first: HashMap<(&str, &str), (&str, i64)> = HashMap::new();
    let mut reported: HashSet<(&str, &str, &str, i64)> = HashSet::new();
    for event in &history.timeline {
        let EventKind::SendAnswered { chat_id, client_msg_id, message_id, seq, .. } = &event.kind else { continue };
        let original = *first.entry((&event.user, client_msg_id)).or_insert((message_id, *seq));
        if original == (message_id.as_str(), *seq) {
            continue;
        }
        if !reported.insert((&event.user, client_msg_id, message_id, *seq)) {
            continue;
        }
        found.push(
            Check::DuplicateCreation,
            At::event(event),
            Some(message_id),
            Some(chat_id),
            Some(*seq),
            event.at_ms,
            format!(
                "client_msg_id {client_msg_id} answered as {message_id} seq {seq}, but earlier as {} seq {}",
                original.0, original.1
            ),
        );
    }
}

/// `inconsistent`: a message id has one (chat, seq) and one sender everywhere; a (chat,
/// seq) names one message (the schema's `UNIQUE (chat_id, seq)`).
fn check_inconsistent(history: &History, chats: &Chats, found: &mut Found) {
    // message id (or entry key) → the first (chat, seq) seen for it, in answers or receipts.
    let mut placement: HashMap<String, (&str, i64)> = HashMap::new();
    // (chat, seq) → the first message id (or entry key) seen there.
    let mut occupant: HashMap<(&str, i64), String> = HashMap::new();
    // One violation per distinct wrong value, not per event carrying it: a
    // message received a hundred times with the wrong seq is one bug.
    let mut reported: HashSet<(String, String)> = HashSet::new();

    for event in &history.timeline {
        let (chat_id, message_id, seq, what) = match &event.kind {
            EventKind::SendAnswered { chat_id, message_id, seq, .. } => (chat_id, message_id.clone(), *seq, "answered"),
            EventKind::Received { chat_id, message_id, seq, .. } => (chat_id, message_id.clone(), *seq, "received"),
            EventKind::ActionAnswered { chat_id, seq: Some(seq), changed: true, .. } => {
                (chat_id, entry_key(chat_id, *seq), *seq, "answered")
            }
            _ => continue,
        };
        let message_id = message_id.as_str();
        let first = *placement.entry(message_id.to_owned()).or_insert((chat_id, seq));
        if first != (chat_id.as_str(), seq) && reported.insert((message_id.to_owned(), format!("placement {chat_id} {seq}"))) {
            found.push(
                Check::Inconsistent,
                At::event(event),
                Some(message_id),
                Some(chat_id),
                Some(seq),
                event.at_ms,
                format!(
                    "{what} as chat {chat_id} seq {seq}, but first seen as chat {} seq {}",
                    first.0, first.1
                ),
            );
        }
        let holder = occupant.entry((chat_id, seq)).or_insert_with(|| message_id.to_owned());
        if holder != message_id && reported.insert((message_id.to_owned(), format!("occupant {chat_id} {seq}"))) {
            found.push(
                Check::Inconsistent,
                At::event(event),
                Some(message_id),
                Some(chat_id),
                Some(seq),
                event.at_ms,
                format!("{what} at chat {chat_id} seq {seq}, which {holder} already holds"),
            );
        }
    }

    for event in &history.timeline {
        match &event.kind {
            EventKind::SendAnswered { chat_id, message_id, seq, .. } => {
                let Some(answer) = history.answers.get(message_id.as_str()) else { continue };
                if answer.user != event.user && reported.insert((message_id.clone(), format!("answered to {}", event.user))) {
                    found.push(
                        Check::Inconsistent,
                        At::event(event),
                        Some(message_id),
                        Some(chat_id),
                        Some(*seq),
                        event.at_ms,
                        format!("answered to {}, but first to {}", event.user, answer.user),
                    );
                }
                if !chats.contains_key(chat_id.as_str()) && reported.insert((message_id.clone(), "unknown chat".to_string())) {
                    found.push(
                        Check::Inconsistent,
                        At::event(event),
                        Some(message_id),
                        Some(chat_id),
                        Some(*seq),
                        event.at_ms,
                        format!("answered in chat {chat_id}, which is not one of the run's chats"),
                    );
                }
            }
            EventKind::Received { chat_id, message_id, sender_id, seq, about: Some(about), .. } => {
                // Every copy of an entry says the same as the first seen (or its answer).
                let Some(entry) = history.entries.get(message_id.as_str()) else { continue };
                if (entry.user, entry.target, entry.change) != (sender_id.as_str(), about.message_id.as_str(), &about.change)
                    && reported.insert((message_id.clone(), format!("entry {sender_id} {} {:?}", about.message_id, about.change)))
                {
                    found.push(
                        Check::Inconsistent,
                        At::event(event),
                        Some(message_id),
                        Some(chat_id),
                        Some(*seq),
                        event.at_ms,
                        format!(
                            "received as {} of {} by {sender_id}, but first seen as {} of {} by {}",
                            describe_change(&about.change),
                            about.message_id,
                            describe_change(entry.change),
                            entry.target,
                            entry.user
                        ),
                    );
                }
            }
            EventKind::ActionAnswered { chat_id, message_id, change, changed: true, seq: Some(seq), .. } => {
                let key = entry_key(chat_id, *seq);
                let Some(entry) = history.entries.get(&key) else { continue };
                if (entry.user, entry.target, entry.change) != (event.user.as_str(), message_id.as_str(), change)
                    && reported.insert((key.clone(), format!("answer {} {message_id} {change:?}", event.user)))
                {
                    found.push(
                        Check::Inconsistent,
                        At::event(event),
                        Some(&key),
                        Some(chat_id),
                        Some(*seq),
                        event.at_ms,
                        format!(
                            "answered to {} as {} of {message_id}, but received as {} of {} by {}",
                            event.user,
                            describe_change(change),
                            describe_change(entry.change),
                            entry.target,
                            entry.user
                        ),
                    );
                }
            }
            EventKind::Received { chat_id, message_id, sender_id, seq, .. } => {
                // A message whose answer never arrived has no known sender to compare with.
                let Some(answer) = history.answers.get(message_id.as_str()) else { continue };
                if answer.user != sender_id && reported.insert((message_id.clone(), format!("sender {sender_id}"))) {
                    found.push(
                        Check::Inconsistent,
                        At::event(event),
                        Some(message_id),
                        Some(chat_id),
                        Some(*seq),
                        event.at_ms,
                        format!("received with sender {sender_id}, but {} got the answer for it", answer.user),
                    );
                }
            }
            EventKind::Status { message_id, recipient, .. } => {
                let Some(answer) = history.answers.get(message_id.as_str()) else { continue };
                if answer.user != event.user && reported.insert((message_id.clone(), format!("status at {}", event.user))) {
                    found.push(
                        Check::Inconsistent,
                        At::event(event),
                        Some(message_id),
                        Some(answer.chat_id),
                        Some(answer.seq),
                        event.at_ms,
                        format!(
                            "status (recipient {recipient}) shown to {}, but {} sent it",
                            event.user, answer.user
                        ),
                    );
                }
            }
            _ => {}
        }
    }
}

/// `out_of_order` and `redelivered_same_connection`, which share the
/// per-connection bookkeeping. Returns the resends.
///
/// - Per connection and chat, first receipts come in strictly increasing seq;
///   a receipt again under the same frame before the ack is the server's
///   resend, allowed.
/// - A message is delivered once per connection: received again after the
///   connection acked it, or under another frame id, is a redelivery.
fn check_connection_order_and_acks(history: &History, found: &mut Found) -> u64 {
    #[derive(Default)]
    struct ConnectionState<'a> {
        /// message → the frame id of its first receipt here.
        received: HashMap<&'a str, Option<u64>>,
        acked: HashSet<&'a str>,
        /// chat → (seq, message id) of the latest first receipt.
        latest_first: HashMap<&'a str, (i64, &'a str)>,
    }
    let mut connections: HashMap<(&str, u64), ConnectionState> = HashMap::new();
    let mut resends = 0;
    for event in &history.timeline {
        match &event.kind {
            EventKind::Acked { message_id } => {
                connections.entry((&event.user, event.conn)).or_default().acked.insert(message_id);
            }
            EventKind::Received { chat_id, message_id, seq, frame_id, .. } => {
                let state = connections.entry((&event.user, event.conn)).or_default();
                if state.acked.contains(message_id.as_str()) {
                    found.push(
                        Check::RedeliveredSameConnection,
                        At::event(event),
                        Some(message_id),
                        Some(chat_id),
                        Some(*seq),
                        event.at_ms,
                        format!("received again on conn {} after this connection acked it", event.conn),
                    );
                    continue;
                }
                if let Some(&first_frame) = state.received.get(message_id.as_str()) {
                    match (first_frame, *frame_id) {
                        (Some(first), Some(now)) if first != now => found.push(
                            Check::RedeliveredSameConnection,
                            At::event(event),
                            Some(message_id),
                            Some(chat_id),
                            Some(*seq),
                            event.at_ms,
                            format!(
                                "received again on conn {} as frame {now}, first as frame {first} (not a resend: a second delivery)",
                                event.conn
                            ),
                        ),
                        _ => resends += 1,
                    }
                    continue;
                }
                state.received.insert(message_id, *frame_id);
                if let Some(&(previous_seq, previous_message)) = state.latest_first.get(chat_id.as_str())
                    && *seq <= previous_seq
                {
                    found.push(
                        Check::OutOfOrder,
                        At::event(event),
                        Some(message_id),
                        Some(chat_id),
                        Some(*seq),
                        event.at_ms,
                        format!(
                            "first received at seq {seq} after {previous_message} at seq {previous_seq} on the same connection"
                        ),
                    );
                }
                // Compare the next one with this one, not with the highest so
                // far: one message out of place is one violation, not one per
                // message that follows it.
                state.latest_first.insert(chat_id, (*seq, message_id));
            }
            _ => {}
        }
    }
    resends
}

/// (connection, time in ms).
type ConnTime = (u64, u64);

/// A device's chat: (user, device, chat).
type DeviceChat<'a> = (&'a str, &'a str, &'a str);

/// Where a connection's catch-up showed its device's cursor: (`sync:done` time, connection, seq).
type CursorShown = (u64, u64, i64);

/// `redelivered_other_connection`: a device's cursor in a chat is how far it
/// acknowledged without a hole (its own messages are no hole: it passes over
/// them), it only moves forward, and a connection's catch-up sends what is
/// after it. A connection of the device opened once the cursor is known to be
/// past a message must not get that message again. Known in two ways:
///
/// - by the acks: every message of the chat from seq 1 up to it acked by the
///   device on some connection that then stayed up for the grace (or sent by
///   the device), the grace having passed since the latest of those acks;
/// - by a catch-up: a connection of the device that got its `sync:done` and
///   never received a message of the chat up to seq N, all of which existed
///   when it opened (answered or received by someone before), shows the
///   cursor at N or beyond from that `sync:done` on.
///
/// "Message" here is any log entry: edits, deletes and reactions have seqs
/// of their own, are acked like messages, and the ones the device made are no
/// hole either. (An entry that became moot is passed over by every device
/// without an ack: the known prefix stops there, which only makes the check
/// see less, never more.)
///
/// A receipt that is not such a violation but repeats an ack of the device
/// elsewhere is counted (at-least-once behind the cursor). Returns that count.
fn check_redelivered_other_connection(history: &History, chats: &Chats, rules: &Rules, found: &mut Found) -> u64 {
    // (user, device, message) → (conn, time) of each connection's first ack, in time order.
    let mut acks: HashMap<(&str, &str, &str), Vec<ConnTime>> = HashMap::new();
    for event in &history.timeline {
        if let EventKind::Acked { message_id } = &event.kind {
            let list = acks.entry((&event.user, &event.device, message_id)).or_default();
            if !list.iter().any(|&(conn, _)| conn == event.conn) {
                list.push((event.conn, event.at_ms));
            }
        }
    }
    // When the server surely knows that the device has message `message_id`:
    // `None` if never (as far as the history tells).
    let known_at = |user: &str, device: &str, message_id: &str| -> Option<u64> {
        if let Some(answer) = history.answers.get(message_id)
            && answer.user == user
            && answer.device == device
        {
            return Some(answer.at_ms);
        }
        // An entry it made itself: the device passes over it, like its own message.
        if let Some(entry) = history.entries.get(message_id)
            && let Some(answer) = entry.answer
            && entry.user == user
            && answer.device == device
        {
            return Some(answer.at_ms);
        }
        acks.get(&(user, device, message_id))?
            .iter()
            .filter_map(|&(ack_conn, acked_at)| {
                let settled_at = acked_at.saturating_add(rules.redelivery_grace_ms);
                let stayed = history
                    .lifetime(user, ack_conn)
                    .disconnected_at
                    .is_none_or(|disconnected_at| disconnected_at >= settled_at);
                stayed.then_some(settled_at)
            })
            .min()
    };
    // (user, device, chat) → for seq 1, 2, …: when the cursor is surely past
    // it (the latest of the known times up to there); ends at the first seq
    // that is never known to be had (or no message of the history is at).
    let mut cursors: HashMap<(&str, &str, &str), Vec<u64>> = HashMap::new();
    let shown = cursors_shown_by_catch_ups(history, chats);

    let mut behind_cursor = 0;
    // Only a connection's first receipt of a message is judged: later ones
    // are resends of the same delivery (or `redelivered_same_connection`).
    let mut judged: HashSet<(&str, u64, &str)> = HashSet::new();
    for event in &history.timeline {
        let EventKind::Received { chat_id, message_id, seq, .. } = &event.kind else { continue };
        if !judged.insert((&event.user, event.conn, message_id)) {
            continue;
        }
        let Some(connected_at) = history.lifetime(&event.user, event.conn).connected_at else { continue };
        // The device's own message: `echoed_to_sending_device`'s business.
        if history.answers.get(message_id.as_str()).is_some_and(|a| a.user == event.user && a.device == event.device) {
            continue;
        }
        if history
            .entries
            .get(message_id.as_str())
            .is_some_and(|entry| entry.user == event.user && entry.answer.is_some_and(|a| a.device == event.device))
        {
            continue;
        }
        let key = (event.user.as_str(), event.device.as_str(), chat_id.as_str());
        let known = cursors.entry(key).or_default();
        // Extend the prefix as far as `seq` if it can be.
        while (known.len() as i64) < *seq {
            let next_seq = known.len() as i64 + 1;
            let Some(at_next) = history.at_seq.get(&(chat_id.as_str(), next_seq)) else { break };
            let Some(had_at) = known_at(&event.user, &event.device, at_next) else { break };
            let past = known.last().map_or(had_at, |&before| before.max(had_at));
            known.push(past);
        }
        let past_at = usize::try_from(*seq).ok().and_then(|seq| seq.checked_sub(1)).and_then(|index| known.get(index).copied());
        if let Some(past_at) = past_at
            && connected_at >= past_at
        {
            found.push(
                Check::RedeliveredOtherConnection,
                At::event(event),
                Some(message_id),
                Some(chat_id),
                Some(*seq),
                event.at_ms,
                format!(
                    "{} had acked every message of the chat up to seq {seq} (the last ack processed by {past_at} ms, \
                     {} ms grace included); conn {} opened at {connected_at} ms and got it again",
                    event.device, rules.redelivery_grace_ms, event.conn
                ),
            );
        } else if let Some(&(synced_at, shown_conn, shown_seq)) = shown
            .get(&key)
            .and_then(|list| list.iter().filter(|&&(synced_at, _, _)| synced_at <= connected_at).max_by_key(|&&(_, _, seq)| seq))
            .filter(|&&(_, _, shown_seq)| *seq <= shown_seq)
        {
            found.push(
                Check::RedeliveredOtherConnection,
                At::event(event),
                Some(message_id),
                Some(chat_id),
                Some(*seq),
                event.at_ms,
                format!(
                    "the catch-up of {}'s conn {shown_conn} (sync:done at {synced_at} ms) showed its cursor in the chat at seq \
                     {shown_seq} or beyond; conn {} opened at {connected_at} ms and got seq {seq} again",
                    event.device, event.conn
                ),
            );
        } else if acks
            .get(&(event.user.as_str(), event.device.as_str(), message_id.as_str()))
            .is_some_and(|list| list.iter().any(|&(conn, acked_at)| conn != event.conn && acked_at <= event.at_ms))
        {
            behind_cursor += 1;
        }
    }
    behind_cursor
}

/// (user, device, chat) → (sync:done time, conn, seq): each connection of a
/// device that got its `sync:done` shows the device's cursor in each of its
/// user's chats at the seq before the lowest it received there, or at the
/// highest that existed when it opened if that is lower (a catch-up sends
/// everything after the cursor). See `check_redelivered_other_connection`.
fn cursors_shown_by_catch_ups<'a>(history: &History<'a>, chats: &'a Chats) -> HashMap<DeviceChat<'a>, Vec<CursorShown>> {
    // chat → (time, highest seq seen by then), one entry per new highest.
    let mut existed: HashMap<&str, Vec<(u64, i64)>> = HashMap::new();
    // (conn, chat) → the lowest seq received there.
    let mut lowest: HashMap<(u64, &str), i64> = HashMap::new();
    for event in &history.timeline {
        let (chat_id, seq) = match &event.kind {
            EventKind::SendAnswered { chat_id, seq, .. } => (chat_id.as_str(), *seq),
            EventKind::ActionAnswered { chat_id, seq: Some(seq), changed: true, .. } => (chat_id.as_str(), *seq),
            EventKind::Received { chat_id, seq, .. } => {
                let low = lowest.entry((event.conn, chat_id.as_str())).or_insert(*seq);
                *low = (*low).min(*seq);
                (chat_id.as_str(), *seq)
            }
            _ => continue,
        };
        let list = existed.entry(chat_id).or_default();
        if list.last().is_none_or(|&(_, highest)| seq > highest) {
            list.push((event.at_ms, seq));
        }
    }
    // The highest seq of `chat_id` seen before `at_ms` (seqs become visible in order).
    let existed_before = |chat_id: &str, at_ms: u64| -> i64 {
        let Some(list) = existed.get(chat_id) else { return 0 };
        let index = list.partition_point(|&(seen_at, _)| seen_at < at_ms);
        index.checked_sub(1).map_or(0, |index| list[index].1)
    };
    let mut shown: HashMap<DeviceChat, Vec<CursorShown>> = HashMap::new();
    for (&(user, device), info) in &history.devices {
        for (chat_id, _) in chats.iter().filter(|(_, members)| members.iter().any(|member| member == user)) {
            for &conn in &info.conns {
                let lifetime = history.lifetime(user, conn);
                let (Some(connected_at), Some(synced_at)) = (lifetime.connected_at, lifetime.synced_at) else { continue };
                let mut at = existed_before(chat_id, connected_at);
                if let Some(&low) = lowest.get(&(conn, chat_id.as_str())) {
                    at = at.min(low - 1);
                }
                if at > 0 {
                    shown.entry((user, device, chat_id.as_str())).or_default().push((synced_at, conn, at));
                }
            }
        }
    }
    shown
}

/// Rank of a status for monotonicity; `expired` is handled apart (terminal).
fn status_rank(status: &str) -> Option<u8> {
    match status {
        "sent" => Some(0),
        "delivered" => Some(1),
        "read" => Some(2),
        _ => None,
    }
}

/// `status_regression`: on one sender connection, a recipient's status of a message never goes
/// back: sent < delivered < read, and `expired` only ever follows `sent` and
/// is followed by nothing else; a member's `receipt` frames in a chat never
/// lower either watermark. (Receipts read from `GET /api/sync` are not
/// judged: a read may be older than a frame that overtook it.)
fn check_status_regression(history: &History, found: &mut Found) {
    // (user, conn, message, recipient) → the latest known status.
    let mut latest: HashMap<(&str, u64, &str, &str), &str> = HashMap::new();
    // (user, conn, chat, member) → the latest pushed receipt's (delivered_seq, read_seq).
    let mut watermarks: HashMap<(&str, u64, &str, &str), (i64, i64)> = HashMap::new();
    for event in &history.timeline {
        if let EventKind::Receipt { chat_id, user_id, delivered_seq, read_seq, pushed: true } = &event.kind {
            let key = (event.user.as_str(), event.conn, chat_id.as_str(), user_id.as_str());
            let now = (*delivered_seq, *read_seq);
            if let Some(before) = watermarks.insert(key, now)
                && (now.0 < before.0 || now.1 < before.1)
            {
                found.push(
                    Check::StatusRegression,
                    At::event(event),
                    None,
                    Some(chat_id),
                    None,
                    event.at_ms,
                    format!(
                        "receipt for {user_id} went from delivered {} / read {} to delivered {} / read {} on conn {}",
                        before.0, before.1, now.0, now.1, event.conn
                    ),
                );
                // Judge the next one against the highest seen.
                watermarks.insert(key, (before.0.max(now.0), before.1.max(now.1)));
            }
            continue;
        }
        let EventKind::Status { message_id, recipient, status } = &event.kind else { continue };
        let chat_id = history.answers.get(message_id.as_str()).map(|answer| answer.chat_id);
        let seq = history.answers.get(message_id.as_str()).map(|answer| answer.seq);
        if status != "expired" && status_rank(status).is_none() {
            found.push(
                Check::StatusRegression,
                At { user: &event.user, device: Some(&event.device), conn: event.conn },
                Some(message_id),
                chat_id,
                seq,
                event.at_ms,
                format!("unknown status {status:?} for recipient {recipient}"),
            );
            continue;
        }
        let key = (event.user.as_str(), event.conn, message_id.as_str(), recipient.as_str());
        let previous = latest.insert(key, status);
        let Some(previous) = previous else { continue };
        let regression = match (previous, status.as_str()) {
            // The same news twice is not a step back.
            (before, now) if before == now => false,
            ("expired", _) => true,
            (before, "expired") => status_rank(before).is_some_and(|rank| rank >= 1),
            (before, now) => match (status_rank(before), status_rank(now)) {
                (Some(before), Some(now)) => now < before,
                _ => false,
            },
        };
        if regression {
            found.push(
                Check::StatusRegression,
                At { user: &event.user, device: Some(&event.device), conn: event.conn },
                Some(message_id),
                chat_id,
                seq,
                event.at_ms,
                format!("status for recipient {recipient} went from {previous} to {status}"),
            );
        }
    }
}

/// `missing_delivered_status`: whatever a recipient acked ends ✓✓ (delivered or read) at its sender:
/// a `message:status` for it, or a receipt of the recipient in its chat (pushed or read from
/// `GET /api/sync`) that reaches its seq, seen by any device of the sender.
fn check_missing_delivered_status(history: &History, found: &mut Found) {
    // (message, recipient) → the first ack's (device, conn, time): statuses
    // are per user, so any device's ack makes the recipient's copy delivered.
    let mut acked: BTreeMap<(&str, &str), (&str, u64, u64)> = BTreeMap::new();
    // (sender user, message, recipient) with a delivered or read status.
    let mut ticked: HashSet<(&str, &str, &str)> = HashSet::new();
    // (user told, chat, member) → the highest watermark of the member they were told.
    let mut receipts: HashMap<(&str, &str, &str), i64> = HashMap::new();
    for event in &history.timeline {
        match &event.kind {
            EventKind::Receipt { chat_id, user_id, delivered_seq, read_seq, .. } => {
                let highest = receipts.entry((&event.user, chat_id, user_id)).or_insert(i64::MIN);
                *highest = (*highest).max(*delivered_seq).max(*read_seq);
            }
            EventKind::Acked { message_id } => {
                acked.entry((message_id, &event.user)).or_insert((&event.device, event.conn, event.at_ms));
            }
            EventKind::Status { message_id, recipient, status } if status == "delivered" || status == "read" => {
                ticked.insert((&event.user, message_id, recipient));
            }
            _ => {}
        }
    }
    for (&(message_id, recipient), &(device, conn, acked_at)) in &acked {
        // Without the answer the sender is unknown (its reply was lost), and
        // a sender's own other device gets no status about itself.
        let Some(answer) = history.answers.get(message_id) else { continue };
        if answer.user == recipient || ticked.contains(&(answer.user, message_id, recipient)) {
            continue;
        }
        if receipts.get(&(answer.user, answer.chat_id, recipient)).is_some_and(|&seq| seq >= answer.seq) {
            continue;
        }
        found.push(
            Check::MissingDeliveredStatus,
            At { user: recipient, device: Some(device), conn },
            Some(message_id),
            Some(answer.chat_id),
            Some(answer.seq),
            acked_at,
            format!(
                "{recipient} acked it on {device} conn {conn} at {acked_at} ms, but the sender {} never saw delivered or read for them, \
                 nor a receipt of theirs that reaches seq {} (client_msg_id {})",
                answer.user, answer.seq, answer.client_msg_id
            ),
        );
    }
}

/// `entry_before_message`: an edit, delete or reaction reaches a device only
/// after the message it is about, which has a lower seq: the device received
/// that message before (on any of its connections), or sent it itself (its
/// first try was written before).
fn check_entry_before_message(history: &History, found: &mut Found) {
    // (user, device) → message → its seq, for every message the device has received so far.
    let mut seen: HashMap<(&str, &str), HashMap<&str, i64>> = HashMap::new();
    let mut reported: HashSet<(&str, &str, &str)> = HashSet::new();
    for event in &history.timeline {
        let EventKind::Received { chat_id, message_id, seq, about, .. } = &event.kind else { continue };
        let device = (event.user.as_str(), event.device.as_str());
        let Some(about) = about else {
            seen.entry(device).or_default().insert(message_id, *seq);
            continue;
        };
        let target = about.message_id.as_str();
        let target_seq = seen.get(&device).and_then(|messages| messages.get(target)).copied().or_else(|| {
            history
                .answers
                .get(target)
                .filter(|answer| answer.user == event.user && answer.device == event.device && answer.first_attempt_ms <= event.at_ms)
                .map(|answer| answer.seq)
        });
        let problem = match target_seq {
            Some(target_seq) if target_seq < *seq => continue,
            Some(target_seq) => format!("{target} was seen here at seq {target_seq}, not below the entry's seq {seq}"),
            None => format!("{} never received {target} (nor sent it) before", event.device),
        };
        if !reported.insert((&event.user, &event.device, message_id)) {
            continue;
        }
        found.push(
            Check::EntryBeforeMessage,
            At::event(event),
            Some(message_id),
            Some(chat_id),
            Some(*seq),
            event.at_ms,
            format!("received {} of {target} on conn {}: {problem}", describe_change(&about.change), event.conn),
        );
    }
}

/// `unexpected_refusal`: an edit, delete or reaction of a device ends with an
/// error it cannot legitimately get. The clients only edit and delete their
/// user's own messages, and only react to messages they have seen, with a
/// few short emoji: the only legitimate refusals are `already_deleted` (the
/// message was deleted for everyone meanwhile, perhaps by this action's own
/// unanswered first try or the user's other device) and `window_passed`. An
/// `already_deleted` for a message the server holds as not deleted is wrong
/// too (judged when the server's state is known).
fn check_unexpected_refusal(history: &History, server: Option<&ServerState>, found: &mut Found) {
    for event in &history.timeline {
        let EventKind::ActionRefused { action_id, chat_id, message_id, change, code } = &event.kind else { continue };
        let problem = if !LEGITIMATE_REFUSALS.contains(&code.as_str()) {
            format!("refused with {code}")
        } else if code == "already_deleted"
            && let Some(server) = server
            && server.messages.get(message_id).is_some_and(|message| !message.deleted)
        {
            "refused with already_deleted, but the message is not deleted".to_string()
        } else {
            continue;
        };
        found.push(
            Check::UnexpectedRefusal,
            At::event(event),
            Some(message_id),
            Some(chat_id),
            history.answers.get(message_id.as_str()).map(|answer| answer.seq),
            event.at_ms,
            format!("{action_id}: {} of {message_id} {problem}", describe_change(change)),
        );
    }
}

/// What `user`'s `device` shows at the end, folded from what it recorded: the
/// messages it sent and received (latest content or tombstone), the entries
/// it received, its own answered edits, deletes and reactions, the
/// `already_deleted` it was told, and — for an action a try of which went
/// unanswered — its own entries it never learnt the seq of (another device
/// received them; its own device never does: it passes over them).
fn device_view(history: &History, user: &str, device: &str) -> DeviceView {
    let mut view = DeviceView::default();
    let of_device = || history.timeline.iter().filter(move |event| event.user == user && event.device == device);
    // Messages first: entries apply by seq whatever their order, and one that
    // arrived before its message is `entry_before_message`'s business.
    for event in of_device() {
        match &event.kind {
            EventKind::SendAnswered { chat_id, message_id, seq, content, .. } => {
                view.sent(message_id, chat_id, *seq, user, content.as_deref().unwrap_or_default());
            }
            EventKind::Received { chat_id, message_id, sender_id, seq, content, deleted, about: None, .. } => {
                view.received(message_id, chat_id, *seq, sender_id, content.as_deref().unwrap_or_default(), *deleted);
            }
            _ => {}
        }
    }
    let mut received_entries: HashSet<&str> = HashSet::new();
    for event in of_device() {
        match &event.kind {
            EventKind::Received { message_id, sender_id, seq, about: Some(about), .. } => {
                view.entry(&about.message_id, *seq, sender_id, &about.change);
                received_entries.insert(message_id);
            }
            EventKind::ActionAnswered { message_id, change, changed: true, seq: Some(seq), .. } => {
                view.entry(message_id, *seq, user, change);
            }
            EventKind::ActionRefused { message_id, code, .. } if code == "already_deleted" => view.deleted(message_id),
            _ => {}
        }
    }
    for entry in own_unanswered_entries(history, user, device, &received_entries) {
        view.entry(entry.target, entry.seq, user, entry.change);
    }
    view
}

/// The entries `user`'s `device` made without learning their seq: entries of
/// the user, answered to nobody, that the device never received, matching
/// (message, change) an action of the device a try of which went unanswered.
fn own_unanswered_entries<'h, 'a>(
    history: &'h History<'a>,
    user: &str,
    device: &str,
    received_entries: &HashSet<&str>,
) -> Vec<&'h EntryInfo<'a>> {
    let uncertain: HashSet<(&str, &Change)> = history
        .actions
        .iter()
        .filter(|((action_user, _), action)| {
            *action_user == user && action.device == device && (action.failed_tries > 0 || (action.changed.is_none() && action.refused.is_none()))
        })
        .map(|(_, action)| (action.target, action.change))
        .collect();
    if uncertain.is_empty() {
        return Vec::new();
    }
    history
        .entries
        .iter()
        .filter(|(key, entry)| {
            entry.answer.is_none()
                && entry.user == user
                && !received_entries.contains(key.as_str())
                && uncertain.contains(&(entry.target, entry.change))
        })
        .map(|(_, entry)| entry)
        .collect()
}

/// `final_view`: once the run has settled, every device's view of every
/// message it has seen ([`device_view`]) equals the server's: the content
/// (the latest edit's, "" once deleted), the deleted flag, and the set of
/// (user, emoji) reactions.
fn check_final_views(history: &History, server: &ServerState, counts: &mut Counts, found: &mut Found) {
    let end_ms = history.timeline.last().map_or(0, |event| event.at_ms);
    for message in server.messages.values() {
        counts.server_edited += u64::from(message.edited && !message.deleted);
        counts.server_deleted += u64::from(message.deleted);
        counts.server_reactions += message.reactions.len() as u64;
    }
    for &(user, device) in history.devices.keys() {
        let view = device_view(history, user, device);
        for (message_id, shown) in &view.messages {
            counts.views_checked += 1;
            let Some(truth) = server.messages.get(message_id) else {
                found.push(
                    Check::FinalView,
                    At { user, device: Some(device), conn: 0 },
                    Some(message_id),
                    Some(&shown.chat_id),
                    Some(shown.seq),
                    end_ms,
                    format!("{device} shows {message_id}, which the server does not hold"),
                );
                continue;
            };
            if truth.deleted || truth.edited || !truth.reactions.is_empty() {
                counts.views_checked_changed += 1;
            }
            let mut differences = Vec::new();
            if shown.deleted != truth.deleted {
                differences.push(format!("deleted: shows {}, the server {}", shown.deleted, truth.deleted));
            }
            if shown.content != truth.content {
                differences.push(format!("content: shows {:?}, the server {:?}", shown.content, truth.content));
            }
            let reactions = shown.reactions();
            if reactions != truth.reactions {
                let pairs = |set: &mut dyn Iterator<Item = &(String, String)>| {
                    set.map(|(user, emoji)| format!("{user} {emoji}")).collect::<Vec<_>>().join(", ")
                };
                let extra = pairs(&mut reactions.difference(&truth.reactions));
                let missing = pairs(&mut truth.reactions.difference(&reactions));
                differences.push(format!("reactions: shows [{extra}] the server has not, lacks [{missing}]"));
            }
            if differences.is_empty() {
                continue;
            }
            found.push(
                Check::FinalView,
                At { user, device: Some(device), conn: 0 },
                Some(message_id),
                Some(&truth.chat_id),
                Some(truth.seq),
                end_ms,
                format!("{device}'s final view differs from the server's: {}", differences.join("; ")),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::ServerMessage;

    /// An event on the user's phone (`alice-phone`), the only device most tests need.
    fn event(at_ms: u64, user: &str, conn: u64, kind: EventKind) -> Event {
        event_on(at_ms, user, &format!("{user}-phone"), conn, kind)
    }

    fn event_on(at_ms: u64, user: &str, device: &str, conn: u64, kind: EventKind) -> Event {
        Event { at_ms, user: user.to_string(), device: device.to_string(), conn, kind }
    }

    fn connected(node: usize) -> EventKind {
        EventKind::Connected { node }
    }

    fn attempt(chat: &str, client_msg_id: &str) -> EventKind {
        EventKind::SendAttempt { chat_id: chat.into(), client_msg_id: client_msg_id.into() }
    }

    fn answered(chat: &str, client_msg_id: &str, message: &str, seq: i64) -> EventKind {
        EventKind::SendAnswered {
            chat_id: chat.into(),
            client_msg_id: client_msg_id.into(),
            message_id: message.into(),
            seq,
            content: None,
        }
    }

    fn failed(client_msg_id: &str, reason: &str) -> EventKind {
        EventKind::SendFailed { client_msg_id: client_msg_id.into(), reason: reason.into() }
    }

    fn received(chat: &str, message: &str, sender: &str, seq: i64) -> EventKind {
        EventKind::Received {
            chat_id: chat.into(),
            message_id: message.into(),
            sender_id: sender.into(),
            seq,
            frame_id: None,
            content: None,
            deleted: false,
            about: None,
        }
    }

    fn received_as(frame: u64, chat: &str, message: &str, sender: &str, seq: i64) -> EventKind {
        EventKind::Received {
            chat_id: chat.into(),
            message_id: message.into(),
            sender_id: sender.into(),
            seq,
            frame_id: Some(frame),
            content: None,
            deleted: false,
            about: None,
        }
    }

    fn synced() -> EventKind {
        EventKind::SyncDone { count: 0 }
    }

    fn acked(message: &str) -> EventKind {
        EventKind::Acked { message_id: message.into() }
    }

    fn status(message: &str, recipient: &str, status: &str) -> EventKind {
        EventKind::Status { message_id: message.into(), recipient: recipient.into(), status: status.into() }
    }

    fn chats() -> Chats {
        let mut chats = Chats::new();
        chats.insert("c1".into(), vec!["alice".into(), "bob".into(), "carol".into()]);
        chats.insert("d1".into(), vec!["alice".into(), "bob".into()]);
        chats
    }

    /// Alice (conn 1) sends m1 and m2 to the group c1 (m2 after a timeout and a
    /// retry); bob (conn 2) and carol (conn 3) get and ack both, bob reads
    /// them; bob sends m3 to alice in d1. Every promise kept. One device each
    /// (their phones); the connections are still open at the end.
    fn clean_history() -> Vec<Event> {
        vec![
            event(0, "alice", 1, connected(0)),
            event(0, "bob", 2, connected(1)),
            event(0, "carol", 3, connected(0)),
            event(1, "alice", 1, synced()),
            event(1, "bob", 2, synced()),
            event(1, "carol", 3, synced()),
            event(10, "alice", 1, attempt("c1", "a-1")),
            event(20, "alice", 1, answered("c1", "a-1", "m1", 1)),
            event(25, "bob", 2, received("c1", "m1", "alice", 1)),
            event(26, "bob", 2, acked("m1")),
            event(27, "carol", 3, received("c1", "m1", "alice", 1)),
            event(28, "carol", 3, acked("m1")),
            event(30, "alice", 1, status("m1", "bob", "delivered")),
            event(31, "alice", 1, status("m1", "carol", "delivered")),
            event(40, "alice", 1, attempt("c1", "a-2")),
            event(1040, "alice", 1, failed("a-2", "timeout")),
            event(1050, "alice", 1, attempt("c1", "a-2")),
            event(1060, "alice", 1, answered("c1", "a-2", "m2", 2)),
            event(1070, "bob", 2, received("c1", "m2", "alice", 2)),
            event(1071, "bob", 2, acked("m2")),
            event(1072, "carol", 3, received("c1", "m2", "alice", 2)),
            event(1073, "carol", 3, acked("m2")),
            event(1080, "alice", 1, status("m2", "bob", "delivered")),
            event(1081, "alice", 1, status("m2", "carol", "delivered")),
            event(1100, "bob", 2, EventKind::ReadSent { chat_id: "c1".into(), up_to_seq: 2 }),
            event(1110, "alice", 1, status("m1", "bob", "read")),
            event(1111, "alice", 1, status("m2", "bob", "read")),
            event(1200, "bob", 2, attempt("d1", "b-1")),
            event(1210, "bob", 2, answered("d1", "b-1", "m3", 1)),
            event(1220, "alice", 1, received("d1", "m3", "bob", 1)),
            event(1221, "alice", 1, acked("m3")),
            event(1230, "bob", 2, status("m3", "alice", "delivered")),
        ]
    }

    /// The clean history, and bob's laptop (conn 6, created with the others):
    /// it gets and acks alice's m1 and m2 in c1 and bob's own m3 in d1, sent
    /// from his phone.
    fn two_device_history() -> Vec<Event> {
        let mut events = clean_history();
        events.extend([
            event_on(0, "bob", "bob-laptop", 6, connected(0)),
            event_on(1, "bob", "bob-laptop", 6, synced()),
            event_on(32, "bob", "bob-laptop", 6, received_as(1, "c1", "m1", "alice", 1)),
            event_on(33, "bob", "bob-laptop", 6, acked("m1")),
            event_on(1074, "bob", "bob-laptop", 6, received_as(2, "c1", "m2", "alice", 2)),
            event_on(1075, "bob", "bob-laptop", 6, acked("m2")),
            event_on(1222, "bob", "bob-laptop", 6, received_as(3, "d1", "m3", "bob", 1)),
            event_on(1223, "bob", "bob-laptop", 6, acked("m3")),
        ]);
        events
    }

    fn judge(events: &[Event]) -> Verdict {
        check(events, &chats(), None, &Rules::default())
    }

    /// Asserts that exactly `expected` fails, `times` times, and every other check passes.
    fn assert_only(verdict: &Verdict, expected: Check, times: u64) {
        assert_eq!(verdict.failed_checks(), vec![expected], "violations: {:#?}", verdict.violations);
        assert_eq!(verdict.violation_count(expected), times, "violations: {:#?}", verdict.violations);
        assert!(!verdict.passed());
    }

    /// The events but those of `who` (a user: all their devices; or a device) of each kind.
    fn without(mut events: Vec<Event>, unwanted: &[(&str, EventKind)]) -> Vec<Event> {
        for (who, kind) in unwanted {
            let before = events.len();
            events.retain(|event| !((event.user == *who || event.device == *who) && event.kind == *kind));
            assert!(events.len() < before, "{who} {kind:?} is not in the history");
        }
        events
    }

    #[test]
    fn clean_history_passes_every_check_and_counts_everything() {
        let verdict = judge(&clean_history());
        assert!(verdict.passed(), "violations: {:#?}", verdict.violations);
        assert!(verdict.is_settled());
        assert_eq!(verdict.violations_by_check.len(), 12);
        assert!(verdict.violations_by_check.values().all(|&n| n == 0));
        assert_eq!(
            verdict.counts,
            Counts {
                sends_attempted: 3,
                sends_answered: 3,
                sends_unanswered: 0,
                received: 5,
                deliveries: 5,
                resends: 0,
                redeliveries_behind_cursor: 0,
                acks: 5,
                statuses: 7,
                receipts_pushed: 0,
                receipts_read: 0,
                reads_sent: 1,
                connections: 3,
                devices: 3,
                devices_caught_up: 3,
                send_failures: BTreeMap::from([("timeout".to_string(), 1)]),
                ..Counts::default()
            }
        );
        assert!(verdict.first_violation_context(&clean_history(), &[]).is_none());
    }

    #[test]
    fn answered_send_never_received_by_a_member_is_lost() {
        let events = without(
            clean_history(),
            &[
                ("carol", received("c1", "m2", "alice", 2)),
                ("carol", acked("m2")),
                ("alice", status("m2", "carol", "delivered")),
            ],
        );
        let verdict = judge(&events);
        assert_only(&verdict, Check::Lost, 1);
        let violation = &verdict.violations[0];
        assert_eq!(violation.user, "carol");
        assert_eq!(violation.message_id.as_deref(), Some("m2"));
        assert_eq!(violation.chat_id.as_deref(), Some("c1"));
        assert_eq!(violation.seq, Some(2));
        assert_eq!(violation.at_ms, 1060, "at the answer's time");
        assert!(!verdict.is_settled());
    }

    #[test]
    fn send_never_answered_is_counted_not_lost() {
        let mut events = clean_history();
        events.push(event(1300, "alice", 1, attempt("c1", "a-3")));
        events.push(event(1400, "alice", 1, failed("a-3", "closed")));
        let verdict = judge(&events);
        assert!(verdict.passed(), "violations: {:#?}", verdict.violations);
        assert_eq!(verdict.counts.sends_attempted, 4);
        assert_eq!(verdict.counts.sends_unanswered, 1);
        assert!(!verdict.is_settled(), "an unanswered send may still be answered");
    }

    #[test]
    fn retry_answered_with_a_new_message_id_is_a_duplicate_creation() {
        let mut events = clean_history();
        // The retry of a-2 created a second message, which is delivered and
        // ticked like any other: only its creation is wrong.
        events.extend([
            event(1300, "alice", 1, attempt("c1", "a-2")),
            event(1310, "alice", 1, answered("c1", "a-2", "m4", 3)),
            event(1320, "bob", 2, received("c1", "m4", "alice", 3)),
            event(1321, "bob", 2, acked("m4")),
            event(1322, "carol", 3, received("c1", "m4", "alice", 3)),
            event(1323, "carol", 3, acked("m4")),
            event(1330, "alice", 1, status("m4", "bob", "delivered")),
            event(1331, "alice", 1, status("m4", "carol", "delivered")),
        ]);
        let verdict = judge(&events);
        assert_only(&verdict, Check::DuplicateCreation, 1);
        assert_eq!(verdict.violations[0].message_id.as_deref(), Some("m4"));
        assert_eq!(verdict.counts.sends_attempted, 3, "a retry is not a new send");
    }

    #[test]
    fn retry_answered_with_the_original_message_is_not_a_duplicate_creation() {
        let mut events = clean_history();
        events.push(event(1300, "alice", 1, attempt("c1", "a-2")));
        events.push(event(1310, "alice", 1, answered("c1", "a-2", "m2", 2)));
        let verdict = judge(&events);
        assert!(verdict.passed(), "violations: {:#?}", verdict.violations);
    }

    #[test]
    fn later_seq_first_received_before_an_earlier_one_is_out_of_order() {
        let mut events = without(clean_history(), &[("bob", received("c1", "m1", "alice", 1)), ("bob", acked("m1"))]);
        events.push(event(1075, "bob", 2, received("c1", "m1", "alice", 1)));
        events.push(event(1076, "bob", 2, acked("m1")));
        let verdict = judge(&events);
        assert_only(&verdict, Check::OutOfOrder, 1);
        let violation = &verdict.violations[0];
        assert_eq!((violation.user.as_str(), violation.conn), ("bob", 2));
        assert_eq!(violation.message_id.as_deref(), Some("m1"));
        assert_eq!(violation.at_ms, 1075);
    }

    #[test]
    fn order_is_judged_per_connection_so_a_new_connection_may_start_lower() {
        let mut events = clean_history();
        // Bob's second device syncs m1 after conn 2 already saw m2.
        events.extend([
            event_on(2000, "bob", "bob-laptop", 4, connected(1)),
            event_on(2010, "bob", "bob-laptop", 4, received("c1", "m1", "alice", 1)),
            event_on(2011, "bob", "bob-laptop", 4, acked("m1")),
        ]);
        let verdict = judge(&events);
        assert!(verdict.passed(), "violations: {:#?}", verdict.violations);
    }

    #[test]
    fn resend_before_ack_on_the_same_connection_is_counted_not_a_violation() {
        let mut events = clean_history();
        // After the first copy of m1 (t 25) and before its ack (t 26): the
        // ack timeout fired and the server sent it again.
        let first_copy = events
            .iter()
            .position(|e| e.user == "bob" && e.kind == received("c1", "m1", "alice", 1))
            .expect("bob receives m1");
        events.insert(first_copy + 1, event(25, "bob", 2, received("c1", "m1", "alice", 1)));
        let verdict = judge(&events);
        assert!(verdict.passed(), "violations: {:#?}", verdict.violations);
        assert_eq!(verdict.counts.resends, 1);
        assert_eq!(verdict.counts.received, 6);
        assert_eq!(verdict.counts.deliveries, 5);
    }

    #[test]
    fn receipt_after_ack_on_the_same_connection_is_a_same_connection_redelivery() {
        let mut events = clean_history();
        events.push(event(500, "bob", 2, received("c1", "m1", "alice", 1)));
        let verdict = judge(&events);
        assert_only(&verdict, Check::RedeliveredSameConnection, 1);
        assert_eq!(verdict.violations[0].at_ms, 500);
        assert_eq!(verdict.counts.resends, 0);
    }

    /// Alice sends m1 to bob in d1; bob's phone acks it on conn 2 at 26 ms,
    /// which closes at `acking_conn_closes_at`; the phone's conn 4 opens at
    /// `second_conn_opens_at` and gets m1 again.
    fn second_connection_history(acking_conn_closes_at: u64, second_conn_opens_at: u64) -> Vec<Event> {
        vec![
            event(0, "alice", 1, connected(0)),
            event(0, "bob", 2, connected(1)),
            event(10, "alice", 1, attempt("d1", "a-1")),
            event(20, "alice", 1, answered("d1", "a-1", "m1", 1)),
            event(25, "bob", 2, received("d1", "m1", "alice", 1)),
            event(26, "bob", 2, acked("m1")),
            event(30, "alice", 1, status("m1", "bob", "delivered")),
            event(acking_conn_closes_at, "bob", 2, EventKind::Disconnected),
            event(second_conn_opens_at, "bob", 4, connected(0)),
            event(second_conn_opens_at + 10, "bob", 4, received("d1", "m1", "alice", 1)),
            event(second_conn_opens_at + 11, "bob", 4, acked("m1")),
            event(9000, "alice", 1, EventKind::Disconnected),
            event(9000, "bob", 4, EventKind::Disconnected),
        ]
    }

    #[test]
    fn receipt_on_a_connection_opened_after_the_grace_following_an_ack_elsewhere_is_a_redelivery() {
        let verdict = judge(&second_connection_history(9000, 4000));
        assert_only(&verdict, Check::RedeliveredOtherConnection, 1);
        let violation = &verdict.violations[0];
        assert_eq!((violation.user.as_str(), violation.conn), ("bob", 4));
        assert_eq!(violation.at_ms, 4010);
    }

    #[test]
    fn receipt_on_a_connection_opened_exactly_at_the_end_of_the_grace_is_a_redelivery() {
        // Acked at 26 ms, grace 3000 ms: the acking connection lived until
        // 3026 ms and the other one opened then.
        let verdict = judge(&second_connection_history(3026, 3026));
        assert_only(&verdict, Check::RedeliveredOtherConnection, 1);
    }

    #[test]
    fn receipt_on_a_connection_opened_within_the_grace_is_not_a_redelivery() {
        let verdict = judge(&second_connection_history(9000, 1000));
        assert!(verdict.passed(), "violations: {:#?}", verdict.violations);
    }

    #[test]
    fn receipt_elsewhere_after_the_acking_connection_broke_within_the_grace_is_not_a_redelivery() {
        let verdict = judge(&second_connection_history(100, 4000));
        assert!(verdict.passed(), "violations: {:#?}", verdict.violations);
    }

    #[test]
    fn redelivery_grace_comes_from_the_rules() {
        let events = second_connection_history(9000, 1000);
        let verdict = check(&events, &chats(), None, &Rules { redelivery_grace_ms: 500 });
        assert_only(&verdict, Check::RedeliveredOtherConnection, 1);
    }

    // --- Devices -------------------------------------------------------

    #[test]
    fn two_devices_each_with_everything_and_the_users_own_message_on_the_other_device_pass() {
        let verdict = judge(&two_device_history());
        assert!(verdict.passed(), "violations: {:#?}", verdict.violations);
        assert!(verdict.is_settled());
        assert_eq!((verdict.counts.devices, verdict.counts.deliveries), (4, 8));
    }

    #[test]
    fn message_missing_on_one_device_while_the_other_has_it_is_lost() {
        let events = without(two_device_history(), &[("bob-laptop", received_as(2, "c1", "m2", "alice", 2)), ("bob-laptop", acked("m2"))]);
        let verdict = judge(&events);
        assert_only(&verdict, Check::Lost, 1);
        let violation = &verdict.violations[0];
        assert_eq!((violation.user.as_str(), violation.device.as_deref()), ("bob", Some("bob-laptop")));
        assert_eq!(violation.message_id.as_deref(), Some("m2"));
        assert!(!verdict.is_settled());
    }

    #[test]
    fn own_message_missing_on_the_users_other_device_is_lost() {
        let events = without(two_device_history(), &[("bob-laptop", received_as(3, "d1", "m3", "bob", 1)), ("bob-laptop", acked("m3"))]);
        let verdict = judge(&events);
        assert_only(&verdict, Check::Lost, 1);
        let violation = &verdict.violations[0];
        assert_eq!(violation.device.as_deref(), Some("bob-laptop"));
        assert!(violation.detail.contains("the sender's other device"), "{}", violation.detail);
    }

    #[test]
    fn own_message_echoed_to_the_sending_device_is_a_violation() {
        let mut events = two_device_history();
        // m3 went out from bob's phone (conn 2); a later phone connection gets it back.
        events.extend([
            event(2000, "bob", 7, connected(0)),
            event(2010, "bob", 7, received_as(1, "d1", "m3", "bob", 1)),
            event(2011, "bob", 7, acked("m3")),
        ]);
        let verdict = judge(&events);
        assert_only(&verdict, Check::EchoedToSendingDevice, 1);
        let violation = &verdict.violations[0];
        assert_eq!((violation.device.as_deref(), violation.conn), (Some("bob-phone"), 7));
        assert_eq!(violation.message_id.as_deref(), Some("m3"));
    }

    #[test]
    fn device_created_after_a_send_is_not_owed_it() {
        // Bob's laptop connects for the first time after every send: it
        // starts at his delivered watermark and may get nothing of before.
        let mut events = clean_history();
        events.extend([event_on(1500, "bob", "bob-laptop", 6, connected(0)), event_on(1501, "bob", "bob-laptop", 6, synced())]);
        let verdict = judge(&events);
        assert!(verdict.passed(), "violations: {:#?}", verdict.violations);
        assert!(verdict.is_settled());
    }

    #[test]
    fn member_without_any_device_is_owed_every_message_as_before() {
        let events: Vec<Event> = clean_history().into_iter().filter(|event| event.user != "carol").collect();
        let verdict = judge(&events);
        assert_only(&verdict, Check::Lost, 2);
        assert!(verdict.violations.iter().all(|v| v.user == "carol" && v.device.is_none()));
    }

    #[test]
    fn device_without_an_open_connection_through_its_catch_up_is_not_settled() {
        let mut events = two_device_history();
        events.push(event_on(5000, "bob", "bob-laptop", 6, EventKind::Disconnected));
        let closed = judge(&events);
        assert!(closed.passed() && !closed.is_settled());
        assert_eq!(closed.counts.devices_caught_up, 3);
        events.push(event_on(6000, "bob", "bob-laptop", 7, connected(1)));
        assert!(!judge(&events).is_settled(), "connected, but not through its catch-up");
        events.push(event_on(6001, "bob", "bob-laptop", 7, synced()));
        assert!(judge(&events).is_settled());
        // A second connection of the device that came and went changes nothing.
        events.push(event_on(7000, "bob", "bob-laptop", 8, connected(0)));
        events.push(event_on(7500, "bob", "bob-laptop", 8, EventKind::Disconnected));
        assert!(judge(&events).is_settled());
    }

    #[test]
    fn message_delivered_twice_on_one_connection_under_two_frames_is_a_redelivery() {
        let mut events = without(two_device_history(), &[("bob-laptop", acked("m1"))]);
        // Not acked yet, but pushed again as a new frame: a second delivery, not a resend.
        events.push(event_on(40, "bob", "bob-laptop", 6, received_as(4, "c1", "m1", "alice", 1)));
        let verdict = judge(&events);
        assert_only(&verdict, Check::RedeliveredSameConnection, 1);
        assert_eq!(verdict.violations[0].device.as_deref(), Some("bob-laptop"));
        assert!(verdict.violations[0].detail.contains("as frame 4, first as frame 1"));
    }

    #[test]
    fn resend_of_the_same_frame_is_counted_not_a_violation() {
        let mut events = without(two_device_history(), &[("bob-laptop", acked("m1"))]);
        events.push(event_on(40, "bob", "bob-laptop", 6, received_as(1, "c1", "m1", "alice", 1)));
        events.push(event_on(41, "bob", "bob-laptop", 6, acked("m1")));
        let verdict = judge(&events);
        assert!(verdict.passed(), "violations: {:#?}", verdict.violations);
        assert_eq!(verdict.counts.resends, 1);
    }

    /// The two-device history; the laptop's conn 6 closes at 5000 ms and conn 7
    /// opens at 6000 ms and gets `again` (c1 messages) once more.
    fn laptop_reconnects_and_gets_again(events: Vec<Event>, again: &[(&str, i64)]) -> Vec<Event> {
        let mut events = events;
        events.push(event_on(5000, "bob", "bob-laptop", 6, EventKind::Disconnected));
        events.push(event_on(6000, "bob", "bob-laptop", 7, connected(1)));
        for (i, &(message, seq)) in again.iter().enumerate() {
            let at = 6010 + 2 * i as u64;
            events.push(event_on(at, "bob", "bob-laptop", 7, received_as(1 + i as u64, "c1", message, "alice", seq)));
            events.push(event_on(at + 1, "bob", "bob-laptop", 7, acked(message)));
        }
        events.push(event_on(6100, "bob", "bob-laptop", 7, synced()));
        events
    }

    #[test]
    fn message_the_device_acked_with_everything_before_it_must_not_come_to_its_next_connection() {
        let verdict = judge(&laptop_reconnects_and_gets_again(two_device_history(), &[("m2", 2)]));
        assert_only(&verdict, Check::RedeliveredOtherConnection, 1);
        let violation = &verdict.violations[0];
        assert_eq!((violation.device.as_deref(), violation.conn, violation.at_ms), (Some("bob-laptop"), 7, 6010));
        assert!(violation.detail.contains("up to seq 2"), "{}", violation.detail);
    }

    #[test]
    fn message_acked_behind_a_hole_may_come_again_on_the_next_connection() {
        // The laptop never acked m1: its cursor stays before it, so m1 and m2
        // both come again (m2 at-least-once, counted).
        let events = without(two_device_history(), &[("bob-laptop", acked("m1"))]);
        let verdict = judge(&laptop_reconnects_and_gets_again(events, &[("m1", 1), ("m2", 2)]));
        assert!(verdict.passed(), "violations: {:#?}", verdict.violations);
        assert_eq!(verdict.counts.redeliveries_behind_cursor, 1);
    }

    #[test]
    fn one_devices_ack_does_not_settle_the_message_for_the_other_device() {
        // The phone acked m1 at 26 ms; the laptop first gets it on a connection opened much later.
        let events = without(
            two_device_history(),
            &[("bob-laptop", received_as(1, "c1", "m1", "alice", 1)), ("bob-laptop", acked("m1"))],
        );
        let verdict = judge(&laptop_reconnects_and_gets_again(events, &[("m1", 1)]));
        assert!(verdict.passed(), "violations: {:#?}", verdict.violations);
        assert_eq!(verdict.counts.redeliveries_behind_cursor, 0);
    }

    #[test]
    fn message_below_where_a_catch_up_showed_the_cursor_must_not_come_to_a_later_connection() {
        // The laptop's conn 7 catches up from seq 1 of c1 (it gets m2, not m1):
        // its cursor was past m1. Conn 8 then gets m1 (a violation) and m2 (fine).
        let mut events = two_device_history();
        events.extend([
            event_on(1200, "bob", "bob-laptop", 7, connected(0)),
            event_on(1210, "bob", "bob-laptop", 7, received_as(1, "c1", "m2", "alice", 2)),
            event_on(1211, "bob", "bob-laptop", 7, acked("m2")),
            event_on(1212, "bob", "bob-laptop", 7, synced()),
            event_on(1300, "bob", "bob-laptop", 7, EventKind::Disconnected),
            event_on(1400, "bob", "bob-laptop", 8, connected(1)),
            event_on(1410, "bob", "bob-laptop", 8, received_as(1, "c1", "m1", "alice", 1)),
            event_on(1411, "bob", "bob-laptop", 8, acked("m1")),
            event_on(1412, "bob", "bob-laptop", 8, received_as(2, "c1", "m2", "alice", 2)),
            event_on(1413, "bob", "bob-laptop", 8, acked("m2")),
            event_on(1414, "bob", "bob-laptop", 8, synced()),
        ]);
        let verdict = judge(&events);
        assert_only(&verdict, Check::RedeliveredOtherConnection, 1);
        let violation = &verdict.violations[0];
        assert_eq!((violation.message_id.as_deref(), violation.conn), (Some("m1"), 8));
        assert!(violation.detail.contains("conn 7 (sync:done at 1212 ms)"), "{}", violation.detail);

        // Before conn 7's sync:done nothing was shown yet.
        let early: Vec<Event> =
            events.into_iter().map(|mut e| if e.conn == 8 && e.kind == connected(1) { e.at_ms = 1205; e } else { e }).collect();
        assert!(judge(&early).passed());
    }

    #[test]
    fn own_messages_are_no_hole_in_the_sending_devices_cursor() {
        // Alice answers bob in d1 (m5, seq 2, after bob's own m3 at seq 1); bob's
        // phone acks it, reconnects well after, and gets it again.
        let mut events = clean_history();
        events.extend([
            event(1300, "alice", 1, attempt("d1", "a-3")),
            event(1310, "alice", 1, answered("d1", "a-3", "m5", 2)),
            event(1320, "bob", 2, received("d1", "m5", "alice", 2)),
            event(1321, "bob", 2, acked("m5")),
            event(1330, "alice", 1, status("m5", "bob", "delivered")),
            event(5000, "bob", 2, EventKind::Disconnected),
            event(6000, "bob", 7, connected(0)),
            event(6010, "bob", 7, received("d1", "m5", "alice", 2)),
            event(6011, "bob", 7, acked("m5")),
            event(6020, "bob", 7, synced()),
        ]);
        let verdict = judge(&events);
        assert_only(&verdict, Check::RedeliveredOtherConnection, 1);
        assert_eq!(verdict.violations[0].message_id.as_deref(), Some("m5"));
    }

    // --- Edits, deletes and reactions ------------------------------------

    fn entry(chat: &str, seq: i64, target: &str, by: &str, change: Change) -> EventKind {
        EventKind::Received {
            chat_id: chat.into(),
            message_id: entry_key(chat, seq),
            sender_id: by.into(),
            seq,
            frame_id: None,
            content: None,
            deleted: false,
            about: Some(About { message_id: target.into(), change }),
        }
    }

    fn acted(action: &str, chat: &str, target: &str, change: Change) -> EventKind {
        EventKind::ActionAttempt { action_id: action.into(), chat_id: chat.into(), message_id: target.into(), change }
    }

    /// The answer: an entry at `seq`, or `changed: false` when `None`.
    fn action_answered(action: &str, chat: &str, target: &str, change: Change, seq: Option<i64>) -> EventKind {
        EventKind::ActionAnswered {
            action_id: action.into(),
            chat_id: chat.into(),
            message_id: target.into(),
            change,
            changed: seq.is_some(),
            seq,
        }
    }

    fn refused(action: &str, chat: &str, target: &str, change: Change, code: &str) -> EventKind {
        EventKind::ActionRefused {
            action_id: action.into(),
            chat_id: chat.into(),
            message_id: target.into(),
            change,
            code: code.into(),
        }
    }

    fn edit(content: &str) -> Change {
        Change::Edit { content: content.into() }
    }

    fn react(emoji: &str) -> Change {
        Change::React { emoji: emoji.into() }
    }

    fn unreact(emoji: &str) -> Change {
        Change::Unreact { emoji: emoji.into() }
    }

    /// Sends and `message:receive` carry the content "`m1` text".
    fn with_contents(events: Vec<Event>) -> Vec<Event> {
        events
            .into_iter()
            .map(|mut event| {
                match &mut event.kind {
                    EventKind::SendAnswered { message_id, content, .. }
                    | EventKind::Received { message_id, content, about: None, .. } => {
                        *content = Some(format!("{message_id} text"));
                    }
                    _ => {}
                }
                event
            })
            .collect()
    }

    /// The two-device history, then: alice edits m1 (c1#3); bob's phone
    /// reacts 👍 to m2 (c1#4), his laptop does the same (`changed: false`);
    /// alice deletes m2 (c1#5); bob's laptop then tries to take its 👍 back
    /// (`already_deleted`). Everyone else gets every entry and acks it.
    fn entries_history() -> Vec<Event> {
        let mut events = with_contents(two_device_history());
        let laptop = |at, kind| event_on(at, "bob", "bob-laptop", 6, kind);
        events.extend([
            event(2000, "alice", 1, acted("alice-a1", "c1", "m1", edit("m1 edited"))),
            event(2010, "alice", 1, action_answered("alice-a1", "c1", "m1", edit("m1 edited"), Some(3))),
            event(2020, "bob", 2, entry("c1", 3, "m1", "alice", edit("m1 edited"))),
            event(2021, "bob", 2, acked("c1#3")),
            laptop(2022, entry("c1", 3, "m1", "alice", edit("m1 edited"))),
            laptop(2023, acked("c1#3")),
            event(2024, "carol", 3, entry("c1", 3, "m1", "alice", edit("m1 edited"))),
            event(2025, "carol", 3, acked("c1#3")),
            event(2100, "bob", 2, acted("bob-a1", "c1", "m2", react("👍"))),
            event(2110, "bob", 2, action_answered("bob-a1", "c1", "m2", react("👍"), Some(4))),
            event(2120, "alice", 1, entry("c1", 4, "m2", "bob", react("👍"))),
            event(2121, "alice", 1, acked("c1#4")),
            laptop(2122, entry("c1", 4, "m2", "bob", react("👍"))),
            laptop(2123, acked("c1#4")),
            event(2124, "carol", 3, entry("c1", 4, "m2", "bob", react("👍"))),
            event(2125, "carol", 3, acked("c1#4")),
            laptop(2200, acted("bob-laptop-a1", "c1", "m2", react("👍"))),
            laptop(2210, action_answered("bob-laptop-a1", "c1", "m2", react("👍"), None)),
            event(2300, "alice", 1, acted("alice-a2", "c1", "m2", Change::Delete)),
            event(2310, "alice", 1, action_answered("alice-a2", "c1", "m2", Change::Delete, Some(5))),
            event(2320, "bob", 2, entry("c1", 5, "m2", "alice", Change::Delete)),
            event(2321, "bob", 2, acked("c1#5")),
            laptop(2322, entry("c1", 5, "m2", "alice", Change::Delete)),
            laptop(2323, acked("c1#5")),
            event(2324, "carol", 3, entry("c1", 5, "m2", "alice", Change::Delete)),
            event(2325, "carol", 3, acked("c1#5")),
            laptop(2400, acted("bob-laptop-a2", "c1", "m2", unreact("👍"))),
            laptop(2410, refused("bob-laptop-a2", "c1", "m2", unreact("👍"), "already_deleted")),
        ]);
        events
    }

    fn server_message(chat: &str, seq: i64, content: &str, deleted: bool, edited: bool) -> ServerMessage {
        ServerMessage { chat_id: chat.into(), seq, content: content.into(), deleted, edited, reactions: BTreeSet::new() }
    }

    /// What the server holds after `entries_history`.
    fn entries_server() -> ServerState {
        ServerState {
            messages: BTreeMap::from([
                ("m1".to_string(), server_message("c1", 1, "m1 edited", false, true)),
                ("m2".to_string(), server_message("c1", 2, "", true, false)),
                ("m3".to_string(), server_message("d1", 1, "m3 text", false, false)),
            ]),
        }
    }

    fn judge_final(events: &[Event], server: &ServerState) -> Verdict {
        check(events, &chats(), Some(server), &Rules::default())
    }

    #[test]
    fn edits_deletes_and_reactions_everyone_got_pass_every_check_and_are_counted() {
        let events = entries_history();
        let verdict = judge_final(&events, &entries_server());
        assert!(verdict.passed(), "violations: {:#?}", verdict.violations);
        assert!(verdict.is_settled());
        let counts = &verdict.counts;
        let by_kind = |pairs: &[(&str, u64)]| pairs.iter().map(|(k, n)| (k.to_string(), *n)).collect::<BTreeMap<_, _>>();
        assert_eq!(counts.actions_attempted, by_kind(&[("delete", 1), ("edit", 1), ("react", 2), ("unreact", 1)]));
        assert_eq!(counts.actions_changed, by_kind(&[("delete", 1), ("edit", 1), ("react", 1)]));
        assert_eq!(counts.actions_unchanged, 1);
        assert_eq!(counts.actions_refused, by_kind(&[("already_deleted", 1)]));
        assert_eq!((counts.entries_received, counts.entry_deliveries), (9, 9));
        assert_eq!(counts.received, 8, "message:receive only");
        // alice 3, bob's phone 3, his laptop 3, carol 2 (she is not in d1).
        assert_eq!((counts.views_checked, counts.views_checked_changed), (11, 8));
        assert_eq!((counts.server_edited, counts.server_deleted, counts.server_reactions), (1, 1, 0));
        // Without the server's state the final views are not judged.
        assert!(judge(&events).passed());
        assert_eq!(judge(&events).counts.views_checked, 0);
    }

    #[test]
    fn a_final_view_unlike_the_servers_is_a_final_view_violation_per_device() {
        let events = entries_history();
        let mut server = entries_server();
        server.messages.get_mut("m1").expect("m1").content = "something else".into();
        let verdict = judge_final(&events, &server);
        // Every device that has seen m1: alice's phone, bob's two, carol's phone.
        assert_only(&verdict, Check::FinalView, 4);
        assert!(verdict.violations[0].detail.contains(r#"content: shows "m1 edited", the server "something else""#), "{:#?}", verdict.violations);

        let mut server = entries_server();
        server.messages.get_mut("m3").expect("m3").reactions.insert(("alice".into(), "🎉".into()));
        let verdict = judge_final(&events, &server);
        // m3 is in d1: alice's phone and bob's two devices.
        assert_only(&verdict, Check::FinalView, 3);
        assert!(verdict.violations[0].detail.contains("lacks [alice 🎉]"), "{}", verdict.violations[0].detail);

        // Not deleted at the server: every view of m2 is wrong, and so was
        // the laptop's already_deleted.
        let mut server = entries_server();
        server.messages.get_mut("m2").expect("m2").deleted = false;
        let verdict = judge_final(&events, &server);
        assert_eq!(verdict.failed_checks(), vec![Check::UnexpectedRefusal, Check::FinalView]);
        assert_eq!(verdict.violation_count(Check::FinalView), 4);
    }

    #[test]
    fn an_answered_entry_a_device_never_gets_is_lost_and_shows_in_its_final_view() {
        let events = without(entries_history(), &[("bob-laptop", entry("c1", 3, "m1", "alice", edit("m1 edited")))]);
        let verdict = judge_final(&events, &entries_server());
        assert_eq!(verdict.failed_checks(), vec![Check::Lost, Check::FinalView], "{:#?}", verdict.violations);
        let lost = &verdict.violations.iter().find(|v| v.check == Check::Lost).expect("lost");
        assert_eq!((lost.device.as_deref(), lost.message_id.as_deref()), (Some("bob-laptop"), Some("c1#3")));
        assert!(!verdict.is_settled());
    }

    #[test]
    fn a_superseded_edit_or_an_entry_about_a_deleted_message_may_be_passed_over() {
        // Carol never gets the first edit of m1 (alice edited it again) nor
        // bob's 👍 on m2 (deleted since).
        let mut events = without(
            entries_history(),
            &[("carol", entry("c1", 3, "m1", "alice", edit("m1 edited"))), ("carol", entry("c1", 4, "m2", "bob", react("👍")))],
        );
        events.extend([
            event(2500, "alice", 1, acted("alice-a3", "c1", "m1", edit("m1 again"))),
            event(2510, "alice", 1, action_answered("alice-a3", "c1", "m1", edit("m1 again"), Some(6))),
            event(2520, "bob", 2, entry("c1", 6, "m1", "alice", edit("m1 again"))),
            event_on(2522, "bob", "bob-laptop", 6, entry("c1", 6, "m1", "alice", edit("m1 again"))),
            event(2524, "carol", 3, entry("c1", 6, "m1", "alice", edit("m1 again"))),
        ]);
        let mut server = entries_server();
        server.messages.get_mut("m1").expect("m1").content = "m1 again".into();
        let verdict = judge_final(&events, &server);
        assert!(verdict.passed(), "violations: {:#?}", verdict.violations);

        // The latest edit is never moot.
        let events = without(events, &[("carol", entry("c1", 6, "m1", "alice", edit("m1 again")))]);
        let verdict = judge_final(&events, &server);
        assert_eq!(verdict.failed_checks(), vec![Check::Lost, Check::FinalView], "{:#?}", verdict.violations);
    }

    #[test]
    fn an_entry_reaching_a_device_before_its_message_is_entry_before_message() {
        // Carol's second connection gets alice's edit of m1 before any of her
        // connections got m1.
        let mut events = entries_history();
        events.extend([
            event(22, "carol", 9, connected(1)),
            event(23, "carol", 9, entry("c1", 3, "m1", "alice", edit("m1 edited"))),
        ]);
        let verdict = judge_final(&events, &entries_server());
        assert_only(&verdict, Check::EntryBeforeMessage, 1);
        let violation = &verdict.violations[0];
        assert_eq!((violation.user.as_str(), violation.conn, violation.at_ms), ("carol", 9, 23));
        assert!(violation.detail.contains("never received m1"), "{}", violation.detail);
    }

    #[test]
    fn an_entry_sent_back_to_the_device_that_made_it_is_echoed() {
        let mut events = entries_history();
        events.push(event(2030, "alice", 1, entry("c1", 3, "m1", "alice", edit("m1 edited"))));
        let verdict = judge_final(&events, &entries_server());
        assert_only(&verdict, Check::EchoedToSendingDevice, 1);
        assert_eq!(verdict.violations[0].message_id.as_deref(), Some("c1#3"));
    }

    #[test]
    fn entries_out_of_seq_order_on_a_connection_are_out_of_order() {
        // Bob's phone gets the delete (seq 5) before the edit (seq 3).
        let mut events =
            without(entries_history(), &[("bob-phone", entry("c1", 3, "m1", "alice", edit("m1 edited"))), ("bob-phone", acked("c1#3"))]);
        events.push(event(2330, "bob", 2, entry("c1", 3, "m1", "alice", edit("m1 edited"))));
        events.push(event(2331, "bob", 2, acked("c1#3")));
        let verdict = judge_final(&events, &entries_server());
        assert_only(&verdict, Check::OutOfOrder, 1);
        assert_eq!(verdict.violations[0].message_id.as_deref(), Some("c1#3"));
    }

    #[test]
    fn an_entry_seen_differently_by_two_devices_is_inconsistent() {
        // Carol is told the edit was bob's.
        let mut events = without(entries_history(), &[("carol", entry("c1", 3, "m1", "alice", edit("m1 edited")))]);
        events.push(event(2024, "carol", 3, entry("c1", 3, "m1", "bob", edit("m1 edited"))));
        let verdict = judge_final(&events, &entries_server());
        assert_only(&verdict, Check::Inconsistent, 1);
        assert!(verdict.violations[0].detail.contains("by bob"), "{}", verdict.violations[0].detail);
    }

    #[test]
    fn a_refusal_the_client_cannot_deserve_is_an_unexpected_refusal() {
        let mut events = entries_history();
        events.extend([
            event(2600, "alice", 1, acted("alice-a4", "c1", "m1", edit("x"))),
            event(2610, "alice", 1, refused("alice-a4", "c1", "m1", edit("x"), "not_sender")),
        ]);
        let verdict = judge_final(&events, &entries_server());
        assert_only(&verdict, Check::UnexpectedRefusal, 1);

        // already_deleted is an answer — unless the message is not deleted.
        let mut events = entries_history();
        events.extend([
            event(2600, "carol", 3, acted("carol-a1", "c1", "m1", react("🎉"))),
            event(2610, "carol", 3, refused("carol-a1", "c1", "m1", react("🎉"), "already_deleted")),
        ]);
        let verdict = judge_final(&events, &entries_server());
        assert!(verdict.failed_checks().contains(&Check::UnexpectedRefusal), "{:#?}", verdict.violations);
        // (carol now shows m1 deleted, which it is not: her final view is wrong too)
        assert_eq!(verdict.violation_count(Check::UnexpectedRefusal), 1);
        assert!(judge(&events).passed(), "without the server's state, already_deleted is not judged");
    }

    #[test]
    fn a_reaction_whose_answer_was_lost_is_the_devices_own_when_its_resend_changes_nothing() {
        // Bob's phone reacts 🎉 to m1; the answer never comes (the entry, c1#6,
        // reaches everyone else); the resend finds it there: changed: false.
        let mut events = entries_history();
        events.extend([
            event(2600, "bob", 2, acted("bob-a2", "c1", "m1", react("🎉"))),
            event(2605, "alice", 1, entry("c1", 6, "m1", "bob", react("🎉"))),
            event_on(2606, "bob", "bob-laptop", 6, entry("c1", 6, "m1", "bob", react("🎉"))),
            event(2607, "carol", 3, entry("c1", 6, "m1", "bob", react("🎉"))),
            event(7600, "bob", 2, EventKind::ActionFailed { action_id: "bob-a2".into(), reason: "timeout".into() }),
            event(7800, "bob", 2, acted("bob-a2", "c1", "m1", react("🎉"))),
            event(7810, "bob", 2, action_answered("bob-a2", "c1", "m1", react("🎉"), None)),
        ]);
        let mut server = entries_server();
        server.messages.get_mut("m1").expect("m1").reactions.insert(("bob".into(), "🎉".into()));
        let verdict = judge_final(&events, &server);
        assert!(verdict.passed(), "violations: {:#?}", verdict.violations);
        assert_eq!(verdict.counts.action_failures, BTreeMap::from([("timeout".to_string(), 1)]));

        // Without a lost try, an entry of bob that his phone never got is not its own.
        let events = without(events, &[("bob", EventKind::ActionFailed { action_id: "bob-a2".into(), reason: "timeout".into() })]);
        let verdict = judge_final(&events, &server);
        assert_eq!(verdict.failed_checks(), vec![Check::Lost, Check::FinalView], "{:#?}", verdict.violations);
    }

    #[test]
    fn delivered_after_read_on_a_sender_connection_is_a_status_regression() {
        let mut events = clean_history();
        events.push(event(1300, "alice", 1, status("m1", "bob", "delivered")));
        let verdict = judge(&events);
        assert_only(&verdict, Check::StatusRegression, 1);
        assert_eq!(verdict.violations[0].at_ms, 1300);
    }

    #[test]
    fn expired_after_delivered_is_a_status_regression() {
        let mut events = clean_history();
        events.push(event(1300, "alice", 1, status("m2", "carol", "expired")));
        let verdict = judge(&events);
        assert_only(&verdict, Check::StatusRegression, 1);
    }

    #[test]
    fn delivered_after_expired_is_a_status_regression() {
        // Bob's m3 to alice: expired first, then delivered.
        let mut events = without(clean_history(), &[("bob", status("m3", "alice", "delivered"))]);
        events.push(event(1225, "bob", 2, status("m3", "alice", "expired")));
        events.push(event(1230, "bob", 2, status("m3", "alice", "delivered")));
        let verdict = judge(&events);
        assert_only(&verdict, Check::StatusRegression, 1);
    }

    #[test]
    fn unknown_status_string_is_a_status_regression_that_says_so() {
        let mut events = clean_history();
        events.push(event(1300, "alice", 1, status("m1", "carol", "seen")));
        let verdict = judge(&events);
        assert_only(&verdict, Check::StatusRegression, 1);
        assert!(verdict.violations[0].detail.contains("unknown status"));
    }

    #[test]
    fn older_status_on_a_new_sender_connection_is_not_a_regression() {
        // Statuses are judged per sender connection: a new one may be sent
        // the change it missed.
        let mut events = clean_history();
        events.push(event(2000, "alice", 5, connected(1)));
        events.push(event(2010, "alice", 5, status("m1", "bob", "delivered")));
        let verdict = judge(&events);
        assert!(verdict.passed(), "violations: {:#?}", verdict.violations);
    }

    #[test]
    fn acked_message_without_delivered_status_at_the_sender_is_missing_delivered_status() {
        let events = without(clean_history(), &[("bob", status("m3", "alice", "delivered"))]);
        let verdict = judge(&events);
        assert_only(&verdict, Check::MissingDeliveredStatus, 1);
        let violation = &verdict.violations[0];
        assert_eq!(violation.user, "alice");
        assert_eq!(violation.message_id.as_deref(), Some("m3"));
        assert_eq!(violation.at_ms, 1221, "at the ack's time");
        assert!(!verdict.is_settled());
    }

    fn receipt(chat: &str, member: &str, delivered_seq: i64, read_seq: i64, pushed: bool) -> EventKind {
        EventKind::Receipt { chat_id: chat.into(), user_id: member.into(), delivered_seq, read_seq, pushed }
    }

    #[test]
    fn a_receipt_reaching_the_messages_seq_counts_as_delivered() {
        // A group's sender learns ✓✓ from receipts: carol's, pushed; bob's, read from /api/sync.
        let events = without(
            clean_history(),
            &[
                ("alice", status("m2", "carol", "delivered")),
                ("alice", status("m2", "bob", "delivered")),
                ("alice", status("m2", "bob", "read")),
            ],
        );
        assert_only(&judge(&events), Check::MissingDeliveredStatus, 2);
        let mut told = events.clone();
        told.push(event(1090, "alice", 1, receipt("c1", "carol", 2, 0, true)));
        told.push(event(1095, "alice", 1, receipt("c1", "bob", 2, 2, false)));
        let verdict = judge(&told);
        assert!(verdict.passed(), "violations: {:#?}", verdict.violations);
        assert_eq!((verdict.counts.receipts_pushed, verdict.counts.receipts_read), (1, 1));

        let mut short = events;
        short.push(event(1090, "alice", 1, receipt("c1", "carol", 1, 0, true)));
        short.push(event(1095, "alice", 1, receipt("c1", "bob", 1, 1, false)));
        assert_only(&judge(&short), Check::MissingDeliveredStatus, 2);
    }

    #[test]
    fn a_receipt_lower_than_the_last_on_the_same_connection_is_a_status_regression() {
        let mut events = clean_history();
        events.extend([
            event(1090, "alice", 1, receipt("c1", "carol", 2, 1, true)),
            event(1091, "alice", 1, receipt("c1", "carol", 2, 0, true)),
            // Read from /api/sync, or on another connection: not judged.
            event(1092, "alice", 1, receipt("c1", "carol", 1, 0, false)),
            event(1093, "alice", 5, connected(0)),
            event(1094, "alice", 5, receipt("c1", "carol", 1, 0, true)),
        ]);
        let verdict = judge(&events);
        assert_only(&verdict, Check::StatusRegression, 1);
        assert_eq!(verdict.violations[0].at_ms, 1091);
    }

    #[test]
    fn read_status_alone_counts_as_delivered() {
        let events = without(clean_history(), &[("alice", status("m1", "bob", "delivered"))]);
        let verdict = judge(&events);
        assert!(verdict.passed(), "violations: {:#?}", verdict.violations);
    }

    #[test]
    fn message_received_with_another_seq_is_inconsistent() {
        let mut events = without(clean_history(), &[("carol", received("c1", "m2", "alice", 2))]);
        events.push(event(1072, "carol", 3, received("c1", "m2", "alice", 5)));
        let verdict = judge(&events);
        assert_only(&verdict, Check::Inconsistent, 1);
        assert_eq!(verdict.violations[0].seq, Some(5));
    }

    #[test]
    fn message_received_with_another_sender_is_inconsistent() {
        let mut events = without(clean_history(), &[("carol", received("c1", "m2", "alice", 2))]);
        events.push(event(1072, "carol", 3, received("c1", "m2", "bob", 2)));
        let verdict = judge(&events);
        assert_only(&verdict, Check::Inconsistent, 1);
        assert!(verdict.violations[0].detail.contains("sender bob"));
    }

    #[test]
    fn two_messages_at_the_same_seq_of_a_chat_are_inconsistent() {
        let mut events = clean_history();
        // m4 claims seq 2 of c1, which m2 holds. New connections receive it
        // so that the order check has nothing to say.
        events.extend([
            event(1300, "alice", 1, attempt("c1", "a-3")),
            event(1310, "alice", 1, answered("c1", "a-3", "m4", 2)),
            event(1400, "bob", 4, connected(0)),
            event(1410, "bob", 4, received("c1", "m4", "alice", 2)),
            event(1400, "carol", 5, connected(0)),
            event(1410, "carol", 5, received("c1", "m4", "alice", 2)),
        ]);
        let verdict = judge(&events);
        assert_only(&verdict, Check::Inconsistent, 1);
        assert_eq!(verdict.violations[0].at_ms, 1310);
    }

    #[test]
    fn violations_are_sorted_by_time_across_checks() {
        let mut events = without(
            clean_history(),
            &[
                ("carol", received("c1", "m2", "alice", 2)),
                ("carol", acked("m2")),
                ("alice", status("m2", "carol", "delivered")),
            ],
        );
        events.push(event(500, "bob", 2, received("c1", "m1", "alice", 1)));
        let verdict = judge(&events);
        let order: Vec<(Check, u64)> = verdict.violations.iter().map(|v| (v.check, v.at_ms)).collect();
        assert_eq!(order, vec![(Check::RedeliveredSameConnection, 500), (Check::Lost, 1060)]);
    }

    #[test]
    fn verdict_does_not_depend_on_the_recording_order_of_different_times() {
        let mut events = without(clean_history(), &[("bob", status("m3", "alice", "delivered"))]);
        events.push(event(1300, "alice", 1, status("m1", "bob", "delivered")));
        let forward = judge(&events);
        events.reverse();
        // Reversal also flips events recorded at the same millisecond by
        // different users, which no check relates to each other.
        let backward = judge(&events);
        assert_eq!(forward, backward);
    }

    #[test]
    fn report_has_a_row_per_figure_and_ends_with_passed_and_failed_checks() {
        let faults = vec![
            AppliedFault { at_ms: 500, kind: "kill_api".into(), detail: "api-1".into() },
            AppliedFault { at_ms: 700, kind: "kill_api".into(), detail: "api-0".into() },
            AppliedFault { at_ms: 900, kind: "stop_broker".into(), detail: "back after 2000 ms".into() },
        ];
        let clean = judge(&clean_history()).report(&faults);
        let row = |report: &str, label: &str| -> Option<String> {
            report
                .lines()
                .find(|line| line.starts_with(label) && line[label.len()..].starts_with("  "))
                .map(|line| line[label.len()..].trim().to_string())
        };
        assert_eq!(row(&clean, "sends answered").as_deref(), Some("3"));
        assert_eq!(row(&clean, "receives").as_deref(), Some("5"));
        assert_eq!(row(&clean, "violations: lost").as_deref(), Some("0"));
        assert_eq!(row(&clean, "violations: missing_delivered_status").as_deref(), Some("0"));
        assert_eq!(row(&clean, "faults: kill_api").as_deref(), Some("2"));
        assert_eq!(row(&clean, "faults: stop_broker").as_deref(), Some("1"));
        assert_eq!(row(&clean, "client-side errors: timeout").as_deref(), Some("1"));
        assert_eq!(row(&clean, "devices").as_deref(), Some("3"));
        assert_eq!(clean.lines().last(), Some("12 passed, 0 failed"));

        let lossy = without(clean_history(), &[("carol", received("c1", "m2", "alice", 2)), ("carol", acked("m2"))]);
        let report = judge(&lossy).report(&[]);
        assert_eq!(row(&report, "violations: lost").as_deref(), Some("1"));
        assert_eq!(report.lines().last(), Some("11 passed, 1 failed"));
    }

    #[test]
    fn first_violation_context_shows_the_message_history_and_the_faults_nearby() {
        let events = without(clean_history(), &[("carol", received("c1", "m2", "alice", 2)), ("carol", acked("m2"))]);
        let faults = vec![
            AppliedFault { at_ms: 500, kind: "kill_worker".into(), detail: "worker-0".into() },
            AppliedFault { at_ms: 30_000, kind: "restart_postgres".into(), detail: "far away".into() },
        ];
        let verdict = judge(&events);
        let context = verdict.first_violation_context(&events, &faults).expect("a violation");
        assert!(context.starts_with("lost at 1060 ms"), "{context}");
        assert!(context.contains("message m2  seq 2  chat c1  user carol  device carol-phone"), "{context}");
        // The tries that made m2 (by client_msg_id), its answer, receipts, acks, statuses.
        assert!(context.contains("send failed: client_msg_id a-2: timeout"), "{context}");
        assert!(context.contains("send answered: m2 seq 2"), "{context}");
        assert!(context.contains("received m2 seq 2"), "{context}");
        assert!(context.contains("status of m2 for carol: delivered"), "{context}");
        assert!(!context.contains("m1"), "other messages stay out: {context}");
        assert!(context.contains("kill_worker  worker-0"), "{context}");
        assert!(!context.contains("restart_postgres"), "{context}");
    }

    #[test]
    fn first_violation_context_keeps_at_most_thirty_events_of_the_message() {
        let mut events = without(clean_history(), &[("alice", acked("m3"))]);
        // Forty resends of m3 to alice before she acks it, then a redelivery.
        for i in 0..40 {
            events.push(event(1225 + i, "alice", 1, received("d1", "m3", "bob", 1)));
        }
        events.push(event(1300, "alice", 1, acked("m3")));
        events.push(event(5000, "alice", 1, received("d1", "m3", "bob", 1)));
        let verdict = judge(&events);
        let context = verdict.first_violation_context(&events, &[]).expect("a violation");
        assert!(context.contains("30 of "), "{context}");
        assert!(context.contains("    5000 ms  alice-phone conn 1  received m3"), "the violating receipt is shown: {context}");
    }
}
