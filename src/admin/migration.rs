//! Where the migration stands: the overview page (`GET /admin`), its
//! figures as JSON (`GET /admin/api/v1/migration`, also served at
//! `GET /admin/migration-status`), and the Prometheus gauges refreshed
//! from the same store ([`refresh_gauges`]). A small script
//! (`/admin/assets/admin.js`) refreshes the page's big numbers every 30 s;
//! the page works without it.
//!
//! The figures and their definitions (moved, left, active, dormant, the
//! rate and the projection, cohorts, clients, logins by route and result)
//! are the store's: [`crate::store::stats`]. Upstream health is this
//! instance's own count of its upstream calls (the `upstream_requests`
//! counters): the share of calls over the last 15 minutes that ended
//! `unavailable`, `rate_limited` or `invalid_response`.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::Serialize;

use super::access::{ApiOperator, PageOperator};
use super::charts;
use super::pages::{Section, render};
use super::problem::Problem;
use crate::error::AppError;
use crate::metrics::{JobLabel, Metrics, StateLabel, UPSTREAM_WINDOW_SECS};
use crate::state::AppState;
use crate::store::now;
use crate::store::stats::{CohortRule, LoginCount, MigrationFigures, StatsQuery};
use crate::templates;

/// A user left is active when they signed in (here or at the upstream)
/// within this many days: long enough to span a monthly habit, short
/// enough that users who left the product do not hold up the projection.
pub const ACTIVE_DAYS: u32 = 30;

/// Above this share of failed upstream calls the upstream is `degraded`,
/// and above [`DOWN_RATE`] `down`.
const DEGRADED_RATE: f64 = 0.05;
const DOWN_RATE: f64 = 0.5;

/// How the upstream is doing, as this instance sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// No upstream is configured.
    None,
    /// No call in the window.
    Idle,
    Healthy,
    Degraded,
    Down,
}

#[derive(Debug, Clone, Serialize)]
pub struct UpstreamHealth {
    pub configured: bool,
    pub status: Health,
    /// Calls in the window, and those that failed for the upstream's sake.
    pub calls: u64,
    pub errors: u64,
    /// errors / calls, 0 without calls.
    pub error_rate: f64,
    /// How far back the window reaches (up to 15 minutes; less just after
    /// the start).
    pub window_secs: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct MigrationStatus {
    #[serde(flatten)]
    pub figures: MigrationFigures,
    pub upstream: UpstreamHealth,
}

/// The upstream's health from this instance's counters.
pub fn upstream_health(state: &AppState, now: i64) -> UpstreamHealth {
    let (calls, errors, span) = state.metrics.upstream_recent(now);
    let error_rate = if calls == 0 {
        0.0
    } else {
        errors as f64 / calls as f64
    };
    let configured = state.upstream.is_some();
    let status = if !configured {
        Health::None
    } else if calls == 0 {
        Health::Idle
    } else if error_rate >= DOWN_RATE {
        Health::Down
    } else if error_rate >= DEGRADED_RATE {
        Health::Degraded
    } else {
        Health::Healthy
    };
    UpstreamHealth {
        configured,
        status,
        calls,
        errors,
        error_rate,
        window_secs: span.unwrap_or(UPSTREAM_WINDOW_SECS),
    }
}

/// How long a reading of the figures is served before it is read again.
/// On a million users a reading costs a few hundred milliseconds of
/// database time (two scans of the users and of the recent login events),
/// while the page refreshes every 30 s and the gauges every 15 s: so a
/// reading older than this is still answered at once, and read again in
/// the background, once (stale-while-revalidate, as RFC 5861 §3 describes
/// it for HTTP caches). The figures say when they were read (`at`).
pub const FIGURES_TTL: std::time::Duration = std::time::Duration::from_secs(15);

struct Reading {
    read: std::time::Instant,
    figures: Arc<MigrationFigures>,
    refreshing: bool,
}

/// The last reading of this application's figures, shared by its routes
/// (each application has its own: a test suite runs many in one process).
#[derive(Default)]
pub struct Figures {
    last: Mutex<Option<Reading>>,
}

impl Figures {
    fn last(&self) -> std::sync::MutexGuard<'_, Option<Reading>> {
        self.last.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn keep(&self, figures: Arc<MigrationFigures>) {
        *self.last() = Some(Reading {
            read: std::time::Instant::now(),
            figures,
            refreshing: false,
        });
    }

