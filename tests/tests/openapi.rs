//! The OpenAPI document (`GET /api/openapi.json`, docs/openapi.json): a valid
//! OpenAPI 3.1 document, the same as the committed file, listing every route
//! of both listeners, and describing what the server really answers (and
//! what the webhook really sends).
//!
//! tests/schemas/openapi-3.1.json is the OpenAPI Initiative's JSON Schema of
//! OpenAPI 3.1 documents (https://spec.openapis.org/oas/3.1/schema/2022-10-07,
//! Apache-2.0), kept in the repository so the check needs no network.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::Duration,
};

use courier_tests::{Rest, TestEnv, WsClient, eventually, ops::WebhookReceiver};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Set to rewrite docs/openapi.json from the code instead of comparing.
const UPDATE_ENV: &str = "UPDATE_OPENAPI";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn committed_path() -> PathBuf {
    repo_root().join("docs/openapi.json")
}

#[test]
fn committed_document_is_what_the_code_generates() {
    let generated = courier_api::http::openapi::document_text().expect("the document serializes");
    let path = committed_path();
    if std::env::var_os(UPDATE_ENV).is_some() {
        std::fs::write(&path, &generated).expect("write docs/openapi.json");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi.json is not what the code generates; regenerate it with\n  \
         cargo run -p courier-api -- openapi > docs/openapi.json\nor\n  \
         {UPDATE_ENV}=1 cargo nextest run -p courier-tests --test openapi committed_document"
    );
}

/// The served document is the generated one, validates against the OpenAPI
/// 3.1 schema, and is internally consistent: every `$ref` resolves, every
/// path parameter is declared (and every declared one is in the path),
/// operation ids are unique.
#[tokio::test]
async fn served_document_is_a_valid_openapi_3_1_document() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    let response = reqwest::get(format!("http://{addr}/api/openapi.json")).await.expect("GET /api/openapi.json");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    let text = response.text().await.expect("body");
    assert_eq!(text, courier_api::http::openapi::document_text().unwrap(), "served = generated");
    let document: Value = serde_json::from_str(&text).expect("the document is JSON");

    assert!(document["openapi"].as_str().is_some_and(|v| v.starts_with("3.1.")), "{}", document["openapi"]);
    let meta: Value = serde_json::from_str(include_str!("../schemas/openapi-3.1.json")).unwrap();
    let validator = jsonschema::draft202012::new(&meta).expect("the OpenAPI 3.1 schema compiles");
    let errors: Vec<String> =
        validator.iter_errors(&document).map(|error| format!("{} at {}", error, error.instance_path())).collect();
    assert!(errors.is_empty(), "not a valid OpenAPI 3.1 document:\n{}", errors.join("\n"));

    let refs = refs_in(&document);
    assert!(refs.len() > 20, "the document references its components: {refs:?}");
    for reference in &refs {
        let pointer = reference.strip_prefix('#').unwrap_or_else(|| panic!("only local refs: {reference}"));
        assert!(document.pointer(pointer).is_some(), "{reference} does not resolve");
    }

    let mut operation_ids = BTreeSet::new();
    for (path, method, operation) in operations(&document) {
        let in_path: BTreeSet<String> = path_template_names(&path);
        let declared: BTreeSet<String> = operation["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|parameter| parameter["in"] == "path")
            .map(|parameter| {
                assert_eq!(parameter["required"], true, "{method} {path}: path parameters are required");
                parameter["name"].as_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(in_path, declared, "{method} {path}: path parameters in the template vs declared");
        let id = operation["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path} has an operationId"));
        assert!(operation_ids.insert(id.to_owned()), "operationId {id} used twice");
        assert!(operation["responses"].as_object().is_some_and(|r| !r.is_empty()), "{method} {path} has responses");
    }
    let webhook = &document["webhooks"]["offlineMessages"]["post"];
    assert!(webhook["requestBody"]["content"]["application/json"]["schema"]["$ref"].is_string(), "{webhook}");
    env.cleanup().await;
}

/// Every route of both routers is in the document, and every documented
/// route is served. The routers add routes only with `routes!` (handler and
/// description together): the source check below holds them to that, and the
/// probes show each documented path and method reaches a handler, not the
/// 404 fallback or a 405.
///
/// Left out on purpose: `/socket.io/`. It is not a route but socketioxide's
/// layer in front of the router, speaking Engine.IO/Socket.IO (long-polling
/// and WebSocket) rather than REST; its events are in docs/protocol.md and
/// the AsyncAPI document. `/ws` is in, as the handshake that opens a socket.
#[tokio::test]
async fn every_route_of_both_listeners_is_documented_and_served() {
    assert_routes_only_added_with_their_description();

    let document = courier_api::http::openapi::document();
    let document = serde_json::to_value(&document).unwrap();
    let mut env = TestEnv::new().await;
    let mut config = env.api_config();
    config.dev_tokens = true; // otherwise POST /api/dev/token answers as the fallback does
    let public = env.start_api_with(config).await;
    let admin = env.api(0).admin_addr.to_string();
    let http = reqwest::Client::new();

    let mut probed = 0;
    for (path, method, operation) in operations(&document) {
        let is_admin = operation["tags"].as_array().is_some_and(|tags| tags.iter().any(|t| t == "admin"));
        assert_eq!(is_admin, path.starts_with("/admin/"), "{method} {path}: tagged admin iff under /admin");
        let addr = if is_admin { &admin } else { &public };
        let concrete = example_path(&path);
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let (status, body) = send(&http, method.clone(), &format!("http://{addr}{concrete}")).await;
        assert!(!is_fallback(status, &body), "{method} {path} is documented but not routed ({concrete}: {status} {body})");
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path} is documented but that method is not routed");
        probed += 1;
    }
    assert!(probed >= 25, "probed {probed} operations");

    // The probe tells a route from the fallback: unknown paths are the fallback on both listeners.
    for (addr, path) in [(&public, "/api/no-such-thing"), (&public, "/admin/backlog"), (&admin, "/api/chats"), (&admin, "/admin/nope")] {
        let (status, body) = send(&http, Method::GET, &format!("http://{addr}{path}")).await;
        assert!(is_fallback(status, &body), "{path} on {addr}: {status} {body}");
    }
    env.cleanup().await;
}

