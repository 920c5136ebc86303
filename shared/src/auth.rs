//! JWT verification and dev tokens. Keys: HS256 secrets (the current one and,
//! during a rotation, previous ones), a PEM RSA public key file, and signing
//! keys published as a JWKS (`jwks`).

mod jwks;

use std::{future::Future, path::PathBuf, sync::Arc, time::Duration};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::{
    config::parse_duration,
    error::{ClientError, ErrorCode},
};
use jwks::{Jwks, Lookup};

/// Longest token accepted; anything bigger is refused before it is parsed.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Longest user id (the host app's id, used as `sub`).
pub const MAX_USER_ID_BYTES: usize = 128;
/// Tolerated clock skew for `exp`, `nbf` and `iat`.
const LEEWAY_SECS: u64 = 60;

/// The built-in secret of `--insecure-dev-secret`. It is in the source, so anyone
/// can sign any token (admin included) with it: local trials only.
pub const DEV_SECRET: &str = "courier-dev-secret-change-me";
/// Shortest HS256 secret accepted, for verifying and for signing alike.
pub const MIN_SECRET_BYTES: usize = 16;

/// How tokens are checked. HS256 secrets are used only when no public key
/// source (JWT_PUBLIC_KEY_FILE, JWT_JWKS_URL) is set; docs/operations.md, "Tokens".
#[derive(clap::Args, Debug, Clone)]
pub struct JwtConfig {
    /// HS256 shared secret (at least 16 bytes); the one `token` and dev tokens
    /// sign with. Ignored when JWT_PUBLIC_KEY_FILE or JWT_JWKS_URL is set.
    /// When no key is set, `serve` refuses to start (unless --dev-tokens or
    /// --insecure-dev-secret) and `token` refuses to sign.
    #[arg(long, env = "JWT_SECRET")]
    pub jwt_secret: Option<String>,

    /// Earlier HS256 secrets, comma separated, still accepted (never used to
    /// sign) while tokens signed with them expire: rotate by moving JWT_SECRET
    /// here and setting a new JWT_SECRET.
    #[arg(long, env = "JWT_PREVIOUS_SECRETS", value_delimiter = ',', hide_env_values = true)]
    pub jwt_previous_secrets: Vec<String>,

    /// With no JWT_SECRET and no JWT_PUBLIC_KEY_FILE, use a built-in secret that is
    /// public (it is in the source): anyone can then sign tokens, admin ones too.
    /// For a local trial only; --dev-tokens implies it.
    #[arg(long, env = "INSECURE_DEV_SECRET")]
    pub insecure_dev_secret: bool,

    /// PEM RSA public key: tokens are then verified as RS256 instead of HS256
    /// (with JWT_JWKS_URL too: for tokens without a `kid`).
    #[arg(long, env = "JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,

    /// URL of the identity provider's JWKS (e.g. https://idp.example/.well-known/jwks.json):
    /// tokens must then name one of its keys in `kid`; RS256 (and RS384/512,
    /// PS256/384/512), ES256, ES384 and EdDSA (Ed25519) are accepted.
    #[arg(long, env = "JWT_JWKS_URL")]
    pub jwt_jwks_url: Option<String>,

    /// How often the JWKS is fetched again (a failed fetch keeps the last good set).
    #[arg(long, env = "JWT_JWKS_REFRESH", default_value = "5m", value_parser = parse_duration)]
    pub jwt_jwks_refresh: Duration,

    /// A token with a `kid` not in the cached JWKS fetches it again, at most once per this interval.
    #[arg(long, env = "JWT_JWKS_MIN_REFRESH", default_value = "30s", value_parser = parse_duration)]
    pub jwt_jwks_min_refresh: Duration,

    /// If set, tokens must carry this `aud` (whatever key signed them).
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// If set, tokens must carry this `iss` (whatever key signed them).
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            jwt_previous_secrets: Vec::new(),
            insecure_dev_secret: false,
            jwt_public_key_file: None,
            jwt_jwks_url: None,
            jwt_jwks_refresh: Duration::from_secs(300),
            jwt_jwks_min_refresh: Duration::from_secs(30),
            jwt_audience: None,
            jwt_issuer: None,
        }
    }
}

/// The claims Courier reads. `sub` is the user id; `name` and `picture` fill the user row.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub picture: Option<String>,
    /// `admin` grants the admin API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Several roles (`["admin"]` also grants the admin API), as some identity providers issue them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
    /// The device this token is for: its connections belong to that device
    /// (a `deviceId` connect parameter is then ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub did: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
}

