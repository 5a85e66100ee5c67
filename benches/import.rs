//! `switchyard import` of an Auth0 export (NDJSON) into PostgreSQL, against
//! the approach operators write by hand (one INSERT awaited per user), in
//! one run.
//!
//! - Import: 100,000 then 1,000,000 users generated into a file (streamed to
//!   disk, never held in memory), each imported into a fresh schema through
//!   the same code as the CLI (`jobs::import::run`: parse on a blocking
//!   thread, 1,000-record batches, one transaction a batch with the job's
//!   position). Reported: users a second, and the process's peak RSS
//!   (`VmHWM`) after each size, so a flat memory profile shows as two close
//!   numbers.
//! - Baseline: the first 10,000 users of the same file, each parsed and
//!   created with one awaited `create_user` (its own transaction), as a
//!   seed script does.
//!
//! Run with `cargo bench --bench import`. PostgreSQL comes from
//! `SWITCHYARD_BENCH_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`); each series gets its own
//! schema, dropped at the end. `SWITCHYARD_BENCH_IMPORT_USERS` replaces the
//! large size (default 1,000,000).

use std::io::{BufRead, Write};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use serde_json::json;
use switchyard::jobs::import::{ImportOptions, run};
use switchyard::store::sql::SqlStore;
use switchyard::store::{Database, NewUser, UserStore};
use switchyard_kit::cpu;

// The allocator of the `switchyard` binary (src/main.rs), so the figures are
// the CLI's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kib| kib / 1024.0)
        .unwrap_or(f64::NAN)
}

/// An Auth0 export line, shaped as the export job writes it.
fn user_line(i: usize) -> String {
    json!({
        "user_id": format!("auth0|{i:024x}"),
        "email": format!("user{i}@example.com"),
        "email_verified": !i.is_multiple_of(3),
        "name": format!("User {i}"),
        "given_name": "User",
        "family_name": format!("{i}"),
        "nickname": format!("user{i}"),
        "picture": format!("https://cdn.example.com/u/{i}.png"),
        "user_metadata": {"locale": "en", "theme": "dark"},
        "app_metadata": {"roles": ["reader"], "plan": if i.is_multiple_of(10) { "pro" } else { "free" }},
        "identities": [{"provider": "auth0", "user_id": format!("{i:024x}"),
                        "connection": "Username-Password-Authentication", "isSocial": false}],
        "created_at": "2023-05-01T10:00:00.000Z",
        "updated_at": "2024-02-01T10:00:00.000Z"
    })
    .to_string()
}

fn write_export(path: &std::path::Path, n: usize) -> anyhow::Result<u64> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for i in 0..n {
        out.write_all(user_line(i).as_bytes())?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(std::fs::metadata(path)?.len())
}

/// A fresh schema on the bench database; returns its URL.
async fn schema(base: &str, name: &str) -> anyhow::Result<String> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(base)
        .await
        .context("PostgreSQL must be reachable for this benchmark")?;
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
        .execute(&pool)
        .await?;
    sqlx::query(&format!("CREATE SCHEMA {name}"))
        .execute(&pool)
        .await?;
    pool.close().await;
    let sep = if base.contains('?') { '&' } else { '?' };
    Ok(format!("{base}{sep}options=-c%20search_path%3D{name}"))
}

async fn drop_schema(base: &str, name: &str) {
    if let Ok(pool) = sqlx::AnyPool::connect(base).await {
        let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
            .execute(&pool)
            .await;
        pool.close().await;
    }
}

async fn import(base: &str, name: &str, path: &str, expect: usize) -> anyhow::Result<f64> {
    let url = schema(base, name).await?;
    let db: Arc<dyn Database> = Arc::new(SqlStore::connect(&url).await?);
    let started = Instant::now();
    let cpu = Cpu::now();
    // A clone keeps the store's connections open until the CPU is read:
    // a PostgreSQL backend that has exited is no longer in `/proc`.
    let report = run(
        db.clone(),
        &ImportOptions {
            path: path.into(),
            format: None,
            provider: None,
            dry_run: false,
            strict: false,
            resume: false,
            quiet: true,
            batch: switchyard::jobs::import::BATCH,
            queued: None,
        },
    )
    .await?;
    let took = started.elapsed().as_secs_f64();
    cpu.print_per_user(expect);
    drop(db);
    anyhow::ensure!(
        report.counters.created as usize == expect && report.counters.failed == 0,
        "import created {} of {expect} (failed {})",
        report.counters.created,
        report.counters.failed
    );
    drop_schema(base, name).await;
    Ok(expect as f64 / took)
}

