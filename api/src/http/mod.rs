//! The HTTP API: REST under `/api`, health probes, the `/ws` upgrade and `/socket.io/`.

pub mod admin;
pub mod auth;
mod chats;
mod devices;
pub mod error;
mod health;
mod messages;
mod metrics;
mod sync;
mod web;

use axum::{
    Router,
    extract::DefaultBodyLimit,
    routing::{delete, get, post},
};
use axum::http::{HeaderValue, Method, header};
use socketioxide::layer::SocketIoLayer;
use tower_http::trace::DefaultOnFailure;
use tower_http::{
    cors::{AllowOrigin, CorsLayer},
    trace::TraceLayer,
};

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
        .route("/devices", get(devices::list))
        .route("/devices/{device_id}", delete(devices::revoke))
        .route("/sync", get(sync::sync))
        .route("/dev/token", post(web::dev_token))
        .fallback(error::no_such_route);

    let router = Router::new()
        .nest("/api", api)
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::scrape))
        .route("/ws", get(ws::upgrade))
        .route("/", get(web::index))
        .route("/web/{file}", get(web::file))
        .fallback(error::no_such_route)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(socketio);
    // Outside the Socket.IO layer, so its long-polling requests get the headers too.
    let router = match cors(&state.config.cors_allow_origins) {
        Some(cors) => router.layer(cors),
        None => router,
    };
    // A 503 from /readyz during an outage is expected, not an error to page anyone about.
    let trace = TraceLayer::new_for_http().on_failure(DefaultOnFailure::new().level(tracing::Level::WARN));
    router.layer(trace).with_state(state)
}

/// The admin API, served on its own listener (ADMIN_ADDR): operators reach it,
/// clients on the public port do not (there `/admin` is a 404).
pub fn admin_router(state: AppState) -> Router {
    let trace = TraceLayer::new_for_http().on_failure(DefaultOnFailure::new().level(tracing::Level::WARN));
    Router::new()
        .nest("/admin", admin::router())
        .fallback(error::no_such_route)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(trace)
        .with_state(state)
}

/// Cross-origin access for browser apps served elsewhere (socket.io-client
/// starts with HTTP long-polling, which a browser only sends with CORS).
fn cors(origins: &[String]) -> Option<CorsLayer> {
    let origins: Vec<&str> = origins.iter().map(|o| o.trim()).filter(|o| !o.is_empty()).collect();
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.contains(&"*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|origin| match HeaderValue::from_str(origin) {
            Ok(value) => Some(value),
            Err(_) => {
                tracing::warn!(origin, "ignoring an origin that is not a valid header value");
                None
            }
        }))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]),
    )
}
