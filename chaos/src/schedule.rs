//! The fault schedule: which fault, when, with which parameters — a pure
//! function of the seed and the run's length, so `--seed S --seconds T` gives
//! the same schedule every time. (What the processes do in between is the
//! real world's business; the schedule is what we control.)

use std::fmt;

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};

/// Faults start after this much calm, so every client has connected once.
pub const WARM_UP_MS: u64 = 4_000;

/// The devices every simulated user has, by index (`--users` users × these).
pub const DEVICE_NAMES: [&str; 2] = ["phone", "laptop"];

/// The `deviceId` of device `device` of user `u{user}`: `u3-phone`.
pub fn device_id(user: usize, device: usize) -> String {
    format!("u{user}-{}", DEVICE_NAMES[device % DEVICE_NAMES.len()])
}

/// One fault to apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// SIGKILL API node `node`; start it again after `back_after_ms`.
    KillApi { node: usize, back_after_ms: u64 },
    /// SIGKILL worker `worker`; start it again after `back_after_ms`.
    KillWorker { worker: usize, back_after_ms: u64 },
    /// SIGTERM API node `node` mid-traffic (a graceful stop), then start it again.
    TermApi { node: usize, back_after_ms: u64 },
    /// Stop the RabbitMQ node for `for_ms` (single-node runs).
    StopBroker { for_ms: u64 },
    /// Cluster runs: kill -9 the node that leads the delivery queue; start it again after `back_after_ms`.
    KillBrokerLeader { back_after_ms: u64 },
    /// Cluster runs: stop node `node` for `for_ms`.
    StopBrokerNode { node: usize, for_ms: u64 },
    /// Stop PostgreSQL with `-m immediate` (as a crash) and start it again.
    RestartPostgres,
    /// Every client drops its connection at once and reconnects.
    ReconnectStorm,
    /// Device `device` of user `user` goes offline for `for_ms` (the user's
    /// other device stays as it is).
    ClientOffline { user: usize, device: usize, for_ms: u64 },
    /// Device `device` of user `user` opens a second connection (the same
    /// `deviceId`) for `for_ms`.
    SecondConnection { user: usize, device: usize, for_ms: u64 },
}

impl Fault {
    /// Short stable name, for the report's "faults by kind".
    pub fn name(&self) -> &'static str {
        match self {
            Fault::KillApi { .. } => "kill_api",
            Fault::KillWorker { .. } => "kill_worker",
            Fault::TermApi { .. } => "term_api",
            Fault::StopBroker { .. } => "stop_broker",
            Fault::KillBrokerLeader { .. } => "kill_broker_leader",
            Fault::StopBrokerNode { .. } => "stop_broker_node",
            Fault::RestartPostgres => "restart_postgres",
            Fault::ReconnectStorm => "reconnect_storm",
            Fault::ClientOffline { .. } => "client_offline",
            Fault::SecondConnection { .. } => "second_connection",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::KillApi { node, back_after_ms } => write!(f, "kill -9 api-{node}, back after {back_after_ms} ms"),
            Fault::KillWorker { worker, back_after_ms } => write!(f, "kill -9 worker-{worker}, back after {back_after_ms} ms"),
            Fault::TermApi { node, back_after_ms } => write!(f, "SIGTERM api-{node}, back after {back_after_ms} ms"),
            Fault::StopBroker { for_ms } => write!(f, "stop RabbitMQ for {for_ms} ms"),
            Fault::KillBrokerLeader { back_after_ms } => write!(f, "kill -9 the RabbitMQ node leading the delivery queue, back after {back_after_ms} ms"),
            Fault::StopBrokerNode { node, for_ms } => write!(f, "stop RabbitMQ node {node} for {for_ms} ms"),
            Fault::RestartPostgres => write!(f, "restart PostgreSQL (immediate stop)"),
            Fault::ReconnectStorm => write!(f, "reconnect storm: every client drops at once"),
            Fault::ClientOffline { user, device, for_ms } => write!(f, "{} offline for {for_ms} ms", device_id(*user, *device)),
            Fault::SecondConnection { user, device, for_ms } => {
                write!(f, "{} opens a second connection for {for_ms} ms", device_id(*user, *device))
            }
        }
    }
}

/// A fault and when to apply it, in ms from the start of the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Planned {
    pub at_ms: u64,
    pub fault: Fault,
}

/// What the schedule may draw from.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub apis: usize,
    pub workers: usize,
    pub users: usize,
    /// Devices per user (at most `DEVICE_NAMES.len()`).
    pub devices: usize,
    /// RabbitMQ cluster nodes; 0 for a single broker.
    pub broker_nodes: usize,
    /// Mean time between two faults.
    pub mean_gap_ms: u64,
}

