//! The measured scenarios. Each starts its own deployment, so runs do not
//! share backlogs, and reports what the clients saw plus the servers' memory and CPU.

use std::{collections::BTreeMap, time::Duration, time::Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use sqlx::Connection;

use crate::{
    cluster::{Cluster, Services, Shape},
    load::{self, Crowd, Sender},
    procstat,
};

/// How long to wait for the pipeline to deliver everything after the last send.
const SETTLE: Duration = Duration::from_secs(180);

#[derive(Debug, Serialize, Clone)]
pub struct Resources {
    pub api_peak_rss_mib: f64,
    pub worker_peak_rss_mib: f64,
    /// CPU seconds per process group during the measured part.
    pub cpu_seconds: BTreeMap<&'static str, f64>,
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

struct Meter {
    processes: procstat::Processes,
    before: procstat::CpuSample,
}

impl Meter {
    fn start(cluster: &Cluster) -> Self {
        let processes = cluster.processes();
        let before = processes.sample();
        Meter { processes, before }
    }

    fn stop(&self, cluster: &Cluster) -> Resources {
        let (api, worker) = cluster.peak_rss_kib();
        let cpu_seconds = self.processes.cpu_since(&self.before).into_iter().map(|(group, secs)| (group.name(), round2(secs))).collect();
        Resources { api_peak_rss_mib: round2(mib(api)), worker_peak_rss_mib: round2(mib(worker)), cpu_seconds }
    }
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// Which chats the load runs in.
#[derive(Debug, Clone, Copy, Serialize)]
pub enum ChatKind {
    /// `pairs` direct chats, one sender each.
    Direct { pairs: usize },
    /// `groups` groups of `members`, `senders` of whom send.
    Group { groups: usize, members: usize, senders: usize },
}

/// Users and senders of a load, with the chats created.
async fn populate(cluster: &Cluster, kind: ChatKind) -> anyhow::Result<(Vec<String>, Vec<Sender>)> {
    let mut users = Vec::new();
    let mut senders = Vec::new();
    match kind {
        ChatKind::Direct { pairs } => {
            for pair in 0..pairs {
                let (sender, recipient) = (format!("s{pair}"), format!("r{pair}"));
                let chat_id = cluster.create_chat(&sender, "direct", std::slice::from_ref(&recipient)).await?;
                senders.push(Sender { user: users.len(), chat_id, recipients: 1 });
                users.extend([sender, recipient]);
            }
        }
        ChatKind::Group { groups, members, senders: sending } => {
            for group in 0..groups {
                let names: Vec<String> = (0..members).map(|m| format!("g{group}m{m}")).collect();
                let chat_id = cluster.create_chat(&names[0], "group", &names[1..]).await?;
                let first = users.len();
                for m in 0..sending.min(members) {
                    senders.push(Sender { user: first + m, chat_id: chat_id.clone(), recipients: (members - 1) as u64 });
                }
                users.extend(names);
            }
        }
    }
    Ok((users, senders))
}

/// The members of each group who do not send, as (chat id, user): whose
/// receipts reaching the group's last seq end a group run.
fn group_receivers(kind: ChatKind, users: &[String], senders: &[Sender]) -> Vec<(String, String)> {
    let ChatKind::Group { members, senders: sending, .. } = kind else { return Vec::new() };
    // Groups are populated in order: `members` users each, the first `sending` of whom send.
    let chats: Vec<&str> = senders.iter().step_by(sending.max(1)).map(|s| s.chat_id.as_str()).collect();
    users
        .chunks(members)
        .zip(chats)
        .flat_map(|(names, chat)| names.iter().skip(sending).map(move |name| (chat.to_owned(), name.clone())))
        .collect()
}

fn senders_per_chat(kind: ChatKind) -> usize {
    match kind {
        ChatKind::Direct { .. } => 1,
        ChatKind::Group { members, senders, .. } => senders.min(members),
    }
}

#[derive(Debug, Serialize)]
pub struct Throughput {
    pub kind: ChatKind,
    pub apis: usize,
    pub workers: usize,
    pub messages: u64,
    pub deliveries: u64,
    pub seconds: f64,
    /// Stored, pushed, acknowledged by the recipient, `delivered` reported to the sender.
    pub deliveries_per_sec: f64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub resources: Resources,
}

/// Closed-loop load: every sender sends `per_sender` messages as fast as the
/// pipeline takes them; the clock stops at the last `delivered` status.
pub async fn throughput(services: &Services, shape: Shape, kind: ChatKind, per_sender: u64, window: usize) -> anyhow::Result<Throughput> {
    throughput_with(services, shape, kind, per_sender, window, &[]).await
}

/// [`throughput`] with settings for every server process (e.g. `--delivery-queues=3`).
pub async fn throughput_with(
    services: &Services,
    shape: Shape,
    kind: ChatKind,
    per_sender: u64,
    window: usize,
    server_args: &[String],
) -> anyhow::Result<Throughput> {
    let cluster = Cluster::start_with_servers(services, shape, &[], server_args).await?;
    let result = async {
        let (users, senders) = populate(&cluster, kind).await?;
        let mut crowd = Crowd::new(users);
        let everyone: Vec<usize> = (0..crowd.users.len()).collect();
        crowd.connect(&cluster, &everyone, 100).await?;
        let messages = per_sender * senders.len() as u64;
        let deliveries: u64 = senders.iter().map(|s| s.recipients * per_sender).sum();
        let meter = Meter::start(&cluster);
        let started = Instant::now();
        load::send_closed_loop(&crowd, &senders, per_sender, window).await?;
        // A direct chat's sender gets `message:status` per message; a group's,
        // a `receipt` per member whose watermark moved: the run is over when
        // every member who does not send has everything.
        let receivers = group_receivers(kind, &crowd.users, &senders);
        let final_seq = per_sender as i64 * senders_per_chat(kind) as i64;
        crowd
            .wait_until("every delivered status", SETTLE, |c| match kind {
                ChatKind::Direct { .. } => c.delivered.load(std::sync::atomic::Ordering::Relaxed) >= deliveries,
                ChatKind::Group { .. } => {
                    let highs = c.receipts.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    receivers.iter().all(|member| highs.get(member).is_some_and(|&seq| seq >= final_seq))
                }
            })
            .await?;
        let resources = meter.stop(&cluster);
        let tally = crowd.finish().await;
        let last = match kind {
            ChatKind::Direct { .. } => tally.last_delivered,
            ChatKind::Group { .. } => tally.last_receipt,
        }
        .context("no delivery")?;
        let seconds = last.duration_since(started).as_secs_f64();
        anyhow::Ok(Throughput {
            kind,
            apis: shape.apis,
            workers: shape.workers,
            messages,
            deliveries,
            seconds: round2(seconds),
            deliveries_per_sec: round2(deliveries as f64 / seconds),
            duplicates: tally.duplicates,
            out_of_order: tally.out_of_order,
            resources,
        })
    }
    .await;
    cluster.stop().await;
    result
}

#[derive(Debug, Serialize)]
pub struct Mixed {
    pub pairs: usize,
    /// Actions per sender (sends, reactions, edits, deletes).
    pub per_sender: u64,
    /// Actions in flight per sender.
    pub window: usize,
    /// What the senders did, from the server's replies.
    pub done: load::MixedDone,
    /// Log entries × recipients: every one must reach the recipient and be acknowledged.
    pub deliveries: u64,
    /// Entries received, every kind, and of them each kind but messages.
    pub received: u64,
    pub received_edited: u64,
    pub received_deleted: u64,
    pub received_reactions: u64,
    /// `typing` indicators the recipients were shown.
    pub typing_shown: u64,
    /// First action → the later of the last entry received and the last `delivered` status.
    pub seconds: f64,
    pub deliveries_per_sec: f64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// Edits, deletes and reactions that reached a device before their message.
    pub before_their_message: u64,
    pub resources: Resources,
}

/// The server's typing limit in the mixed run, passed to the API node so
/// the load and the server agree (the defaults: 10 per 5 s).
const TYPING_LIMIT: load::TypingLimit = load::TypingLimit { events: 10, window: Duration::from_secs(5) };

/// The direct-chat load of [`throughput`] with edits, deletes, reactions and
/// typing among the sends (see [`load::mixed_closed_loop`]): each pair's
/// first user acts `per_sender` times, `window` in flight; every entry is a
/// delivery the recipient must receive, in seq order, and acknowledge, and
/// every sent message must come back to its sender as `delivered`.
pub async fn mixed(services: &Services, pairs: usize, per_sender: u64, window: usize) -> anyhow::Result<Mixed> {
    let typing_args = [format!("--typing-rate-limit={}", TYPING_LIMIT.events), format!("--typing-rate-window={}ms", TYPING_LIMIT.window.as_millis())];
    let cluster = Cluster::start_with(services, Shape::SOLO, &typing_args).await?;
    let result = async {
        let (users, senders) = populate(&cluster, ChatKind::Direct { pairs }).await?;
        let mut crowd = Crowd::new(users);
        let everyone: Vec<usize> = (0..crowd.users.len()).collect();
        crowd.connect(&cluster, &everyone, 100).await?;
        let meter = Meter::start(&cluster);
        let started = Instant::now();
        let done = load::mixed_closed_loop(&crowd, &senders, per_sender, window, TYPING_LIMIT).await?;
        // One recipient per direct chat; the sender's only device passes over its own entries.
        let deliveries = done.entries();
        let sends = done.sends;
        crowd
            .wait_until("every entry received and every delivered status", SETTLE, |c| {
                c.receives.load(std::sync::atomic::Ordering::Relaxed) >= deliveries && c.delivered.load(std::sync::atomic::Ordering::Relaxed) >= sends
            })
            .await?;
        let resources = meter.stop(&cluster);
        let tally = crowd.finish().await;
        let last = tally.last_receive.into_iter().chain(tally.last_delivered).max().context("no delivery")?;
        let seconds = last.duration_since(started).as_secs_f64();
        anyhow::Ok(Mixed {
            pairs,
            per_sender,
            window,
            deliveries,
            received: tally.receives,
            received_edited: tally.edited,
            received_deleted: tally.deleted,
            received_reactions: tally.reactions,
            typing_shown: tally.typing,
            seconds: round2(seconds),
            deliveries_per_sec: round2(deliveries as f64 / seconds),
            duplicates: tally.duplicates,
            out_of_order: tally.out_of_order,
            before_their_message: tally.before_their_message,
            done,
            resources,
        })
    }
    .await;
    cluster.stop().await;
    result
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub offered_per_sec: f64,
    /// Whether the API node set TCP_NODELAY on client sockets.
    pub tcp_nodelay: bool,
    pub sent: u64,
    pub received: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub resources: Resources,
}

/// Open-loop load at `rate` msg/s over `pairs` direct chats for `duration`;
/// latency is send call → `message:receive` at the recipient.
pub async fn latency(services: &Services, pairs: usize, rate: f64, duration: Duration, tcp_nodelay: bool) -> anyhow::Result<Latency> {
    let cluster = Cluster::start_with(services, Shape::SOLO, &[format!("--tcp-nodelay={tcp_nodelay}")]).await?;
    let result = async {
        let (users, senders) = populate(&cluster, ChatKind::Direct { pairs }).await?;
        let mut crowd = Crowd::new(users);
        let everyone: Vec<usize> = (0..crowd.users.len()).collect();
        crowd.connect(&cluster, &everyone, 100).await?;
        let meter = Meter::start(&cluster);
        let sent = load::send_paced(&crowd, &senders, rate, duration).await?;
        crowd.wait_until("every message received", SETTLE, |c| c.receives.load(std::sync::atomic::Ordering::Relaxed) >= sent).await?;
        let resources = meter.stop(&cluster);
        let mut tally = crowd.finish().await;
        tally.latencies_us.sort_unstable();
        let ms = |us: u64| round2(us as f64 / 1000.0);
        let sorted = &tally.latencies_us;
        anyhow::Ok(Latency {
            offered_per_sec: round2(rate),
            tcp_nodelay,
            sent,
            received: tally.receives,
            p50_ms: ms(load::percentile(sorted, 50.0)),
            p95_ms: ms(load::percentile(sorted, 95.0)),
            p99_ms: ms(load::percentile(sorted, 99.0)),
            max_ms: ms(sorted.last().copied().unwrap_or(0)),
            duplicates: tally.duplicates,
            out_of_order: tally.out_of_order,
            resources,
        })
    }
    .await;
    cluster.stop().await;
    result
}

#[derive(Debug, Serialize)]
pub struct Answers {
    /// Whether the API node set TCP_NODELAY on client sockets.
    pub tcp_nodelay: bool,
    pub rounds: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// One client sends `message:send` and waits for its answer before the next,
/// `rounds` times, its recipient online: the time of one answer. The server
/// writes the answer and `message:sent` back to back, which is where a
/// missing TCP_NODELAY shows (the second write waits for a delayed ACK).
pub async fn answers(services: &Services, rounds: usize, tcp_nodelay: bool) -> anyhow::Result<Answers> {
    let cluster = Cluster::start_with(services, Shape::SOLO, &[format!("--tcp-nodelay={tcp_nodelay}")]).await?;
    let result = async {
        let (users, senders) = populate(&cluster, ChatKind::Direct { pairs: 1 }).await?;
        let mut crowd = Crowd::new(users);
        crowd.connect(&cluster, &[0, 1], 2).await?;
        let sender = &senders[0];
        let conn = crowd.conns[sender.user].clone().context("sender connected")?;
        let mut times_us = Vec::with_capacity(rounds);
        for round in 0..rounds {
            let started = Instant::now();
            conn.send_message(&sender.chat_id, format!("answer {round}"), format!("answer-{round}")).await?;
            times_us.push(started.elapsed().as_micros() as u64);
        }
        crowd.finish().await;
        times_us.sort_unstable();
        let ms = |us: u64| round2(us as f64 / 1000.0);
        anyhow::Ok(Answers {
            tcp_nodelay,
            rounds,
            p50_ms: ms(load::percentile(&times_us, 50.0)),
            p99_ms: ms(load::percentile(&times_us, 99.0)),
            max_ms: ms(times_us.last().copied().unwrap_or(0)),
        })
    }
    .await;
    cluster.stop().await;
    result
}

#[derive(Debug, Serialize)]
pub struct Drain {
    pub backlog: u64,
    pub chats: usize,
    /// Whether the senders stayed connected through the drain (each drained
    /// message is then a ✓✓ pushed to its sender) or had gone offline (their
    /// statuses wait for their next connect).
    pub senders_online: bool,
    /// Seconds from the recipient's connect to its last `message:receive`.
    pub seconds: f64,
    pub per_sec: f64,
    pub received: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// Seconds to store the backlog (not part of the drain).
    pub fill_seconds: f64,
    pub resources: Resources,
}

/// `chats` senders leave `backlog` messages for one offline user, who then
/// connects; unless `senders_online`, the senders disconnect first.
pub async fn drain(services: &Services, backlog: u64, chats: usize, senders_online: bool) -> anyhow::Result<Drain> {
    let cluster = Cluster::start(services, Shape::SOLO).await?;
    let result = async {
        let (mut users, mut senders) = (Vec::new(), Vec::new());
        for chat in 0..chats {
            let sender = format!("s{chat}");
            let chat_id = cluster.create_chat(&sender, "direct", &["reader".to_owned()]).await?;
            senders.push(Sender { user: users.len(), chat_id, recipients: 1 });
            users.push(sender);
        }
        let reader = users.len();
        users.push("reader".into());
        let mut crowd = Crowd::new(users);
        let sender_indexes: Vec<usize> = (0..reader).collect();
        crowd.connect(&cluster, &sender_indexes, 100).await?;
        let filling = Instant::now();
        load::send_closed_loop(&crowd, &senders, backlog / chats as u64, 64).await?;
        let fill_seconds = filling.elapsed().as_secs_f64();
        let backlog = backlog / chats as u64 * chats as u64;
        if !senders_online {
            crowd.disconnect(&sender_indexes);
            wait_offline(&cluster, &crowd.users[..reader]).await?;
        }

        let meter = Meter::start(&cluster);
        let started = Instant::now();
        crowd.connect(&cluster, &[reader], 1).await?;
        // A million-message drain takes minutes at the rates measured so far.
        let patience = SETTLE + Duration::from_secs(backlog / 5_000);
        crowd.wait_until("the whole backlog", patience, |c| c.receives.load(std::sync::atomic::Ordering::Relaxed) >= backlog).await?;
        let resources = meter.stop(&cluster);
        let tally = crowd.finish().await;
        let seconds = tally.last_receive.context("nothing received")?.duration_since(started).as_secs_f64();
        anyhow::Ok(Drain {
            backlog,
            chats,
            senders_online,
            seconds: round2(seconds),
            per_sec: round2(backlog as f64 / seconds),
            received: tally.receives,
            duplicates: tally.duplicates,
            out_of_order: tally.out_of_order,
            fill_seconds: round2(fill_seconds),
            resources,
        })
    }
    .await;
    cluster.stop().await;
    result
}

/// Waits until the API has dropped every connection of these users (their
/// presence rows are gone), so no status is pushed to them any more.
async fn wait_offline(cluster: &Cluster, users: &[String]) -> anyhow::Result<()> {
    let mut db = sqlx::PgConnection::connect(&cluster.database_url).await?;
    let deadline = Instant::now() + SETTLE;
    loop {
        let online: i64 = sqlx::query_scalar("SELECT count(*) FROM connections WHERE user_id = ANY($1)").bind(users).fetch_one(&mut db).await?;
        if online == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{online} sender connections still present {SETTLE:?} after closing them");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[derive(Debug, Serialize)]
pub struct Connections {
    pub connections: usize,
    pub connect_seconds: f64,
    pub connects_per_sec: f64,
    pub api_rss_before_mib: f64,
    pub api_rss_after_mib: f64,
    pub kib_per_connection: f64,
    pub resources: Resources,
}

/// `count` users connect and stay idle; memory of the API node before and after.
pub async fn connections(services: &Services, count: usize) -> anyhow::Result<Connections> {
    let cluster = Cluster::start(services, Shape::SOLO).await?;
    let result = async {
        let users: Vec<String> = (0..count).map(|i| format!("idle{i}")).collect();
        let mut crowd = Crowd::new(users);
        let api_pid = *cluster.processes().api.first().context("api pid")?;
        // One connection first, so one-off allocations (pools, buffers) are not charged per connection.
        crowd.connect(&cluster, &[0], 1).await?;
        crowd.wait_until("the first sync:done", SETTLE, |c| c.sync_done.load(std::sync::atomic::Ordering::Relaxed) >= 1).await?;
        let before = procstat::rss_kib(api_pid);
        let meter = Meter::start(&cluster);
        let rest: Vec<usize> = (1..count).collect();
        let connect_time = crowd.connect(&cluster, &rest, 200).await?;
        // Every session is fully set up (presence stored, backlog checked) once it got sync:done.
        crowd.wait_until("sync:done on every connection", SETTLE, |c| c.sync_done.load(std::sync::atomic::Ordering::Relaxed) >= count as u64).await?;
        let after = procstat::rss_kib(api_pid);
        let resources = meter.stop(&cluster);
        let closed = crowd.counters.closed.load(std::sync::atomic::Ordering::Relaxed);
        crowd.finish().await;
        if closed > 0 {
            bail!("{closed} idle connections were closed by the server");
        }
        let added = (count - 1) as f64;
        anyhow::Ok(Connections {
            connections: count,
            connect_seconds: round2(connect_time.as_secs_f64()),
            connects_per_sec: round2(added / connect_time.as_secs_f64()),
            api_rss_before_mib: round2(mib(before)),
            api_rss_after_mib: round2(mib(after)),
            kib_per_connection: round2(after.saturating_sub(before) as f64 / added),
            resources,
        })
    }
    .await;
    cluster.stop().await;
    result
}

#[derive(Debug, Serialize)]
pub struct SendPhase {
    pub chats: usize,
    pub messages: u64,
    /// First send → last answer.
    pub send_seconds: f64,
    pub sends_per_sec: f64,
    /// `message:send` call → its reply, under this load.
    pub answer_p50_ms: f64,
    pub answer_p99_ms: f64,
    /// `message:receive`s: every member but the sender gets every message.
    pub deliveries: u64,
    /// First send → the last member has every message (polled every 5 ms).
    pub delivered_seconds: f64,
    pub resources: Resources,
}

#[derive(Debug, Serialize)]
pub struct OneChat {
    /// Sending connections: this many users, one connection (default device) each.
    pub senders: usize,
    pub per_sender: u64,
    /// Sends in flight per connection, as in the other closed-loop runs.
    pub window: usize,
    /// Every sender sends into the same group.
    pub one_chat: SendPhase,
    /// Each sender sends into a group of its own with the same members.
    pub own_chats: SendPhase,
    /// `one_chat.sends_per_sec / own_chats.sends_per_sec`.
    pub share: f64,
    /// Over both phases.
    pub duplicates: u64,
    pub out_of_order: u64,
}

/// What one chat costs when many connections send into it: `senders` users
/// send closed-loop into one group of all of them, then (same connections,
/// same deployment) each into a group of its own with the same members, so
/// the fan-out (`senders - 1` per message) and the connections are equal and
/// only the number of chats differs. Every member is online and acknowledges.
/// A short warm-up (`window` messages per connection, own chats) comes first.
pub async fn onechat(services: &Services, senders: usize, per_sender: u64, window: usize) -> anyhow::Result<OneChat> {
    let cluster = Cluster::start(services, Shape::SOLO).await?;
    let result = async {
        let users: Vec<String> = (0..senders).map(|i| format!("oc{i}")).collect();
        let others = |me: usize| users.iter().enumerate().filter(|(i, _)| *i != me).map(|(_, name)| name.clone()).collect::<Vec<_>>();
        let shared_chat = cluster.create_chat(&users[0], "group", &others(0)).await?;
        let mut own_chats = Vec::with_capacity(senders);
        for (me, user) in users.iter().enumerate() {
            own_chats.push(cluster.create_chat(user, "group", &others(me)).await?);
        }
        let recipients = (senders - 1) as u64;
        let into_one: Vec<Sender> = (0..senders).map(|user| Sender { user, chat_id: shared_chat.clone(), recipients }).collect();
        let into_own: Vec<Sender> = (0..senders).map(|user| Sender { user, chat_id: own_chats[user].clone(), recipients }).collect();
        let mut crowd = Crowd::new(users.clone());
        let everyone: Vec<usize> = (0..senders).collect();
        crowd.connect(&cluster, &everyone, 100).await?;
        // Warm pools and plan caches first, so the phase that runs first is not
        // the one that pays for them.
        load::send_closed_loop(&crowd, &into_own, window as u64, window).await?;
        let mut received_before = window as u64 * senders as u64 * recipients;
        crowd.wait_until("the warm-up", SETTLE, |c| c.receives.load(std::sync::atomic::Ordering::Relaxed) >= received_before).await?;

        let mut phases = Vec::new();
        for (chats, load) in [(1, &into_one), (senders, &into_own)] {
            let messages = per_sender * senders as u64;
            let deliveries = messages * recipients;
            let meter = Meter::start(&cluster);
            let started = Instant::now();
            let mut answers_us = load::send_closed_loop(&crowd, load, per_sender, window).await?;
            let send_seconds = started.elapsed().as_secs_f64();
            let all_in = received_before + deliveries;
            crowd.wait_until("every member has every message", SETTLE, |c| c.receives.load(std::sync::atomic::Ordering::Relaxed) >= all_in).await?;
            let delivered_seconds = started.elapsed().as_secs_f64();
            received_before = all_in;
            answers_us.sort_unstable();
            let ms = |us: u64| round2(us as f64 / 1000.0);
            phases.push(SendPhase {
                chats,
                messages,
                send_seconds: round2(send_seconds),
                sends_per_sec: round2(messages as f64 / send_seconds),
                answer_p50_ms: ms(load::percentile(&answers_us, 50.0)),
                answer_p99_ms: ms(load::percentile(&answers_us, 99.0)),
                deliveries,
                delivered_seconds: round2(delivered_seconds),
                resources: meter.stop(&cluster),
            });
        }
        let tally = crowd.finish().await;
        let own_chats = phases.pop().context("own-chats phase")?;
        let one_chat = phases.pop().context("one-chat phase")?;
        anyhow::Ok(OneChat {
            senders,
            per_sender,
            window,
            share: round2(one_chat.sends_per_sec / own_chats.sends_per_sec.max(f64::MIN_POSITIVE)),
            one_chat,
            own_chats,
            duplicates: tally.duplicates,
            out_of_order: tally.out_of_order,
        })
    }
    .await;
    cluster.stop().await;
    result
}

#[derive(Debug, Serialize)]
pub struct Devices {
    pub pairs: usize,
    pub devices_per_user: usize,
    pub messages: u64,
    /// Every device of the recipient gets every message: messages × devices.
    pub device_deliveries: u64,
    /// The sender's other devices get its own messages too: messages × (devices − 1), counted apart.
    pub own_copies: u64,
    /// `message:receive`s seen, both kinds (must equal the two above).
    pub received: u64,
    /// First send → the later of the last `message:receive` on any device and
    /// the last `delivered` status at a sending device.
    pub seconds: f64,
    pub device_deliveries_per_sec: f64,
    /// Device deliveries and own copies together.
    pub receives_per_sec: f64,
    pub messages_per_sec: f64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub resources: Resources,
}

/// Direct chats where both users have `devices` devices, all online (each
/// connects with `/ws?deviceId=d1…`); device `d1` of each pair's first user
/// sends closed-loop. Every device of the recipient must receive and
/// acknowledge each message, and the sender's other devices receive its own.
pub async fn devices(services: &Services, pairs: usize, devices: usize, per_sender: u64, window: usize) -> anyhow::Result<Devices> {
    let cluster = Cluster::start(services, Shape::SOLO).await?;
    let result = async {
        let (mut users, mut device_ids, mut senders) = (Vec::new(), Vec::new(), Vec::new());
        for pair in 0..pairs {
            let (sender, recipient) = (format!("s{pair}"), format!("r{pair}"));
            let chat_id = cluster.create_chat(&sender, "direct", std::slice::from_ref(&recipient)).await?;
            // The first connection of the pair is the sender's device d1.
            senders.push(Sender { user: users.len(), chat_id, recipients: devices as u64 });
            for user in [&sender, &recipient] {
                for device in 1..=devices {
                    users.push(user.clone());
                    device_ids.push(Some(format!("d{device}")));
                }
            }
        }
        let mut crowd = Crowd::on_devices(users, device_ids);
        let everyone: Vec<usize> = (0..crowd.users.len()).collect();
        crowd.connect(&cluster, &everyone, 100).await?;
        let messages = per_sender * pairs as u64;
        let device_deliveries = messages * devices as u64;
        let own_copies = messages * (devices as u64 - 1);
        let sending: Vec<usize> = senders.iter().map(|s| s.user).collect();
        let meter = Meter::start(&cluster);
        let started = Instant::now();
        load::send_closed_loop(&crowd, &senders, per_sender, window).await?;
        crowd
            .wait_until("every device has every message, every sender every delivered", SETTLE, |c| {
                let told = c.delivered_by_conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                c.receives.load(std::sync::atomic::Ordering::Relaxed) >= device_deliveries + own_copies
                    && sending.iter().all(|conn| told.get(conn).is_some_and(|&n| n >= per_sender))
            })
            .await?;
        let resources = meter.stop(&cluster);
        let tally = crowd.finish().await;
        let last_told = sending.iter().filter_map(|conn| tally.last_delivered_by_conn.get(conn)).max().copied();
        let last = tally.last_receive.into_iter().chain(last_told).max().context("no delivery")?;
        let seconds = last.duration_since(started).as_secs_f64();
        anyhow::Ok(Devices {
            pairs,
            devices_per_user: devices,
            messages,
            device_deliveries,
            own_copies,
            received: tally.receives,
            seconds: round2(seconds),
            device_deliveries_per_sec: round2(device_deliveries as f64 / seconds),
            receives_per_sec: round2((device_deliveries + own_copies) as f64 / seconds),
            messages_per_sec: round2(messages as f64 / seconds),
            duplicates: tally.duplicates,
            out_of_order: tally.out_of_order,
            resources,
        })
    }
    .await;
    cluster.stop().await;
    result
}
