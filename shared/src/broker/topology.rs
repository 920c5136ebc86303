//! Every exchange and queue, named under one prefix, declared idempotently by
//! whichever process starts first. docs/topology.md explains each one.

use std::time::Duration;

use lapin::{
    Channel, ExchangeKind,
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
};

use crate::config::{RetryConfig, format_duration};

/// Routing key of delivery jobs (and of retry tiers dead-lettering back to delivery).
const JOB_KEY: &str = "job";
/// How many times a job may be delivered to workers before RabbitMQ dead-letters
/// it as poison (a worker crashed or rejected it each time).
pub const DELIVERY_LIMIT: i64 = 10;

/// One retry tier: a queue whose messages expire after `delay` back into delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryTier {
    pub delay: Duration,
    pub queue: String,
}

/// The names of everything Courier keeps in RabbitMQ.
#[derive(Debug, Clone)]
pub struct Topology {
    prefix: String,
    tiers: Vec<RetryTier>,
    /// Delivery queues (K): a recipient's jobs always go to the same one, chosen
    /// by a stable hash of the recipient id. See [`Topology::sharded`].
    shards: usize,
    /// Every durable queue a quorum queue (replicated over a cluster's nodes),
    /// not only `delivery` and `presence`. See [`Topology::replicated`].
    replicated: bool,
}

impl Topology {
    pub fn new(prefix: &str, retry: &RetryConfig) -> Self {
        let tiers = retry
            .tier_delays()
            .into_iter()
            .map(|delay| RetryTier { delay, queue: format!("{prefix}.retry.{}", format_duration(delay)) })
            .collect();
        Self { prefix: prefix.to_owned(), tiers, replicated: false, shards: 1 }
    }

    /// Splits delivery over `shards` queues (`DELIVERY_QUEUES`). A quorum queue
    /// is led by one node, so one `delivery` queue caps a cluster at one node's
    /// throughput; K queues (leaders spread over the nodes by the
    /// `least-leaders` locator) do not. Each shard has its own retry tiers, so
    /// a retried job comes back to its own shard. With 1 (the default) the
    /// names are the single-queue names of earlier versions.
    pub fn sharded(mut self, shards: usize) -> Self {
        self.shards = shards.max(1);
        self
    }

    /// How many delivery queues there are.
    pub fn shards(&self) -> usize {
        self.shards
    }

