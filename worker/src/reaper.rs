//! Presence that outlives its node: connections of API nodes whose lease
//! expired are removed, and their users' co-members told they went offline.

use std::sync::Arc;

use courier_shared::db::presence;

use crate::{context::Context, notify};

pub async fn run(ctx: Arc<Context>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(ctx.config.reap_interval) => {}
            () = ctx.stopping.cancelled() => return,
        }
        match presence::reap_dead_nodes(&ctx.db, ctx.config.node_lease).await {
            Ok(offline) => {
                for (user_id, last_seen) in offline {
                    if let Err(error) = notify::offline(&ctx, &user_id, last_seen).await {
                        tracing::warn!(%error, %user_id, "cannot announce a reaped user offline");
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "cannot reap dead API nodes"),
        }
    }
}
