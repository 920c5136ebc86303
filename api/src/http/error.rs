//! HTTP error bodies: `{"error": {"code": "...", "message": "..."}}` with the code's status.

use axum::{
    Json,
    extract::rejection::{JsonRejection, PathRejection, QueryRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use courier_shared::{ClientError, ErrorCode};
use serde::Serialize;

/// The body of every error response (the OpenAPI document's `ErrorBody`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ClientError,
}

/// A [`ClientError`] as an HTTP response.
#[derive(Debug)]
pub struct ApiError(pub ClientError);

impl From<ClientError> for ApiError {
    fn from(error: ClientError) -> Self {
        Self(error)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        Self(error.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let unauthorized = self.0.code == ErrorCode::Unauthorized;
        let mut response = (status, Json(ErrorBody { error: self.0 })).into_response();
        if unauthorized {
            response.headers_mut().insert("www-authenticate", axum::http::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let code = match &rejection {
            _ if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
            JsonRejection::JsonSyntaxError(_) => ErrorCode::InvalidJson,
            _ => ErrorCode::InvalidPayload,
        };
        Self(ClientError::new(code, rejection.body_text()))
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self(ClientError::invalid_payload(rejection.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self(ClientError::invalid_payload(rejection.body_text()))
    }
}

/// 404 for routes that do not exist.
pub async fn no_such_route() -> ApiError {
    ApiError(ClientError::new(ErrorCode::NotFound, "no such route"))
}
