//! Request parameters, read strictly.
//!
//! RFC 6749 §3.1 and §3.2: parameters sent without a value are treated as
//! omitted, and no parameter may appear more than once. Bodies are read with
//! an explicit size limit and only as `application/x-www-form-urlencoded`
//! (§4.1.3, §4.3.2, RFC 7009 §2.1), so a wrong content type or an oversized
//! body is answered in the protocol's shape instead of by a generic layer.

use axum::body::Body;
use axum::http::{HeaderMap, header};

/// The largest form body any endpoint reads. Token requests are a few
/// hundred bytes; login forms carry at most a 1,024-character password.
pub const BODY_LIMIT: usize = 16 * 1024;

#[derive(Debug, Clone, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("the {0} parameter is repeated")]
    Repeated(String),
    #[error("the {0} parameter is missing")]
    Missing(&'static str),
    #[error("the request body must be application/x-www-form-urlencoded")]
    ContentType,
    #[error("the request body is too large")]
    TooLarge,
    #[error("the request body could not be read")]
    Unreadable,
}

impl Params {
    pub fn parse(input: &[u8]) -> Self {
        Self {
            pairs: form_urlencoded::parse(input).into_owned().collect(),
        }
    }

    /// Reads a form body: checks the content type and the size limit.
    pub async fn from_form_body(headers: &HeaderMap, body: Body) -> Result<Self, ParamError> {
        if !mime(headers).eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            return Err(ParamError::ContentType);
        }
        Ok(Self::parse(&read(body).await?))
    }

    /// Reads a token request: a form (RFC 6749 §4.1.3), or a JSON object
    /// of the same parameters, which Auth0's token endpoint also takes and
    /// its SDKs send (Auth0 Authentication API, "Get Token"). A `null`
    /// member is absent; a number or boolean is its JSON text.
    pub async fn from_token_body(headers: &HeaderMap, body: Body) -> Result<Self, ParamError> {
        if !mime(headers).eq_ignore_ascii_case("application/json") {
            return Self::from_form_body(headers, body).await;
        }
        let bytes = read(body).await?;
        let Ok(serde_json::Value::Object(members)) = serde_json::from_slice(&bytes) else {
            return Err(ParamError::Unreadable);
        };
        let mut pairs = Vec::with_capacity(members.len());
        for (k, v) in members {
            match v {
                serde_json::Value::Null => {}
                serde_json::Value::String(s) => pairs.push((k, s)),
                serde_json::Value::Bool(_) | serde_json::Value::Number(_) => {
                    pairs.push((k, v.to_string()))
                }
                _ => return Err(ParamError::Unreadable),
            }
        }
        Ok(Self { pairs })
    }

    /// The value of `name`: `None` when absent or empty, an error when repeated.
    pub fn get(&self, name: &str) -> Result<Option<&str>, ParamError> {
        let mut found = None;
        for (k, v) in &self.pairs {
            if k == name && !v.is_empty() {
                if found.is_some() {
                    return Err(ParamError::Repeated(name.to_string()));
                }
                found = Some(v.as_str());
            }
        }
        Ok(found)
    }

    pub fn require(&self, name: &'static str) -> Result<&str, ParamError> {
        self.get(name)?.ok_or(ParamError::Missing(name))
    }

    /// Fails on the first parameter that appears more than once.
    pub fn reject_repeats(&self) -> Result<(), ParamError> {
        for (i, (k, v)) in self.pairs.iter().enumerate() {
            if !v.is_empty()
                && self.pairs[i + 1..]
                    .iter()
                    .any(|(k2, v2)| k2 == k && !v2.is_empty())
            {
                return Err(ParamError::Repeated(k.clone()));
            }
        }
        Ok(())
    }
}

impl From<ParamError> for crate::error::OAuthError {
    fn from(e: ParamError) -> Self {
        crate::error::OAuthError::invalid_request(e.to_string())
    }
}

impl From<ParamError> for crate::error::AppError {
    fn from(e: ParamError) -> Self {
        crate::error::AppError::bad_request("Invalid request", e.to_string())
    }
}

/// The request's media type, without parameters.
fn mime(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
}

/// The body, within the size limit.
async fn read(body: Body) -> Result<axum::body::Bytes, ParamError> {
    axum::body::to_bytes(body, BODY_LIMIT).await.map_err(|e| {
        if std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
        {
            ParamError::TooLarge
        } else {
            ParamError::Unreadable
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_parameters_are_refused_and_empty_ones_are_absent() {
        let p = Params::parse(b"a=1&a=2&b=&c=3");
        assert_eq!(p.get("a"), Err(ParamError::Repeated("a".into())));
        assert_eq!(p.get("b"), Ok(None));
        assert_eq!(p.get("c"), Ok(Some("3")));
        assert!(p.reject_repeats().is_err());
    }
}
