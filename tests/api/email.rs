//! Email to users: a queued `EmailRequest` is delivered by the running
//! app's outbox worker, which mints the link at that moment, renders the
//! message and sends it by SMTP (to the kit's sink, or to aiosmtpd, a mail
//! server nobody here wrote) or writes it as an `.eml` file.
//!
//! The worker is waited for with a deadline, never timed: each test waits
//! for the state it needs and fails with what it last saw.

use std::path::{Path, PathBuf};
use std::time::Duration;
use switchyard_kit::process::{Spawned, free_port, python_module};

use reqwest::StatusCode;
use switchyard::config::EmailSettings;
use switchyard::email::{EmailRequest, Message};
use switchyard::recovery::token_hash;
use switchyard::store::User;
use switchyard::store::outbox::{OutboxRow, OutboxState};
use switchyard_kit::smtp::{Fault, Part, SmtpSink, Stage, reset_link};

use crate::helpers::*;

/// How long the worker may take before a test gives up on it.
const DEADLINE: Duration = Duration::from_secs(60);

/// The app with `[email]` as `configure` leaves it; its worker looks at
/// the outbox often and retries a failed send after a fraction of a second.
async fn spawn(configure: impl FnOnce(&mut EmailSettings)) -> TestApp {
    spawn_app_with(|s| {
        s.email.poll_secs = Some(0.05);
        s.email.retry_secs = Some(0.2);
        s.email.from = "Example Sign-in <no-reply@id.example.com>".into();
        s.email.reply_to = Some("help@example.com".into());
        configure(&mut s.email);
    })
    .await
}

/// Queues `message` for `user`, as account recovery does; returns the row.
async fn queue(app: &TestApp, user: &User, message: Message) -> i64 {
    let request = EmailRequest {
        message,
        to: user.profile.email.clone().unwrap(),
        authz: None,
    };
    app.state
        .db
        .enqueue_outbox(&request.queued(&user.id))
        .await
        .unwrap()
}

async fn row(app: &TestApp, id: i64) -> OutboxRow {
    app.state
        .db
        .list_outbox(None, 1000)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.id == id)
        .expect("the row exists")
}

