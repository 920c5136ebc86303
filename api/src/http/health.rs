//! Liveness and readiness.

use axum::{Json, extract::State, http::StatusCode};
use serde_json::{Value, json};

use crate::state::AppState;

/// The process is up.
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// PostgreSQL and RabbitMQ are reachable; 503 says which is not.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let postgres = courier_shared::db::ping(&state.db).await;
    let rabbitmq = state.broker.is_connected();
    let status = if postgres && rabbitmq { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let word = |ok: bool| if ok { "ok" } else { "unavailable" };
    (
        status,
        Json(json!({
            "status": if status == StatusCode::OK { "ready" } else { "not_ready" },
            "nodeId": state.node_id,
            "postgres": word(postgres),
            "rabbitmq": word(rabbitmq),
        })),
    )
}
