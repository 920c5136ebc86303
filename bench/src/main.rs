//! `courier-bench`: measures Courier end to end over its public protocol, next
//! to RabbitMQ and PostgreSQL alone on the same machine, and writes the
//! results as a markdown table and a JSON file. See docs/benchmarks.md.

mod client;
mod cluster;
mod load;
mod procstat;
mod reference;
mod scenarios;

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use serde_json::{Value, json};

use cluster::{Services, Shape};
use scenarios::ChatKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Size {
    /// A few hundred messages: proves the harness and the pipeline work (CI).
    Smoke,
    /// The sizes docs/benchmarks.md reports.
    Full,
}

#[derive(Debug, Parser)]
#[command(name = "courier-bench", about = "Load generator and reference benchmarks for Courier")]
struct Args {
    #[arg(long, value_enum, default_value = "full")]
    size: Size,
    /// Run only these parts (comma-separated): reference, direct, mixed, devices, group, onechat, latency, drain,
    /// drain-offline (the drain with its senders gone offline), connections, scaleout, shards. `shards` (a private
    /// 3-node RabbitMQ cluster; needs root and Debian's rabbitmq-server) runs only when named.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Backlogs the drain part measures, one run each (comma-separated), instead of the size's
    /// (smoke 300; full 10000,100000). E.g. `--only drain --drain-sizes 1000000`.
    #[arg(long, value_delimiter = ',')]
    drain_sizes: Vec<u64>,
    /// The live-latency run's offered rate in msg/s, and its RabbitMQ-alone reference's, instead of the
    /// size's (smoke 200; full 1000). A low rate (e.g. 100) shows the latency of an unloaded machine.
    #[arg(long)]
    latency_rate: Option<f64>,
    /// PostgreSQL server URL, without a database name.
    #[arg(long, env = "BENCH_POSTGRES", default_value = "postgres://postgres@127.0.0.1:5432")]
    postgres: String,
    #[arg(long, env = "BENCH_AMQP", default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp: String,
    /// Where latest.md and latest.json go.
    #[arg(long, default_value = "bench-results")]
    out_dir: PathBuf,
}

/// The sizes of one harness run.
struct Sizes {
    reference_messages: u64,
    direct_pairs: usize,
    direct_per_sender: u64,
    groups: usize,
    group_senders: usize,
    group_per_sender: u64,
    /// Connections sending into one group (and then each into its own).
    onechat_senders: usize,
    onechat_per_sender: u64,
    devices_per_user: usize,
    /// Messages per sending device in the devices run (over `direct_pairs` pairs).
    devices_per_sender: u64,
    latency_pairs: usize,
    latency_rate: f64,
    latency_duration: Duration,
    answer_rounds: usize,
    backlogs: Vec<u64>,
    drain_chats: usize,
    connections: usize,
    scaleout_per_sender: u64,
    window: usize,
}

