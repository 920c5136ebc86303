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
    publisher: Channel,
}

impl Link {
    /// A new channel on this connection, e.g. for a consumer.
    pub async fn channel(&self) -> lapin::Result<Channel> {
        self.connection.create_channel().await
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
        let confirm = link
            .publisher
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
            Confirmation::Nack(_) => Err(PublishError::Nacked),
        }
    }
}

/// Keeps the broker connection up until `shutdown`. After each (re)connect it
/// declares the topology and calls `run`, which starts this process's
/// consumers and returns when one of them fails; then the connection is
/// dropped and rebuilt with exponential backoff (no busy loop while RabbitMQ is down).
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
    let mut delays = backoff();
    let mut ever_connected = false;
    while !shutdown.is_cancelled() {
        broker.inner.connect_attempts.fetch_add(1, Ordering::Relaxed);
        match connect(&broker, &amqp_url, &name).await {
            Ok(link) => {
                if ever_connected {
                    broker.inner.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                ever_connected = true;
                delays = backoff();
                tracing::info!(%name, "connected to RabbitMQ");
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
                        Ok(()) => tracing::warn!(%name, "broker consumers stopped"),
                        Err(error) => tracing::warn!(%name, %error, "broker consumers failed"),
                    },
                    Some(error) = errors => tracing::warn!(%name, %error, "RabbitMQ connection failed"),
                    () = shutdown.cancelled() => {}
                }
                broker.inner.current.send_replace(None);
                let _ = link.connection.close(200, "bye".into()).await;
            }
            Err(error) => tracing::warn!(%name, %error, "cannot connect to RabbitMQ; retrying"),
        }
        let delay = delays.next().unwrap_or(Duration::from_secs(5));
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
    Ok(Arc::new(Link { connection, publisher }))
}