    /// The shard of a recipient: FNV-1a of the id, so every process (and every
    /// version) agrees without coordination.
    pub fn shard_of(&self, recipient_id: &str) -> usize {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in recipient_id.as_bytes() {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        (hash % self.shards as u64) as usize
    }

    /// Delivery queue of shard `shard`.
    pub fn delivery_queue(&self, shard: usize) -> String {
        if self.shards == 1 { self.delivery() } else { format!("{}.delivery.{shard}", self.prefix) }
    }

    /// Every delivery queue, shard 0 first.
    pub fn delivery_queues(&self) -> Vec<String> {
        (0..self.shards).map(|shard| self.delivery_queue(shard)).collect()
    }

    /// Routing key of a job for `recipient_id` on the delivery exchange.
    pub fn job_key_for(&self, recipient_id: &str) -> String {
        self.shard_key(self.shard_of(recipient_id))
    }

    fn shard_key(&self, shard: usize) -> String {
        if self.shards == 1 { JOB_KEY.to_owned() } else { format!("{JOB_KEY}.{shard}") }
    }

    /// The queue of retry tier `tier` for jobs of shard `shard`.
    pub fn tier_queue(&self, tier: usize, shard: usize) -> String {
        let base = &self.tiers[tier.min(self.tiers.len().saturating_sub(1))].queue;
        if self.shards == 1 { base.clone() } else { format!("{base}.{shard}") }
    }

    /// On a RabbitMQ cluster every durable queue must survive the loss of a
    /// node, so the retry tiers, `dead` and `status` become quorum queues too
    /// (a tier's expired jobs are dead-lettered at-least-once). Off, they stay
    /// classic, as a single node's existing queues were declared: RabbitMQ
    /// refuses to redeclare a queue with another type (docs/scaling.md says
    /// how to move a deployment over).
    pub fn replicated(mut self, on: bool) -> Self {
        self.replicated = on;
        self
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Exchange of delivery jobs (and, unsharded, its one queue's name).
    pub fn delivery(&self) -> String {
        format!("{}.delivery", self.prefix)
    }
    /// Routing key of shard 0 (the only shard unless [`Topology::sharded`]);
    /// publish with [`Topology::job_key_for`] the recipient instead.
    pub fn job_key(&self) -> &'static str {
        JOB_KEY
    }
    /// Exchange of the retry tiers (routing key = tier queue name).
    pub fn retry(&self) -> String {
        format!("{}.retry", self.prefix)
    }
    pub fn tiers(&self) -> &[RetryTier] {
        &self.tiers
    }
    /// Exchange and queue of poison jobs.
    pub fn dead(&self) -> String {
        format!("{}.dead", self.prefix)
    }
    /// Exchange and queue of presence events (connect, disconnect, resync).
    pub fn presence(&self) -> String {
        format!("{}.presence", self.prefix)
    }
    /// Exchange and queue of committed status changes that senders must hear about.
    pub fn status(&self) -> String {
        format!("{}.status", self.prefix)
    }
    /// Direct exchange of per-node push queues (routing key = node id).
    pub fn push(&self) -> String {
        format!("{}.push", self.prefix)
    }
    /// The push queue of one API node.
    pub fn push_queue(&self, node_id: &str) -> String {
        format!("{}.push.{node_id}", self.prefix)
    }
    /// Direct exchange of per-worker control queues (routing key = worker id).
    pub fn control(&self) -> String {
        format!("{}.control", self.prefix)
    }
    /// The control queue of one worker (drain credits).
    pub fn control_queue(&self, worker_id: &str) -> String {
        format!("{}.control.{worker_id}", self.prefix)
    }

    /// Every durable exchange and queue; what a test deletes to clean up.
    pub fn durable_names(&self) -> (Vec<String>, Vec<String>) {
        let exchanges = vec![self.delivery(), self.retry(), self.dead(), self.presence(), self.status(), self.push(), self.control()];
        let mut queues = self.delivery_queues();
        queues.extend([self.dead(), self.presence(), self.status()]);
        for shard in 0..self.shards {
            queues.extend((0..self.tiers.len()).map(|tier| self.tier_queue(tier, shard)));
        }
        (exchanges, queues)
    }

    /// Declares the shared, durable part. Safe to run concurrently and repeatedly.
    pub async fn declare(&self, channel: &Channel) -> lapin::Result<()> {
        let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
        for (name, kind) in [
            (self.delivery(), ExchangeKind::Direct),
            (self.retry(), ExchangeKind::Direct),
            (self.dead(), ExchangeKind::Fanout),
            (self.presence(), ExchangeKind::Fanout),
            (self.status(), ExchangeKind::Fanout),
            (self.push(), ExchangeKind::Direct),
            (self.control(), ExchangeKind::Direct),
        ] {
            channel.exchange_declare(name.into(), kind, durable, FieldTable::default()).await?;
        }

        for shard in 0..self.shards {
            let mut delivery_args = quorum();
            delivery_args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(DELIVERY_LIMIT));
            delivery_args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(self.dead().into()));
            if self.shards > 1 {
                // Spread the shards' leaders over the nodes (RabbitMQ 4 reads this as `balanced`).
                delivery_args.insert("x-queue-leader-locator".into(), AMQPValue::LongString("least-leaders".into()));
            }
            let key = self.shard_key(shard);
            self.durable_queue(channel, &self.delivery_queue(shard), delivery_args, &self.delivery(), &key).await?;

            for (index, tier) in self.tiers.iter().enumerate() {
                let mut args = self.durable_args();
                if self.replicated {
                    // Expired jobs move on only once `delivery` has them, and a full tier
                    // refuses publishes instead of dropping its oldest jobs.
                    args.insert("x-dead-letter-strategy".into(), AMQPValue::LongString("at-least-once".into()));
                    args.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
                }
                let ttl = i64::try_from(tier.delay.as_millis()).unwrap_or(i64::MAX);
                args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
                args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(self.delivery().into()));
                // Back to the shard it came from.
                args.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(key.as_str().into()));
                let queue = self.tier_queue(index, shard);
                self.durable_queue(channel, &queue, args, &self.retry(), &queue).await?;
            }
        }

        self.durable_queue(channel, &self.dead(), self.durable_args(), &self.dead(), "").await?;
        let mut presence_args = quorum();
        presence_args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(DELIVERY_LIMIT));
        presence_args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(self.dead().into()));
        self.durable_queue(channel, &self.presence(), presence_args, &self.presence(), "").await?;
        self.durable_queue(channel, &self.status(), self.durable_args(), &self.status(), "").await?;
        Ok(())
    }

    /// Arguments of the queues whose type depends on [`Topology::replicated`].
    fn durable_args(&self) -> FieldTable {
        if self.replicated { quorum() } else { FieldTable::default() }
    }

    async fn durable_queue(
        &self,
        channel: &Channel,
        queue: &str,
        args: FieldTable,
        exchange: &str,
        key: &str,
    ) -> lapin::Result<()> {
        channel.queue_declare(queue.into(), QueueDeclareOptions::durable(), args).await?;
        channel
            .queue_bind(queue.into(), exchange.into(), key.into(), QueueBindOptions::default(), FieldTable::default())
            .await
    }

    /// Declares a queue that lives as long as this process's connection (push
    /// queue of a node, control queue of a worker) and binds it by `id`.
    pub async fn declare_private_queue(&self, channel: &Channel, queue: &str, exchange: &str, id: &str) -> lapin::Result<()> {
        let options = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
        channel.queue_declare(queue.into(), options, FieldTable::default()).await?;
        channel
            .queue_bind(queue.into(), exchange.into(), id.into(), QueueBindOptions::default(), FieldTable::default())
            .await
    }
}

fn quorum() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shard_keeps_the_single_queue_names() {
        let topology = Topology::new("c", &RetryConfig::default());
        assert_eq!(topology.delivery_queues(), vec!["c.delivery"]);
        assert_eq!(topology.job_key_for("bob"), "job");
        assert_eq!(topology.tier_queue(0, 0), "c.retry.1s");
    }

    #[test]
    fn a_recipient_always_lands_on_the_same_shard_and_shards_are_all_used() {
        let topology = Topology::new("c", &RetryConfig::default()).sharded(3);
        assert_eq!(topology.delivery_queues(), vec!["c.delivery.0", "c.delivery.1", "c.delivery.2"]);
        let shard = topology.shard_of("bob");
        assert_eq!(topology.job_key_for("bob"), format!("job.{shard}"));
        assert_eq!(topology.tier_queue(1, shard), format!("c.retry.5s.{shard}"));
        // FNV-1a is fixed: the same id maps to the same shard in every process and version.
        assert_eq!(Topology::new("x", &RetryConfig::default()).sharded(3).shard_of("bob"), shard);
        let used: std::collections::BTreeSet<usize> = (0..100).map(|i| topology.shard_of(&format!("user-{i}"))).collect();
        assert_eq!(used.len(), 3);
        let (_, queues) = topology.durable_names();
        assert_eq!(queues.len(), 3 + 3 + 3 * 4, "3 delivery, dead/presence/status, 4 tiers per shard: {queues:?}");
    }
}
