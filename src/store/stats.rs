//! Where the migration stands, in figures: the overview page, its API and
//! the Prometheus gauges read them here.
//!
//! Definitions (each figure is computed by one query, no maintained
//! counters, so nothing on the login path writes more than it did):
//! - **moved**: users in state `migrated`; **left**: users in `pending` or
//!   `shadow` (they still sign in at, or were copied from, the upstream).
//!   `local` users never had an upstream account and count in neither.
//! - **active** left: a `pending` or `shadow` user, not blocked, who signed
//!   in here (`last_login_at`) or at the upstream (`upstream_last_login_at`,
//!   as the backfill copied it) within [`StatsQuery::active_days`]: the ones
//!   lazy migration can still move. **dormant**: the other users left; they
//!   move only by an import with hashes or a password reset.
//! - **rate**: users migrated over the last 7 days, per day; the
//!   **projected end** is when the active users left would all have moved
//!   at that rate.
//! - **by cohort**: a percent cohort is a stable hash of the user id
//!   (src/cutover), which SQL cannot compute, so its size is the expected
//!   share (`percent` of the users with an upstream account: the hash is
//!   uniform), marked `estimated`; a domain cohort is counted exactly from
//!   the users' emails. Cohorts may overlap as the rules do.
//! - **by client**: the users who signed in within the active window,
//!   counted under the client of their last login event.
//! - **logins** by route and result: the `login`, `login_failed` and
//!   `refresh_token_adopted` events, whose `detail` names the route and the
//!   result ([`login_detail`]). Throttled attempts write no event (the
//!   throttle refuses them before any work), so they are counted by the
//!   `switchyard_logins` metric only.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::Serialize;
use sqlx::Row;

use super::sql::SqlStore;
use super::sql_common::Dialect;
use super::{StoreResult, UserState};

/// The track a login took, as its audit event names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoginRoute {
    /// A local credential.
    Local,
    /// The password checked at the upstream, then the user migrated.
    UpstreamPassword,
    /// The upstream's own login page.
    UpstreamRedirect,
    /// An upstream refresh token adopted at the token endpoint.
    AdoptedRefresh,
    /// A user without a usable credential, sent to reset the password.
    ResetPassword,
}

text_names!(LoginRoute {
    Local => "local",
    UpstreamPassword => "upstream_password",
    UpstreamRedirect => "upstream_redirect",
    AdoptedRefresh => "adopted_refresh",
    ResetPassword => "reset_password",
});

/// How a login ended, as its audit event names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoginResult {
    Ok,
    /// Wrong identifier or password, or a blocked user.
    Failed,
    /// The upstream's brute-force protection locked the account.
    Locked,
}

text_names!(LoginResult {
    Ok => "ok",
    Failed => "failed",
    Locked => "locked",
});

/// The `detail` of a login event: its route and result, so logins can be
/// counted by both without a second write.
pub fn login_detail(route: LoginRoute, result: LoginResult) -> serde_json::Value {
    serde_json::json!({ "route": route.as_str(), "result": result.as_str() })
}

/// The event kinds that are logins.
const LOGIN_KINDS: &str = "('login', 'login_failed', 'refresh_token_adopted')";

/// One cohort rule, as the cutover rules hold it.
#[derive(Debug, Clone, Default)]
pub struct CohortRule {
    pub percent: Option<u8>,
    pub email_domains: Vec<String>,
}

/// What the figures are computed for.
#[derive(Debug, Clone)]
pub struct StatsQuery {
    pub now: i64,
    /// The active window, in days.
    pub active_days: u32,
    pub cohorts: Vec<CohortRule>,
}

