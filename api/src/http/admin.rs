//! `/admin`: what an operator needs to see and unstick deliveries. Every route
//! needs a token with the `admin` role (`"role": "admin"` or `"roles": ["admin"]`):
//! no or a bad token is 401, a valid token without the role is 403.
//! docs/operations.md has curl examples.

use axum::{
    Json,
    extract::{FromRequestParts, Path, Query, State, rejection::{PathRejection, QueryRejection}},
    http::{StatusCode, request::Parts},
};
use chrono::Utc;
use courier_shared::{
    ClientError, ErrorCode,
    auth::Claims,
    broker::PublishOptions,
    db::{
        deadletters::{self, DeadLetter},
        ops::{self, Backlog, DeviceBacklog, PendingMessage, PendingPosition},
    },
    job::{DeliveryJob, PresenceEvent, PresenceKind},
};
use serde::{Deserialize, Serialize};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    auth::AuthUser,
    error::{ApiError, ErrorBody},
};
use crate::{outbox, state::AppState};

const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 1000;

/// The admin routes; each is in the OpenAPI document (`routes!` adds the
/// route and its description together).
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(backlog))
        .routes(routes!(user))
        .routes(routes!(pending))
        .routes(routes!(parked))
        .routes(routes!(requeue))
        .routes(routes!(dead_letters))
        .routes(routes!(dead_letter, drop_dead_letter))
        .routes(routes!(replay_dead_letter))
        .fallback(super::error::no_such_route)
}

/// A caller whose token carries the `admin` role.
pub struct Admin {
    pub claims: Claims,
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        // Same token rules (and rate limit) as every other caller.
        let user = AuthUser::from_request_parts(parts, state).await?;
        if !user.claims.is_admin() {
            return Err(ApiError(ClientError::new(ErrorCode::Forbidden, "the admin API needs a token with the admin role")));
        }
        tracing::info!(admin = %user.claims.sub, method = %parts.method, path = %parts.uri.path(), "admin request");
        Ok(Admin { claims: user.claims })
    }
}

/// A page of a list ordered by id.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// Start after this id (a previous page's `nextAfter`).
    after: Option<i64>,
    /// Page size, 1 to 1000.
    limit: Option<i64>,
}

impl Page {
    fn limit(&self) -> i64 {
        self.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE)
    }
    fn after(&self) -> i64 {
        self.after.unwrap_or(0)
    }
}

/// Undelivered messages overall, and the users with the most.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BacklogReport {
    /// Messages not yet delivered to some recipient, summed over recipients.
    undelivered: i64,
    /// Of those, the ones whose jobs are parked.
    parked: i64,
    /// Age of the oldest undelivered message (0 when there is none).
    oldest_age_seconds: i64,
    /// The users with the most undelivered messages, most first.
    users: Vec<Backlog>,
}

/// `GET /admin/backlog?limit=N`: the users with the most undelivered messages.
#[utoipa::path(
    get, path = "/backlog", operation_id = "adminBacklog",
    params(("limit" = Option<i64>, Query, description = "How many users, 1 to 1000 (default 10).")),
    responses(
        (status = 200, description = "The backlog.", body = BacklogReport),
        (status = 400, description = "`invalid_payload`: a bad query.", body = ErrorBody),
    ),
    security(("bearer" = []), ("token" = [])),
)]
async fn backlog(
    _admin: Admin,
    State(state): State<AppState>,
    page: Result<Query<Page>, QueryRejection>,
) -> Result<Json<BacklogReport>, ApiError> {
    let Query(page) = page?;
    let (undelivered, parked, oldest_age_seconds) = ops::backlog(&state.db).await?;
    let users = ops::top_backlogs(&state.db, page.limit.unwrap_or(10).clamp(1, MAX_PAGE)).await?;
    Ok(Json(BacklogReport { undelivered, parked, oldest_age_seconds, users }))
}

/// A page of a user's pending messages: `after` is a `CHAT_ID:SEQ` position
/// (a previous page's `nextAfter`).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PendingPage {
    /// `CHAT_ID:SEQ`: start after this message (a previous page's `nextAfter`).
    after: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    limit: Option<i64>,
}

