//! Signing keys an identity provider publishes as a JWKS (`JWT_JWKS_URL`):
//! fetched, cached by `kid`, refreshed periodically and when a token names a
//! `kid` the cache lacks.
//!
//! A failed fetch (unreachable, not 2xx, not a JWKS, no usable key) keeps the
//! last good set: an identity provider's outage must not log everyone out.
//! Fetches are serialised by one lock, so concurrent misses of the same new
//! `kid` share one fetch, and a miss fetches at most once per
//! `JWT_JWKS_MIN_REFRESH`, so tokens with made-up `kid`s cannot turn the node
//! into a load generator against the provider.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use backon::{BackoffBuilder, ExponentialBuilder};
use jsonwebtoken::{
    Algorithm, DecodingKey, Validation,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse},
};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

/// One fetch may take this long (connect and body included).
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest JWKS document read; real ones are a few KiB.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Longest wait between attempts of the first fetch.
const FIRST_FETCH_MAX_DELAY: Duration = Duration::from_secs(30);
/// Shortest period of the periodic refresh, whatever JWT_JWKS_REFRESH says.
const MIN_REFRESH_EVERY: Duration = Duration::from_millis(100);

/// A verification key from the set, with the one algorithm it accepts.
pub struct JwksKey {
    pub key: DecodingKey,
    /// `Validation` for this key's algorithm only: a token whose `alg` differs
    /// (HS256 with the public key as secret, `none`, RS256 on an EC key) is refused.
    pub validation: Validation,
}

/// A loaded set: its usable keys by `kid`.
type KeysById = HashMap<String, Arc<JwksKey>>;

/// What the cache says about a `kid`.
pub enum Lookup {
    Found(Arc<JwksKey>),
    /// The set is loaded and lacks this `kid`.
    Unknown,
    /// No fetch has succeeded yet: no token with a `kid` can be checked.
    NotLoaded,
}

/// Why a fetch did not replace the cached set.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("request failed: {0}")]
    Request(#[from] reqwest::Error),
    #[error("answered HTTP {0}")]
    Status(reqwest::StatusCode),
    #[error("document is larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    #[error("not a JWKS: {0}")]
    NotJwks(serde_json::Error),
    #[error("no usable key (RS*/PS* on RSA, ES256 on P-256, ES384 on P-384, EdDSA on Ed25519, each with a `kid`)")]
    NoUsableKey,
}

/// The cached key set of one JWKS URL; shared by every request of the node.
pub struct Jwks {
    url: String,
    client: reqwest::Client,
    /// `None` until the first successful fetch. A std lock: held only to
    /// clone or swap the `Arc`, never across an await.
    keys: RwLock<Option<Arc<KeysById>>>,
    /// When the last fetch started. The async lock serialises fetches: a
    /// miss that waited here finds the key another request just fetched.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    /// Iss/aud/leeway/required claims, copied into each key's `Validation`.
    base_validation: Validation,
    refresh_every: Duration,
    min_refresh: Duration,
}

impl Jwks {
    pub fn new(
        url: String,
        base_validation: Validation,
        refresh_every: Duration,
        min_refresh: Duration,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder().timeout(FETCH_TIMEOUT).build()?;
        Ok(Self {
            url,
            client,
            keys: RwLock::new(None),
            last_fetch: tokio::sync::Mutex::new(None),
            base_validation,
            refresh_every,
            min_refresh,
        })
    }

    /// Whether a set has been loaded (until then tokens with a `kid` are refused as `unavailable`).
    pub fn is_loaded(&self) -> bool {
        self.keys.read().unwrap_or_else(|poisoned| poisoned.into_inner()).is_some()
    }

    /// The cached key for `kid`, without fetching.
    pub fn lookup(&self, kid: &str) -> Lookup {
        let keys = self.keys.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        match keys.as_ref() {
            None => Lookup::NotLoaded,
            Some(keys) => keys.get(kid).map_or(Lookup::Unknown, |key| Lookup::Found(key.clone())),
        }
    }

    /// The key for `kid`, fetching the set once if it is unknown and the last
    /// fetch is older than the minimum interval.
    pub async fn lookup_or_refresh(&self, kid: &str) -> Lookup {
        if let found @ Lookup::Found(_) = self.lookup(kid) {
            return found;
        }
        let mut last_fetch = self.last_fetch.lock().await;
        // Another request may have fetched while this one waited for the lock.
        if let found @ Lookup::Found(_) = self.lookup(kid) {
            return found;
        }
        if last_fetch.is_some_and(|at| at.elapsed() < self.min_refresh) {
            return self.lookup(kid);
        }
        *last_fetch = Some(Instant::now());
        if let Err(error) = self.fetch_and_store().await {
            tracing::warn!(url = %self.url, %error, kid, "JWKS refresh for an unknown kid failed; keeping the last good set");
        }
        drop(last_fetch);
        self.lookup(kid)
    }

