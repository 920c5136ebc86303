//! `/socket.io/`: the same events and payloads as `/ws`, for Socket.IO
//! clients (protocol v5, socket.io-client 4.x), with Socket.IO acknowledgements.
//!
//! Only the framing differs from `/ws`: events come in as Socket.IO events and
//! run through the shared event layer ([`Connection::handle`]); the reply is
//! the event's ack callback. Server events go out through [`SioTransport`], and
//! the client's ack of a `message:receive` is the same ack a `/ws` client sends.
//!
//! socketioxide runs each event handler on its own task, so handlers could run
//! out of order; the extractor [`Queued`] instead puts every event, in arrival
//! order, on the connection's queue, and one task per connection runs them.

mod transport;

use std::{convert::Infallible, sync::Arc, time::Duration};

use courier_shared::{ClientError, ErrorCode, protocol};
use serde_json::Value;
use socketioxide::{
    ParserError, SocketIo,
    adapter::LocalAdapter,
    extract::{AckSender, Event, SocketRef, State, TryData},
    handler::{ConnectHandler, FromMessage, FromMessageParts},
    layer::SocketIoLayer,
    socket::Socket,
};
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

pub use transport::SioTransport;

use crate::{
    connection::Connection,
    http::auth::{admit_device, authenticate, query_param, receipts_only, token_from_parts},
    state::AppState,
    transport::{ClientInput, Reply},
};

/// Events a client may have queued before they run; beyond it they are refused
/// (`rate_limited`) rather than read without limit.
const EVENT_QUEUE: usize = 256;
/// Packets socketioxide buffers per socket before an emit must wait.
const SOCKET_BUFFER_PACKETS: usize = 2048;
/// Larger packets close the connection instead of getting an error reply (as `/ws`'s hard limit).
const HARD_PACKET_LIMIT: usize = 2 * 1024 * 1024;
/// How long a stopping node waits for Socket.IO transports to close.
pub const CLOSE_PATIENCE: Duration = Duration::from_secs(5);

/// The Socket.IO layer to put on the router, and its handle (to close every socket at shutdown).
pub fn layer(state: AppState) -> (SocketIoLayer, SocketIo) {
    let (layer, io) = SocketIo::builder()
        .with_state(state.clone())
        .max_buffer_size(SOCKET_BUFFER_PACKETS)
        .max_payload(HARD_PACKET_LIMIT as u64)
        .ws_max_message_size(HARD_PACKET_LIMIT)
        .ws_max_frame_size(HARD_PACKET_LIMIT)
        .ack_timeout(state.config.ack_timeout)
        .build_layer();
    io.ns("/", on_connect.with(admit));
    (layer, io)
}

/// What the handshake established, kept on the socket.
#[derive(Clone)]
struct Admitted {
    user_id: String,
    device_id: String,
    receipts_only: bool,
    connection_id: Uuid,
    /// Events in arrival order, for the connection task.
    events: mpsc::Sender<Incoming>,
    /// Taken once by the connection task.
    queue: Arc<Mutex<Option<mpsc::Receiver<Incoming>>>>,
    /// Cancelled when the socket disconnects.
    gone: CancellationToken,
}

/// Why a handshake was refused; the client's `connect_error` shows it as
/// `err.message` (`"unauthorized: token expired"`), with `err.data` unset.
#[derive(Debug)]
struct Refused(ClientError);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.0.code.as_str(), self.0.message)
    }
}

/// Handshake middleware: the token from `auth: {token}`, else `Authorization:
/// Bearer` or `?token=` of the request. Runs before the client is told it is
/// connected, so the event handler is in place before its first emit.
async fn admit(socket: SocketRef, TryData(auth): TryData<Value>, State(state): State<AppState>) -> Result<(), Refused> {
    let auth = auth.ok();
    let auth_field = |name: &str| auth.as_ref().and_then(|auth| auth.get(name)).and_then(Value::as_str).map(str::to_owned);
    let from_auth = auth_field("token");
    let auth_device = auth_field("deviceId");
    let token = from_auth.or_else(|| token_from_parts(socket.req_parts())).ok_or_else(|| {
        Refused(ClientError::new(
            ErrorCode::Unauthorized,
            "missing token: connect with `auth: {token}` (or `?token=` in the query)",
        ))
    })?;
    let claims = authenticate(&state, &token).await.map_err(Refused)?;
    let requested = auth_device.or_else(|| query_param(socket.req_parts(), "deviceId"));
    let statuses = auth_field("statuses").or_else(|| query_param(socket.req_parts(), "statuses"));
    let receipts_only = receipts_only(statuses.as_deref()).map_err(Refused)?;
    let device_id = admit_device(&state, &claims, requested.as_deref()).await.map_err(Refused)?;
    let (events, queue) = mpsc::channel(EVENT_QUEUE);
    let gone = CancellationToken::new();
    socket.extensions.insert(Admitted {
        user_id: claims.sub,
        device_id,
        receipts_only,
        connection_id: Uuid::now_v7(),
        events,
        queue: Arc::new(Mutex::new(Some(queue))),
        gone: gone.clone(),
    });
    socket.on_fallback(async |_: Queued| {});
    socket.on_disconnect(async move || gone.cancel());
    Ok(())
}

