//! The HTTP API: REST under `/api`, health probes, the `/ws` upgrade and `/socket.io/`.

pub mod admin;
mod asyncapi;
pub mod auth;
mod chats;
mod devices;
pub mod error;
mod health;
mod messages;
mod metrics;
pub mod openapi;
mod sync;
mod upgrade;
mod web;

use axum::{Router, extract::DefaultBodyLimit};
use axum::http::{HeaderValue, Method, header};
use socketioxide::layer::SocketIoLayer;
use tower_http::trace::DefaultOnFailure;
use tower_http::{
    cors::{AllowOrigin, CorsLayer},
    trace::TraceLayer,
};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::state::AppState;

/// Largest REST body; a message's content is at most 64 KiB.
const MAX_BODY_BYTES: usize = 256 * 1024;

/// The routes of the public listener. `routes!` adds each handler and its
/// `#[utoipa::path]` description together, so the OpenAPI document
/// (`/api/openapi.json`) lists exactly what is routed: add routes here only
/// that way.
pub fn public_routes() -> OpenApiRouter<AppState> {
    let api = OpenApiRouter::new()
        .routes(routes!(chats::create, chats::list))
        .routes(routes!(chats::get))
        .routes(routes!(chats::add_member))
        .routes(routes!(chats::remove_member))
        .routes(routes!(messages::history, messages::send))
        .routes(routes!(devices::list))
        .routes(routes!(devices::revoke))
        .routes(routes!(sync::sync))
        .routes(routes!(web::dev_token))
        .routes(routes!(openapi::document_json))
        .routes(routes!(asyncapi::document_json))
        .fallback(error::no_such_route);

    OpenApiRouter::new()
        .nest("/api", api)
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(metrics::scrape))
        .routes(routes!(upgrade::websocket))
        .routes(routes!(web::index))
        .routes(routes!(web::file))
}

/// The routes of the admin listener, described the same way.
pub fn admin_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().nest("/admin", admin::router())
}

pub fn router(state: AppState, socketio: SocketIoLayer) -> Router {
    let (router, _) = public_routes().split_for_parts();
    let router = router
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
    let (router, _) = admin_routes().split_for_parts();
    router
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