/// Real answers of the server match the document's schemas for their status
/// (a status the document does not list for the route fails too), and so
/// does a real webhook body.
#[tokio::test]
async fn real_responses_and_webhook_bodies_match_the_document() {
    let document = serde_json::to_value(courier_api::http::openapi::document()).unwrap();
    let spec = Spec { document };
    let receiver = WebhookReceiver::start(&[]).await;
    let mut env = TestEnv::new().await;
    let public = env.start_api().await;
    let admin_addr = env.api(0).admin_addr.to_string();
    let mut worker = env.worker_config();
    worker.webhook.push_webhook_url = Some(receiver.url());
    worker.webhook.push_webhook_secret = "openapi-test-secret-0123456789".into();
    env.start_worker_with(worker).await;

    let alice = Rest::new(&public, Some(&env.token("alice")));
    let check = |method: &str, template: &str, status: StatusCode, body: &Value| {
        spec.assert_matches(method, template, status.as_u16(), body);
    };

    let (status, body) = alice.post("/api/chats", json!({ "type": "direct", "members": ["bob"] })).await;
    check("post", "/api/chats", status, &body);
    let direct = body["id"].as_str().unwrap().to_owned();
    let (status, body) = alice.post("/api/chats", json!({ "type": "group", "members": ["bob"], "name": "g" })).await;
    check("post", "/api/chats", status, &body);
    let group = body["id"].as_str().unwrap().to_owned();
    let (status, body) = alice.post(&format!("/api/chats/{group}/members"), json!({ "userId": "carol" })).await;
    check("post", "/api/chats/{chat_id}/members", status, &body);

    let (status, first) = alice
        .post(&format!("/api/chats/{direct}/messages"), json!({ "content": "hello", "clientMsgId": "c-1" }))
        .await;
    check("post", "/api/chats/{chat_id}/messages", status, &first);
    let reply = json!({ "content": "again", "replyTo": first["messageId"] });
    let (status, body) = alice.post(&format!("/api/chats/{direct}/messages"), reply).await;
    check("post", "/api/chats/{chat_id}/messages", status, &body);
    let (status, body) =
        alice.post(&format!("/api/chats/{direct}/messages"), json!({ "content": "hello", "clientMsgId": "c-1" })).await;
    assert_eq!(status, StatusCode::OK, "a resend");
    check("post", "/api/chats/{chat_id}/messages", status, &body);
    let (status, body) = alice.post(&format!("/api/chats/{direct}/messages"), json!({ "content": "" })).await;
    check("post", "/api/chats/{chat_id}/messages", status, &body);

    // Bob online for a while: devices, statuses and a read receipt exist.
    let mut bob = WsClient::connect(&public, &env.token("bob")).await.unwrap();
    bob.receive_messages(2).await;
    bob.wait_event("sync:done").await;
    let bob_rest = Rest::new(&public, Some(&env.token("bob")));
    for (template, path) in [
        ("/api/chats", "/api/chats".to_owned()),
        ("/api/chats/{chat_id}", format!("/api/chats/{direct}")),
        ("/api/chats/{chat_id}/messages", format!("/api/chats/{direct}/messages")),
        ("/api/chats/{chat_id}/messages", format!("/api/chats/{direct}/messages?after=0&limit=10")),
        ("/api/sync", "/api/sync".to_owned()),
        ("/api/devices", "/api/devices".to_owned()),
    ] {
        for user in [&alice, &bob_rest] {
            let (status, body) = user.get(&path).await;
            assert!(status.is_success(), "{path}: {status} {body}");
            check("get", template, status, &body);
        }
    }
    drop(bob);

    // Errors: the shared body, under each status.
    let (status, body) = Rest::new(&public, None).get("/api/chats").await;
    check("get", "/api/chats", status, &body);
    let (status, body) = alice.get(&format!("/api/chats/{}", uuid::Uuid::now_v7())).await;
    check("get", "/api/chats/{chat_id}", status, &body);
    let (status, body) = alice.get("/api/sync?cursors=nonsense").await;
    check("get", "/api/sync", status, &body);
    let (status, body) = alice.delete("/api/devices/no-such-device").await;
    check("delete", "/api/devices/{device_id}", status, &body);
    let (status, body) = alice.delete(&format!("/api/chats/{group}/members/zed")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    check("delete", "/api/chats/{chat_id}/members/{user_id}", status, &body);
    let (status, body) = Rest::new(&public, None).post("/api/dev/token", json!({ "userId": "x" })).await;
    check("post", "/api/dev/token", status, &body);
    for path in ["/healthz", "/readyz"] {
        let (status, body) = Rest::new(&public, None).get(path).await;
        check("get", path, status, &body);
    }

    // The admin listener.
    let ops = Rest::new(&admin_addr, Some(&env.admin_token("ops")));
    for (template, path) in [
        ("/admin/backlog", "/admin/backlog".to_owned()),
        ("/admin/users/{user_id}", "/admin/users/carol".to_owned()),
        ("/admin/users/{user_id}/pending", "/admin/users/carol/pending?limit=1".to_owned()),
        ("/admin/users/{user_id}/parked", "/admin/users/carol/parked".to_owned()),
        ("/admin/dead-letters", "/admin/dead-letters".to_owned()),
        ("/admin/dead-letters/{id}", "/admin/dead-letters/1".to_owned()),
    ] {
        let (status, body) = ops.get(&path).await;
        check("get", template, status, &body);
    }
    let (status, body) = ops.post("/admin/users/carol/requeue", json!({})).await;
    check("post", "/admin/users/{user_id}/requeue", status, &body);
    let (status, body) = Rest::new(&admin_addr, Some(&env.token("mallory"))).get("/admin/backlog").await;
    check("get", "/admin/backlog", status, &body);

    // Carol is offline: the group message wakes her app through the webhook.
    let (status, _) = alice.post(&format!("/api/chats/{group}/messages"), json!({ "content": "carol?" })).await;
    assert_eq!(status, StatusCode::CREATED);
    let call = eventually("the webhook for Carol", || async {
        receiver.calls().into_iter().find(|call| call.json()["userId"] == "carol")
    })
    .await;
    let signature = call.headers["x-courier-signature"].to_str().unwrap();
    let hex = signature.strip_prefix("sha256=").expect("sha256= prefix");
    assert!(hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()), "{signature}");
    assert_eq!(call.headers["x-courier-event"], "offline_messages");
    let body = call.json();
    assert_eq!(call.headers["idempotency-key"].to_str().unwrap(), body["idempotencyKey"], "header and body keys");
    spec.assert_valid(&spec.webhook_schema("offlineMessages"), &body, "the offline_messages webhook body");
    let documented_headers: BTreeSet<String> = spec.document["webhooks"]["offlineMessages"]["post"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|parameter| parameter["in"] == "header")
        .map(|parameter| parameter["name"].as_str().unwrap().to_owned())
        .collect();
    let sent_headers: BTreeSet<String> = call
        .headers
        .keys()
        .map(|name| name.as_str().to_owned())
        .filter(|name| name.starts_with("x-courier-") || name == "idempotency-key")
        .collect();
    assert_eq!(sent_headers, documented_headers, "the webhook's own headers are the documented ones");
    env.cleanup().await;
}

