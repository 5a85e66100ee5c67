//! Auth0's error body (Management API v2, "Errors"): `{"statusCode",
//! "error", "message", "errorCode"}`, `error` being the status's reason
//! phrase. Nothing internal reaches `message`: a store failure is logged
//! and answered with a fixed sentence.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::store::StoreError;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub error_code: Option<&'static str>,
    /// Seconds for `Retry-After` (429, 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>, code: &'static str) -> Self {
        Self {
            status,
            message: message.into(),
            error_code: Some(code),
            retry_after: None,
        }
    }

    /// A request Auth0 would refuse: `invalid_body`, `invalid_query_string`, …
    pub fn bad_request(message: impl Into<String>, code: &'static str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message, code)
    }

    pub fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "The user does not exist.",
            "inexistent_user",
        )
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            message: message.into(),
            error_code: None,
            retry_after: None,
        }
    }

    /// The token lacks the scope the endpoint needs, in Auth0's words.
    pub fn insufficient_scope(scope: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            format!("Insufficient scope, expected any of: {scope}"),
            "insufficient_scope",
        )
    }

    pub fn too_many_requests(retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after.max(1)),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "Global limit has been reached",
                "too_many_requests",
            )
        }
    }

    /// The upstream (still the primary) could not be asked.
    pub fn upstream_unavailable() -> Self {
        Self {
            retry_after: Some(crate::error::RETRY_AFTER_SECS),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "The upstream identity provider could not be reached; nothing was changed. Try again later.",
                "upstream_unavailable",
            )
        }
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal error; nothing was changed.",
            "internal_error",
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(_) => Self::new(
                StatusCode::CONFLICT,
                "The user already exists.",
                "auth0_idp_error",
            ),
            StoreError::Unavailable(_) => {
                tracing::warn!(error = %e, "management API: store unavailable");
                Self {
                    retry_after: Some(crate::error::RETRY_AFTER_SECS),
                    ..Self::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "Service temporarily unavailable; try again later.",
                        "temporarily_unavailable",
                    )
                }
            }
            other => {
                tracing::error!(error = %other, "management API: store error");
                Self::internal()
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({
            "statusCode": self.status.as_u16(),
            "error": self.status.canonical_reason().unwrap_or("Error"),
            "message": self.message,
        });
        if let Some(code) = self.error_code {
            body["errorCode"] = json!(code);
        }
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 6750 §3.
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
        }
        response
    }
}
