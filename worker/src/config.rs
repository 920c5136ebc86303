//! `courier-worker` settings, parsed once at start-up.

use std::time::Duration;

use courier_shared::config::{CommonConfig, parse_duration};

#[derive(clap::Args, Debug, Clone)]
pub struct WorkerConfig {
    #[command(flatten)]
    pub common: CommonConfig,

    /// This worker's id: names its control queue. Generated when absent.
    #[arg(long, env = "WORKER_ID", value_parser = parse_worker_id)]
    pub worker_id: Option<String>,

    /// Delivery jobs each consumer may hold unacknowledged.
    #[arg(long, env = "DELIVERY_PREFETCH", default_value_t = 512)]
    pub delivery_prefetch: u16,

    /// Concurrent consumers of the delivery queue (each on its own channel).
    #[arg(long, env = "DELIVERY_CONSUMERS", default_value_t = 2)]
    pub delivery_consumers: usize,

    /// Most jobs routed together (one database round trip, one push per node).
    #[arg(long, env = "DELIVERY_BATCH", default_value_t = 256)]
    pub delivery_batch: usize,

    /// Messages per drain page.
    #[arg(long, env = "DRAIN_PAGE", default_value_t = 500)]
    pub drain_page: u32,

    /// Drained messages a client may have unacknowledged before the next page waits.
    #[arg(long, env = "DRAIN_WINDOW", default_value_t = 2000)]
    pub drain_window: u32,

    /// Drains running at once on this worker.
    #[arg(long, env = "DRAIN_CONCURRENCY", default_value_t = 64)]
    pub drain_concurrency: usize,

    /// A drain whose client acknowledges nothing for this long is abandoned
    /// (the connection asks again if it is still there).
    #[arg(long, env = "DRAIN_CREDIT_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub drain_credit_timeout: Duration,

    /// An API node that has not renewed its lease for this long is dead: its connections are removed.
    #[arg(long, env = "NODE_LEASE", default_value = "30s", value_parser = parse_duration)]
    pub node_lease: Duration,

    /// How often to look for dead API nodes.
    #[arg(long, env = "REAP_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub reap_interval: Duration,

    /// How long to let in-flight jobs finish when stopping.
    #[arg(long, env = "SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
}

impl WorkerConfig {
    /// The worker id, generated once if not configured.
    pub fn resolve_worker_id(&mut self) -> String {
        self.worker_id.get_or_insert_with(|| format!("worker-{}", uuid::Uuid::now_v7().simple())).clone()
    }
}

fn parse_worker_id(text: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && text.len() <= 64
        && text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid { Ok(text.to_owned()) } else { Err("use 1-64 characters from [A-Za-z0-9._-]".into()) }
}