/// The document, and the schemas it gives each answer.
struct Spec {
    document: Value,
}

impl Spec {
    /// The schema of a `status` answer of `method template` (exact status,
    /// else its `NXX` range, else `default`); panics when none is documented.
    fn response_schema(&self, method: &str, template: &str, status: u16) -> Value {
        let operation = &self.document["paths"][template][method];
        assert!(operation.is_object(), "{method} {template} is not in the document");
        let responses = &operation["responses"];
        let keys = [status.to_string(), format!("{}XX", status / 100), "default".to_owned()];
        let response = keys
            .iter()
            .find_map(|key| responses.get(key))
            .unwrap_or_else(|| panic!("{method} {template} does not document status {status}"));
        let response = self.resolve(response);
        response["content"]["application/json"]["schema"].clone()
    }

    fn webhook_schema(&self, name: &str) -> Value {
        self.document["webhooks"][name]["post"]["requestBody"]["content"]["application/json"]["schema"].clone()
    }

    fn resolve<'a>(&'a self, value: &'a Value) -> &'a Value {
        match value["$ref"].as_str() {
            Some(reference) => {
                let pointer = reference.trim_start_matches('#');
                self.document.pointer(pointer).unwrap_or_else(|| panic!("{reference} does not resolve"))
            }
            None => value,
        }
    }

