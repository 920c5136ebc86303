//! JWT verification (HS256 with a shared secret, or RS256 with a public key) and dev tokens.

use std::{path::PathBuf, time::Duration};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

use crate::error::{ClientError, ErrorCode};

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

/// How tokens are checked. Exactly one of secret and public key is used: the key file wins.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct JwtConfig {
    /// HS256 shared secret (at least 16 bytes). Ignored when JWT_PUBLIC_KEY_FILE is set.
    /// When neither is set, `serve` refuses to start (unless --dev-tokens or
    /// --insecure-dev-secret) and `token` refuses to sign.
    #[arg(long, env = "JWT_SECRET")]
    pub jwt_secret: Option<String>,

    /// With no JWT_SECRET and no JWT_PUBLIC_KEY_FILE, use a built-in secret that is
    /// public (it is in the source): anyone can then sign tokens, admin ones too.
    /// For a local trial only; --dev-tokens implies it.
    #[arg(long, env = "INSECURE_DEV_SECRET")]
    pub insecure_dev_secret: bool,

    /// PEM RSA public key: tokens are then verified as RS256 instead of HS256.
    #[arg(long, env = "JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,

    /// If set, tokens must carry this `aud`.
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// If set, tokens must carry this `iss`.
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
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
        "no JWT key configured: set JWT_SECRET (16+ random bytes, e.g. `openssl rand -hex 32`) or JWT_PUBLIC_KEY_FILE; \
         for a local trial only, pass --insecure-dev-secret (a public secret) or --dev-tokens"
    )]
    NoKey,
    #[error("JWT_SECRET must be at least 16 bytes")]
    SecretTooShort,
    #[error("`token` signs HS256 tokens with JWT_SECRET; with JWT_PUBLIC_KEY_FILE your identity provider issues the tokens")]
    CannotSignWithPublicKey,
    #[error("cannot read JWT_PUBLIC_KEY_FILE {path}: {source}")]
    ReadKey { path: PathBuf, source: std::io::Error },
    #[error("JWT_PUBLIC_KEY_FILE {path} is not a PEM RSA public key: {source}")]
    BadKey { path: PathBuf, source: jsonwebtoken::errors::Error },
}

/// Verifies tokens against the configured key; cheap to clone.
#[derive(Clone)]
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
    /// Whether the default dev secret is in use.
    pub uses_dev_secret: bool,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier").field("algorithms", &self.validation.algorithms).finish()
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
        if self.jwt_public_key_file.is_some() {
            return Err(JwtConfigError::CannotSignWithPublicKey);
        }
        self.hs256_secret(false)
    }
}

impl JwtVerifier {
    /// Builds the verifier; fails fast on an unusable or missing key.
    /// `allow_dev_secret` lets a server without a key use the public built-in
    /// secret (--dev-tokens: it signs tokens for anyone anyway).
    pub fn new(config: &JwtConfig, allow_dev_secret: bool) -> Result<Self, JwtConfigError> {
        let (key, algorithm) = match &config.jwt_public_key_file {
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|source| JwtConfigError::ReadKey { path: path.clone(), source })?;
                let key = DecodingKey::from_rsa_pem(&pem)
                    .map_err(|source| JwtConfigError::BadKey { path: path.clone(), source })?;
                (key, Algorithm::RS256)
            }
            None => (DecodingKey::from_secret(config.hs256_secret(allow_dev_secret)?.as_bytes()), Algorithm::HS256),
        };
        // Only the one configured algorithm: this is what defeats `alg: none`
        // and HS256-signed-with-the-RSA-public-key confusion.
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_SECS;
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_aud = config.jwt_audience.is_some();
        if let Some(audience) = &config.jwt_audience {
            validation.set_audience(&[audience]);
            validation.required_spec_claims.insert("aud".into());
        }
        if let Some(issuer) = &config.jwt_issuer {
            validation.set_issuer(&[issuer]);
            validation.required_spec_claims.insert("iss".into());
        }
        Ok(Self {
            key,
            validation,
            uses_dev_secret: config.jwt_public_key_file.is_none() && config.jwt_secret.is_none(),
        })
    }

    /// Checks signature, algorithm, expiry, audience, issuer and the user id.
    pub fn verify(&self, token: &str) -> Result<Claims, ClientError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(unauthorized("token is too large"));
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|error| {
            unauthorized(match error.kind() {
                ErrorKind::ExpiredSignature => "token has expired",
                ErrorKind::InvalidSignature => "token signature is invalid",
                ErrorKind::InvalidAlgorithm => "token algorithm is not accepted",
                ErrorKind::InvalidAudience => "token audience is not accepted",
                ErrorKind::InvalidIssuer => "token issuer is not accepted",
                ErrorKind::ImmatureSignature => "token is not valid yet",
                ErrorKind::MissingRequiredClaim(_) => "token lacks a required claim",
                _ => "token is malformed",
            })
        })?;
        let claims = data.claims;
        let now = jsonwebtoken::get_current_timestamp();
        if claims.iat.is_some_and(|iat| iat > now + LEEWAY_SECS) {
            return Err(unauthorized("token is issued in the future"));
        }
        validate_user_id(&claims.sub).map_err(|_| unauthorized("token subject is not a valid user id"))?;
        Ok(claims)
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
}