impl Sizes {
    fn of(size: Size) -> Self {
        match size {
            Size::Smoke => Sizes {
                reference_messages: 2_000,
                direct_pairs: 10,
                direct_per_sender: 20,
                groups: 1,
                group_senders: 2,
                group_per_sender: 5,
                onechat_senders: 8,
                onechat_per_sender: 25,
                devices_per_user: 3,
                devices_per_sender: 20,
                latency_pairs: 10,
                latency_rate: 200.0,
                latency_duration: Duration::from_secs(1),
                answer_rounds: 20,
                backlogs: vec![300],
                drain_chats: 3,
                connections: 100,
                scaleout_per_sender: 10,
                window: 8,
            },
            Size::Full => Sizes {
                reference_messages: 100_000,
                direct_pairs: 200,
                direct_per_sender: 250,
                groups: 4,
                group_senders: 2,
                group_per_sender: 250,
                onechat_senders: 8,
                onechat_per_sender: 250,
                devices_per_user: 3,
                devices_per_sender: 100,
                latency_pairs: 50,
                latency_rate: 1_000.0,
                latency_duration: Duration::from_secs(20),
                answer_rounds: 500,
                backlogs: vec![10_000, 100_000],
                drain_chats: 10,
                connections: 10_000,
                scaleout_per_sender: 100,
                window: 32,
            },
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut sizes = Sizes::of(args.size);
    if !args.drain_sizes.is_empty() {
        sizes.backlogs = args.drain_sizes.clone();
    }
    if let Some(rate) = args.latency_rate {
        anyhow::ensure!(rate.is_finite() && rate > 0.0, "--latency-rate must be a positive number of messages per second");
        sizes.latency_rate = rate;
    }
    let fd_limit = procstat::raise_fd_limit();
    let services = Services { postgres: args.postgres.clone(), amqp: args.amqp.clone() };
    let wanted = |part: &str| args.only.is_empty() || args.only.iter().any(|p| p == part);
    let named = |part: &str| args.only.iter().any(|p| p == part);
    let mut results = serde_json::Map::new();
    results.insert("machine".into(), machine(fd_limit));
    let mut problems = Vec::new();

    if wanted("reference") {
        eprintln!("reference: RabbitMQ alone");
        let (broker, broker_cpu) = with_cpu(reference::rabbitmq(&services.amqp, sizes.reference_messages)).await?;
        eprintln!("reference: PostgreSQL alone");
        let database = reference_database(&services, sizes.reference_messages).await?;
        results.insert("reference".into(), json!({ "rabbitmq": broker, "rabbitmq_cpu_seconds": broker_cpu, "postgres": database }));
        broker_latency(&mut results, &mut problems, &services, &sizes).await?;
    }
    let solo = Shape::SOLO;
    let mut direct_rate = None;
    if wanted("direct") {
        eprintln!("throughput: direct chats");
        let kind = ChatKind::Direct { pairs: sizes.direct_pairs };
        if let Some(run) = ran(&mut problems, scenarios::throughput(&services, solo, kind, sizes.direct_per_sender, sizes.window).await) {
            check(&mut problems, "direct", run.duplicates, run.out_of_order);
            direct_rate = Some(run.deliveries_per_sec);
            results.insert("direct".into(), serde_json::to_value(&run)?);
        }
    }
    if wanted("mixed") {
        mixed(&mut results, &mut problems, &services, &sizes).await?;
    }
    if wanted("devices") {
        let (pairs, devices, per_sender) = (sizes.direct_pairs, sizes.devices_per_user, sizes.devices_per_sender);
        eprintln!("throughput: direct chats, {devices} devices per user");
        if let Some(run) = ran(&mut problems, scenarios::devices(&services, pairs, devices, per_sender, sizes.window).await) {
            check(&mut problems, "devices", run.duplicates, run.out_of_order);
            if run.received != run.device_deliveries + run.own_copies {
                problems.push(format!("devices: received {} of {}", run.received, run.device_deliveries + run.own_copies));
            }
            // The same deployment shape with one device per user, in this invocation.
            let one_device = match results.get("direct") {
                Some(direct) => Some(direct.clone()),
                None => {
                    eprintln!("throughput: direct chats, 1 device per user (beside the devices run)");
                    let kind = ChatKind::Direct { pairs };
                    let direct = ran(&mut problems, scenarios::throughput(&services, solo, kind, per_sender, sizes.window).await);
                    if let Some(direct) = &direct {
                        check(&mut problems, "devices (1 device)", direct.duplicates, direct.out_of_order);
                    }
                    direct.map(|direct| serde_json::to_value(&direct)).transpose()?
                }
            };
            let ratio = one_device.as_ref().and_then(|direct| direct["deliveries_per_sec"].as_f64()).map(|one| run.device_deliveries_per_sec / one);
            results.insert("devices".into(), json!({ "run": run, "one_device": one_device, "ratio": ratio.map(|r| (r * 100.0).round() / 100.0) }));
        }
    }
    if wanted("group") {
        eprintln!("throughput: groups of 50");
        let kind = ChatKind::Group { groups: sizes.groups, members: 50, senders: sizes.group_senders };
        if let Some(run) = ran(&mut problems, scenarios::throughput(&services, solo, kind, sizes.group_per_sender, sizes.window).await) {
            check(&mut problems, "group", run.duplicates, run.out_of_order);
            results.insert("group".into(), serde_json::to_value(&run)?);
        }
    }
    if wanted("onechat") {
        let senders = sizes.onechat_senders;
        eprintln!("throughput: {senders} connections into one group, then each into its own");
        if let Some(run) = ran(&mut problems, scenarios::onechat(&services, senders, sizes.onechat_per_sender, sizes.window).await) {
            check(&mut problems, "onechat", run.duplicates, run.out_of_order);
            results.insert("onechat".into(), serde_json::to_value(&run)?);
        }
    }
    if wanted("latency") {
        if !results.contains_key("rabbitmq_latency") {
            broker_latency(&mut results, &mut problems, &services, &sizes).await?;
        }
        let mut runs = Vec::new();
        let mut rates = vec![sizes.latency_rate];
        if let Some(max) = direct_rate {
            rates.push((max * 0.8).round());
        }
        // What TCP_NODELAY changes, measured in this run: answers one at a
        // time and live latency at the first rate, with it off and on.
        let mut answers = Vec::new();
        for nodelay in [false, true] {
            eprintln!("send answers one at a time, TCP_NODELAY {}", if nodelay { "on" } else { "off" });
            if let Some(run) = ran(&mut problems, scenarios::answers(&services, sizes.answer_rounds, nodelay).await) {
                answers.push(run);
            }
        }
        results.insert("answers".into(), serde_json::to_value(&answers)?);
        let runs_of = std::iter::once((rates[0], false)).chain(rates.iter().map(|rate| (*rate, true)));
        for (rate, nodelay) in runs_of {
            eprintln!("latency at {rate} msg/s, TCP_NODELAY {}", if nodelay { "on" } else { "off" });
            let run = scenarios::latency(&services, sizes.latency_pairs, rate, sizes.latency_duration, nodelay).await;
            let Some(run) = ran(&mut problems, run) else { continue };
            check(&mut problems, "latency", run.duplicates, run.out_of_order);
            runs.push(run);
        }
        results.insert("latency".into(), serde_json::to_value(&runs)?);
    }
    for (part, senders_online) in [("drain", true), ("drain-offline", false)] {
        if !wanted(part) {
            continue;
        }
        let mut runs = Vec::new();
        for &backlog in &sizes.backlogs {
            eprintln!("drain of {backlog}, senders {}", if senders_online { "online" } else { "offline" });
            let Some(run) = ran(&mut problems, scenarios::drain(&services, backlog, sizes.drain_chats, senders_online).await) else { continue };
            check(&mut problems, part, run.duplicates, run.out_of_order);
            if run.received != run.backlog {
                problems.push(format!("{part}: received {} of {}", run.received, run.backlog));
            }
            runs.push(run);
        }
        results.insert(part.replace('-', "_"), serde_json::to_value(&runs)?);
    }
    if wanted("connections") {
        eprintln!("{} idle connections", sizes.connections);
        if let Some(run) = ran(&mut problems, scenarios::connections(&services, sizes.connections).await) {
            results.insert("connections".into(), serde_json::to_value(&run)?);
        }
    }
    if wanted("scaleout") {
        let mut runs = Vec::new();
        for (apis, workers) in [(1, 1), (1, 2), (2, 1), (2, 2)] {
            eprintln!("scale-out: {apis} api, {workers} worker");
            let kind = ChatKind::Direct { pairs: sizes.direct_pairs };
            let Some(run) = ran(&mut problems, scenarios::throughput(&services, Shape { apis, workers }, kind, sizes.scaleout_per_sender, sizes.window).await) else { continue };
            check(&mut problems, "scaleout", run.duplicates, run.out_of_order);
            runs.push(run);
        }
        results.insert("scaleout".into(), serde_json::to_value(&runs)?);
    }

    if named("shards") {
        // One delivery queue is led by one node; K queues spread their leaders.
        // Same cluster, same load, K = 1 then K = 3, every queue quorum.
        eprintln!("booting a private 3-node RabbitMQ cluster");
        let rabbit = courier_tests::PrivateRabbitCluster::start(3).await;
        let on_cluster = Services { postgres: services.postgres.clone(), amqp: rabbit.url() };
        let mut runs = Vec::new();
        for shards in [1, 3] {
            eprintln!("3-node cluster, {shards} delivery queue(s)");
            let server_args = ["--broker-replicated".to_owned(), format!("--delivery-queues={shards}")];
            let kind = ChatKind::Direct { pairs: sizes.direct_pairs };
            let run = scenarios::throughput_with(&on_cluster, Shape { apis: 1, workers: 2 }, kind, sizes.scaleout_per_sender, sizes.window, &server_args).await;
            let Some(run) = ran(&mut problems, run) else { continue };
            check(&mut problems, "shards", run.duplicates, run.out_of_order);
            runs.push(json!({ "delivery_queues": shards, "run": run }));
        }
        results.insert("shards".into(), Value::Array(runs));
    }

    let results = Value::Object(results);
    let markdown = report(&results);
    std::fs::create_dir_all(&args.out_dir)?;
    std::fs::write(args.out_dir.join("latest.json"), serde_json::to_string_pretty(&results)?)?;
    std::fs::write(args.out_dir.join("latest.md"), &markdown)?;
    println!("{markdown}");
    if !problems.is_empty() {
        bail!("the pipeline misbehaved under load: {}", problems.join("; "));
    }
    Ok(())
}

/// The mixed workload (issue 14) beside the messages-only rate of this
/// invocation: the direct part's run if it ran, else the same direct load
/// run right before it. Each of the two runs starts its own deployment.
async fn mixed(results: &mut serde_json::Map<String, Value>, problems: &mut Vec<String>, services: &Services, sizes: &Sizes) -> anyhow::Result<()> {
    let (pairs, per_sender, window) = (sizes.direct_pairs, sizes.direct_per_sender, sizes.window);
    let messages_only = match results.get("direct") {
        Some(direct) => Some(direct.clone()),
        None => {
            eprintln!("throughput: direct chats, messages only (beside the mixed run)");
            let kind = ChatKind::Direct { pairs };
            let direct = ran(problems, scenarios::throughput(services, Shape::SOLO, kind, per_sender, window).await);
            if let Some(direct) = &direct {
                check(problems, "mixed (messages only)", direct.duplicates, direct.out_of_order);
            }
            direct.map(|direct| serde_json::to_value(&direct)).transpose()?
        }
    };
    eprintln!("throughput: direct chats, mixed: 80 % sends, 10 % reactions, 5 % edits, 5 % deletes, typing on");
    let Some(run) = ran(problems, scenarios::mixed(services, pairs, per_sender, window).await) else { return Ok(()) };
    check(problems, "mixed", run.duplicates, run.out_of_order);
    if run.received != run.deliveries {
        problems.push(format!("mixed: received {} of {} entries", run.received, run.deliveries));
    }
    if run.before_their_message > 0 {
        problems.push(format!("mixed: {} entries reached a device before their message", run.before_their_message));
    }
    if run.done.unchanged > 0 {
        problems.push(format!("mixed: {} reactions, edits or deletes changed nothing", run.done.unchanged));
    }
    let ratio = messages_only.as_ref().and_then(|direct| direct["deliveries_per_sec"].as_f64()).filter(|rate| *rate > 0.0).map(|rate| run.deliveries_per_sec / rate);
    let mixed_cpu = cpu_per_delivery(&serde_json::to_value(&run.resources)?, run.deliveries);
    let messages_cpu = messages_only.as_ref().map(|direct| cpu_per_delivery(&direct["resources"], direct["deliveries"].as_u64().unwrap_or(0)));
    results.insert(
        "mixed".into(),
        json!({
            "run": run,
            "messages_only": messages_only,
            // Mixed deliveries/s over messages-only deliveries/s; issue 14 asks for ≥ 0.9.
            "ratio": ratio.map(|r| (r * 1000.0).round() / 1000.0),
            "cpu_us_per_delivery": { "mixed": mixed_cpu, "messages_only": messages_cpu },
        }),
    );
    Ok(())
}

/// CPU microseconds per delivery of each process group, and of the servers
/// together (api + worker + PostgreSQL + RabbitMQ, the load generator aside).
fn cpu_per_delivery(resources: &Value, deliveries: u64) -> Value {
    let Some(split) = resources["cpu_seconds"].as_object().filter(|_| deliveries > 0) else { return Value::Null };
    let per = |secs: f64| (secs * 1e6 / deliveries as f64 * 10.0).round() / 10.0;
    let mut out: serde_json::Map<String, Value> = split.iter().map(|(group, secs)| (group.clone(), json!(per(secs.as_f64().unwrap_or(0.0))))).collect();
    let servers: f64 = ["api", "worker", "postgres", "rabbitmq"].iter().filter_map(|group| split.get(*group)?.as_f64()).sum();
    out.insert("servers".into(), json!(per(servers)));
    Value::Object(out)
}

/// RabbitMQ's own publish → consume latency at the live-latency run's first
/// rate and pacing: what Courier's live latency is a multiple of.
async fn broker_latency(results: &mut serde_json::Map<String, Value>, problems: &mut Vec<String>, services: &Services, sizes: &Sizes) -> anyhow::Result<()> {
    eprintln!("reference: RabbitMQ alone, latency at {} msg/s", sizes.latency_rate);
    let run = reference::rabbitmq_latency(&services.amqp, sizes.latency_pairs, sizes.latency_rate, sizes.latency_duration).await;
    if let Some(run) = ran(problems, run) {
        results.insert("rabbitmq_latency".into(), serde_json::to_value(&run)?);
    }
    Ok(())
}

/// A scenario's result, or its failure noted so the other scenarios still run.
fn ran<T>(problems: &mut Vec<String>, result: anyhow::Result<T>) -> Option<T> {
    match result {
        Ok(run) => Some(run),
        Err(error) => {
            eprintln!("failed: {error:#}");
            problems.push(format!("{error:#}"));
            None
        }
    }
}

fn check(problems: &mut Vec<String>, what: &str, duplicates: u64, out_of_order: u64) {
    if duplicates > 0 || out_of_order > 0 {
        problems.push(format!("{what}: {duplicates} duplicates, {out_of_order} out of order"));
    }
}

/// PostgreSQL alone, in a scratch database migrated to Courier's schema.
async fn reference_database(services: &Services, messages: u64) -> anyhow::Result<reference::DatabaseCeiling> {
    use sqlx::Connection as _;
    let name = format!("courier_bench_ref_{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    let admin_url = format!("{}/postgres", services.postgres);
    let mut admin = sqlx::PgConnection::connect(&admin_url).await.context("PostgreSQL")?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut admin).await?;
    let result = async {
        let db = courier_shared::db::connect(&format!("{}/{name}", services.postgres), 2, Duration::from_secs(10)).await?;
        courier_shared::db::migrate(&db).await?;
        let ceiling = reference::postgres(&db, messages).await;
        db.close().await;
        ceiling
    }
    .await;
    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))).execute(&mut admin).await;
    result
}

