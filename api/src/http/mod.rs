//! The HTTP API: REST under `/api`, health probes, the `/ws` upgrade and `/socket.io/`.

pub mod auth;
mod chats;
pub mod error;
mod health;
mod messages;
mod web;

use axum::{
    Router,
    extract::DefaultBodyLimit,
    routing::{delete, get, post},
};
use socketioxide::layer::SocketIoLayer;
use tower_http::trace::TraceLayer;

use crate::{state::AppState, ws};

/// Largest REST body; a message's content is at most 64 KiB.
const MAX_BODY_BYTES: usize = 256 * 1024;

pub fn router(state: AppState, socketio: SocketIoLayer) -> Router {
    let api = Router::new()
        .route("/chats", post(chats::create).get(chats::list))
        .route("/chats/{chat_id}", get(chats::get))
        .route("/chats/{chat_id}/members", post(chats::add_member))
        .route("/chats/{chat_id}/members/{user_id}", delete(chats::remove_member))
        .route("/chats/{chat_id}/messages", get(messages::history).post(messages::send))
        .route("/dev/token", post(web::dev_token))
        .fallback(error::no_such_route);

    Router::new()
        .nest("/api", api)
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/ws", get(ws::upgrade))
        .route("/", get(web::index))
        .route("/web/{file}", get(web::file))
        .fallback(error::no_such_route)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(socketio)
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