/// The row once it is in `state`.
async fn wait_row(app: &TestApp, id: i64, state: OutboxState) -> OutboxRow {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let r = row(app, id).await;
        if r.state == state {
            return r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "row {id} never became {state:?}: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The token of a reset link.
fn token_of(link: &str) -> String {
    link.split_once("token=").unwrap().1.to_string()
}

/// Whether the reset page takes the link (200) or calls it dead (400).
async fn link_status(app: &TestApp, link: &str) -> StatusCode {
    app.browser.get(link).send().await.unwrap().status()
}

/// What every delivered reset must be: addressed, both parts, a link to
/// this issuer's reset page whose token is live and stored only as its
/// hash.
async fn assert_reset_message(app: &TestApp, raw: &str, to: &str) -> String {
    let m = Part::parse(raw);
    assert_eq!(
        m.header("From"),
        Some("\"Example Sign-in\" <no-reply@id.example.com>")
    );
    assert_eq!(m.header("To"), Some(to));
    assert_eq!(m.header("Reply-To"), Some("help@example.com"));
    let host = app
        .issuer
        .trim_start_matches("http://")
        .trim_end_matches('/');
    assert_eq!(
        m.header("Subject"),
        Some(format!("Reset your password for {host}").as_str())
    );
    assert!(m.header("Date").is_some() && m.header("Message-ID").is_some());
    assert_eq!(m.content_type(), "multipart/alternative");
    let leaves = m.leaves();
    let types: Vec<String> = leaves.iter().map(Part::content_type).collect();
    assert_eq!(types, ["text/plain", "text/html"]);
    let text = leaves[0].decoded();
    let html = leaves[1].decoded();
    assert!(text.contains(to) && text.contains("30 minutes"), "{text}");
    assert!(html.contains("<a href=\"http"), "{html}");

    let link = reset_link(raw).expect("the message has a reset link");
    assert!(
        link.starts_with(&format!("{}/login/reset?token=", app.address)),
        "{link}"
    );
    let token = token_of(&link);
    assert_eq!(token.len(), 43, "a 256-bit base64url token");
    assert!(html.contains(&link), "the HTML part links to the same page");
    let stored = app
        .state
        .db
        .recovery_token(&token_hash(&token), switchyard::store::now())
        .await
        .unwrap()
        .expect("the token's hash is stored");
    assert_eq!(stored.purpose, switchyard::store::recovery::Purpose::Reset);
    link
}

#[tokio::test]
async fn a_queued_reset_reaches_an_smtp_server_with_a_working_link() {
    let sink = SmtpSink::start().await;
    let app = spawn(|e| e.smtp_url = Some(sink.url())).await;
    let alice = app.add_user("alice@example.com", PASSWORD).await;
    let id = queue(&app, &alice, Message::PasswordReset).await;

    let got = sink.wait_for(1, DEADLINE).await.unwrap();
    let mail = &got[0];
    assert_eq!(mail.mail_from, "no-reply@id.example.com");
    assert_eq!(mail.rcpt_to, ["alice@example.com"]);
    assert!(mail.auth.is_none(), "no credentials were configured");
    let link = assert_reset_message(&app, &mail.data, "alice@example.com").await;
    assert_eq!(link_status(&app, &link).await, StatusCode::OK);

    // The row holds no secret and ends done, counted under its kind.
    let r = wait_row(&app, id, OutboxState::Done).await;
    assert!(!r.payload.to_string().contains(&token_of(&link)));
    // Counted just after the row is settled: looked for until it shows.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let metrics = app.metrics().await;
        if metrics.contains("switchyard_outbox_writes_total{what=\"email\",result=\"done\"} 1") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_invitation_links_for_the_invitations_lifetime() {
    let sink = SmtpSink::start().await;
    let app = spawn(|e| e.smtp_url = Some(sink.url())).await;
    let bob = app.add_user("bob@example.com", PASSWORD).await;
    queue(&app, &bob, Message::Invitation).await;

    let got = sink.wait_for(1, DEADLINE).await.unwrap();
    let mail = &got[0];
    assert!(
        mail.header("Subject")
            .unwrap()
            .starts_with("Set your password for ")
    );
    let text = mail.part("text/plain").unwrap();
    assert!(text.contains("14 days"), "{text}");
    let link = mail.reset_link().unwrap();
    let stored = app
        .state
        .db
        .recovery_token(&token_hash(&token_of(&link)), switchyard::store::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.purpose, switchyard::store::recovery::Purpose::Invite);
    assert_eq!(stored.user_id, bob.id);
    assert_eq!(link_status(&app, &link).await, StatusCode::OK);
}

/// aiosmtpd, run as `python3 -m aiosmtpd`, storing each message in a
/// Maildir; killed when dropped.
struct Aiosmtpd {
    _server: Spawned,
    port: u16,
    maildir: tempfile::TempDir,
}

impl Aiosmtpd {
    /// The server, ready for connections; `None` (with a notice) when
    /// aiosmtpd is not installed, which CI does not allow.
    async fn start() -> Option<Self> {
        if !python_module("aiosmtpd", "aiosmtpd") {
            return None;
        }
        let maildir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut server = Spawned::start(
            std::process::Command::new("python3")
                .args(["-m", "aiosmtpd", "-n", "-l"])
                .arg(format!("127.0.0.1:{port}"))
                .args(["-c", "aiosmtpd.handlers.Mailbox"])
                .arg(maildir.path().join("Maildir")),
        );
        server
            .wait_until(DEADLINE, || async {
                use tokio::io::AsyncReadExt;
                let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
                    return false;
                };
                let mut greeting = [0u8; 3];
                s.read_exact(&mut greeting).await.is_ok() && &greeting == b"220"
            })
            .await;
        Some(Self {
            _server: server,
            port,
            maildir,
        })
    }

    /// The delivered messages' files.
    fn delivered(&self) -> Vec<PathBuf> {
        files_in(&self.maildir.path().join("Maildir").join("new"), None)
    }
}

/// The files in `dir` (ending in `ext`, if given), sorted by name.
fn files_in(dir: &Path, ext: Option<&str>) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| ext.is_none_or(|x| p.extension().is_some_and(|e| e == x)));
    files.sort();
    files
}

