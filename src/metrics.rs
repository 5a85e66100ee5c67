//! Prometheus metrics at `/metrics`.
//!
//! prometheus-client keeps its registry in a value rather than a global,
//! so every application instance (and every test) has its own.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// A gauge's one label: a state (of users, of outbox rows).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

/// A running job's gauges: its id and kind, and what is counted.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabel {
    pub job: String,
    pub kind: String,
    pub what: String,
}

/// The results of an upstream call that say the upstream is unwell
/// (`UpstreamError::kind`): not answering, rate limiting us, or answering
/// nonsense. A refused password or a rejected code is the upstream
/// working.
pub const UPSTREAM_ERRORS: &[&str] = &["unavailable", "rate_limited", "invalid_response"];

/// How far back the upstream's recent error rate looks.
pub const UPSTREAM_WINDOW_SECS: i64 = 900;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub what: String,
    pub result: String,
}

pub struct Metrics {
    registry: Registry,
    /// Logins by route (`local`, `upstream_redirect`, …) and result.
    pub logins: Family<Outcome, Counter>,
    /// Token endpoint requests by grant type and result.
    pub grants: Family<Outcome, Counter>,
    /// Calls to the upstream by purpose and result.
    pub upstream: UpstreamCalls,
    /// Outbox deliveries by kind (`mark_migrated`) and result (`done`,
    /// `retry`, `failed`): writes the upstream has not taken yet.
    pub outbox: Family<Outcome, Counter>,
    /// Local changes written back to the upstream, by what (`password`,
    /// `profile`, `blocked`) and result (`done`, `retry`, `failed`,
    /// `refused`), queued or blocking alike.
    pub writeback: Family<Outcome, Counter>,
    /// Signing-key reloads outside the periodic one, by cause
    /// (`unknown_kid`) and result.
    pub keys: Family<Outcome, Counter>,
    /// Users by state, refreshed every 15 s from the database (so every
    /// instance reports the same figures; take one, or `max`).
    pub users: Family<StateLabel, Gauge>,
    pub users_blocked: Gauge,
    /// Outbox rows by state (`pending`, `done`, `failed`).
    pub outbox_rows: Family<StateLabel, Gauge>,
    /// Per running job: `chunks_done`, `chunks_total`, `records_done`.
    pub job_progress: Family<JobLabel, Gauge>,
    /// Snapshots of the upstream calls and errors so far (at, calls,
    /// errors), one per refresh, the last [`UPSTREAM_WINDOW_SECS`] of them:
    /// the recent error rate is the difference with the oldest.
    pub upstream_window: std::sync::Mutex<std::collections::VecDeque<(i64, u64, u64)>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("switchyard");
        let logins = Family::<Outcome, Counter>::default();
        let grants = Family::<Outcome, Counter>::default();
        let upstream = UpstreamCalls::default();
        let outbox = Family::<Outcome, Counter>::default();
        let writeback = Family::<Outcome, Counter>::default();
        let keys = Family::<Outcome, Counter>::default();
        let users = Family::<StateLabel, Gauge>::default();
        let users_blocked = Gauge::default();
        let outbox_rows = Family::<StateLabel, Gauge>::default();
        let job_progress = Family::<JobLabel, Gauge>::default();
        registry.register("users", "Users by migration state", users.clone());
        registry.register("users_blocked", "Blocked users", users_blocked.clone());
        registry.register("outbox_rows", "Outbox rows by state", outbox_rows.clone());
        registry.register(
            "job_progress",
            "Running jobs: chunks done, chunks in all, records done",
            job_progress.clone(),
        );
        registry.register("logins", "Logins by route and result", logins.clone());
        registry.register(
            "token_requests",
            "Token endpoint requests by grant type and result",
            grants.clone(),
        );
        registry.register(
            "upstream_requests",
            "Upstream calls by purpose and result",
            upstream.family.clone(),
        );
        registry.register(
            "outbox_writes",
            "Outbox writes to the upstream by kind and result",
            outbox.clone(),
        );
        registry.register(
            "writeback",
            "Local changes written back to the upstream by what and result",
            writeback.clone(),
        );
        registry.register(
            "signing_key_reloads",
            "Signing-key reloads outside the periodic one, by cause and result",
            keys.clone(),
        );
        Self {
            registry,
            keys,
            logins,
            grants,
            upstream,
            outbox,
            writeback,
            users,
            users_blocked,
            outbox_rows,
            job_progress,
            upstream_window: Default::default(),
        }
    }
}

/// The `upstream_requests` counters, with the running totals the
/// overview's upstream health reads: every call, and those that ended in
/// one of [`UPSTREAM_ERRORS`]. Counted together, at the one place a call is
/// counted.
#[derive(Default)]
pub struct UpstreamCalls {
    family: Family<Outcome, Counter>,
    calls: std::sync::atomic::AtomicU64,
    errors: std::sync::atomic::AtomicU64,
}

impl UpstreamCalls {
    pub fn count(&self, what: &str, result: &str) {
        use std::sync::atomic::Ordering::Relaxed;
        Metrics::count(&self.family, what, result);
        self.calls.fetch_add(1, Relaxed);
        if UPSTREAM_ERRORS.contains(&result) {
            self.errors.fetch_add(1, Relaxed);
        }
    }

    /// Calls so far, and errors among them.
    pub fn tally(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.calls.load(Relaxed), self.errors.load(Relaxed))
    }
}

impl Metrics {
    pub fn count(family: &Family<Outcome, Counter>, what: &str, result: &str) {
        family
            .get_or_create(&Outcome {
                what: what.into(),
                result: result.into(),
            })
            .inc();
    }

    /// Keeps a snapshot of [`UpstreamCalls::tally`] taken at `at`,
    /// dropping those older than the window.
    pub fn snapshot_upstream(&self, at: i64) {
        let (calls, errors) = self.upstream.tally();
        let mut window = self
            .upstream_window
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        window.push_back((at, calls, errors));
        while window
            .front()
            .is_some_and(|(t, _, _)| *t < at - UPSTREAM_WINDOW_SECS)
        {
            window.pop_front();
        }
    }

    /// Calls and errors since the oldest snapshot in the window (or since
    /// the process started, before the first), and the span in seconds.
    pub fn upstream_recent(&self, now: i64) -> (u64, u64, Option<i64>) {
        let (calls, errors) = self.upstream.tally();
        let window = self
            .upstream_window
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match window
            .iter()
            .find(|(t, _, _)| *t >= now - UPSTREAM_WINDOW_SECS)
        {
            Some((t, c, e)) => (
                calls.saturating_sub(*c),
                errors.saturating_sub(*e),
                Some(now - t),
            ),
            None => (calls, errors, None),
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            tracing::error!("metrics could not be encoded");
        }
        out
    }
}
