//! Where one chunk of a resumable job stands, as it is stored in
//! `job_chunks.spec`: the next page to fetch, or how much of a file is
//! committed. A chunk's position is committed in the same transaction as
//! the page it follows, so a resume continues from exactly there.
//!
//! The store keeps it as JSON (tagged by `kind`); everything above the
//! store handles it as this type, so a position can only be one of the
//! shapes the paging code knows.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChunkPosition {
    /// Auth0's full backfill: a users-export job (none yet: start one) and
    /// how many records of its file are committed (Auth0 "Bulk User
    /// Exports").
    Auth0Export { job: Option<String>, records: u64 },
    /// Auth0's `--since`: a window of the user search by `updated_at`
    /// (RFC 3339, from inclusive, to exclusive) and the page within it.
    /// A window is split while it holds more than the 1,000 results one
    /// query may page through (Auth0 "User Search Best Practices").
    Auth0Window { from: String, to: String, page: u64 },
    /// Okta's cursor paging: the `Link: rel="next"` URL (none: the first
    /// page) and the list's `search` expression (Okta "List users").
    Link {
        next: Option<String>,
        search: Option<String>,
    },
    /// Cognito `ListUsers`: the `PaginationToken` (none: the first page).
    Cognito { token: Option<String> },
    /// Keycloak: count the users first, then split into pages.
    FirstMaxCount,
    /// Keycloak: the page at offset `first`; a `tail` page pages on until
    /// a short page, for users added while the job ran.
    FirstMax { first: u64, tail: bool },
    /// A file import: how many records of the file are committed.
    File { records: u64 },
    /// The end-game campaign: pending users by id, after this one (none:
    /// from the first).
    Campaign { after: Option<String> },
}

impl ChunkPosition {
    /// The JSON the store keeps.
    pub fn to_stored(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// A stored position. Jobs started by a release before positions were
    /// tagged stored them untagged, by shape; those are read too, so such
    /// a job can still be resumed after an upgrade.
    pub fn from_stored(v: &Value) -> Result<Self, String> {
        if v.get("kind").is_some() {
            return serde_json::from_value(v.clone())
                .map_err(|e| format!("a job chunk's position is not valid: {e}"));
        }
        let s = |v: &Value| v.as_str().map(String::from);
        let n = |v: &Value| v.as_u64().unwrap_or(0);
        Ok(if let Some(e) = v.get("export") {
            Self::Auth0Export {
                job: s(&e["job"]),
                records: n(&e["records"]),
            }
        } else if let Some(w) = v.get("window") {
            Self::Auth0Window {
                from: s(&w[0]).ok_or("a window without a start")?,
                to: s(&w[1]).ok_or("a window without an end")?,
                page: n(&v["page"]),
            }
        } else if v.get("next").is_some() || v.get("search").is_some() {
            Self::Link {
                next: s(&v["next"]),
                search: s(&v["search"]),
            }
        } else if v.get("token").is_some() {
            Self::Cognito {
                token: s(&v["token"]),
            }
        } else if v.get("count").is_some() {
            Self::FirstMaxCount
        } else if v.get("first").is_some() {
            Self::FirstMax {
                first: n(&v["first"]),
                tail: v["tail"].as_bool() == Some(true),
            }
        } else if v.get("records").is_some() {
            Self::File {
                records: n(&v["records"]),
            }
        } else {
            return Err(format!("a job chunk's position has an unknown shape: {v}"));
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn positions_round_trip_tagged() {
        let all = [
            ChunkPosition::Auth0Export {
                job: Some("job_1".into()),
                records: 3,
            },
            ChunkPosition::Auth0Window {
                from: "2026-01-01T00:00:00.000Z".into(),
                to: "2026-02-01T00:00:00.000Z".into(),
                page: 2,
            },
            ChunkPosition::Link {
                next: None,
                search: Some("status eq \"DEPROVISIONED\"".into()),
            },
            ChunkPosition::Cognito { token: None },
            ChunkPosition::FirstMaxCount,
            ChunkPosition::FirstMax {
                first: 200,
                tail: true,
            },
            ChunkPosition::File { records: 1000 },
            ChunkPosition::Campaign {
                after: Some("auth0|1".into()),
            },
        ];
        for p in all {
            let stored = p.to_stored();
            assert!(stored["kind"].is_string(), "{stored}");
            assert_eq!(ChunkPosition::from_stored(&stored).unwrap(), p);
        }
        assert_eq!(
            ChunkPosition::FirstMaxCount.to_stored(),
            json!({"kind": "first_max_count"})
        );
    }

    #[test]
    fn untagged_positions_of_earlier_releases_are_read() {
        let cases = [
            (
                json!({"export": {"job": null, "records": 0}}),
                ChunkPosition::Auth0Export {
                    job: None,
                    records: 0,
                },
            ),
            (
                json!({"window": ["a", "b"], "page": 4}),
                ChunkPosition::Auth0Window {
                    from: "a".into(),
                    to: "b".into(),
                    page: 4,
                },
            ),
            (
                json!({"next": "https://x/users?after=1", "search": null}),
                ChunkPosition::Link {
                    next: Some("https://x/users?after=1".into()),
                    search: None,
                },
            ),
            (
                json!({"token": "t"}),
                ChunkPosition::Cognito {
                    token: Some("t".into()),
                },
            ),
            (json!({"count": true}), ChunkPosition::FirstMaxCount),
            (
                json!({"first": 100}),
                ChunkPosition::FirstMax {
                    first: 100,
                    tail: false,
                },
            ),
            (json!({"records": 7}), ChunkPosition::File { records: 7 }),
        ];
        for (stored, want) in cases {
            assert_eq!(ChunkPosition::from_stored(&stored).unwrap(), want);
        }
        assert!(ChunkPosition::from_stored(&json!({"what": 1})).is_err());
        assert!(ChunkPosition::from_stored(&json!({"kind": "nope"})).is_err());
    }
}
