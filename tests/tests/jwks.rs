//! Tokens checked against a JWKS (JWT_JWKS_URL) served by a local test
//! server whose key set, availability and answers the test controls: RS256,
//! ES256 and EdDSA keys, fetches on an unknown `kid` (rate-limited, shared by
//! concurrent misses), rotation, an outage, and start-up before the JWKS answers.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Json, Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use courier_api::{ApiConfig, ApiServer};
use courier_shared::auth::{Claims, sign_claims};
use courier_tests::{JWT_SECRET, Rest, TestEnv, WsClient, WsError, eventually};
use jsonwebtoken::{
    Algorithm, EncodingKey, Header,
    jwk::{Jwk, JwkSet, PublicKeyUse},
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/keys");
const AUDIENCE: &str = "chat-app";
const ISSUER: &str = "https://idp.example";
/// Long enough never to elapse during a test.
const NEVER: Duration = Duration::from_secs(3600);

/// A signing key of the test identity provider and its public JWK.
struct TestKey {
    kid: &'static str,
    algorithm: Algorithm,
    signing: EncodingKey,
    jwk: Jwk,
}

impl TestKey {
    /// A key from tests/keys (generated with openssl; test use only).
    fn load(file: &str, algorithm: Algorithm, kid: &'static str) -> Self {
        let pem = std::fs::read(format!("{KEYS}/{file}")).unwrap();
        let signing = match algorithm {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
            Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
            other => panic!("no test key for {other:?}"),
        }
        .unwrap();
        let mut jwk = Jwk::from_encoding_key(&signing, algorithm).unwrap();
        jwk.common.key_id = Some(kid.into());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        Self { kid, algorithm, signing, jwk }
    }

    fn rsa(kid: &'static str) -> Self {
        Self::load("rsa-1.pem", Algorithm::RS256, kid)
    }

    fn other_rsa(kid: &'static str) -> Self {
        Self::load("rsa-2.pem", Algorithm::RS256, kid)
    }

    /// A valid token for `user`, signed with this key and naming it in `kid`.
    fn token(&self, user: &str) -> String {
        self.sign(&good_claims(user), self.algorithm, Some(self.kid))
    }

    fn sign(&self, claims: &Claims, algorithm: Algorithm, kid: Option<&str>) -> String {
        let header = Header { kid: kid.map(str::to_owned), ..Header::new(algorithm) };
        sign_claims(&header, claims, &self.signing).unwrap()
    }
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn good_claims(user: &str) -> Claims {
    Claims {
        sub: user.into(),
        exp: now() + 600,
        iat: Some(now()),
        name: Some(format!("{user} name")),
        picture: None,
        role: None,
        roles: None,
        did: None,
        aud: Some(AUDIENCE.into()),
        iss: Some(ISSUER.into()),
    }
}

/// The identity provider's JWKS endpoint: serves whatever set the test
/// publishes, counts fetches, fails on demand, and can hold answers back.
struct JwksServer {
    url: String,
    served: Served,
    stop: CancellationToken,
}

#[derive(Clone)]
struct Served {
    set: Arc<Mutex<JwkSet>>,
    failing: Arc<AtomicBool>,
    fetches: Arc<AtomicUsize>,
    /// Answers wait until this is true.
    open: watch::Receiver<bool>,
    gate: Arc<watch::Sender<bool>>,
}

impl JwksServer {
    async fn start(keys: &[&TestKey]) -> Self {
        let (gate, open) = watch::channel(true);
        let served = Served {
            set: Arc::new(Mutex::new(JwkSet::default())),
            failing: Arc::new(AtomicBool::new(false)),
            fetches: Arc::new(AtomicUsize::new(0)),
            open,
            gate: Arc::new(gate),
        };
        let app = Router::new().route("/.well-known/jwks.json", get(serve_jwks)).with_state(served.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/.well-known/jwks.json", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let shutdown = stop.clone().cancelled_owned();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
        });
        let server = Self { url, served, stop };
        server.publish(keys);
        server
    }

    /// Replaces the published set.
    fn publish(&self, keys: &[&TestKey]) {
        *self.served.set.lock().unwrap() = JwkSet { keys: keys.iter().map(|key| key.jwk.clone()).collect() };
    }

    /// Answers 500 from now on (`true`), or the set again (`false`).
    fn fail(&self, failing: bool) {
        self.served.failing.store(failing, Ordering::SeqCst);
    }

    /// Holds answers back (`false`) or lets them go (`true`).
    fn let_answers_go(&self, open: bool) {
        self.served.gate.send_replace(open);
    }

    fn fetches(&self) -> usize {
        self.served.fetches.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.let_answers_go(true);
        self.stop.cancel();
    }
}

async fn serve_jwks(State(served): State<Served>) -> axum::response::Response {
    served.fetches.fetch_add(1, Ordering::SeqCst);
    let mut open = served.open.clone();
    let _ = open.wait_for(|open| *open).await;
    if served.failing.load(Ordering::SeqCst) {
        return (StatusCode::INTERNAL_SERVER_ERROR, "identity provider down").into_response();
    }
    let set = served.set.lock().unwrap().clone();
    Json(set).into_response()
}

/// An API configuration that checks tokens against `jwks`, with `aud` and `iss` required.
fn jwks_config(env: &TestEnv, jwks: &JwksServer, refresh: Duration, min_refresh: Duration) -> ApiConfig {
    let mut config = env.api_config();
    config.jwt.jwt_jwks_url = Some(jwks.url.clone());
    config.jwt.jwt_jwks_refresh = refresh;
    config.jwt.jwt_jwks_min_refresh = min_refresh;
    config.jwt.jwt_audience = Some(AUDIENCE.into());
    config.jwt.jwt_issuer = Some(ISSUER.into());
    config
}

/// The token works for a REST call and a `/ws` connection.
async fn assert_accepted(addr: &str, token: &str, user: &str) {
    let (status, body) = Rest::new(addr, Some(token)).get("/api/chats").await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    let client = WsClient::connect(addr, token).await.expect("the token upgrades /ws");
    assert_eq!(client.user_id, user);
    client.close().await;
}

/// The REST call's status, error code and message.
async fn rest_verdict(addr: &str, token: &str) -> (u16, String, String) {
    let (status, body) = Rest::new(addr, Some(token)).get("/api/chats").await;
    let text = |field: &str| body["error"][field].as_str().unwrap_or_default().to_owned();
    (status.as_u16(), text("code"), text("message"))
}

/// The token is refused, on REST and on the `/ws` upgrade, as `unauthorized` with `message`.
async fn assert_refused(addr: &str, token: &str, message: &str) {
    assert_eq!(rest_verdict(addr, token).await, (401, "unauthorized".to_owned(), message.to_owned()), "REST");
    match WsClient::connect(addr, token).await {
        Err(WsError::Http { status, body }) => {
            assert_eq!(status, 401, "{message} (ws)");
            assert_eq!((body["error"]["code"].as_str(), body["error"]["message"].as_str()), (Some("unauthorized"), Some(message)));
        }
        Err(other) => panic!("{message}: the upgrade failed oddly: {other:?}"),
        Ok(_) => panic!("{message}: the socket was upgraded"),
    }
}

/// Until `token` is accepted by REST (a refresh may be what it waits for).
async fn eventually_accepted(addr: &str, token: &str, what: &str) {
    eventually(what, || async { (rest_verdict(addr, token).await.0 == 200).then_some(()) }).await;
}

#[tokio::test]
async fn rs256_es256_and_eddsa_tokens_from_the_jwks_are_accepted() {
    let rsa = TestKey::rsa("rsa-1");
    let ec = TestKey::load("ec-p256.pem", Algorithm::ES256, "ec-1");
    let mut ed = TestKey::load("ed25519.pem", Algorithm::EdDSA, "ed-1");
    // Without `alg` the key type decides (Ed25519: EdDSA).
    ed.jwk.common.key_algorithm = None;
    let jwks = JwksServer::start(&[&rsa, &ec, &ed]).await;
    let mut env = TestEnv::new().await;
    let addr = env.start_api_with(jwks_config(&env, &jwks, NEVER, NEVER)).await;

    assert_accepted(&addr, &rsa.token("rita"), "rita").await;
    assert_accepted(&addr, &ec.token("eric"), "eric").await;
    assert_accepted(&addr, &ed.token("edda"), "edda").await;
    assert_eq!(jwks.fetches(), 1, "one fetch at start-up served every key");
    env.cleanup().await;
}

#[tokio::test]
async fn tokens_with_a_bad_kid_alg_issuer_or_audience_are_refused() {
    let rsa = TestKey::rsa("rsa-1");
    let ec = TestKey::load("ec-p256.pem", Algorithm::ES256, "ec-1");
    let unpublished = TestKey::other_rsa("rsa-2");
    let jwks = JwksServer::start(&[&rsa, &ec]).await;
    let mut env = TestEnv::new().await;
    let addr = env.start_api_with(jwks_config(&env, &jwks, NEVER, NEVER)).await;
    let claims = good_claims("mallory");

    assert_refused(&addr, &unpublished.token("mallory"), "token key id (kid) is unknown").await;
    assert_refused(&addr, &rsa.sign(&claims, Algorithm::RS256, None), "token has no key id (kid)").await;
    // Signed with another key under a published kid.
    assert_refused(&addr, &unpublished.sign(&claims, Algorithm::RS256, Some("rsa-1")), "token signature is invalid").await;
    // The right key, another algorithm than the key's.
    assert_refused(&addr, &rsa.sign(&claims, Algorithm::RS384, Some("rsa-1")), "token algorithm is not accepted").await;
    // An RSA signature under the EC key's kid.
    assert_refused(&addr, &rsa.sign(&claims, Algorithm::RS256, Some("ec-1")), "token algorithm is not accepted").await;
    // HS256 is refused outright with a JWKS, whatever secret signed it.
    let hs256 = sign_claims(
        &Header { kid: Some("rsa-1".into()), ..Header::new(Algorithm::HS256) },
        &claims,
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();
    assert_refused(&addr, &hs256, "token algorithm is not accepted").await;
    let none = format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT","kid":"rsa-1"}"#), b64(&serde_json::to_string(&claims).unwrap()));
    assert_refused(&addr, &none, "token is malformed").await;

    let mut wrong_audience = claims.clone();
    wrong_audience.aud = Some("other-app".into());
    assert_refused(&addr, &rsa.sign(&wrong_audience, Algorithm::RS256, Some("rsa-1")), "token audience is not accepted").await;
    let mut wrong_issuer = claims.clone();
    wrong_issuer.iss = Some("https://evil.example".into());
    assert_refused(&addr, &ec.sign(&wrong_issuer, Algorithm::ES256, Some("ec-1")), "token issuer is not accepted").await;
    let mut no_issuer = claims.clone();
    no_issuer.iss = None;
    assert_refused(&addr, &ec.sign(&no_issuer, Algorithm::ES256, Some("ec-1")), "token lacks a required claim").await;
    let mut expired = claims.clone();
    expired.exp = now() - 3600;
    assert_refused(&addr, &rsa.sign(&expired, Algorithm::RS256, Some("rsa-1")), "token has expired").await;
    env.cleanup().await;
}

/// A key published after start-up works on its first token: the miss fetches
/// the set once, and misses arriving meanwhile wait for that fetch.
#[tokio::test]
async fn an_unknown_kid_fetches_the_set_once_for_all_concurrent_misses() {
    let first = TestKey::rsa("rsa-1");
    let next = TestKey::other_rsa("rsa-2");
    let jwks = JwksServer::start(&[&first]).await;
    let mut env = TestEnv::new().await;
    let addr = env.start_api_with(jwks_config(&env, &jwks, NEVER, Duration::ZERO)).await;
    assert_eq!(jwks.fetches(), 1);

    jwks.publish(&[&first, &next]);
    jwks.let_answers_go(false);
    let token = next.token("nina");
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let rest = Rest::new(&addr, Some(&token));
            tokio::spawn(async move { rest.get("/api/chats").await.0 })
        })
        .collect();
    eventually("the miss's fetch to reach the JWKS", || async { (jwks.fetches() == 2).then_some(()) }).await;
    jwks.let_answers_go(true);
    for call in calls {
        assert_eq!(call.await.unwrap(), reqwest::StatusCode::OK);
    }
    assert_eq!(jwks.fetches(), 2, "20 concurrent misses, one fetch");
    assert_accepted(&addr, &token, "nina").await;
    assert_eq!(jwks.fetches(), 2, "the key is cached now");
    env.cleanup().await;
}

