//! Typing indicators: a member's `typing:start` / `typing:stop` becomes a
//! `typing` event on every connection of the chat's other members, on
//! whichever node holds it: this node hands it to its own sessions, other
//! nodes get it through their push queues.
//!
//! Ephemeral by design: nothing is written to PostgreSQL, nothing is retried,
//! drained or replayed on connect, and a notice lost on the way (a full
//! queue, a broker outage, a node restarting) is simply not shown. The
//! client sends another with the next burst of keystrokes, and a
//! `typing: true` ends by itself after its `expiresInMs`, so a lost stop
//! costs a few seconds of "typing…", never a stuck indicator.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use courier_shared::{
    ClientError, ErrorCode,
    broker::{Broker, PublishOptions},
    db::presence,
    job::{NodeBatch, NodeItem},
    protocol::{TYPING_TTL_MS, TypingChange, TypingNotice},
};
use futures::future::join_all;
use tokio::sync::mpsc::{self, error::TrySendError};
use uuid::Uuid;

use crate::{inbox::SessionInput, ratelimit::UserRateLimit, registry::Sessions, state::AppState};

/// Notices for other nodes waiting to be published; beyond this they are
/// dropped (a typing notice is worth less than the memory to queue it).
const QUEUE: usize = 4096;
/// Items per broker message to one node.
const ITEMS_PER_MESSAGE: usize = 256;
/// How long a chat's typing audience (membership and who is connected
/// where) is reused: one query per typer and chat per AUDIENCE_TTL, not per
/// keystroke burst. A member who joined, left or connected meanwhile is
/// heard (or stops hearing) at most this late, as with a lost notice.
const AUDIENCE_TTL: Duration = Duration::from_secs(2);
/// Audiences kept at most; the cache is emptied when it is full.
const AUDIENCE_CACHE: usize = 10_000;
/// A `typing:start` this soon after the last one forwarded for the same
/// typer and chat (with no stop between) is answered but not forwarded:
/// the listeners' indicator still has at least TYPING_TTL_MS minus this to
/// run, so it stays on without it. Clients that send a start per keystroke
/// (common) then cost one notice per member every 2 s, not one per key.
const START_REFRESH: Duration = Duration::from_millis(TYPING_TTL_MS / 3);

/// `None`: the typer is not a member. Otherwise (member, node) pairs.
type Audience = Option<Vec<(String, String)>>;

/// The node's typing relay: the per-user typing limit, and the publisher
/// that carries notices to other nodes.
pub struct TypingRelay {
    limit: UserRateLimit,
    to_nodes: mpsc::Sender<(String, NodeItem)>,
    audiences: Mutex<HashMap<(Uuid, String), (Instant, Audience)>>,
    /// When each (chat, typer)'s last `typing: true` was forwarded, until a stop.
    forwarded_starts: Mutex<HashMap<(Uuid, String), Instant>>,
}

impl TypingRelay {
    /// Starts the publisher. `limit` counts each user's typing events.
    pub fn start(broker: Broker, limit: UserRateLimit) -> Self {
        let (to_nodes, queued) = mpsc::channel(QUEUE);
        tokio::spawn(publish_loop(broker, queued));
        Self { limit, to_nodes, audiences: Mutex::new(HashMap::new()), forwarded_starts: Mutex::new(HashMap::new()) }
    }

    /// Whether this change needs forwarding: not a start that repeats one
    /// forwarded less than START_REFRESH ago. A stop is always forwarded
    /// and makes the next start forwarded too.
    fn worth_forwarding(&self, chat_id: Uuid, user_id: &str, typing: bool) -> bool {
        let key = (chat_id, user_id.to_owned());
        let mut forwarded = self.forwarded_starts.lock().unwrap_or_else(|e| e.into_inner());
        if !typing {
            forwarded.remove(&key);
            return true;
        }
        let now = Instant::now();
        if forwarded.get(&key).is_some_and(|at| now.duration_since(*at) < START_REFRESH) {
            return false;
        }
        if forwarded.len() >= AUDIENCE_CACHE {
            forwarded.retain(|_, at| now.duration_since(*at) < START_REFRESH);
            if forwarded.len() >= AUDIENCE_CACHE {
                forwarded.clear();
            }
        }
        forwarded.insert(key, now);
        true
    }

