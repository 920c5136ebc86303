//! `courier-worker` settings, parsed once at start-up.

use std::{net::SocketAddr, time::Duration};

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
    /// One takes bigger batches than two (measured in docs/benchmarks.md,
    /// "Issue 13, sixth session"); add worker processes to add throughput.
    #[arg(long, env = "DELIVERY_CONSUMERS", default_value_t = 1)]
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

    /// Address of this worker's `GET /metrics` (Prometheus); port 0 picks a free one.
    /// 9610 stays clear of Prometheus (9090), its Pushgateway and Alertmanager
    /// (9091, 9093) and node_exporter (9100); a second worker on the same host
    /// needs its own port.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:9610")]
    pub metrics_addr: SocketAddr,

    /// How often the backlog gauges (undelivered, parked, dead letters) are read from PostgreSQL.
    #[arg(long, env = "METRICS_REFRESH_INTERVAL", default_value = "15s", value_parser = parse_duration)]
    pub metrics_refresh_interval: Duration,

    /// How long an undelivered message waits for its recipient; then it is
    /// `expired` and the sender is told (message:status).
    #[arg(long, env = "MESSAGE_RETENTION", default_value = "30d", value_parser = parse_duration)]
    pub message_retention: Duration,

    /// How often the janitor expires messages past MESSAGE_RETENTION and cleans up.
    #[arg(long, env = "JANITOR_INTERVAL", default_value = "1m", value_parser = parse_duration)]
    pub janitor_interval: Duration,

    /// How long dead letters are kept for inspection before the janitor deletes them.
    #[arg(long, env = "DEAD_LETTER_RETENTION", default_value = "14d", value_parser = parse_duration)]
    pub dead_letter_retention: Duration,

    /// A device neither connected nor seen for this long is dropped by the
    /// janitor, with its cursors (so it stops holding the backlog). Revoked
    /// devices are kept as long, so they stay refused.
    #[arg(long, env = "DEVICE_TTL", default_value = "30d", value_parser = parse_duration)]
    pub device_ttl: Duration,

    #[command(flatten)]
    pub webhook: WebhookConfig,

    /// How long to let in-flight jobs finish when stopping.
    #[arg(long, env = "SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
}

/// The offline push webhook: called when a message finds its recipient offline.
#[derive(clap::Args, Debug, Clone)]
pub struct WebhookConfig {
    /// URL to POST offline notices to (the host app sends the mobile push). Off when unset.
    #[arg(long, env = "PUSH_WEBHOOK_URL")]
    pub push_webhook_url: Option<String>,

    /// Secret of the `X-Courier-Signature: sha256=HMAC(secret, body)` header. Required with PUSH_WEBHOOK_URL.
    #[arg(long, env = "PUSH_WEBHOOK_SECRET", default_value = "", hide_default_value = true)]
    pub push_webhook_secret: String,

    /// A user is notified at most once per quiet period (later messages are in the next notice's count).
    #[arg(long, env = "PUSH_WEBHOOK_QUIET_PERIOD", default_value = "5m", value_parser = parse_duration)]
    pub push_webhook_quiet_period: Duration,

    /// Timeout of one webhook request.
    #[arg(long, env = "PUSH_WEBHOOK_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub push_webhook_timeout: Duration,

    /// Attempts per notice (with exponential backoff) before it is given up.
    #[arg(long, env = "PUSH_WEBHOOK_ATTEMPTS", default_value_t = 5)]
    pub push_webhook_attempts: u32,
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