async fn on_connect(socket: SocketRef, State(state): State<AppState>) {
    let Some(admitted) = socket.extensions.get::<Admitted>() else { return };
    let Some(queue) = admitted.queue.lock().await.take() else { return };
    let span = tracing::info_span!(
        "connection",
        connection_id = %admitted.connection_id,
        user_id = %admitted.user_id,
        node_id = %state.node_id,
        transport = "socket.io",
    );
    let tracker = state.connections.clone();
    tokio::spawn(tracker.track_future(run_connection(state, socket, admitted, queue).instrument(span)));
}

async fn run_connection(state: AppState, socket: SocketRef, admitted: Admitted, mut queue: mpsc::Receiver<Incoming>) {
    let Admitted { user_id, device_id, receipts_only, connection_id, gone, .. } = admitted;
    let config = &state.config;
    let timeouts = transport::Timeouts {
        write: config.write_timeout,
        // A late ack of a message still counts; a status is given up after ACK_TIMEOUT.
        delivery_ack: config.ack_timeout_max.max(config.ack_timeout),
        status_ack: config.ack_timeout,
    };
    let connection = Connection::open(state.clone(), user_id, device_id, receipts_only, connection_id, |link| {
        SioTransport::new(socket.clone(), link, timeouts)
    })
    .await;
    loop {
        tokio::select! {
            () = gone.cancelled() => break,
            () = connection.session_ended() => break, // slow client, node stopping
            incoming = queue.recv() => match incoming {
                Some(incoming) => on_event(&state, &connection, incoming).await,
                None => break,
            },
        }
    }
    connection.close().await;
}

/// One Socket.IO event through the shared event layer; the result goes to its
/// ack callback, or, when it had none, an error goes out as an `error` event.
async fn on_event(state: &AppState, connection: &Connection, incoming: Incoming) {
    let Incoming { event, data, bytes, ack } = incoming;
    let parsed = if bytes > state.config.max_frame_bytes {
        Err(ClientError::new(
            ErrorCode::PayloadTooLarge,
            format!("event is {bytes} bytes; the limit is {}", state.config.max_frame_bytes),
        ))
    } else {
        match event {
            Err(error) => Err(ClientError::new(ErrorCode::InvalidFrame, format!("cannot read the event name: {error}"))),
            // No data (`emit('ping')`) or data that is not JSON: the event's own
            // rules decide (`invalid_payload` where data is needed). A Socket.IO
            // client acknowledges with ack packets, so an `ack` event is an error.
            Ok(event) => protocol::parse_event(&event, data.unwrap_or(Value::Null), false),
        }
    };
    connection
        .handle(parsed, |result| async move {
            match (ack, result) {
                (Some(ack), result) => transport::answer(ack, result),
                (None, Err(error)) => connection.to_session(ClientInput::Reply(Reply { id: None, result: Err(error) })).await,
                (None, Ok(_)) => {}
            }
        })
        .await;
}

/// An event as it arrived: read on socketioxide's receive path, in order.
struct Incoming {
    event: Result<String, ParserError>,
    data: Option<Value>,
    /// Size of the packet's text.
    bytes: usize,
    /// `Some` when the client passed an ack callback.
    ack: Option<AckSender>,
}

/// The extractor that queues an event for its connection task. Extractors run
/// synchronously where socketioxide reads the packet, so the queue keeps the
/// client's order; handlers would not (each runs on a task of its own).
struct Queued;

impl FromMessage<LocalAdapter> for Queued {
    type Error = Infallible;

    fn from_message(
        socket: Arc<Socket<LocalAdapter>>,
        mut value: socketioxide_core::Value,
        ack_id: Option<i64>,
    ) -> Result<Self, Infallible> {
        let bytes = match &value {
            socketioxide_core::Value::Str(text, binaries) => {
                text.len() + binaries.as_ref().map_or(0, |b| b.iter().map(|b| b.len()).sum())
            }
            socketioxide_core::Value::Bytes(bytes) => bytes.len(),
        };
        let event = Event::from_message_parts(&socket, &mut value, &ack_id).map(|Event(name)| name);
        let Ok(TryData(data)) = TryData::<Value>::from_message_parts(&socket, &mut value, &ack_id);
        let data = data.ok();
        let ack = match ack_id {
            Some(_) => AckSender::from_message_parts(&socket, &mut value, &ack_id).ok(),
            None => None,
        };
        let Some(admitted) = socket.extensions.get::<Admitted>() else { return Ok(Queued) };
        let incoming = Incoming { event, data, bytes, ack };
        if let Err(mpsc::error::TrySendError::Full(incoming)) = admitted.events.try_send(incoming) {
            let error = ClientError::new(ErrorCode::RateLimited, "too many events waiting; slow down");
            match incoming.ack {
                Some(ack) => transport::answer(ack, Err(error)),
                None => {
                    let _ = socket.emit(protocol::server_events::ERROR, &error);
                }
            }
        }
        Ok(Queued)
    }
}

#[cfg(test)]
mod tests {
    use courier_shared::{ClientError, ErrorCode};

    use super::Refused;

    #[test]
    fn a_refusal_says_its_code_then_why() {
        let refused = Refused(ClientError::new(ErrorCode::Unauthorized, "token expired"));
        assert_eq!(refused.to_string(), "unauthorized: token expired");
    }
}