/// One user's delivery state, and a page of what they lack.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserReport {
    user_id: String,
    /// Messages the user lacks, over all chats.
    pending: i64,
    /// Of those, the ones whose jobs are parked.
    parked: i64,
    /// When the oldest pending message was sent.
    oldest: Option<chrono::DateTime<Utc>>,
    /// Connections the user has open now, on any node.
    connections: usize,
    devices: Vec<DeviceBacklog>,
    messages: Vec<PendingMessage>,
    /// `CHAT_ID:SEQ` for the next page's `after`; null on the last page.
    #[schema(value_type = Option<String>)]
    next_after: Option<PendingPosition>,
}

impl PendingPage {
    fn limit(&self) -> i64 {
        self.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE)
    }
    fn after(&self) -> Result<PendingPosition, ApiError> {
        match self.after.as_deref() {
            None | Some("") => Ok(PendingPosition::START),
            Some(text) => text.parse().map_err(|error| ApiError(ClientError::invalid_payload(format!("after: {error}")))),
        }
    }
}

/// `GET /admin/users/{id}`: the same report as `/pending`.
#[utoipa::path(
    get, path = "/users/{user_id}", operation_id = "adminUser",
    params(("user_id" = String, Path, description = "The user."), PendingPage),
    responses(
        (status = 200, description = "The user's report.", body = UserReport),
        (status = 400, description = "`invalid_payload`: a bad `after` or query.", body = ErrorBody),
    ),
    security(("bearer" = []), ("token" = [])),
)]
async fn user(
    admin: Admin,
    state: State<AppState>,
    user_id: Result<Path<String>, PathRejection>,
    page: Result<Query<PendingPage>, QueryRejection>,
) -> Result<Json<UserReport>, ApiError> {
    pending(admin, state, user_id, page).await
}

/// `GET /admin/users/{id}/pending?after=CHAT_ID:SEQ&limit=N`:
/// counts, the user's devices and how far behind each is, and a page of
/// undelivered messages.
#[utoipa::path(
    get, path = "/users/{user_id}/pending", operation_id = "adminUserPending",
    params(("user_id" = String, Path, description = "The user."), PendingPage),
    responses(
        (status = 200, description = "The user's report with a page of pending messages.", body = UserReport),
        (status = 400, description = "`invalid_payload`: a bad `after` or query.", body = ErrorBody),
    ),
    security(("bearer" = []), ("token" = [])),
)]
async fn pending(
    _admin: Admin,
    State(state): State<AppState>,
    user_id: Result<Path<String>, PathRejection>,
    page: Result<Query<PendingPage>, QueryRejection>,
) -> Result<Json<UserReport>, ApiError> {
    let (Path(user_id), Query(page)) = (user_id?, page?);
    user_report(&state, &user_id, &page, false).await
}

/// `GET /admin/users/{id}/parked`: the same report, the page of messages
/// only those whose jobs are parked (out of retry tiers, waiting for a connect).
#[utoipa::path(
    get, path = "/users/{user_id}/parked", operation_id = "adminUserParked",
    params(("user_id" = String, Path, description = "The user."), PendingPage),
    responses(
        (status = 200, description = "The user's report with a page of parked messages.", body = UserReport),
        (status = 400, description = "`invalid_payload`: a bad `after` or query.", body = ErrorBody),
    ),
    security(("bearer" = []), ("token" = [])),
)]
async fn parked(
    _admin: Admin,
    State(state): State<AppState>,
    user_id: Result<Path<String>, PathRejection>,
    page: Result<Query<PendingPage>, QueryRejection>,
) -> Result<Json<UserReport>, ApiError> {
    let (Path(user_id), Query(page)) = (user_id?, page?);
    user_report(&state, &user_id, &page, true).await
}

async fn user_report(state: &AppState, user_id: &str, page: &PendingPage, parked_only: bool) -> Result<Json<UserReport>, ApiError> {
    let after = page.after()?;
    let backlog = ops::backlog_of(&state.db, user_id).await?;
    let messages = ops::pending_of(&state.db, user_id, after, page.limit(), parked_only).await?;
    let online = ops::connections_of(&state.db, user_id).await?.len();
    let devices = ops::devices_of(&state.db, user_id).await?;
    let next = (messages.len() as i64 == page.limit()).then(|| messages.last().map(|m| m.position())).flatten();
    Ok(Json(UserReport {
        user_id: user_id.to_owned(),
        pending: backlog.pending,
        parked: backlog.parked,
        oldest: backlog.oldest,
        connections: online,
        devices,
        messages,
        next_after: next,
    }))
}

