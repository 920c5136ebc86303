//! The verdict on a run: a pure function over the clients' recorded history.
//!
//! It reads no database on purpose: whatever the clients could not observe
//! does not count, and whatever they did observe must be consistent with
//! Courier's promises (at-least-once delivery with no loss, one message per
//! `clientMsgId`, per-connection order, no redelivery once an ack is known to
//! have been processed, monotonic statuses, ✓✓ for everything acknowledged).
//!
//! Everything is iterated in a fixed order (time, then recording order; maps
//! are `BTreeMap` wherever their order reaches the output), so the same history
//! always gives the same verdict, byte for byte.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::{self, Write as _};

use serde::Serialize;

use crate::history::{AppliedFault, Chats, Event, EventKind};

/// Tunables of the checker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rules {
    /// How long after an ack the server may still not have processed it (the
    /// ack can sit in a socket buffer or a broker queue when a node dies).
    /// A copy delivered to another connection of the same user that opened
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
    DuplicateCreation,
    Inconsistent,
    OutOfOrder,
    RedeliveredSameConnection,
    RedeliveredOtherConnection,
    StatusRegression,
    MissingDeliveredStatus,
}

impl Check {
    pub const ALL: [Check; 8] = [
        Check::Lost,
        Check::DuplicateCreation,
        Check::Inconsistent,
        Check::OutOfOrder,
        Check::RedeliveredSameConnection,
        Check::RedeliveredOtherConnection,
        Check::StatusRegression,
        Check::MissingDeliveredStatus,
    ];

    /// Stable name, the same as its JSON form: reports and scripts key on it.
    pub fn name(self) -> &'static str {
        match self {
            Check::Lost => "lost",
            Check::DuplicateCreation => "duplicate_creation",
            Check::Inconsistent => "inconsistent",
            Check::OutOfOrder => "out_of_order",
            Check::RedeliveredSameConnection => "redelivered_same_connection",
            Check::RedeliveredOtherConnection => "redelivered_other_connection",
            Check::StatusRegression => "status_regression",
            Check::MissingDeliveredStatus => "missing_delivered_status",
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
    /// `Received` events, resends and redeliveries included.
    pub received: u64,
    /// Distinct (message, recipient user) pairs received.
    pub deliveries: u64,
    /// Receipts of a message again on the same connection before it was acked there.
    pub resends: u64,
    pub acks: u64,
    pub statuses: u64,
    pub reads_sent: u64,
    /// `Connected` events (a reconnect is a new connection).
    pub connections: u64,
    /// Client-side send failures by reason.
    pub send_failures: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub counts: Counts,
    /// Every check, with zero for those that passed.
    pub violations_by_check: BTreeMap<Check, u64>,
    /// Sorted by `at_ms` (ties keep check order, then discovery order).
    pub violations: Vec<Violation>,
}

/// Judges a run. Deterministic and free of I/O.
pub fn check(events: &[Event], chats: &Chats, rules: &Rules) -> Verdict {
    let history = History::new(events);
    let mut found = Found::default();
    let mut counts = count(&history);

    check_lost(&history, chats, &mut found);
    check_duplicate_creation(&history, &mut found);
    check_inconsistent(&history, chats, &mut found);
    counts.resends = check_connection_order_and_acks(&history, &mut found);
    check_redelivered_other_connection(&history, rules, &mut found);
    check_status_regression(&history, &mut found);
    check_missing_delivered_status(&history, &mut found);

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

    /// Nothing more can still arrive: every answered send reached every
    /// member, every ack's ✓✓ reached its sender, and no send is left
    /// unanswered. The runner polls this while the deployment settles; the
    /// other checks are about things that already happened and cannot heal.
    pub fn is_settled(&self) -> bool {
        self.violation_count(Check::Lost) == 0
            && self.violation_count(Check::MissingDeliveredStatus) == 0
            && self.counts.sends_unanswered == 0
    }

    /// The checks with at least one violation, in report order.
    pub fn failed_checks(&self) -> Vec<Check> {
        Check::ALL.into_iter().filter(|&check| self.violation_count(check) > 0).collect()
    }

    /// A plain-text table of the run's figures, ending with the line
    /// `N passed, M failed` (over the 8 checks).
    pub fn report(&self, faults: &[AppliedFault]) -> String {
        let counts = &self.counts;
        let mut rows: Vec<(String, u64)> = vec![
            ("sends attempted".into(), counts.sends_attempted),
            ("sends answered".into(), counts.sends_answered),
            ("sends unanswered".into(), counts.sends_unanswered),
            ("receives".into(), counts.received),
            ("deliveries (message, recipient)".into(), counts.deliveries),
            ("resends before ack".into(), counts.resends),
            ("acks".into(), counts.acks),
            ("statuses".into(), counts.statuses),
            ("reads sent".into(), counts.reads_sent),
            ("connections".into(), counts.connections),
        ];
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
            "  message {}  seq {}  chat {}  user {}  conn {}",
            violation.message_id.as_deref().unwrap_or("-"),
            violation.seq.map_or_else(|| "-".to_string(), |seq| seq.to_string()),
            violation.chat_id.as_deref().unwrap_or("-"),
            violation.user,
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
                event.user,
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
        EventKind::SendAnswered { chat_id, client_msg_id, message_id, seq } => {
            format!("send answered: {message_id} seq {seq} in chat {chat_id}, client_msg_id {client_msg_id}")
        }
        EventKind::SendFailed { client_msg_id, reason } => {
            format!("send failed: client_msg_id {client_msg_id}: {reason}")
        }
        EventKind::Received { chat_id, message_id, sender_id, seq } => {
            format!("received {message_id} seq {seq} in chat {chat_id} from {sender_id}")
        }
        EventKind::Acked { message_id } => format!("acked {message_id}"),
        EventKind::Status { message_id, recipient, status } => {
            format!("status of {message_id} for {recipient}: {status}")
        }
        EventKind::ReadSent { chat_id, up_to_seq } => format!("read sent: chat {chat_id} up to seq {up_to_seq}"),
    }
}

// ---------------------------------------------------------------------------
// Indexes over the history, built once.

/// The first answer for a message id: who sent it, where, and as what.
struct Answer<'a> {
    user: &'a str,
    conn: u64,
    at_ms: u64,
    chat_id: &'a str,
    client_msg_id: &'a str,
    seq: i64,
}

