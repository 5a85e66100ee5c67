//! Resident memory of `switchyard serve` on its embedded default: idle
//! after start, after 10,000 token grants, and once the argon2 buffers have
//! idled out. Target: idle RSS ≤ 30 MiB after start.
//!
//! The real binary, as an operator runs it with no configuration file: in a
//! fresh temporary directory (the default `sqlite://switchyard.db` lands
//! there), the in-process session store, `SWITCHYARD_LISTEN` and
//! `SWITCHYARD_ISSUER` set to a free loopback port. A client and a user are
//! provisioned first with the CLI (`switchyard clients add`, `switchyard
//! users add`), as the start-up banner suggests. Then:
//!
//! 1. start, wait until `GET /healthz` answers, let it settle, read the
//!    memory: the idle figure the target is about;
//! 2. a password grant for each of four rotation chains, one after the
//!    other (argon2id verifications, so one hashing buffer is made), then
//!    10,000 refresh-token grants on those chains (each presents the
//!    refresh token the previous grant returned), and read the memory again;
//! 3. wait for the hashing buffer to be let go (`password::IDLE_RELEASE`)
//!    and read it a third time.
//!
//! Each reading is VmRSS, RssAnon and RssFile from /proc/PID/status and
//! AnonHugePages from /proc/PID/smaps_rollup (Linux), and the thread count.
//!
//! Run with `cargo bench --bench footprint` (it builds the release binary
//! it measures). `SWITCHYARD_BENCH_GRANTS` sets the number of refresh
//! grants (default 10,000); `SWITCHYARD_BENCH_NO_RELEASE=1` skips step 3,
//! which waits up to a minute. The same figures by hand:
//!
//! ```text
//! cd "$(mktemp -d)"
//! switchyard serve &
//! curl -s http://127.0.0.1:8080/healthz; sleep 3
//! grep -E 'VmRSS|RssAnon|RssFile|Threads' /proc/$!/status
//! grep AnonHugePages /proc/$!/smaps_rollup
//! ```
//!
//! The exit status is non-zero when the server fails to start or a grant
//! fails; a missed target is reported, not turned into a failure.

use std::io::Write as _;
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde::Deserialize;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");
const CLIENT_ID: &str = "footprint";
const SECRET: &str = "footprint-client-secret-0123456789abcdef";
const EMAIL: &str = "alice@example.com";
const PASSWORD: &str = "a long password for the footprint bench";
const TARGET_MIB: f64 = 30.0;
/// Rotation chains the refresh grants run on at once.
const CHAINS: usize = 4;
/// How long the server is left alone before a reading: allocators give
/// freed memory back after a delay (mimalloc's purge delay is 1 s).
const SETTLE: Duration = Duration::from_secs(3);
/// The longest wait for the hashing buffer to go: it is let go after
/// 30 s unused, checked every 30 s, so at most 60 s after the last hash.
const RELEASE_WAIT: Duration = Duration::from_secs(75);

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("footprint bench: the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("footprint bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let grants: usize = match std::env::var("SWITCHYARD_BENCH_GRANTS") {
        Ok(v) => v
            .parse()
            .with_context(|| format!("SWITCHYARD_BENCH_GRANTS={v:?}"))?,
        Err(_) => 10_000,
    };
    let release = std::env::var_os("SWITCHYARD_BENCH_NO_RELEASE").is_none();
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let base = format!("http://127.0.0.1:{port}");
    provision(dir.path(), port)?;

    let mut server = Server(
        command(dir.path(), port)
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting switchyard serve")?,
    );
    let pid = server.0.id();
    let http = reqwest::Client::new();
    wait_for_health(&http, &base, &mut server).await?;
    tokio::time::sleep(SETTLE).await;
    let idle = Memory::of(pid)?;

    let started = Instant::now();
    let tokens = password_grants(&http, &base).await?;
    let spent = refresh_grants(&base, tokens, grants).await?;
    let took = started.elapsed();
    tokio::time::sleep(SETTLE).await;
    let after = Memory::of(pid)?;

    let released = if release {
        let since = Instant::now();
        let mut now = Memory::of(pid)?;
        // Until the anonymous memory is back within 4 MiB of idle, or the
        // longest wait is over.
        while now.rss_anon > idle.rss_anon + 4 * 1024 && since.elapsed() < RELEASE_WAIT {
            tokio::time::sleep(Duration::from_secs(1)).await;
            now = Memory::of(pid)?;
        }
        Some((now, since.elapsed()))
    } else {
        None
    };

    println!(
        "footprint: switchyard serve, embedded default (SQLite file, in-process sessions), {BIN}"
    );
    println!("  {:<44} {}", "", Memory::HEADER);
    println!("  {:<44} {}", "idle after start", idle.row());
    println!(
        "  {:<44} {}",
        format!("after {CHAINS} password + {spent} refresh grants"),
        after.row()
    );
    if let Some((memory, waited)) = &released {
        println!(
            "  {:<44} {}",
            format!("after {:.0} s idle", waited.as_secs_f64()),
            memory.row()
        );
    }
    println!(
        "  grants: {spent} in {:.1} s ({:.0}/s on {CHAINS} chains)",
        took.as_secs_f64(),
        spent as f64 / took.as_secs_f64()
    );
    let idle_mib = mib(idle.vm_rss);
    println!(
        "summary: idle RSS after start {idle_mib:.1} MiB (target ≤ {TARGET_MIB:.0} MiB: {}); \
         after the grants {:.1} MiB{}",
        if idle_mib <= TARGET_MIB {
            "met"
        } else {
            "MISSED"
        },
        mib(after.vm_rss),
        released
            .as_ref()
            .map(|(m, w)| format!("; {:.0} s later {:.1} MiB", w.as_secs_f64(), mib(m.vm_rss)))
            .unwrap_or_default(),
    );
    Ok(())
}

