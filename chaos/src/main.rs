//! `courier-chaos`: a seeded, reproducible chaos run. It boots a private
//! deployment (its own PostgreSQL and RabbitMQ, two API nodes, two workers),
//! runs simulated users (two devices each: sending, and now and then editing,
//! deleting and reacting) for `--seconds` while the schedule of `--seed`
//! kills and restarts things under them, lets everything heal and settle,
//! and then judges the run from the clients' recorded histories (checker.rs)
//! and, for every device's final view of every message it has seen, the
//! server's messages and reactions read at the end.
//! A failing run keeps its folder: histories, schedule, faults, server logs.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use clap::Parser;
use courier_chaos::{
    checker::{self, Rules, Verdict},
    client::{self, Phase, Recorder, World},
    deployment::{self, Broker, Deployment},
    history::{AppliedFault, Chats, ServerState},
    schedule::{self, DEVICE_NAMES, Fault, Planned, Shape},
};
use courier_tests::{PrivateRabbitCluster, Rest};
use tokio::sync::{Mutex, watch};

#[derive(Debug, Parser)]
#[command(name = "courier-chaos", about = "Randomized fault schedules against a private Courier, judged by a history checker")]
struct Args {
    /// Seed of the fault schedule and of the clients' choices (random when absent; always printed).
    #[arg(long)]
    seed: Option<u64>,
    /// How long the clients talk while faults are injected.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Simulated users (each in two direct chats and one group, each with two devices).
    #[arg(long, default_value_t = 8)]
    users: usize,
    /// Longest pause of a device between two requests (uniform from 0), in
    /// milliseconds: a send, or an edit, delete or reaction (client.rs, ACTION_MIX).
    #[arg(long, default_value_t = 500)]
    send_gap_ms: u64,
    /// Mean time between two faults, in milliseconds.
    #[arg(long, default_value_t = 3_000)]
    mean_gap_ms: u64,
    /// How long the settle phase may take for every answered send to arrive and every ✓✓ to be seen.
    #[arg(long, default_value_t = 120)]
    settle_seconds: u64,
    /// Where the run's folder goes (histories, logs); kept on failure, removed on success unless --keep.
    #[arg(long, default_value = "/tmp")]
    out_dir: PathBuf,
    /// Keep the run's folder even when the run passes.
    #[arg(long)]
    keep: bool,
    /// Run against a 3-node RabbitMQ cluster (every durable queue quorum); the
    /// schedule then kills the delivery queue's leader and stops single nodes.
    #[arg(long)]
    cluster: bool,
    /// Print the schedule of `--seed` and `--seconds` and exit.
    #[arg(long)]
    plan_only: bool,
    /// Judge the kept run folder FOLDER again (its chats.json, history.jsonl,
    /// faults.json and server.json) with this build's checker, and exit;
    /// nothing is booted.
    #[arg(long, value_name = "FOLDER")]
    rejudge: Option<PathBuf>,
}