/// Days of migrations in [`MigrationFigures::migrated_daily`].
pub const MIGRATED_DAYS: i64 = 90;
/// Days of logins in [`MigrationFigures::logins_daily`].
pub const LOGIN_DAYS: i64 = 14;
/// The window of the migration rate.
pub const RATE_DAYS: i64 = 7;
const DAY: i64 = 86_400;

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct UserFigures {
    pub total: u64,
    /// Every state, zeros included.
    pub by_state: BTreeMap<String, u64>,
    pub blocked: u64,
    /// `migrated`.
    pub moved: u64,
    /// `pending` + `shadow`.
    pub left: u64,
    /// Of those left, signed in within the active window and not blocked.
    pub active: u64,
    /// Of those left, the rest.
    pub dormant: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CohortFigures {
    pub index: usize,
    pub percent: Option<u8>,
    pub email_domains: Vec<String>,
    /// Users with an upstream account in the cohort.
    pub users: u64,
    /// Of those, migrated.
    pub migrated: u64,
    /// A percent cohort's expected size rather than a count.
    pub estimated: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClientFigures {
    pub client_id: String,
    pub users: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct LoginCount {
    pub route: String,
    pub result: String,
    pub count: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DayCount {
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    pub count: u64,
    /// Migrated users at the day's end.
    pub cumulative: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DayLogins {
    pub day: String,
    /// Successful logins by route, every route present.
    pub by_route: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Projection {
    /// Users migrated over the last [`RATE_DAYS`] days.
    pub migrated_last_7_days: u64,
    pub per_day: f64,
    /// The active users left.
    pub remaining_active: u64,
    /// Days until they have moved at this rate; `None` when nothing moves.
    pub days_left: Option<u64>,
    /// `YYYY-MM-DD`; `None` when nothing moves (or nothing is left: then
    /// `done` is true).
    pub projected_end: Option<String>,
    pub done: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MigrationFigures {
    pub at: i64,
    pub active_days: u32,
    pub users: UserFigures,
    /// migrated / (migrated + left), 0 to 1.
    pub progress: f64,
    pub cohorts: Vec<CohortFigures>,
    pub clients: Vec<ClientFigures>,
    pub logins_last_hour: Vec<LoginCount>,
    pub logins_last_day: Vec<LoginCount>,
    /// The last [`LOGIN_DAYS`] days, oldest first, today included.
    pub logins_daily: Vec<DayLogins>,
    /// The last [`MIGRATED_DAYS`] days, oldest first, today included.
    pub migrated_daily: Vec<DayCount>,
    pub projection: Projection,
}

/// A running job's progress.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct JobProgress {
    pub id: String,
    pub kind: String,
    pub chunks_done: u64,
    pub chunks_total: u64,
    /// Records the finished pages handled (created, updated, unchanged,
    /// conflicts, failed).
    pub records_done: u64,
}

/// What the Prometheus gauges show.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct GaugeFigures {
    pub users_by_state: BTreeMap<String, u64>,
    pub users_blocked: u64,
    pub outbox_by_state: BTreeMap<String, u64>,
    pub jobs: Vec<JobProgress>,
}

#[async_trait]
pub trait MigrationStats: Send + Sync {
    async fn migration_figures(&self, q: &StatsQuery) -> StoreResult<MigrationFigures>;
    async fn gauge_figures(&self) -> StoreResult<GaugeFigures>;
}

/// `YYYY-MM-DD` of a UTC day number (Unix seconds / 86,400).
pub fn day_name(day: i64) -> String {
    chrono::DateTime::from_timestamp(day * DAY, 0)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

impl SqlStore {
    /// A text member of the JSON in a TEXT column.
    fn json_member(&self, column: &str, key: &str) -> String {
        match self.dialect() {
            Dialect::Postgres => format!("(({column})::jsonb ->> '{key}')"),
            Dialect::Sqlite => format!("json_extract({column}, '$.{key}')"),
        }
    }

    /// One pass over the users: the counts by state, blocked and active,
    /// the migrations per day of the window and those of the rate's week.
    async fn users_pass(
        &self,
        active_since: i64,
        first_day: i64,
        rate_since: i64,
    ) -> StoreResult<(UserFigures, Vec<u64>, u64, u64)> {
        let sql = format!(
            "SELECT state, blocked, \
             CASE WHEN last_login_at >= $1 OR upstream_last_login_at >= $1 THEN 1 ELSE 0 END AS active, \
             CASE WHEN migrated_at >= $2 THEN migrated_at / {DAY} ELSE -1 END AS day, \
             CASE WHEN migrated_at >= $3 THEN 1 ELSE 0 END AS recent, \
             COUNT(*) AS n FROM users GROUP BY 1, 2, 3, 4, 5"
        );
        let rows = sqlx::query(&sql)
            .bind(active_since)
            .bind(first_day * DAY)
            .bind(rate_since)
            .fetch_all(self.pool())
            .await?;
        let mut f = UserFigures {
            by_state: UserState::ALL
                .iter()
                .map(|s| (s.as_str().to_string(), 0))
                .collect(),
            ..Default::default()
        };
        let mut daily = vec![0u64; MIGRATED_DAYS as usize];
        let (mut before, mut rate) = (0, 0);
        for row in rows {
            let state: String = row.try_get("state")?;
            let blocked: i64 = row.try_get("blocked")?;
            let active: i64 = row.try_get("active")?;
            let day: i64 = row.try_get("day")?;
            let recent: i64 = row.try_get("recent")?;
            let n = row.try_get::<i64, _>("n")? as u64;
            f.total += n;
            *f.by_state.entry(state.clone()).or_default() += n;
            if blocked != 0 {
                f.blocked += n;
            }
            match UserState::parse(&state) {
                Some(UserState::Migrated) => {
                    f.moved += n;
                    if recent != 0 {
                        rate += n;
                    }
                    match usize::try_from(day - first_day)
                        .ok()
                        .and_then(|i| daily.get_mut(i))
                    {
                        Some(slot) => *slot += n,
                        // Before the window, without a date, or (clock
                        // skew between instances) after today.
                        None if day < first_day => before += n,
                        None => {}
                    }
                }
                Some(UserState::Pending | UserState::Shadow) => {
                    f.left += n;
                    if active != 0 && blocked == 0 {
                        f.active += n;
                    } else {
                        f.dormant += n;
                    }
                }
                _ => {}
            }
        }
        Ok((f, daily, before, rate))
    }

    /// One pass over the login events of the last [`LOGIN_DAYS`] days:
    /// by day, kind, route and result, and whether in the last hour or day.
    async fn events_pass(
        &self,
        now: i64,
        first_day: i64,
    ) -> StoreResult<(Vec<LoginCount>, Vec<LoginCount>, Vec<DayLogins>)> {
        let sql = format!(
            "SELECT at / {DAY} AS day, kind, {route} AS route, {result} AS result, \
             CASE WHEN at >= $2 THEN 1 ELSE 0 END AS hour, \
             CASE WHEN at >= $3 THEN 1 ELSE 0 END AS last_day, \
             COUNT(*) AS n FROM audit_events \
             WHERE kind IN {LOGIN_KINDS} AND at >= $1 GROUP BY 1, 2, 3, 4, 5, 6",
            route = self.json_member("detail", "route"),
            result = self.json_member("detail", "result"),
        );
        let rows = sqlx::query(&sql)
            .bind((first_day * DAY).min(now - DAY))
            .bind(now - 3600)
            .bind(now - DAY)
            .fetch_all(self.pool())
            .await?;
        let mut hour = BTreeMap::<(String, String), u64>::new();
        let mut day_counts = BTreeMap::<(String, String), u64>::new();
        let mut daily: Vec<DayLogins> = (first_day..first_day + LOGIN_DAYS)
            .map(|d| DayLogins {
                day: day_name(d),
                by_route: LoginRoute::ALL
                    .iter()
                    .map(|r| (r.as_str().to_string(), 0))
                    .collect(),
            })
            .collect();
        for row in rows {
            let day: i64 = row.try_get("day")?;
            let kind: String = row.try_get("kind")?;
            // Events written before routes were recorded have neither.
            let route = row
                .try_get::<Option<String>, _>("route")?
                .unwrap_or_else(|| "unknown".into());
            let result = row
                .try_get::<Option<String>, _>("result")?
                .unwrap_or_else(|| "unknown".into());
            let n = row.try_get::<i64, _>("n")? as u64;
            if row.try_get::<i64, _>("hour")? != 0 {
                *hour.entry((route.clone(), result.clone())).or_default() += n;
            }
            if row.try_get::<i64, _>("last_day")? != 0 {
                *day_counts
                    .entry((route.clone(), result.clone()))
                    .or_default() += n;
            }
            // The chart counts the logins that went through.
            if kind != "login_failed"
                && let Some(slot) = usize::try_from(day - first_day)
                    .ok()
                    .and_then(|i| daily.get_mut(i))
            {
                *slot.by_route.entry(route).or_default() += n;
            }
        }
        let list = |m: BTreeMap<(String, String), u64>| {
            m.into_iter()
                .map(|((route, result), count)| LoginCount {
                    route,
                    result,
                    count,
                })
                .collect::<Vec<_>>()
        };
        Ok((list(hour), list(day_counts), daily))
    }

    async fn cohort_figures(
        &self,
        rules: &[CohortRule],
        users: &UserFigures,
    ) -> StoreResult<Vec<CohortFigures>> {
        let upstream_users = users.moved + users.left;
        let mut out = Vec::new();
        for (index, rule) in rules.iter().enumerate() {
            let domains: Vec<String> = rule
                .email_domains
                .iter()
                .map(|d| d.trim_start_matches('@').to_lowercase())
                .filter(|d| !d.is_empty())
                .collect();
            let (mut count, mut migrated, mut estimated) = (0, 0, false);
            if let Some(p) = rule.percent {
                count = upstream_users * u64::from(p) / 100;
                migrated = users.moved * u64::from(p) / 100;
                estimated = true;
            }
            for domain in &domains {
                let row = sqlx::query(
                    "SELECT COUNT(*) AS n, COUNT(CASE WHEN state = 'migrated' THEN 1 END) AS m \
                     FROM users WHERE state <> 'local' AND LOWER(email) LIKE $1",
                )
                .bind(format!("%@{}", domain.replace('%', "")))
                .fetch_one(self.pool())
                .await?;
                count += row.try_get::<i64, _>("n")? as u64;
                migrated += row.try_get::<i64, _>("m")? as u64;
            }
            out.push(CohortFigures {
                index,
                percent: rule.percent,
                email_domains: domains,
                users: count,
                migrated,
                estimated,
            });
        }
        Ok(out)
    }

    async fn client_figures(&self, since: i64) -> StoreResult<Vec<ClientFigures>> {
        let rows = sqlx::query(
            "SELECT e.client_id AS client_id, COUNT(*) AS n FROM audit_events e JOIN \
             (SELECT user_id, MAX(id) AS id FROM audit_events \
              WHERE kind IN ('login', 'refresh_token_adopted') AND at >= $1 AND user_id IS NOT NULL \
              GROUP BY user_id) last ON e.id = last.id \
             GROUP BY e.client_id ORDER BY n DESC, client_id",
        )
        .bind(since)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ClientFigures {
                    client_id: r
                        .try_get::<Option<String>, _>("client_id")?
                        .unwrap_or_default(),
                    users: r.try_get::<i64, _>("n")? as u64,
                })
            })
            .collect()
    }
}

/// When the active users left will have moved at the last week's rate.
pub fn project(migrated_last_7_days: u64, remaining_active: u64, now: i64) -> Projection {
    let per_day = migrated_last_7_days as f64 / RATE_DAYS as f64;
    let done = remaining_active == 0;
    let days_left = if done {
        Some(0)
    } else if migrated_last_7_days == 0 {
        None
    } else {
        Some((remaining_active as f64 / per_day).ceil() as u64)
    };
    Projection {
        migrated_last_7_days,
        per_day,
        remaining_active,
        days_left,
        projected_end: days_left.map(|d| day_name(now / DAY + d as i64)),
        done,
    }
}

#[async_trait]
impl MigrationStats for SqlStore {
    async fn migration_figures(&self, q: &StatsQuery) -> StoreResult<MigrationFigures> {
        let now = q.now;
        let today = now / DAY;
        let active_since = now - i64::from(q.active_days) * DAY;
        let first_migrated = today - MIGRATED_DAYS + 1;
        // Independent reads: on PostgreSQL each takes its own connection,
        // so they run side by side.
        let (
            (users, daily, before, rate),
            (logins_last_hour, logins_last_day, logins_daily),
            clients,
        ) = tokio::try_join!(
            self.users_pass(active_since, first_migrated, now - RATE_DAYS * DAY),
            self.events_pass(now, today - LOGIN_DAYS + 1),
            self.client_figures(active_since),
        )?;
        let mut cumulative = before;
        let migrated_daily = (first_migrated..=today)
            .zip(daily)
            .map(|(d, count)| {
                cumulative += count;
                DayCount {
                    day: day_name(d),
                    count,
                    cumulative,
                }
            })
            .collect();
        let cohorts = self.cohort_figures(&q.cohorts, &users).await?;
        let base = users.moved + users.left;
        Ok(MigrationFigures {
            at: now,
            active_days: q.active_days,
            progress: if base == 0 {
                0.0
            } else {
                users.moved as f64 / base as f64
            },
            projection: project(rate, users.active, now),
            users,
            cohorts,
            clients,
            logins_last_hour,
            logins_last_day,
            logins_daily,
            migrated_daily,
        })
    }

    async fn gauge_figures(&self) -> StoreResult<GaugeFigures> {
        let mut g = GaugeFigures {
            users_by_state: UserState::ALL
                .iter()
                .map(|s| (s.as_str().to_string(), 0))
                .collect(),
            ..Default::default()
        };
        for row in sqlx::query(
            "SELECT state, COUNT(*) AS n, COUNT(CASE WHEN blocked <> 0 THEN 1 END) AS b FROM users GROUP BY state",
        )
        .fetch_all(self.pool())
        .await?
        {
            let state: String = row.try_get("state")?;
            g.users_by_state
                .insert(state, row.try_get::<i64, _>("n")? as u64);
            g.users_blocked += row.try_get::<i64, _>("b")? as u64;
        }
        for s in ["pending", "done", "failed"] {
            g.outbox_by_state.insert(s.into(), 0);
        }
        for row in sqlx::query("SELECT state, COUNT(*) AS n FROM outbox GROUP BY state")
            .fetch_all(self.pool())
            .await?
        {
            let state: String = row.try_get("state")?;
            g.outbox_by_state
                .insert(state, row.try_get::<i64, _>("n")? as u64);
        }
        let rows = sqlx::query(
            "SELECT j.id AS id, j.kind AS kind, c.state AS chunk_state, c.counters AS counters \
             FROM jobs j JOIN job_chunks c ON c.job_id = j.id WHERE j.state = 'running' ORDER BY j.id",
        )
        .fetch_all(self.pool())
        .await?;
        for row in rows {
            let id: String = row.try_get("id")?;
            if g.jobs.last().is_none_or(|j| j.id != id) {
                g.jobs.push(JobProgress {
                    id: id.clone(),
                    kind: row.try_get("kind")?,
                    chunks_done: 0,
                    chunks_total: 0,
                    records_done: 0,
                });
            }
            let Some(job) = g.jobs.last_mut() else {
                continue;
            };
            job.chunks_total += 1;
            let chunk_state: String = row.try_get("chunk_state")?;
            if chunk_state == "done" {
                job.chunks_done += 1;
            }
            let counters: String = row.try_get("counters")?;
            let c: super::page::Counters = serde_json::from_str(&counters).unwrap_or_default();
            job.records_done += c.created + c.updated + c.unchanged + c.conflicts + c.failed;
        }
        Ok(g)
    }
}
