//! Simulated users that behave like real chat clients, and record what they
//! see. Every user has several devices (`/ws?deviceId=u3-phone`, …), each a
//! client of its own: it connects before anything is sent (so no device is
//! created in the middle of the history, where it would start at the user's
//! delivered watermark), then reconnects (with jittered backoff, to any API
//! node) whenever its connection ends; resends an unanswered `message:send`
//! with the same `clientMsgId` until it is answered; acknowledges every
//! `message:receive` — most at once, some late, some never on a connection it
//! then drops — and every `message:status`; sends read receipts now and
//! then; and, as often, reads the members' receipts (`GET /api/sync`), which
//! is where a group's sender sees ✓✓ that no `receipt` frame brought.
//!
//! Besides sending, a device edits and deletes (for everyone) its user's
//! messages and reacts to any message of its chats (see [`ACTION_MIX`]),
//! keeping a view of every message it has seen (`view.rs`) from what it
//! receives — `message:receive` (latest content, or a tombstone),
//! `message:edited`, `message:deleted`, `message:reaction`, each acked like a
//! `message:receive` — and from what it did itself (the server does not echo
//! a device's own entries back to it). An action is one request at a time,
//! like a send: resent after a timeout or a dropped connection until it is
//! answered; `changed: false` and the refusals `already_deleted` and
//! `window_passed` are answers like any other (a resend after an unanswered
//! first try may well get them); `unavailable`, `rate_limited` and
//! `internal` are retried.

use std::{
    collections::{BinaryHeap, HashMap, VecDeque},
    cmp::Reverse,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures::{SinkExt, StreamExt};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};
use tokio::{
    net::TcpStream,
    sync::watch,
    time::{Instant, sleep_until},
};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async_with_config, tungstenite::Message};

use crate::{
    history::{About, Change, Event, EventKind, entry_key},
    view::DeviceView,
};

/// How long a send waits for its answer before it is tried again.
const SEND_PATIENCE: Duration = Duration::from_secs(5);
/// How long a connect (TCP, upgrade, `session:ready`) may take.
const CONNECT_PATIENCE: Duration = Duration::from_secs(5);

/// What a device does next, in percent of its draws: mostly sends; some
/// reactions (react or unreact), edits and deletes. An action without a
/// message to act on is a send instead.
pub const ACTION_MIX: [(ActionKind, u32); 4] =
    [(ActionKind::Send, 70), (ActionKind::Reaction, 16), (ActionKind::Edit, 8), (ActionKind::Delete, 6)];

/// One draw of [`ACTION_MIX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionKind {
    Send,
    /// `message:react`, or `message:unreact` of a reaction the device shows.
    Reaction,
    /// `message:edit` of one of the user's messages.
    Edit,
    /// `message:delete` (for everyone) of one of the user's messages.
    Delete,
}

/// The emoji devices react with: few, so that the devices of a user (and
/// its resends) meet on the same (message, emoji) and get `changed: false`.
const EMOJI: [&str; 4] = ["👍", "❤️", "😂", "🎉"];
/// The latest messages per chat a device picks from when it acts.
const RECENT: usize = 30;
/// Error codes after which an action is tried again (like a send refused
/// with them); any other error ends it (and is recorded as a refusal).
const RETRYABLE: [&str; 3] = ["unavailable", "rate_limited", "internal"];

/// Where the run is: clients send new messages only while it runs; while it
/// settles they finish what they started and acknowledge everything at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Running,
    Settling,
    Stopping,
}

/// The one clock and the one list of events of a run.
pub struct Recorder {
    started: std::time::Instant,
    events: Mutex<Vec<Event>>,
    next_conn: AtomicU64,
}

impl Recorder {
    pub fn new() -> Self {
        Self { started: std::time::Instant::now(), events: Mutex::default(), next_conn: AtomicU64::new(1) }
    }

    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn record(&self, who: &Who, conn: u64, kind: EventKind) {
        let event = Event { at_ms: self.now_ms(), user: who.user.clone(), device: who.device.clone(), conn, kind };
        if let Ok(mut events) = self.events.lock() {
            events.push(event);
        }
    }

