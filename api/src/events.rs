//! The transport-independent event handlers: `/ws` (and any later transport)
//! parse frames, call these, and turn the results into replies.

use std::time::Duration;

use chrono::Utc;
use courier_shared::{
    ClientError, ErrorCode,
    db::{
        messages::{self, NewMessage, StoredMessage},
        status,
    },
    protocol::{DeleteMessage, EditMessage, EntryAccepted, EntryKind, ReactionRef, ReadReceipt, SendMessage},
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
        client_msg_id: send.client_msg_id,
        reply_to: send.reply_to,
        ..NewMessage::message(send.chat_id, sender_id, sender_device, send.content, send.message_type)
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

/// An entry about a message (`message:edit`, `message:delete` for everyone,
/// `message:react`, `message:unreact`): written to the message's chat log like
/// a message, so every device of every member gets it in order, through the
/// same jobs. Returns the reply and, if an entry was written, what the
/// sending device's session passes over.
pub async fn entry_about(
    state: &AppState,
    user_id: &str,
    device_id: Option<&str>,
    kind: EntryKind,
    target_id: Uuid,
    content: String,
) -> Result<EntryAccepted, ClientError> {
    let Some(chat_id) = messages::chat_of(&state.db, target_id).await? else {
        return Err(ClientError::new(ErrorCode::NotFound, "no such message"));
    };
    let window = match kind {
        EntryKind::Edit => Some(state.config.edit_window),
        EntryKind::Delete => Some(state.config.delete_window),
        _ => None,
    };
    let entry = NewMessage {
        kind,
        target_id: Some(target_id),
        window_start: window.map(window_start),
        ..NewMessage::message(chat_id, user_id, device_id, content, "text".into())
    };
    let stored = state.sends.store(entry).await?;
    state.jobs.publish(&stored);
    let accepted = EntryAccepted {
        message_id: target_id,
        chat_id,
        changed: !stored.duplicate,
        entry_id: (!stored.duplicate).then_some(stored.sent.message_id),
        // Unchanged: the chat's last seq when that was decided.
        seq: Some(stored.sent.seq),
        at: stored.sent.created_at,
    };
    if !stored.duplicate {
        tracing::debug!(kind = kind.as_str(), %target_id, seq = stored.sent.seq, "log entry stored");
    }
    Ok(accepted)
}

/// The oldest send time a window still allows.
fn window_start(window: Duration) -> chrono::DateTime<Utc> {
    Utc::now() - chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX)
}

pub async fn edit_message(state: &AppState, user_id: &str, device_id: Option<&str>, edit: EditMessage) -> Result<EntryAccepted, ClientError> {
    edit.validate()?;
    entry_about(state, user_id, device_id, EntryKind::Edit, edit.message_id, edit.content).await
}

/// `message:delete`: for everyone (an entry in the log), or `forMe` (hidden
/// from the caller's history and catch-up; nobody else learns of it).
pub async fn delete_message(
    state: &AppState,
    user_id: &str,
    device_id: Option<&str>,
    delete: DeleteMessage,
) -> Result<EntryAccepted, ClientError> {
    if delete.for_me {
        let Some(chat_id) = messages::chat_of(&state.db, delete.message_id).await? else {
            return Err(not_found());
        };
        if !messages::hide_for(&state.db, user_id, delete.message_id).await? {
            return Err(not_found());
        }
        let at = Utc::now();
        return Ok(EntryAccepted { message_id: delete.message_id, chat_id, changed: true, entry_id: None, seq: None, at });
    }
    entry_about(state, user_id, device_id, EntryKind::Delete, delete.message_id, String::new()).await
}

pub async fn react(
    state: &AppState,
    user_id: &str,
    device_id: Option<&str>,
    reaction: ReactionRef,
    add: bool,
) -> Result<EntryAccepted, ClientError> {
    reaction.validate()?;
    let kind = if add { EntryKind::React } else { EntryKind::Unreact };
    entry_about(state, user_id, device_id, kind, reaction.message_id, reaction.emoji).await
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