#[derive(Default, Clone, Copy)]
struct Lifetime {
    connected_at: Option<u64>,
    disconnected_at: Option<u64>,
}

struct History<'a> {
    /// Every event by time; equal times keep the recording order, which is the
    /// order one client saw them in.
    timeline: Vec<&'a Event>,
    /// message id → its first answer. The sender of a message is whoever got it.
    answers: BTreeMap<&'a str, Answer<'a>>,
    /// (user, conn) → when it was opened and closed (first of each).
    lifetimes: HashMap<(&'a str, u64), Lifetime>,
}

impl<'a> History<'a> {
    fn new(events: &'a [Event]) -> Self {
        let mut timeline: Vec<&Event> = events.iter().collect();
        timeline.sort_by_key(|event| event.at_ms);

        let mut answers = BTreeMap::new();
        let mut lifetimes: HashMap<(&str, u64), Lifetime> = HashMap::new();
        for event in &timeline {
            match &event.kind {
                EventKind::SendAnswered { chat_id, client_msg_id, message_id, seq } => {
                    answers.entry(message_id.as_str()).or_insert(Answer {
                        user: &event.user,
                        conn: event.conn,
                        at_ms: event.at_ms,
                        chat_id,
                        client_msg_id,
                        seq: *seq,
                    });
                }
                EventKind::Connected { .. } => {
                    let lifetime = lifetimes.entry((event.user.as_str(), event.conn)).or_default();
                    lifetime.connected_at.get_or_insert(event.at_ms);
                }
                EventKind::Disconnected => {
                    let lifetime = lifetimes.entry((event.user.as_str(), event.conn)).or_default();
                    lifetime.disconnected_at.get_or_insert(event.at_ms);
                }
                _ => {}
            }
        }
        Self { timeline, answers, lifetimes }
    }

    fn lifetime(&self, user: &str, conn: u64) -> Lifetime {
        self.lifetimes.get(&(user, conn)).copied().unwrap_or_default()
    }

