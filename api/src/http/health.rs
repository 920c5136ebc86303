//! Liveness and readiness.

use axum::{Json, extract::State, http::StatusCode};
use serde::Serialize;

use crate::state::AppState;

/// `GET /healthz`: the process answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// Always `ok`.
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// `GET /readyz`: whether this node can serve, and which dependency it lacks.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Readiness {
    pub status: ReadyStatus,
    /// This node's id.
    pub node_id: String,
    pub postgres: Reachable,
    pub rabbitmq: Reachable,
    /// The JWKS (JWT_JWKS_URL) has loaded at least once; always `ok` without one.
    pub signing_keys: Reachable,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReadyStatus {
    Ready,
    NotReady,
}

/// Whether a dependency is reachable from this node.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reachable {
    Ok,
    Unavailable,
}

impl From<bool> for Reachable {
    fn from(ok: bool) -> Self {
        if ok { Reachable::Ok } else { Reachable::Unavailable }
    }
}

/// The process is up.
#[utoipa::path(
    get, path = "/healthz", tag = "health", operation_id = "healthz",
    responses((status = 200, description = "The process is up.", body = Health)),
)]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// PostgreSQL and RabbitMQ are reachable (and the JWKS loaded, if configured); 503 says which is not.
#[utoipa::path(
    get, path = "/readyz", tag = "health", operation_id = "readyz",
    responses(
        (status = 200, description = "Ready: PostgreSQL and RabbitMQ are reachable (and the JWKS loaded, if configured).", body = Readiness),
        (status = 503, description = "A dependency is unavailable; the body says which.", body = Readiness),
    ),
)]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let postgres = courier_shared::db::ping(&state.db).await;
    let rabbitmq = state.broker.is_connected();
    // Until the JWKS first loads, no token with a `kid` can be checked here.
    let signing_keys = state.jwt.keys_loaded();
    let ready = postgres && rabbitmq && signing_keys;
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = Readiness {
        status: if ready { ReadyStatus::Ready } else { ReadyStatus::NotReady },
        node_id: state.node_id.clone(),
        postgres: postgres.into(),
        rabbitmq: rabbitmq.into(),
        signing_keys: signing_keys.into(),
    };
    (status, Json(body))
}
