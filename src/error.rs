//! The two edge error types.
//!
//! [`OAuthError`] speaks the protocol: RFC 6749 §5.2 JSON at the token,
//! revocation and userinfo endpoints, and `error=` parameters on a trusted
//! redirect URI (§4.1.2.1), built by the authorize handler from the same
//! codes. [`AppError`] is everything shown to a person as a page.
//!
//! Neither ever carries internal text to the client: an unexpected cause is
//! logged once, here, and replaced by a generic description.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// RFC 6749 §5.2 error codes, plus the ones RFC 6750, RFC 7009 and OIDC
/// Core §3.1.2.6 add.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    UnsupportedResponseType,
    UnsupportedTokenType,
    InvalidScope,
    AccessDenied,
    InvalidToken,
    LoginRequired,
    InvalidRequestUri,
    RequestNotSupported,
    ServerError,
    TemporarilyUnavailable,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::UnsupportedResponseType => "unsupported_response_type",
            Self::UnsupportedTokenType => "unsupported_token_type",
            Self::InvalidScope => "invalid_scope",
            Self::AccessDenied => "access_denied",
            Self::InvalidToken => "invalid_token",
            Self::LoginRequired => "login_required",
            Self::InvalidRequestUri => "invalid_request_uri",
            Self::RequestNotSupported => "request_not_supported",
            Self::ServerError => "server_error",
            Self::TemporarilyUnavailable => "temporarily_unavailable",
        }
    }
}

/// An error answered as RFC 6749 §5.2 JSON.
#[derive(Debug)]
pub struct OAuthError {
    pub code: ErrorCode,
    pub description: String,
    /// Set when the client authenticated with HTTP Basic: the 401 then
    /// carries `WWW-Authenticate` (RFC 6749 §5.2, invalid_client).
    pub basic_challenge: bool,
    /// Set at the userinfo endpoint: RFC 6750 §3 puts the error in the
    /// `WWW-Authenticate: Bearer` header.
    pub bearer_challenge: bool,
}

impl OAuthError {
    pub fn new(code: ErrorCode, description: impl Into<String>) -> Self {
        Self {
            code,
            description: description.into(),
            basic_challenge: false,
            bearer_challenge: false,
        }
    }

    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, description)
    }

    pub fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidGrant, description)
    }

    pub fn invalid_client(basic: bool) -> Self {
        Self {
            basic_challenge: basic,
            ..Self::new(ErrorCode::InvalidClient, "client authentication failed")
        }
    }

    pub fn invalid_token(description: impl Into<String>) -> Self {
        Self {
            bearer_challenge: true,
            ..Self::new(ErrorCode::InvalidToken, description)
        }
    }

    /// Logs the cause once and answers a bare `server_error`.
    pub fn unexpected(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "unexpected error at a protocol endpoint");
        Self::new(
            ErrorCode::ServerError,
            "the server could not complete the request",
        )
    }

    fn status(&self) -> StatusCode {
        match self.code {
            ErrorCode::InvalidClient | ErrorCode::InvalidToken => StatusCode::UNAUTHORIZED,
            ErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

impl From<crate::store::StoreError> for OAuthError {
    fn from(e: crate::store::StoreError) -> Self {
        if e.is_unavailable() {
            tracing::error!(error = %e, "a store is unavailable");
            return Self::new(
                ErrorCode::TemporarilyUnavailable,
                "the service is temporarily unavailable",
            );
        }
        if matches!(e, crate::store::StoreError::NotLinked) {
            tracing::warn!("an upstream identity met a user not linked to that upstream");
            return Self::invalid_grant("the account cannot sign in here");
        }
        Self::unexpected(e)
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'static str,
    error_description: &'a str,
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (
            status,
            Json(ErrorBody {
                error: self.code.as_str(),
                error_description: &self.description,
            }),
        )
            .into_response();
        let headers = response.headers_mut();
        // RFC 6749 §5.1: responses carrying (or refusing) tokens are never cached.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        // RFC 9110 §10.2.3: a 503 says when to come back, so clients retry
        // after the outage rather than at once.
        if self.code == ErrorCode::TemporarilyUnavailable {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        if self.basic_challenge {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"switchyard\""),
            );
        }
        if self.bearer_challenge {
            // RFC 6750 §3: the description is ours and ASCII, so it is a
            // valid quoted-string once quotes are removed.
            let value = format!(
                "Bearer error=\"{}\", error_description=\"{}\"",
                self.code.as_str(),
                self.description.replace('"', "'")
            );
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(header::WWW_AUTHENTICATE, v);
            }
        }
        response
    }
}

/// When a client answered 503 should try again (`Retry-After`, seconds):
/// long enough for a pool to reconnect or a standby to be promoted, short
/// enough that a person retrying by hand is not kept waiting.
pub const RETRY_AFTER_SECS: u64 = 5;

/// An error shown to a person as a page.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The request cannot be served as it stands; the message is shown.
    #[error("{message}")]
    BadRequest {
        title: &'static str,
        message: String,
    },
    #[error("not found")]
    NotFound,
    /// The page needs a signed-in user and there is none.
    #[error("{message}")]
    Unauthorized {
        title: &'static str,
        message: &'static str,
    },
    #[error("too many attempts")]
    TooManyRequests { retry_after_secs: u64 },
    #[error("service unavailable")]
    Unavailable,
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl AppError {
    pub fn bad_request(title: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            title,
            message: message.into(),
        }
    }
}

impl From<crate::store::StoreError> for AppError {
    fn from(e: crate::store::StoreError) -> Self {
        if e.is_unavailable() {
            tracing::error!(error = %e, "a store is unavailable");
            return Self::Unavailable;
        }
        if matches!(e, crate::store::StoreError::NotLinked) {
            tracing::warn!("an upstream identity met a user not linked to that upstream");
            return Self::bad_request(
                "Sign-in refused",
                "This account cannot sign in here. Contact the application's support.",
            );
        }
        Self::Unexpected(e.into())
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, title, message) = match &self {
            AppError::BadRequest { title, message } => {
                (StatusCode::BAD_REQUEST, *title, message.clone())
            }
            AppError::Unauthorized { title, message } => {
                (StatusCode::UNAUTHORIZED, *title, message.to_string())
            }
            AppError::NotFound => (
                StatusCode::NOT_FOUND,
                "Not found",
                "There is nothing at this address.".to_string(),
            ),
            AppError::TooManyRequests { retry_after_secs } => (
                StatusCode::TOO_MANY_REQUESTS,
                "Too many attempts",
                format!(
                    "Too many sign-in attempts. Try again in {} minute(s).",
                    retry_after_secs.div_ceil(60).max(1)
                ),
            ),
            AppError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Temporarily unavailable",
                "The sign-in service is temporarily unavailable. Please try again shortly."
                    .to_string(),
            ),
            AppError::Unexpected(cause) => {
                tracing::error!(error = %cause, "unexpected error while serving a page");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    "The sign-in service could not complete the request. Please try again."
                        .to_string(),
                )
            }
        };
        let mut response = crate::templates::error_page(status, title, &message);
        if let AppError::Unavailable = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        if let AppError::TooManyRequests { retry_after_secs } = self
            && let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}