/// The role that grants the admin API.
pub const ADMIN_ROLE: &str = "admin";

impl Claims {
    /// Whether the token carries the `admin` role (`role` or `roles`).
    pub fn is_admin(&self) -> bool {
        self.role.as_deref() == Some(ADMIN_ROLE) || self.roles.iter().flatten().any(|role| role == ADMIN_ROLE)
    }
}

/// Why a configured key cannot be used; reported once at start-up.
#[derive(Debug, thiserror::Error)]
pub enum JwtConfigError {
    #[error(
        "no JWT key configured: set JWT_SECRET (16+ random bytes, e.g. `openssl rand -hex 32`), JWT_PUBLIC_KEY_FILE or JWT_JWKS_URL; \
         for a local trial only, pass --insecure-dev-secret (a public secret) or --dev-tokens"
    )]
    NoKey,
    #[error("JWT_SECRET must be at least 16 bytes")]
    SecretTooShort,
    #[error("every secret in JWT_PREVIOUS_SECRETS must be at least 16 bytes")]
    PreviousSecretTooShort,
    #[error("JWT_PREVIOUS_SECRETS needs JWT_SECRET: the current secret, which signs")]
    PreviousSecretsWithoutCurrent,
    #[error(
        "`token` signs HS256 tokens with JWT_SECRET; with JWT_PUBLIC_KEY_FILE or JWT_JWKS_URL your identity provider issues the tokens"
    )]
    CannotSignWithPublicKey,
    #[error("cannot read JWT_PUBLIC_KEY_FILE {path}: {source}")]
    ReadKey { path: PathBuf, source: std::io::Error },
    #[error("JWT_PUBLIC_KEY_FILE {path} is not a PEM RSA public key: {source}")]
    BadKey { path: PathBuf, source: jsonwebtoken::errors::Error },
    #[error("JWT_JWKS_URL `{0}` is not an http:// or https:// URL")]
    BadJwksUrl(String),
    #[error("cannot build the JWKS HTTP client: {0}")]
    JwksClient(reqwest::Error),
}

/// Verifies tokens against the configured keys; cheap to clone, and shared by
/// /ws, Socket.IO and REST (the JWKS cache behind it is one per node).
#[derive(Clone)]
pub struct JwtVerifier {
    keys: Arc<Keys>,
    /// Whether the default dev secret is in use.
    pub uses_dev_secret: bool,
}

struct Keys {
    /// HS256 secrets, current first; empty when a public key source is set.
    secrets: Vec<DecodingKey>,
    hs256: Validation,
    /// JWT_PUBLIC_KEY_FILE: RS256 tokens without a `kid` (all of them, without a JWKS).
    public_key: Option<DecodingKey>,
    rs256: Validation,
    jwks: Option<Arc<Jwks>>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("secrets", &self.keys.secrets.len())
            .field("public_key_file", &self.keys.public_key.is_some())
            .field("jwks", &self.keys.jwks.is_some())
            .finish()
    }
}

impl JwtConfig {
    /// The HS256 secret in force: JWT_SECRET, or the public built-in one when
    /// `allow_dev_secret` (--insecure-dev-secret, --dev-tokens) and nothing is set.
    /// Signing (`token`, dev tokens) and verifying both go through here, so they
    /// apply the same minimum and never fall back to the built-in secret silently.
    pub fn hs256_secret(&self, allow_dev_secret: bool) -> Result<&str, JwtConfigError> {
        match self.jwt_secret.as_deref() {
            Some(secret) if secret.len() < MIN_SECRET_BYTES => Err(JwtConfigError::SecretTooShort),
            Some(secret) => Ok(secret),
            None if allow_dev_secret || self.insecure_dev_secret => Ok(DEV_SECRET),
            None => Err(JwtConfigError::NoKey),
        }
    }

    /// The secret `courier-api token` signs with (the same rules as the server).
    pub fn signing_secret(&self) -> Result<&str, JwtConfigError> {
        if self.has_public_key_source() {
            return Err(JwtConfigError::CannotSignWithPublicKey);
        }
        self.hs256_secret(false)
    }

