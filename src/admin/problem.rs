//! The one error shape of the admin API: problem details (RFC 9457), as
//! `application/problem+json`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::RETRY_AFTER_SECS;
use crate::store::StoreError;

/// A problem (RFC 9457 §3): `type` names the kind (a URN of ours, since
/// nothing resolves it; §3.1.1 allows any URI), `title` is the same for
/// every problem of that type, `detail` says what happened this time.
/// Extra members (§3.2) go in `extensions`.
#[derive(Debug, Clone)]
pub struct Problem {
    pub status: StatusCode,
    pub kind: &'static str,
    pub title: &'static str,
    pub detail: String,
    pub extensions: Map<String, Value>,
    /// `WWW-Authenticate` (RFC 6750 §3) for a missing or refused token.
    challenge: Option<String>,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    #[serde(flatten)]
    extensions: &'a Map<String, Value>,
}

impl Problem {
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status,
            kind,
            title,
            detail: detail.into(),
            extensions: Map::new(),
            challenge: None,
        }
    }

    pub fn with(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.extensions.insert(name.into(), value.into());
        self
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "The request is not valid",
            detail,
        )
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "No such resource",
            detail,
        )
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "conflict",
            "The resource is not in a state that allows this",
            detail,
        )
    }

    /// RFC 6750 §3.1 `invalid_token`: no token, or one that is not an
    /// admin token of this issuer.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        let mut p = Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "An admin access token is required",
            detail,
        );
        p.challenge = Some(format!(
            "Bearer error=\"invalid_token\", error_description=\"{}\"",
            p.detail.replace('"', "'")
        ));
        p
    }

    /// RFC 6750 §3.1 `insufficient_scope`.
    pub fn forbidden(detail: impl Into<String>, scope: &str) -> Self {
        let mut p = Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "The operator may not do this",
            detail,
        );
        p.challenge = Some(format!(
            "Bearer error=\"insufficient_scope\", scope=\"{scope}\""
        ));
        p
    }

    pub fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Temporarily unavailable",
            "A store Switchyard depends on is unavailable; try again shortly.",
        )
    }

    /// An error the operator cannot act on: logged here, never shown.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "admin API request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "The request could not be completed.",
        )
    }
}

/// The base of every problem type URI.
pub const TYPE_PREFIX: &str = "urn:switchyard:problem:";

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = Body {
            kind: format!("{TYPE_PREFIX}{}", self.kind),
            title: self.title,
            status: self.status.as_u16(),
            detail: &self.detail,
            extensions: &self.extensions,
        };
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        if let Some(v) = self
            .challenge
            .as_deref()
            .and_then(|c| HeaderValue::from_str(c).ok())
        {
            headers.insert(header::WWW_AUTHENTICATE, v);
        }
        response
    }
}

impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Self {
        if e.is_unavailable() {
            tracing::error!(error = %e, "a store is unavailable");
            return Self::unavailable();
        }
        Self::internal(e)
    }
}

impl From<anyhow::Error> for Problem {
    fn from(e: anyhow::Error) -> Self {
        match e.downcast::<StoreError>() {
            Ok(store) => store.into(),
            Err(e) => Self::internal(e),
        }
    }
}

/// A problem met while serving a dashboard page, as the page's error: the
/// same kind of answer, and for what the operator can act on (a refusal,
/// a conflict) the problem's own words. Internal detail stays in the log.
impl From<Problem> for crate::error::AppError {
    fn from(p: Problem) -> Self {
        use crate::error::AppError;
        match p.status {
            StatusCode::NOT_FOUND => AppError::NotFound,
            StatusCode::SERVICE_UNAVAILABLE => AppError::Unavailable,
            s if s.is_client_error() => AppError::bad_request(p.title, p.detail),
            _ => AppError::Unexpected(anyhow::anyhow!("an admin page's request failed")),
        }
    }
}

/// A JSON request body whose rejection is a problem (a body that is not
/// JSON, or not of the expected shape, is a 400 saying why).
pub struct ApiJson<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Problem> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(Problem::bad_request(rejection.body_text())),
        }
    }
}
