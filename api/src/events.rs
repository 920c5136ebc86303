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

/// `message:send`: validates, stores the message with a `sent` status per other
/// member and its outbox row in one transaction, starts publishing the
/// delivery jobs, and returns ✓ sent. A resend with the same
/// `clientMsgId` returns the original message.
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

/// `message:delivered {messageId}`: the client has the message. Written by the
/// status writer, as an ack of `message:receive` is: the one place that writes
/// `delivered` and tells the sender. Returns whether the status changed.
pub async fn mark_delivered(state: &AppState, user_id: &str, message_id: Uuid) -> Result<bool, ClientError> {
    let updated = state.status_writer.delivered(message_id, user_id.to_owned()).await.changed().await?;
    if !updated && !status::is_recipient(&state.db, message_id, user_id).await? {
        return Err(not_found());
    }
    Ok(updated)
}

/// `message:read`: one message or a whole chat up to a seq. Returns how many statuses changed.
pub async fn mark_read(state: &AppState, user_id: &str, receipt: ReadReceipt) -> Result<usize, ClientError> {
    match receipt {
        ReadReceipt::One { message_id } => {
            let mut tx = state.db.begin().await?;
            let changes = status::mark_read(&mut *tx, &[message_id], &[user_id.to_owned()]).await?;
            let moves = status::advance_watermarks(&mut tx, &status::members_of(&changes)).await?;
            tx.commit().await?;
            if changes.is_empty() && !status::is_recipient(&state.db, message_id, user_id).await? {
                return Err(not_found());
            }
            let updated = changes.len();
            publish_changes(&state.broker, changes, moves).await;
            Ok(updated)
        }
        ReadReceipt::UpTo { chat_id, up_to_seq } => {
            if !courier_shared::db::chats::is_member(&state.db, chat_id, user_id).await? {
                return Err(ClientError::not_member());
            }
            let mut tx = state.db.begin().await?;
            let changes = status::mark_read_up_to(&mut *tx, user_id, chat_id, up_to_seq).await?;
            let moves = status::advance_watermarks(&mut tx, &status::members_of(&changes)).await?;
            tx.commit().await?;
            let updated = changes.len();
            publish_changes(&state.broker, changes, moves).await;
            Ok(updated)
        }
    }
}

/// Same answer for "no such message" and "not addressed to you".
fn not_found() -> ClientError {
    ClientError::new(ErrorCode::NotFound, "no such message for this user")
}
