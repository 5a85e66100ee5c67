//! The `switchyard` command line.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use crate::config::{Settings, Source};
use crate::crypto::hash_secret;
use crate::oidc::redirect_uri;
use crate::password::{ARGON2ID, Passwords};
use crate::startup::{Application, shutdown_signal};
use crate::state::{key_algorithms, key_sealer, open_database};
use crate::store::{
    Client, ClientSource, Database, GrantType, NewUser, StoreError, TokenMode, User,
    validate_client_id, validate_client_secret,
};
use crate::tokens::keys::{Alg, KeyRing};

#[derive(Debug, Parser)]
#[command(
    name = "switchyard",
    version,
    about = "An OpenID Connect provider that moves users off their old identity provider one login at a time"
)]
pub struct Cli {
    /// Configuration file (TOML). Without one, the embedded defaults apply.
    // The value is hidden from --help: help output lands in bug reports and
    // chat, and the path can say more about a deployment than it should.
    #[arg(long, global = true, env = "SWITCHYARD_CONFIG", hide_env_values = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the provider.
    Serve,
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Manage local users.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Manage OAuth clients (applications).
    #[command(subcommand)]
    Clients(ClientsCommand),
    /// Manage signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Who goes where: phase, pins, and why a user takes a route.
    #[command(subcommand)]
    Cutover(CutoverCommand),
    /// Copy every upstream user through its Management API (resumable).
    Backfill(BackfillArgs),
    /// Import users from an export file (resumable, streamed).
    Import(ImportArgs),
    /// Compare the upstream and the local users, record by record.
    Verify(VerifyArgs),
    /// Users by state, recent migrations, the outbox, jobs and their progress.
    Status(StatusArgs),
    /// The writes owed to the upstream (`mark_migrated`): list, retry, discard.
    #[command(subcommand)]
    Outbox(OutboxCommand),
    /// Reports for the end of the migration.
    #[command(subcommand)]
    Report(ReportCommand),
    /// Invite the users who never signed in here, before the upstream goes away.
    #[command(subcommand)]
    Campaign(CampaignCommand),
}

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// The dormant users: state `pending` (known from a backfill or an
    /// import, never signed in here), who would be locked out when the
    /// upstream is switched off. One row each: id, email, the upstream's
    /// last login when its record had one, created, and when the campaign
    /// invited them; then the users by state (table, json).
    Dormant(DormantArgs),
}

#[derive(Debug, Args)]
pub struct DormantArgs {
    /// Keep only users whose last login at the upstream is before DATE, and
    /// users whose last login is unknown. The last login is the one the
    /// backfill or import read from the upstream's record (Auth0
    /// `last_login`, Okta `lastLogin`); it is unknown when the record had
    /// none, and always for Keycloak and Cognito, whose records carry none.
    /// DATE is YYYY-MM-DD (midnight UTC) or an RFC 3339 time; "before" is
    /// strict.
    #[arg(long, value_name = "DATE")]
    pub since: Option<String>,
    /// How to write the report.
    #[arg(long, value_enum, default_value_t = crate::jobs::report::ReportFormat::Table)]
    pub format: crate::jobs::report::ReportFormat,
    /// Write the report to this file instead of standard output.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum CampaignCommand {
    /// Queue one invitation email (a link to set a password here) for each
    /// pending user who is not blocked and has an email, never twice to one
    /// user within the cooldown. A resumable job; `switchyard status` shows it.
    Reset(CampaignArgs),
}