    /// The figures, from the last reading when it is recent (see
    /// [`FIGURES_TTL`]).
    pub async fn get(self: &Arc<Self>, state: &AppState) -> Result<Arc<MigrationFigures>, Problem> {
        let stale = match self.last().as_mut() {
            Some(r) if r.read.elapsed() < FIGURES_TTL => return Ok(r.figures.clone()),
            Some(r) => {
                let again = !r.refreshing;
                r.refreshing = true;
                Some((r.figures.clone(), again))
            }
            None => None,
        };
        match stale {
            Some((figures, again)) => {
                if again {
                    let (cache, state) = (self.clone(), state.clone());
                    tokio::spawn(async move {
                        match read_figures(&state).await {
                            Ok(f) => cache.keep(Arc::new(f)),
                            Err(_) => {
                                if let Some(r) = cache.last().as_mut() {
                                    r.refreshing = false;
                                }
                            }
                        }
                    });
                }
                Ok(figures)
            }
            None => {
                let fresh = Arc::new(read_figures(state).await?);
                self.keep(fresh.clone());
                Ok(fresh)
            }
        }
    }
}

/// Reads every figure from the store, now (uncached).
pub async fn read_figures(state: &AppState) -> Result<MigrationFigures, Problem> {
    let at = now();
    let rules = state.cutover.rules().await?;
    let query = StatsQuery {
        now: at,
        active_days: ACTIVE_DAYS,
        cohorts: rules
            .cohorts
            .iter()
            .map(|c| CohortRule {
                percent: c.percent,
                email_domains: c.email_domains.clone(),
            })
            .collect(),
    };
    Ok(state.db.migration_figures(&query).await?)
}

/// Every figure of the overview: the store's (at most [`FIGURES_TTL`]
/// old) and the upstream's health now.
pub async fn status(state: &AppState, figures: &Arc<Figures>) -> Result<MigrationStatus, Problem> {
    let figures = figures.get(state).await?;
    Ok(MigrationStatus {
        figures: (*figures).clone(),
        upstream: upstream_health(state, now()),
    })
}

async fn api(
    State(state): State<AppState>,
    Extension(figures): Extension<Arc<Figures>>,
    ApiOperator(_): ApiOperator,
) -> Result<Response, Problem> {
    let mut response = Json(status(&state, &figures).await?).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// A login count as the page's table shows it.
#[derive(Serialize)]
struct LoginRow {
    route: &'static str,
    result: String,
    last_hour: u64,
    last_day: u64,
}

fn login_rows(hour: &[LoginCount], day: &[LoginCount]) -> Vec<LoginRow> {
    // Every pair seen in the last day (the last hour's are among them).
    day.iter()
        .map(|d| LoginRow {
            route: charts::route_name(&d.route),
            result: d.result.clone(),
            last_hour: hour
                .iter()
                .find(|h| h.route == d.route && h.result == d.result)
                .map_or(0, |h| h.count),
            last_day: d.count,
        })
        .collect()
}

async fn page(
    State(state): State<AppState>,
    Extension(figures): Extension<Arc<Figures>>,
    operator: PageOperator,
) -> Response {
    let s = match status(&state, &figures).await {
        Ok(s) => s,
        Err(p) => return AppError::from(p).into_response(),
    };
    let f = &s.figures;
    let base = f.users.moved + f.users.left;
    let migrated_svg = charts::migrated_chart(&f.migrated_daily, base);
    let logins_svg = charts::logins_chart(&f.logins_daily);
    let route_names: Vec<(&str, &str)> = charts::ROUTE_COLOURS
        .iter()
        .map(|(r, _)| (*r, charts::route_name(r)))
        .collect();
    render(
        StatusCode::OK,
        "admin/overview.html",
        &operator,
        Section::Overview,
        "Overview",
        None,
        minijinja::context! {
            s => &s,
            moved => charts::thousands(f.users.moved),
            left => charts::thousands(f.users.left),
            active => charts::thousands(f.users.active),
            dormant => charts::thousands(f.users.dormant),
            total => charts::thousands(f.users.total),
            blocked => charts::thousands(f.users.blocked),
            progress => format!("{:.1}", f.progress * 100.0),
            per_day => format!("{:.1}", f.projection.per_day),
            error_rate => format!("{:.1}", s.upstream.error_rate * 100.0),
            window_minutes => (s.upstream.window_secs + 59) / 60,
            migrated_svg => minijinja::Value::from_safe_string(migrated_svg),
            logins_svg => minijinja::Value::from_safe_string(logins_svg),
            route_names,
            login_rows => login_rows(&f.logins_last_hour, &f.logins_last_day),
        },
    )
}

/// Sets the gauges from the store and keeps a snapshot of the upstream
/// counters for [`upstream_health`]'s window. Run every
/// 15 s (src/startup.rs) by each instance.
pub async fn refresh_gauges(state: &AppState) -> crate::store::StoreResult<()> {
    state.metrics.snapshot_upstream(now());
    let g = state.db.gauge_figures().await?;
    let m: &Metrics = &state.metrics;
    for (s, n) in &g.users_by_state {
        m.users
            .get_or_create(&StateLabel { state: s.clone() })
            .set(*n as i64);
    }
    m.users_blocked.set(g.users_blocked as i64);
    for (s, n) in &g.outbox_by_state {
        m.outbox_rows
            .get_or_create(&StateLabel { state: s.clone() })
            .set(*n as i64);
    }
    // Jobs come and go: the family is rebuilt, so a finished job's gauges
    // disappear rather than stay at their last value.
    m.job_progress.clear();
    for j in &g.jobs {
        for (what, n) in [
            ("chunks_done", j.chunks_done),
            ("chunks_total", j.chunks_total),
            ("records_done", j.records_done),
        ] {
            m.job_progress
                .get_or_create(&JobLabel {
                    job: j.id.clone(),
                    kind: j.kind.clone(),
                    what: what.into(),
                })
                .set(n as i64);
        }
    }
    Ok(())
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin", get(page))
        .route(&format!("{}/migration", super::API), get(api))
        .route("/admin/migration-status", get(api))
        .route(
            "/admin/assets/admin.js",
            get(|| async { templates::asset("text/javascript; charset=utf-8", ADMIN_JS) }),
        )
        .layer(Extension(Arc::new(Figures::default())))
}

/// The overview's live refresh (script-src 'self'; the page works without).
const ADMIN_JS: &str = include_str!("../../templates/admin/admin.js");
