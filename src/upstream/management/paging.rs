//! One page of users per vendor's paging style (the provider definition's
//! `[management] paging`), from a chunk's [`ChunkPosition`] to the records
//! and the position after them.
//!
//! - Auth0 (`auth0`): a full backfill reads the bulk export
//!   ([`super::export`]); `--since` searches by `updated_at` in windows,
//!   each split in two while it holds more than the 1,000 results a query
//!   may page through (Auth0 "User Search Best Practices", "Get Users").
//! - Okta (`link`): `limit`, then whatever `Link: <…>; rel="next"` says
//!   (RFC 8288; Okta "Pagination"). A plain list leaves deprovisioned users
//!   out, so a full backfill also searches for them (Okta "List users").
//! - Cognito (`cognito`): `ListUsers` with `Limit` ≤ 60 and
//!   `PaginationToken` (Amazon Cognito API Reference, "ListUsers").
//! - Keycloak (`first_max`): `users/count` once, then one chunk per
//!   `first`/`max` page, and a tail chunk that pages on until a short page
//!   for users added meanwhile (Keycloak "Admin REST API").

use anyhow::{Context, bail};
use http::HeaderMap;
use reqwest::Method;
use serde_json::{Value, json};

use super::{Item, ManagementClient};
use crate::store::position::ChunkPosition;
use crate::upstream::provider::Paging;

/// One page of a chunk: its records, where the chunk continues (none: it
/// is finished), and chunks it splits into.
pub struct Page {
    pub items: Vec<Item>,
    pub next: Option<ChunkPosition>,
    pub split: Vec<ChunkPosition>,
}

impl Page {
    fn of(items: Vec<Item>, next: Option<ChunkPosition>) -> Self {
        Self {
            items,
            next,
            split: Vec::new(),
        }
    }

    fn split(split: Vec<ChunkPosition>) -> Self {
        Self {
            items: Vec::new(),
            next: None,
            split,
        }
    }
}

/// The Auth0 search's time format: milliseconds, UTC.
fn auth0_time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// The chunks a job starts with.
pub fn initial_positions(paging: Paging, since: Option<&str>) -> Vec<ChunkPosition> {
    match (paging, since) {
        (Paging::Auth0, None) => vec![ChunkPosition::Auth0Export {
            job: None,
            records: 0,
        }],
        (Paging::Auth0, Some(since)) => vec![ChunkPosition::Auth0Window {
            from: since.to_string(),
            to: auth0_time(chrono::Utc::now()),
            page: 0,
        }],
        (Paging::Link, None) => vec![
            ChunkPosition::Link {
                next: None,
                search: None,
            },
            ChunkPosition::Link {
                next: None,
                search: Some("status eq \"DEPROVISIONED\"".into()),
            },
        ],
        (Paging::Link, Some(since)) => vec![ChunkPosition::Link {
            next: None,
            search: Some(format!("lastUpdated gt \"{since}\"")),
        }],
        (Paging::Cognito, _) => vec![ChunkPosition::Cognito { token: None }],
        (Paging::FirstMax, _) => vec![ChunkPosition::FirstMaxCount],
    }
}

impl ManagementClient {
    /// Fetches the page a chunk's position points at. (Auth0's export is
    /// streamed by the backfill itself, from [`super::export`].)
    pub async fn page(&self, at: &ChunkPosition) -> anyhow::Result<Page> {
        match at {
            ChunkPosition::Auth0Window { from, to, page } => {
                self.auth0_window(from, to, *page).await
            }
            ChunkPosition::Link { next, search } => {
                self.link_page(next.as_deref(), search.as_deref()).await
            }
            ChunkPosition::Cognito { token } => self.cognito_page(token.as_deref()).await,
            ChunkPosition::FirstMaxCount => self.first_max_count().await,
            ChunkPosition::FirstMax { first, tail } => self.first_max_page(*first, *tail).await,
            ChunkPosition::Auth0Export { .. } | ChunkPosition::File { .. } => {
                bail!("this chunk is read from a file, not paged")
            }
            ChunkPosition::Campaign { .. } => {
                bail!("this chunk walks the local users, not the upstream")
            }
        }
    }