    /// Every HS256 secret a token may be signed with: the current one first,
    /// then JWT_PREVIOUS_SECRETS (empty entries, as `a,,b` or an empty
    /// variable gives, are ignored).
    pub fn hs256_secrets(&self, allow_dev_secret: bool) -> Result<Vec<&str>, JwtConfigError> {
        let previous: Vec<&str> =
            self.jwt_previous_secrets.iter().map(|secret| secret.trim()).filter(|secret| !secret.is_empty()).collect();
        if previous.iter().any(|secret| secret.len() < MIN_SECRET_BYTES) {
            return Err(JwtConfigError::PreviousSecretTooShort);
        }
        if !previous.is_empty() && self.jwt_secret.is_none() {
            return Err(JwtConfigError::PreviousSecretsWithoutCurrent);
        }
        let mut secrets = vec![self.hs256_secret(allow_dev_secret)?];
        secrets.extend(previous);
        Ok(secrets)
    }

    fn has_public_key_source(&self) -> bool {
        self.jwt_public_key_file.is_some() || self.jwks_url().is_some()
    }

    /// JWT_JWKS_URL, unless empty (as `JWT_JWKS_URL=` in a compose file gives).
    fn jwks_url(&self) -> Option<&str> {
        self.jwt_jwks_url.as_deref().map(str::trim).filter(|url| !url.is_empty())
    }

    /// The checks every key source shares: expiry with leeway, `sub`, and the
    /// configured `aud` and `iss`. Algorithms are set per key.
    fn base_validation(&self) -> Validation {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms.clear();
        validation.leeway = LEEWAY_SECS;
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_aud = self.jwt_audience.is_some();
        if let Some(audience) = &self.jwt_audience {
            validation.set_audience(&[audience]);
            validation.required_spec_claims.insert("aud".into());
        }
        if let Some(issuer) = &self.jwt_issuer {
            validation.set_issuer(&[issuer]);
            validation.required_spec_claims.insert("iss".into());
        }
        validation
    }
}

/// `base` accepting `algorithm` only: what defeats `alg: none` and
/// HS256-signed-with-the-RSA-public-key confusion.
fn only(base: &Validation, algorithm: Algorithm) -> Validation {
    let mut validation = base.clone();
    validation.algorithms = vec![algorithm];
    validation
}