    fn assert_matches(&self, method: &str, template: &str, status: u16, body: &Value) {
        let schema = self.response_schema(method, template, status);
        if schema.is_null() {
            assert!(body.is_null(), "{method} {template} {status}: documented without a body, got {body}");
            return;
        }
        self.assert_valid(&schema, body, &format!("{method} {template} {status}"));
    }

    /// Validates `instance` against `schema`, with the document's components
    /// beside it so that `#/components/...` references resolve.
    fn assert_valid(&self, schema: &Value, instance: &Value, what: &str) {
        let mut root = schema.as_object().cloned().unwrap_or_default();
        root.insert("$schema".into(), json!("https://json-schema.org/draft/2020-12/schema"));
        root.insert("components".into(), self.document["components"].clone());
        let validator = jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(&Value::Object(root))
            .unwrap_or_else(|error| panic!("{what}: the schema does not compile: {error}"));
        let errors: Vec<String> =
            validator.iter_errors(instance).map(|error| format!("{} at {}", error, error.instance_path())).collect();
        assert!(errors.is_empty(), "{what}: the body does not match the document:\n{}\nbody: {instance}", errors.join("\n"));
    }
}

/// Every (path, method, operation) of the document's `paths`.
fn operations(document: &Value) -> Vec<(String, String, Value)> {
    const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];
    let paths = document["paths"].as_object().expect("paths");
    let mut found = Vec::new();
    for (path, item) in paths {
        for method in METHODS {
            if let Some(operation) = item.get(method) {
                found.push((path.clone(), method.to_owned(), operation.clone()));
            }
        }
    }
    found
}

fn path_template_names(path: &str) -> BTreeSet<String> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(str::to_owned)
        .collect()
}

/// Every `$ref` string anywhere in the document.
fn refs_in(value: &Value) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(reference)) = map.get("$ref") {
                    found.insert(reference.clone());
                }
                stack.extend(map.values());
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    found
}

/// A concrete path for a template: each parameter gets a value of its type.
fn example_path(template: &str) -> String {
    let values: BTreeMap<&str, &str> = BTreeMap::from([
        ("chat_id", "00000000-0000-7000-8000-000000000000"),
        ("user_id", "bob"),
        ("device_id", "phone"),
        ("id", "1"),
        ("file", "app.js"),
    ]);
    template
        .split('/')
        .map(|segment| match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(name) => values.get(name).copied().unwrap_or_else(|| panic!("no example value for {{{name}}} in {template}")),
            None => segment,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Sends a request without a token (and an empty JSON body for writes).
async fn send(http: &reqwest::Client, method: Method, url: &str) -> (StatusCode, Value) {
    let mut request = http.request(method.clone(), url).timeout(Duration::from_secs(10));
    if method == Method::POST {
        request = request.json(&json!({}));
    }
    let response = request.send().await.unwrap_or_else(|error| panic!("{method} {url}: {error}"));
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// The routers' fallback answer: 404 `no such route`.
fn is_fallback(status: StatusCode, body: &Value) -> bool {
    status == StatusCode::NOT_FOUND && body["error"]["message"] == "no such route"
}

/// The routers add routes only with `routes!`, which adds the handler's
/// description to the document in the same call; a plain `.route(…)`
/// (or a nested service) would be served without being documented.
fn assert_routes_only_added_with_their_description() {
    const UNDOCUMENTED: [&str; 4] = [".route(", ".route_service(", ".nest_service(", "axum::routing::"];
    let mut offenders = Vec::new();
    let mut files = vec![repo_root().join("api/src")];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|entry| entry.unwrap().path()));
            continue;
        }
        if path.extension().is_none_or(|ext| ext != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (number, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            if UNDOCUMENTED.iter().any(|pattern| code.contains(pattern)) {
                offenders.push(format!("{}:{}: {}", path.display(), number + 1, line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "routes must be added with `.routes(routes!(handler))` and a `#[utoipa::path]` on the handler, \
         so the OpenAPI document has them:\n{}",
        offenders.join("\n")
    );
}
