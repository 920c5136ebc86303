//! Simulated users: connect them, make them send, and tally what arrives.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use futures::{StreamExt, stream::FuturesUnordered};
use tokio::sync::{mpsc, oneshot};

use crate::{
    client::{Conn, EntryEvent, Seen},
    cluster::Cluster,
};

/// Contents carry their send time as microseconds since this instant, so the
/// receiver can compute the latency without a lookup.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_micros() -> u64 {
    epoch().elapsed().as_micros() as u64
}

/// One user's sending role: which chat, and how many recipients each message has.
#[derive(Debug, Clone)]
pub struct Sender {
    pub user: usize,
    pub chat_id: String,
    pub recipients: u64,
}

/// What the clients saw, counted as it arrives.
#[derive(Default)]
pub struct Counters {
    pub receives: AtomicU64,
    pub delivered: AtomicU64,
    /// `delivered` statuses per connection: a sender with several devices is told on each.
    pub delivered_by_conn: std::sync::Mutex<HashMap<usize, u64>>,
    /// The highest `deliveredSeq` any connection saw in a `receipt`, per (chat, member).
    pub receipts: std::sync::Mutex<HashMap<(String, String), i64>>,
    pub sync_done: AtomicU64,
    pub closed: AtomicU64,
}

/// The final tally of a run.
#[derive(Debug, Default)]
pub struct Tally {
    /// Log entries received, every kind (each once: duplicates aside).
    pub receives: u64,
    /// Of `receives`: `message:edited`, `message:deleted`, `message:reaction`.
    pub edited: u64,
    pub deleted: u64,
    pub reactions: u64,
    pub duplicates: u64,
    /// Receives whose seq was lower than one already received in that chat.
    pub out_of_order: u64,
    /// Edits, deletes and reactions that reached a connection before the
    /// message they are about.
    pub before_their_message: u64,
    /// `typing` indicators shown.
    pub typing: u64,
    pub delivered: u64,
    pub first_receive: Option<Instant>,
    pub last_receive: Option<Instant>,
    pub last_delivered: Option<Instant>,
    /// When each connection last got a `delivered` status.
    pub last_delivered_by_conn: HashMap<usize, Instant>,
    /// When a `receipt` last moved a member's delivered watermark.
    pub last_receipt: Option<Instant>,
    /// Send call → `message:receive`, microseconds.
    pub latencies_us: Vec<u64>,
}

/// Connected users and the collector of what they see. Index `i` is one
/// connection: user `users[i]` on device `devices[i]`.
pub struct Crowd {
    pub users: Vec<String>,
    /// The device each connection names (`None`: the user's default device).
    pub devices: Vec<Option<String>>,
    pub conns: Vec<Option<Conn>>,
    pub counters: Arc<Counters>,
    seen: mpsc::UnboundedSender<Seen>,
    stop: Option<oneshot::Sender<()>>,
    collector: tokio::task::JoinHandle<Tally>,
}

impl Crowd {
    pub fn new(users: Vec<String>) -> Self {
        let devices = vec![None; users.len()];
        Self::on_devices(users, devices)
    }