    fn new_conn(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> Vec<Event> {
        self.events.lock().map(|events| events.clone()).unwrap_or_default()
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

/// Who records: a user's device.
#[derive(Clone)]
struct Who {
    user: String,
    device: String,
}

/// What every client shares: the API nodes, the users, their devices and
/// chats, the run's phase.
pub struct World {
    pub recorder: Arc<Recorder>,
    pub nodes: Vec<String>,
    pub users: Vec<String>,
    pub tokens: Vec<String>,
    /// The `deviceId`s of each user (`u3-phone`, `u3-laptop`).
    pub devices: Vec<Vec<String>>,
    /// For REST calls (`GET /api/sync`).
    pub http: reqwest::Client,
    /// The chats each user is a member of.
    pub chats_of: Vec<Vec<String>>,
    pub phase: watch::Receiver<Phase>,
    /// Bumped by a reconnect storm: every connection drops when it changes.
    pub storms: watch::Receiver<u64>,
    /// Longest pause of a user between an answer and its next send.
    pub send_gap_ms: u64,
}

impl World {
    fn who(&self, user: usize, device: usize) -> Who {
        Who { user: self.users[user].clone(), device: self.devices[user][device].clone() }
    }
}

/// One device's state that outlives its connections.
struct DeviceState {
    /// The user's index.
    index: usize,
    /// The device's index among the user's.
    device: usize,
    rng: StdRng,
    /// The send not yet answered: retried with the same `clientMsgId`.
    unanswered: Option<(String, String)>,
    sent_count: u64,
    /// The edit, delete or reaction not yet answered: retried as it is.
    pending_action: Option<Action>,
    action_count: u64,
    /// What this device shows of every message it has seen.
    view: DeviceView,
    /// Per chat, the ids of the latest messages seen (oldest first), at most [`RECENT`].
    recent: HashMap<String, VecDeque<String>>,
    /// Highest seq received per chat, and the last read receipt sent.
    max_seq: HashMap<String, i64>,
    read_up_to: HashMap<String, i64>,
}

impl DeviceState {
    fn new(index: usize, device: usize, rng: StdRng) -> Self {
        Self {
            index,
            device,
            rng,
            unanswered: None,
            sent_count: 0,
            pending_action: None,
            action_count: 0,
            view: DeviceView::default(),
            recent: HashMap::new(),
            max_seq: HashMap::new(),
            read_up_to: HashMap::new(),
        }
    }

    fn remember(&mut self, chat_id: &str, message_id: &str) {
        let recent = self.recent.entry(chat_id.to_owned()).or_default();
        if recent.iter().any(|id| id == message_id) {
            return;
        }
        recent.push_back(message_id.to_owned());
        if recent.len() > RECENT {
            recent.pop_front();
        }
    }
}

/// An edit, delete or reaction of this device: the same request on every try.
#[derive(Debug, Clone)]
struct Action {
    action_id: String,
    chat_id: String,
    message_id: String,
    change: Change,
}

impl Action {
    fn frame(&self, frame_id: u64) -> Value {
        let (event, data) = match &self.change {
            Change::Edit { content } => ("message:edit", json!({"messageId": self.message_id, "content": content})),
            Change::Delete => ("message:delete", json!({"messageId": self.message_id})),
            Change::React { emoji } => ("message:react", json!({"messageId": self.message_id, "emoji": emoji})),
            Change::Unreact { emoji } => ("message:unreact", json!({"messageId": self.message_id, "emoji": emoji})),
        };
        json!({"event": event, "id": frame_id, "data": data})
    }
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The phase now. (A function, so the watch's read guard never lives across an await.)
fn now_in(phase: &watch::Receiver<Phase>) -> Phase {
    *phase.borrow()
}

fn is_on(online: &watch::Receiver<bool>) -> bool {
    *online.borrow()
}

/// Resolves when the run stops (or its controller is gone).
async fn until_stopping(phase: &mut watch::Receiver<Phase>) {
    let _ = phase.wait_for(|p| *p == Phase::Stopping).await;
}

/// Resolves when the user's switch is `wanted`.
async fn until_online(online: &mut watch::Receiver<bool>, wanted: bool) {
    if online.wait_for(|up| *up == wanted).await.is_err() {
        // The switch is gone (the run ends): never resolve on its account.
        std::future::pending::<()>().await;
    }
}

/// Creates device `device` of user `index` on the server: one connection
/// until `sync:done` (or 5 s), recorded like any other, then closed. The run
/// does this for every device before any message is sent.
pub async fn register_device(world: &World, index: usize, device: usize) -> anyhow::Result<()> {
    let who = world.who(index, device);
    let node = (index + device) % world.nodes.len();
    let conn = world.recorder.new_conn();
    let Some(mut socket) = connect(world, index, device, node).await else {
        anyhow::bail!("device {} of {} could not connect to api-{node}", who.device, who.user);
    };
    world.recorder.record(&who, conn, EventKind::Connected { node });
    let synced = tokio::time::timeout(CONNECT_PATIENCE, async {
        while let Some(Ok(message)) = socket.next().await {
            let Message::Text(text) = message else { continue };
            let Ok(frame) = serde_json::from_str::<Value>(&text) else { continue };
            if frame["event"] == "sync:done" {
                return Some(frame["data"]["count"].as_u64().unwrap_or(0));
            }
        }
        None
    })
    .await;
    if let Ok(Some(count)) = synced {
        world.recorder.record(&who, conn, EventKind::SyncDone { count });
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), socket.close(None)).await;
    world.recorder.record(&who, conn, EventKind::Disconnected);
    match synced {
        Ok(Some(_)) => Ok(()),
        _ => anyhow::bail!("device {} of {} got no sync:done within {CONNECT_PATIENCE:?}", who.device, who.user),
    }
}

/// Runs device `device` of user `index` until the run stops: connect, talk, reconnect.
pub async fn run_device(world: Arc<World>, index: usize, device: usize, seed: u64, mut online: watch::Receiver<bool>) {
    let number = (index * world.devices[index].len() + device) as u64;
    let mut state = DeviceState::new(index, device, StdRng::seed_from_u64(seed.wrapping_mul(31).wrapping_add(number)));
    let mut phase = world.phase.clone();
    let mut failures = 0u32;
    loop {
        if now_in(&phase) == Phase::Stopping {
            return;
        }
        if !is_on(&online) {
            tokio::select! {
                () = until_online(&mut online, true) => {}
                () = until_stopping(&mut phase) => return,
            }
        }
        let node = state.rng.random_range(0..world.nodes.len());
        let conn = world.recorder.new_conn();
        match connect(&world, index, device, node).await {
            Some(socket) => {
                failures = 0;
                let role = Role::Primary { online: online.clone() };
                run_connection(&world, &mut state, socket, conn, node, role).await;
            }
            None => failures += 1,
        }
        // Jittered backoff before the next connect; short after a clean drop.
        let ceiling_ms = (100u64 << failures.min(4)).min(2_000);
        let pause = Duration::from_millis(state.rng.random_range(0..=ceiling_ms));
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = until_stopping(&mut phase) => return,
        }
    }
}

/// A second connection of device `device` of user `index` for `lifetime`
/// (the same `deviceId`, like a second tab of one browser profile): it
/// acknowledges what it gets and sends nothing.
pub async fn run_second_connection(world: Arc<World>, index: usize, device: usize, seed: u64, lifetime: Duration) {
    let mut state = DeviceState::new(index, device, StdRng::seed_from_u64(seed));
    let until = Instant::now() + lifetime;
    while Instant::now() < until && now_in(&world.phase) != Phase::Stopping {
        let node = state.rng.random_range(0..world.nodes.len());
        let conn = world.recorder.new_conn();
        if let Some(socket) = connect(&world, index, device, node).await {
            run_connection(&world, &mut state, socket, conn, node, Role::Second { until }).await;
        }
        tokio::time::sleep(Duration::from_millis(state.rng.random_range(50..500))).await;
    }
}

async fn connect(world: &World, index: usize, device: usize, node: usize) -> Option<Socket> {
    let url = format!("ws://{}/ws?token={}&deviceId={}", world.nodes[node], world.tokens[index], world.devices[index][device]);
    let attempt = async {
        let (mut socket, _) = connect_async_with_config(url, None, true).await.ok()?;
        // The first frame says the session exists.
        match socket.next().await {
            Some(Ok(Message::Text(text))) if text.contains("session:ready") => Some(socket),
            _ => None,
        }
    };
    tokio::time::timeout(CONNECT_PATIENCE, attempt).await.ok().flatten()
}

enum Role {
    /// The user's main connection: it sends and reads; it ends when the user goes offline.
    Primary { online: watch::Receiver<bool> },
    /// A second connection, until a deadline.
    Second { until: Instant },
}

/// A request written and not answered yet.
struct InFlight {
    frame_id: u64,
    request: Request,
    deadline: Instant,
}

/// What a device asks of the server, one at a time.
enum Request {
    Send { chat_id: String, client_msg_id: String, content: String },
    Action(Action),
}

impl InFlight {
    /// Records that this try failed on the client's side (it is tried again).
    fn failed(&self, recorder: &Recorder, who: &Who, conn: u64, reason: &str) {
        let kind = match &self.request {
            Request::Send { client_msg_id, .. } => EventKind::SendFailed { client_msg_id: client_msg_id.clone(), reason: reason.into() },
            Request::Action(action) => EventKind::ActionFailed { action_id: action.action_id.clone(), reason: reason.into() },
        };
        recorder.record(who, conn, kind);
    }
}

/// Why a connection ended, for how it is closed.
enum End {
    /// Drop the TCP connection without a close frame (network loss, crash of the app).
    Abrupt,
    /// A close handshake.
    Graceful,
}

async fn run_connection(world: &World, state: &mut DeviceState, mut socket: Socket, conn: u64, node: usize, mut role: Role) {
    let user = world.who(state.index, state.device);
    let recorder = &world.recorder;
    recorder.record(&user, conn, EventKind::Connected { node });
    let mut phase = world.phase.clone();
    let mut storms = world.storms.clone();
    storms.mark_unchanged();
    let primary = matches!(role, Role::Primary { .. });
    let mut next_frame_id = 1u64;
    let mut in_flight: Option<InFlight> = None;
    let mut next_send = Instant::now() + Duration::from_millis(state.rng.random_range(0..500));
    let mut next_read = Instant::now() + Duration::from_millis(state.rng.random_range(1_000..5_000));
    // Acks held back: (due, server frame id, message id).
    let mut late_acks: BinaryHeap<Reverse<(Instant, u64, String)>> = BinaryHeap::new();
    // Set when this connection left a message unacknowledged on purpose: it is dropped soon after.
    let mut doomed_at: Option<Instant> = None;
    let far = Instant::now() + Duration::from_secs(86_400);

    let end = loop {
        let running = now_in(&phase) == Phase::Running;
        let settling = now_in(&phase) == Phase::Settling;
        // What the next timer is for: a send (primary), its answer's deadline, a late ack, the doom, a read receipt.
        let send_due = match (&in_flight, primary) {
            (Some(flight), _) => flight.deadline,
            (None, true) if running || state.unanswered.is_some() || state.pending_action.is_some() => next_send,
            _ => far,
        };
        let ack_due = late_acks.peek().map_or(far, |Reverse((due, _, _))| *due);
        let read_due = if primary && !matches!(now_in(&phase), Phase::Stopping) { next_read } else { far };
        let second_until = match &role {
            Role::Second { until } => *until,
            Role::Primary { .. } => far,
        };
        let wake = send_due.min(ack_due).min(read_due).min(doomed_at.unwrap_or(far)).min(second_until);
        let offline = async {
            match &mut role {
                Role::Primary { online } => until_online(online, false).await,
                Role::Second { .. } => std::future::pending().await,
            }
        };

        tokio::select! {
            frame = socket.next() => {
                let Some(Ok(message)) = frame else { break End::Abrupt };
                let Message::Text(text) = message else { continue };
                let Ok(frame) = serde_json::from_str::<Value>(&text) else { continue };
                let had_send = in_flight.is_some();
                let outcome = on_frame(world, state, &mut socket, conn, &user, frame, &mut in_flight, &mut late_acks, &mut doomed_at, settling).await;
                if outcome.is_err() {
                    break End::Abrupt;
                }
                if had_send && in_flight.is_none() {
                    // Answered (or refused): the next send after a human-ish pause; a refused one is retried then.
                    next_send = Instant::now() + Duration::from_millis(state.rng.random_range(0..=world.send_gap_ms));
                }
            }
            () = sleep_until(wake) => {
                let now = Instant::now();
                if doomed_at.is_some_and(|at| at <= now) || second_until <= now {
                    break End::Abrupt;
                }
                // Late acks that are due.
                let mut broken = false;
                while late_acks.peek().is_some_and(|Reverse((due, _, _))| *due <= now) {
                    let Some(Reverse((_, frame_id, message_id))) = late_acks.pop() else { break };
                    if send_ack(&mut socket, frame_id).await.is_err() {
                        broken = true;
                        break;
                    }
                    recorder.record(&user, conn, EventKind::Acked { message_id });
                }
                if broken {
                    break End::Abrupt;
                }
                if let Some(flight) = &in_flight
                    && flight.deadline <= now
                {
                    flight.failed(recorder, &user, conn, "timeout");
                    in_flight = None;
                    next_send = now + Duration::from_millis(200);
                }
                if primary && in_flight.is_none() && next_send <= now {
                    // An unanswered send or action first, as it was; else something new while the run runs.
                    let next = match (state.unanswered.clone(), state.pending_action.clone()) {
                        (Some((chat_id, client_msg_id)), _) => {
                            Some(Request::Send { content: content_of(&client_msg_id), chat_id, client_msg_id })
                        }
                        (None, Some(action)) => Some(Request::Action(action)),
                        (None, None) if running => Some(draw_request(world, state, &user)),
                        (None, None) => None,
                    };
                    if let Some(request) = next {
                        let frame_id = next_frame_id;
                        next_frame_id += 1;
                        let frame = match &request {
                            Request::Send { chat_id, client_msg_id, content } => {
                                state.unanswered = Some((chat_id.clone(), client_msg_id.clone()));
                                recorder.record(&user, conn, EventKind::SendAttempt { chat_id: chat_id.clone(), client_msg_id: client_msg_id.clone() });
                                json!({
                                    "event": "message:send",
                                    "id": frame_id,
                                    "data": {"chatId": chat_id, "content": content, "messageType": "text", "clientMsgId": client_msg_id},
                                })
                            }
                            Request::Action(action) => {
                                state.pending_action = Some(action.clone());
                                recorder.record(
                                    &user,
                                    conn,
                                    EventKind::ActionAttempt {
                                        action_id: action.action_id.clone(),
                                        chat_id: action.chat_id.clone(),
                                        message_id: action.message_id.clone(),
                                        change: action.change.clone(),
                                    },
                                );
                                action.frame(frame_id)
                            }
                        };
                        let flight = InFlight { frame_id, request, deadline: now + SEND_PATIENCE };
                        if socket.send(Message::text(frame.to_string())).await.is_err() {
                            flight.failed(recorder, &user, conn, "connection_closed");
                            break End::Abrupt;
                        }
                        in_flight = Some(flight);
                    }
                }
                if primary && next_read <= now {
                    next_read = now + Duration::from_millis(state.rng.random_range(2_000..6_000));
                    read_receipts(world, &user, state.index, node, conn);
                    let unread: Vec<(String, i64)> = state
                        .max_seq
                        .iter()
                        .filter(|(chat, seq)| state.read_up_to.get(*chat).is_none_or(|read| read < *seq))
                        .map(|(chat, seq)| (chat.clone(), *seq))
                        .collect();
                    if !unread.is_empty() {
                        let (chat_id, up_to_seq) = unread[state.rng.random_range(0..unread.len())].clone();
                        let frame = json!({"event": "message:read", "data": {"chatId": chat_id, "upToSeq": up_to_seq}});
                        if socket.send(Message::text(frame.to_string())).await.is_err() {
                            break End::Abrupt;
                        }
                        state.read_up_to.insert(chat_id.clone(), up_to_seq);
                        recorder.record(&user, conn, EventKind::ReadSent { chat_id, up_to_seq });
                    }
                }
            }
            () = offline => break End::Abrupt,
            _ = storms.changed() => break End::Abrupt,
            () = until_stopping(&mut phase) => break End::Graceful,
        }
    };

    if let Some(flight) = in_flight {
        flight.failed(recorder, &user, conn, "connection_closed");
    }
    if let End::Graceful = end {
        let _ = tokio::time::timeout(Duration::from_secs(2), socket.close(None)).await;
    }
    drop(socket);
    recorder.record(&user, conn, EventKind::Disconnected);
}

/// The content of a send: unique, so a device's view of it is unmistakable.
fn content_of(client_msg_id: &str) -> String {
    format!("{client_msg_id} says hi")
}

/// The next new request of a device, drawn from [`ACTION_MIX`].
fn draw_request(world: &World, state: &mut DeviceState, who: &Who) -> Request {
    let draw = state.rng.random_range(0..100);
    let mut threshold = 0;
    let mut kind = ActionKind::Send;
    for (candidate, share) in ACTION_MIX {
        threshold += share;
        if draw < threshold {
            kind = candidate;
            break;
        }
    }
    if let Some(action) = draw_action(world, state, who, kind) {
        return Request::Action(action);
    }
    let chats = &world.chats_of[state.index];
    let chat_id = chats[state.rng.random_range(0..chats.len())].clone();
    state.sent_count += 1;
    // Unique per user: the device id names the user.
    let client_msg_id = format!("{}-{}", who.device, state.sent_count);
    Request::Send { content: content_of(&client_msg_id), chat_id, client_msg_id }
}

/// An edit, delete or reaction of one of the latest messages of a chat of
/// the device (its user's own for an edit or delete); mostly of one it shows
/// as not deleted, but now and then of any (`already_deleted` is an answer
/// too). `None` if there is nothing to act on.
fn draw_action(world: &World, state: &mut DeviceState, who: &Who, kind: ActionKind) -> Option<Action> {
    if kind == ActionKind::Send {
        return None;
    }
    let chats = &world.chats_of[state.index];
    let chat_id = chats[state.rng.random_range(0..chats.len())].clone();
    let any = state.rng.random_range(0..10) == 0;
    // A reaction is, 40 % of the time, on a message the device shows one of
    // its user's reactions on (if there is one): so reactions are taken back too.
    let reacted = kind == ActionKind::Reaction && state.rng.random_bool(0.4);
    let mine = |message: &crate::view::MessageView| message.reactions().iter().any(|(user, _)| *user == who.user);
    let eligible = |reacted: bool| -> Vec<String> {
        state
            .recent
            .get(&chat_id)
            .into_iter()
            .flatten()
            .filter(|id| {
                state.view.get(id).is_some_and(|message| {
                    (any || !message.deleted)
                        && (kind == ActionKind::Reaction || message.sender_id == who.user)
                        && (!reacted || mine(message))
                })
            })
            .cloned()
            .collect()
    };
    let mut candidates = eligible(reacted);
    if candidates.is_empty() && reacted {
        candidates = eligible(false);
    }
    if candidates.is_empty() {
        return None;
    }
    let message_id = candidates[state.rng.random_range(0..candidates.len())].clone();
    state.action_count += 1;
    let action_id = format!("{}-a{}", who.device, state.action_count);
    let change = match kind {
        ActionKind::Edit => Change::Edit { content: format!("{action_id} edited") },
        ActionKind::Delete => Change::Delete,
        ActionKind::Reaction | ActionKind::Send => {
            // One of the user's reactions the device shows on it (always
            // when picked for that, else half the time), or any emoji.
            let mine: Vec<String> = state.view.get(&message_id).map_or_else(Vec::new, |message| {
                message.reactions().into_iter().filter(|(user, _)| *user == who.user).map(|(_, emoji)| emoji).collect()
            });
            let emoji = if !mine.is_empty() && (reacted || state.rng.random_bool(0.5)) {
                mine[state.rng.random_range(0..mine.len())].clone()
            } else {
                EMOJI[state.rng.random_range(0..EMOJI.len())].to_owned()
            };
            let shown = mine.contains(&emoji);
            // Mostly a toggle of what the device shows; now and then the same
            // again (the server answers `changed: false`).
            let toggle = state.rng.random_range(0..100) < 85;
            if shown == toggle { Change::Unreact { emoji } } else { Change::React { emoji } }
        }
    };
    Some(Action { action_id, chat_id, message_id, change })
}

#[allow(clippy::too_many_arguments)]
async fn on_frame(
    world: &World,
    state: &mut DeviceState,
    socket: &mut Socket,
    conn: u64,
    user: &Who,
    frame: Value,
    in_flight: &mut Option<InFlight>,
    late_acks: &mut BinaryHeap<Reverse<(Instant, u64, String)>>,
    doomed_at: &mut Option<Instant>,
    settling: bool,
) -> Result<(), ()> {
    let recorder = &world.recorder;
    let id = frame["id"].as_u64();
    let data = &frame["data"];
    let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
    let event = frame["event"].as_str().unwrap_or_default();
    match event {
        "ack" | "error" => {
            let Some(flight) = in_flight.take_if(|flight| Some(flight.frame_id) == id) else { return Ok(()) };
            let code = frame["error"]["code"].as_str().unwrap_or("error").to_owned();
            match flight.request {
                Request::Send { chat_id, client_msg_id, content } => {
                    if event == "ack" {
                        let message_id = text(&data["messageId"]);
                        let seq = data["seq"].as_i64().unwrap_or(-1);
                        state.view.sent(&message_id, &chat_id, seq, &user.user, &content);
                        state.remember(&chat_id, &message_id);
                        recorder.record(
                            user,
                            conn,
                            EventKind::SendAnswered { chat_id, client_msg_id, message_id, seq, content: Some(content) },
                        );
                        state.unanswered = None;
                    } else {
                        recorder.record(user, conn, EventKind::SendFailed { client_msg_id, reason: code });
                    }
                }
                Request::Action(Action { action_id, chat_id, message_id, change }) => {
                    if event == "ack" {
                        let changed = data["changed"].as_bool().unwrap_or(false);
                        let seq = data["seq"].as_i64();
                        match (&change, changed, seq) {
                            (_, true, Some(seq)) => {
                                state.view.entry(&message_id, seq, &user.user, &change);
                            }
                            (Change::React { emoji } | Change::Unreact { emoji }, false, _) => {
                                let present = matches!(change, Change::React { .. });
                                state.view.assume_reaction(&message_id, &user.user, emoji, present);
                            }
                            _ => {}
                        }
                        recorder.record(user, conn, EventKind::ActionAnswered { action_id, chat_id, message_id, change, changed, seq });
                        state.pending_action = None;
                    } else if RETRYABLE.contains(&code.as_str()) {
                        recorder.record(user, conn, EventKind::ActionFailed { action_id, reason: code });
                    } else {
                        if code == "already_deleted" {
                            state.view.deleted(&message_id);
                        }
                        recorder.record(user, conn, EventKind::ActionRefused { action_id, chat_id, message_id, change, code });
                        state.pending_action = None;
                    }
                }
            }
        }
        "message:receive" => {
            let message_id = text(&data["messageId"]);
            let chat_id = text(&data["chatId"]);
            let sender_id = text(&data["senderId"]);
            let seq = data["seq"].as_i64().unwrap_or(-1);
            let content = text(&data["content"]);
            let deleted = data["deleted"].as_bool().unwrap_or(false);
            state.view.received(&message_id, &chat_id, seq, &sender_id, &content, deleted);
            state.remember(&chat_id, &message_id);
            recorder.record(
                user,
                conn,
                EventKind::Received {
                    chat_id: chat_id.clone(),
                    message_id: message_id.clone(),
                    sender_id,
                    seq,
                    frame_id: id,
                    content: Some(content),
                    deleted,
                    about: None,
                },
            );
            let highest = state.max_seq.entry(chat_id).or_insert(seq);
            *highest = (*highest).max(seq);
            acknowledge(state, socket, recorder, conn, user, id, message_id, late_acks, doomed_at, settling).await?;
        }
        "message:edited" | "message:deleted" | "message:reaction" => {
            let chat_id = text(&data["chatId"]);
            let seq = data["seq"].as_i64().unwrap_or(-1);
            let target = text(&data["messageId"]);
            let (sender_id, change) = match event {
                "message:edited" => (text(&data["senderId"]), Change::Edit { content: text(&data["content"]) }),
                "message:deleted" => (text(&data["senderId"]), Change::Delete),
                _ => {
                    let emoji = text(&data["emoji"]);
                    let change =
                        if data["added"].as_bool().unwrap_or(false) { Change::React { emoji } } else { Change::Unreact { emoji } };
                    (text(&data["userId"]), change)
                }
            };
            // An entry about a message this device has not seen is the
            // checker's to judge (`entry_before_message`); the view skips it.
            state.view.entry(&target, seq, &sender_id, &change);
            let key = entry_key(&chat_id, seq);
            recorder.record(
                user,
                conn,
                EventKind::Received {
                    chat_id,
                    message_id: key.clone(),
                    sender_id,
                    seq,
                    frame_id: id,
                    content: None,
                    deleted: false,
                    about: Some(About { message_id: target, change }),
                },
            );
            acknowledge(state, socket, recorder, conn, user, id, key, late_acks, doomed_at, settling).await?;
        }
        "receipt" => {
            recorder.record(user, conn, receipt_event(data, true));
        }
        "sync:done" => {
            recorder.record(user, conn, EventKind::SyncDone { count: data["count"].as_u64().unwrap_or(0) });
        }
        "message:status" => {
            recorder.record(
                user,
                conn,
                EventKind::Status { message_id: text(&data["messageId"]), recipient: text(&data["userId"]), status: text(&data["status"]) },
            );
            if let Some(frame_id) = id {
                send_ack(socket, frame_id).await?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Acknowledges a pushed entry (a `message:receive`, or an edit, delete or
/// reaction, named `key` in the history): 85 % at once, 10 % late, 5 % never
/// (and this connection is then dropped); all at once while the run settles.
#[allow(clippy::too_many_arguments)]
async fn acknowledge(
    state: &mut DeviceState,
    socket: &mut Socket,
    recorder: &Recorder,
    conn: u64,
    user: &Who,
    frame_id: Option<u64>,
    key: String,
    late_acks: &mut BinaryHeap<Reverse<(Instant, u64, String)>>,
    doomed_at: &mut Option<Instant>,
    settling: bool,
) -> Result<(), ()> {
    let Some(frame_id) = frame_id else { return Ok(()) };
    let draw = if settling { 0 } else { state.rng.random_range(0..100) };
    match draw {
        0..85 => {
            send_ack(socket, frame_id).await?;
            recorder.record(user, conn, EventKind::Acked { message_id: key });
        }
        85..95 => {
            let due = Instant::now() + Duration::from_millis(state.rng.random_range(200..3_000));
            late_acks.push(Reverse((due, frame_id, key)));
        }
        _ => {
            if doomed_at.is_none() {
                *doomed_at = Some(Instant::now() + Duration::from_millis(state.rng.random_range(500..3_000)));
            }
        }
    }
    Ok(())
}

fn receipt_event(data: &Value, pushed: bool) -> EventKind {
    EventKind::Receipt {
        chat_id: data["chatId"].as_str().unwrap_or_default().to_owned(),
        user_id: data["userId"].as_str().unwrap_or_default().to_owned(),
        delivered_seq: data["deliveredSeq"].as_i64().unwrap_or(-1),
        read_seq: data["readSeq"].as_i64().unwrap_or(-1),
        pushed,
    }
}

/// Reads every member's receipts of the user's chats from `GET /api/sync` on
/// API node `node`, in the background, and records them on `conn`.
fn read_receipts(world: &World, who: &Who, index: usize, node: usize, conn: u64) {
    let request = world
        .http
        .get(format!("http://{}/api/sync?limit=1", world.nodes[node]))
        .bearer_auth(&world.tokens[index])
        .timeout(Duration::from_secs(3));
    let recorder = world.recorder.clone();
    let who = who.clone();
    tokio::spawn(async move {
        let Ok(response) = request.send().await else { return };
        if !response.status().is_success() {
            return;
        }
        let Ok(body) = response.json::<Value>().await else { return };
        for receipt in body["receipts"].as_array().into_iter().flatten() {
            recorder.record(&who, conn, receipt_event(receipt, false));
        }
    });
}

async fn send_ack(socket: &mut Socket, frame_id: u64) -> Result<(), ()> {
    socket.send(Message::text(format!(r#"{{"event":"ack","id":{frame_id}}}"#))).await.map_err(drop)
}
