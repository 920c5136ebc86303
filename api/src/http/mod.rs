//! The HTTP API: REST under `/api`, health probes, and the `/ws` upgrade.

pub mod admin;
pub mod auth;
mod chats;
pub mod error;
mod health;
mod messages;
mod metrics;

use axum::{
    Router,
    extract::DefaultBodyLimit,
    routing::{delete, get, post},
};
use tower_http::trace::TraceLayer;

use crate::{state::AppState, ws};

/// Largest REST body; a message's content is at most 64 KiB.
const MAX_BODY_BYTES: usize = 256 * 1024;

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/chats", post(chats::create).get(chats::list))
        .route("/chats/{chat_id}", get(chats::get))
        .route("/chats/{chat_id}/members", post(chats::add_member))
        .route("/chats/{chat_id}/members/{user_id}", delete(chats::remove_member))
        .route("/chats/{chat_id}/messages", get(messages::history).post(messages::send))
        .fallback(error::no_such_route);

    Router::new()
        .nest("/api", api)
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::scrape))
        .nest("/admin", admin::router())
        .route("/ws", get(ws::upgrade))
        .fallback(error::no_such_route)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