async fn wait_files(what: impl Fn() -> Vec<PathBuf>, n: usize) -> Vec<PathBuf> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let files = what();
        if files.len() >= n {
            return files;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} file(s), not {n}",
            files.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_queued_reset_reaches_aiosmtpd() {
    let Some(server) = Aiosmtpd::start().await else {
        return;
    };
    let app = spawn(|e| e.smtp_url = Some(format!("smtp://127.0.0.1:{}", server.port))).await;
    let alice = app.add_user("alice@example.com", PASSWORD).await;
    let id = queue(&app, &alice, Message::PasswordReset).await;

    let files = wait_files(|| server.delivered(), 1).await;
    let raw = std::fs::read_to_string(&files[0]).unwrap();
    // aiosmtpd's Message handler records the envelope as headers.
    let parsed = Part::parse(&raw);
    assert_eq!(parsed.header("X-MailFrom"), Some("no-reply@id.example.com"));
    assert_eq!(parsed.header("X-RcptTo"), Some("alice@example.com"));
    let link = assert_reset_message(&app, &raw, "alice@example.com").await;
    assert_eq!(link_status(&app, &link).await, StatusCode::OK);
    wait_row(&app, id, OutboxState::Done).await;
}

#[tokio::test]
async fn without_a_server_each_message_is_an_eml_file_in_the_drop_directory() {
    let tmp = tempfile::tempdir().unwrap();
    // Not there yet: the mailer makes it.
    let dir = tmp.path().join("outgoing").join("mail");
    let d = dir.clone();
    let app = spawn(move |e| e.drop_dir = d).await;
    let alice = app.add_user("alice@example.com", PASSWORD).await;
    let carol = app.add_user("carol@example.com", PASSWORD).await;
    let first = queue(&app, &alice, Message::PasswordReset).await;
    wait_row(&app, first, OutboxState::Done).await;
    queue(&app, &carol, Message::PasswordReset).await;

    let files = wait_files(|| files_in(&dir, Some("eml")), 2).await;
    assert_eq!(files.len(), 2);
    // Named to sort oldest first: alice's, then carol's.
    let raws: Vec<String> = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    let alice_link = assert_reset_message(&app, &raws[0], "alice@example.com").await;
    assert_reset_message(&app, &raws[1], "carol@example.com").await;
    assert_eq!(link_status(&app, &alice_link).await, StatusCode::OK);
    // Only whole messages are left in the directory.
    assert_eq!(files_in(&dir, None).len(), 2);
}

