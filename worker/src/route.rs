//! Publishing to API nodes' push queues.

use std::collections::HashMap;

use courier_shared::{
    broker::{Broker, PublishError, PublishOptions},
    job::{NodeBatch, NodeItem},
};
use futures::future::join_all;

/// Items per broker message to one node.
const ITEMS_PER_MESSAGE: usize = 256;

/// Items for each node, by node id.
pub type NodeItems = HashMap<String, Vec<NodeItem>>;

/// What happened to each node's items.
pub struct Routed {
    /// Nodes whose push queue is gone (the node died or is reconnecting).
    pub unroutable: Vec<(String, Vec<NodeItem>)>,
}

/// Publishes each node's items (transient, mandatory) and waits for the
/// confirms. A missing push queue is reported, not an error; a broker failure is.
pub async fn to_nodes(broker: &Broker, items: NodeItems) -> Result<Routed, PublishError> {
    let exchange = broker.topology().push();
    let mut messages = Vec::new();
    for (node_id, items) in items {
        let mut items = items.into_iter().peekable();
        while items.peek().is_some() {
            let chunk: Vec<NodeItem> = items.by_ref().take(ITEMS_PER_MESSAGE).collect();
            messages.push((node_id.clone(), NodeBatch { items: chunk }));
        }
    }
    let results = join_all(messages.iter().map(|(node_id, batch)| {
        broker.publish_json(&exchange, node_id, batch, PublishOptions::transient_mandatory())
    }))
    .await;
    let mut routed = Routed { unroutable: Vec::new() };
    for ((node_id, batch), result) in messages.into_iter().zip(results) {
        match result {
            Ok(()) => {}
            Err(PublishError::Unroutable) => routed.unroutable.push((node_id, batch.items)),
            Err(error) => return Err(error),
        }
    }
    Ok(routed)
}