/// Within JWT_JWKS_MIN_REFRESH of the last fetch an unknown kid fetches nothing.
#[tokio::test]
async fn misses_fetch_at_most_once_per_min_refresh() {
    let first = TestKey::rsa("rsa-1");
    let next = TestKey::other_rsa("rsa-2");
    let jwks = JwksServer::start(&[&first]).await;
    let mut env = TestEnv::new().await;
    let addr = env.start_api_with(jwks_config(&env, &jwks, NEVER, NEVER)).await;
    jwks.publish(&[&first, &next]);
    for _ in 0..5 {
        assert_refused(&addr, &next.token("nina"), "token key id (kid) is unknown").await;
    }
    assert_eq!(jwks.fetches(), 1, "no fetch within the minimum interval");
    env.cleanup().await;
}

/// The provider rotates: old and new keys both verify while both are
/// published; the old one is refused once a periodic refresh drops it.
#[tokio::test]
async fn rotation_accepts_both_keys_during_the_overlap_then_only_the_new_one() {
    let old = TestKey::rsa("2026-11");
    let new = TestKey::load("ec-p256.pem", Algorithm::ES256, "2026-12");
    let jwks = JwksServer::start(&[&old]).await;
    let mut env = TestEnv::new().await;
    // Only periodic refreshes: misses never fetch here.
    let addr = env.start_api_with(jwks_config(&env, &jwks, Duration::from_millis(200), NEVER)).await;
    assert_accepted(&addr, &old.token("olga"), "olga").await;

    jwks.publish(&[&old, &new]);
    eventually_accepted(&addr, &new.token("nils"), "the new key after a refresh").await;
    assert_accepted(&addr, &new.token("nils"), "nils").await;
    assert_accepted(&addr, &old.token("olga"), "olga").await;

    jwks.publish(&[&new]);
    eventually("the old key to be refused", || async {
        (rest_verdict(&addr, &old.token("olga")).await.0 == 401).then_some(())
    })
    .await;
    assert_refused(&addr, &old.token("olga"), "token key id (kid) is unknown").await;
    assert_accepted(&addr, &new.token("nils"), "nils").await;
    env.cleanup().await;
}

