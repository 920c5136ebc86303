//! One client connection, whatever its transport: `/ws` and `/socket.io/`
//! both open a [`Connection`], feed it the client's events through
//! [`Connection::handle`], and close it the same way. Only framing differs.

use std::{future::Future, sync::Arc};

use courier_shared::{
    ClientError, ErrorCode,
    protocol::{ClientEvent, EntryAccepted, SentMessage, SessionReady, server_events},
};
use serde_json::{Value, json};
use tokio::{sync::mpsc, task::JoinHandle};
use tracing::Instrument;
use uuid::Uuid;

use crate::{
    events, presence,
    registry::SessionHandle,
    session::Session,
    state::AppState,
    transport::{ClientInput, CloseReason, Transport, TransportLink},
    typing,
};

/// Client events queued ahead of the session.
const CLIENT_QUEUE: usize = 64;

/// An open connection: registered on this node, its session running.
pub struct Connection {
    state: AppState,
    pub user_id: String,
    pub device_id: String,
    pub connection_id: Uuid,
    /// Inputs are boxed, as the registry's pushes are: a channel allocates
    /// its first 32 slots up front, per connection.
    session: mpsc::Sender<Box<ClientInput>>,
    session_task: JoinHandle<CloseReason>,
}

impl Connection {
    /// Starts the session on the transport `make_transport` builds, registers it
    /// so pushes reach it, sends `session:ready`, and records the presence that
    /// makes a worker drain the user's backlog.
    pub async fn open<T, F>(
        state: AppState,
        user_id: String,
        device_id: String,
        receipts_only: bool,
        connection_id: Uuid,
        make_transport: F,
    ) -> Self
    where
        T: Transport + 'static,
        F: FnOnce(TransportLink) -> T,
    {
        let (push_tx, push_rx) = mpsc::channel(state.config.send_queue_frames.max(1));
        let (client_tx, client_rx) = mpsc::channel(CLIENT_QUEUE);
        // Cancelled when the client is too slow, and (as a child) when the node
        // stops: either way a blocked send is given up.
        let too_slow = state.stopping.child_token();
        let handle =
            Arc::new(SessionHandle::new(connection_id, user_id.clone(), device_id.clone(), push_tx, too_slow.clone()));
        let mut session = Session::new(state.clone(), user_id.clone(), device_id.clone(), connection_id);
        session.receipts_only = receipts_only;
        let transport = make_transport(TransportLink { too_slow: too_slow.clone(), acks: client_tx.downgrade() });
        let session_task = tokio::spawn(
            session.run(transport, handle.clone(), push_rx, client_rx, state.stopping.clone()).in_current_span(),
        );
        state.sessions.insert(handle.clone());

        let ready = SessionReady { user_id: user_id.clone(), connection_id, node_id: state.node_id.clone() };
        let _ = client_tx.send(Box::new(ClientInput::Event { event: server_events::READY, data: json!(ready) })).await;
        match presence::connected(&state, &user_id, &device_id, connection_id).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(%device_id, "the device was revoked while connecting; closing");
                handle.end(CloseReason::DeviceRevoked);
            }
            Err(error) => {
                tracing::warn!(%error, "cannot record the connection; closing it");
                too_slow.cancel();
            }
        }
        Self { state, user_id, device_id, connection_id, session: client_tx, session_task }
    }

    /// Resolves when the session has ended by itself (slow client, node stopping).
    pub async fn session_ended(&self) {
        self.session.closed().await;
    }

    /// Hands the session an input (an ack, a reply to send in order).
    pub async fn to_session(&self, input: ClientInput) {
        let _ = self.session.send(Box::new(input)).await;
    }

    /// One client event, already parsed (or the reason it could not be): counts
    /// it against the user's rate limit, runs it, and hands the result to
    /// `answer`. What the session must learn from it (`message:sent`, a
    /// delivered message it should stop resending) is passed on here, after
    /// the answer, for every transport.
    pub async fn handle<F, Fut>(&self, event: Result<ClientEvent, ClientError>, answer: F)
    where
        F: FnOnce(Result<Value, ClientError>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let (result, then) = self.run(event).await;
        answer(result).await;
        if let Some(input) = then {
            self.to_session(input).await;
        }
    }

    async fn run(&self, event: Result<ClientEvent, ClientError>) -> (Result<Value, ClientError>, Option<ClientInput>) {
        if let Err(error) = self.state.rate_limit.check(&self.user_id) {
            return (Err(error), None);
        }
        let state = &self.state;
        let event = match event {
            Ok(event) => event,
            Err(error) => return (Err(error), None),
        };
        match event {
            ClientEvent::Send(send) => match events::send_message(state, &self.user_id, Some(&self.device_id), send).await {
                Ok(stored) => {
                    let sent = json!(stored.sent);
                    (Ok(sent.clone()), Some(ClientInput::Event { event: server_events::SENT, data: sent }))
                }
                Err(error) => (Err(error), None),
            },
            ClientEvent::Delivered(message) => match events::mark_delivered(state, &self.user_id, message.message_id).await {
                Ok(updated) => (Ok(json!({ "updated": updated })), Some(ClientInput::Delivered(message.message_id))),
                Err(error) => (Err(error), None),
            },
            ClientEvent::Read(receipt) => {
                (events::mark_read(state, &self.user_id, receipt).await.map(|updated| json!({ "updated": updated })), None)
            }
            ClientEvent::Edit(edit) => {
                own_entry(events::edit_message(state, &self.user_id, Some(&self.device_id), edit).await)
            }
            ClientEvent::Delete(delete) => {
                own_entry(events::delete_message(state, &self.user_id, Some(&self.device_id), delete).await)
            }
            ClientEvent::React(reaction) => {
                own_entry(events::react(state, &self.user_id, Some(&self.device_id), reaction, true).await)
            }
            ClientEvent::Unreact(reaction) => {
                own_entry(events::react(state, &self.user_id, Some(&self.device_id), reaction, false).await)
            }
            ClientEvent::Ping => (Ok(json!({ "pong": true })), None),
            ClientEvent::Typing(change) => (typing::typing(state, &self.user_id, change).await.map(|()| json!({})), None),
            // Transports take acks before they get here (a `/ws` frame id, a Socket.IO ack packet).
            ClientEvent::Ack => {
                (Err(ClientError::new(ErrorCode::InvalidFrame, "an ack answers a server event; it is not an event")), None)
            }
        }
    }

    /// Ends the session (if it has not ended), unregisters it and records that
    /// the user left. Returns why the session closed.
    pub async fn close(self) -> CloseReason {
        let Self { state, user_id, device_id, connection_id, session, session_task } = self;
        drop(session);
        let reason = session_task.await.unwrap_or(CloseReason::Normal);
        state.sessions.remove(connection_id);
        presence::disconnected(&state, &user_id, &device_id, connection_id).await;
        tracing::debug!(?reason, "connection closed");
        reason
    }
}

/// The reply to an edit, delete or reaction and, if it wrote a log entry,
/// the entry this device passes over (it made the change; its other devices
/// get it).
fn own_entry(result: Result<EntryAccepted, ClientError>) -> (Result<Value, ClientError>, Option<ClientInput>) {
    match result {
        Ok(accepted) => {
            let own = accepted.entry_id.zip(accepted.seq).map(|(message_id, seq)| {
                ClientInput::Own(SentMessage {
                    message_id,
                    chat_id: accepted.chat_id,
                    seq,
                    created_at: accepted.at,
                    client_msg_id: None,
                })
            });
            (Ok(json!(accepted)), own)
        }
        Err(error) => (Err(error), None),
    }
}
