//! The measured scenarios. Each starts its own deployment, so runs do not
//! share backlogs, and reports what the clients saw plus the servers' memory and CPU.

use std::{collections::BTreeMap, time::Duration, time::Instant};

use anyhow::{Context, bail};
use serde::Serialize;

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

/// `chats` senders leave `backlog` messages for one offline user, who then connects.
pub async fn drain(services: &Services, backlog: u64, chats: usize) -> anyhow::Result<Drain> {
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

        let meter = Meter::start(&cluster);
        let started = Instant::now();
        crowd.connect(&cluster, &[reader], 1).await?;
        crowd.wait_until("the whole backlog", SETTLE, |c| c.receives.load(std::sync::atomic::Ordering::Relaxed) >= backlog).await?;
        let resources = meter.stop(&cluster);
        let tally = crowd.finish().await;
        let seconds = tally.last_receive.context("nothing received")?.duration_since(started).as_secs_f64();
        anyhow::Ok(Drain {
            backlog,
            chats,
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
