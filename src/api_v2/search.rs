//! The query parameters of `GET /api/v2/users` as Auth0 takes them
//! (Management API v2, "List or Search Users"; "User Search Query
//! Syntax"): `page` and `per_page` (at most 100, and no page past the
//! first 1,000 results), `include_totals`, `sort` (`field:1` or
//! `field:-1`), `fields` with `include_fields`, and `q` in the subset of
//! Lucene this API answers: `email:"…"`, `user_id:"…"` and ranges on
//! `created_at`/`updated_at` (`[a TO b]` inclusive, `{a TO b}` exclusive,
//! `*` open), joined by `AND`.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::error::ApiError;
use crate::store::api_users::{Bound, Condition, SortField, UserQuery};

/// Auth0 serves at most this many results of one query.
pub const RESULT_CAP: u64 = 1000;
pub const MAX_PER_PAGE: u32 = 100;
const DEFAULT_PER_PAGE: u32 = 50;

#[derive(Debug, Default, Deserialize)]
pub struct ListParams {
    pub page: Option<String>,
    pub per_page: Option<String>,
    pub include_totals: Option<String>,
    pub q: Option<String>,
    pub sort: Option<String>,
    pub fields: Option<String>,
    pub include_fields: Option<String>,
    pub search_engine: Option<String>,
    pub connection: Option<String>,
}

/// Which fields of a user an answer keeps.
#[derive(Debug, Clone, Default)]
pub struct Fields {
    names: Vec<String>,
    include: bool,
}

impl Fields {
    pub fn parse(fields: Option<&str>, include: Option<&str>) -> Result<Self, ApiError> {
        let names: Vec<String> = fields
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .map(String::from)
            .collect();
        Ok(Self {
            names,
            include: flag(include, "include_fields")?.unwrap_or(true),
        })
    }

    /// The user with only the fields asked for (or without those, when
    /// `include_fields=false`).
    pub fn apply(&self, user: Map<String, Value>) -> Map<String, Value> {
        if self.names.is_empty() {
            return user;
        }
        user.into_iter()
            .filter(|(k, _)| self.names.iter().any(|n| n == k) == self.include)
            .collect()
    }
}

/// A `true`/`false` parameter.
pub fn flag(v: Option<&str>, name: &str) -> Result<Option<bool>, ApiError> {
    match v {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(_) => Err(invalid(format!(
            "'Expected type boolean but found type string' on property {name}."
        ))),
    }
}

fn invalid(message: String) -> ApiError {
    ApiError::bad_request(
        format!("Query validation error: {message}"),
        "invalid_query_string",
    )
}

/// The list parameters as a store query, and whether totals were asked.
pub fn query(p: &ListParams) -> Result<(UserQuery, bool), ApiError> {
    let number = |v: &Option<String>, name: &str| -> Result<Option<u64>, ApiError> {
        v.as_deref()
            .map(|s| {
                s.parse::<u64>().map_err(|_| {
                    invalid(format!(
                        "'Expected type integer but found type string' on property {name}."
                    ))
                })
            })
            .transpose()
    };
    let per_page = number(&p.per_page, "per_page")?.unwrap_or(u64::from(DEFAULT_PER_PAGE));
    if per_page > u64::from(MAX_PER_PAGE) {
        return Err(invalid(format!(
            "'Too big: must be less than or equal to {MAX_PER_PAGE}' on property per_page (Number of results per page. Paging is disabled if parameter not sent.). Value: {per_page}"
        )));
    }
    let page = number(&p.page, "page")?.unwrap_or(0);
    if let Some(engine) = p.search_engine.as_deref().filter(|e| *e != "v3") {
        return Err(ApiError::bad_request(
            format!("You are not allowed to use search_engine={engine}."),
            "operation_not_supported",
        ));
    }
    let offset = page.saturating_mul(per_page);
    if offset >= RESULT_CAP && per_page > 0 {
        return Err(ApiError::bad_request(
            "You can only page through the first 1000 records. See https://auth0.com/docs/users/search/v3/view-search-results-by-page#limitation",
            "invalid_paging",
        ));
    }
    let conditions = match p.q.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
        Some(q) => parse_q(q).map_err(invalid)?,
        None => Vec::new(),
    };
    let sort = p
        .sort
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(parse_sort)
        .transpose()
        .map_err(invalid)?;
    let total = flag(p.include_totals.as_deref(), "include_totals")?.unwrap_or(false);
    // The last page before the cap is cut at the cap.
    let limit = per_page.min(RESULT_CAP - offset.min(RESULT_CAP)) as u32;
    Ok((
        UserQuery {
            conditions,
            sort,
            offset,
            limit,
            total,
        },
        total,
    ))
}

fn parse_sort(s: &str) -> Result<(SortField, bool), String> {
    let (field, dir) = s.split_once(':').unwrap_or((s, "1"));
    let field = match field {
        "user_id" => SortField::UserId,
        "email" => SortField::Email,
        "created_at" => SortField::CreatedAt,
        "updated_at" => SortField::UpdatedAt,
        "last_login" => SortField::LastLogin,
        other => return Err(format!("sorting by {other} is not supported")),
    };
    match dir {
        "1" => Ok((field, false)),
        "-1" => Ok((field, true)),
        _ => Err(format!("'{s}' is not a valid sort (field:1 or field:-1)")),
    }
}

