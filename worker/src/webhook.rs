//! The offline push webhook: when a message finds its recipient offline, the
//! host app is told (once per user per quiet period, with the pending count
//! and the newest sender) so it can send a mobile push and wake the app.
//!
//! Delivery never waits for it: recipients are offered to a bounded queue
//! (full means dropped and counted), one task claims the user's quiet period
//! in PostgreSQL (so several workers notify a user once), and each request
//! runs on its own task, at most CONCURRENCY at once, retried with backoff.

use std::{sync::Arc, time::Duration};

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::Utc;
use courier_shared::{
    db::ops,
    metrics::Metrics,
    webhook::{NoticeEvent, OfflineMessagesNotice},
};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use sqlx::PgPool;
use tokio::sync::{Semaphore, mpsc};
use uuid::Uuid;

use crate::config::WebhookConfig;

/// Recipients waiting to be considered; beyond this they are dropped (and counted).
const QUEUE: usize = 4096;
/// Webhook requests in flight at once.
const CONCURRENCY: usize = 16;
/// Header with `sha256=` and the hex HMAC-SHA256 of the body under PUSH_WEBHOOK_SECRET.
pub const SIGNATURE_HEADER: &str = "x-courier-signature";
/// Header with the notice's idempotency key (also `idempotencyKey` in the body).
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// Why the webhook configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WebhookConfigError {
    #[error("PUSH_WEBHOOK_SECRET must be set (at least 16 bytes) when PUSH_WEBHOOK_URL is")]
    MissingSecret,
    #[error("cannot build the webhook HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// Hands offline recipients to the webhook task; cheap to clone.
#[derive(Clone, Default)]
pub struct Webhook {
    queue: Option<mpsc::Sender<String>>,
    metrics: Option<Metrics>,
}

impl Webhook {
    /// Starts the webhook task, or a no-op if no URL is configured.
    pub fn start(config: &WebhookConfig, db: PgPool, metrics: Metrics) -> Result<Self, WebhookConfigError> {
        // An empty URL (e.g. `PUSH_WEBHOOK_URL=` in a compose file) means off, too.
        let Some(url) = config.push_webhook_url.clone().filter(|url| !url.trim().is_empty()) else { return Ok(Self::default()) };
        if config.push_webhook_secret.len() < 16 {
            return Err(WebhookConfigError::MissingSecret);
        }
        let client = reqwest::Client::builder().timeout(config.push_webhook_timeout).build()?;
        let (queue, incoming) = mpsc::channel(QUEUE);
        let sender = Sender {
            client,
            url,
            secret: config.push_webhook_secret.clone(),
            attempts: config.push_webhook_attempts.max(1),
            metrics: metrics.clone(),
        };
        tokio::spawn(run(incoming, db, Arc::new(sender), config.push_webhook_quiet_period, metrics.clone()));
        Ok(Self { queue: Some(queue), metrics: Some(metrics) })
    }

    /// A message found `user_id` offline. Never waits.
    pub fn offer(&self, user_id: &str) {
        let Some(queue) = &self.queue else { return };
        if queue.try_send(user_id.to_owned()).is_err()
            && let Some(metrics) = &self.metrics
        {
            metrics.push_webhooks.with_label_values(&["dropped"]).inc();
        }
    }
}

async fn run(mut incoming: mpsc::Receiver<String>, db: PgPool, sender: Arc<Sender>, quiet: Duration, metrics: Metrics) {
    let slots = Arc::new(Semaphore::new(CONCURRENCY));
    while let Some(user_id) = incoming.recv().await {
        let summary = match ops::claim_push(&db, &user_id, quiet).await {
            Ok(true) => ops::push_summary(&db, &user_id).await,
            Ok(false) => {
                metrics.push_webhooks.with_label_values(&["coalesced"]).inc();
                continue;
            }
            Err(error) => Err(error),
        };
        let summary = match summary {
            Ok(summary) if summary.pending > 0 => summary,
            Ok(_) => continue, // delivered meanwhile: nothing to wake the app for
            Err(error) => {
                tracing::warn!(%error, %user_id, "cannot prepare an offline push notice");
                metrics.push_webhooks.with_label_values(&["failed"]).inc();
                continue;
            }
        };
        // Minted once per claimed notice, before the first attempt: every retry
        // of this notice carries the same key, the next notice a new one, so
        // the receiver can drop a notice it has already handled (a retry after
        // a lost 200, say). `id` is the same value, kept for older receivers.
        let idempotency_key = Uuid::now_v7();
        let notice = OfflineMessagesNotice {
            event: NoticeEvent::OfflineMessages,
            id: idempotency_key,
            idempotency_key,
            user_id: user_id.clone(),
            pending: summary.pending,
            newest_sender_id: summary.newest_sender_id,
            newest_sender_name: summary.newest_sender_name,
            newest_message_at: summary.newest_message_at,
            notified_at: Utc::now(),
        };
        let body = match serde_json::to_string(&notice) {
            Ok(body) => body,
            Err(error) => {
                tracing::warn!(%error, %user_id, "webhook notice not serializable; dropped");
                metrics.push_webhooks.with_label_values(&["failed"]).inc();
                continue;
            }
        };
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        let sender = sender.clone();
        tokio::spawn(async move {
            sender.send(&user_id, idempotency_key, body).await;
            drop(permit);
        });
    }
}

struct Sender {
    client: reqwest::Client,
    url: String,
    secret: String,
    attempts: u32,
    metrics: Metrics,
}

impl Sender {
    /// POSTs one notice, retrying network errors, 429 and 5xx with backoff.
    async fn send(&self, user_id: &str, idempotency_key: Uuid, body: String) {
        let signature = format!("sha256={}", sign(&self.secret, body.as_bytes()));
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(500))
            .with_max_delay(Duration::from_secs(60))
            .with_jitter()
            .with_max_times(self.attempts.saturating_sub(1) as usize)
            .build();
        for attempt in 1.. {
            let result = self
                .client
                .post(&self.url)
                .header("content-type", "application/json")
                .header(SIGNATURE_HEADER, &signature)
                .header(IDEMPOTENCY_HEADER, idempotency_key.to_string())
                .header("x-courier-event", "offline_messages")
                .body(body.clone())
                .send()
                .await;
            let retryable = match result {
                Ok(response) if response.status().is_success() => {
                    tracing::info!(%user_id, attempt, "offline push webhook delivered");
                    self.metrics.push_webhooks.with_label_values(&["sent"]).inc();
                    return;
                }
                Ok(response) => {
                    let status = response.status();
                    tracing::warn!(%user_id, attempt, %status, "offline push webhook refused");
                    status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408
                }
                Err(error) => {
                    tracing::warn!(%user_id, attempt, %error, "offline push webhook unreachable");
                    true
                }
            };
            match delays.next() {
                Some(delay) if retryable => tokio::time::sleep(delay).await,
                _ => break,
            }
        }
        tracing::error!(%user_id, "offline push webhook given up");
        self.metrics.push_webhooks.with_label_values(&["failed"]).inc();
    }
}

/// Hex HMAC-SHA256 of `body` under `secret`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    // HMAC accepts keys of any length: new_from_slice cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    #[test]
    fn signature_matches_a_known_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            super::sign("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