/// The binary, run in `dir` with no configuration file and the port set
/// through the environment (`SWITCHYARD_*` overrides the embedded default).
fn command(dir: &Path, port: u16) -> Command {
    let mut command = Command::new(BIN);
    command
        .current_dir(dir)
        .env_remove("SWITCHYARD_CONFIG")
        .env("SWITCHYARD_LISTEN", format!("127.0.0.1:{port}"))
        .env("SWITCHYARD_ISSUER", format!("http://127.0.0.1:{port}/"));
    command
}

/// A client allowed the password and refresh grants, and a user, through
/// the CLI; secrets on standard input, as the CLI's help recommends.
fn provision(dir: &Path, port: u16) -> anyhow::Result<()> {
    let with_stdin = |args: &[&str], input: &str| -> anyhow::Result<()> {
        let mut child = command(dir, port)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("switchyard {}", args.join(" ")))?;
        child
            .stdin
            .take()
            .context("the CLI's standard input")?
            .write_all(format!("{input}\n").as_bytes())?;
        let out = child.wait_with_output()?;
        ensure!(
            out.status.success(),
            "switchyard {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    with_stdin(
        &[
            "clients",
            "add",
            "--id",
            CLIENT_ID,
            "--secret-stdin",
            "--redirect-uri",
            "http://127.0.0.1:3000/callback",
            "--grant-type",
            "password",
            "--grant-type",
            "refresh_token",
        ],
        SECRET,
    )?;
    with_stdin(
        &["users", "add", "--email", EMAIL, "--password-stdin"],
        PASSWORD,
    )
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_for_health(
    http: &reqwest::Client,
    base: &str,
    server: &mut Server,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http.get(format!("{base}/healthz")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if let Some(status) = server.0.try_wait()? {
            bail!("switchyard serve exited before it answered: {status}");
        }
        ensure!(Instant::now() < deadline, "switchyard serve never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[derive(Deserialize)]
struct Tokens {
    refresh_token: String,
}

async fn grant(
    http: &reqwest::Client,
    base: &str,
    form: &[(&str, &str)],
) -> anyhow::Result<String> {
    let response = http
        .post(format!("{base}/oauth/token"))
        .basic_auth(CLIENT_ID, Some(SECRET))
        .form(form)
        .send()
        .await?;
    let status = response.status();
    let body = response.bytes().await?;
    ensure!(
        status.is_success(),
        "{} answered {status}: {}",
        form[0].1,
        String::from_utf8_lossy(&body)
    );
    Ok(serde_json::from_slice::<Tokens>(&body)
        .context("no refresh token in the response")?
        .refresh_token)
}

/// One password grant per chain, one after the other (so one hashing
/// buffer serves them all): each chain is a refresh family of its own.
async fn password_grants(http: &reqwest::Client, base: &str) -> anyhow::Result<Vec<String>> {
    let mut tokens = Vec::new();
    for _ in 0..CHAINS {
        tokens.push(
            grant(
                http,
                base,
                &[
                    ("grant_type", "password"),
                    ("username", EMAIL),
                    ("password", PASSWORD),
                    ("scope", "openid offline_access"),
                ],
            )
            .await?,
        );
    }
    Ok(tokens)
}

/// `total` refresh grants over the chains; returns how many were made.
async fn refresh_grants(base: &str, tokens: Vec<String>, total: usize) -> anyhow::Result<usize> {
    let per_chain = total.div_ceil(tokens.len().max(1));
    let chains: Vec<_> = tokens
        .into_iter()
        .map(|mut token| {
            let base = base.to_string();
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                for _ in 0..per_chain {
                    token = grant(
                        &http,
                        &base,
                        &[("grant_type", "refresh_token"), ("refresh_token", &token)],
                    )
                    .await?;
                }
                anyhow::Ok(per_chain)
            })
        })
        .collect();
    let mut done = 0;
    for chain in chains {
        done += chain.await??;
    }
    Ok(done)
}

/// One reading, in KiB.
struct Memory {
    vm_rss: u64,
    rss_anon: u64,
    rss_file: u64,
    anon_huge: u64,
    threads: u64,
}

impl Memory {
    const HEADER: &str = "   VmRSS  RssAnon  RssFile  AnonHuge  threads (MiB)";

    fn of(pid: u32) -> anyhow::Result<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .context("reading /proc/PID/status (Linux only)")?;
        let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
            .context("reading /proc/PID/smaps_rollup")?;
        let field = |text: &str, name: &str| -> anyhow::Result<u64> {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .with_context(|| format!("no {name} in /proc/{pid}"))
        };
        Ok(Self {
            vm_rss: field(&status, "VmRSS")?,
            rss_anon: field(&status, "RssAnon")?,
            rss_file: field(&status, "RssFile")?,
            anon_huge: field(&rollup, "AnonHugePages")?,
            threads: field(&status, "Threads")?,
        })
    }

    fn row(&self) -> String {
        format!(
            "{:>8.1} {:>8.1} {:>8.1} {:>9.1} {:>8}",
            mib(self.vm_rss),
            mib(self.rss_anon),
            mib(self.rss_file),
            mib(self.anon_huge),
            self.threads
        )
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
