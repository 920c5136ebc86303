//! Retry tiers: a job whose recipient is offline goes to the tier for its
//! attempt (a TTL queue that dead-letters back to delivery) and, after the
//! last tier, is parked in PostgreSQL until the recipient connects.

use futures::future::join_all;
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    broker::{Broker, PublishError, PublishOptions, headers_with},
    db::ops,
    job::{ATTEMPT_HEADER, DeliveryJob},
};

/// A job and how many tiers it has been through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptedJob {
    pub job: DeliveryJob,
    pub attempt: u32,
}

/// The span of one job's log lines: `message_id`, `recipient_id` and `attempt`
/// follow a message from the API's publish through workers to the socket.
pub fn job_span(attempted: &AttemptedJob) -> tracing::Span {
    tracing::info_span!("job", message_id = %attempted.job.message_id, recipient_id = %attempted.job.recipient_id,
        attempt = attempted.attempt)
}

/// What became of jobs handed to [`retry_or_park`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RetryOutcome {
    /// Published to a retry tier, per tier index.
    pub retried: [u64; 10],
    pub parked: u64,
}

/// Sends each job to its next tier, or parks it after the last one. Returns an
/// error if any publish or the park failed; the caller must then keep (not ack) its jobs.
pub async fn retry_or_park(broker: &Broker, db: &PgPool, jobs: Vec<AttemptedJob>) -> Result<RetryOutcome, RetryError> {
    let topology = broker.topology();
    let tiers = topology.tiers();
    let exchange = topology.retry();
    let mut outcome = RetryOutcome::default();
    let (to_park, to_retry): (Vec<AttemptedJob>, Vec<AttemptedJob>) =
        jobs.into_iter().partition(|j| j.attempt as usize >= tiers.len());

    let queues: Vec<String> = to_retry
        .iter()
        .map(|attempted| topology.tier_queue(attempted.attempt as usize, topology.shard_of(&attempted.job.recipient_id)))
        .collect();
    let publishes = to_retry.iter().zip(&queues).map(|(attempted, queue)| {
        let options = PublishOptions::persistent().with_headers(headers_with(ATTEMPT_HEADER, attempted.attempt + 1));
        broker.publish_json(&exchange, queue, &attempted.job, options)
    });
    for (attempted, result) in to_retry.iter().zip(join_all(publishes).await) {
        result?;
        outcome.retried[attempted.attempt as usize] += 1;
        let tier = &tiers[attempted.attempt as usize];
        let _span = job_span(attempted).entered();
        // The guide's "Failed to deliver message … to user …: error" line.
        tracing::info!(message_id = %attempted.job.message_id, recipient_id = %attempted.job.recipient_id,
            attempt = attempted.attempt + 1, reason = "recipient_offline", retry_in = %crate::config::format_duration(tier.delay),
            "delivery failed: recipient offline; retrying");
    }

    if !to_park.is_empty() {
        let (message_ids, user_ids): (Vec<Uuid>, Vec<String>) =
            to_park.iter().map(|j| (j.job.message_id, j.job.recipient_id.clone())).unzip();
        outcome.parked = ops::park(db, &message_ids, &user_ids).await?;
        for parked in &to_park {
            let _span = job_span(parked).entered();
            tracing::info!(message_id = %parked.job.message_id, recipient_id = %parked.job.recipient_id,
                attempt = parked.attempt, reason = "recipient_offline",
                "delivery failed: recipient offline through every retry tier; parked until they connect");
        }
    }
    Ok(outcome)
}

impl RetryOutcome {
    /// Adds this outcome to the delivery counters (retries per tier, parked).
    pub fn record(&self, metrics: &crate::metrics::Metrics, topology: &crate::broker::Topology) {
        for (tier, count) in topology.tiers().iter().zip(self.retried) {
            if count > 0 {
                metrics.delivery_retries.with_label_values(&[&crate::config::format_duration(tier.delay)]).inc_by(count);
            }
        }
        metrics.delivery("retried", self.retried.iter().sum());
        metrics.delivery("parked", self.parked);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}
