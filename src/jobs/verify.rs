//! `switchyard verify`: the upstream and the local store compared record
//! by record — counts, ids missing locally, ids only local, and the fields
//! that differ — paging the upstream the same rate-limited way as backfill.
//! The report is clean only when nothing is missing, extra or different.

use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use serde_json::Value;

use super::progress::Progress;
use super::source::walk;
use crate::config::Settings;
use crate::store::Database;
use crate::store::jobs::{Counters, UserCounts};
use crate::store::record::Record;
use crate::upstream::management::ManagementClient;

/// The profile fields a login fills from the upstream's tokens where its
/// directory record may have nothing.
const FILLED_BY_LOGIN: &[&str] = &[
    "username",
    "name",
    "given_name",
    "family_name",
    "nickname",
    "picture",
    "phone_number",
];

/// How many examples each section of the report keeps.
pub const SAMPLE: usize = 20;

#[derive(Debug, Serialize)]
pub struct Sample<T> {
    pub count: u64,
    pub sample: Vec<T>,
}

impl<T> Default for Sample<T> {
    fn default() -> Self {
        Self {
            count: 0,
            sample: Vec::new(),
        }
    }
}

impl<T> Sample<T> {
    fn push(&mut self, item: T) {
        self.count += 1;
        if self.sample.len() < SAMPLE {
            self.sample.push(item);
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Difference {
    pub id: String,
    pub field: &'static str,
    pub upstream: Value,
    pub local: Value,
}

#[derive(Debug, Default, Serialize)]
pub struct VerifyReport {
    pub provider: String,
    pub upstream_users: u64,
    pub local: UserCounts,
    pub missing_locally: Sample<String>,
    pub only_local: Sample<String>,
    /// Users whose fields differ, with a count per field.
    pub differences: Sample<Difference>,
    pub differing_users: u64,
    pub by_field: BTreeMap<&'static str, u64>,
    /// Upstream records that could not be read (no id, …).
    pub unreadable: Sample<String>,
    pub clean: bool,
}

impl VerifyReport {
    pub fn print(&self) {
        println!(
            "{}: {} users upstream; locally {} ({})",
            self.provider,
            self.upstream_users,
            self.local.total,
            self.local
                .by_state
                .iter()
                .map(|(s, n)| format!("{s} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!("missing locally: {}", self.missing_locally.count);
        for id in &self.missing_locally.sample {
            println!("  {id}");
        }
        println!("only local: {}", self.only_local.count);
        for id in &self.only_local.sample {
            println!("  {id}");
        }
        println!(
            "users with differing fields: {}{}",
            self.differing_users,
            if self.by_field.is_empty() {
                String::new()
            } else {
                format!(
                    " ({})",
                    self.by_field
                        .iter()
                        .map(|(f, n)| format!("{f} {n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
        for d in &self.differences.sample {
            println!(
                "  {} {}: upstream {} local {}",
                d.id, d.field, d.upstream, d.local
            );
        }
        if self.unreadable.count > 0 {
            println!("unreadable upstream records: {}", self.unreadable.count);
        }
        println!("{}", if self.clean { "clean" } else { "NOT clean" });
    }
}

#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    pub max_rate: Option<f64>,
    pub concurrency: Option<usize>,
    pub quiet: bool,
    pub poll_interval: Option<Duration>,
}

pub async fn run(
    db: Arc<dyn Database>,
    settings: &Settings,
    opts: &VerifyOptions,
) -> anyhow::Result<VerifyReport> {
    let upstream = settings
        .upstream
        .as_ref()
        .context("verify compares with the upstream: configure [upstream] first")?;
    let client = Arc::new(ManagementClient::new(
        upstream,
        opts.max_rate,
        opts.concurrency,
    )?);
    let mut report = VerifyReport {
        provider: client.provider.clone(),
        ..VerifyReport::default()
    };
    // Upstream ids seen, as 64-bit fingerprints, for the only-local scan.
    let hasher = RandomState::new();
    let mut seen: HashSet<u64> = HashSet::new();
    let mut progress = Progress::new("verify", None, opts.quiet);
    let poll = opts.poll_interval.unwrap_or(client.poll_interval());
    // The walk's callback is synchronous and the store is not: pages go
    // through a channel and are compared as they arrive.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<Record>>();
    let walking = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut unreadable = Vec::new();
            let result = walk(&client, poll, |items| {
                let mut records = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        Ok(r) => records.push(r),
                        Err(e) => unreadable.push(e.reason),
                    }
                }
                let _ = tx.send(records);
            })
            .await;
            (result, unreadable)
        })
    };
    let fields = crate::upstream::management::mapping::compared_fields(&client.mgmt);
    while let Some(records) = rx.recv().await {
        compare(&*db, &records, &fields, &mut report, &hasher, &mut seen).await?;
        progress.page(records.len() as u64, &Counters::default());
    }
    let (result, unreadable) = walking.await?;
    result?;
    progress.finish();
    for reason in unreadable {
        report.unreadable.push(reason);
    }
    // Users who came from this upstream but that it no longer lists.
    let mut after: Option<String> = None;
    loop {
        let ids = db
            .upstream_user_ids(&client.provider, after.as_deref(), 1000)
            .await?;
        let Some(last) = ids.last().cloned() else {
            break;
        };
        for id in ids {
            if !seen.contains(&hasher.hash_one(&id)) {
                report.only_local.push(id);
            }
        }
        after = Some(last);
    }
    report.local = db.user_counts(crate::store::now()).await?;
    report.clean = report.missing_locally.count == 0
        && report.only_local.count == 0
        && report.differing_users == 0
        && report.unreadable.count == 0;
    Ok(report)
}

async fn compare(
    db: &dyn Database,
    records: &[Record],
    fields: &[&'static str],
    report: &mut VerifyReport,
    hasher: &RandomState,
    seen: &mut HashSet<u64>,
) -> anyhow::Result<()> {
    let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
    let local = db.local_records(&ids).await?;
    for r in records {
        report.upstream_users += 1;
        seen.insert(hasher.hash_one(&r.id));
        let Some(l) = local.get(&r.id) else {
            report.missing_locally.push(r.id.clone());
            continue;
        };
        // A profile field the upstream's record leaves empty says nothing
        // about it, as in a login: the local value (filled by a login whose
        // ID token carried it, Okta's `name` beside a directory entry
        // without `displayName`) is no difference.
        let fields: Vec<&'static str> = r
            .diff_in(&l.record, fields)
            .into_iter()
            .filter(|f| !(FILLED_BY_LOGIN.contains(f) && r.field(f).is_null()))
            .collect();
        if !fields.is_empty() {
            report.differing_users += 1;
        }
        for field in fields {
            *report.by_field.entry(field).or_default() += 1;
            report.differences.push(Difference {
                id: r.id.clone(),
                field,
                upstream: r.field(field),
                local: l.record.field(field),
            });
        }
    }
    Ok(())
}