    /// Every event naming `message_id`, plus the send tries that produced it
    /// (same sender and client_msg_id), in time order.
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
        self.timeline
            .iter()
            .copied()
            .filter(|event| match &event.kind {
                EventKind::SendAnswered { message_id: id, .. }
                | EventKind::Received { message_id: id, .. }
                | EventKind::Acked { message_id: id }
                | EventKind::Status { message_id: id, .. } => id == message_id,
                EventKind::SendAttempt { client_msg_id, .. } | EventKind::SendFailed { client_msg_id, .. } => {
                    tries.contains(&(event.user.as_str(), client_msg_id.as_str()))
                }
                EventKind::Connected { .. } | EventKind::Disconnected | EventKind::ReadSent { .. } => false,
            })
            .collect()
    }
}

#[derive(Default)]
struct Found(Vec<Violation>);

impl Found {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        check: Check,
        event_user: &str,
        conn: u64,
        message_id: Option<&str>,
        chat_id: Option<&str>,
        seq: Option<i64>,
        at_ms: u64,
        detail: String,
    ) {
        self.0.push(Violation {
            check,
            user: event_user.to_string(),
            conn,
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
    let mut deliveries: HashSet<(&str, &str)> = HashSet::new();
    for event in &history.timeline {
        match &event.kind {
            EventKind::Connected { .. } => counts.connections += 1,
            EventKind::Disconnected => {}
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
                deliveries.insert((message_id, &event.user));
            }
            EventKind::Acked { .. } => counts.acks += 1,
            EventKind::Status { .. } => counts.statuses += 1,
            EventKind::ReadSent { .. } => counts.reads_sent += 1,
        }
    }
    counts.sends_attempted = attempted.len() as u64;
    counts.sends_answered = answered.len() as u64;
    counts.sends_unanswered = attempted.difference(&answered).count() as u64;
    counts.deliveries = deliveries.len() as u64;
    counts
}

// ---------------------------------------------------------------------------
// The checks.

/// `lost` (check 1): every answered send reaches every other member of its chat.
fn check_lost(history: &History, chats: &Chats, found: &mut Found) {
    let mut received: HashSet<(&str, &str)> = HashSet::new();
    let mut expired: HashSet<(&str, &str)> = HashSet::new();
    for event in &history.timeline {
        match &event.kind {
            EventKind::Received { message_id, .. } => {
                received.insert((message_id, &event.user));
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
        for recipient in members.iter().filter(|member| member.as_str() != answer.user) {
            if received.contains(&(message_id, recipient.as_str())) {
                continue;
            }
            // Expiry is the server giving up on an offline recipient; it is
            // still a loss from the run's point of view, but say so.
            let expiry_note = if expired.contains(&(message_id, recipient.as_str())) {
                "; the sender saw it expire for them"
            } else {
                ""
            };
            found.push(
                Check::Lost,
                recipient,
                0,
                Some(message_id),
                Some(answer.chat_id),
                Some(answer.seq),
                answer.at_ms,
                format!(
                    "sent by {} (conn {}, answered at {} ms), never received by {recipient} on any connection{expiry_note}",
                    answer.user, answer.conn, answer.at_ms
                ),
            );
        }
    }
}

/// `duplicate_creation` (check 2): a (sender, client_msg_id) names one message: retries get the original back.
fn check_duplicate_creation(history: &History, found: &mut Found) {
    // (user, client_msg_id) → the first answer's (message_id, seq), and every
    // other (message_id, seq) already reported.
    let mut first: HashMap<(&str, &str), (&str, i64)> = HashMap::new();
    let mut reported: HashSet<(&str, &str, &str, i64)> = HashSet::new();
    for event in &history.timeline {
        let EventKind::SendAnswered { chat_id, client_msg_id, message_id, seq } = &event.kind else { continue };
        let original = *first.entry((&event.user, client_msg_id)).or_insert((message_id, *seq));
        if original == (message_id.as_str(), *seq) {
            continue;
        }
        if !reported.insert((&event.user, client_msg_id, message_id, *seq)) {
            continue;
        }
        found.push(
            Check::DuplicateCreation,
            &event.user,
            event.conn,
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

/// `inconsistent` (check 3): a message id has one (chat, seq) and one sender everywhere; a (chat,
/// seq) names one message (the schema's `UNIQUE (chat_id, seq)`).
fn check_inconsistent(history: &History, chats: &Chats, found: &mut Found) {
    // message id → the first (chat, seq) seen for it, in answers or receipts.
    let mut placement: HashMap<&str, (&str, i64)> = HashMap::new();
    // (chat, seq) → the first message id seen there.
    let mut occupant: HashMap<(&str, i64), &str> = HashMap::new();
    // One violation per distinct wrong value, not per event carrying it: a
    // message received a hundred times with the wrong seq is one bug.
    let mut reported: HashSet<(&str, String)> = HashSet::new();

    for event in &history.timeline {
        let (chat_id, message_id, seq, what) = match &event.kind {
            EventKind::SendAnswered { chat_id, message_id, seq, .. } => (chat_id, message_id, *seq, "answered"),
            EventKind::Received { chat_id, message_id, seq, .. } => (chat_id, message_id, *seq, "received"),
            _ => continue,
        };
        let first = *placement.entry(message_id).or_insert((chat_id, seq));
        if first != (chat_id.as_str(), seq) && reported.insert((message_id, format!("placement {chat_id} {seq}"))) {
            found.push(
                Check::Inconsistent,
                &event.user,
                event.conn,
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
        let holder = *occupant.entry((chat_id, seq)).or_insert(message_id);
        if holder != message_id && reported.insert((message_id, format!("occupant {chat_id} {seq}"))) {
            found.push(
                Check::Inconsistent,
                &event.user,
                event.conn,
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
                if answer.user != event.user && reported.insert((message_id, format!("answered to {}", event.user))) {
                    found.push(
                        Check::Inconsistent,
                        &event.user,
                        event.conn,
                        Some(message_id),
                        Some(chat_id),
                        Some(*seq),
                        event.at_ms,
                        format!("answered to {}, but first to {}", event.user, answer.user),
                    );
                }
                if !chats.contains_key(chat_id.as_str()) && reported.insert((message_id, "unknown chat".to_string())) {
                    found.push(
                        Check::Inconsistent,
                        &event.user,
                        event.conn,
                        Some(message_id),
                        Some(chat_id),
                        Some(*seq),
                        event.at_ms,
                        format!("answered in chat {chat_id}, which is not one of the run's chats"),
                    );
                }
            }
            EventKind::Received { chat_id, message_id, sender_id, seq } => {
                // A message whose answer never arrived has no known sender to compare with.
                let Some(answer) = history.answers.get(message_id.as_str()) else { continue };
                if answer.user != sender_id && reported.insert((message_id, format!("sender {sender_id}"))) {
                    found.push(
                        Check::Inconsistent,
                        &event.user,
                        event.conn,
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
                if answer.user != event.user && reported.insert((message_id, format!("status at {}", event.user))) {
                    found.push(
                        Check::Inconsistent,
                        &event.user,
                        event.conn,
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

/// `out_of_order` (check 4) and `redelivered_same_connection` (check 5),
/// which share the per-connection bookkeeping. Returns the resends.
///
/// - Per connection and chat, first receipts come in strictly increasing seq;
///   a receipt again before the ack is the server's retry, allowed.
/// - Nothing is received again on a connection that acked it.
fn check_connection_order_and_acks(history: &History, found: &mut Found) -> u64 {
    #[derive(Default)]
    struct ConnectionState<'a> {
        received: HashSet<&'a str>,
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
            EventKind::Received { chat_id, message_id, seq, .. } => {
                let state = connections.entry((&event.user, event.conn)).or_default();
                if state.acked.contains(message_id.as_str()) {
                    found.push(
                        Check::RedeliveredSameConnection,
                        &event.user,
                        event.conn,
                        Some(message_id),
                        Some(chat_id),
                        Some(*seq),
                        event.at_ms,
                        format!("received again on conn {} after this connection acked it", event.conn),
                    );
                    continue;
                }
                if !state.received.insert(message_id) {
                    resends += 1;
                    continue;
                }
                if let Some(&(previous_seq, previous_message)) = state.latest_first.get(chat_id.as_str())
                    && *seq <= previous_seq
                {
                    found.push(
                        Check::OutOfOrder,
                        &event.user,
                        event.conn,
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

/// `redelivered_other_connection` (check 6): a message acked on one connection is not delivered to a connection of
/// the same user opened well after the ack, if the acking connection lived
/// long enough for the server to have processed the ack.
fn check_redelivered_other_connection(history: &History, rules: &Rules, found: &mut Found) {
    // (user, message) → (conn, time) of each connection's first ack, in time order.
    let mut acks: HashMap<(&str, &str), Vec<(u64, u64)>> = HashMap::new();
    for event in &history.timeline {
        if let EventKind::Acked { message_id } = &event.kind {
            let list = acks.entry((&event.user, message_id)).or_default();
            if !list.iter().any(|&(conn, _)| conn == event.conn) {
                list.push((event.conn, event.at_ms));
            }
        }
    }
    // Only a connection's first receipt of a message is judged: later ones
    // are resends of the same delivery (or check 5's business).
    let mut judged: HashSet<(&str, u64, &str)> = HashSet::new();
    for event in &history.timeline {
        let EventKind::Received { chat_id, message_id, seq, .. } = &event.kind else { continue };
        if !judged.insert((&event.user, event.conn, message_id)) {
            continue;
        }
        let Some(connected_at) = history.lifetime(&event.user, event.conn).connected_at else { continue };
        let Some(earlier_acks) = acks.get(&(event.user.as_str(), message_id.as_str())) else { continue };
        let processed_ack = earlier_acks.iter().find(|&&(ack_conn, acked_at)| {
            let settled_at = acked_at.saturating_add(rules.redelivery_grace_ms);
            let stayed = history
                .lifetime(&event.user, ack_conn)
                .disconnected_at
                .is_none_or(|disconnected_at| disconnected_at >= settled_at);
            ack_conn != event.conn && stayed && connected_at >= settled_at
        });
        if let Some(&(ack_conn, acked_at)) = processed_ack {
            found.push(
                Check::RedeliveredOtherConnection,
                &event.user,
                event.conn,
                Some(message_id),
                Some(chat_id),
                Some(*seq),
                event.at_ms,
                format!(
                    "conn {ack_conn} acked it at {acked_at} ms and stayed connected for the {} ms grace; \
                     conn {} opened at {connected_at} ms and got it again",
                    rules.redelivery_grace_ms, event.conn
                ),
            );
        }
    }
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

/// `status_regression` (check 7): on one sender connection, a recipient's status of a message never goes
/// back: sent < delivered < read, and `expired` only ever follows `sent` and
/// is followed by nothing else.
fn check_status_regression(history: &History, found: &mut Found) {
    // (user, conn, message, recipient) → the latest known status.
    let mut latest: HashMap<(&str, u64, &str, &str), &str> = HashMap::new();
    for event in &history.timeline {
        let EventKind::Status { message_id, recipient, status } = &event.kind else { continue };
        let chat_id = history.answers.get(message_id.as_str()).map(|answer| answer.chat_id);
        let seq = history.answers.get(message_id.as_str()).map(|answer| answer.seq);
        if status != "expired" && status_rank(status).is_none() {
            found.push(
                Check::StatusRegression,
                &event.user,
                event.conn,
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
                &event.user,
                event.conn,
                Some(message_id),
                chat_id,
                seq,
                event.at_ms,
                format!("status for recipient {recipient} went from {previous} to {status}"),
            );
        }
    }
}

/// `missing_delivered_status` (check 8): whatever a recipient acked ends ✓✓ (delivered or read) at its sender.
fn check_missing_delivered_status(history: &History, found: &mut Found) {
    // (message, recipient) → the first ack's (conn, time).
    let mut acked: BTreeMap<(&str, &str), (u64, u64)> = BTreeMap::new();
    // (sender user, message, recipient) with a delivered or read status.
    let mut ticked: HashSet<(&str, &str, &str)> = HashSet::new();
    for event in &history.timeline {
        match &event.kind {
            EventKind::Acked { message_id } => {
                acked.entry((message_id, &event.user)).or_insert((event.conn, event.at_ms));
            }
            EventKind::Status { message_id, recipient, status } if status == "delivered" || status == "read" => {
                ticked.insert((&event.user, message_id, recipient));
            }
            _ => {}
        }
    }
    for (&(message_id, recipient), &(conn, acked_at)) in &acked {
        // Without the answer the sender is unknown (its reply was lost), and
        // a sender's own other device gets no status about itself.
        let Some(answer) = history.answers.get(message_id) else { continue };
        if answer.user == recipient || ticked.contains(&(answer.user, message_id, recipient)) {
            continue;
        }
        found.push(
            Check::MissingDeliveredStatus,
            recipient,
            conn,
            Some(message_id),
            Some(answer.chat_id),
            Some(answer.seq),
            acked_at,
            format!(
                "{recipient} acked it on conn {conn} at {acked_at} ms, but the sender {} never saw delivered or read for them \
                 (client_msg_id {})",
                answer.user, answer.client_msg_id
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(at_ms: u64, user: &str, conn: u64, kind: EventKind) -> Event {
        Event { at_ms, user: user.to_string(), conn, kind }
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
        }
    }

    fn failed(client_msg_id: &str, reason: &str) -> EventKind {
        EventKind::SendFailed { client_msg_id: client_msg_id.into(), reason: reason.into() }
    }

    fn received(chat: &str, message: &str, sender: &str, seq: i64) -> EventKind {
        EventKind::Received { chat_id: chat.into(), message_id: message.into(), sender_id: sender.into(), seq }
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
    /// them; bob sends m3 to alice in d1. Every promise kept.
    fn clean_history() -> Vec<Event> {
        vec![
            event(0, "alice", 1, connected(0)),
            event(0, "bob", 2, connected(1)),
            event(0, "carol", 3, connected(0)),
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
            event(9000, "alice", 1, EventKind::Disconnected),
            event(9000, "bob", 2, EventKind::Disconnected),
            event(9000, "carol", 3, EventKind::Disconnected),
        ]
    }

    fn judge(events: &[Event]) -> Verdict {
        check(events, &chats(), &Rules::default())
    }

    /// Asserts that exactly `expected` fails, `times` times, and every other check passes.
    fn assert_only(verdict: &Verdict, expected: Check, times: u64) {
        assert_eq!(verdict.failed_checks(), vec![expected], "violations: {:#?}", verdict.violations);
        assert_eq!(verdict.violation_count(expected), times, "violations: {:#?}", verdict.violations);
        assert!(!verdict.passed());
    }

    fn without(mut events: Vec<Event>, unwanted: &[(&str, EventKind)]) -> Vec<Event> {
        for (user, kind) in unwanted {
            let before = events.len();
            events.retain(|event| !(event.user == *user && event.kind == *kind));
            assert!(events.len() < before, "{user} {kind:?} is not in the history");
        }
        events
    }

    #[test]
    fn clean_history_passes_every_check_and_counts_everything() {
        let verdict = judge(&clean_history());
        assert!(verdict.passed(), "violations: {:#?}", verdict.violations);
        assert!(verdict.is_settled());
        assert_eq!(verdict.violations_by_check.len(), 8);
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
                acks: 5,
                statuses: 7,
                reads_sent: 1,
                connections: 3,
                send_failures: BTreeMap::from([("timeout".to_string(), 1)]),
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
            event(2000, "bob", 4, connected(1)),
            event(2010, "bob", 4, received("c1", "m1", "alice", 1)),
            event(2011, "bob", 4, acked("m1")),
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

    /// Alice sends m1 to bob in d1; bob's conn 2 acks it at 26 ms and closes at
    /// `acking_conn_closes_at`; bob's conn 4 opens at `second_conn_opens_at`
    /// and gets m1 again.
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
        let verdict = check(&events, &chats(), &Rules { redelivery_grace_ms: 500 });
        assert_only(&verdict, Check::RedeliveredOtherConnection, 1);
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
        assert_eq!(clean.lines().last(), Some("8 passed, 0 failed"));

        let lossy = without(clean_history(), &[("carol", received("c1", "m2", "alice", 2)), ("carol", acked("m2"))]);
        let report = judge(&lossy).report(&[]);
        assert_eq!(row(&report, "violations: lost").as_deref(), Some("1"));
        assert_eq!(report.lines().last(), Some("7 passed, 1 failed"));
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
        assert!(context.contains("message m2  seq 2  chat c1  user carol"), "{context}");
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
        assert!(context.contains("    5000 ms  alice conn 1  received m3"), "the violating receipt is shown: {context}");
    }
}
