//! `/admin`: what an operator needs to see and unstick deliveries. Every route
//! needs a token with the `admin` role (`"role": "admin"` or `"roles": ["admin"]`):
//! no or a bad token is 401, a valid token without the role is 403.
//! docs/operations.md has curl examples.

use axum::{
    Json, Router,
    extract::{FromRequestParts, Path, Query, State, rejection::{PathRejection, QueryRejection}},
    http::{StatusCode, request::Parts},
    routing::{get, post},
};
use chrono::Utc;
use courier_shared::{
    ClientError, ErrorCode,
    auth::Claims,
    broker::PublishOptions,
    db::{
        deadletters,
        ops::{self, PendingPosition},
    },
    job::{DeliveryJob, PresenceEvent, PresenceKind},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{auth::AuthUser, error::ApiError};
use crate::{outbox, state::AppState};

const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 1000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/backlog", get(backlog))
        .route("/users/{user_id}", get(pending))
        .route("/users/{user_id}/pending", get(pending))
        .route("/users/{user_id}/parked", get(parked))
        .route("/users/{user_id}/requeue", post(requeue))
        .route("/dead-letters", get(dead_letters))
        .route("/dead-letters/{id}", get(dead_letter).delete(drop_dead_letter))
        .route("/dead-letters/{id}/replay", post(replay_dead_letter))
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

#[derive(Debug, Deserialize)]
pub struct Page {
    after: Option<i64>,
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

/// `GET /admin/backlog?limit=N`: the users with the most undelivered messages.
async fn backlog(
    _admin: Admin,
    State(state): State<AppState>,
    page: Result<Query<Page>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(page) = page?;
    let (undelivered, parked, oldest_age) = ops::backlog(&state.db).await?;
    let users = ops::top_backlogs(&state.db, page.limit.unwrap_or(10).clamp(1, MAX_PAGE)).await?;
    Ok(Json(json!({
        "undelivered": undelivered,
        "parked": parked,
        "oldestAgeSeconds": oldest_age,
        "users": users,
    })))
}

/// A page of a user's pending messages: `after` is a `CHAT_ID:SEQ` position
/// (a previous page's `nextAfter`).
#[derive(Debug, Deserialize)]
pub struct PendingPage {
    after: Option<String>,
    limit: Option<i64>,
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

/// `GET /admin/users/{id}` and `GET /admin/users/{id}/pending?after=CHAT_ID:SEQ&limit=N`:
/// counts, the user's devices and how far behind each is, and a page of
/// undelivered messages.
async fn pending(
    _admin: Admin,
    State(state): State<AppState>,
    user_id: Result<Path<String>, PathRejection>,
    page: Result<Query<PendingPage>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let (Path(user_id), Query(page)) = (user_id?, page?);
    user_report(&state, &user_id, &page, false).await
}

/// `GET /admin/users/{id}/parked`: the same report, the page of messages
/// only those whose jobs are parked (out of retry tiers, waiting for a connect).
async fn parked(
    _admin: Admin,
    State(state): State<AppState>,
    user_id: Result<Path<String>, PathRejection>,
    page: Result<Query<PendingPage>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let (Path(user_id), Query(page)) = (user_id?, page?);
    user_report(&state, &user_id, &page, true).await
}

async fn user_report(state: &AppState, user_id: &str, page: &PendingPage, parked_only: bool) -> Result<Json<Value>, ApiError> {
    let after = page.after()?;
    let backlog = ops::backlog_of(&state.db, user_id).await?;
    let messages = ops::pending_of(&state.db, user_id, after, page.limit(), parked_only).await?;
    let online = ops::connections_of(&state.db, user_id).await?.len();
    let devices = ops::devices_of(&state.db, user_id).await?;
    let next = (messages.len() as i64 == page.limit()).then(|| messages.last().map(|m| m.position())).flatten();
    Ok(Json(json!({
        "userId": user_id,
        "pending": backlog.pending,
        "parked": backlog.parked,
        "oldest": backlog.oldest,
        "connections": online,
        "devices": devices,
        "messages": messages,
        "nextAfter": next,
    })))
}

/// `POST /admin/users/{id}/requeue`: delivers the user's parked jobs now.
/// Each chat with parked jobs is un-parked and gets one job back on the
/// delivery queue, for the first message the user lacks there (the same kind
/// of job the API publishes for a new message: the worker pushes it if the
/// user is online, or walks it through the retry tiers again); if the user is
/// online, each of their connections also gets a fresh drain (the presence
/// path: a `resync` event), which delivers everything pending, parked or
/// not, in order.
async fn requeue(
    admin: Admin,
    State(state): State<AppState>,
    user_id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(json!({ "userId": user_id, "requeued": jobs.len(), "drains": drains })))
}

/// `GET /admin/dead-letters?after=ID&limit=N`: oldest first.
async fn dead_letters(
    _admin: Admin,
    State(state): State<AppState>,
    page: Result<Query<Page>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(page) = page?;
    let letters = deadletters::list(&state.db, page.after(), page.limit()).await?;
    let total = deadletters::count(&state.db).await?;
    let next = (letters.len() as i64 == page.limit()).then(|| letters.last().map(|l| l.id)).flatten();
    Ok(Json(json!({ "total": total, "deadLetters": letters, "nextAfter": next })))
}

/// `GET /admin/dead-letters/{id}`: body, reason and headers (with RabbitMQ's `x-death`).
async fn dead_letter(
    _admin: Admin,
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<deadletters::DeadLetter>, ApiError> {
    let Path(id) = id?;
    let letter = deadletters::get(&state.db, id).await?.ok_or_else(no_such_dead_letter)?;
    Ok(Json(letter))
}

/// `POST /admin/dead-letters/{id}/replay`: publishes the body again to the
/// queue it belongs to (delivery jobs to `delivery`, presence events to
/// `presence`), then deletes the dead letter. A body that is neither is 409:
/// no queue would accept it; drop it instead.
async fn replay_dead_letter(
    admin: Admin,
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(json!({ "id": id, "replayedTo": target })))
}

/// `DELETE /admin/dead-letters/{id}`: 204.
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
