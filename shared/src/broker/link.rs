//! One RabbitMQ connection per process, kept up by [`supervise`]: connect with
//! backoff, declare the topology, run the caller's consumers, and start over
//! when anything on the connection fails. Publishers see the current [`Link`]
//! or learn that there is none and fail fast (their callers keep the work:
//! the outbox holds unpublished jobs, unacked deliveries come back).

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use backon::{BackoffBuilder, ExponentialBuilder};
use futures::StreamExt;
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties,
    options::{BasicPublishOptions, ConfirmSelectOptions},
    types::FieldTable,
};
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Topology;

/// A live connection and its publishing channel (in confirm mode).
pub struct Link {
    pub connection: Connection,
    /// Replaced after a nack (see [`Link::renew_publisher`]); cloning a channel is cheap.
    publisher: std::sync::Mutex<Channel>,
    /// One renewal at a time.
    renewing: tokio::sync::Mutex<()>,
}

impl Link {
    /// A new channel on this connection, e.g. for a consumer.
    pub async fn channel(&self) -> lapin::Result<Channel> {
        self.connection.create_channel().await
    }

    fn publisher(&self) -> Channel {
        match self.publisher.lock() {
            Ok(channel) => channel.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Swaps `nacked` for a fresh confirm-mode channel, unless another caller
    /// already did. Measured on a 3-node cluster (tests/tests/faults.rs): after
    /// a quorum queue's leader node was killed, the channel that had published
    /// to it during the election nacked every later publish to that queue,
    /// while a new channel on the same connection was accepted at once. A nack
    /// is rare enough that a new channel per nack costs nothing.
    async fn renew_publisher(&self, nacked: &Channel) {
        let _one_at_a_time = self.renewing.lock().await;
        if self.publisher().id() != nacked.id() {
            return;
        }
        let fresh = async {
            let channel = self.connection.create_channel().await?;
            channel.confirm_select(ConfirmSelectOptions::default()).await?;
            lapin::Result::Ok(channel)
        };
        match fresh.await {
            Ok(channel) => {
                let old = match self.publisher.lock() {
                    Ok(mut current) => std::mem::replace(&mut *current, channel),
                    Err(poisoned) => std::mem::replace(&mut *poisoned.into_inner(), channel),
                };
                tracing::warn!(old = old.id(), "publisher channel renewed after a nack");
                // Publishes still in flight on it fail, and their callers retry as after any failure.
                let _ = old.close(200, "renewed after a nack".into()).await;
            }
            // The connection itself is going: the supervisor rebuilds everything.
            Err(error) => tracing::warn!(%error, "cannot open a new publisher channel"),
        }
    }
}

/// Why a publish did not make it.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("not connected to RabbitMQ")]
    Unavailable,
    /// `mandatory` and no queue is bound: for a push queue, the node is gone.
    #[error("unroutable: no queue is bound for the routing key")]
    Unroutable,
    #[error("RabbitMQ refused the message (nack)")]
    Nacked,
    #[error("RabbitMQ error: {0}")]
    Broker(#[from] lapin::Error),
}

/// How to publish one message.
#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    /// Persistent (delivery mode 2): survives a broker restart in a durable queue.
    pub persistent: bool,
    /// Ask the broker to return the message if no queue is bound.
    pub mandatory: bool,
    pub headers: Option<FieldTable>,
}

impl PublishOptions {
    pub fn persistent() -> Self {
        Self { persistent: true, ..Default::default() }
    }
    pub fn transient_mandatory() -> Self {
        Self { mandatory: true, ..Default::default() }
    }
    pub fn with_headers(mut self, headers: FieldTable) -> Self {
        self.headers = Some(headers);
        self
    }
}

/// Handle to the process's broker connection; cheap to clone.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

struct Inner {
    topology: Topology,
    current: watch::Sender<Option<Arc<Link>>>,
    reconnects: AtomicU64,
    connect_attempts: AtomicU64,
}

impl Broker {
    pub fn new(topology: Topology) -> Self {
        let (current, _) = watch::channel(None);
        Self {
            inner: Arc::new(Inner { topology, current, reconnects: AtomicU64::new(0), connect_attempts: AtomicU64::new(0) }),
        }
    }

    pub fn topology(&self) -> &Topology {
        &self.inner.topology
    }

    /// The current link, if connected.
    pub fn link(&self) -> Option<Arc<Link>> {
        self.inner.current.borrow().clone()
    }

    pub fn is_connected(&self) -> bool {
        self.link().is_some_and(|link| link.connection.status().connected())
    }

    /// How many times the connection was re-established after a failure.
    pub fn reconnects(&self) -> u64 {
        self.inner.reconnects.load(Ordering::Relaxed)
    }

    /// How many times a connection was attempted (successful or not).
    pub fn connect_attempts(&self) -> u64 {
        self.inner.connect_attempts.load(Ordering::Relaxed)
    }

