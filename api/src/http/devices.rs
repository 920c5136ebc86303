//! `/api/devices`: the caller's devices, and revoking one.
//!
//! Revoking is recorded in PostgreSQL first: from then on the device is
//! refused at connect (`device_revoked`), whatever happens next. Its open
//! connections are then closed (4009) here and, through their push queues, on
//! every other node that holds one.

use axum::{
    Json,
    extract::{Path, State, rejection::PathRejection},
    http::StatusCode,
};
use courier_shared::{
    broker::{PublishError, PublishOptions},
    db::devices::{self, Device},
    job::{NodeBatch, NodeItem},
};
use futures::future::join_all;

use super::{
    auth::AuthUser,
    error::{ApiError, ErrorBody},
};
use crate::{state::AppState, transport::CloseReason};

/// `GET /api/devices`: the caller's devices that are not revoked, most recently seen first.
#[utoipa::path(
    get, path = "/devices", tag = "devices", operation_id = "listDevices",
    responses((status = 200, description = "The caller's devices, most recently seen first.", body = Vec<Device>)),
    security(("bearer" = []), ("token" = [])),
)]
pub async fn list(State(state): State<AppState>, user: AuthUser) -> Result<Json<Vec<Device>>, ApiError> {
    Ok(Json(devices::list(&state.db, user.id()).await?))
}

/// `DELETE /api/devices/{deviceId}`: 204; the device's connections are closed
/// on every node. 404 for an unknown or already revoked device.
#[utoipa::path(
    delete, path = "/devices/{device_id}", tag = "devices", operation_id = "revokeDevice",
    params(("device_id" = String, Path, description = "The device to revoke; it may not connect again.")),
    responses(
        (status = 204, description = "Revoked; its connections are closed (4009) on every node."),
        (status = 400, description = "`invalid_payload`: not a valid device id.", body = ErrorBody),
        (status = 404, description = "`not_found`: an unknown or already revoked device.", body = ErrorBody),
    ),
    security(("bearer" = []), ("token" = [])),
)]
pub async fn revoke(
    State(state): State<AppState>,
    user: AuthUser,
    device_id: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path(device_id) = device_id?;
    devices::validate_device_id(&device_id)?;
    let nodes = devices::revoke(&state.db, user.id(), &device_id).await?;
    close_everywhere(&state, user.id(), &device_id, nodes).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Closes the device's connections on this node, and asks each other node in
/// `nodes` to close its own. A node that cannot be told keeps its connections
/// open until they end by themselves; the device is refused when it comes back.
async fn close_everywhere(state: &AppState, user_id: &str, device_id: &str, nodes: Vec<String>) {
    // Always here, even if PostgreSQL lists no connection on this node: one
    // may be opening now, its row not yet written.
    let closed = state.sessions.end_device(user_id, device_id, CloseReason::DeviceRevoked);
    if closed > 0 {
        tracing::info!(user_id, device_id, closed, "device revoked: closing its connections");
    }
    let exchange = state.broker.topology().push();
    let batch = NodeBatch { items: vec![NodeItem::CloseDevice { user_id: user_id.to_owned(), device_id: device_id.to_owned() }] };
    let others: Vec<String> = nodes.into_iter().filter(|node_id| *node_id != state.node_id).collect();
    // Mandatory, so that a node whose push queue is gone is told apart from a failure.
    let options = PublishOptions { persistent: true, mandatory: true, headers: None };
    let results = join_all(
        others.iter().map(|node_id| state.broker.publish_json(&exchange, node_id, &batch, options.clone())),
    )
    .await;
    for (node_id, result) in others.iter().zip(results) {
        match result {
            Ok(()) => {}
            // Its connections went with it; the reaper removes their rows.
            Err(PublishError::Unroutable) => {
                tracing::info!(user_id, device_id, node_id, "the node holding the device's connections is gone")
            }
            Err(error) => tracing::warn!(
                %error, user_id, device_id, node_id,
                "cannot ask a node to close a revoked device's connections; they stay open until they end"
            ),
        }
    }
}
