//! The admin API's document: one OpenAPI 3.1 description, served at
//! `GET /admin/api/v1/openapi.json`, merged from one fragment per part of
//! the API (`src/admin/openapi/*.json`), so each part's routes and their
//! description change in the same place.
//!
//! `base.json` is the document's frame (version, info, server, security
//! schemes, the RFC 9457 `Problem` schema and the shared error responses);
//! every other fragment adds `paths` and `components`. Two fragments that
//! describe the same path or name the same component are a mistake the
//! unit test below catches, not something the merge resolves.
//!
//! The document needs no token: it is the API's public documentation (it
//! names routes and shapes, never data), the tools that read it (code
//! generators, API explorers) fetch it before they hold a token, and every
//! operation it describes still demands one.

use std::sync::OnceLock;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde_json::{Map, Value};

use super::API;
use super::problem::Problem;
use crate::state::AppState;

/// The frame, then each part's fragment, by name (for the error messages).
const FRAGMENTS: &[(&str, &str)] = &[
    ("base", include_str!("openapi/base.json")),
    ("audit", include_str!("openapi/audit.json")),
    ("migration", include_str!("openapi/migration.json")),
    ("cutover", include_str!("openapi/cutover.json")),
    ("users", include_str!("openapi/users.json")),
    ("jobs", include_str!("openapi/jobs.json")),
    ("outbox", include_str!("openapi/outbox.json")),
];

/// Why fragments do not make one document.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MergeError {
    #[error("fragment {fragment} is not a JSON object: {reason}")]
    Malformed {
        fragment: &'static str,
        reason: String,
    },
    #[error("path {path} is described by both {first} and {second}")]
    DuplicatePath {
        path: String,
        first: &'static str,
        second: &'static str,
    },
    #[error("components/{section}/{name} is defined by both {first} and {second}")]
    DuplicateComponent {
        section: String,
        name: String,
        first: &'static str,
        second: &'static str,
    },
}

fn object<'a>(
    fragment: &'static str,
    value: &'a Value,
    what: &str,
) -> Result<&'a Map<String, Value>, MergeError> {
    value.as_object().ok_or_else(|| MergeError::Malformed {
        fragment,
        reason: format!("{what} is not an object"),
    })
}

/// Merges `fragments` (the first is the frame) into one document: their
/// `paths` and each `components` section side by side, their `tags`
/// appended. A path or component defined twice is an error naming both
/// fragments.
pub fn merge(fragments: &[(&'static str, &str)]) -> Result<Value, MergeError> {
    let mut document = Map::new();
    let mut paths = Map::new();
    let mut components: Map<String, Value> = Map::new();
    let mut tags: Vec<Value> = Vec::new();
    // Who defined what, for a duplicate's message.
    let mut path_owner: std::collections::HashMap<String, &'static str> = Default::default();
    let mut component_owner: std::collections::HashMap<(String, String), &'static str> =
        Default::default();

    for (index, (fragment, text)) in fragments.iter().enumerate() {
        let fragment = *fragment;
        let value: Value = serde_json::from_str(text).map_err(|e| MergeError::Malformed {
            fragment,
            reason: e.to_string(),
        })?;
        let top = object(fragment, &value, "the fragment")?;
        for (key, member) in top {
            match key.as_str() {
                "paths" => {
                    for (path, item) in object(fragment, member, "paths")? {
                        if let Some(first) = path_owner.insert(path.clone(), fragment) {
                            return Err(MergeError::DuplicatePath {
                                path: path.clone(),
                                first,
                                second: fragment,
                            });
                        }
                        paths.insert(path.clone(), item.clone());
                    }
                }
                "components" => {
                    for (section, entries) in object(fragment, member, "components")? {
                        let merged = components
                            .entry(section.clone())
                            .or_insert_with(|| Value::Object(Map::new()))
                            .as_object_mut()
                            .expect("sections are made as objects");
                        for (name, definition) in object(fragment, entries, section)? {
                            let owner_key = (section.clone(), name.clone());
                            if let Some(first) = component_owner.insert(owner_key, fragment) {
                                return Err(MergeError::DuplicateComponent {
                                    section: section.clone(),
                                    name: name.clone(),
                                    first,
                                    second: fragment,
                                });
                            }
                            merged.insert(name.clone(), definition.clone());
                        }
                    }
                }
                "tags" => tags.extend(member.as_array().cloned().unwrap_or_default()),
                // The frame's own members (openapi, info, servers,
                // security); a part's fragment has no say in them.
                _ if index == 0 => {
                    document.insert(key.clone(), member.clone());
                }
                _ => {}
            }
        }
    }
    document.insert("paths".into(), Value::Object(paths));
    document.insert("components".into(), Value::Object(components));
    if !tags.is_empty() {
        document.insert("tags".into(), Value::Array(tags));
    }
    Ok(Value::Object(document))
}

/// The served document, merged once.
fn document() -> &'static Result<String, MergeError> {
    static DOCUMENT: OnceLock<Result<String, MergeError>> = OnceLock::new();
    DOCUMENT.get_or_init(|| merge(FRAGMENTS).map(|d| d.to_string()))
}

/// The merged document as JSON, for the tests and for tools that want it
/// without a server.
pub fn document_json() -> Result<Value, MergeError> {
    merge(FRAGMENTS)
}

async fn openapi() -> Response {
    match document() {
        Ok(body) => {
            let mut response = body.clone().into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            // The document changes only with a new release.
            headers.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            );
            response
        }
        Err(e) => Problem::internal(e).into_response(),
    }
}

/// Any other path under the API: a problem, like every other error of the
/// API, rather than an empty 404 a client cannot tell from a wrong host.
async fn no_such_path() -> Problem {
    Problem::not_found(
        "no such path in the admin API; its routes are listed in /admin/api/v1/openapi.json",
    )
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route(&format!("{API}/openapi.json"), get(openapi))
        // A wildcard loses to every route the parts register (axum matches
        // the most specific path first).
        .route(&format!("{API}/{{*rest}}"), any(no_such_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fragments_make_one_document() {
        let document = merge(FRAGMENTS).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(document["openapi"], "3.1.0");
        assert_eq!(document["servers"][0]["url"], API);
        assert!(document["components"]["schemas"]["Problem"].is_object());
    }

    #[test]
    fn a_path_described_twice_is_refused() {
        let a = r#"{"paths": {"/users": {"get": {}}}, "components": {"schemas": {}}}"#;
        let b = r#"{"paths": {"/users": {"post": {}}}, "components": {"schemas": {}}}"#;
        assert_eq!(
            merge(&[("base", "{}"), ("a", a), ("b", b)]),
            Err(MergeError::DuplicatePath {
                path: "/users".into(),
                first: "a",
                second: "b"
            })
        );
    }

    #[test]
    fn a_schema_named_twice_is_refused() {
        let a = r#"{"paths": {}, "components": {"schemas": {"User": {}}}}"#;
        let b = r#"{"paths": {}, "components": {"schemas": {"User": {}}}}"#;
        assert_eq!(
            merge(&[("base", "{}"), ("a", a), ("b", b)]),
            Err(MergeError::DuplicateComponent {
                section: "schemas".into(),
                name: "User".into(),
                first: "a",
                second: "b"
            })
        );
    }

    #[test]
    fn a_part_cannot_redefine_the_problem_schema() {
        let a = r#"{"paths": {}, "components": {"schemas": {"Problem": {}}}}"#;
        assert!(matches!(
            merge(&[FRAGMENTS[0], ("a", a)]),
            Err(MergeError::DuplicateComponent { .. })
        ));
    }
}