    /// Connection `i` is `users[i]` on device `devices[i]`.
    pub fn on_devices(users: Vec<String>, devices: Vec<Option<String>>) -> Self {
        let (seen, incoming) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters::default());
        let (stop, stopped) = oneshot::channel();
        let collector = tokio::spawn(collect(incoming, counters.clone(), stopped));
        let conns = vec![None; users.len()];
        Crowd { users, devices, conns, counters, seen, stop: Some(stop), collector }
    }

    /// Connects the given users (spread over the API nodes), `parallel` at a
    /// time; returns how long it took.
    pub async fn connect(&mut self, cluster: &Cluster, which: &[usize], parallel: usize) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let mut attempts = futures::stream::iter(which.iter().map(|&index| {
            let addr = cluster.api_addr(index).to_owned();
            let token = cluster.token(&self.users[index]);
            let device = self.devices[index].clone();
            let seen = self.seen.clone();
            async move { (index, Conn::connect(&addr, &token, device.as_deref(), index, seen).await) }
        }))
        .buffer_unordered(parallel.max(1));
        while let Some((index, conn)) = attempts.next().await {
            self.conns[index] = Some(conn.with_context(|| format!("connect {}", self.users[index]))?);
        }
        Ok(started.elapsed())
    }

    pub fn conn(&self, index: usize) -> anyhow::Result<&Conn> {
        self.conns[index].as_ref().context("user not connected")
    }

    /// Waits until `done(counters)` holds, or fails after `patience`.
    pub async fn wait_until(&self, what: &str, patience: Duration, done: impl Fn(&Counters) -> bool) -> anyhow::Result<()> {
        let deadline = Instant::now() + patience;
        while !done(&self.counters) {
            if Instant::now() > deadline {
                bail!(
                    "timed out waiting for {what}: {} received, {} delivered",
                    self.counters.receives.load(Ordering::Relaxed),
                    self.counters.delivered.load(Ordering::Relaxed)
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// Closes these connections: the users go offline.
    pub fn disconnect(&mut self, which: &[usize]) {
        for &index in which {
            if let Some(conn) = self.conns.get_mut(index).and_then(Option::take) {
                conn.close();
            }
        }
    }

    /// Closes every connection and returns the tally.
    pub async fn finish(mut self) -> Tally {
        for conn in self.conns.iter().flatten() {
            conn.close();
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.collector.await.unwrap_or_default()
    }
}

async fn collect(mut incoming: mpsc::UnboundedReceiver<Seen>, counters: Arc<Counters>, mut stop: oneshot::Receiver<()>) -> Tally {
    let mut tally = Tally::default();
    let mut seen_ids: HashSet<(usize, String)> = HashSet::new();
    let mut highest_seq: HashMap<(usize, String), i64> = HashMap::new();
    loop {
        let event = tokio::select! {
            event = incoming.recv() => event,
            _ = &mut stop => {
                // Count what already arrived, then stop.
                while let Ok(event) = incoming.try_recv() {
                    record(&mut tally, &counters, &mut seen_ids, &mut highest_seq, event);
                }
                return tally;
            }
        };
        let Some(event) = event else { return tally };
        record(&mut tally, &counters, &mut seen_ids, &mut highest_seq, event);
    }
}

fn record(
    tally: &mut Tally,
    counters: &Counters,
    seen_ids: &mut HashSet<(usize, String)>,
    highest_seq: &mut HashMap<(usize, String), i64>,
    event: Seen,
) {
    match event {
        Seen::Receive { conn, entry, message_id, chat_id, seq, content, at } => {
            // A message is itself; an entry about one is its place in the chat's log.
            let key = match entry {
                EntryEvent::Message => message_id.clone(),
                _ => format!("{entry:?}:{chat_id}:{seq}"),
            };
            if entry != EntryEvent::Message && !seen_ids.contains(&(conn, message_id)) {
                tally.before_their_message += 1;
            }
            if !seen_ids.insert((conn, key)) {
                tally.duplicates += 1;
                return;
            }
            tally.receives += 1;
            match entry {
                EntryEvent::Message => {}
                EntryEvent::Edited => tally.edited += 1,
                EntryEvent::Deleted => tally.deleted += 1,
                EntryEvent::Reaction => tally.reactions += 1,
            }
            counters.receives.fetch_add(1, Ordering::Relaxed);
            tally.first_receive.get_or_insert(at);
            tally.last_receive = Some(at);
            let highest = highest_seq.entry((conn, chat_id)).or_insert(0);
            if seq < *highest {
                tally.out_of_order += 1;
            }
            *highest = (*highest).max(seq);
            if entry == EntryEvent::Message
                && let Ok(sent_us) = content.parse::<u64>()
            {
                let received_us = at.duration_since(epoch()).as_micros() as u64;
                tally.latencies_us.push(received_us.saturating_sub(sent_us));
            }
        }
        Seen::Delivered { conn, at } => {
            tally.delivered += 1;
            counters.delivered.fetch_add(1, Ordering::Relaxed);
            *counters.delivered_by_conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).entry(conn).or_insert(0) += 1;
            tally.last_delivered = Some(at);
            tally.last_delivered_by_conn.insert(conn, at);
        }
        Seen::Receipt { chat_id, user_id, delivered_seq, at } => {
            let mut highs = counters.receipts.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let high = highs.entry((chat_id, user_id)).or_insert(0);
            if delivered_seq > *high {
                *high = delivered_seq;
                tally.last_receipt = Some(at);
            }
        }
        Seen::Typing => {
            tally.typing += 1;
        }
        Seen::SyncDone => {
            counters.sync_done.fetch_add(1, Ordering::Relaxed);
        }
        Seen::Closed => {
            counters.closed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Every sender sends `per_sender` messages, keeping `window` unanswered at a
/// time: a closed loop that runs the pipeline as fast as it goes. Returns each
/// send's answer time (call → reply), microseconds, unsorted.
pub async fn send_closed_loop(crowd: &Crowd, senders: &[Sender], per_sender: u64, window: usize) -> anyhow::Result<Vec<u64>> {
    // clientMsgIds are idempotency keys per sender: a second loop on the same
    // connections (onechat's two phases) must not reuse the first one's.
    static LOOPS: AtomicU64 = AtomicU64::new(0);
    let run = LOOPS.fetch_add(1, Ordering::Relaxed);
    let mut tasks = FuturesUnordered::new();
    for sender in senders {
        let conn = crowd.conn(sender.user)?.clone();
        let chat_id = sender.chat_id.clone();
        let user = sender.user;
        tasks.push(tokio::spawn(async move {
            let mut in_flight = FuturesUnordered::new();
            let mut answers_us = Vec::with_capacity(per_sender as usize);
            for i in 0..per_sender {
                if in_flight.len() >= window {
                    answers_us.push(in_flight.next().await.context("send")??);
                }
                let conn = conn.clone();
                let chat_id = chat_id.clone();
                in_flight.push(async move {
                    let sent_us = now_micros();
                    conn.send_message(&chat_id, sent_us.to_string(), format!("b{run}-{user}-{i}")).await?;
                    anyhow::Ok(now_micros().saturating_sub(sent_us))
                });
            }
            while let Some(answer_us) = in_flight.next().await {
                answers_us.push(answer_us?);
            }
            anyhow::Ok(answers_us)
        }));
    }
    let mut answers_us = Vec::new();
    while let Some(done) = tasks.next().await {
        answers_us.extend(done??);
    }
    Ok(answers_us)
}

/// Offers `rate` messages per second in total, spread evenly over the senders,
/// for `duration`: an open loop, as independent users would. Returns how many were sent.
pub async fn send_paced(crowd: &Crowd, senders: &[Sender], rate: f64, duration: Duration) -> anyhow::Result<u64> {
    let per_sender_interval = Duration::from_secs_f64(senders.len() as f64 / rate.max(1.0));
    let started = Instant::now();
    let sent = Arc::new(AtomicU64::new(0));
    let mut tasks = FuturesUnordered::new();
    for (n, sender) in senders.iter().enumerate() {
        let conn = crowd.conn(sender.user)?.clone();
        let chat_id = sender.chat_id.clone();
        let user = sender.user;
        let sent = sent.clone();
        // Stagger the senders so the offered load is smooth, not a burst per tick.
        let offset = per_sender_interval.mul_f64(n as f64 / senders.len() as f64);
        tasks.push(tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + offset, per_sender_interval);
            let mut replies = FuturesUnordered::new();
            let mut i = 0u64;
            while started.elapsed() < duration {
                tokio::select! {
                    _ = ticks.tick() => {
                        let conn = conn.clone();
                        let chat_id = chat_id.clone();
                        let client_msg_id = format!("p{user}-{i}");
                        i += 1;
                        replies.push(async move { conn.send_message(&chat_id, now_micros().to_string(), client_msg_id).await });
                    }
                    Some(reply) = replies.next(), if !replies.is_empty() => { reply?; }
                }
            }
            while let Some(reply) = replies.next().await {
                reply?;
            }
            sent.fetch_add(i, Ordering::Relaxed);
            anyhow::Ok(())
        }));
    }
    while let Some(done) = tasks.next().await {
        done??;
    }
    Ok(sent.load(Ordering::Relaxed))
}

/// p-th percentile (0–100) of sorted values.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// One action of the mixed workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Send,
    React,
    Edit,
    Delete,
}

/// The mixed workload's round of 20 actions, repeated: 16 sends (80 %), 2
/// reactions (10 %), 1 edit (5 %), 1 delete for everyone (5 %), spread out
/// so that each round starts with sends and a sender always has answered
/// messages of its own to act on.
const MIX: [Action; 20] = {
    use Action::{Delete as D, Edit as E, React as R, Send as S};
    [S, S, S, S, R, S, S, S, E, S, S, S, S, R, S, S, S, D, S, S]
};

/// Own answered messages a sender remembers as targets; older ones are left alone.
const RECENT: usize = 64;

/// The emoji of the mixed workload's reactions.
const EMOJI: &str = "👍";

/// The typing limit the API nodes enforce (TYPING_RATE_LIMIT per
/// TYPING_RATE_WINDOW): the mixed load starts them with it and stays under it.
#[derive(Debug, Clone, Copy)]
pub struct TypingLimit {
    pub events: u32,
    pub window: Duration,
}

/// A client-side bucket that keeps one user's `typing:start`s under the
/// server's limit, as a real client throttles them: `events` at once, then
/// one back every `window / events`, plus a tenth for the time a frame takes
/// to reach the server's check.
struct TypingBucket {
    tokens: f64,
    capacity: f64,
    per_token: Duration,
    refilled: Instant,
}

impl TypingBucket {
    fn new(limit: TypingLimit) -> Self {
        let capacity = f64::from(limit.events);
        let per_token = limit.window.mul_f64(1.1 / capacity.max(1.0));
        TypingBucket { tokens: capacity, capacity, per_token, refilled: Instant::now() }
    }

    fn take(&mut self) -> bool {
        if self.capacity == 0.0 {
            return false;
        }
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.refilled).as_secs_f64() / self.per_token.as_secs_f64()).min(self.capacity);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What the senders of a mixed load did, from the server's replies.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct MixedDone {
    pub sends: u64,
    pub reactions_added: u64,
    pub reactions_removed: u64,
    pub edits: u64,
    pub deletes: u64,
    /// Replies `changed: false` (no entry written); none are expected.
    pub unchanged: u64,
    pub typing_starts: u64,
    /// `typing:start`s answered `rate_limited` (expected now and then, not a failure).
    pub typing_rate_limited: u64,
}

impl MixedDone {
    /// Log entries written: each is one delivery per recipient.
    pub fn entries(&self) -> u64 {
        self.sends + self.reactions_added + self.reactions_removed + self.edits + self.deletes
    }

    fn add(&mut self, other: &MixedDone) {
        self.sends += other.sends;
        self.reactions_added += other.reactions_added;
        self.reactions_removed += other.reactions_removed;
        self.edits += other.edits;
        self.deletes += other.deletes;
        self.unchanged += other.unchanged;
        self.typing_starts += other.typing_starts;
        self.typing_rate_limited += other.typing_rate_limited;
    }
}

/// An answered action of the mixed load.
enum Answered {
    Sent { message_id: String },
    /// A reaction (`added`) or its removal; `entry`: the server wrote one.
    Reaction { message_id: String, added: bool, entry: bool },
    Edited { entry: bool },
    Deleted { entry: bool },
}

/// One sender's targets. Each message gets at most one fate, so that no
/// entry is moot when a device reads it (an edit superseded by a later edit,
/// an edit or reaction of a since-deleted message are passed over by the
/// server, and would not be deliveries): untouched answered messages are
/// `fresh`; an edit, a delete or a first reaction takes one out of it.
#[derive(Default)]
struct Targets {
    fresh: std::collections::VecDeque<String>,
    /// Messages carrying this sender's reaction, the `react` answered.
    reacted: Vec<String>,
    /// The next reaction removes one (alternating react / unreact).
    unreact_next: bool,
    done: MixedDone,
}

impl Targets {
    fn answered(&mut self, answered: Answered) {
        match answered {
            Answered::Sent { message_id } => {
                self.done.sends += 1;
                self.fresh.push_back(message_id);
                if self.fresh.len() > RECENT {
                    self.fresh.pop_front();
                }
            }
            Answered::Reaction { message_id, added, entry } => match (added, entry) {
                (_, false) => self.done.unchanged += 1,
                (true, true) => {
                    self.done.reactions_added += 1;
                    self.reacted.push(message_id);
                }
                (false, true) => self.done.reactions_removed += 1,
            },
            Answered::Edited { entry } => *(if entry { &mut self.done.edits } else { &mut self.done.unchanged }) += 1,
            Answered::Deleted { entry } => *(if entry { &mut self.done.deletes } else { &mut self.done.unchanged }) += 1,
        }
    }
}

/// Whether an entry reply says an entry was written.
fn wrote_entry(reply: &serde_json::Value) -> bool {
    reply["changed"] == true && reply["seq"].is_i64()
}

/// The mixed workload: every sender performs `per_sender` actions in the
/// [`MIX`] (sends, reactions, edits and deletes for everyone of its own
/// recent messages), `window` unanswered at a time, and sends `typing:start`
/// right before a send while `typing` allows. Reactions alternate: add 👍 to
/// a recent message, then remove one added before.
pub async fn mixed_closed_loop(crowd: &Crowd, senders: &[Sender], per_sender: u64, window: usize, typing: TypingLimit) -> anyhow::Result<MixedDone> {
    static LOOPS: AtomicU64 = AtomicU64::new(0);
    let run = LOOPS.fetch_add(1, Ordering::Relaxed);
    let mut tasks = FuturesUnordered::new();
    for sender in senders {
        let conn = crowd.conn(sender.user)?.clone();
        let chat_id = sender.chat_id.clone();
        let user = sender.user;
        tasks.push(tokio::spawn(async move {
            let mut targets = Targets::default();
            let mut bucket = TypingBucket::new(typing);
            let mut typing_replies = Vec::new();
            let mut in_flight = FuturesUnordered::new();
            for i in 0..per_sender {
                while in_flight.len() >= window.max(1) {
                    targets.answered(in_flight.next().await.context("action")??);
                }
                let mut action = MIX[i as usize % MIX.len()];
                let unreact = action == Action::React && targets.unreact_next;
                // Wait for answers until there is something to act on.
                let has_target = |targets: &Targets| if unreact { !targets.reacted.is_empty() } else { !targets.fresh.is_empty() };
                while action != Action::Send && !has_target(&targets) {
                    match in_flight.next().await {
                        Some(answered) => targets.answered(answered?),
                        None => break,
                    }
                }
                if action != Action::Send && !has_target(&targets) {
                    if unreact && !targets.fresh.is_empty() {
                        // Nothing to remove yet: add instead.
                        targets.unreact_next = false;
                    } else {
                        action = Action::Send;
                    }
                }
                let conn = conn.clone();
                let request: futures::future::BoxFuture<'static, anyhow::Result<Answered>> = match action {
                    Action::Send => {
                        if bucket.take() {
                            typing_replies.push(conn.request("typing:start", serde_json::json!({ "chatId": chat_id }))?);
                            targets.done.typing_starts += 1;
                        }
                        let chat_id = chat_id.clone();
                        Box::pin(async move {
                            let reply = conn.send_message(&chat_id, now_micros().to_string(), format!("m{run}-{user}-{i}")).await?;
                            let message_id = reply["messageId"].as_str().context("messageId in the send reply")?.to_owned();
                            anyhow::Ok(Answered::Sent { message_id })
                        })
                    }
                    Action::React if targets.unreact_next => {
                        targets.unreact_next = false;
                        let message_id = targets.reacted.pop().context("a reaction to remove")?;
                        Box::pin(async move {
                            let reply = conn.call("message:unreact", serde_json::json!({ "messageId": message_id, "emoji": EMOJI })).await?;
                            anyhow::Ok(Answered::Reaction { message_id, added: false, entry: wrote_entry(&reply) })
                        })
                    }
                    Action::React => {
                        targets.unreact_next = true;
                        let message_id = targets.fresh.pop_back().context("a message to react to")?;
                        Box::pin(async move {
                            let reply = conn.call("message:react", serde_json::json!({ "messageId": message_id, "emoji": EMOJI })).await?;
                            anyhow::Ok(Answered::Reaction { message_id, added: true, entry: wrote_entry(&reply) })
                        })
                    }
                    Action::Edit => {
                        let message_id = targets.fresh.pop_back().context("a message to edit")?;
                        Box::pin(async move {
                            let reply = conn.call("message:edit", serde_json::json!({ "messageId": message_id, "content": format!("edited {i}") })).await?;
                            anyhow::Ok(Answered::Edited { entry: wrote_entry(&reply) })
                        })
                    }
                    Action::Delete => {
                        let message_id = targets.fresh.pop_back().context("a message to delete")?;
                        Box::pin(async move {
                            let reply = conn.call("message:delete", serde_json::json!({ "messageId": message_id })).await?;
                            anyhow::Ok(Answered::Deleted { entry: wrote_entry(&reply) })
                        })
                    }
                };
                in_flight.push(request);
            }
            while let Some(answered) = in_flight.next().await {
                targets.answered(answered?);
            }
            for reply in typing_replies {
                let reply = reply.await?;
                if reply["event"] == "error" {
                    if reply["error"]["code"] != "rate_limited" {
                        bail!("typing:start refused: {}", reply["error"]);
                    }
                    targets.done.typing_rate_limited += 1;
                }
            }
            anyhow::Ok(targets.done)
        }));
    }
    let mut done = MixedDone::default();
    while let Some(finished) = tasks.next().await {
        done.add(&finished??);
    }
    Ok(done)
}