const APIS: usize = 2;
const WORKERS: usize = 2;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(folder) = &args.rejudge {
        let passed = rejudge(folder)?;
        if !passed {
            std::process::exit(1);
        }
        return Ok(());
    }
    let seed = args.seed.unwrap_or_else(|| uuid::Uuid::now_v7().as_u128() as u64 % 1_000_000);
    let broker_nodes = if args.cluster { 3 } else { 0 };
    let shape = Shape { apis: APIS, workers: WORKERS, users: args.users, devices: DEVICE_NAMES.len(), broker_nodes, mean_gap_ms: args.mean_gap_ms };
    let plan = schedule::plan(seed, args.seconds, shape);
    let cluster_flag = if args.cluster { " --cluster" } else { "" };
    println!("courier-chaos --seed {seed} --seconds {} --users {} --mean-gap-ms {}{cluster_flag}", args.seconds, args.users, args.mean_gap_ms);
    println!("schedule ({} faults):", plan.len());
    for planned in &plan {
        println!("  {:>7} ms  {}", planned.at_ms, planned.fault);
    }
    if args.plan_only {
        return Ok(());
    }

    let folder = args.out_dir.join(format!("courier-chaos-{seed}-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&folder)?;
    let outcome = run(&args, seed, &plan, &folder).await;
    let passed = match &outcome {
        Ok(passed) => *passed,
        Err(error) => {
            println!("the run could not complete: {error:#}");
            false
        }
    };
    if passed && !args.keep {
        let _ = std::fs::remove_dir_all(&folder);
    } else {
        println!("run folder (histories, schedule, faults, server logs): {}", folder.display());
        let cluster_flag = if args.cluster { " --cluster" } else { "" };
        println!("rerun: courier-chaos --seed {seed} --seconds {} --users {} --mean-gap-ms {}{cluster_flag}", args.seconds, args.users, args.mean_gap_ms);
    }
    if !passed {
        std::process::exit(1);
    }
    Ok(())
}

/// Boots, runs, settles, judges. `Ok(passed)`.
async fn run(args: &Args, seed: u64, plan: &[Planned], folder: &std::path::Path) -> anyhow::Result<bool> {
    let broker_nodes = if args.cluster { 3 } else { 0 };
    eprintln!("booting a private PostgreSQL, RabbitMQ ({}), {APIS} API nodes and {WORKERS} workers", if args.cluster { "3-node cluster" } else { "one node" });
    let deployment = Deployment::start(APIS, WORKERS, broker_nodes, &folder.join("logs")).await?;
    let users: Vec<String> = (0..args.users).map(|i| format!("u{i}")).collect();
    let chats = create_chats(&deployment, &users).await?;
    std::fs::write(folder.join("chats.json"), serde_json::to_string_pretty(&chats)?)?;
    std::fs::write(folder.join("schedule.json"), serde_json::to_string_pretty(plan)?)?;

    let recorder = Arc::new(Recorder::new());
    let (phase_tx, phase) = watch::channel(Phase::Running);
    let (storm_tx, storms) = watch::channel(0u64);
    let chats_of = users.iter().map(|user| chats.iter().filter(|(_, m)| m.contains(user)).map(|(id, _)| id.clone()).collect()).collect();
    let world = Arc::new(World {
        recorder: recorder.clone(),
        nodes: (0..APIS).map(|i| deployment.api_addr(i).to_owned()).collect(),
        tokens: users.iter().map(|user| deployment.env.token(user)).collect(),
        devices: (0..users.len()).map(|user| (0..DEVICE_NAMES.len()).map(|device| schedule::device_id(user, device)).collect()).collect(),
        users: users.clone(),
        http: reqwest::Client::new(),
        chats_of,
        phase,
        storms,
        send_gap_ms: args.send_gap_ms,
    });
    // Every device connects once before anything is sent: a device seen for
    // the first time starts at its user's delivered watermark, which the
    // checker would otherwise have to guess.
    for user in 0..users.len() {
        for device in 0..DEVICE_NAMES.len() {
            let mut tries = 0;
            while let Err(error) = client::register_device(&world, user, device).await {
                tries += 1;
                if tries == 3 {
                    return Err(error.context("creating the devices before the run"));
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    // One online switch per device.
    let online: Vec<Vec<watch::Sender<bool>>> =
        users.iter().map(|_| DEVICE_NAMES.iter().map(|_| watch::channel(true).0).collect()).collect();
    let mut clients = tokio::task::JoinSet::new();
    for (index, switches) in online.iter().enumerate() {
        for (device, switch) in switches.iter().enumerate() {
            clients.spawn(client::run_device(world.clone(), index, device, seed, switch.subscribe()));
        }
    }

    // The faults, each applied on its own task at its time (they may overlap).
    let deployment = Arc::new(Mutex::new(deployment));
    let applied = Arc::new(std::sync::Mutex::new(Vec::<AppliedFault>::new()));
    let injector = Injector { deployment: deployment.clone(), world: world.clone(), online: online.clone(), storms: storm_tx, applied: applied.clone(), busy: Arc::default(), seed };
    let mut faults = tokio::task::JoinSet::new();
    for planned in plan.iter().cloned() {
        let injector = injector.clone();
        faults.spawn(async move {
            let due = Duration::from_millis(planned.at_ms.saturating_sub(injector.world.recorder.now_ms()));
            tokio::time::sleep(due).await;
            injector.apply(planned.fault).await;
        });
    }
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;

    // Heal: every fault finished (each restores what it broke), everything up, everyone online.
    eprintln!("healing and settling (at most {} s)", args.settle_seconds);
    let _ = phase_tx.send(Phase::Settling);
    while faults.join_next().await.is_some() {}
    {
        let mut guard = deployment.lock().await;
        let deployment = &mut *guard;
        for server in deployment.apis.iter_mut().chain(deployment.workers.iter_mut()) {
            server.ensure_up()?;
        }
    }
    for switch in online.iter().flatten() {
        let _ = switch.send(true);
    }
    let rules = Rules::default();
    let settle_until = tokio::time::Instant::now() + Duration::from_secs(args.settle_seconds);
    let mut verdict = checker::check(&recorder.snapshot(), &chats, None, &rules);
    while !settled(&verdict) && tokio::time::Instant::now() < settle_until {
        tokio::time::sleep(Duration::from_millis(500)).await;
        verdict = checker::check(&recorder.snapshot(), &chats, None, &rules);
    }
    let _ = phase_tx.send(Phase::Stopping);
    while clients.join_next().await.is_some() {}
    // The truth the devices' final views must match: nothing changes it any
    // more (every client has stopped; the servers have nothing left to write).
    let server = deployment.lock().await.server_state().await;
    deployment.lock().await.stop().await;
    let server = server.context("reading the server's messages and reactions at the end")?;

    let events = recorder.snapshot();
    let verdict = checker::check(&events, &chats, Some(&server), &rules);
    let applied = applied.lock().map(|a| a.clone()).unwrap_or_default();
    std::fs::write(folder.join("server.json"), serde_json::to_string(&server)?)?;
    save(folder, &events, &applied, &verdict)?;
    println!("{}", verdict.report(&applied));
    if let Some(context) = verdict.first_violation_context(&events, &applied) {
        println!("first violation:\n{context}");
    }
    Ok(verdict.passed())
}

/// Judges a kept run folder again; `Ok(passed)`.
fn rejudge(folder: &std::path::Path) -> anyhow::Result<bool> {
    let read = |name: &str| std::fs::read_to_string(folder.join(name)).with_context(|| format!("{}", folder.join(name).display()));
    let chats: Chats = serde_json::from_str(&read("chats.json")?)?;
    let faults: Vec<AppliedFault> = serde_json::from_str(&read("faults.json")?)?;
    let events = read("history.jsonl")?
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<Vec<courier_chaos::history::Event>, _>>()?;
    // Folders of runs before the final views have no server.json: judged without them.
    let server: Option<ServerState> = match std::fs::read_to_string(folder.join("server.json")) {
        Ok(text) => Some(serde_json::from_str(&text).context("server.json")?),
        Err(_) => None,
    };
    let verdict = checker::check(&events, &chats, server.as_ref(), &Rules::default());
    println!("{}", verdict.report(&faults));
    if let Some(context) = verdict.first_violation_context(&events, &faults) {
        println!("first violation:\n{context}");
    }
    Ok(verdict.passed())
}

/// Everything that can still arrive has: every answered send is received by
/// every device of every member (but the one that sent it), every ack's ✓✓
/// reached its sender, no send is left unanswered, and every device is
/// connected and through its catch-up (`sync:done`).
fn settled(verdict: &Verdict) -> bool {
    verdict.is_settled()
}

/// Direct chats between neighbours (u0–u1, u1–u2, …, ring) and groups of four.
async fn create_chats(deployment: &Deployment, users: &[String]) -> anyhow::Result<Chats> {
    let mut chats = Chats::new();
    let n = users.len();
    let mut create = async |creator: &str, kind: &str, others: Vec<String>| -> anyhow::Result<()> {
        let rest = Rest::new(deployment.api_addr(0), Some(&deployment.env.token(creator)));
        let refs: Vec<&str> = others.iter().map(String::as_str).collect();
        let id = rest.create_chat(kind, &refs).await;
        let mut members = others;
        members.push(creator.to_owned());
        members.sort();
        chats.insert(id, members);
        anyhow::Ok(())
    };
    for i in 0..n {
        let j = (i + 1) % n;
        if i < j || n > 2 {
            create(&users[i], "direct", vec![users[j].clone()]).await?;
        }
    }
    for group in users.chunks(4).filter(|g| g.len() >= 3) {
        create(&group[0], "group", group[1..].to_vec()).await?;
    }
    Ok(chats)
}

fn save(folder: &std::path::Path, events: &[courier_chaos::history::Event], applied: &[AppliedFault], verdict: &Verdict) -> anyhow::Result<()> {
    let mut lines = String::new();
    for event in events {
        lines.push_str(&serde_json::to_string(event)?);
        lines.push('\n');
    }
    std::fs::write(folder.join("history.jsonl"), lines)?;
    std::fs::write(folder.join("faults.json"), serde_json::to_string_pretty(applied)?)?;
    std::fs::write(folder.join("verdict.json"), serde_json::to_string_pretty(verdict)?)?;
    std::fs::write(folder.join("report.txt"), verdict.report(applied)).context("report")?;
    Ok(())
}

/// Applies faults; remembers which targets are down so overlapping faults on
/// one target are skipped rather than stacked.
#[derive(Clone)]
struct Injector {
    deployment: Arc<Mutex<Deployment>>,
    world: Arc<World>,
    /// Per user, per device.
    online: Vec<Vec<watch::Sender<bool>>>,
    storms: watch::Sender<u64>,
    applied: Arc<std::sync::Mutex<Vec<AppliedFault>>>,
    busy: Arc<std::sync::Mutex<BTreeMap<String, ()>>>,
    seed: u64,
}

impl Injector {
    fn note(&self, fault: &Fault, detail: String) {
        let at_ms = self.world.recorder.now_ms();
        eprintln!("{at_ms:>7} ms  {detail}");
        if let Ok(mut applied) = self.applied.lock() {
            applied.push(AppliedFault { at_ms, kind: fault.name().to_owned(), detail });
        }
    }

    /// Claims a target for the length of a fault; `None` if another fault holds it.
    fn claim(&self, target: &str) -> Option<Claim> {
        let mut busy = self.busy.lock().ok()?;
        if busy.contains_key(target) {
            return None;
        }
        busy.insert(target.to_owned(), ());
        Some(Claim { busy: self.busy.clone(), target: target.to_owned() })
    }

    async fn apply(&self, fault: Fault) {
        let target = match &fault {
            Fault::KillApi { node, .. } | Fault::TermApi { node, .. } => format!("api-{node}"),
            Fault::KillWorker { worker, .. } => format!("worker-{worker}"),
            Fault::StopBroker { .. } => "rabbitmq".into(),
            // Which node leads is only known when the fault fires. One broker node
            // down at a time: a 3-node cluster is built to tolerate one; two down
            // is an outage (the single-node runs cover those), not a failover.
            Fault::KillBrokerLeader { .. } | Fault::StopBrokerNode { .. } => "rabbitmq-node".into(),
            Fault::RestartPostgres => "postgres".into(),
            Fault::ReconnectStorm => "storm".into(),
            Fault::ClientOffline { user, device, .. } => schedule::device_id(*user, *device),
            Fault::SecondConnection { user, device, .. } => format!("{}-second", schedule::device_id(*user, *device)),
        };
        let Some(_claim) = self.claim(&target) else {
            eprintln!("{:>7} ms  skipped (target busy): {fault}", self.world.recorder.now_ms());
            return;
        };
        // The leader kill says which node it hit once it knows.
        if !matches!(fault, Fault::KillBrokerLeader { .. }) {
            self.note(&fault, fault.to_string());
        }
        match fault {
            Fault::KillApi { node, back_after_ms } => {
                self.deployment.lock().await.apis[node].kill().await;
                tokio::time::sleep(Duration::from_millis(back_after_ms)).await;
                self.restart(|d| &mut d.apis[node]).await;
            }
            Fault::KillWorker { worker, back_after_ms } => {
                self.deployment.lock().await.workers[worker].kill().await;
                tokio::time::sleep(Duration::from_millis(back_after_ms)).await;
                self.restart(|d| &mut d.workers[worker]).await;
            }
            Fault::TermApi { node, back_after_ms } => {
                // Out of the deployment's lock while it drains (up to its grace period).
                let child = self.deployment.lock().await.apis[node].take_child();
                if let Some(child) = child {
                    deployment::terminate(child, Duration::from_secs(20)).await;
                }
                tokio::time::sleep(Duration::from_millis(back_after_ms)).await;
                self.restart(|d| &mut d.apis[node]).await;
            }
            Fault::StopBroker { for_ms } => {
                // Not under the deployment's lock: a broker stop takes seconds.
                if let Broker::Single(rabbit) = &self.deployment.lock().await.broker {
                    let rabbit = rabbit.clone();
                    rabbit.stop().await;
                    tokio::time::sleep(Duration::from_millis(for_ms)).await;
                    rabbit.start_again().await;
                }
            }
            Fault::KillBrokerLeader { back_after_ms } => {
                let Some((cluster, queue)) = self.cluster().await else { return };
                let Some(leader) = cluster.leader_of(&queue).await else {
                    eprintln!("{:>7} ms  skipped (no leader of {queue} right now): {fault}", self.world.recorder.now_ms());
                    return;
                };
                self.note(&fault, format!("node {leader} leads {queue}: kill -9"));
                cluster.nodes[leader].kill().await;
                tokio::time::sleep(Duration::from_millis(back_after_ms)).await;
                cluster.nodes[leader].start_again().await;
            }
            Fault::StopBrokerNode { node, for_ms } => {
                let Some((cluster, _)) = self.cluster().await else { return };
                cluster.nodes[node].stop().await;
                tokio::time::sleep(Duration::from_millis(for_ms)).await;
                cluster.nodes[node].start_again().await;
            }
            Fault::RestartPostgres => {
                let postgres = self.deployment.lock().await.postgres.clone();
                postgres.stop_immediate().await;
                postgres.start_again().await;
            }
            Fault::ReconnectStorm => {
                self.storms.send_modify(|generation| *generation += 1);
            }
            Fault::ClientOffline { user, device, for_ms } => {
                let _ = self.online[user][device].send(false);
                tokio::time::sleep(Duration::from_millis(for_ms)).await;
                let _ = self.online[user][device].send(true);
            }
            Fault::SecondConnection { user, device, for_ms } => {
                let seed = self.seed ^ ((user * DEVICE_NAMES.len() + device) as u64) << 32 ^ self.world.recorder.now_ms();
                client::run_second_connection(self.world.clone(), user, device, seed, Duration::from_millis(for_ms)).await;
            }
        }
    }

    /// The cluster of a cluster run, and the name of its delivery queue.
    async fn cluster(&self) -> Option<(Arc<PrivateRabbitCluster>, String)> {
        let deployment = self.deployment.lock().await;
        match &deployment.broker {
            Broker::Cluster(cluster) => Some((cluster.clone(), deployment.env.topology().delivery())),
            Broker::Single(_) => None,
        }
    }

    async fn restart(&self, server: impl FnOnce(&mut Deployment) -> &mut deployment::Server) {
        let mut deployment = self.deployment.lock().await;
        let server = server(&mut deployment);
        if let Err(error) = server.ensure_up() {
            eprintln!("cannot restart {}: {error:#}", server.name);
        }
    }
}

/// A target held by a running fault; released when dropped.
struct Claim {
    busy: Arc<std::sync::Mutex<BTreeMap<String, ()>>>,
    target: String,
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Ok(mut busy) = self.busy.lock() {
            busy.remove(&self.target);
        }
    }
}
