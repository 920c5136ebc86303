//! Prometheus metrics. Each API node and worker owns a [`Metrics`] with its own
//! registry (no global recorder: tests run several nodes in one process, and
//! each must report only its own numbers). docs/operations.md lists every series.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Which binary the metrics belong to; each registers only its own series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Api,
    Worker,
}

/// Delivery latencies span milliseconds (live) to days (drained after a long absence).
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0,
    604800.0,
];
const DRAIN_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0];

/// Every series a Courier process exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    // Both binaries.
    /// Deliveries by outcome: `delivered` (api, client acked), `pushed`,
    /// `retried`, `parked`, `dead_lettered`, `expired` (worker).
    pub deliveries: IntCounterVec,
    /// Jobs sent to a retry tier, by tier (its delay, e.g. `5s`).
    pub delivery_retries: IntCounterVec,
    pub broker_reconnects: IntCounter,
    /// Connections the PostgreSQL pool opened; growth after start-up means reconnects.
    pub db_connections_opened: IntCounter,
    pub db_pool_connections: IntGaugeVec,
    // API.
    pub connections_open: IntGauge,
    pub connections_opened: IntCounter,
    pub messages_accepted: IntCounter,
    pub rate_limited: IntCounter,
    /// Sent (stored) → client ack, by path: `live` or `drained`.
    pub delivery_latency: HistogramVec,
    pub outbox_pending: IntGauge,
    pub outbox_oldest_age: IntGauge,
    // Worker.
    pub undelivered: IntGauge,
    pub parked: IntGauge,
    pub oldest_undelivered_age: IntGauge,
    pub dead_letters: IntGauge,
    pub drain_duration: Histogram,
    pub drains: IntCounterVec,
    pub drained_messages: IntCounter,
    pub push_webhooks: IntCounterVec,
}