/// What a requeue did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Requeued {
    user_id: String,
    /// Jobs put back on the delivery queue, one per chat with parked jobs.
    requeued: usize,
    /// Drains requested, one per open connection of the user.
    drains: usize,
}

/// `POST /admin/users/{id}/requeue`: delivers the user's parked jobs now.
/// Each chat with parked jobs is un-parked and gets one job back on the
/// delivery queue, for the first message the user lacks there (the same kind
/// of job the API publishes for a new message: the worker pushes it if the
/// user is online, or walks it through the retry tiers again); if the user is
/// online, each of their connections also gets a fresh drain (the presence
/// path: a `resync` event), which delivers everything pending, parked or
/// not, in order.
#[utoipa::path(
    post, path = "/users/{user_id}/requeue", operation_id = "adminRequeue",
    params(("user_id" = String, Path, description = "The user.")),
    responses(
        (status = 200, description = "Requeued.", body = Requeued),
        (status = 503, description = "`unavailable`: RabbitMQ did not confirm the jobs; they stay parked.", body = ErrorBody),
    ),
    security(("bearer" = []), ("token" = [])),
)]
async fn requeue(
    admin: Admin,
    State(state): State<AppState>,
    user_id: Result<Path<String>, PathRejection>,
) -> Result<Json<Requeued>, ApiError> {
    let Path(user_id) = user_id?;
    let mut tx = state.db.begin().await?;
    let jobs: Vec<DeliveryJob> = ops::unpark(&mut tx, &user_id).await?;
    // Committed only once RabbitMQ has confirmed every job: a failure leaves them parked.
    if !jobs.is_empty() && !outbox::publish_jobs(&state.broker, &jobs).await {
        tx.rollback().await?;
        return Err(ApiError(ClientError::unavailable("RabbitMQ")));
    }
    tx.commit().await?;

    let connections = ops::connections_of(&state.db, &user_id).await?;
    let exchange = state.broker.topology().presence();
    let mut drains = 0;
    for (connection_id, device_id, node_id) in &connections {
        let event = PresenceEvent {
            user_id: user_id.clone(),
            device_id: device_id.clone(),
            node_id: node_id.clone(),
            connection_id: *connection_id,
            kind: PresenceKind::Resync { resume_after: 0 },
            at: Utc::now(),
        };
        match state.broker.publish_json(&exchange, "", &event, PublishOptions::persistent()).await {
            Ok(()) => drains += 1,
            Err(error) => tracing::warn!(%error, %connection_id, "cannot request a drain for a requeue"),
        }
    }
    tracing::info!(admin = %admin.claims.sub, %user_id, requeued = jobs.len(), drains, "requeued parked jobs");
    Ok(Json(Requeued { user_id, requeued: jobs.len(), drains }))
}

/// A page of dead letters.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterPage {
    /// Dead letters stored, all pages.
    total: i64,
    dead_letters: Vec<DeadLetter>,
    /// The id for the next page's `after`; null on the last page.
    next_after: Option<i64>,
}

/// `GET /admin/dead-letters?after=ID&limit=N`: oldest first.
#[utoipa::path(
    get, path = "/dead-letters", operation_id = "adminDeadLetters",
    params(Page),
    responses(
        (status = 200, description = "A page of dead letters, oldest first.", body = DeadLetterPage),
        (status = 400, description = "`invalid_payload`: a bad query.", body = ErrorBody),
    ),
    security(("bearer" = []), ("token" = [])),
)]
async fn dead_letters(
    _admin: Admin,
    State(state): State<AppState>,
    page: Result<Query<Page>, QueryRejection>,
) -> Result<Json<DeadLetterPage>, ApiError> {
    let Query(page) = page?;
    let letters = deadletters::list(&state.db, page.after(), page.limit()).await?;
    let total = deadletters::count(&state.db).await?;
    let next = (letters.len() as i64 == page.limit()).then(|| letters.last().map(|l| l.id)).flatten();
    Ok(Json(DeadLetterPage { total, dead_letters: letters, next_after: next }))
}

