//! Prometheus metrics at `/metrics`.
//!
//! prometheus-client keeps its registry in a value rather than a global,
//! so every application instance (and every test) has its own.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

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
    pub upstream: Family<Outcome, Counter>,
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
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("switchyard");
        let logins = Family::<Outcome, Counter>::default();
        let grants = Family::<Outcome, Counter>::default();
        let upstream = Family::<Outcome, Counter>::default();
        let outbox = Family::<Outcome, Counter>::default();
        let writeback = Family::<Outcome, Counter>::default();
        let keys = Family::<Outcome, Counter>::default();
        registry.register("logins", "Logins by route and result", logins.clone());
        registry.register(
            "token_requests",
            "Token endpoint requests by grant type and result",
            grants.clone(),
        );
        registry.register(
            "upstream_requests",
            "Upstream calls by purpose and result",
            upstream.clone(),
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
        }
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

    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            tracing::error!("metrics could not be encoded");
        }
        out
    }
}
