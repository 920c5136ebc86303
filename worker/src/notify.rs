//! `user:online` / `user:offline` for the online users who share a chat with someone.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use courier_shared::{
    db::presence,
    job::{NodeItem, PresenceNotice},
    protocol::{UserOffline, UserOnline},
};

use crate::{BoxError, context::Context, route};

pub async fn online(ctx: &Context, user_id: &str, at: DateTime<Utc>) -> Result<(), BoxError> {
    let notice = PresenceNotice::Online(UserOnline { user_id: user_id.to_owned(), timestamp: at });
    to_co_members(ctx, user_id, notice).await
}

pub async fn offline(ctx: &Context, user_id: &str, last_seen: DateTime<Utc>) -> Result<(), BoxError> {
    let notice = PresenceNotice::Offline(UserOffline { user_id: user_id.to_owned(), last_seen });
    to_co_members(ctx, user_id, notice).await
}

async fn to_co_members(ctx: &Context, user_id: &str, notice: PresenceNotice) -> Result<(), BoxError> {
    let mut by_node: HashMap<String, Vec<String>> = HashMap::new();
    for (member, node_id) in presence::online_co_members(&ctx.db, user_id).await? {
        by_node.entry(node_id).or_default().push(member);
    }
    let items = by_node
        .into_iter()
        .map(|(node_id, user_ids)| (node_id, vec![NodeItem::Presence { user_ids, notice: notice.clone() }]))
        .collect();
    // A node that is gone has no one left to tell.
    route::to_nodes(&ctx.broker, items).await?;
    Ok(())
}
