//! Settings both binaries read from the environment, parsed once at start-up.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// Settings shared by `courier-api` and `courier-worker`.
#[derive(clap::Args, Debug, Clone)]
pub struct CommonConfig {
    /// PostgreSQL URL. The database is created on first start if it does not exist.
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/courier")]
    pub database_url: String,

    /// Size of the PostgreSQL connection pool.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,

    /// RabbitMQ URL (vhost `/` is `%2f`). Several, comma separated, for the nodes
    /// of a cluster: the connection fails over to the next one.
    #[arg(long, env = "AMQP_URL", default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub amqp_url: String,

    /// Prefix of every RabbitMQ exchange and queue name, so deployments (and tests) can share a broker.
    #[arg(long, env = "BROKER_PREFIX", default_value = "courier", value_parser = parse_prefix)]
    pub broker_prefix: String,

    /// Declare every durable queue as a quorum queue (retry tiers, dead, status
    /// too), for a RabbitMQ cluster: a node's loss then loses no waiting job.
    /// Set it on every process, from the start (docs/scaling.md).
    #[arg(long, env = "BROKER_REPLICATED")]
    pub broker_replicated: bool,

    /// Delivery queues (K). A recipient's jobs always go to one of them (a stable
    /// hash of the recipient id), so order and exactly-once do not depend on K;
    /// more than 1 spreads delivery over a cluster's nodes. Every process must
    /// use the same K; docs/scaling.md says how to change it.
    #[arg(long, env = "DELIVERY_QUEUES", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub delivery_queues: u16,

    #[command(flatten)]
    pub retry: RetryConfig,

    /// Log output: `text` for people, `json` for log pipelines. Filter with RUST_LOG.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The retry tiers a job for an offline recipient walks through before it is parked.
/// Each tier is a RabbitMQ queue whose message TTL is the tier's delay.
#[derive(clap::Args, Debug, Clone)]
pub struct RetryConfig {
    /// Delay of the first retry tier.
    #[arg(long, env = "RETRY_MIN_DELAY", default_value = "1s", value_parser = parse_duration)]
    pub retry_min_delay: Duration,

    /// Factor between consecutive tiers.
    #[arg(long, env = "RETRY_FACTOR", default_value_t = 5.0)]
    pub retry_factor: f32,

    /// Longest tier delay.
    #[arg(long, env = "RETRY_MAX_DELAY", default_value = "2m", value_parser = parse_duration)]
    pub retry_max_delay: Duration,

    /// Number of tiers; after the last one the job is parked in PostgreSQL until the user connects.
    #[arg(long, env = "RETRY_TIERS", default_value_t = 4, value_parser = clap::value_parser!(u8).range(1..=10))]
    pub retry_tiers: u8,
}

impl RetryConfig {
    /// The tier delays, from the exponential schedule of `backon` (no jitter: a
    /// tier is a queue with one fixed TTL).
    pub fn tier_delays(&self) -> Vec<Duration> {
        let mut delays: Vec<Duration> = ExponentialBuilder::default()
            .with_min_delay(self.retry_min_delay)
            .with_factor(self.retry_factor)
            .with_max_delay(self.retry_max_delay)
            .with_max_times(usize::from(self.retry_tiers))
            .build()
            .collect();
        // Two equal delays would be two queues with the same name; keep one.
        delays.dedup();
        delays
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            retry_min_delay: Duration::from_secs(1),
            retry_factor: 5.0,
            retry_max_delay: Duration::from_secs(120),
            retry_tiers: 4,
        }
    }
}

/// Parses a duration the way humans write one: `250ms`, `5s`, `2m`, `1h 30m`, `7d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|error| format!("`{text}` is not a duration like 500ms, 5s, 2m, 1h or 7d ({error})"))
}

/// Formats a duration the way tier queue names show it: `500ms`, `5s`, `2m`, `2m5s`.
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if !millis.is_multiple_of(1000) {
        return format!("{millis}ms");
    }
    let secs = millis / 1000;
    match (secs / 60, secs % 60) {
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m{s}s"),
    }
}

fn parse_prefix(text: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && text.len() <= 64
        && text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(text.to_owned())
    } else {
        Err("use 1-64 characters from [A-Za-z0-9._-]".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_tiers_follow_the_backon_schedule() {
        let delays = RetryConfig::default().tier_delays();
        let secs: Vec<u64> = delays.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, vec![1, 5, 25, 120]);
    }

    #[test]
    fn durations_round_trip() {
        for text in ["250ms", "5s", "2m", "2m5s"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(7 * 86_400));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
        // A bare number is ambiguous (seconds? milliseconds?): a unit is required.
        assert!(parse_duration("5").is_err());
    }
}