#[derive(Debug, Args)]
pub struct CampaignArgs {
    /// Count who would be invited and skipped; write nothing.
    #[arg(long, conflicts_with = "resume")]
    pub dry_run: bool,
    /// Messages queued a second [default: 10; on --resume, the job's own].
    #[arg(long)]
    pub rate: Option<f64>,
    /// Queue at most this many messages in this run (`--resume` continues).
    #[arg(long)]
    pub limit: Option<u64>,
    /// Continue the unfinished campaign (stopped, crashed or limited).
    #[arg(long)]
    pub resume: bool,
    /// Never invite a user again within this long of their last invitation,
    /// whichever campaign sent it: `7d`, `12h`, `30m`, or seconds [default: 7d;
    /// on --resume, the job's own].
    #[arg(long, value_parser = crate::jobs::campaign::parse_duration)]
    pub cooldown: Option<std::time::Duration>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// Rows newest first, with their attempts and last error.
    List {
        /// Only failed rows.
        #[arg(long, conflicts_with = "pending")]
        failed: bool,
        /// Only pending rows.
        #[arg(long)]
        pending: bool,
        /// How many rows to show.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Print the rows as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make a row (or every failed row) pending again, due now, with its
    /// attempts reset: a running `serve` delivers it.
    Retry {
        /// The row's id (`outbox list`).
        #[arg(required_unless_present = "all_failed", conflicts_with = "all_failed")]
        id: Option<i64>,
        /// Every failed row.
        #[arg(long)]
        all_failed: bool,
    },
    /// Delete a row that is not done: the write is given up for good.
    Discard {
        /// The row's id (`outbox list`).
        id: i64,
    },
}

#[derive(Debug, Args)]
pub struct BackfillArgs {
    /// Continue the unfinished backfill job (after a crash, or from a
    /// second instance to share the work).
    #[arg(long)]
    pub resume: bool,
    /// Report what would be created, updated and skipped; write nothing.
    #[arg(long, conflicts_with = "resume")]
    pub dry_run: bool,
    /// Only users updated since this RFC 3339 time (Auth0, Okta).
    #[arg(long)]
    pub since: Option<String>,
    /// Workers in this process (PostgreSQL; SQLite runs one).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Never more than this many requests a second.
    #[arg(long)]
    pub max_rate: Option<f64>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The file (`.gz` is read gunzipped).
    pub file: String,
    /// Its format; guessed from the name and first bytes when absent.
    #[arg(long, value_enum)]
    pub format: Option<crate::jobs::files::Format>,
    /// Record the users as coming from this provider (default: the
    /// format's, else `[upstream] provider`).
    #[arg(long)]
    pub provider: Option<String>,
    /// Report what would be created, updated and skipped; write nothing.
    #[arg(long, conflicts_with = "resume")]
    pub dry_run: bool,
    /// Stop at the first bad record instead of reporting it and going on.
    #[arg(long)]
    pub strict: bool,
    /// Continue an interrupted import of the same file.
    #[arg(long)]
    pub resume: bool,
    /// Records per transaction (a resume restarts at a batch boundary).
    #[arg(long, default_value_t = crate::jobs::import::BATCH)]
    pub batch: usize,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Also write the full report as JSON to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Never more than this many requests a second to the upstream.
    #[arg(long)]
    pub max_rate: Option<f64>,
    /// Print the report as JSON rather than a summary.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// How many recent jobs to show.
    #[arg(long, default_value_t = 5)]
    pub jobs: u32,
    /// Show this job with its issues.
    #[arg(long)]
    pub job: Option<String>,
    /// Print the status as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum CutoverCommand {
    /// Print the rules in force.
    Show,
    /// Change the phase for every instance (within seconds, no restart).
    SetPhase {
        /// The phase every login follows from now on.
        #[arg(value_enum)]
        phase: crate::config::Phase,
    },
    /// Pin one user to a track: --upstream rolls them back, --local forces local.
    Pin {
        /// Id, email or username.
        user: String,
        /// Send the user's next logins to the upstream (rollback).
        #[arg(long, conflicts_with = "local", required_unless_present = "local")]
        upstream: bool,
        /// Keep the user local whatever the phase.
        #[arg(long)]
        local: bool,
    },
    /// Remove a user's pin.
    Unpin {
        /// Id, email or username.
        user: String,
    },
    /// Print the route a login would take, and why.
    Explain {
        /// Id, email or username (need not exist yet).
        user: String,
        /// The client the login is for (per-client overrides).
        #[arg(long)]
        client: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Report every problem in the configuration, with the key that holds it.
    Check {
        /// Also connect to the database and the session store, and report
        /// why a connection fails.
        #[arg(long)]
        connect: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Add a local user.
    Add {
        /// Email address (the usual login identifier).
        #[arg(long)]
        email: Option<String>,
        /// Username, for users who log in without an email.
        #[arg(long)]
        username: Option<String>,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// Mark the email as verified.
        #[arg(long)]
        email_verified: bool,
        /// Read the password from standard input (one line).
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users.
    List {
        /// How many to show.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Show users after this id (for paging).
        #[arg(long)]
        after: Option<String>,
    },
    /// Show one user, by id, email or username.
    Show {
        /// Id, email or username.
        user: String,
    },
    /// Set a user's password, read from standard input.
    SetPassword {
        /// Id, email or username.
        user: String,
        /// Read the password from standard input (one line); required.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Delete a user and their credentials.
    Delete {
        /// Id, email or username.
        user: String,
    },
    /// Change a user's profile here. A change made in Switchyard is the
    /// user's own: later backfills report it as a conflict rather than
    /// overwrite it.
    Update {
        /// Id, email or username.
        user: String,
        /// New email address.
        #[arg(long)]
        email: Option<String>,
        /// Whether the email is verified.
        #[arg(long)]
        email_verified: Option<bool>,
        /// New display name.
        #[arg(long)]
        name: Option<String>,
        /// New given (first) name.
        #[arg(long)]
        given_name: Option<String>,
        /// New family (last) name.
        #[arg(long)]
        family_name: Option<String>,
        /// New nickname.
        #[arg(long)]
        nickname: Option<String>,
    },
    /// Block a user: no login, here or (with write_back) at the upstream.
    Block {
        /// Id, email or username.
        user: String,
    },
    /// Unblock a user.
    Unblock {
        /// Id, email or username.
        user: String,
    },
    /// Give a user the admin role: they may sign in to the dashboard (/admin).
    GrantAdmin {
        /// Id, email or username.
        user: String,
    },
    /// Take the admin role away; their open dashboard sessions end at their next request.
    RevokeAdmin {
        /// Id, email or username.
        user: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClientsCommand {
    /// Register a client. Without --secret or --public a secret is generated and printed once.
    Add(ClientArgs),
    /// List clients.
    List,
    /// Show one client.
    Show {
        /// The client id.
        client_id: String,
    },
    /// Delete a client.
    Delete {
        /// The client id.
        client_id: String,
    },
}

#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The client id applications send.
    #[arg(long)]
    pub id: String,
    /// The client secret (at least 32 characters). Prefer --secret-stdin: arguments show up in process lists.
    #[arg(long, conflicts_with_all = ["public", "secret_stdin"])]
    pub secret: Option<String>,
    /// Read the client secret from standard input.
    #[arg(long, conflicts_with = "public")]
    pub secret_stdin: bool,
    /// A public client (single-page or native app): no secret, PKCE required.
    #[arg(long)]
    pub public: bool,
    /// A registered redirect URI, matched exactly; repeat for several (required unless the
    /// only grant type is client_credentials).
    #[arg(long = "redirect-uri")]
    pub redirect_uris: Vec<String>,
    /// A registered post-logout redirect URI; repeat for several.
    #[arg(long = "post-logout-redirect-uri")]
    pub post_logout_redirect_uris: Vec<String>,
    /// An origin the application's browser code runs on (`https://app.example.com`), for
    /// response_mode=web_message and token-endpoint CORS; repeat for several.
    #[arg(long = "web-origin")]
    pub web_origins: Vec<String>,
    /// An allowed grant type; repeat for several [default: authorization_code, refresh_token].
    #[arg(long = "grant-type", value_enum)]
    pub grant_types: Vec<GrantType>,
    /// A scope beyond the OpenID ones the client may be granted (`switchyard:admin`, or the
    /// read-only `switchyard:admin:read`, for the client credentials grant); repeat for several.
    #[arg(long = "scope")]
    pub scopes: Vec<String>,
    /// The API the client's `--scope`s are for, as Auth0 names a client grant's API: the
    /// Auth0-compatible Management API, `https://DOMAIN/api/v2/` (DOMAIN the issuer's host).
    /// Each `--scope` must then be one of its scopes (read:users, update:users, create:users,
    /// delete:users, create:user_tickets).
    #[arg(long)]
    pub api: Option<String>,
    /// Display name, shown on the login page.
    #[arg(long)]
    pub name: Option<String>,
    /// Who signs the access tokens the client receives: gateway (Switchyard) or upstream
    /// (the upstream's own, for APIs that still trust it).
    #[arg(long, value_enum, default_value_t = TokenMode::Gateway)]
    pub token_mode: TokenMode,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List signing keys and their states.
    List,
    /// Promote the next key; the current one stays published until its tokens expire.
    Rotate {
        /// Algorithm to rotate (default: the configured signing algorithm).
        #[arg(long, value_enum)]
        alg: Option<Alg>,
    },
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    // `config check` reads past unreadable keys to report them all; every
    // other command needs settings that read cleanly.
    if let Command::Config(ConfigCommand::Check { connect }) = cli.command {
        return config_check(cli.config.as_deref(), connect).await;
    }
    let (settings, source) = Settings::load(cli.config.as_deref())?;
    match cli.command {
        Command::Serve => serve(settings, source).await,
        Command::Config(ConfigCommand::Check { connect }) => {
            config_check(cli.config.as_deref(), connect).await
        }
        Command::Users(cmd) => users(&settings, cmd).await,
        Command::Clients(cmd) => clients(&settings, cmd).await,
        Command::Keys(cmd) => keys(&settings, cmd).await,
        Command::Cutover(cmd) => cutover(&settings, cmd).await,
        Command::Backfill(args) => backfill(&settings, args).await,
        Command::Import(args) => import(&settings, args).await,
        Command::Verify(args) => verify(&settings, args).await,
        Command::Status(args) => status(&settings, args).await,
        Command::Outbox(cmd) => outbox(&settings, cmd).await,
        Command::Report(ReportCommand::Dormant(args)) => report_dormant(&settings, args).await,
        Command::Campaign(CampaignCommand::Reset(args)) => campaign_reset(&settings, args).await,
    }
}

async fn backfill(settings: &Settings, args: BackfillArgs) -> anyhow::Result<()> {
    let db = open_database(settings).await?;
    let opts = crate::jobs::backfill::BackfillOptions {
        resume: args.resume,
        dry_run: args.dry_run,
        since: args.since,
        concurrency: args.concurrency,
        max_rate: args.max_rate,
        quiet: args.json,
        poll_interval: None,
        queued: None,
    };
    let (report, (requests, throttled, retried)) =
        crate::jobs::backfill::run(db, settings, &opts).await?;
    if args.json {
        print_json(&serde_json::json!({
            "report": report,
            "requests": requests,
            "throttled": throttled,
            "retried": retried,
        }))?;
    } else {
        report.print();
        println!(
            "{requests} requests to the upstream, {throttled} rate-limited, {retried} retried"
        );
    }
    Ok(())
}

async fn import(settings: &Settings, args: ImportArgs) -> anyhow::Result<()> {
    let db = open_database(settings).await?;
    let opts = crate::jobs::import::ImportOptions {
        path: args.file,
        format: args.format,
        provider: args
            .provider
            .or_else(|| settings.upstream.as_ref().map(|u| u.provider.clone())),
        dry_run: args.dry_run,
        strict: args.strict,
        resume: args.resume,
        quiet: args.json,
        batch: args.batch,
        queued: None,
    };
    let report = crate::jobs::import::run(db, &opts).await?;
    if args.json {
        print_json(&report)?;
    } else {
        report.print();
    }
    // Some bad records are reported and the rest imported; a file none of
    // whose records could be read (most often one in another format) is
    // an error, whatever the report shows.
    let c = &report.counters;
    if c.failed > 0 && c.failed == c.total() {
        bail!(
            "every record failed ({}){}, none imported: the report gives each one's reason",
            c.failed,
            if report.dry_run {
                " in the dry run"
            } else {
                ""
            }
        );
    }
    Ok(())
}

async fn verify(settings: &Settings, args: VerifyArgs) -> anyhow::Result<()> {
    let db = open_database(settings).await?;
    let opts = crate::jobs::verify::VerifyOptions {
        max_rate: args.max_rate,
        quiet: args.json,
        ..Default::default()
    };
    let report = crate::jobs::verify::run(db, settings, &opts).await?;
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        print_json(&report)?;
    } else {
        report.print();
    }
    if !report.clean {
        bail!(
            "verify found {} missing locally, {} only local, {} users with differing fields",
            report.missing_locally.count,
            report.only_local.count,
            report.differing_users
        );
    }
    Ok(())
}

async fn report_dormant(settings: &Settings, args: DormantArgs) -> anyhow::Result<()> {
    let since = args
        .since
        .as_deref()
        .map(crate::jobs::report::parse_since)
        .transpose()?;
    let db = open_database(settings).await?;
    let mut out: Box<dyn std::io::Write> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    match crate::jobs::report::dormant(&*db, since, args.format, &mut *out).await {
        // The reader stopped early (`| head`): not a failure of the report.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        result => result.map(drop),
    }
}

async fn campaign_reset(settings: &Settings, args: CampaignArgs) -> anyhow::Result<()> {
    let db = open_database(settings).await?;
    let opts = crate::jobs::campaign::CampaignOptions {
        resume: args.resume,
        dry_run: args.dry_run,
        rate: args.rate,
        limit: args.limit,
        cooldown: args.cooldown,
        quiet: args.json,
        queued: None,
    };
    let report = crate::jobs::campaign::run(db, &opts).await?;
    if args.json {
        print_json(&report)?;
    } else {
        report.print();
    }
    Ok(())
}

async fn status(settings: &Settings, args: StatusArgs) -> anyhow::Result<()> {
    let db = open_database(settings).await?;
    let status = match &args.job {
        Some(job) => {
            let jobs = vec![db.job_summary(job, 1000).await?];
            crate::jobs::status::Status {
                users: db.user_counts(crate::store::now()).await?,
                outbox: db
                    .outbox_counts(crate::jobs::status::OUTBOX_FAILURES_SHOWN)
                    .await?,
                campaigns: crate::jobs::status::campaign_counters(&*db, &jobs).await?,
                jobs,
            }
        }
        None => crate::jobs::status::collect(&*db, args.jobs, 10).await?,
    };
    if args.json {
        print_json(&status)?;
    } else {
        status.print();
    }
    Ok(())
}

async fn outbox(settings: &Settings, cmd: OutboxCommand) -> anyhow::Result<()> {
    use crate::store::outbox::{OutboxState, RetryTarget};
    let db = open_database(settings).await?;
    match cmd {
        OutboxCommand::List {
            failed,
            pending,
            limit,
            json,
        } => {
            let state = match (failed, pending) {
                (true, _) => Some(OutboxState::Failed),
                (_, true) => Some(OutboxState::Pending),
                _ => None,
            };
            let rows = db.list_outbox(state, limit).await?;
            if json {
                return print_json(&rows);
            }
            if rows.is_empty() {
                println!("no outbox rows");
            }
            for r in &rows {
                println!(
                    "#{:<6} {:<8} {:<14} {} attempts {}{}",
                    r.id,
                    r.state.as_str(),
                    r.kind,
                    r.user_id,
                    r.attempts,
                    r.last_error
                        .as_deref()
                        .map(|e| format!(" — {e}"))
                        .unwrap_or_default()
                );
            }
        }
        OutboxCommand::Retry { id, all_failed } => {
            let target = match (id, all_failed) {
                (Some(id), _) => RetryTarget::One(id),
                (None, _) => RetryTarget::AllFailed,
            };
            let n = db.retry_outbox(target).await?;
            if let (Some(id), 0) = (id, n) {
                bail!("no outbox row {id} that is not done");
            }
            println!("{n} outbox row(s) pending again; a running `switchyard serve` delivers them");
        }
        OutboxCommand::Discard { id } => {
            if !db.discard_outbox(id).await? {
                bail!("no outbox row {id} that is not done");
            }
            println!("outbox row {id} discarded");
        }
    }
    Ok(())
}

async fn serve(settings: Settings, source: Source) -> anyhow::Result<()> {
    let issuer = settings.issuer.clone();
    let database = crate::state::redact_url(&settings.database_url);
    let sessions = if settings.redis_url.is_some() {
        "redis"
    } else {
        "in-process"
    };
    let app = Application::build(settings).await?;
    match source {
        Source::Defaults => {
            println!("Switchyard is running on its embedded default (no configuration file).");
            println!("  issuer:        {issuer}");
            println!("  database:      {database}");
            println!("  session store: {sessions}");
            println!();
            let me = own_command();
            println!("Add a user and a client from another terminal:");
            println!(
                "  echo 'a long password' | {me} users add --email alice@example.com --password-stdin"
            );
            println!("  {me} clients add --id web --redirect-uri http://127.0.0.1:3000/callback");
        }
        Source::File(path) => {
            println!(
                "Switchyard is running with {}; issuer {issuer}, database {database}, session store {sessions}.",
                path.display()
            );
        }
    }
    tracing::info!(%issuer, port = app.port(), "serving");
    app.run_until_stopped(shutdown_signal()).await?;
    Ok(())
}

/// The command that starts this same program again, for the hints printed at
/// start-up, so they can be pasted as they are: `cargo run --release --`
/// when the binary is a build in a cargo target directory (the README's
/// Quickstart), else the path it was started by.
fn own_command() -> String {
    if let Ok(exe) = std::env::current_exe()
        && let Some(profile) = exe.parent()
        // Cargo marks every target directory with a CACHEDIR.TAG
        // (bford.info/cachedir), wherever CARGO_TARGET_DIR puts it.
        && profile
            .parent()
            .is_some_and(|target| target.join("CACHEDIR.TAG").is_file())
    {
        match profile.file_name().and_then(|n| n.to_str()) {
            Some("release") => return "cargo run --release --".into(),
            Some("debug") => return "cargo run --".into(),
            _ => {}
        }
    }
    let program = std::env::args_os()
        .next()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_else(|| "switchyard".into());
    if program
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+:@".contains(c))
    {
        program
    } else {
        format!("'{}'", program.replace('\'', r"'\''"))
    }
}

async fn config_check(path: Option<&std::path::Path>, connect: bool) -> anyhow::Result<()> {
    use crate::config::Problem;
    use crate::state::redact_url;
    let (loaded, source) = Settings::load_all(path)?;
    let mut problems = loaded.problems(&crate::upstream::provider::facts);
    if connect && let Some(settings) = loaded.settings() {
        // Each failure with its cause; URLs without their userinfo, and no
        // error text that could carry it (sqlx and the Redis store's errors
        // name neither URL nor password).
        if let Err(e) = crate::store::sql::probe(&settings.database_url).await {
            problems.push(Problem {
                key: "database_url".into(),
                message: format!(
                    "cannot connect to {}: {e}",
                    redact_url(&settings.database_url)
                ),
            });
        }
        if let Some(url) = &settings.redis_url
            && let Err(e) =
                crate::store::redis::RedisStore::connect(url, &settings.session_prefix).await
        {
            problems.push(Problem {
                key: "redis_url".into(),
                message: format!("cannot connect to {}: {e}", redact_url(url)),
            });
        }
    }
    let from = match &source {
        Source::File(p) => p.display().to_string(),
        Source::Defaults => "the embedded defaults".into(),
    };
    // A warning, not a problem: the configuration works, but is unsafe.
    if let Some(warning) = loaded
        .settings()
        .and_then(crate::startup::key_encryption_warning)
    {
        println!("warning: {warning}");
    }
    if problems.is_empty() {
        println!("{from}: no problems");
        return Ok(());
    }
    for p in &problems {
        println!("{p}");
    }
    bail!("{} problem(s) in {from}", problems.len())
}

fn read_stdin_line(what: &str) -> anyhow::Result<String> {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .with_context(|| format!("reading the {what} from standard input"))?;
    // Only the line ending is removed: spaces are part of a password.
    let line = input
        .strip_suffix('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .unwrap_or(&input);
    if line.is_empty() {
        bail!("the {what} read from standard input is empty");
    }
    Ok(line.to_string())
}

/// Whether standard input, when it is not a terminal, has something to read
/// within a moment: a password piped to `users add` without
/// `--password-stdin` would otherwise be dropped without a word. An empty
/// pipe, /dev/null or a closed stdin have nothing; the short wait covers a
/// writer (`echo … |`) that starts after this process.
fn stdin_has_input() -> bool {
    use std::io::IsTerminal;
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return false;
    }
    #[cfg(unix)]
    {
        let mut fds = libc::pollfd {
            fd: libc::STDIN_FILENO,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, alive for the whole call.
        let ready = unsafe { libc::poll(&mut fds, 1, 200) };
        if ready <= 0 || fds.revents & libc::POLLIN == 0 {
            return false;
        }
        // Readable may also mean end of file (/dev/null): one byte tells.
        let mut byte = [0u8; 1];
        matches!(stdin.lock().read(&mut byte), Ok(n) if n > 0)
    }
    #[cfg(not(unix))]
    {
        false
    }
}

async fn find_user(db: &dyn Database, user: &str) -> anyhow::Result<User> {
    if let Some(u) = db.get_user(user).await? {
        return Ok(u);
    }
    db.find_user_by_login(user)
        .await?
        .with_context(|| format!("no user {user:?}"))
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

async fn users(settings: &Settings, cmd: UsersCommand) -> anyhow::Result<()> {
    let db = open_database(settings).await?;
    match cmd {
        UsersCommand::Add {
            email,
            username,
            name,
            email_verified,
            password_stdin,
        } => {
            if email.is_none() && username.is_none() {
                bail!("give --email, --username or both");
            }
            if let Some(e) = &email
                && (!e.contains('@') || e.len() > 320)
            {
                bail!("--email {e:?} is not an email address");
            }
            if !password_stdin && stdin_has_input() {
                bail!(
                    "standard input has data but --password-stdin was not given: pass \
                     --password-stdin to set the user's password from it (without it the user \
                     is created with no password and cannot log in)"
                );
            }
            let passwords = Passwords::new(&settings.password)?;
            let hash = if password_stdin {
                let password = read_stdin_line("password")?;
                let ids: Vec<&str> = email.iter().chain(&username).map(String::as_str).collect();
                passwords
                    .check_policy_for(&password, &ids)
                    .map_err(anyhow::Error::msg)?;
                Some(passwords.hash(password).await?)
            } else {
                None
            };
            let new = NewUser {
                profile: crate::store::Profile {
                    email,
                    username,
                    name,
                    email_verified,
                    ..Default::default()
                },
                ..NewUser::default()
            };
            let user = db
                .create_user(&new, hash.as_deref().map(|h| (h, ARGON2ID)))
                .await
                .map_err(conflict)?;
            println!("{}", user.id);
        }
        UsersCommand::List { limit, after } => {
            for u in db.list_users(after.as_deref(), limit).await? {
                println!(
                    "{}\t{}\t{}\t{}",
                    u.id,
                    u.profile.email.as_deref().unwrap_or("-"),
                    u.profile.username.as_deref().unwrap_or("-"),
                    u.state.as_str()
                );
            }
        }
        UsersCommand::Show { user } => print_json(&find_user(&*db, &user).await?)?,
        UsersCommand::SetPassword {
            user,
            password_stdin,
        } => {
            if !password_stdin {
                bail!("pass --password-stdin and send the password on standard input");
            }
            let user = find_user(&*db, &user).await?;
            let passwords = Passwords::new(&settings.password)?;
            let password = read_stdin_line("password")?;
            passwords
                .check_policy_for(&password, &user.profile.login_names())
                .map_err(anyhow::Error::msg)?;
            let owed = owed(writer(settings)?.password(&user, &password).await?)?;
            let hash = passwords.hash(password).await?;
            let new = crate::store::recovery::NewPassword {
                hash: &hash,
                algorithm: ARGON2ID,
                write: owed.as_ref(),
            };
            let event = crate::store::AuditEvent::new("password_set", Some(&user.id), None);
            if !db.change_password(&user.id, &new, &event).await? {
                bail!("no user {}", user.id);
            }
            println!("password set for {}", user.id);
        }
        UsersCommand::Delete { user } => {
            let user = find_user(&*db, &user).await?;
            db.delete_user(&user.id).await?;
            println!("deleted {}", user.id);
        }
        UsersCommand::Update {
            user,
            email,
            email_verified,
            name,
            given_name,
            family_name,
            nickname,
        } => {
            let user = find_user(&*db, &user).await?;
            let edit = crate::store::jobs::ProfileEdit {
                email,
                email_verified,
                name,
                given_name,
                family_name,
                nickname,
                ..Default::default()
            };
            let owed = owed(writer(settings)?.profile(&user, &edit).await?)?;
            db.edit_user(&user.id, &edit, owed.as_slice())
                .await
                .map_err(conflict)?;
            print_json(&find_user(&*db, &user.id).await?)?;
        }
        UsersCommand::Block { user } => set_blocked(settings, &*db, &user, true).await?,
        UsersCommand::Unblock { user } => set_blocked(settings, &*db, &user, false).await?,
        UsersCommand::GrantAdmin { user } => {
            let user = find_user(&*db, &user).await?;
            if crate::state::grant_admin(&*db, &user.id, "cli").await? {
                println!("{} is now an operator", user.id);
            } else {
                println!("{} was already an operator", user.id);
            }
        }
        UsersCommand::RevokeAdmin { user } => {
            let user = find_user(&*db, &user).await?;
            if !crate::state::revoke_admin(&*db, &user.id, "cli").await? {
                bail!("{} is not an operator", user.id);
            }
            println!("{} is no longer an operator", user.id);
        }
    }
    Ok(())
}

/// The write-back as the settings describe it: the CLI has no running
/// server, so it builds its own (the sealing key, and a Management API
/// client for blocking writes).
fn writer(settings: &Settings) -> anyhow::Result<crate::upstream::management::write_back::Writer> {
    crate::upstream::management::write_back::Writer::from_settings(settings, None)
}

/// The row a change owes the upstream; a blocking write's refusal refuses
/// the change, and nothing is committed.
fn owed(
    owed: crate::upstream::management::write_back::Owed,
) -> anyhow::Result<Option<crate::store::outbox::QueuedWrite>> {
    use crate::upstream::management::write_back::Refusal;
    match owed {
        Ok(write) => Ok(write),
        Err(Refusal::Refused { message, .. }) => {
            bail!("the upstream refused the change, and nothing was changed: {message}")
        }
        Err(Refusal::Unavailable | Refusal::Throttled(_)) => {
            bail!("the upstream could not be reached, and nothing was changed; try again later")
        }
    }
}

async fn set_blocked(
    settings: &Settings,
    db: &dyn Database,
    user: &str,
    blocked: bool,
) -> anyhow::Result<()> {
    let user = find_user(db, user).await?;
    let kind = if blocked {
        "user_blocked"
    } else {
        "user_unblocked"
    };
    let event = crate::store::AuditEvent::new(kind, Some(&user.id), None);
    match writer(settings)?
        .set_blocked(db, &user, blocked, &event)
        .await?
    {
        Ok(true) => {}
        Ok(false) => bail!("no user {}", user.id),
        // The refusal's message, as every other change reports it.
        Err(refusal) => {
            owed(Err(refusal))?;
        }
    }
    let done = if blocked { "blocked" } else { "unblocked" };
    println!("{} {done}", user.id);
    Ok(())
}

fn conflict(e: StoreError) -> anyhow::Error {
    match e {
        StoreError::Conflict(field) => {
            anyhow::anyhow!("a user or client with that {field} already exists")
        }
        other => other.into(),
    }
}

async fn clients(settings: &Settings, cmd: ClientsCommand) -> anyhow::Result<()> {
    let db = open_database(settings).await?;
    match cmd {
        ClientsCommand::Add(args) => {
            let (client, generated) = client_from_args(args, &settings.issuer)?;
            db.create_client(&client).await.map_err(conflict)?;
            println!("client_id: {}", client.client_id);
            if let Some(secret) = generated {
                println!("client_secret: {secret}");
                println!("(the secret is stored hashed and cannot be shown again)");
            }
        }
        ClientsCommand::List => {
            for c in db.list_clients().await? {
                let kind = if c.public { "public" } else { "confidential" };
                println!(
                    "{}\t{kind}\t{}\t{}",
                    c.client_id,
                    c.source.as_str(),
                    c.redirect_uris.join(" ")
                );
            }
        }
        ClientsCommand::Show { client_id } => print_json(
            &db.get_client(&client_id)
                .await?
                .with_context(|| format!("no client {client_id:?}"))?,
        )?,
        ClientsCommand::Delete { client_id } => {
            if client_id == crate::config::ADMIN_CLIENT_ID {
                bail!("{client_id:?} is the dashboard's built-in client; it cannot be deleted");
            }
            if !db.delete_client(&client_id).await? {
                bail!("no client {client_id:?}");
            }
            println!("deleted {client_id}");
        }
    }
    Ok(())
}

/// Validates the flags of `clients add`; returns the client and the secret
/// when one was generated.
pub fn client_from_args(
    args: ClientArgs,
    issuer: &str,
) -> anyhow::Result<(Client, Option<String>)> {
    validate_client_id(&args.id).map_err(|m| anyhow::anyhow!("--id: {m}"))?;
    for uri in args
        .redirect_uris
        .iter()
        .chain(&args.post_logout_redirect_uris)
    {
        redirect_uri::validate_registration(uri).map_err(|m| anyhow::anyhow!("{uri:?} {m}"))?;
    }
    for origin in &args.web_origins {
        redirect_uri::validate_web_origin(origin)
            .map_err(|m| anyhow::anyhow!("--web-origin {origin:?} {m}"))?;
    }
    let grant_types = if args.grant_types.is_empty() {
        crate::config::default_grant_types()
    } else {
        args.grant_types
    };
    crate::config::check_client_grants(&grant_types, args.public, &args.redirect_uris).map_err(
        |(field, m)| match field {
            "redirect_uris" => anyhow::anyhow!("--redirect-uri is missing: {m}"),
            _ => anyhow::anyhow!("--grant-type: {m}"),
        },
    )?;
    for scope in &args.scopes {
        crate::config::check_scope_token(scope)
            .map_err(|m| anyhow::anyhow!("--scope {scope:?}: {m}"))?;
    }
    if let Some(api) = &args.api {
        check_api_grant(issuer, api, &grant_types, &args.scopes)?;
    }
    let (secret, generated) = if args.public {
        (None, None)
    } else if args.secret_stdin {
        (Some(read_stdin_line("client secret")?), None)
    } else if let Some(s) = args.secret {
        (Some(s), None)
    } else {
        let s = crate::crypto::random_token();
        (Some(s.clone()), Some(s))
    };
    if let Some(s) = &secret {
        validate_client_secret(s).map_err(anyhow::Error::msg)?;
    }
    let registration = crate::config::ClientSettings {
        client_id: args.id,
        client_secret_env: None,
        public: args.public,
        name: args.name,
        redirect_uris: args.redirect_uris,
        post_logout_redirect_uris: args.post_logout_redirect_uris,
        grant_types,
        web_origins: args.web_origins,
        scopes: args.scopes,
        token_mode: args.token_mode,
    };
    let client = registration.to_client(secret.as_deref().map(hash_secret), ClientSource::Cli);
    Ok((client, generated))
}

/// `--api` names the Management API, for a client credentials client,
/// with its scopes only: a typo in a scope fails here, not at the first
/// token request.
fn check_api_grant(
    issuer: &str,
    api: &str,
    grants: &[GrantType],
    scopes: &[String],
) -> anyhow::Result<()> {
    use crate::api_v2::{Scope, audience, names_this_api};
    if !names_this_api(issuer, api) {
        bail!(
            "--api {api:?}: the API clients are granted here is the Management API, {}",
            audience(issuer)
        );
    }
    if !grants.contains(&GrantType::ClientCredentials) {
        bail!("--api needs --grant-type client_credentials");
    }
    if scopes.is_empty() {
        bail!("--api needs at least one --scope");
    }
    if let Some(bad) = scopes.iter().find(|s| Scope::parse(s).is_none()) {
        let known: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
        bail!(
            "--scope {bad:?} is not a scope of the Management API; they are {}",
            known.join(", ")
        );
    }
    Ok(())
}

async fn keys(settings: &Settings, cmd: KeysCommand) -> anyhow::Result<()> {
    let db: Arc<dyn Database> = open_database(settings).await?;
    let (configured, algs) = key_algorithms(settings)?;
    let ring = KeyRing::load(db, key_sealer()?, algs).await?;
    match cmd {
        KeysCommand::List => {
            for k in ring.current().keys() {
                let until = k
                    .publish_until
                    .map(|t| format!("published until {t}"))
                    .unwrap_or_default();
                println!(
                    "{}\t{}\t{}\t{until}",
                    k.kid,
                    k.alg.as_str(),
                    k.state.as_str()
                );
            }
        }
        KeysCommand::Rotate { alg } => {
            let alg = alg.unwrap_or(configured);
            // Tokens signed by the retiring key stay verifiable until the
            // longest-lived of them expires, plus a margin for clock skew.
            let t = &settings.tokens;
            let overlap = t.access_token_ttl_secs.max(t.id_token_ttl_secs) as i64 + 300;
            let kid = ring.rotate(alg, overlap).await?;
            println!(
                "rotated {}: new next key {kid}; instances pick up the change within 30 s",
                alg.as_str()
            );
        }
    }
    Ok(())
}

async fn cutover(settings: &Settings, cmd: CutoverCommand) -> anyhow::Result<()> {
    let db = open_database(settings).await?;
    let mut rules = crate::cutover::load(&*db, &settings.cutover).await?;
    match cmd {
        CutoverCommand::Show => println!("{}", toml::to_string_pretty(&rules)?),
        CutoverCommand::SetPhase { phase } => {
            if phase.needs_upstream() && settings.upstream.is_none() {
                bail!(
                    "phase {} routes logins to the upstream, and no [upstream] is configured: \
                     without one every login stays local, so the phase would change nothing",
                    phase.name()
                );
            }
            rules.phase = phase;
            crate::cutover::store(&*db, &rules).await?;
            println!(
                "phase set to {}; every instance follows within {} s",
                phase.name(),
                crate::cutover::RELOAD_INTERVAL.as_secs()
            );
        }
        CutoverCommand::Pin {
            user,
            upstream,
            local: _,
        } => {
            let user = find_user(&*db, &user).await?;
            let pin = if upstream {
                "force_upstream"
            } else {
                "force_local"
            };
            db.set_pin(&user.id, Some(pin)).await?;
            println!("{} pinned: {pin}", user.id);
        }
        CutoverCommand::Unpin { user } => {
            let user = find_user(&*db, &user).await?;
            db.set_pin(&user.id, None).await?;
            println!("{} unpinned", user.id);
        }
        CutoverCommand::Explain { user, client } => {
            let def = match &settings.upstream {
                Some(up) => Some(
                    crate::upstream::provider::ProviderDef::load(&up.provider)
                        .map_err(anyhow::Error::msg)?,
                ),
                None => None,
            };
            let caps = crate::cutover::UpstreamCaps {
                configured: def.is_some(),
                password_grant: def.as_ref().is_some_and(|d| d.password.is_some()),
            };
            let explained =
                crate::cutover::explain(&*db, &rules, &user, client.as_deref(), caps).await?;
            for line in explained.lines() {
                println!("{line}");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// Every flag and argument of every subcommand, with its command path.
    fn all_args(cmd: &clap::Command, path: &str, out: &mut Vec<(String, clap::Arg)>) {
        for arg in cmd.get_arguments() {
            out.push((path.to_string(), arg.clone()));
        }
        for sub in cmd.get_subcommands() {
            all_args(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn every_flag_and_argument_has_a_description() {
        let mut args = Vec::new();
        all_args(&Cli::command(), "switchyard", &mut args);
        let missing: Vec<_> = args
            .iter()
            .filter(|(_, a)| a.get_help().is_none() && a.get_long_help().is_none())
            .map(|(path, a)| format!("{path} {}", a.get_id()))
            .collect();
        assert!(missing.is_empty(), "no help text: {missing:?}");
    }

    #[test]
    fn closed_sets_list_their_values_in_the_help() {
        let mut cli = Cli::command();
        let phase = cli
            .find_subcommand_mut("cutover")
            .unwrap()
            .find_subcommand_mut("set-phase")
            .unwrap()
            .render_help()
            .to_string();
        for value in ["passthrough", "lazy", "local_first", "local_only"] {
            assert!(phase.contains(value), "{value} in {phase}");
        }
        let rotate = cli
            .find_subcommand_mut("keys")
            .unwrap()
            .find_subcommand_mut("rotate")
            .unwrap()
            .render_help()
            .to_string();
        assert!(rotate.contains("RS256, ES256, EdDSA"), "{rotate}");
        assert!(Cli::try_parse_from(["switchyard", "keys", "rotate", "--alg", "HS256"]).is_err());
        assert!(Cli::try_parse_from(["switchyard", "cutover", "set-phase", "bogus"]).is_err());
    }
}