    /// Waits until a link is up.
    pub async fn connected(&self) -> Arc<Link> {
        let mut receiver = self.inner.current.subscribe();
        loop {
            if let Some(link) = receiver.borrow_and_update().clone() {
                return link;
            }
            if receiver.changed().await.is_err() {
                // The sender lives in `inner`, which we hold: cannot happen.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Publishes JSON and waits for the broker's confirm.
    pub async fn publish_json<T: Serialize>(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &T,
        options: PublishOptions,
    ) -> Result<(), PublishError> {
        // Serializing our own job structs cannot fail; an empty body would be dead-lettered.
        let payload = serde_json::to_vec(body).unwrap_or_default();
        self.publish(exchange, routing_key, &payload, options).await
    }

    /// Publishes bytes and waits for the broker's confirm. Many publishes may be
    /// in flight at once on the shared channel: awaiting one does not block others.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        payload: &[u8],
        options: PublishOptions,
    ) -> Result<(), PublishError> {
        let link = self.link().ok_or(PublishError::Unavailable)?;
        let mut properties = BasicProperties::default().with_content_type("application/json".into());
        if options.persistent {
            properties = properties.with_delivery_mode(2);
        }
        if let Some(headers) = options.headers {
            properties = properties.with_headers(headers);
        }
        let publisher = link.publisher();
        let confirm = publisher
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions { mandatory: options.mandatory, ..Default::default() },
                payload,
                properties,
            )
            .await?
            .await?;
        match confirm {
            Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
            Confirmation::Ack(Some(_)) => Err(PublishError::Unroutable),
            Confirmation::Nack(_) => {
                link.renew_publisher(&publisher).await;
                Err(PublishError::Nacked)
            }
        }
    }
}

/// The nodes `AMQP_URL` names: one URL, or several separated by commas (the
/// nodes of a cluster). Connects go round them, so the link fails over to the
/// next node when the one it was on goes away.
pub fn broker_addresses(amqp_url: &str) -> Vec<String> {
    let addresses: Vec<String> = amqp_url.split(',').map(str::trim).filter(|url| !url.is_empty()).map(str::to_owned).collect();
    if addresses.is_empty() { vec![amqp_url.to_owned()] } else { addresses }
}

/// `host:port` of an AMQP URL, for logs (never the credentials).
fn node_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    authority.rsplit_once('@').map_or(authority, |(_, host)| host)
}

/// Keeps the broker connection up until `shutdown`. After each (re)connect it
/// declares the topology and calls `run`, which starts this process's
/// consumers and returns when one of them fails; then the connection is
/// dropped and rebuilt with exponential backoff (no busy loop while RabbitMQ is down).
/// With several nodes in `amqp_url`, a lost or refused connection moves on to
/// the next node at once; the backoff applies once every node has failed.
pub async fn supervise<F, Fut>(broker: Broker, amqp_url: String, name: String, shutdown: CancellationToken, run: F)
where
    F: Fn(Arc<Link>) -> Fut,
    Fut: Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>>,
{
    let backoff = || {
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(5))
            .with_jitter()
            .without_max_times()
            .build()
    };
    let addresses = broker_addresses(&amqp_url);
    let mut turn = 0usize;
    let mut delays = backoff();
    let mut ever_connected = false;
    while !shutdown.is_cancelled() {
        broker.inner.connect_attempts.fetch_add(1, Ordering::Relaxed);
        let address = &addresses[turn % addresses.len()];
        let node = node_of(address);
        match connect(&broker, address, &name).await {
            Ok(link) => {
                if ever_connected {
                    broker.inner.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                ever_connected = true;
                delays = backoff();
                tracing::info!(%name, %node, "connected to RabbitMQ");
                broker.inner.current.send_replace(Some(link.clone()));
                let events = link.connection.events_listener();
                let errors = async move {
                    let mut events = std::pin::pin!(events);
                    while let Some(event) = events.next().await {
                        if let lapin::Event::Error(error) = event {
                            return Some(error);
                        }
                    }
                    None
                };
                tokio::select! {
                    result = run(link.clone()) => match result {
                        Ok(()) => tracing::warn!(%name, %node, "broker consumers stopped"),
                        Err(error) => tracing::warn!(%name, %node, %error, "broker consumers failed"),
                    },
                    Some(error) = errors => tracing::warn!(%name, %node, %error, "RabbitMQ connection failed"),
                    () = shutdown.cancelled() => {}
                }
                broker.inner.current.send_replace(None);
                let _ = link.connection.close(200, "bye".into()).await;
            }
            Err(error) => tracing::warn!(%name, %node, %error, "cannot connect to RabbitMQ; retrying"),
        }
        turn += 1;
        // The next node at once; a pause only after a whole round of them.
        let delay = if turn.is_multiple_of(addresses.len()) {
            delays.next().unwrap_or(Duration::from_secs(5))
        } else {
            Duration::from_millis(50)
        };
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.cancelled() => {}
        }
    }
}

async fn connect(broker: &Broker, amqp_url: &str, name: &str) -> lapin::Result<Arc<Link>> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    let connection =
        tokio::time::timeout(Duration::from_secs(10), Connection::connect(amqp_url, properties))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connecting to RabbitMQ timed out"))??;
    let setup = connection.create_channel().await?;
    broker.topology().declare(&setup).await?;
    let _ = setup.close(200, "declared".into()).await;
    let publisher = connection.create_channel().await?;
    publisher.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok(Arc::new(Link { connection, publisher: std::sync::Mutex::new(publisher), renewing: tokio::sync::Mutex::new(()) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amqp_url_may_name_several_nodes() {
        let urls = broker_addresses("amqp://u:p@a:5672/%2f, amqp://u:p@b:5673/%2f,amqp://u:p@c:5674/%2f");
        assert_eq!(urls, vec!["amqp://u:p@a:5672/%2f", "amqp://u:p@b:5673/%2f", "amqp://u:p@c:5674/%2f"]);
        assert_eq!(broker_addresses("amqp://guest:guest@127.0.0.1:5672/%2f").len(), 1);
    }

    #[test]
    fn logs_name_the_node_without_credentials() {
        assert_eq!(node_of("amqp://courier:secret@rabbit-2:5673/%2f"), "rabbit-2:5673");
        assert_eq!(node_of("amqp://127.0.0.1:5672"), "127.0.0.1:5672");
    }
}
