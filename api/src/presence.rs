//! Presence on this node: its lease in PostgreSQL, its connections' rows, and
//! the events that make workers notify co-members and drain backlogs.

use std::time::Duration;

use chrono::{DateTime, Utc};
use courier_shared::{
    broker::PublishOptions,
    db::{devices, presence},
    job::{PresenceEvent, PresenceKind},
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{inbox::SessionInput, state::AppState};

/// Records a new connection and asks the workers to announce it and drain its
/// backlog. If the event cannot be published now, the session asks again later.
/// False (nothing recorded) if the device was revoked since it was admitted.
pub async fn connected(state: &AppState, user_id: &str, device_id: &str, connection_id: Uuid) -> Result<bool, sqlx::Error> {
    state.metrics.connections_opened.inc();
    if !presence::add_connection(&state.db, connection_id, user_id, device_id, &state.node_id).await? {
        return Ok(false);
    }
    publish(state, user_id, device_id, connection_id, PresenceKind::Connected).await;
    Ok(true)
}

/// Removes a closed connection; if it was the user's last, stores last_seen and
/// lets the workers tell co-members.
pub async fn disconnected(state: &AppState, user_id: &str, device_id: &str, connection_id: Uuid) {
    if let Err(error) = devices::touch(&state.db, user_id, device_id).await {
        tracing::debug!(%error, "cannot record when the device was last seen");
    }
    let last_seen: Option<DateTime<Utc>> = match presence::remove_connection(&state.db, connection_id, user_id).await {
        Ok(last_seen) => last_seen,
        Err(error) => {
            // PostgreSQL is unreachable: keep trying in the background, so the
            // row does not stay behind (a stale row makes workers route to this
            // node, which bounces deliveries to the retry tiers, and keeps the
            // user "online" for co-members).
            tracing::warn!(%error, %connection_id, "cannot remove a closed connection's row; retrying");
            let (state, user_id, device_id) = (state.clone(), user_id.to_owned(), device_id.to_owned());
            tokio::spawn(async move { remove_later(&state, &user_id, &device_id, connection_id).await });
            return;
        }
    };
    publish(state, user_id, device_id, connection_id, PresenceKind::Disconnected { last: last_seen.is_some() }).await;
}

/// Retries removing a closed connection's row with backoff, for up to
/// STALE_ROW_PATIENCE; after that the row goes when the node restarts or is reaped.
async fn remove_later(state: &AppState, user_id: &str, device_id: &str, connection_id: Uuid) {
    use backon::{BackoffBuilder, ExponentialBuilder};
    let delays = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(10))
        .with_total_delay(Some(STALE_ROW_PATIENCE))
        .without_max_times()
        .build();
    for delay in delays {
        tokio::time::sleep(delay).await;
        if let Ok(last_seen) = presence::remove_connection(&state.db, connection_id, user_id).await {
            publish(state, user_id, device_id, connection_id, PresenceKind::Disconnected { last: last_seen.is_some() }).await;
            return;
        }
    }
    tracing::warn!(%connection_id, "gave up removing a closed connection's row; it goes when this node restarts or is reaped");
}

/// How long a closed connection's row removal is retried.
const STALE_ROW_PATIENCE: Duration = Duration::from_secs(300);

/// Lets the workers tell co-members that `user_id` went offline (the node is
/// stopping and removed the user's last connection itself).
pub async fn announce_offline(state: &AppState, user_id: &str) {
    publish(state, user_id, devices::DEFAULT_DEVICE, Uuid::nil(), PresenceKind::Disconnected { last: true }).await;
}

async fn publish(state: &AppState, user_id: &str, device_id: &str, connection_id: Uuid, kind: PresenceKind) {
    let event = PresenceEvent {
        user_id: user_id.to_owned(),
        device_id: device_id.to_owned(),
        node_id: state.node_id.clone(),
        connection_id,
        kind,
        at: Utc::now(),
    };
    let exchange = state.broker.topology().presence();
    if let Err(error) = state.broker.publish_json(&exchange, "", &event, PublishOptions::persistent()).await {
        tracing::warn!(%error, ?kind, "cannot publish a presence event");
    }
}

/// Renews this node's lease until `stop`. If a worker reaped the node (it could
/// not renew for a whole lease), re-registers its live connections and makes
/// them drain again, since deliveries meanwhile went to the retry tiers.
pub async fn heartbeat(state: AppState, interval: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = stop.cancelled() => return,
        }
        match presence::heartbeat(&state.db, &state.node_id).await {
            Ok(true) => {}
            Ok(false) => {
                let sessions = state.sessions.all();
                let rows: Vec<(Uuid, String, String)> =
                    sessions.iter().map(|s| (s.connection_id, s.user_id.clone(), s.device_id.clone())).collect();
                match presence::restore_node(&state.db, &state.node_id, &rows).await {
                    Ok(()) => {
                        tracing::warn!(connections = rows.len(), "lease was lost; re-registered this node");
                        for session in sessions {
                            session.offer(SessionInput::Resync);
                        }
                    }
                    Err(error) => tracing::warn!(%error, "cannot re-register this node"),
                }
            }
            Err(error) => tracing::warn!(%error, "cannot renew this node's lease"),
        }
    }
}