/// The JWKS answering 500: the last good set stays in use, keys published
/// meanwhile are unknown until a fetch succeeds again.
#[tokio::test]
async fn an_outage_keeps_the_last_good_set() {
    let key = TestKey::rsa("rsa-1");
    let later = TestKey::other_rsa("rsa-2");
    let jwks = JwksServer::start(&[&key]).await;
    let mut env = TestEnv::new().await;
    let addr = env.start_api_with(jwks_config(&env, &jwks, Duration::from_millis(100), NEVER)).await;

    jwks.fail(true);
    jwks.publish(&[&key, &later]);
    let before = jwks.fetches();
    eventually("three failed refreshes", || async { (jwks.fetches() >= before + 3).then_some(()) }).await;
    assert_accepted(&addr, &key.token("kim"), "kim").await;
    assert_refused(&addr, &later.token("lars"), "token key id (kid) is unknown").await;
    let (status, ready) = Rest::new(&addr, None).get("/readyz").await;
    assert_eq!((status.as_u16(), ready["signingKeys"].as_str()), (200, Some("ok")), "a node with a good set stays ready");

    jwks.fail(false);
    eventually_accepted(&addr, &later.token("lars"), "the key published during the outage").await;
    assert_accepted(&addr, &key.token("kim"), "kim").await;
    env.cleanup().await;
}

