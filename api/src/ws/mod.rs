//! `/ws`: JSON text frames over a WebSocket.
//!
//! Each connection has two tasks: the reader (this module) parses client
//! frames and runs them through the shared event layer (`connection.rs`) in
//! order, so one client's sends are stored in the order it sent them; the
//! session (`session/`) owns the sending half, numbers server frames, and
//! decides what to deliver when. Acks skip the queue of events: one behind
//! a send that waits for PostgreSQL would otherwise reach the session after
//! it resent the frame the client had acknowledged.

mod transport;

use std::time::Duration;

use axum::{
    extract::{
        Query, State, WebSocketUpgrade,
        rejection::QueryRejection,
        ws::{Message, WebSocket},
    },
    response::Response,
};
use courier_shared::{
    ClientError, ErrorCode,
    protocol::{self, ClientEvent, ClientFrame},
};
use futures::{StreamExt, stream::SplitStream};
use serde::Deserialize;
use tokio::sync::mpsc;
use tracing::Instrument;
use uuid::Uuid;

pub use transport::{WsTransport, encode};

use crate::{
    connection::Connection,
    http::{
        auth::{AuthUser, admit_device, receipts_only},
        error::ApiError,
    },
    state::AppState,
    transport::{ClientInput, Reply},
};

/// Frames above this close the socket (1009) instead of getting an error
/// frame; below it, frames over MAX_FRAME_BYTES get `payload_too_large`.
const HARD_FRAME_LIMIT: usize = 2 * 1024 * 1024;
/// Socket read and write buffers: small, because idle connections must be cheap.
const SOCKET_BUFFER_BYTES: usize = 4 * 1024;
/// Client events read ahead of the one being handled (acks are not queued).
const EVENT_QUEUE: usize = 16;
/// How long a closing connection waits for the client's close frame.
const CLOSE_REPLY_PATIENCE: Duration = Duration::from_secs(1);

/// `GET /ws[?deviceId=…]`: the token and the device are checked (401, 403 or
/// 409 with a JSON body) before the upgrade.
pub async fn upgrade(
    State(state): State<AppState>,
    user: AuthUser,
    query: Result<Query<UpgradeQuery>, QueryRejection>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    let receipts_only = receipts_only(query.statuses.as_deref())?;
    let device_id = admit_device(&state, &user.claims, query.device_id.as_deref()).await?;
    Ok(upgrade
        .read_buffer_size(SOCKET_BUFFER_BYTES)
        .write_buffer_size(SOCKET_BUFFER_BYTES)
        .max_message_size(HARD_FRAME_LIMIT)
        .max_frame_size(HARD_FRAME_LIMIT)
        .on_upgrade(move |socket| serve_socket(state, user, device_id, receipts_only, socket)))
}

/// The query of `GET /ws` (the token, if there, is read by [`AuthUser`]).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeQuery {
    device_id: Option<String>,
    /// `receipts`: `receipt` events only, no `message:status` per message.
    statuses: Option<String>,
}

async fn serve_socket(state: AppState, user: AuthUser, device_id: String, receipts_only: bool, socket: WebSocket) {
    let connection_id = Uuid::now_v7();
    let span = tracing::info_span!("connection", %connection_id, user_id = %user.claims.sub, %device_id, node_id = %state.node_id);
    let tracker = state.connections.clone();
    let connection = run_connection(state, user.claims.sub, device_id, receipts_only, socket, connection_id);
    tracker.track_future(connection.instrument(span)).await;
}