impl JwtVerifier {
    /// Builds the verifier; fails fast on an unusable or missing key.
    /// `allow_dev_secret` lets a server without a key use the public built-in
    /// secret (--dev-tokens: it signs tokens for anyone anyway). The JWKS is
    /// not fetched here: run [`JwtVerifier::keep_keys_fresh`].
    pub fn new(config: &JwtConfig, allow_dev_secret: bool) -> Result<Self, JwtConfigError> {
        let base = config.base_validation();
        let public_key = match &config.jwt_public_key_file {
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|source| JwtConfigError::ReadKey { path: path.clone(), source })?;
                let key = DecodingKey::from_rsa_pem(&pem)
                    .map_err(|source| JwtConfigError::BadKey { path: path.clone(), source })?;
                Some(key)
            }
            None => None,
        };
        let jwks = match config.jwks_url() {
            Some(url) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(JwtConfigError::BadJwksUrl(url.to_owned()));
                }
                let jwks = Jwks::new(url.to_owned(), base.clone(), config.jwt_jwks_refresh, config.jwt_jwks_min_refresh)
                    .map_err(JwtConfigError::JwksClient)?;
                Some(Arc::new(jwks))
            }
            None => None,
        };
        // A public key source replaces the secrets, as it always has: HS256
        // tokens are then refused outright, whatever a secret would say.
        let secrets = if config.has_public_key_source() {
            Vec::new()
        } else {
            let secrets = config.hs256_secrets(allow_dev_secret)?;
            secrets.into_iter().map(|secret| DecodingKey::from_secret(secret.as_bytes())).collect()
        };
        let keys = Keys {
            secrets,
            hs256: only(&base, Algorithm::HS256),
            public_key,
            rs256: only(&base, Algorithm::RS256),
            jwks,
        };
        Ok(Self { keys: Arc::new(keys), uses_dev_secret: !config.has_public_key_source() && config.jwt_secret.is_none() })
    }

    /// Loads the JWKS (retrying with backoff until it answers) and refreshes it
    /// every JWT_JWKS_REFRESH until `stop`; done at once without JWT_JWKS_URL.
    /// Spawn it once per node.
    pub fn keep_keys_fresh(&self, stop: CancellationToken) -> impl Future<Output = ()> + Send + 'static {
        let jwks = self.keys.jwks.clone();
        async move {
            if let Some(jwks) = jwks {
                jwks.keep_fresh(stop).await;
            }
        }
    }

    /// Whether the node can check every kind of token it is configured for:
    /// false only while a configured JWKS has never loaded (a readiness check).
    pub fn keys_loaded(&self) -> bool {
        self.keys.jwks.as_ref().is_none_or(|jwks| jwks.is_loaded())
    }

    /// Checks signature, algorithm, expiry, audience, issuer and the user id,
    /// with the keys in hand: a `kid` the cached JWKS lacks is refused without
    /// fetching. Servers use [`JwtVerifier::verify_refreshing`].
    pub fn verify(&self, token: &str) -> Result<Claims, ClientError> {
        let header = self.header(token)?;
        match self.route(&header)? {
            Route::Jwks(jwks, kid) => self.verify_jwks(token, jwks.lookup(&kid)),
            Route::Static => self.verify_static(token, &header),
        }
    }

    /// [`JwtVerifier::verify`], but a `kid` the cached JWKS lacks fetches the
    /// set again first (at most once per JWT_JWKS_MIN_REFRESH; concurrent
    /// misses share one fetch): how a new signing key is picked up at once.
    pub async fn verify_refreshing(&self, token: &str) -> Result<Claims, ClientError> {
        let header = self.header(token)?;
        match self.route(&header)? {
            Route::Jwks(jwks, kid) => self.verify_jwks(token, jwks.lookup_or_refresh(&kid).await),
            Route::Static => self.verify_static(token, &header),
        }
    }

    fn header(&self, token: &str) -> Result<Header, ClientError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(unauthorized("token is too large"));
        }
        // `alg: none` and unknown algorithms fail here: jsonwebtoken has no variant for them.
        jsonwebtoken::decode_header(token).map_err(|error| unauthorized(decode_error_message(&error)))
    }

    /// Which key source checks a token: a token with a `kid` and an
    /// asymmetric `alg` goes to the JWKS when one is configured; everything
    /// else to the secrets or the public key file.
    fn route(&self, header: &Header) -> Result<Route, ClientError> {
        let Some(jwks) = &self.keys.jwks else { return Ok(Route::Static) };
        if header.alg == Algorithm::HS256 || header.alg == Algorithm::HS384 || header.alg == Algorithm::HS512 {
            return Err(unauthorized("token algorithm is not accepted"));
        }
        match &header.kid {
            Some(kid) => Ok(Route::Jwks(jwks.clone(), kid.clone())),
            None if self.keys.public_key.is_some() => Ok(Route::Static),
            None => Err(unauthorized("token has no key id (kid)")),
        }
    }

    fn verify_jwks(&self, token: &str, lookup: Lookup) -> Result<Claims, ClientError> {
        match lookup {
            Lookup::Found(key) => decode(token, &key.key, &key.validation),
            Lookup::Unknown => Err(unauthorized("token key id (kid) is unknown")),
            // Not the client's fault, and retrying later will work: 503, not 401.
            Lookup::NotLoaded => Err(ClientError::new(
                ErrorCode::Unavailable,
                "the identity provider's signing keys are not loaded yet; retry shortly",
            )),
        }
    }

    /// HS256 with any configured secret, or RS256 with the key file.
    fn verify_static(&self, token: &str, header: &Header) -> Result<Claims, ClientError> {
        let keys = &self.keys;
        if let Some(public_key) = &keys.public_key {
            return decode(token, public_key, &keys.rs256);
        }
        if header.alg != Algorithm::HS256 {
            return Err(unauthorized("token algorithm is not accepted"));
        }
        for secret in &keys.secrets {
            match jsonwebtoken::decode::<Claims>(token, secret, &keys.hs256) {
                // Signed with another secret, maybe the next one.
                Err(error) if *error.kind() == ErrorKind::InvalidSignature => continue,
                // The signature matched this secret: the token's own verdict.
                result => return checked(result),
            }
        }
        Err(unauthorized("token signature is invalid"))
    }
}

enum Route {
    Jwks(Arc<Jwks>, String),
    Static,
}

/// Verifies one token with one key.
fn decode(token: &str, key: &DecodingKey, validation: &Validation) -> Result<Claims, ClientError> {
    checked(jsonwebtoken::decode::<Claims>(token, key, validation))
}