    /// Who hears `user_id` type in `chat_id`, from PostgreSQL at most every AUDIENCE_TTL.
    async fn audience(&self, state: &AppState, chat_id: Uuid, user_id: &str) -> Result<Audience, ClientError> {
        let key = (chat_id, user_id.to_owned());
        let now = Instant::now();
        if let Some((at, audience)) = self.audiences.lock().unwrap_or_else(|e| e.into_inner()).get(&key)
            && now.duration_since(*at) < AUDIENCE_TTL
        {
            return Ok(audience.clone());
        }
        let audience = presence::typing_audience(&state.db, chat_id, user_id).await?;
        let mut audiences = self.audiences.lock().unwrap_or_else(|e| e.into_inner());
        if audiences.len() >= AUDIENCE_CACHE {
            audiences.clear();
        }
        audiences.insert(key, (now, audience.clone()));
        Ok(audience)
    }

    /// Queues a notice for `node_id` without waiting: the typer's reply never
    /// waits for RabbitMQ.
    fn forward(&self, node_id: String, item: NodeItem) {
        match self.to_nodes.try_send((node_id, item)) {
            Ok(()) => {}
            Err(TrySendError::Full((node_id, _))) => tracing::debug!(%node_id, "typing queue full: notice dropped"),
            // The node is stopping.
            Err(TrySendError::Closed(_)) => {}
        }
    }
}

/// `typing:start` / `typing:stop` of `user_id`: over the typing limit it is
/// `rate_limited`, from a non-member `not_member`; otherwise the chat's other
/// members' connections get a `typing` (the typer's own connections do not),
/// unless it repeats a start forwarded less than START_REFRESH ago.
pub async fn typing(state: &AppState, user_id: &str, change: TypingChange) -> Result<(), ClientError> {
    // Before the database: a flood of typing events costs no query.
    if state.typing.limit.check(user_id).is_err() {
        return Err(ClientError::new(ErrorCode::RateLimited, "too many typing events; slow down"));
    }
    let Some(audience) = state.typing.audience(state, change.chat_id, user_id).await? else {
        return Err(ClientError::not_member());
    };
    if !state.typing.worth_forwarding(change.chat_id, user_id, change.typing) {
        return Ok(());
    }
    let notice = TypingNotice {
        chat_id: change.chat_id,
        user_id: user_id.to_owned(),
        typing: change.typing,
        expires_in_ms: if change.typing { TYPING_TTL_MS } else { 0 },
    };
    let mut by_node: HashMap<String, Vec<String>> = HashMap::new();
    for (member, node_id) in audience {
        by_node.entry(node_id).or_default().push(member);
    }
    for (node_id, user_ids) in by_node {
        if node_id == state.node_id {
            hand_out(&state.sessions, &user_ids, &notice);
        } else {
            state.typing.forward(node_id, NodeItem::Typing { user_ids, notice: notice.clone() });
        }
    }
    Ok(())
}

/// Gives a notice to every session of these users on this node (from this
/// node's own typers, and from the push queue for other nodes' typers).
pub fn hand_out(sessions: &Sessions, user_ids: &[String], notice: &TypingNotice) {
    for user_id in user_ids {
        for session in sessions.of_user(user_id) {
            session.offer(SessionInput::Typing(notice.clone()));
        }
    }
}

/// Publishes queued notices, whatever has queued up since the last round in
/// one go: transient (the push queues are not durable anyway) and not
/// mandatory (a node that is gone took its connections with it). Rounds run
/// one after the other, so one typer's start and stop reach a node in order.
async fn publish_loop(broker: Broker, mut queued: mpsc::Receiver<(String, NodeItem)>) {
    let exchange = broker.topology().push();
    let mut round = Vec::new();
    while queued.recv_many(&mut round, QUEUE).await > 0 {
        let mut by_node: HashMap<String, Vec<NodeItem>> = HashMap::new();
        for (node_id, item) in round.drain(..) {
            by_node.entry(node_id).or_default().push(item);
        }
        // Typing items travel in batches of their own (see `NodeItem::Typing`).
        join_all(by_node.into_iter().map(|(node_id, items)| {
            let (broker, exchange) = (&broker, &exchange);
            async move {
                let mut items = items.into_iter().peekable();
                while items.peek().is_some() {
                    let batch = NodeBatch { items: items.by_ref().take(ITEMS_PER_MESSAGE).collect() };
                    if let Err(error) = broker.publish_json(exchange, &node_id, &batch, PublishOptions::default()).await {
                        tracing::debug!(%error, %node_id, "typing notices not published; dropped");
                        return;
                    }
                }
            }
        }))
        .await;
    }
}