/// CPU time of this process (the importer) and of PostgreSQL's processes,
/// so a change's effect shows per user even when other work shares the
/// cores and blurs the wall-clock rate.
struct Cpu {
    client: Option<std::time::Duration>,
    postgres: Option<std::time::Duration>,
    machine: Option<std::time::Duration>,
}

impl Cpu {
    fn now() -> Self {
        Cpu {
            client: cpu::process_cpu(),
            postgres: cpu::processes_cpu("postgres"),
            machine: cpu::machine_cpu(),
        }
    }

    fn print_per_user(&self, users: usize) {
        let end = Cpu::now();
        let per_user = |a: Option<std::time::Duration>, b: Option<std::time::Duration>| match (a, b)
        {
            (Some(a), Some(b)) => format!("{:.1} µs", (b - a).as_secs_f64() * 1e6 / users as f64),
            _ => "n/a".into(),
        };
        println!(
            "  CPU per user: importer {}, PostgreSQL {}, whole machine {}",
            per_user(self.client, end.client),
            per_user(self.postgres, end.postgres),
            per_user(self.machine, end.machine),
        );
    }
}

/// The hand-written loop: parse a line, create the user, await, repeat.
async fn baseline(base: &str, path: &str, n: usize) -> anyhow::Result<f64> {
    let name = "bench_import_baseline";
    let url = schema(base, name).await?;
    let db = SqlStore::connect(&url).await?;
    let file = std::io::BufReader::new(std::fs::File::open(path)?);
    let started = Instant::now();
    for line in file.lines().take(n) {
        let raw: serde_json::Value = serde_json::from_str(&line?)?;
        let text = |k: &str| raw[k].as_str().map(String::from);
        db.create_user(
            &NewUser {
                id: text("user_id"),
                profile: switchyard::store::Profile {
                    email: text("email"),
                    email_verified: raw["email_verified"].as_bool().unwrap_or(false),
                    username: None,
                    name: text("name"),
                    given_name: text("given_name"),
                    family_name: text("family_name"),
                    ..Default::default()
                },
            },
            None,
        )
        .await?;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    drop_schema(base, name).await;
    Ok(rate)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let base = std::env::var("SWITCHYARD_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let large: usize = std::env::var("SWITCHYARD_BENCH_IMPORT_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir()?;
    println!("import benchmark: Auth0 export NDJSON → PostgreSQL ({base})");
    println!("peak RSS before any import: {:.1} MiB", peak_rss_mib());

    let small_path = dir.path().join("users-100k.ndjson");
    let bytes = write_export(&small_path, 100_000)?;
    let small = small_path.to_string_lossy().to_string();
    let rate_100k = import(&base, "bench_import_100k", &small, 100_000).await?;
    let rss_100k = peak_rss_mib();
    println!(
        "import 100,000 users ({:.0} MB): {rate_100k:.0} users/s, peak RSS {rss_100k:.1} MiB",
        bytes as f64 / 1e6
    );

    let large_path = dir.path().join("users-large.ndjson");
    let bytes = write_export(&large_path, large)?;
    let big = large_path.to_string_lossy().to_string();
    let rate_large = import(&base, "bench_import_large", &big, large).await?;
    let rss_large = peak_rss_mib();
    println!(
        "import {large} users ({:.0} MB): {rate_large:.0} users/s, peak RSS {rss_large:.1} MiB",
        bytes as f64 / 1e6
    );

    let seed = baseline(&base, &small, 10_000).await?;
    println!("baseline, one awaited create_user per user (10,000 users): {seed:.0} users/s");
    println!();
    println!(
        "summary: {rate_large:.0} users/s (target ≥ 50,000: {}), {:.1}× the baseline (target ≥ 50×: {}), \
         peak RSS {rss_100k:.1} MiB at 100k and {rss_large:.1} MiB at {large}",
        if rate_large >= 50_000.0 {
            "met"
        } else {
            "missed"
        },
        rate_large / seed,
        if rate_large / seed >= 50.0 {
            "met"
        } else {
            "missed"
        },
    );
    Ok(())
}