fn machine(fd_limit: u64) -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| info.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned()))
        .unwrap_or_default();
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": cpu,
        "fd_limit": fd_limit,
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
    })
}

fn num(value: &Value) -> String {
    match value.as_f64() {
        Some(n) if n >= 100.0 => format!("{}", n.round() as i64).chars().rev().collect::<Vec<_>>().chunks(3).map(|c| c.iter().collect::<String>()).collect::<Vec<_>>().join(",").chars().rev().collect(),
        Some(n) => format!("{n}"),
        None => "—".into(),
    }
}

fn cpu(resources: &Value) -> String {
    let Some(split) = resources["cpu_seconds"].as_object() else { return "—".into() };
    split.iter().map(|(group, secs)| format!("{group} {}", num(secs))).collect::<Vec<_>>().join(", ")
}

/// Runs `work` and reads the CPU seconds RabbitMQ and this load generator
/// used meanwhile: what the broker reference costs per message, beside what
/// Courier costs per delivery. (Not for the PostgreSQL reference: its
/// backends exit with its pool before the second reading.)
async fn with_cpu<T>(work: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<(T, Value)> {
    let processes = procstat::Processes::default();
    let before = processes.sample();
    let value = work.await?;
    let cpu: serde_json::Map<String, Value> = processes
        .cpu_since(&before)
        .into_iter()
        .filter(|(group, _)| matches!(group, procstat::Group::RabbitMq | procstat::Group::Bench))
        .map(|(group, seconds)| (group.name().to_owned(), json!((seconds * 100.0).round() / 100.0)))
        .collect();
    Ok((value, Value::Object(cpu)))
}

/// The results as the markdown table docs/benchmarks.md shows.
fn report(results: &Value) -> String {
    let mut out = String::new();
    let mut row = |figure: String, value: String, note: String| out.push_str(&format!("| {figure} | {value} | {note} |\n"));
    row("figure".into(), "value".into(), "context".into());
    row("---".into(), "---".into(), "---".into());
    let ceiling = results["reference"]["rabbitmq"]["end_to_end_per_sec"].as_f64();
    if let Some(reference) = results.get("reference") {
        let rabbit = &reference["rabbitmq"];
        row("RabbitMQ alone: publish with confirms → consume with acks".into(), format!("{} msg/s", num(&rabbit["end_to_end_per_sec"])), format!("publish alone {} msg/s; {} messages", num(&rabbit["publish_per_sec"]), num(&rabbit["messages"])));
        let per_message = |group: &str| {
            let seconds = reference["rabbitmq_cpu_seconds"][group].as_f64().unwrap_or(0.0);
            let messages = rabbit["messages"].as_f64().unwrap_or(0.0).max(1.0);
            format!("{:.0} µs", seconds * 1e6 / messages)
        };
        row(
            "RabbitMQ alone: CPU per message (RabbitMQ / the load generator)".into(),
            format!("{} / {}", per_message("rabbitmq"), per_message("bench")),
            "user + system time during the run above".into(),
        );
        let pg = &reference["postgres"];
        row("PostgreSQL alone: message + outbox rows (what a send writes), 100 per statement".into(), format!("{} msg/s", num(&pg["batched_per_sec"])), format!("one transaction per message: {} msg/s", num(&pg["single_per_sec"])));
    }
    let broker_latency = results.get("rabbitmq_latency");
    if let Some(run) = broker_latency {
        row(
            format!("RabbitMQ alone: publish → consume latency at {} msg/s (p50 / p95 / p99 / max)", num(&run["offered_per_sec"])),
            format!("{} / {} / {} / {} ms", num(&run["p50_ms"]), num(&run["p95_ms"]), num(&run["p99_ms"]), num(&run["max_ms"])),
            format!(
                "{} sent, {} consumed over {} s by {} paced publishers (the live-latency pacing); persistent, confirms, one quorum queue, one hop, ack per message",
                num(&run["sent"]),
                num(&run["received"]),
                num(&run["seconds"]),
                run["publishers"]
            ),
        );
    }
    let share = |rate: &Value| match (rate.as_f64(), ceiling) {
        (Some(rate), Some(ceiling)) if ceiling > 0.0 => format!("; {:.0} % of the broker ceiling", 100.0 * rate / ceiling),
        _ => String::new(),
    };
    for (key, label) in [("direct", "end-to-end deliveries/s, direct chats"), ("group", "end-to-end deliveries/s, groups of 50")] {
        if let Some(run) = results.get(key) {
            row(
                label.into(),
                format!("{} /s", num(&run["deliveries_per_sec"])),
                format!(
                    "{} deliveries in {} s{}; dup {}, out of order {}; peak RSS api {} MiB, worker {} MiB; CPU s: {}",
                    num(&run["deliveries"]),
                    num(&run["seconds"]),
                    share(&run["deliveries_per_sec"]),
                    run["duplicates"],
                    run["out_of_order"],
                    num(&run["resources"]["api_peak_rss_mib"]),
                    num(&run["resources"]["worker_peak_rss_mib"]),
                    cpu(&run["resources"])
                ),
            );
        }
    }
    if let Some(entry) = results.get("mixed") {
        let run = &entry["run"];
        let done = &run["done"];
        let messages_only = &entry["messages_only"];
        let versus = match entry["ratio"].as_f64() {
            Some(ratio) => format!(
                " = {:.1} % of messages only ({} /s){}",
                // One decimal, so a share just under 90 % does not print as 90 %.
                (ratio * 1000.0).floor() / 10.0,
                num(&messages_only["deliveries_per_sec"]),
                if ratio >= 0.9 { "" } else { ", under the 90 % issue 14 asks for" }
            ),
            None => String::new(),
        };
        let cpu_us = &entry["cpu_us_per_delivery"];
        row(
            "end-to-end deliveries/s, direct chats, mixed: 80 % sends, 10 % reactions, 5 % edits, 5 % deletes, typing on".into(),
            format!("{} /s{versus}", num(&run["deliveries_per_sec"])),
            format!(
                "{} log entries delivered and acknowledged in {} s: {} messages, {} edits, {} deletes for everyone, {} reactions added and {} removed, \
                 received as {} message:edited, {} message:deleted, {} message:reaction; {} typing:start ({} rate_limited), {} typing shown; \
                 messages only (same invocation): {} deliveries in {} s; dup {}, out of order {}, entries before their message {}; \
                 CPU per delivery {} µs vs {} µs messages only (PostgreSQL {} vs {} µs; api + worker + PostgreSQL + RabbitMQ); \
                 peak RSS api {} MiB, worker {} MiB; CPU s: {}",
                num(&run["deliveries"]),
                num(&run["seconds"]),
                num(&done["sends"]),
                num(&done["edits"]),
                num(&done["deletes"]),
                num(&done["reactions_added"]),
                num(&done["reactions_removed"]),
                num(&run["received_edited"]),
                num(&run["received_deleted"]),
                num(&run["received_reactions"]),
                num(&done["typing_starts"]),
                num(&done["typing_rate_limited"]),
                num(&run["typing_shown"]),
                num(&messages_only["deliveries"]),
                num(&messages_only["seconds"]),
                run["duplicates"],
                run["out_of_order"],
                run["before_their_message"],
                num(&cpu_us["mixed"]["servers"]),
                num(&cpu_us["messages_only"]["servers"]),
                num(&cpu_us["mixed"]["postgres"]),
                num(&cpu_us["messages_only"]["postgres"]),
                num(&run["resources"]["api_peak_rss_mib"]),
                num(&run["resources"]["worker_peak_rss_mib"]),
                cpu(&run["resources"])
            ),
        );
    }
    if let Some(entry) = results.get("devices") {
        let run = &entry["run"];
        let one_device = match (entry["one_device"]["deliveries_per_sec"].as_f64(), entry["ratio"].as_f64()) {
            (Some(_), Some(ratio)) => format!(" = {ratio}× 1 device ({} /s, {} messages)", num(&entry["one_device"]["deliveries_per_sec"]), num(&entry["one_device"]["messages"])),
            _ => String::new(),
        };
        row(
            format!("device-deliveries/s, direct chats, {} devices per user, all online", run["devices_per_user"]),
            format!("{} /s{one_device}", num(&run["device_deliveries_per_sec"])),
            format!(
                "{} messages × {} recipient devices = {} device-deliveries in {} s; the sender's other devices' {} copies of its own not counted (with them {} /s); {} msg/s; dup {}, out of order {}; peak RSS api {} MiB, worker {} MiB; CPU s: {}",
                num(&run["messages"]),
                run["devices_per_user"],
                num(&run["device_deliveries"]),
                num(&run["seconds"]),
                num(&run["own_copies"]),
                num(&run["receives_per_sec"]),
                num(&run["messages_per_sec"]),
                run["duplicates"],
                run["out_of_order"],
                num(&run["resources"]["api_peak_rss_mib"]),
                num(&run["resources"]["worker_peak_rss_mib"]),
                cpu(&run["resources"])
            ),
        );
    }
    if let Some(run) = results.get("onechat") {
        let (one, own) = (&run["one_chat"], &run["own_chats"]);
        let share = run["share"].as_f64().map_or("—".into(), |share| format!("{:.0} %", share * 100.0));
        row(
            format!("one group, {n} connections sending: sends/s as a share of {n} chats × 1 connection", n = run["senders"]),
            format!("{} sends/s = {share}", num(&one["sends_per_sec"])),
            format!(
                "{n} chats × 1: {} sends/s; answer p50 {} vs {} ms (p99 {} vs {}); {} messages per connection, {} in flight each; every member online, {} receives per message; all received after {} vs {} s; dup {}, out of order {}; CPU s (one chat): {}",
                num(&own["sends_per_sec"]),
                num(&one["answer_p50_ms"]),
                num(&own["answer_p50_ms"]),
                num(&one["answer_p99_ms"]),
                num(&own["answer_p99_ms"]),
                num(&run["per_sender"]),
                run["window"],
                run["senders"].as_u64().unwrap_or(1).saturating_sub(1),
                num(&one["delivered_seconds"]),
                num(&own["delivered_seconds"]),
                run["duplicates"],
                run["out_of_order"],
                cpu(&one["resources"]),
                n = run["senders"]
            ),
        );
    }
    for entry in results["shards"].as_array().into_iter().flatten() {
        let run = &entry["run"];
        row(
            format!("3-node RabbitMQ cluster, {} delivery queue(s): deliveries/s, direct chats", entry["delivery_queues"]),
            format!("{} /s", num(&run["deliveries_per_sec"])),
            format!(
                "{} deliveries; 1 api, 2 workers; every queue quorum; dup {}, out of order {}; CPU s: {}",
                num(&run["deliveries"]),
                run["duplicates"],
                run["out_of_order"],
                cpu(&run["resources"])
            ),
        );
    }
    let nagle = |run: &Value| if run["tcp_nodelay"] == false { ", TCP_NODELAY off" } else { "" };
    for run in results["answers"].as_array().into_iter().flatten() {
        row(
            format!("`message:send` answer, one at a time{} (p50 / p99 / max)", nagle(run)),
            format!("{} / {} / {} ms", num(&run["p50_ms"]), num(&run["p99_ms"]), num(&run["max_ms"])),
            format!("{} sends on one /ws connection, recipient online", num(&run["rounds"])),
        );
    }
    for run in results["latency"].as_array().into_iter().flatten() {
        // Only beside the broker measured at the same offered rate.
        let multiple = match (broker_latency, run["p99_ms"].as_f64()) {
            (Some(broker), Some(p99)) if broker["offered_per_sec"].as_f64() == run["offered_per_sec"].as_f64() => match broker["p99_ms"].as_f64() {
                Some(broker_p99) if broker_p99 > 0.0 => {
                    format!("; p99 = {:.1}× RabbitMQ alone's ({} ms, p50 {} ms) at this rate", p99 / broker_p99, num(&broker["p99_ms"]), num(&broker["p50_ms"]))
                }
                _ => String::new(),
            },
            _ => String::new(),
        };
        row(
            format!("live latency at {} msg/s{} (p50 / p95 / p99 / max)", num(&run["offered_per_sec"]), nagle(run)),
            format!("{} / {} / {} / {} ms", num(&run["p50_ms"]), num(&run["p95_ms"]), num(&run["p99_ms"]), num(&run["max_ms"])),
            format!(
                "{} sent, {} received{multiple}; peak RSS api {} MiB; CPU s: {}",
                num(&run["sent"]),
                num(&run["received"]),
                num(&run["resources"]["api_peak_rss_mib"]),
                cpu(&run["resources"])
            ),
        );
    }
    let drains = ["drain", "drain_offline"].into_iter().filter_map(|part| results.get(part)?.as_array());
    for run in drains.flatten() {
        let senders = if run["senders_online"] == false { ", senders offline" } else { "" };
        row(
            format!("drain of a {} backlog, in order{senders}", num(&run["backlog"])),
            format!("{} msg/s", num(&run["per_sec"])),
            format!(
                "{} s over {} chats (stored beforehand in {} s); received {}, dup {}, out of order {}; peak RSS api {} MiB, worker {} MiB; CPU s: {}",
                num(&run["seconds"]),
                run["chats"],
                num(&run["fill_seconds"]),
                num(&run["received"]),
                run["duplicates"],
                run["out_of_order"],
                num(&run["resources"]["api_peak_rss_mib"]),
                num(&run["resources"]["worker_peak_rss_mib"]),
                cpu(&run["resources"])
            ),
        );
    }
    if let Some(run) = results.get("connections") {
        row(
            format!("{} idle connections on one API node", num(&run["connections"])),
            format!("{} KiB each", num(&run["kib_per_connection"])),
            format!(
                "API RSS {} → {} MiB; connected at {} /s ({} s)",
                num(&run["api_rss_before_mib"]),
                num(&run["api_rss_after_mib"]),
                num(&run["connects_per_sec"]),
                num(&run["connect_seconds"])
            ),
        );
    }
    for run in results["scaleout"].as_array().into_iter().flatten() {
        row(
            format!("scale-out: {} api, {} worker", run["apis"], run["workers"]),
            format!("{} /s", num(&run["deliveries_per_sec"])),
            format!("{} deliveries; dup {}, out of order {}; CPU s: {}", num(&run["deliveries"]), run["duplicates"], run["out_of_order"], cpu(&run["resources"])),
        );
    }
    let machine = &results["machine"];
    out.push_str(&format!("\nMachine: {} CPUs ({}), {} build.\n", machine["cpus"], machine["cpu"].as_str().unwrap_or("?"), machine["profile"].as_str().unwrap_or("?")));
    out
}