    /// Fetches now (under the fetch lock), whatever the minimum interval.
    async fn refresh(&self) -> Result<usize, FetchError> {
        let mut last_fetch = self.last_fetch.lock().await;
        *last_fetch = Some(Instant::now());
        self.fetch_and_store().await
    }

    /// Loads the set, retrying with backoff until it succeeds, then refreshes
    /// it every `refresh_every` until `stop`. Failures keep the last good set.
    pub async fn keep_fresh(self: Arc<Self>, stop: CancellationToken) {
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(500))
            .with_max_delay(FIRST_FETCH_MAX_DELAY.min(self.refresh_every).max(Duration::from_millis(500)))
            .with_jitter()
            .without_max_times()
            .build();
        while !self.is_loaded() {
            match self.refresh().await {
                Ok(count) => tracing::info!(url = %self.url, keys = count, "JWKS loaded"),
                Err(error) => {
                    let delay = delays.next().unwrap_or(FIRST_FETCH_MAX_DELAY);
                    tracing::warn!(url = %self.url, %error, retry_in = ?delay, "JWKS unavailable: tokens with a kid are refused until it loads");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        // JWT_JWKS_REFRESH=0s would fetch in a busy loop.
        let refresh_every = self.refresh_every.max(MIN_REFRESH_EVERY);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(refresh_every) => {}
            }
            match self.refresh().await {
                Ok(count) => tracing::debug!(url = %self.url, keys = count, "JWKS refreshed"),
                Err(error) => tracing::warn!(url = %self.url, %error, "JWKS refresh failed; keeping the last good set"),
            }
        }
    }

