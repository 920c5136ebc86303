//! The OpenAPI 3.1 document of the HTTP API, built from the routers
//! themselves: every route is added with `routes!`, which takes the
//! handler's `#[utoipa::path]` description along, so the document cannot
//! list a route that is not served or miss one that is. The admin routes are
//! in the same document, tagged `admin`, each with the admin listener as its
//! server. The offline push webhook that the worker sends is a `webhooks`
//! entry.
//!
//! Served at `GET /api/openapi.json`; committed as docs/openapi.json
//! (`courier-api openapi > docs/openapi.json` writes it; a test fails when
//! the two differ).

use std::sync::LazyLock;

use axum::{
    http::header::CONTENT_TYPE,
    response::{IntoResponse, Response},
};
use courier_shared::{ClientError, ErrorCode, webhook::OfflineMessagesNotice};
use utoipa::{
    OpenApi,
    openapi::{
        self, ContentBuilder, InfoBuilder, LicenseBuilder, PathItem, Paths, Ref, RefOr, ResponseBuilder, Server,
        path::Operation,
        security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};

use super::error::{ApiError, ErrorBody};

/// Where the public listener is by default (API_ADDR).
const PUBLIC_SERVER: &str = "http://localhost:8080";
/// Where the admin listener is by default (ADMIN_ADDR, loopback only).
const ADMIN_SERVER: &str = "http://127.0.0.1:8081";

const DESCRIPTION: &str = "\
REST API of Courier, a chat-delivery backend. The socket protocol (`/ws`, \
`/socket.io/`) is in docs/protocol.md, and as an AsyncAPI document at \
`/api/asyncapi.json`.

Authentication: a JWT as `Authorization: Bearer …` (or `?token=`, for \
browsers). Every authenticated call counts against the user's rate limit \
(429 `rate_limited`).

Errors: every error body is `{\"error\": {\"code\", \"message\"}}` (`ErrorBody`); \
`code` is a stable snake_case string, `message` is for people. A dependency \
that is down is 503 `unavailable`: retry (a send with the same \
`clientMsgId`).

Two listeners: clients use API_ADDR (default :8080). The routes tagged \
`admin` are served only on ADMIN_ADDR (default 127.0.0.1:8081), which \
clients do not reach, and need a token with the `admin` role.";

#[derive(OpenApi)]
#[openapi(
    components(schemas(ErrorBody, OfflineMessagesNotice)),
    tags(
        (name = "chats", description = "Chats and their members."),
        (name = "messages", description = "History and the REST send (the same path as `message:send`)."),
        (name = "sync", description = "Catch-up by per-chat cursors."),
        (name = "devices", description = "The caller's devices."),
        (name = "socket", description = "The WebSocket handshake; the frames are in docs/protocol.md and `/api/asyncapi.json`."),
        (name = "dev", description = "Development tokens, off by default."),
        (name = "health", description = "Liveness and readiness probes."),
        (name = "operations", description = "Prometheus metrics."),
        (name = "web", description = "The built-in chat page."),
        (name = "docs", description = "The API's machine-readable descriptions: this OpenAPI document, and the AsyncAPI document of the socket protocol."),
        (name = "admin", description = "The admin API: only on the admin listener (ADMIN_ADDR), with a token that has the `admin` role."),
        (name = "webhooks", description = "Requests Courier sends to the host app."),
    ),
)]
struct Base;

/// The whole document: both listeners' routes and the webhook.
pub fn document() -> openapi::OpenApi {
    let (_, public) = super::public_routes().split_for_parts();
    let (_, admin) = super::admin_routes().split_for_parts();
    let mut document = Base::openapi();
    document.info = InfoBuilder::new()
        .title("Courier")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(DESCRIPTION))
        .license(Some(LicenseBuilder::new().name("MIT").identifier(Some("MIT")).build()))
        .build();
    document.servers = Some(vec![server(PUBLIC_SERVER, "The public listener (API_ADDR).")]);
    document.merge(public);
    document.merge(on_admin_listener(admin));
    add_security_schemes(&mut document);
    add_common_errors(&mut document);
    let mut webhooks = Paths::builder().path_from::<__path_offline_messages>().build();
    for item in webhooks.paths.values_mut() {
        for operation in operations_mut(item) {
            operation.tags = Some(vec!["webhooks".to_owned()]);
        }
    }
    document.webhooks = Some(webhooks);
    tidy_summaries(&mut document);
    document
}

/// The document as served and as committed in docs/openapi.json: pretty,
/// with a final newline.
pub fn document_text() -> Result<String, serde_json::Error> {
    let mut text = serde_json::to_string_pretty(&document())?;
    text.push('\n');
    Ok(text)
}

/// Built once: the routes cannot change while the process runs.
static DOCUMENT: LazyLock<Result<String, String>> = LazyLock::new(|| document_text().map_err(|error| error.to_string()));

/// `GET /api/openapi.json`.
#[utoipa::path(
    get, path = "/openapi.json", tag = "docs", operation_id = "openapi",
    responses((status = 200, description = "This document (OpenAPI 3.1).", body = serde_json::Value)),
)]
pub async fn document_json() -> Response {
    match &*DOCUMENT {
        Ok(text) => ([(CONTENT_TYPE, "application/json")], text.as_str()).into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot serialize the OpenAPI document");
            ApiError(ClientError::new(ErrorCode::Internal, "cannot build the OpenAPI document")).into_response()
        }
    }
}

