//! The ceilings Courier's pipeline can at best approach, measured in the same
//! run on the same machine: RabbitMQ alone and PostgreSQL alone.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use futures::{StreamExt, stream::FuturesUnordered};
use lapin::{
    BasicProperties, Connection, ConnectionProperties,
    options::{BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions},
    types::{AMQPValue, FieldTable},
};
use serde::Serialize;
use sqlx::PgPool;

/// Confirms outstanding at once: the publisher pipelines, as Courier's does.
const CONFIRM_WINDOW: usize = 1024;
/// The consumer acknowledges with `multiple` every this many messages.
const ACK_EVERY: u64 = 100;
/// About the size of a Courier delivery job.
const PAYLOAD_BYTES: usize = 300;

#[derive(Debug, Serialize)]
pub struct BrokerCeiling {
    pub messages: u64,
    /// Publish with confirms, persistent, one channel.
    pub publish_per_sec: f64,
    /// Publish → consume with manual acks, both running at once.
    pub end_to_end_per_sec: f64,
}

/// Publishes `messages` persistent messages with pipelined confirms to a
/// durable queue while a consumer with manual acks empties it.
pub async fn rabbitmq(amqp: &str, messages: u64) -> anyhow::Result<BrokerCeiling> {
    let queue = format!("courier-bench-ref-{}", uuid::Uuid::now_v7().simple());
    let publisher_conn = Connection::connect(amqp, ConnectionProperties::default()).await.context("RabbitMQ")?;
    let consumer_conn = Connection::connect(amqp, ConnectionProperties::default()).await?;
    let publisher = publisher_conn.create_channel().await?;
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    publisher.queue_declare(queue.as_str().into(), durable, FieldTable::default()).await?;
    publisher.confirm_select(ConfirmSelectOptions::default()).await?;

    let consumer_channel = consumer_conn.create_channel().await?;
    consumer_channel.basic_qos(2000, BasicQosOptions::default()).await?;
    let mut consumer = consumer_channel
        .basic_consume(queue.as_str().into(), "ref".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await?;
    let started = Instant::now();
    let consuming = tokio::spawn(async move {
        let mut seen = 0u64;
        while let Some(Ok(delivery)) = consumer.next().await {
            seen += 1;
            if seen.is_multiple_of(ACK_EVERY) || seen == messages {
                delivery.acker.ack(BasicAckOptions { multiple: true }).await?;
            }
            if seen == messages {
                break;
            }
        }
        anyhow::Ok(started.elapsed())
    });

    let payload = vec![b'x'; PAYLOAD_BYTES];
    let mut confirms = FuturesUnordered::new();
    for _ in 0..messages {
        if confirms.len() >= CONFIRM_WINDOW {
            confirms.next().await.context("confirm")??;
        }
        let confirm = publisher
            .basic_publish("".into(), queue.as_str().into(), BasicPublishOptions::default(), &payload, BasicProperties::default().with_delivery_mode(2))
            .await?;
        confirms.push(confirm);
    }
    while let Some(confirm) = confirms.next().await {
        confirm?;
    }
    let published = started.elapsed();
    let consumed = consuming.await??;
    let _ = publisher.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
    let _ = publisher_conn.close(200, "done".into()).await;
    let _ = consumer_conn.close(200, "done".into()).await;
    Ok(BrokerCeiling {
        messages,
        publish_per_sec: messages as f64 / published.as_secs_f64(),
        end_to_end_per_sec: messages as f64 / consumed.as_secs_f64(),
    })
}

#[derive(Debug, Serialize)]
pub struct BrokerLatency {
    pub offered_per_sec: f64,
    /// Paced publishers, as many as the live-latency run has senders.
    pub publishers: usize,
    pub seconds: f64,
    pub sent: u64,
    pub received: u64,
    /// Publish call → the consumer has the message, one hop through one queue.
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// RabbitMQ's own latency at a given load, to hold Courier's live latency
/// against: `publishers` tasks publish `rate` msg/s in total for `duration`,
/// paced and staggered as the live-latency run sends (persistent, confirms
/// awaited, one channel), into a durable quorum queue — the kind Courier's
/// delivery jobs go through — while a consumer with manual acks (one per
/// message) reads it. Latency is the publish call → the consumer reading it.
pub async fn rabbitmq_latency(amqp: &str, publishers: usize, rate: f64, duration: Duration) -> anyhow::Result<BrokerLatency> {
    let queue = format!("courier-bench-lat-{}", uuid::Uuid::now_v7().simple());
    let publisher_conn = Connection::connect(amqp, ConnectionProperties::default()).await.context("RabbitMQ")?;
    let consumer_conn = Connection::connect(amqp, ConnectionProperties::default()).await?;
    let result = async {
        let publisher = publisher_conn.create_channel().await?;
        let mut quorum = FieldTable::default();
        quorum.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
        let durable = QueueDeclareOptions { durable: true, ..Default::default() };
        publisher.queue_declare(queue.as_str().into(), durable, quorum).await?;
        publisher.confirm_select(ConfirmSelectOptions::default()).await?;

        // Payloads carry their publish time as microseconds since `epoch`.
        let epoch = Instant::now();
        let consumer_channel = consumer_conn.create_channel().await?;
        consumer_channel.basic_qos(2000, BasicQosOptions::default()).await?;
        let mut consumer = consumer_channel
            .basic_consume(queue.as_str().into(), "ref-latency".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await?;
        let received = Arc::new(AtomicU64::new(0));
        let latencies_us = Arc::new(Mutex::new(Vec::new()));
        let consuming = {
            let (received, latencies_us) = (received.clone(), latencies_us.clone());
            tokio::spawn(async move {
                while let Some(Ok(delivery)) = consumer.next().await {
                    let now_us = epoch.elapsed().as_micros() as u64;
                    let sent_us = delivery.data.get(..8).and_then(|bytes| bytes.try_into().ok()).map(u64::from_le_bytes).unwrap_or(now_us);
                    latencies_us.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(now_us.saturating_sub(sent_us));
                    received.fetch_add(1, Ordering::Relaxed);
                    delivery.acker.ack(BasicAckOptions::default()).await?;
                }
                anyhow::Ok(())
            })
        };

        let interval = Duration::from_secs_f64(publishers as f64 / rate.max(1.0));
        let started = Instant::now();
        let mut tasks = FuturesUnordered::new();
        for n in 0..publishers {
            let publisher = publisher.clone();
            let queue = queue.clone();
            // Staggered, as the live-latency senders are, so the load is smooth.
            let offset = interval.mul_f64(n as f64 / publishers as f64);
            tasks.push(tokio::spawn(async move {
                let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + offset, interval);
                let mut confirms = FuturesUnordered::new();
                let mut sent = 0u64;
                while started.elapsed() < duration {
                    tokio::select! {
                        _ = ticks.tick() => {
                            let mut payload = vec![b'x'; PAYLOAD_BYTES];
                            payload[..8].copy_from_slice(&(epoch.elapsed().as_micros() as u64).to_le_bytes());
                            let options = BasicPublishOptions::default();
                            let properties = BasicProperties::default().with_delivery_mode(2);
                            confirms.push(publisher.basic_publish("".into(), queue.as_str().into(), options, &payload, properties).await?);
                            sent += 1;
                        }
                        Some(confirm) = confirms.next(), if !confirms.is_empty() => { confirm?; }
                    }
                }
                while let Some(confirm) = confirms.next().await {
                    confirm?;
                }
                anyhow::Ok(sent)
            }));
        }
        let mut sent = 0;
        while let Some(done) = tasks.next().await {
            sent += done??;
        }
        let seconds = started.elapsed().as_secs_f64();
        let deadline = Instant::now() + Duration::from_secs(60);
        while received.load(Ordering::Relaxed) < sent {
            if consuming.is_finished() || Instant::now() > deadline {
                anyhow::bail!("RabbitMQ latency reference: {} of {sent} consumed", received.load(Ordering::Relaxed));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        consuming.abort();
        let mut sorted = std::mem::take(&mut *latencies_us.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        sorted.sort_unstable();
        let ms = |us: u64| (us as f64 / 10.0).round() / 100.0;
        Ok(BrokerLatency {
            offered_per_sec: rate,
            publishers,
            seconds: (seconds * 100.0).round() / 100.0,
            sent,
            received: received.load(Ordering::Relaxed),
            p50_ms: ms(crate::load::percentile(&sorted, 50.0)),
            p95_ms: ms(crate::load::percentile(&sorted, 95.0)),
            p99_ms: ms(crate::load::percentile(&sorted, 99.0)),
            max_ms: ms(sorted.last().copied().unwrap_or(0)),
        })
    }
    .await;
    // Also when the run failed half way: the queue is durable.
    if let Ok(channel) = publisher_conn.create_channel().await {
        let _ = channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
    }
    let _ = publisher_conn.close(200, "done".into()).await;
    let _ = consumer_conn.close(200, "done".into()).await;
    result
}

#[derive(Debug, Serialize)]
pub struct DatabaseCeiling {
    pub messages: u64,
    /// Single-message transactions (message + outbox row, what a send writes) on one connection.
    pub single_per_sec: f64,
    /// Messages with their outbox rows, 100 per statement.
    pub batched_per_sec: f64,
}

/// Inserts message and outbox rows into copies of Courier's tables (same
/// columns, indexes and constraints bar foreign keys), one at a time and then
/// 100 per statement.
pub async fn postgres(db: &PgPool, messages: u64) -> anyhow::Result<DatabaseCeiling> {
    sqlx::raw_sql(
        "DROP TABLE IF EXISTS ref_message_status, ref_outbox, ref_messages;
         CREATE TABLE ref_messages (LIKE messages INCLUDING ALL);
         CREATE TABLE ref_outbox (LIKE outbox INCLUDING ALL);
         INSERT INTO users (id, name) VALUES ('ref-a', 'a'), ('ref-b', 'b') ON CONFLICT DO NOTHING;",
    )
    .execute(db)
    .await?;
    let chat_id = uuid::Uuid::now_v7();

    let single = (messages / 20).clamp(100, 5_000);
    let mut connection = db.acquire().await?;
    let started = Instant::now();
    for seq in 0..single as i64 {
        let id = uuid::Uuid::now_v7();
        let mut tx = sqlx::Connection::begin(&mut *connection).await?;
        sqlx::query("INSERT INTO ref_messages (id, chat_id, sender_id, content, message_type, seq) VALUES ($1, $2, 'ref-a', 'hello'::bytea, 'text', $3)")
            .bind(id)
            .bind(chat_id)
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO ref_outbox (message_id) VALUES ($1)").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
    }
    let single_per_sec = single as f64 / started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut seq = single as i64;
    let mut left = messages;
    while left > 0 {
        let batch = left.min(100);
        let ids: Vec<uuid::Uuid> = (0..batch).map(|_| uuid::Uuid::now_v7()).collect();
        let seqs: Vec<i64> = (0..batch as i64).map(|i| seq + i).collect();
        let mut tx = sqlx::Connection::begin(&mut *connection).await?;
        sqlx::query(
            "INSERT INTO ref_messages (id, chat_id, sender_id, content, message_type, seq)
             SELECT id, $2, 'ref-a', 'hello'::bytea, 'text', seq FROM UNNEST($1::uuid[], $3::bigint[]) AS t(id, seq)",
        )
        .bind(&ids)
        .bind(chat_id)
        .bind(&seqs)
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO ref_outbox (message_id) SELECT * FROM UNNEST($1::uuid[])")
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        seq += batch as i64;
        left -= batch;
    }
    let batched_per_sec = messages as f64 / started.elapsed().as_secs_f64();
    sqlx::raw_sql("DROP TABLE ref_outbox, ref_messages").execute(db).await?;
    Ok(DatabaseCeiling { messages, single_per_sec, batched_per_sec })
}