/// The `q` subset this API answers; anything else is refused by name
/// rather than answered wrongly.
pub fn parse_q(q: &str) -> Result<Vec<Condition>, String> {
    let mut out = Vec::new();
    for part in q.split(" AND ") {
        let part = part.trim();
        let (field, value) = part
            .split_once(':')
            .ok_or_else(|| format!("unsupported query: {part}"))?;
        let value = value.trim();
        match field.trim() {
            "email" => out.push(Condition::Email(exact(value)?)),
            "user_id" => out.push(Condition::UserId(exact(value)?)),
            f @ ("created_at" | "updated_at") => {
                let (low, high) = range(value)?;
                out.push(if f == "created_at" {
                    Condition::Created(low, high)
                } else {
                    Condition::Updated(low, high)
                });
            }
            other => {
                return Err(format!(
                    "the field {other} cannot be searched on Switchyard"
                ));
            }
        }
    }
    Ok(out)
}

/// A quoted or bare exact value; wildcards and operators are refused.
fn exact(v: &str) -> Result<String, String> {
    let inner = match v.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(inner) => inner,
        None if v.contains([' ', '*', '?', '(', ')']) => {
            return Err(format!("only exact values are supported: {v}"));
        }
        None => v,
    };
    if inner.is_empty() || inner.contains('"') {
        return Err(format!("not a value: {v}"));
    }
    Ok(inner.replace("\\\\", "\\"))
}

fn range(v: &str) -> Result<(Bound, Bound), String> {
    let open = v.chars().next();
    let close = v.chars().last();
    if v.len() < 2 || !matches!(open, Some('[' | '{')) || !matches!(close, Some(']' | '}')) {
        return Err(format!(
            "a date field takes a range such as [2026-01-01 TO *]: {v}"
        ));
    }
    let (lo, hi) = v[1..v.len() - 1]
        .split_once(" TO ")
        .ok_or_else(|| format!("a range needs TO: {v}"))?;
    let low = bound(lo, open == Some('['), false)?;
    let high = bound(hi, close == Some(']'), true)?;
    Ok((low, high))
}

/// One end of a range in epoch seconds. The store keeps seconds, so a
/// bound with milliseconds rounds so that what it admits is unchanged.
fn bound(b: &str, inclusive: bool, upper: bool) -> Result<Bound, String> {
    let b = b.trim().trim_matches('"');
    if b == "*" {
        return Ok(None);
    }
    let ms = parse_date_ms(b).ok_or_else(|| format!("not a date: {b}"))?;
    let whole = ms.rem_euclid(1000) == 0;
    let secs = ms.div_euclid(1000);
    Ok(Some(match (whole, upper) {
        (true, _) => (secs, inclusive),
        // `> 10.5 s` is `>= 11 s`; `< 10.5 s` is `<= 10 s`.
        (false, false) => (secs + 1, true),
        (false, true) => (secs, true),
    }))
}

/// `2026-01-31`, `2026-01-31T10:00:00Z` or with milliseconds and an offset.
fn parse_date_ms(s: &str) -> Option<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> ListParams {
        let q: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        axum::extract::Query::<ListParams>::try_from_uri(&format!("http://x/?{q}").parse().unwrap())
            .unwrap()
            .0
    }

    #[test]
    fn the_query_subset_parses_and_the_rest_is_refused() {
        let c = parse_q(r#"email:"Ada@Example.com" AND created_at:[2026-01-01 TO *]"#).unwrap();
        assert_eq!(
            c,
            vec![
                Condition::Email("Ada@Example.com".into()),
                Condition::Created(Some((1_767_225_600, true)), None)
            ]
        );
        let c =
            parse_q("updated_at:{2026-01-01T00:00:00.500Z TO 2026-01-02T00:00:00.500Z}").unwrap();
        assert_eq!(
            c,
            vec![Condition::Updated(
                Some((1_767_225_601, true)),
                Some((1_767_312_000, true))
            )]
        );
        assert!(parse_q("name:ada").is_err());
        assert!(parse_q("email:ada*").is_err());
        assert!(parse_q("created_at:2026").is_err());
    }

    #[test]
    fn paging_stops_at_the_cap_as_auth0_does() {
        let (q, total) = query(&params(&[
            ("page", "9"),
            ("per_page", "100"),
            ("include_totals", "true"),
        ]))
        .unwrap();
        assert_eq!((q.offset, q.limit, total), (900, 100, true));
        let e = query(&params(&[("page", "10"), ("per_page", "100")])).unwrap_err();
        assert_eq!(e.error_code, Some("invalid_paging"));
        let e = query(&params(&[("per_page", "300")])).unwrap_err();
        assert_eq!(e.error_code, Some("invalid_query_string"));
        let (q, _) = query(&params(&[
            ("page", "1"),
            ("per_page", "7"),
            ("sort", "created_at:-1"),
        ]))
        .unwrap();
        assert_eq!(
            (q.offset, q.limit, q.sort),
            (7, 7, Some((SortField::CreatedAt, true)))
        );
        assert!(query(&params(&[("sort", "name:1")])).is_err());
    }

    #[test]
    fn fields_keep_or_drop_what_is_named() {
        let mut user = Map::new();
        user.insert("user_id".into(), "a".into());
        user.insert("email".into(), "e".into());
        let keep = Fields::parse(Some("email"), None).unwrap();
        assert_eq!(
            keep.apply(user.clone()).keys().collect::<Vec<_>>(),
            ["email"]
        );
        let drop = Fields::parse(Some("email"), Some("false")).unwrap();
        assert_eq!(drop.apply(user).keys().collect::<Vec<_>>(), ["user_id"]);
    }
}
