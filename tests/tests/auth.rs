//! Authentication: every REST call and WebSocket upgrade needs a valid JWT.

use courier_shared::auth::{Claims, sign_claims};
use courier_tests::{JWT_SECRET, Rest, TestEnv, WsClient, WsError};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures");

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn claims(user: &str, exp: u64) -> Claims {
    Claims { sub: user.into(), exp, iat: Some(now()), name: None, picture: None, role: None, roles: None, did: None, aud: None, iss: None }
}

fn hs256(secret: &str, claims: &Claims) -> String {
    sign_claims(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

fn rs256(private_key_file: &str, claims: &Claims) -> String {
    let pem = std::fs::read(format!("{FIXTURES}/{private_key_file}")).unwrap();
    sign_claims(&Header::new(Algorithm::RS256), claims, &EncodingKey::from_rsa_pem(&pem).unwrap()).unwrap()
}

/// A token with `alg: none` and no signature.
fn unsigned(claims: &Claims) -> String {
    let header = base64_url(br#"{"alg":"none","typ":"JWT"}"#);
    format!("{header}.{}.", base64_url(serde_json::to_string(claims).unwrap().as_bytes()))
}

fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, &b)| acc | (u32::from(b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

async fn assert_rejected(addr: &str, token: Option<&str>, why: &str) {
    let (status, body) = Rest::new(addr, token).get("/api/chats").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{why}: {body}");
    assert_eq!(body["error"]["code"], "unauthorized", "{why}: {body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{why}: {body}");
    if let Some(token) = token {
        match WsClient::connect(addr, token).await {
            Err(WsError::Http { status, body }) => {
                assert_eq!(status, 401, "{why} (ws)");
                assert_eq!(body["error"]["code"], "unauthorized", "{why} (ws)");
            }
            Err(other) => panic!("{why}: upgrade failed oddly: {other:?}"),
            Ok(_) => panic!("{why}: the socket was upgraded"),
        }
    }
}

#[tokio::test]
async fn hs256_tokens_are_accepted_and_bad_ones_rejected() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;

    let (status, _) = Rest::new(&addr, Some(&env.token("alice"))).get("/api/chats").await;
    assert_eq!(status, StatusCode::OK);
    let client = WsClient::connect(&addr, &env.token("alice")).await.expect("valid token upgrades");
    assert_eq!(client.user_id, "alice");
    client.close().await;

    let secret = JWT_SECRET;
    assert_rejected(&addr, None, "missing token").await;
    assert_rejected(&addr, Some(&hs256(secret, &claims("alice", now() - 3600))), "expired").await;
    assert_rejected(&addr, Some(&hs256("another-secret-0123456789", &claims("alice", now() + 600))), "bad signature").await;
    let mut forged = hs256(secret, &claims("alice", now() + 600));
    forged.pop();
    forged.push('x');
    assert_rejected(&addr, Some(&forged), "tampered signature").await;
    assert_rejected(&addr, Some(&unsigned(&claims("alice", now() + 600))), "alg none").await;
    assert_rejected(&addr, Some(&rs256("rs256-private.pem", &claims("alice", now() + 600))), "RS256 when HS256 is configured").await;
    assert_rejected(&addr, Some("not.a.jwt"), "garbage").await;
    let mut future_iat = claims("alice", now() + 7200);
    future_iat.iat = Some(now() + 3600);
    assert_rejected(&addr, Some(&hs256(secret, &future_iat)), "issued in the future").await;
    assert_rejected(&addr, Some(&"a".repeat(20_000)), "huge token").await;
    assert_rejected(&addr, Some(&hs256(secret, &claims(&"u".repeat(129), now() + 600))), "user id too long").await;
    env.cleanup().await;
}

#[tokio::test]
async fn rs256_with_a_public_key_file() {
    let mut env = TestEnv::new().await;
    let mut config = env.api_config();
    config.jwt.jwt_public_key_file = Some(format!("{FIXTURES}/rs256-public.pem").into());
    config.jwt.jwt_audience = Some("chat-app".into());
    let addr = env.start_api_with(config).await;

    let mut good = claims("bob", now() + 600);
    good.aud = Some("chat-app".into());
    let (status, body) = Rest::new(&addr, Some(&rs256("rs256-private.pem", &good))).get("/api/chats").await;
    assert_eq!(status, StatusCode::OK, "{body}");

    assert_rejected(&addr, Some(&rs256("rs256-other-private.pem", &good)), "wrong key").await;
    let mut wrong_aud = good.clone();
    wrong_aud.aud = Some("other-app".into());
    assert_rejected(&addr, Some(&rs256("rs256-private.pem", &wrong_aud)), "wrong audience").await;
    // HS256 signed with the public key as the secret: the classic algorithm confusion.
    let public = std::fs::read_to_string(format!("{FIXTURES}/rs256-public.pem")).unwrap();
    assert_rejected(&addr, Some(&hs256(&public, &good)), "HS/RS confusion").await;
    assert_rejected(&addr, Some(&unsigned(&good)), "alg none").await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_configured_issuer_is_required() {
    let mut env = TestEnv::new().await;
    let mut config = env.api_config();
    config.jwt.jwt_issuer = Some("https://auth.example".into());
    let addr = env.start_api_with(config).await;
    let mut good = claims("erin", now() + 600);
    good.iss = Some("https://auth.example".into());
    let (status, body) = Rest::new(&addr, Some(&hs256(JWT_SECRET, &good))).get("/api/chats").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut wrong = good.clone();
    wrong.iss = Some("https://evil.example".into());
    assert_rejected(&addr, Some(&hs256(JWT_SECRET, &wrong)), "wrong issuer").await;
    let mut missing = good.clone();
    missing.iss = None;
    assert_rejected(&addr, Some(&hs256(JWT_SECRET, &missing)), "no issuer").await;
    env.cleanup().await;
}

#[tokio::test]
async fn token_claims_fill_the_user_row() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    let token = env.token_with("carol", Some("Carol C"));
    let (status, _) = Rest::new(&addr, Some(&token)).get("/api/chats").await;
    assert_eq!(status, StatusCode::OK);
    let name: Option<String> = sqlx::query_scalar("SELECT name FROM users WHERE id = 'carol'")
        .fetch_one(&env.db)
        .await
        .unwrap();
    assert_eq!(name.as_deref(), Some("Carol C"));
    env.cleanup().await;
}

/// During an HS256 rotation both secrets verify: JWT_SECRET (the new one,
/// which signs) and JWT_PREVIOUS_SECRETS (the old one); any other does not.
#[tokio::test]
async fn old_and_new_hs256_secrets_are_both_valid_during_a_rotation() {
    let mut env = TestEnv::new().await;
    let mut config = env.api_config();
    let new_secret = "the-new-secret-0123456789";
    config.jwt.jwt_secret = Some(new_secret.into());
    config.jwt.jwt_previous_secrets = vec![JWT_SECRET.into()];
    let addr = env.start_api_with(config).await;

    let old_token = env.token("olive");
    let new_token = hs256(new_secret, &claims("nora", now() + 600));
    for (token, user) in [(&old_token, "olive"), (&new_token, "nora")] {
        let (status, body) = Rest::new(&addr, Some(token)).get("/api/chats").await;
        assert_eq!(status, StatusCode::OK, "{user}: {body}");
        let client = WsClient::connect(&addr, token).await.expect("valid token upgrades");
        assert_eq!(client.user_id, user);
        client.close().await;
    }
    assert_rejected(&addr, Some(&hs256("a-third-secret-0123456789", &claims("eve", now() + 600))), "unknown secret").await;
    // Expired under the old secret: the verdict of the secret that signed it, not "bad signature".
    let (_, body) = Rest::new(&addr, Some(&hs256(JWT_SECRET, &claims("olive", now() - 3600)))).get("/api/chats").await;
    assert_eq!(body["error"]["message"], "token has expired");
    env.cleanup().await;
}