fn server(url: &str, description: &str) -> Server {
    let mut server = Server::new(url);
    server.description = Some(description.to_owned());
    server
}

/// Marks the admin routes: tagged `admin`, served by the admin listener.
fn on_admin_listener(mut admin: openapi::OpenApi) -> openapi::OpenApi {
    for item in admin.paths.paths.values_mut() {
        item.servers = Some(vec![server(ADMIN_SERVER, "The admin listener (ADMIN_ADDR); not the clients' port.")]);
        for operation in operations_mut(item) {
            operation.tags = Some(vec!["admin".to_owned()]);
        }
    }
    admin
}

fn add_security_schemes(document: &mut openapi::OpenApi) {
    let components = document.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .description(Some("A JWT Courier accepts (JWT_SECRET, JWT_PUBLIC_KEY_FILE, …)."))
                .build(),
        ),
    );
    components.add_security_scheme(
        "token",
        SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
            "token",
            "The same JWT as a query parameter, for browsers (a WebSocket cannot carry headers).",
        ))),
    );
}

/// The errors any authenticated call can end in, described once in
/// `components.responses` and referenced from every operation that needs a
/// token (an operation's own description of the same status wins).
const COMMON_ERRORS: &[(&str, &str, &str)] = &[
    ("401", "Unauthorized", "`unauthorized`: a missing, malformed, expired or forged token (with `WWW-Authenticate: Bearer`)."),
    ("429", "RateLimited", "`rate_limited`: the user's request budget is spent; retry later."),
    ("500", "Internal", "`internal`: a bug on the server's side."),
    ("503", "Unavailable", "`unavailable`: PostgreSQL or RabbitMQ is down; safe to retry."),
];
/// What the admin routes answer a valid token without the `admin` role.
const FORBIDDEN: (&str, &str, &str) = ("403", "Forbidden", "`forbidden`: the token lacks the `admin` role.");

fn add_common_errors(document: &mut openapi::OpenApi) {
    let components = document.components.get_or_insert_with(Default::default);
    for (_, name, description) in COMMON_ERRORS.iter().chain([&FORBIDDEN]) {
        let response = ResponseBuilder::new()
            .description(*description)
            .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build())
            .build();
        components.responses.insert((*name).to_owned(), RefOr::T(response));
    }
    for item in document.paths.paths.values_mut() {
        for operation in operations_mut(item) {
            let authenticated = operation.security.as_ref().is_some_and(|requirements| !requirements.is_empty());
            if !authenticated {
                continue;
            }
            let admin = operation.tags.as_ref().is_some_and(|tags| tags.iter().any(|tag| tag == "admin"));
            let extra = admin.then_some(&FORBIDDEN);
            for (status, name, _) in COMMON_ERRORS.iter().chain(extra) {
                operation
                    .responses
                    .responses
                    .entry((*status).to_owned())
                    .or_insert_with(|| RefOr::Ref(Ref::from_response_name(*name)));
            }
        }
    }
}

/// The handlers' doc comments are the summaries, wrapped as comments are:
/// a summary becomes one line, its first sentence, and the whole paragraph
/// goes to the description.
fn tidy_summaries(document: &mut openapi::OpenApi) {
    let webhooks = document.webhooks.iter_mut().flat_map(|paths| paths.paths.values_mut());
    for item in document.paths.paths.values_mut().chain(webhooks) {
        for operation in operations_mut(item) {
            let Some(summary) = operation.summary.take() else { continue };
            let text = summary.lines().map(str::trim).collect::<Vec<_>>().join(" ");
            let Some(end) = text.find(". ") else {
                operation.summary = Some(text);
                continue;
            };
            operation.summary = Some(text[..=end].to_owned());
            operation.description = Some(match operation.description.take() {
                Some(more) if !more.is_empty() => format!("{text}\n\n{more}"),
                _ => text,
            });
        }
    }
}

fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

/// The offline push notice.
// Never called: the webhook is a request Courier sends; only the
// description this generates is used.
#[utoipa::path(
    post, path = "offlineMessages", tag = "webhooks", operation_id = "offlineMessages",
    description = "Sent by courier-worker to PUSH_WEBHOOK_URL when a message finds its recipient offline (at most once per user per PUSH_WEBHOOK_QUIET_PERIOD). Verify `x-courier-signature` over the raw body before parsing it.",
    params(
        ("x-courier-signature" = String, Header, description = "`sha256=` followed by the lowercase hex HMAC-SHA256 of the raw request body under PUSH_WEBHOOK_SECRET."),
        ("idempotency-key" = String, Header, description = "The notice's `idempotencyKey`: the same in every retry of one notice."),
        ("x-courier-event" = String, Header, description = "`offline_messages`."),
    ),
    request_body(content = OfflineMessagesNotice, content_type = "application/json"),
    responses(
        (status = "2XX", description = "Taken: the notice is not sent again."),
        (status = 429, description = "Retried with backoff, as are 408, any 5xx and network errors, up to PUSH_WEBHOOK_ATTEMPTS in all."),
        (status = "default", description = "Any other status: the notice is given up, not retried."),
    ),
)]
#[allow(dead_code)]
fn offline_messages() {}