/// The library's verdict, and what it does not check: `iat` and the user id.
fn checked(result: jsonwebtoken::errors::Result<jsonwebtoken::TokenData<Claims>>) -> Result<Claims, ClientError> {
    let claims = result.map_err(|error| unauthorized(decode_error_message(&error)))?.claims;
    let now = jsonwebtoken::get_current_timestamp();
    if claims.iat.is_some_and(|iat| iat > now + LEEWAY_SECS) {
        return Err(unauthorized("token is issued in the future"));
    }
    validate_user_id(&claims.sub).map_err(|_| unauthorized("token subject is not a valid user id"))?;
    Ok(claims)
}

/// The message of an `unauthorized` error for a library error: says what is
/// wrong with the token, never which key was tried.
fn decode_error_message(error: &jsonwebtoken::errors::Error) -> &'static str {
    match error.kind() {
        ErrorKind::ExpiredSignature => "token has expired",
        ErrorKind::InvalidSignature => "token signature is invalid",
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => "token algorithm is not accepted",
        ErrorKind::InvalidAudience => "token audience is not accepted",
        ErrorKind::InvalidIssuer => "token issuer is not accepted",
        ErrorKind::ImmatureSignature => "token is not valid yet",
        ErrorKind::MissingRequiredClaim(_) => "token lacks a required claim",
        _ => "token is malformed",
    }
}

fn unauthorized(message: &str) -> ClientError {
    ClientError::new(ErrorCode::Unauthorized, message)
}

/// A user id is 1-128 bytes of UTF-8 without control characters.
pub fn validate_user_id(id: &str) -> Result<(), ClientError> {
    if id.is_empty() || id.len() > MAX_USER_ID_BYTES || id.chars().any(char::is_control) {
        return Err(ClientError::invalid_payload("user ids are 1-128 bytes without control characters"));
    }
    Ok(())
}

/// What a dev token says about its user.
#[derive(Debug, Clone, Default)]
pub struct DevTokenRequest {
    pub user_id: String,
    pub name: Option<String>,
    pub picture: Option<String>,
    pub role: Option<String>,
    /// The `did` claim: the device the token is for.
    pub device_id: Option<String>,
    pub ttl: Duration,
}

/// Signs an HS256 token with `secret`, as `courier-api token` does.
pub fn sign_hs256(secret: &str, request: &DevTokenRequest) -> Result<String, jsonwebtoken::errors::Error> {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = Claims {
        sub: request.user_id.clone(),
        exp: now + request.ttl.as_secs(),
        iat: Some(now),
        name: request.name.clone(),
        picture: request.picture.clone(),
        role: request.role.clone(),
        roles: None,
        did: request.device_id.clone(),
        aud: None,
        iss: None,
    };
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret.as_bytes()))
}

