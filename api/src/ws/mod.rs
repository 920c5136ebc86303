//! `/ws`: JSON text frames over a WebSocket.
//!
//! Each connection has two tasks: the reader (this module) parses client
//! frames and runs their handlers in order, so one client's sends are stored
//! in the order it sent them; the session (`session.rs`) owns the sending half,
//! numbers server frames, and decides what to deliver when.

mod transport;

use std::sync::Arc;

use axum::{
    extract::{
        State, WebSocketUpgrade,
        ws::{Message, WebSocket},
    },
    response::Response,
};
use courier_shared::{
    ClientError, ErrorCode,
    protocol::{self, ClientEvent, ClientFrame, SessionReady, server_events},
};
use futures::StreamExt;
use serde_json::json;
use tokio::sync::mpsc;
use tracing::Instrument;
use uuid::Uuid;

pub use transport::{CloseReason, WsTransport, encode};

use crate::{
    events,
    http::auth::AuthUser,
    presence,
    registry::SessionHandle,
    session::{ClientInput, Session},
    state::AppState,
};

/// Frames above this close the socket (1009) instead of getting an error
/// frame; below it, frames over MAX_FRAME_BYTES get `payload_too_large`.
const HARD_FRAME_LIMIT: usize = 2 * 1024 * 1024;
/// Socket read and write buffers: small, because idle connections must be cheap.
const SOCKET_BUFFER_BYTES: usize = 4 * 1024;
/// Client frames read ahead of the session.
const CLIENT_QUEUE: usize = 64;

/// `GET /ws`: the token is checked (401 with a JSON body) before the upgrade.
pub async fn upgrade(State(state): State<AppState>, user: AuthUser, upgrade: WebSocketUpgrade) -> Response {
    upgrade
        .read_buffer_size(SOCKET_BUFFER_BYTES)
        .write_buffer_size(SOCKET_BUFFER_BYTES)
        .max_message_size(HARD_FRAME_LIMIT)
        .max_frame_size(HARD_FRAME_LIMIT)
        .on_upgrade(move |socket| serve_socket(state, user, socket))
}

async fn serve_socket(state: AppState, user: AuthUser, socket: WebSocket) {
    let connection_id = Uuid::now_v7();
    let span = tracing::info_span!("connection", %connection_id, user_id = %user.claims.sub, node_id = %state.node_id);
    let tracker = state.connections.clone();
    tracker.track_future(run_connection(state, user.claims.sub, socket, connection_id).instrument(span)).await;
}

async fn run_connection(state: AppState, user_id: String, socket: WebSocket, connection_id: Uuid) {
    let (sink, mut stream) = socket.split();
    let (push_tx, push_rx) = mpsc::channel(state.config.send_queue_frames.max(1));
    let (client_tx, client_rx) = mpsc::channel(CLIENT_QUEUE);
    // Cancelled when the client is too slow, and (as a child) when the node
    // stops: either way a blocked send is given up.
    let too_slow = state.stopping.child_token();
    let handle = Arc::new(SessionHandle::new(connection_id, user_id.clone(), push_tx, too_slow.clone()));
    let session = Session::new(state.clone(), user_id.clone(), connection_id);
    let transport = WsTransport::new(sink, too_slow.clone(), state.config.write_timeout);
    let session_task =
        tokio::spawn(session.run(transport, handle.clone(), push_rx, client_rx, state.stopping.clone()).in_current_span());
    state.sessions.insert(handle);

    let ready = SessionReady { user_id: user_id.clone(), connection_id, node_id: state.node_id.clone() };
    let _ = client_tx.send(ClientInput::Event { event: server_events::READY, data: json!(ready) }).await;
    if let Err(error) = presence::connected(&state, &user_id, connection_id).await {
        tracing::warn!(%error, "cannot record the connection; closing it");
        too_slow.cancel();
    }

    let reader = Reader { state: &state, user_id: &user_id, session: &client_tx };
    loop {
        let message = tokio::select! {
            message = stream.next() => message,
            () = client_tx.closed() => break, // the session ended (slow client, node stopping)
        };
        let message = match message {
            Some(Ok(message)) => message,
            Some(Err(error)) => {
                tracing::debug!(%error, "socket read failed");
                break;
            }
            None => break,
        };
        match message {
            Message::Text(text) => reader.on_text(text.as_str()).await,
            Message::Binary(_) => {
                let error = ClientError::new(ErrorCode::BinaryNotSupported, "frames are JSON text");
                reader.reply(protocol::error_frame(None, &error)).await;
            }
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => {}
        }
    }
    drop(client_tx);
    let reason = session_task.await.unwrap_or(CloseReason::Normal);
    state.sessions.remove(connection_id);
    presence::disconnected(&state, &user_id, connection_id).await;
    tracing::debug!(?reason, "connection closed");
}