/// `GET /admin/dead-letters/{id}`: body, reason and headers (with RabbitMQ's `x-death`).
#[utoipa::path(
    get, path = "/dead-letters/{id}", operation_id = "adminDeadLetter",
    params(("id" = i64, Path, description = "The dead letter.")),
    responses(
        (status = 200, description = "The dead letter.", body = DeadLetter),
        (status = 400, description = "`invalid_payload`: the id is not a number.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such dead letter.", body = ErrorBody),
    ),
    security(("bearer" = []), ("token" = [])),
)]
async fn dead_letter(
    _admin: Admin,
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<DeadLetter>, ApiError> {
    let Path(id) = id?;
    let letter = deadletters::get(&state.db, id).await?.ok_or_else(no_such_dead_letter)?;
    Ok(Json(letter))
}

/// `POST /admin/dead-letters/{id}/replay`: publishes the body again to the
/// queue it belongs to (delivery jobs to `delivery`, presence events to
/// `presence`), then deletes the dead letter. A body that is neither is 409:
/// no queue would accept it; drop it instead.
#[utoipa::path(
    post, path = "/dead-letters/{id}/replay", operation_id = "adminReplayDeadLetter",
    params(("id" = i64, Path, description = "The dead letter.")),
    responses(
        (status = 200, description = "Published again and deleted.", body = Replayed),
        (status = 400, description = "`invalid_payload`: the id is not a number.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such dead letter.", body = ErrorBody),
        (status = 409, description = "`conflict`: neither a delivery job nor a presence event.", body = ErrorBody),
        (status = 503, description = "`unavailable`: RabbitMQ did not take it; it is kept.", body = ErrorBody),
    ),
    security(("bearer" = []), ("token" = [])),
)]
async fn replay_dead_letter(
    admin: Admin,
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<Replayed>, ApiError> {
    let Path(id) = id?;
    let letter = deadletters::get(&state.db, id).await?.ok_or_else(no_such_dead_letter)?;
    let topology = state.broker.topology();
    let (exchange, key, target) = if let Ok(job) = serde_json::from_slice::<DeliveryJob>(&letter.raw) {
        (topology.delivery(), topology.job_key_for(&job.recipient_id), "delivery")
    } else if serde_json::from_slice::<PresenceEvent>(&letter.raw).is_ok() {
        (topology.presence(), String::new(), "presence")
    } else {
        return Err(ApiError(ClientError::new(
            ErrorCode::Conflict,
            "this dead letter is neither a delivery job nor a presence event; it cannot be replayed",
        )));
    };
    state
        .broker
        .publish(&exchange, &key, &letter.raw, PublishOptions::persistent())
        .await
        .map_err(|error| {
            tracing::warn!(%error, id, "cannot replay a dead letter");
            ApiError(ClientError::unavailable("RabbitMQ"))
        })?;
    // Published first, deleted second: a crash in between replays it twice,
    // and a duplicate job is harmless.
    deadletters::delete(&state.db, id).await?;
    tracing::info!(admin = %admin.claims.sub, id, target, "replayed a dead letter");
    Ok(Json(Replayed { id, replayed_to: target }))
}

/// Where a replayed dead letter went.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Replayed {
    id: i64,
    /// The queue it was published to again.
    #[schema(value_type = String, example = "delivery")]
    replayed_to: &'static str,
}

/// `DELETE /admin/dead-letters/{id}`: 204.
#[utoipa::path(
    delete, path = "/dead-letters/{id}", operation_id = "adminDropDeadLetter",
    params(("id" = i64, Path, description = "The dead letter.")),
    responses(
        (status = 204, description = "Dropped."),
        (status = 400, description = "`invalid_payload`: the id is not a number.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such dead letter.", body = ErrorBody),
    ),
    security(("bearer" = []), ("token" = [])),
)]
async fn drop_dead_letter(
    admin: Admin,
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path(id) = id?;
    if !deadletters::delete(&state.db, id).await? {
        return Err(no_such_dead_letter());
    }
    tracing::info!(admin = %admin.claims.sub, id, "dropped a dead letter");
    Ok(StatusCode::NO_CONTENT)
}

fn no_such_dead_letter() -> ApiError {
    ApiError(ClientError::new(ErrorCode::NotFound, "no such dead letter"))
}