/// Signs arbitrary claims with any algorithm and key; tests use it to forge bad tokens.
pub fn sign_claims<T: Serialize>(
    header: &Header,
    claims: &T,
    key: &EncodingKey,
) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(header, claims, key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_secret(secret: Option<&str>) -> JwtConfig {
        JwtConfig { jwt_secret: secret.map(str::to_owned), ..Default::default() }
    }

    #[test]
    fn no_key_is_refused_unless_a_dev_mode_allows_the_public_secret() {
        assert!(matches!(JwtVerifier::new(&with_secret(None), false), Err(JwtConfigError::NoKey)));
        let dev = JwtVerifier::new(&with_secret(None), true).expect("--dev-tokens allows the built-in secret");
        assert!(dev.uses_dev_secret);
        let insecure = JwtConfig { insecure_dev_secret: true, ..Default::default() };
        assert!(JwtVerifier::new(&insecure, false).expect("--insecure-dev-secret").uses_dev_secret);
        let configured = JwtVerifier::new(&with_secret(Some("a-configured-secret-0123")), true).unwrap();
        assert!(!configured.uses_dev_secret);
    }

    #[test]
    fn short_secrets_are_refused_for_verifying_and_signing() {
        let short = with_secret(Some("fifteen-bytes!!"));
        assert!(matches!(JwtVerifier::new(&short, true), Err(JwtConfigError::SecretTooShort)));
        assert!(matches!(short.signing_secret(), Err(JwtConfigError::SecretTooShort)));
        assert_eq!(with_secret(Some("sixteen-bytes!!!")).signing_secret().unwrap(), "sixteen-bytes!!!");
    }

    #[test]
    fn signing_never_falls_back_to_the_built_in_secret_silently() {
        assert!(matches!(with_secret(None).signing_secret(), Err(JwtConfigError::NoKey)));
        let insecure = JwtConfig { insecure_dev_secret: true, ..Default::default() };
        assert_eq!(insecure.signing_secret().unwrap(), DEV_SECRET);
        let rsa = JwtConfig { jwt_public_key_file: Some("key.pem".into()), ..with_secret(Some("a-configured-secret-0123")) };
        assert!(matches!(rsa.signing_secret(), Err(JwtConfigError::CannotSignWithPublicKey)));
    }

    #[test]
    fn a_token_signed_with_the_secret_verifies() {
        let config = with_secret(Some("a-configured-secret-0123"));
        let request = DevTokenRequest { user_id: "ann".into(), ttl: Duration::from_secs(60), ..Default::default() };
        let token = sign_hs256(config.signing_secret().unwrap(), &request).unwrap();
        assert_eq!(JwtVerifier::new(&config, false).unwrap().verify(&token).unwrap().sub, "ann");
        let other = with_secret(Some("another-secret-01234567"));
        assert!(JwtVerifier::new(&other, false).unwrap().verify(&token).is_err());
    }

    fn token_for(secret: &str, user: &str) -> String {
        let request = DevTokenRequest { user_id: user.into(), ttl: Duration::from_secs(60), ..Default::default() };
        sign_hs256(secret, &request).unwrap()
    }

    #[test]
    fn previous_secrets_verify_and_the_current_one_signs() {
        let config = JwtConfig {
            jwt_previous_secrets: vec!["old-secret-0123456789".into(), String::new(), "older-secret-0123456789".into()],
            ..with_secret(Some("new-secret-0123456789"))
        };
        let verifier = JwtVerifier::new(&config, false).unwrap();
        for secret in ["new-secret-0123456789", "old-secret-0123456789", "older-secret-0123456789"] {
            assert_eq!(verifier.verify(&token_for(secret, "ann")).unwrap().sub, "ann", "signed with {secret}");
        }
        let forged = verifier.verify(&token_for("unknown-secret-0123456789", "ann")).unwrap_err();
        assert_eq!((forged.code, forged.message.as_str()), (ErrorCode::Unauthorized, "token signature is invalid"));
        assert_eq!(config.signing_secret().unwrap(), "new-secret-0123456789");
    }

    #[test]
    fn previous_secrets_need_a_current_one_and_the_minimum_length() {
        let short = JwtConfig { jwt_previous_secrets: vec!["short".into()], ..with_secret(Some("new-secret-0123456789")) };
        assert!(matches!(JwtVerifier::new(&short, false), Err(JwtConfigError::PreviousSecretTooShort)));
        let orphan = JwtConfig { jwt_previous_secrets: vec!["old-secret-0123456789".into()], ..with_secret(None) };
        assert!(matches!(JwtVerifier::new(&orphan, true), Err(JwtConfigError::PreviousSecretsWithoutCurrent)));
    }

    #[test]
    fn with_a_jwks_hs256_and_kid_less_tokens_are_refused_and_nothing_signs() {
        let config = JwtConfig {
            jwt_jwks_url: Some("http://127.0.0.1:1/jwks.json".into()),
            ..with_secret(Some("a-configured-secret-0123"))
        };
        let verifier = JwtVerifier::new(&config, false).unwrap();
        assert!(!verifier.keys_loaded());
        let hs256 = verifier.verify(&token_for("a-configured-secret-0123", "ann")).unwrap_err();
        assert_eq!(hs256.message, "token algorithm is not accepted");
        assert!(matches!(config.signing_secret(), Err(JwtConfigError::CannotSignWithPublicKey)));
        let bad_url = JwtConfig { jwt_jwks_url: Some("ftp://idp.example/jwks".into()), ..Default::default() };
        assert!(matches!(JwtVerifier::new(&bad_url, false), Err(JwtConfigError::BadJwksUrl(_))));
        let empty_url = JwtConfig { jwt_jwks_url: Some(" ".into()), ..Default::default() };
        assert!(matches!(JwtVerifier::new(&empty_url, false), Err(JwtConfigError::NoKey)));
    }
}