#[tokio::test]
async fn a_temporary_failure_is_retried_and_a_permanent_one_waits_for_an_operator() {
    let sink = SmtpSink::start().await;
    let app = spawn(|e| e.smtp_url = Some(sink.url())).await;
    let alice = app.add_user("alice@example.com", PASSWORD).await;

    // 451 to the recipient: the row is tried again after its backoff.
    sink.fail_next(Stage::Rcpt, Fault::Temporary);
    let id = queue(&app, &alice, Message::PasswordReset).await;
    let got = sink.wait_for(1, DEADLINE).await.unwrap();
    let r = wait_row(&app, id, OutboxState::Done).await;
    assert_eq!(r.attempts, 2, "one failed attempt, then the delivery");
    let link = got[0].reset_link().unwrap();
    assert_eq!(link_status(&app, &link).await, StatusCode::OK);

    // 550 after the data: failed at once, with the server's reason.
    sink.fail_next(Stage::Data, Fault::Permanent);
    let id = queue(&app, &alice, Message::PasswordReset).await;
    let r = wait_row(&app, id, OutboxState::Failed).await;
    assert_eq!(r.attempts, 1, "a permanent refusal is not retried");
    let error = r.last_error.unwrap();
    assert!(
        error.contains("refused") && error.contains("550"),
        "{error}"
    );
    assert!(error.len() < 400, "{error}");
    assert!(!error.contains("token"), "{error}");
    assert_eq!(sink.messages().len(), 1);

    let list = run_cli(&app._isolated, &["outbox", "list", "--failed"], None, &[]);
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(list.status.success());
    assert!(
        listed.contains(&format!("#{id}")) && listed.contains("email"),
        "{listed}"
    );

    // The operator sends it again: a new message with a new, working link.
    let out = run_cli(
        &app._isolated,
        &["outbox", "retry", &id.to_string()],
        None,
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = sink.wait_for(2, DEADLINE).await.unwrap();
    wait_row(&app, id, OutboxState::Done).await;
    let newest = got[1].reset_link().unwrap();
    assert_ne!(newest, link);
    assert_eq!(link_status(&app, &newest).await, StatusCode::OK);
}

#[tokio::test]
async fn an_address_that_is_not_one_fails_at_once() {
    let sink = SmtpSink::start().await;
    let app = spawn(|e| e.smtp_url = Some(sink.url())).await;
    let odd = app.add_user("no-at-sign.example.com", PASSWORD).await;
    let id = queue(&app, &odd, Message::PasswordReset).await;
    let r = wait_row(&app, id, OutboxState::Failed).await;
    assert_eq!(r.attempts, 1);
    assert_eq!(
        r.last_error.as_deref(),
        Some("the recipient address is not a valid address")
    );
    assert!(sink.messages().is_empty());
    let tokens: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM recovery_tokens WHERE user_id = $1")
        .bind(&odd.id)
        .fetch_one(
            &sqlx::AnyPool::connect(&app._isolated.database_url)
                .await
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        tokens, 0,
        "no link is minted for an address no mail reaches"
    );
}

#[tokio::test]
async fn no_message_goes_to_a_deleted_or_blocked_user_or_an_old_address() {
    let sink = SmtpSink::start().await;
    let app = spawn(|e| e.smtp_url = Some(sink.url())).await;
    let gone = app.add_user("gone@example.com", PASSWORD).await;
    let blocked = app.add_user("blocked@example.com", PASSWORD).await;
    let moved = app.add_user("moved@example.com", PASSWORD).await;

    assert!(app.state.db.delete_user(&gone.id).await.unwrap());
    let pool = sqlx::AnyPool::connect(&app._isolated.database_url)
        .await
        .unwrap();
    sqlx::query("UPDATE users SET blocked = 1 WHERE id = $1")
        .bind(&blocked.id)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE users SET email = 'new@example.com' WHERE id = $1")
        .bind(&moved.id)
        .execute(&pool)
        .await
        .unwrap();

    let mut ids = Vec::new();
    for user in [&gone, &blocked, &moved] {
        ids.push(queue(&app, user, Message::PasswordReset).await);
    }
    for id in ids {
        let r = wait_row(&app, id, OutboxState::Done).await;
        assert_eq!(r.attempts, 1, "settled on the first look, not retried");
    }
    assert!(sink.messages().is_empty(), "{:?}", sink.messages());
    for user in [&blocked, &moved] {
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM recovery_tokens WHERE user_id = $1")
                .bind(&user.id)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(count, 0, "no link was minted for {}", user.id);
    }
}

#[tokio::test]
async fn of_two_resets_only_the_newest_link_works() {
    let sink = SmtpSink::start().await;
    let app = spawn(|e| e.smtp_url = Some(sink.url())).await;
    let alice = app.add_user("alice@example.com", PASSWORD).await;
    queue(&app, &alice, Message::PasswordReset).await;
    queue(&app, &alice, Message::PasswordReset).await;

    // The one worker sends in turn, so the sink's order is the minting order.
    let got = sink.wait_for(2, DEADLINE).await.unwrap();
    let first = got[0].reset_link().unwrap();
    let second = got[1].reset_link().unwrap();
    assert_ne!(first, second);
    assert_eq!(link_status(&app, &first).await, StatusCode::BAD_REQUEST);
    assert_eq!(link_status(&app, &second).await, StatusCode::OK);
    assert!(
        app.state
            .db
            .recovery_token(&token_hash(&token_of(&first)), switchyard::store::now())
            .await
            .unwrap()
            .is_none(),
        "the first token is gone"
    );
}