    /// One fetch; replaces the cached set only with a set that has a usable key.
    async fn fetch_and_store(&self) -> Result<usize, FetchError> {
        let body = self.fetch().await?;
        let keys = self.parse(&body)?;
        let count = keys.len();
        *self.keys.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Arc::new(keys));
        Ok(count)
    }

    async fn fetch(&self) -> Result<Vec<u8>, FetchError> {
        let mut response = self.client.get(&self.url).header("accept", "application/json").send().await?;
        if !response.status().is_success() {
            return Err(FetchError::Status(response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(FetchError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// The usable keys of a JWKS document, by `kid`. Keys Courier cannot use
    /// (no `kid`, `use: enc`, an unsupported type or curve, symmetric keys)
    /// are skipped one by one, so one odd key does not hide the others.
    fn parse(&self, body: &[u8]) -> Result<KeysById, FetchError> {
        #[derive(Deserialize)]
        struct RawSet {
            keys: Vec<serde_json::Value>,
        }
        let raw: RawSet = serde_json::from_slice(body).map_err(FetchError::NotJwks)?;
        let mut keys = HashMap::new();
        for value in raw.keys {
            let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
                tracing::debug!(url = %self.url, "skipping a JWKS entry that is not a JWK");
                continue;
            };
            let Some(kid) = jwk.common.key_id.clone() else { continue };
            if jwk.common.public_key_use.as_ref().is_some_and(|key_use| *key_use != PublicKeyUse::Signature) {
                continue;
            }
            let Some(algorithm) = algorithm_of(&jwk) else {
                tracing::debug!(url = %self.url, kid, "skipping a JWKS key of an unsupported type or algorithm");
                continue;
            };
            let key = match DecodingKey::from_jwk(&jwk) {
                Ok(key) => key,
                Err(error) => {
                    tracing::warn!(url = %self.url, kid, %error, "skipping a JWKS key that does not parse");
                    continue;
                }
            };
            let mut validation = self.base_validation.clone();
            validation.algorithms = vec![algorithm];
            keys.insert(kid, Arc::new(JwksKey { key, validation }));
        }
        if keys.is_empty() {
            // Most likely a provider's mistake; replacing the set with nothing would refuse everyone.
            return Err(FetchError::NoUsableKey);
        }
        Ok(keys)
    }
}

/// The one algorithm a published key is used with: its `alg` if it names one
/// that fits the key type, else the type's usual one (RS256, ES256/ES384, EdDSA).
/// `None` for symmetric keys (a secret in a public document is no secret),
/// unknown types and an `alg` that contradicts the key.
fn algorithm_of(jwk: &Jwk) -> Option<Algorithm> {
    let declared = match jwk.common.key_algorithm {
        None => None,
        Some(KeyAlgorithm::UNKNOWN_ALGORITHM) => return None,
        Some(declared) => Some(Algorithm::try_from(declared).ok()?),
    };
    let (default, allowed): (Algorithm, &[Algorithm]) = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => (
            Algorithm::RS256,
            &[Algorithm::RS256, Algorithm::RS384, Algorithm::RS512, Algorithm::PS256, Algorithm::PS384, Algorithm::PS512],
        ),
        AlgorithmParameters::EllipticCurve(params) if params.curve == EllipticCurve::P256 => (Algorithm::ES256, &[Algorithm::ES256]),
        AlgorithmParameters::EllipticCurve(params) if params.curve == EllipticCurve::P384 => (Algorithm::ES384, &[Algorithm::ES384]),
        AlgorithmParameters::OctetKeyPair(params) if params.curve == EllipticCurve::Ed25519 => (Algorithm::EdDSA, &[Algorithm::EdDSA]),
        _ => return None,
    };
    match declared {
        None => Some(default),
        Some(algorithm) => allowed.contains(&algorithm).then_some(algorithm),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn jwks() -> Jwks {
        let url = "http://127.0.0.1:1/jwks".to_owned();
        Jwks::new(url, Validation::new(Algorithm::RS256), Duration::from_secs(300), Duration::from_secs(30)).unwrap()
    }

    const ED25519_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

    #[test]
    fn keys_get_the_algorithm_of_their_type_or_their_matching_alg() {
        let ed = |alg: Option<&str>| {
            let mut value = json!({ "kty": "OKP", "crv": "Ed25519", "x": ED25519_X, "kid": "k" });
            if let Some(alg) = alg {
                value["alg"] = json!(alg);
            }
            serde_json::from_value::<Jwk>(value).unwrap()
        };
        assert_eq!(algorithm_of(&ed(None)), Some(Algorithm::EdDSA));
        assert_eq!(algorithm_of(&ed(Some("EdDSA"))), Some(Algorithm::EdDSA));
        assert_eq!(algorithm_of(&ed(Some("RS256"))), None, "an alg that contradicts the key");
        assert_eq!(algorithm_of(&ed(Some("HS256"))), None);
        assert_eq!(algorithm_of(&ed(Some("XX999"))), None);
        let secret = serde_json::from_value::<Jwk>(json!({ "kty": "oct", "k": "c2VjcmV0", "kid": "s" })).unwrap();
        assert_eq!(algorithm_of(&secret), None, "symmetric keys are never taken from a JWKS");
    }

    #[test]
    fn unusable_entries_are_skipped_and_an_empty_result_is_an_error() {
        let jwks = jwks();
        let body = json!({ "keys": [
            { "kty": "OKP", "crv": "Ed25519", "x": ED25519_X, "kid": "good" },
            { "kty": "OKP", "crv": "Ed25519", "x": ED25519_X },
            { "kty": "OKP", "crv": "Ed25519", "x": ED25519_X, "kid": "enc", "use": "enc" },
            { "kty": "oct", "k": "c2VjcmV0", "kid": "secret" },
            { "kty": "weird", "kid": "weird" },
            "not even an object",
        ]});
        let keys = jwks.parse(body.to_string().as_bytes()).unwrap();
        assert_eq!(keys.keys().collect::<Vec<_>>(), vec!["good"]);
        assert_eq!(keys["good"].validation.algorithms, vec![Algorithm::EdDSA]);
        assert!(matches!(jwks.parse(br#"{"keys":[]}"#), Err(FetchError::NoUsableKey)));
        assert!(matches!(jwks.parse(b"<html>"), Err(FetchError::NotJwks(_))));
    }

    #[tokio::test]
    async fn an_unreachable_jwks_leaves_the_set_unloaded_and_rate_limits_misses() {
        let jwks = jwks();
        assert!(matches!(jwks.lookup_or_refresh("k").await, Lookup::NotLoaded));
        let first = jwks.last_fetch.lock().await.expect("a fetch was tried");
        assert!(matches!(jwks.lookup_or_refresh("k").await, Lookup::NotLoaded));
        assert_eq!(*jwks.last_fetch.lock().await, Some(first), "the second miss within the interval did not fetch");
    }
}
