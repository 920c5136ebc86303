//! The authenticated caller of a REST call or WebSocket upgrade.

use axum::{
    extract::FromRequestParts,
    http::{header::AUTHORIZATION, request::Parts},
};
use courier_shared::{
    ClientError, ErrorCode,
    auth::Claims,
    db::{devices, users},
};

use super::error::ApiError;
use crate::state::AppState;

/// A caller whose token checked out; their user row exists.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub claims: Claims,
}

impl AuthUser {
    pub fn id(&self) -> &str {
        &self.claims.sub
    }
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = token_from_parts(parts)
            .ok_or_else(|| ClientError::new(ErrorCode::Unauthorized, "missing token: send `Authorization: Bearer …` or `?token=`"))?;
        Ok(AuthUser { claims: authenticate(state, &token).await? })
    }
}

/// Checks a token, counts the call against the user's rate limit, and keeps
/// the user's profile (name, picture) up to date from it.
pub async fn authenticate(state: &AppState, token: &str) -> Result<Claims, ClientError> {
    // A `kid` new to the node's JWKS cache fetches the set again (rate-limited).
    let claims = state.jwt.verify_refreshing(token).await?;
    state.rate_limit.check(&claims.sub)?;
    users::upsert_from_claims(&state.db, &claims).await?;
    Ok(claims)
}

/// The device a connection belongs to: the token's `did` claim, else the
/// client's `deviceId` (a query parameter, or Socket.IO's `auth.deviceId`),
/// else the one default device, so clients that name none behave as one device.
pub fn device_of(claims: &Claims, requested: Option<&str>) -> Result<String, ClientError> {
    let device = claims.did.as_deref().or(requested).unwrap_or(devices::DEFAULT_DEVICE);
    devices::validate_device_id(device)?;
    Ok(device.to_owned())
}

/// Resolves and records the device of a connection being opened: refused
/// when the device was revoked, or would be one too many.
pub async fn admit_device(state: &AppState, claims: &Claims, requested: Option<&str>) -> Result<String, ClientError> {
    let device = device_of(claims, requested)?;
    devices::register(&state.db, &claims.sub, &device, state.config.max_devices_per_user).await?;
    Ok(device)
}

/// The `statuses` connect parameter: `receipts` asks for `receipt` events
/// only, no `message:status` per message; absent, both.
pub fn receipts_only(statuses: Option<&str>) -> Result<bool, ClientError> {
    match statuses {
        None | Some("all") => Ok(false),
        Some("receipts") => Ok(true),
        Some(other) => Err(ClientError::invalid_payload(format!("statuses must be `receipts` or `all`, not `{other}`"))),
    }
}

/// A query parameter of the request, percent-decoded.
pub fn query_param(parts: &Parts, name: &str) -> Option<String> {
    let query = parts.uri.query()?;
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == name).then(|| percent_decode(value))
    })
}

/// The token of a request: `Authorization: Bearer …`, else `?token=`.
pub fn token_from_parts(parts: &Parts) -> Option<String> {
    bearer_token(parts).or_else(|| query_token(parts))
}

fn bearer_token(parts: &Parts) -> Option<String> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned())
}

/// `?token=` for browsers, which cannot set headers on a WebSocket.
fn query_token(parts: &Parts) -> Option<String> {
    query_param(parts, "token")
}

/// JWTs are base64url and dots; decode the few escapes a client might add anyway.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match hex.and_then(|h| u8::from_str_radix(h, 16).ok()).filter(|_| bytes[i] == b'%') {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn percent_decoding() {
        assert_eq!(super::percent_decode("a%2Eb"), "a.b");
        assert_eq!(super::percent_decode("abc%"), "abc%");
        assert_eq!(super::percent_decode("%4"), "%4");
        assert_eq!(super::percent_decode("%zz"), "%zz");
    }
}