/// The schedule of a run of `seconds`: faults from the warm-up until 85 % of
/// the run (the rest is for the last faults to heal before the settle phase).
pub fn plan(seed: u64, seconds: u64, shape: Shape) -> Vec<Planned> {
    let mut rng = StdRng::seed_from_u64(seed);
    let end_ms = seconds * 1000 * 85 / 100;
    let mut at_ms = WARM_UP_MS;
    let mut planned = Vec::new();
    loop {
        // Exponential gaps (a Poisson process), at least 300 ms apart.
        let uniform: f64 = rng.random_range(f64::EPSILON..1.0);
        at_ms += ((-uniform.ln()) * shape.mean_gap_ms as f64) as u64 + 300;
        if at_ms >= end_ms {
            return planned;
        }
        planned.push(Planned { at_ms, fault: draw(&mut rng, shape) });
    }
}

fn draw(rng: &mut StdRng, shape: Shape) -> Fault {
    // Weights: client-side faults are the most common, as in real life; every
    // server-side kind still comes up several times in a minute-long run.
    match rng.random_range(0..100) {
        0..12 => Fault::KillApi { node: rng.random_range(0..shape.apis), back_after_ms: rng.random_range(0..=5_000) },
        12..24 => Fault::KillWorker { worker: rng.random_range(0..shape.workers), back_after_ms: rng.random_range(0..=5_000) },
        24..32 => Fault::TermApi { node: rng.random_range(0..shape.apis), back_after_ms: rng.random_range(0..=2_000) },
        32..40 if shape.broker_nodes == 0 => Fault::StopBroker { for_ms: rng.random_range(3_000..=10_000) },
        32..36 => Fault::KillBrokerLeader { back_after_ms: rng.random_range(0..=5_000) },
        36..40 => Fault::StopBrokerNode { node: rng.random_range(0..shape.broker_nodes), for_ms: rng.random_range(10_000..=30_000) },
        40..46 => Fault::RestartPostgres,
        46..54 => Fault::ReconnectStorm,
        54..82 => {
            let (user, device) = draw_device(rng, shape);
            Fault::ClientOffline { user, device, for_ms: rng.random_range(0..=15_000) }
        }
        _ => {
            let (user, device) = draw_device(rng, shape);
            Fault::SecondConnection { user, device, for_ms: rng.random_range(2_000..=15_000) }
        }
    }
}

/// A user and one of their devices, in one draw (so a seed's fault kinds and
/// times are those it drew when users had one device).
fn draw_device(rng: &mut StdRng, shape: Shape) -> (usize, usize) {
    let devices = shape.devices.max(1);
    let drawn = rng.random_range(0..shape.users * devices);
    (drawn / devices, drawn % devices)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: Shape = Shape { apis: 2, workers: 2, users: 8, devices: 2, broker_nodes: 0, mean_gap_ms: 3_000 };

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        assert_eq!(plan(7, 60, SHAPE), plan(7, 60, SHAPE));
        assert_ne!(plan(7, 60, SHAPE), plan(8, 60, SHAPE));
    }

    #[test]
    fn faults_stay_between_the_warm_up_and_the_healing_time() {
        let planned = plan(1, 60, SHAPE);
        assert!(planned.len() >= 8, "a minute has several faults: {planned:?}");
        assert!(planned.iter().all(|p| p.at_ms >= WARM_UP_MS && p.at_ms < 51_000));
        assert!(planned.windows(2).all(|w| w[0].at_ms < w[1].at_ms));
    }

    #[test]
    fn a_long_run_draws_every_kind() {
        let kinds: std::collections::BTreeSet<&str> = plan(3, 600, SHAPE).iter().map(|p| p.fault.name()).collect();
        assert_eq!(kinds.len(), 8, "{kinds:?}");
        assert!(!kinds.contains("kill_broker_leader"));
    }

    #[test]
    fn client_faults_hit_every_device_of_every_user() {
        let targets: std::collections::BTreeSet<(usize, usize)> = plan(3, 600, SHAPE)
            .iter()
            .filter_map(|p| match p.fault {
                Fault::ClientOffline { user, device, .. } | Fault::SecondConnection { user, device, .. } => Some((user, device)),
                _ => None,
            })
            .collect();
        assert_eq!(targets.len(), SHAPE.users * SHAPE.devices, "{targets:?}");
    }

    #[test]
    fn a_cluster_run_breaks_nodes_instead_of_the_whole_broker() {
        let cluster = Shape { broker_nodes: 3, ..SHAPE };
        let kinds: std::collections::BTreeSet<&str> = plan(3, 600, cluster).iter().map(|p| p.fault.name()).collect();
        assert!(kinds.contains("kill_broker_leader") && kinds.contains("stop_broker_node"), "{kinds:?}");
        assert!(!kinds.contains("stop_broker"), "{kinds:?}");
    }
}
