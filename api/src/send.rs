//! Group commit for sends: concurrent `message:send`s from all connections are
//! stored together, one transaction per batch, so throughput is not capped by
//! one fsync per message. A lone send is a batch of one and waits for nothing.

use std::sync::Arc;

use courier_shared::{
    ClientError,
    db::messages::{self, NewMessage, StoredMessage},
};
use sqlx::PgPool;
use tokio::sync::{Semaphore, mpsc, oneshot};

type Reply = oneshot::Sender<Result<StoredMessage, ClientError>>;

/// Hands sends to the batching task.
#[derive(Clone)]
pub struct SendBatcher {
    queue: mpsc::Sender<(NewMessage, Reply)>,
}

impl SendBatcher {
    /// Starts the batching task. At most `concurrency` transactions run at
    /// once; while they do, new sends queue up and form the next, larger batch.
    pub fn start(db: PgPool, max_batch: usize, concurrency: usize) -> Self {
        let (queue, mut incoming) = mpsc::channel::<(NewMessage, Reply)>(max_batch * concurrency * 4);
        let permits = Arc::new(Semaphore::new(concurrency.max(1)));
        tokio::spawn(async move {
            loop {
                let Ok(permit) = permits.clone().acquire_owned().await else { return };
                let mut batch = Vec::new();
                if incoming.recv_many(&mut batch, max_batch.max(1)).await == 0 {
                    return; // every SendBatcher is gone: shutting down
                }
                let db = db.clone();
                tokio::spawn(async move {
                    store(&db, batch).await;
                    drop(permit);
                });
            }
        });
        Self { queue }
    }

    /// Stores one send (with whatever else is waiting) and returns its outcome.
    pub async fn store(&self, message: NewMessage) -> Result<StoredMessage, ClientError> {
        let (reply, outcome) = oneshot::channel();
        self.queue.send((message, reply)).await.map_err(|_| ClientError::unavailable("the server"))?;
        outcome.await.map_err(|_| ClientError::unavailable("the server"))?
    }
}

async fn store(db: &PgPool, batch: Vec<(NewMessage, Reply)>) {
    let (messages, replies): (Vec<NewMessage>, Vec<Reply>) = batch.into_iter().unzip();
    match messages::store_batch(db, &messages).await {
        Ok(results) => {
            for (reply, result) in replies.into_iter().zip(results) {
                // The sender may have gone; the message is stored either way.
                let _ = reply.send(result);
            }
        }
        Err(error) => {
            let error = ClientError::from(error);
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}
