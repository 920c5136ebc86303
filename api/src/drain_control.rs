//! How this node talks to the worker that drains a connection's backlog: it
//! asks for a drain (again), credits the frames the client has settled, and
//! cancels a drain whose connection is gone.
//!
//! Each message is published on a task of its own, without waiting: a
//! session's loop must not stall on the broker. A lost request is asked again
//! when the session's drain timer fires.

use chrono::Utc;
use courier_shared::{
    broker::PublishOptions,
    job::{DrainControl, PresenceEvent, PresenceKind},
};
use uuid::Uuid;

use crate::state::AppState;

/// Asks a worker to drain a connection's backlog (again), from inbox position `resume_after`.
pub fn request(state: &AppState, user_id: String, device_id: String, connection_id: Uuid, resume_after: i64) {
    let event = PresenceEvent {
        user_id,
        device_id,
        node_id: state.node_id.clone(),
        connection_id,
        kind: PresenceKind::Resync { resume_after },
        at: Utc::now(),
    };
    let broker = state.broker.clone();
    tokio::spawn(async move {
        let exchange = broker.topology().presence();
        if let Err(error) = broker.publish_json(&exchange, "", &event, PublishOptions::persistent()).await {
            tracing::warn!(%error, "cannot ask for a drain; will ask again");
        }
    });
}

/// Tells a worker to stop a drain whose connection is gone.
pub fn cancel(state: &AppState, worker_id: String, drain_id: Uuid) {
    send(state, worker_id, DrainControl::Cancel { drain_id });
}

/// Sends drain credit or a cancel to the worker running a drain.
pub fn send(state: &AppState, worker_id: String, control: DrainControl) {
    let broker = state.broker.clone();
    tokio::spawn(async move {
        let exchange = broker.topology().control();
        if let Err(error) = broker.publish_json(&exchange, &worker_id, &control, PublishOptions::default()).await {
            tracing::debug!(%error, "cannot reach the draining worker");
        }
    });
}