struct Reader<'a> {
    state: &'a AppState,
    user_id: &'a str,
    session: &'a mpsc::Sender<ClientInput>,
}

impl Reader<'_> {
    async fn reply(&self, frame: String) {
        let _ = self.session.send(ClientInput::Reply(frame)).await;
    }

    async fn on_text(&self, text: &str) {
        if text.len() > self.state.config.max_frame_bytes {
            let error = ClientError::new(
                ErrorCode::PayloadTooLarge,
                format!("frame is {} bytes; the limit is {}", text.len(), self.state.config.max_frame_bytes),
            );
            self.reply(protocol::error_frame(None, &error)).await;
            return;
        }
        let parsed = protocol::parse_client_frame(text);
        // Everything but acks counts against the user's rate limit, garbage included.
        if !matches!(parsed, Ok(ClientFrame { event: ClientEvent::Ack, .. }))
            && let Err(error) = self.state.rate_limit.check(self.user_id)
        {
            let id = match &parsed {
                Ok(frame) => frame.id,
                Err((id, _)) => *id,
            };
            self.reply(protocol::error_frame(id, &error)).await;
            return;
        }
        match parsed {
            Ok(frame) => self.on_frame(frame).await,
            Err((id, error)) => self.reply(protocol::error_frame(id, &error)).await,
        }
    }

    async fn on_frame(&self, ClientFrame { id, event }: ClientFrame) {
        let result = match event {
            ClientEvent::Ack => {
                // `id` names the server frame being acknowledged; no reply.
                if let Some(id) = id {
                    let _ = self.session.send(ClientInput::Ack(id)).await;
                }
                return;
            }
            ClientEvent::Send(send) => match events::send_message(self.state, self.user_id, send).await {
                Ok(stored) => {
                    let sent = json!(stored.sent);
                    self.answer(id, Ok(sent.clone())).await;
                    let _ = self.session.send(ClientInput::Event { event: server_events::SENT, data: sent }).await;
                    return;
                }
                Err(error) => Err(error),
            },
            ClientEvent::Delivered(message) => {
                let result = events::mark_delivered(self.state, self.user_id, message.message_id).await;
                if result.is_ok() {
                    let _ = self.session.send(ClientInput::Delivered(message.message_id)).await;
                }
                result.map(|updated| json!({ "updated": updated }))
            }
            ClientEvent::Read(receipt) => events::mark_read(self.state, self.user_id, receipt)
                .await
                .map(|updated| json!({ "updated": updated })),
            ClientEvent::Ping => Ok(json!({ "pong": true })),
        };
        self.answer(id, result).await;
    }

    /// The one reply a frame with an `id` gets. Without an id, only errors are reported.
    async fn answer(&self, id: Option<u64>, result: Result<serde_json::Value, ClientError>) {
        match (id, result) {
            (Some(id), Ok(data)) => self.reply(protocol::event_frame(server_events::ACK, Some(id), &data)).await,
            (id, Err(error)) => self.reply(protocol::error_frame(id, &error)).await,
            (None, Ok(_)) => {}
        }
    }
}