    /// An `updated_at` window of Auth0's user search (from inclusive, to
    /// exclusive), split in two while it holds more than 1,000 results.
    async fn auth0_window(&self, from: &str, to: &str, page: u64) -> anyhow::Result<Page> {
        let per_page = self.mgmt.page_size as u64;
        let mut url = self.url("users")?;
        url.query_pairs_mut()
            .append_pair("q", &format!("updated_at:[\"{from}\" TO \"{to}\"}}"))
            .append_pair("search_engine", "v3")
            .append_pair("per_page", &per_page.to_string())
            .append_pair("page", &page.to_string())
            .append_pair("include_totals", "true")
            .append_pair("sort", "updated_at:1");
        let (body, _) = self.call(Method::GET, url, None, None).await?;
        let total = body["total"].as_u64().unwrap_or(0);
        if page == 0 && total > 1000 {
            let (a, b) = (parse_time(from)?, parse_time(to)?);
            if b - a <= chrono::Duration::milliseconds(1) {
                bail!(
                    "more than 1,000 users were updated within one millisecond ({from}); \
                     run a full backfill (an export job) instead of --since"
                );
            }
            let mid = auth0_time(a + (b - a) / 2);
            let window = |from: &str, to: &str| ChunkPosition::Auth0Window {
                from: from.into(),
                to: to.into(),
                page: 0,
            };
            return Ok(Page::split(vec![window(from, &mid), window(&mid, to)]));
        }
        let users = body["users"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let next = ((page + 1) * per_page < total && !users.is_empty()).then(|| {
            ChunkPosition::Auth0Window {
                from: from.into(),
                to: to.into(),
                page: page + 1,
            }
        });
        Ok(Page::of(self.records(users), next))
    }

    /// Okta: `limit`, then whatever `Link: <…>; rel="next"` says.
    async fn link_page(&self, next: Option<&str>, search: Option<&str>) -> anyhow::Result<Page> {
        let url = match next {
            Some(next) => {
                let next = url::Url::parse(next)?;
                // The cursor URL comes from the upstream's header: it must
                // stay on the upstream, where the API token may go.
                if next.origin() != self.base.origin() {
                    bail!("the upstream's next-page link points to another host");
                }
                next
            }
            None => {
                let mut url = self.url("users")?;
                url.query_pairs_mut()
                    .append_pair("limit", &self.mgmt.page_size.to_string());
                if let Some(search) = search {
                    url.query_pairs_mut().append_pair("search", search);
                }
                url
            }
        };
        let (body, headers) = self.call(Method::GET, url, None, None).await?;
        let users = body.as_array().map(Vec::as_slice).unwrap_or_default();
        let next = next_link(&headers).map(|n| ChunkPosition::Link {
            next: Some(n),
            search: search.map(String::from),
        });
        Ok(Page::of(self.records(users), next))
    }

    /// Cognito `ListUsers`: `Limit` ≤ 60 and `PaginationToken`.
    async fn cognito_page(&self, token: Option<&str>) -> anyhow::Result<Page> {
        let pool = self
            .settings
            .user_pool_id
            .clone()
            .context("set upstream.user_pool_id")?;
        let mut body = json!({"UserPoolId": pool, "Limit": self.mgmt.page_size.min(60)});
        if let Some(token) = token {
            body["PaginationToken"] = Value::String(token.into());
        }
        let (answer, _) = self
            .call(
                Method::POST,
                self.base.clone(),
                Some(&body),
                Some("AWSCognitoIdentityProviderService.ListUsers"),
            )
            .await?;
        let users = answer["Users"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let next = answer["PaginationToken"]
            .as_str()
            .map(|t| ChunkPosition::Cognito {
                token: Some(t.into()),
            });
        Ok(Page::of(self.records(users), next))
    }

    /// Keycloak: `users/count`, split into one chunk per page and a tail.
    async fn first_max_count(&self) -> anyhow::Result<Page> {
        let max = self.mgmt.page_size as u64;
        let (count, _) = self
            .call(Method::GET, self.url("users/count")?, None, None)
            .await?;
        let count = count.as_u64().context("users/count is not a number")?;
        let pages = count.div_ceil(max);
        let mut split: Vec<ChunkPosition> = (0..pages)
            .map(|i| ChunkPosition::FirstMax {
                first: i * max,
                tail: false,
            })
            .collect();
        split.push(ChunkPosition::FirstMax {
            first: pages * max,
            tail: true,
        });
        Ok(Page::split(split))
    }

    /// Keycloak: one `first`/`max` page; a tail pages on while pages are full.
    async fn first_max_page(&self, first: u64, tail: bool) -> anyhow::Result<Page> {
        let max = self.mgmt.page_size as u64;
        let mut url = self.url("users")?;
        url.query_pairs_mut()
            .append_pair("first", &first.to_string())
            .append_pair("max", &max.to_string())
            .append_pair("briefRepresentation", "false");
        let (body, _) = self.call(Method::GET, url, None, None).await?;
        let users = body.as_array().map(Vec::as_slice).unwrap_or_default();
        let next = (tail && users.len() as u64 == max).then_some(ChunkPosition::FirstMax {
            first: first + max,
            tail: true,
        });
        Ok(Page::of(self.records(users), next))
    }

    fn records(&self, users: &[Value]) -> Vec<Item> {
        users.iter().map(|u| self.record(u, None)).collect()
    }

    /// How many users the upstream holds, where one request tells
    /// (Auth0's `include_totals`, Keycloak's `users/count`): the progress
    /// bar's length. `None` elsewhere, or when the request fails.
    pub async fn total_users(&self) -> Option<u64> {
        let url = match self.mgmt.paging {
            Paging::Auth0 => {
                let mut url = self.url("users").ok()?;
                url.query_pairs_mut()
                    .append_pair("per_page", "1")
                    .append_pair("include_totals", "true")
                    .append_pair("search_engine", "v3");
                url
            }
            Paging::FirstMax => self.url("users/count").ok()?,
            Paging::Link | Paging::Cognito => return None,
        };
        let (body, _) = self.call(Method::GET, url, None, None).await.ok()?;
        body.as_u64().or_else(|| body["total"].as_u64())
    }
}

/// `Link: <https://…?after=…>; rel="next"` (RFC 8288).
pub fn next_link(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(http::header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|link| {
            let (target, params) = link.split_once(';')?;
            let is_next = params.split(';').any(|p| {
                let p = p.trim().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            });
            is_next.then(|| {
                target
                    .trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string()
            })
        })
}

fn parse_time(t: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    Ok(chrono::DateTime::parse_from_rfc3339(t)
        .with_context(|| format!("{t} is not an RFC 3339 time"))?
        .with_timezone(&chrono::Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_links_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(
            http::header::LINK,
            "<https://x.okta.com/api/v1/users?limit=200>; rel=\"self\""
                .parse()
                .unwrap(),
        );
        h.append(
            http::header::LINK,
            "<https://x.okta.com/api/v1/users?after=00u2&limit=200>; rel=\"next\""
                .parse()
                .unwrap(),
        );
        assert_eq!(
            next_link(&h).as_deref(),
            Some("https://x.okta.com/api/v1/users?after=00u2&limit=200")
        );
        h.remove(http::header::LINK);
        assert_eq!(next_link(&h), None);
    }
}