impl Metrics {
    pub fn new(role: Role) -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("valid metric");
        let counter_vec =
            |name: &str, help: &str, labels: &[&str]| IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("valid metric");
        let metrics = Self {
            deliveries: counter_vec("courier_deliveries_total", "Delivery jobs and acks by outcome.", &["outcome"]),
            delivery_retries: counter_vec(
                "courier_delivery_retries_total",
                "Jobs of offline recipients sent to a retry tier, by tier delay.",
                &["tier"],
            ),
            broker_reconnects: counter("courier_broker_reconnects_total", "RabbitMQ connections re-established after a failure."),
            db_connections_opened: counter(
                "courier_db_connections_opened_total",
                "PostgreSQL connections opened by the pool (growth after start-up: reconnects or recycling).",
            ),
            db_pool_connections: IntGaugeVec::new(
                Opts::new("courier_db_pool_connections", "PostgreSQL pool connections by pool and state."),
                &["pool", "state"],
            )
            .expect("valid metric"),
            connections_open: gauge("courier_connections_open", "Client connections open on this API node."),
            connections_opened: counter("courier_connections_opened_total", "Client connections accepted."),
            messages_accepted: counter("courier_messages_accepted_total", "New messages stored (resends excluded)."),
            rate_limited: counter("courier_rate_limited_total", "Requests and frames rejected by the per-user rate limit."),
            delivery_latency: HistogramVec::new(
                HistogramOpts::new("courier_delivery_latency_seconds", "From a message being stored to the recipient's client ack.")
                    .buckets(LATENCY_BUCKETS.to_vec()),
                &["path"],
            )
            .expect("valid metric"),
            outbox_pending: gauge("courier_outbox_pending", "Messages whose delivery jobs RabbitMQ has not yet confirmed."),
            outbox_oldest_age: gauge("courier_outbox_oldest_age_seconds", "Age of the oldest outbox row (the outbox lag)."),
            undelivered: gauge("courier_undelivered_messages", "Message recipients still `sent` (the backlog, all users)."),
            parked: gauge("courier_parked_messages", "Undelivered messages parked after every retry tier."),
            oldest_undelivered_age: gauge("courier_oldest_undelivered_age_seconds", "Age of the oldest undelivered message."),
            dead_letters: gauge("courier_dead_letters", "Dead letters kept for an operator (admin API)."),
            drain_duration: Histogram::with_opts(
                HistogramOpts::new("courier_drain_duration_seconds", "How long a reconnect drain took, begin to end.")
                    .buckets(DRAIN_BUCKETS.to_vec()),
            )
            .expect("valid metric"),
            drains: counter_vec("courier_drains_total", "Reconnect drains by result (`complete`, `stopped`).", &["result"]),
            drained_messages: counter("courier_drained_messages_total", "Messages sent to clients by reconnect drains."),
            push_webhooks: counter_vec(
                "courier_push_webhooks_total",
                "Offline push webhook calls by result (`sent`, `coalesced`, `failed`, `dropped`).",
                &["result"],
            ),
            registry,
        };
        metrics.register(role);
        metrics
    }

    fn register(&self, role: Role) {
        let r = &self.registry;
        let mut all: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(self.deliveries.clone()),
            Box::new(self.delivery_retries.clone()),
            Box::new(self.broker_reconnects.clone()),
            Box::new(self.db_connections_opened.clone()),
            Box::new(self.db_pool_connections.clone()),
        ];
        match role {
            Role::Api => all.extend([
                Box::new(self.connections_open.clone()) as Box<dyn prometheus::core::Collector>,
                Box::new(self.connections_opened.clone()),
                Box::new(self.messages_accepted.clone()),
                Box::new(self.rate_limited.clone()),
                Box::new(self.delivery_latency.clone()),
                Box::new(self.outbox_pending.clone()),
                Box::new(self.outbox_oldest_age.clone()),
            ]),
            Role::Worker => all.extend([
                Box::new(self.undelivered.clone()) as Box<dyn prometheus::core::Collector>,
                Box::new(self.parked.clone()),
                Box::new(self.oldest_undelivered_age.clone()),
                Box::new(self.dead_letters.clone()),
                Box::new(self.drain_duration.clone()),
                Box::new(self.drains.clone()),
                Box::new(self.drained_messages.clone()),
                Box::new(self.push_webhooks.clone()),
            ]),
        }
        for collector in all {
            // Names are unique by construction; a failure here is a bug caught by the tests.
            if let Err(error) = r.register(collector) {
                tracing::error!(%error, "cannot register a metric");
            }
        }
        // Outcomes and results present from the start, at 0, so dashboards and
        // rate() see them before the first event.
        let outcomes: &[&str] = match role {
            // The API acks deliveries, and bounces those whose recipient just left.
            Role::Api => &["delivered", "retried", "parked"],
            Role::Worker => &["pushed", "retried", "parked", "dead_lettered", "expired"],
        };
        for outcome in outcomes {
            self.deliveries.with_label_values(&[outcome]);
        }
        if role == Role::Worker {
            for result in ["sent", "coalesced", "failed", "dropped"] {
                self.push_webhooks.with_label_values(&[result]);
            }
        }
    }

    /// Counts one delivery outcome.
    pub fn delivery(&self, outcome: &str, count: u64) {
        if count > 0 {
            self.deliveries.with_label_values(&[outcome]).inc_by(count);
        }
    }

    /// Brings a counter up to a total kept elsewhere (e.g. the broker's reconnect count).
    pub fn sync_counter(counter: &IntCounter, total: u64) {
        let seen = counter.get();
        if total > seen {
            counter.inc_by(total - seen);
        }
    }

    /// Records a pool's connection counts, under its name: `main`, or `kept`
    /// (the connections that keep plans, `db::Plans::Kept`).
    pub fn observe_pool(&self, name: &str, pool: &sqlx::PgPool) {
        let size = i64::from(pool.size());
        let idle = i64::try_from(pool.num_idle()).unwrap_or(i64::MAX);
        self.db_pool_connections.with_label_values(&[name, "idle"]).set(idle);
        self.db_pool_connections.with_label_values(&[name, "in_use"]).set((size - idle).max(0));
    }

    /// The Prometheus text exposition of every registered series.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::error!(%error, "cannot encode metrics");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

/// `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
