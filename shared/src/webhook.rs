//! The offline push webhook's body, shared by the worker that sends it and
//! the API's OpenAPI document that describes it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// The body of the offline push webhook: the worker POSTs it to
/// PUSH_WEBHOOK_URL when a message finds its recipient offline, at most once
/// per user per quiet period, so the host app can send a mobile push. The
/// worker serializes it (worker/src/webhook.rs), the OpenAPI document
/// describes it, and the tests check real bodies against that description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OfflineMessagesNotice {
    pub event: NoticeEvent,
    /// The same value as `idempotencyKey`, kept for receivers written before it.
    pub id: Uuid,
    /// New for each notice, the same in every retry of it (and in the
    /// `idempotency-key` header): a receiver drops a notice whose key it has
    /// already handled, e.g. a retry after its 200 was lost.
    pub idempotency_key: Uuid,
    /// The offline recipient.
    pub user_id: String,
    /// Messages the user lacks, over all chats.
    pub pending: i64,
    /// Who sent the newest of them.
    pub newest_sender_id: Option<String>,
    pub newest_sender_name: Option<String>,
    pub newest_message_at: Option<DateTime<Utc>>,
    pub notified_at: DateTime<Utc>,
}

/// The kind of notice; the `x-courier-event` header says the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NoticeEvent {
    OfflineMessages,
}