async fn run_connection(
    state: AppState,
    user_id: String,
    device_id: String,
    receipts_only: bool,
    socket: WebSocket,
    connection_id: Uuid,
) {
    let (sink, mut stream) = socket.split();
    let write_timeout = state.config.write_timeout;
    // The opening, each event's handling and the closing run boxed, so the
    // connection's long-lived future does not carry their largest states
    // (see `Session::run`).
    let connection = Box::pin(Connection::open(state.clone(), user_id, device_id, receipts_only, connection_id, |link| {
        WsTransport::new(sink, link.too_slow, write_timeout)
    }))
    .await;
    let reader = &Reader { state: &state, connection: &connection };
    let (events, mut queued) = mpsc::channel::<Box<Event>>(EVENT_QUEUE);
    let read = async move {
        loop {
            let message = tokio::select! {
                message = stream.next() => message,
                () = reader.connection.session_ended() => {
                    // Slow client, node stopping: the session sent its close frame.
                    // (Boxed: the wait is not carried by every idle connection.)
                    Box::pin(await_close_reply(&mut stream)).await;
                    break;
                }
            };
            let message = match message {
                Some(Ok(message)) => message,
                Some(Err(error)) => {
                    tracing::debug!(%error, "socket read failed");
                    break;
                }
                None => break,
            };
            let event = match message {
                Message::Text(text) => reader.parse(text.as_str()),
                Message::Binary(_) => Event::Refused(ClientError::new(ErrorCode::BinaryNotSupported, "frames are JSON text")),
                Message::Close(_) => break,
                Message::Ping(_) | Message::Pong(_) => continue,
            };
            match event {
                Event::Frame(Some(id), Ok(ClientEvent::Ack)) => reader.connection.to_session(ClientInput::Ack(id)).await,
                event => {
                    if events.send(Box::new(event)).await.is_err() {
                        break;
                    }
                }
            }
        }
        // Dropping `events` ends the handling below once it has run what was read.
    };
    let handle = async {
        while let Some(event) = queued.recv().await {
            match *event {
                Event::Refused(error) => reader.reply(None, Err(error)).await,
                Event::Frame(id, event) => Box::pin(reader.on_event(id, event)).await,
            }
        }
    };
    tokio::join!(read, handle);
    Box::pin(connection.close()).await;
}

/// Reads, and drops, what the client still sends after the server's close
/// frame, until the client's close frame answers it (or CLOSE_REPLY_PATIENCE
/// passes). A socket closed with unread data in it is reset by the kernel,
/// and a reset can reach the client before it has read the server's close
/// frame: it would then see 1006 instead of the reason (1012: reconnect).
async fn await_close_reply(stream: &mut SplitStream<WebSocket>) {
    let until_close = async {
        while let Some(Ok(message)) = stream.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(CLOSE_REPLY_PATIENCE, until_close).await;
}

/// What the reader hands on, in the order the client sent it.
enum Event {
    /// A frame that is not JSON text within the size limit: answered as is.
    Refused(ClientError),
    /// A frame's id and event (or why it is not a valid one), for the event layer.
    Frame(Option<u64>, Result<ClientEvent, ClientError>),
}

/// Turns text frames into events for the shared event layer, and its results into replies.
struct Reader<'a> {
    state: &'a AppState,
    connection: &'a Connection,
}

impl Reader<'_> {
    /// Queues the reply behind the server events already sent, so a client
    /// sees its `ack` before the `message:sent` it caused.
    async fn reply(&self, id: Option<u64>, result: Result<serde_json::Value, ClientError>) {
        self.connection.to_session(ClientInput::Reply(Reply { id, result })).await;
    }

    /// A text frame as an event with its id, or the error to answer it with.
    /// An ack (`id` names the server frame acknowledged) goes straight to the
    /// session: acks are not rate limited (the server bounds them) and get no reply.
    fn parse(&self, text: &str) -> Event {
        if text.len() > self.state.config.max_frame_bytes {
            let error = ClientError::new(
                ErrorCode::PayloadTooLarge,
                format!("frame is {} bytes; the limit is {}", text.len(), self.state.config.max_frame_bytes),
            );
            return Event::Refused(error);
        }
        match protocol::parse_client_frame(text) {
            Ok(ClientFrame { id, event }) => Event::Frame(id, Ok(event)),
            Err((id, error)) => Event::Frame(id, Err(error)),
        }
    }

    async fn on_event(&self, id: Option<u64>, event: Result<ClientEvent, ClientError>) {
        self.connection
            .handle(event, |result| async move {
                match (id, result) {
                    (Some(id), result) => self.reply(Some(id), result).await,
                    // Without an id only errors are reported.
                    (None, Err(error)) => self.reply(None, Err(error)).await,
                    (None, Ok(_)) => {}
                }
            })
            .await;
    }
}