/// Start-up with the JWKS down: the node starts, is not ready, and answers
/// tokens 503 `unavailable` (retry) rather than 401, until the first fetch succeeds.
#[tokio::test]
async fn before_the_first_fetch_tokens_are_unavailable_and_the_node_not_ready() {
    let key = TestKey::rsa("rsa-1");
    let jwks = JwksServer::start(&[&key]).await;
    jwks.fail(true);
    let env = TestEnv::new().await;
    let server = ApiServer::start(jwks_config(&env, &jwks, NEVER, NEVER)).await.expect("starts without the JWKS");
    let addr = server.local_addr.to_string();
    let anonymous = Rest::new(&addr, None);

    eventually("a failed first fetch", || async { (jwks.fetches() >= 1).then_some(()) }).await;
    let (status, ready) = anonymous.get("/readyz").await;
    assert_eq!((status.as_u16(), ready["signingKeys"].as_str()), (503, Some("unavailable")), "{ready}");
    let (status, code, _) = rest_verdict(&addr, &key.token("una")).await;
    assert_eq!((status, code.as_str()), (503, "unavailable"));

    jwks.fail(false);
    eventually("the node to become ready", || async {
        let (status, ready) = anonymous.get("/readyz").await;
        (status.is_success() && ready["signingKeys"] == "ok").then_some(())
    })
    .await;
    assert_accepted(&addr, &key.token("una"), "una").await;
    server.shutdown();
    server.wait().await;
    env.cleanup().await;
}

fn b64(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in text.as_bytes().chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, &b)| acc | (u32::from(b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}
