//! The transport-independent event handlers: `/ws` (and any later transport)
//! parse frames, call these, and turn the results into replies.

use courier_shared::{
    ClientError, ErrorCode,
    db::{
        messages::{NewMessage, StoredMessage},
        status,
    },
    protocol::{ReadReceipt, SendMessage},
};
use uuid::Uuid;

use crate::{state::AppState, status_writer::publish_changes};

/// `message:send`: validates, stores the message and its outbox row in one
/// transaction, starts publishing the delivery jobs, and returns ✓ sent. A
/// resend with the same `clientMsgId` returns the original message.
pub async fn send_message(
    state: &AppState,
    sender_id: &str,
    sender_device: Option<&str>,
    send: SendMessage,
) -> Result<StoredMessage, ClientError> {
    send.validate()?;
    let message = NewMessage {
        message_id: Uuid::now_v7(),
        chat_id: send.chat_id,
        sender_id: sender_id.to_owned(),
        sender_device: sender_device.map(str::to_owned),
        content: send.content,
        message_type: send.message_type,
        client_msg_id: send.client_msg_id,
    };
    let stored = state.sends.store(message).await?;
    if !stored.duplicate {
        state.metrics.messages_accepted.inc();
        tracing::debug!(message_id = %stored.sent.message_id, chat_id = %stored.sent.chat_id,
            recipients = stored.recipients.len(), "message stored");
    }
    state.jobs.publish(&stored);
    Ok(stored)
}

/// `message:delivered {messageId}`: the client has the message. The
/// connection's session takes it as an acknowledgement of that message and
/// moves the device's cursor over it (with the status writer, the one place
/// that writes `delivered` and tells the sender). Returns whether the
/// message was not yet delivered to the user.
pub async fn mark_delivered(state: &AppState, user_id: &str, message_id: Uuid) -> Result<bool, ClientError> {
    match status::addressed(&state.db, message_id, user_id).await? {
        Some(addressed) => Ok(!addressed.delivered),
        None => Err(not_found()),
    }
}

/// `message:read`: a whole chat up to a seq, or up to one message (what
/// was read before it counts as read). Returns how many messages of others
/// became read.
pub async fn mark_read(state: &AppState, user_id: &str, receipt: ReadReceipt) -> Result<usize, ClientError> {
    let (chat_id, up_to_seq) = match receipt {
        ReadReceipt::One { message_id } => match status::addressed(&state.db, message_id, user_id).await? {
            Some(addressed) => (addressed.chat_id, addressed.seq),
            None => return Err(not_found()),
        },
        ReadReceipt::UpTo { chat_id, up_to_seq } => {
            if !courier_shared::db::chats::is_member(&state.db, chat_id, user_id).await? {
                return Err(ClientError::not_member());
            }
            (chat_id, up_to_seq)
        }
    };
    let mut tx = state.db.begin().await?;
    let (updated, moved) = status::read_up_to(&mut tx, user_id, chat_id, up_to_seq).await?;
    tx.commit().await?;
    publish_changes(&state.broker, Vec::new(), moved.into_iter().collect()).await;
    Ok(usize::try_from(updated).unwrap_or(0))
}

/// Same answer for "no such message" and "not addressed to you".
fn not_found() -> ClientError {
    ClientError::new(ErrorCode::NotFound, "no such message for this user")
}
