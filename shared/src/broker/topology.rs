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
        Self { prefix: prefix.to_owned(), tiers, replicated: false }
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

    pub fn is_replicated(&self) -> bool {
        self.replicated
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Exchange and quorum queue of delivery jobs.
    pub fn delivery(&self) -> String {
        format!("{}.delivery", self.prefix)
    }
    /// Routing key for publishing a job to [`Self::delivery`].
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
        let mut queues = vec![self.delivery(), self.dead(), self.presence(), self.status()];
        queues.extend(self.tiers.iter().map(|tier| tier.queue.clone()));
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

        let mut delivery_args = quorum();
        delivery_args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(DELIVERY_LIMIT));
        delivery_args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(self.dead().into()));
        self.durable_queue(channel, &self.delivery(), delivery_args, &self.delivery(), JOB_KEY).await?;

        for tier in &self.tiers {
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
            args.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(JOB_KEY.into()));
            self.durable_queue(channel, &tier.queue, args, &self.retry(), &tier.queue).await?;
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
