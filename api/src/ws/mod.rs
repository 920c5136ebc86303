//! `/ws`: JSON text frames over a WebSocket.
//!
//! Each connection has two tasks: the reader (this module) parses client
//! frames and runs their handlers in order, so one client's sends are stored
//! in the order it sent them; the driver (`driver.rs`) owns the socket's
//! sending half and numbers the server's event frames.

mod driver;

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
use tracing::Instrument;
use uuid::Uuid;

pub use driver::{CloseReason, ToDriver};

use crate::{events, http::auth::AuthUser, state::AppState};

/// Frames above this close the socket (1009) instead of getting an error
/// frame; below it, frames over MAX_FRAME_BYTES get `payload_too_large`.
const HARD_FRAME_LIMIT: usize = 2 * 1024 * 1024;
/// Socket read and write buffers: small, because idle connections must be cheap.
const SOCKET_BUFFER_BYTES: usize = 4 * 1024;

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
    run_connection(state, user, socket, connection_id).instrument(span).await;
}

async fn run_connection(state: AppState, user: AuthUser, socket: WebSocket, connection_id: Uuid) {
    let user_id = user.claims.sub.clone();
    let (sink, mut stream) = socket.split();
    let driver = driver::spawn(sink, state.config.send_queue_frames);
    let ready = SessionReady { user_id: user_id.clone(), connection_id, node_id: state.node_id.clone() };
    driver.event(server_events::READY, json!(ready)).await;

    let reader = Reader { state: &state, user_id: &user_id, driver: &driver };
    loop {
        let message = tokio::select! {
            message = stream.next() => message,
            reason = driver.closed() => {
                tracing::debug!(?reason, "driver closed the connection");
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
        match message {
            Message::Text(text) => reader.on_text(text.as_str()).await,
            Message::Binary(_) => {
                let error = ClientError::new(ErrorCode::BinaryNotSupported, "frames are JSON text");
                driver.reply(protocol::error_frame(None, &error)).await;
            }
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => {}
        }
    }
    driver.finish().await;
}

struct Reader<'a> {
    state: &'a AppState,
    user_id: &'a str,
    driver: &'a driver::DriverHandle,
}

impl Reader<'_> {
    async fn on_text(&self, text: &str) {
        if text.len() > self.state.config.max_frame_bytes {
            let error = ClientError::new(
                ErrorCode::PayloadTooLarge,
                format!("frame is {} bytes; the limit is {}", text.len(), self.state.config.max_frame_bytes),
            );
            self.driver.reply(protocol::error_frame(None, &error)).await;
            return;
        }
        match protocol::parse_client_frame(text) {
            Ok(frame) => self.on_frame(frame).await,
            Err((id, error)) => self.driver.reply(protocol::error_frame(id, &error)).await,
        }
    }

    async fn on_frame(&self, ClientFrame { id, event }: ClientFrame) {
        let result = match event {
            ClientEvent::Ack => {
                // `id` names the server frame being acknowledged; no reply.
                if let Some(id) = id {
                    self.driver.client_ack(id).await;
                }
                return;
            }
            ClientEvent::Send(send) => match events::send_message(self.state, self.user_id, send).await {
                Ok(stored) => {
                    let sent = json!(stored.sent);
                    self.answer(id, Ok(sent.clone())).await;
                    self.driver.event(server_events::SENT, sent).await;
                    return;
                }
                Err(error) => Err(error),
            },
            ClientEvent::Delivered(message) => events::mark_delivered(self.state, self.user_id, message.message_id)
                .await
                .map(|updated| json!({ "updated": updated })),
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
            (Some(id), Ok(data)) => self.driver.reply(protocol::event_frame(server_events::ACK, Some(id), &data)).await,
            (id, Err(error)) => self.driver.reply(protocol::error_frame(id, &error)).await,
            (None, Ok(_)) => {}
        }
    }
}
