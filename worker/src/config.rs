//! `courier-worker` settings, parsed once at start-up.

use std::time::Duration;

use courier_shared::config::{CommonConfig, parse_duration};

#[derive(clap::Args, Debug, Clone)]
pub struct WorkerConfig {
    #[command(flatten)]
    pub common: CommonConfig,

    /// This worker's id: names its control queue. Generated when absent.
    #[arg(long, env = "WORKER_ID")]
    pub worker_id: Option<String>,

    /// How long to wait for in-flight jobs when stopping.
    #[arg(long, env = "SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
}

impl WorkerConfig {
    /// The worker id, generated once if not configured.
    pub fn resolve_worker_id(&mut self) -> String {
        self.worker_id.get_or_insert_with(|| format!("worker-{}", uuid::Uuid::now_v7().simple())).clone()
    }
}
