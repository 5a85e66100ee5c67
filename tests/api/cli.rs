//! The command line, run as an operator runs it: the real binary, a real
//! database, then a login with what it provisioned.

use std::process::Output;

use reqwest::StatusCode;

use crate::helpers::*;

fn switchyard(iso: &Isolated, args: &[&str], stdin: Option<&str>) -> Output {
    run_cli(iso, args, stdin, &[])
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

#[tokio::test]
async fn users_and_clients_provisioned_with_the_cli_can_log_in() {
    let iso = isolated().await;
    let added = switchyard(
        &iso,
        &[
            "users",
            "add",
            "--email",
            "carol@example.com",
            "--name",
            "Carol",
            "--password-stdin",
        ],
        Some("carol's long password\n"),
    );
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let id = stdout(&added).trim().to_string();
    assert!(id.starts_with("local|"));

    let duplicate = switchyard(
        &iso,
        &["users", "add", "--email", "CAROL@example.com"],
        None,
    );
    assert!(!duplicate.status.success());
    assert!(String::from_utf8_lossy(&duplicate.stderr).contains("already exists"));

    let client = switchyard(
        &iso,
        &[
            "clients",
            "add",
            "--id",
            "cli-web",
            "--redirect-uri",
            REDIRECT,
            "--name",
            "CLI App",
        ],
        None,
    );
    assert!(
        client.status.success(),
        "{}",
        String::from_utf8_lossy(&client.stderr)
    );
    let out = stdout(&client);
    let secret = out
        .lines()
        .find_map(|l| l.strip_prefix("client_secret: "))
        .expect("a generated secret")
        .to_string();

    let bad_uri = switchyard(
        &iso,
        &[
            "clients",
            "add",
            "--id",
            "bad",
            "--redirect-uri",
            "http://evil.example.com/cb",
        ],
        None,
    );
    assert!(
        !bad_uri.status.success(),
        "plain http on a non-loopback host is refused at registration"
    );

    let listed = stdout(&switchyard(&iso, &["users", "list"], None));
    assert!(listed.contains("carol@example.com"));
    let shown = stdout(&switchyard(
        &iso,
        &["users", "show", "carol@example.com"],
        None,
    ));
    assert!(
        shown.contains(&id) && !shown.contains("argon2"),
        "no hash in the output"
    );
    let clients = stdout(&switchyard(&iso, &["clients", "show", "cli-web"], None));
    assert!(
        clients.contains("cli-web") && !clients.contains("sha256$"),
        "no secret hash in the output"
    );

    // The provider, on the same database, logs carol in for cli-web.
    let app = spawn_on(&iso).await;
    let mut req = AuthRequest::new("cli-web", None);
    req.scope = "openid profile".into();
    let browser = browser();
    let start = app.authorize(&browser, &req).await;
    let done = app
        .login(
            &browser,
            &location(start.headers()),
            "carol@example.com",
            "carol's long password",
        )
        .await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    let params = query_of(&location(done.headers()));
    let response = app
        .token(
            &[
                ("grant_type", "authorization_code"),
                ("code", &params["code"]),
                ("redirect_uri", REDIRECT),
            ],
            Some(("cli-web", &secret)),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);

    let set = switchyard(
        &iso,
        &[
            "users",
            "set-password",
            "carol@example.com",
            "--password-stdin",
        ],
        Some("a brand new password\n"),
    );
    assert!(set.status.success());
    let deleted = switchyard(&iso, &["users", "delete", &id], None);
    assert!(deleted.status.success());
    assert!(
        !switchyard(&iso, &["users", "show", &id], None)
            .status
            .success()
    );
}

async fn spawn_on(iso: &Isolated) -> TestApp {
    let url = iso.database_url.clone();
    let redis = iso.redis_url.clone();
    let prefix = iso.prefix.clone();
    spawn_app_with(move |s| {
        s.database_url = url;
        s.redis_url = redis;
        s.session_prefix = prefix;
    })
    .await
}

#[tokio::test]
async fn keys_can_be_listed_and_rotated_from_the_cli() {
    let iso = isolated().await;
    let listed = stdout(&switchyard(&iso, &["keys", "list"], None));
    assert_eq!(
        listed.lines().count(),
        2,
        "an active and a next RS256 key: {listed}"
    );
    assert!(listed.contains("active") && listed.contains("next"));
    let rotated = switchyard(&iso, &["keys", "rotate"], None);
    assert!(
        rotated.status.success(),
        "{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    let listed = stdout(&switchyard(&iso, &["keys", "list"], None));
    assert!(listed.contains("retired"));
    assert_eq!(listed.lines().count(), 3);
}

#[tokio::test]
async fn config_check_names_the_key_of_every_problem() {
    let iso = isolated().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.toml");
    std::fs::write(
        &path,
        r#"
issuer = "http://login.example.com/"
[tokens]
signing_alg = "HS256"
[[clients]]
client_id = "web"
redirect_uris = ["https://app.example.com/cb#frag"]
"#,
    )
    .unwrap();
    let out = switchyard(
        &iso,
        &["--config", path.to_str().unwrap(), "config", "check"],
        None,
    );
    assert!(!out.status.success());
    let text = stdout(&out);
    for key in [
        "issuer:",
        "tokens.signing_alg:",
        "clients[0].client_secret_env:",
        "clients[0].redirect_uris[0]:",
    ] {
        assert!(text.contains(key), "{key} in {text}");
    }
    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, "isuer = \"https://x/\"\n").unwrap();
    let out = switchyard(
        &iso,
        &["--config", typo.to_str().unwrap(), "config", "check"],
        None,
    );
    assert!(!out.status.success());
    assert!(
        stdout(&out).contains("isuer:"),
        "an unknown key is named, as every other problem"
    );
    let ok = switchyard(&iso, &["config", "check"], None);
    assert!(ok.status.success(), "the embedded default passes");
}

#[tokio::test]
async fn clients_declared_in_the_config_file_are_served() {
    let iso = isolated().await;
    // Set for every test process by .cargo/config.toml, to SECRET.
    let var = "SWITCHYARD_TEST_CLIENT_SECRET".to_string();
    let url = iso.database_url.clone();
    let redis = iso.redis_url.clone();
    let prefix = iso.prefix.clone();
    let app = spawn_app_with(move |s| {
        s.database_url = url;
        s.redis_url = redis;
        s.session_prefix = prefix;
        s.clients.push(switchyard::config::ClientSettings {
            client_id: "web".into(),
            client_secret_env: Some(var),
            public: false,
            name: None,
            redirect_uris: vec![REDIRECT.into()],
            post_logout_redirect_uris: vec![],
            grant_types: switchyard::config::default_grant_types(),
            web_origins: vec![],
            scopes: vec![],
            token_mode: switchyard::store::TokenMode::Gateway,
        });
    })
    .await;
    app.add_user("alice@example.com", PASSWORD).await;
    let tokens = app.tokens_for_alice().await;
    assert!(tokens["access_token"].is_string());
}

#[tokio::test]
async fn clients_add_takes_web_origins_as_bare_origins() {
    let iso = isolated().await;
    let refused = switchyard(
        &iso,
        &[
            "clients",
            "add",
            "--id",
            "spa",
            "--public",
            "--redirect-uri",
            "https://spa.example.com/",
            "--web-origin",
            "https://spa.example.com/",
        ],
        None,
    );
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("--web-origin") && stderr.contains("https://spa.example.com"),
        "{stderr}"
    );

    let added = switchyard(
        &iso,
        &[
            "clients",
            "add",
            "--id",
            "spa",
            "--public",
            "--redirect-uri",
            "https://spa.example.com/",
            "--web-origin",
            "https://spa.example.com",
            "--web-origin",
            "http://127.0.0.1:3000",
        ],
        None,
    );
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let shown = switchyard(&iso, &["clients", "show", "spa"], None);
    let client: serde_json::Value = serde_json::from_str(&stdout(&shown)).unwrap();
    assert_eq!(
        client["web_origins"],
        serde_json::json!(["https://spa.example.com", "http://127.0.0.1:3000"])
    );
}

/// Starts `switchyard serve` from `exe` on the test's database and a free
/// port, waits until it has logged that it serves, stops it, and returns
/// what it wrote to stdout and stderr (both pipes, as under a supervisor
/// that writes them to files).
fn serve_briefly(iso: &Isolated, exe: &std::path::Path) -> (String, String) {
    use std::io::Read;
    use std::process::{Command, Stdio};
    use std::sync::{Arc, Mutex};
    let mut child = Command::new(exe)
        .arg("serve")
        .env("SWITCHYARD_DATABASE_URL", &iso.database_url)
        .env("SWITCHYARD_LISTEN", "127.0.0.1:0")
        .env("SWITCHYARD_LOG", "info")
        .env_remove("SWITCHYARD_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the switchyard binary runs");
    let collect = |mut pipe: Box<dyn Read + Send>| {
        let text = Arc::new(Mutex::new(Vec::new()));
        let sink = text.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        (text, reader)
    };
    let (out, out_reader) = collect(Box::new(child.stdout.take().unwrap()));
    let (err, err_reader) = collect(Box::new(child.stderr.take().unwrap()));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !String::from_utf8_lossy(&err.lock().unwrap()).contains("serving")
        && std::time::Instant::now() < deadline
        && child.try_wait().unwrap().is_none()
    {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    out_reader.join().unwrap();
    err_reader.join().unwrap();
    let text = |t: &Arc<Mutex<Vec<u8>>>| String::from_utf8_lossy(&t.lock().unwrap()).to_string();
    (text(&out), text(&err))
}

#[tokio::test]
async fn logs_written_to_a_pipe_carry_no_colour_codes() {
    let iso = isolated().await;
    let (_, stderr) = serve_briefly(&iso, std::path::Path::new(env!("CARGO_BIN_EXE_switchyard")));
    assert!(stderr.contains("serving"), "serve logged: {stderr}");
    assert!(
        !stderr.contains("\x1b["),
        "no ANSI escape sequences when stderr is not a terminal: {stderr:?}"
    );
}

#[tokio::test]
async fn the_start_up_hints_name_the_command_that_started_serve() {
    let iso = isolated().await;
    // A build in a cargo target directory: the Quickstart's `cargo run`.
    let (stdout, _) = serve_briefly(&iso, std::path::Path::new(env!("CARGO_BIN_EXE_switchyard")));
    let hint = stdout
        .lines()
        .find(|l| l.contains(" users add "))
        .unwrap_or_else(|| panic!("a users add hint in {stdout}"));
    assert!(
        hint.contains("| cargo run --") && hint.contains("-- users add"),
        "{hint}"
    );

    // The same binary installed elsewhere: the path it was started by.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let installed = dir.path().join("switchyard");
    if std::fs::hard_link(env!("CARGO_BIN_EXE_switchyard"), &installed).is_err() {
        std::fs::copy(env!("CARGO_BIN_EXE_switchyard"), &installed).unwrap();
    }
    let (stdout, _) = serve_briefly(&iso, &installed);
    let expected = format!("| {} users add ", installed.display());
    assert!(stdout.contains(&expected), "{expected} in {stdout}");
    assert!(stdout.contains(&format!("  {} clients add ", installed.display())));
}

#[tokio::test]
async fn help_does_not_show_the_value_of_switchyard_config() {
    let iso = isolated().await;
    let out = run_cli(
        &iso,
        &["users", "add", "--help"],
        None,
        &[("SWITCHYARD_CONFIG", "/etc/secret-place/switchyard.toml")],
    );
    assert!(out.status.success());
    let help = stdout(&out);
    assert!(help.contains("SWITCHYARD_CONFIG"), "{help}");
    assert!(!help.contains("secret-place"), "{help}");
}

#[tokio::test]
async fn a_directory_given_as_the_configuration_file_is_refused() {
    let iso = isolated().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    for command in [&["config", "check"][..], &["users", "list"][..]] {
        let args: Vec<&str> = ["--config", path].iter().chain(command).copied().collect();
        let out = switchyard(&iso, &args, None);
        assert!(!out.status.success(), "{command:?} refused");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("is a directory"), "{err}");
    }
}

fn write_config(dir: &tempfile::TempDir, text: &str) -> String {
    let path = dir.path().join("switchyard.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[tokio::test]
async fn config_check_lists_every_unknown_key_and_wrong_value() {
    let iso = isolated().await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &dir,
        r#"
isuer = "https://login.example.com/"
listen = "not an address"
trusted_proxies = "10.0.0.0/8"
[tokens]
access_token_ttl_secs = "an hour"
colour = "blue"
[[clients]]
client_id = "first"
public = true
redirect_uris = "https://app.example.com/cb"
[[clients]]
client_id = ["second"]
public = true
redirect_uris = ["https://app.example.com/cb"]
[[clients]]
client_id = "third"
public = true
redirect_uris = ["https://app.example.com/cb#frag"]
"#,
    );
    let out = switchyard(&iso, &["--config", &path, "config", "check"], None);
    assert!(!out.status.success());
    let text = stdout(&out);
    for key in [
        "isuer:",
        "listen:",
        "trusted_proxies:",
        "tokens.access_token_ttl_secs:",
        "tokens.colour:",
        "clients[0].redirect_uris:",
        "clients[1].client_id:",
        // Found by the checks that run on what did read, at the file's index.
        "clients[2].redirect_uris[0]:",
    ] {
        assert_eq!(
            text.lines().filter(|l| l.starts_with(key)).count(),
            1,
            "{key} once in {text}"
        );
    }
    // Any other command refuses the file, naming every problem too.
    let out = switchyard(&iso, &["--config", &path, "users", "list"], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("isuer") && err.contains("tokens.colour"),
        "{err}"
    );
}

#[tokio::test]
async fn every_key_can_be_set_from_the_environment() {
    let iso = isolated().await;
    let bogus = run_cli(
        &iso,
        &["config", "check"],
        None,
        &[("SWITCHYARD_CUTOVER__PHASE", "bogus")],
    );
    assert!(!bogus.status.success(), "a bogus phase is reported");
    let text = stdout(&bogus);
    assert!(
        text.contains("cutover.phase:") && text.contains("SWITCHYARD_CUTOVER__PHASE"),
        "{text}"
    );

    let phase = run_cli(
        &iso,
        &["cutover", "show"],
        None,
        &[("SWITCHYARD_CUTOVER__PHASE", "local_only")],
    );
    assert!(
        phase.status.success(),
        "{}",
        String::from_utf8_lossy(&phase.stderr)
    );
    assert!(
        stdout(&phase).contains("phase = \"local_only\""),
        "{}",
        stdout(&phase)
    );

    // Nested [upstream] keys, with no [upstream] in any file.
    let upstream = [
        ("SWITCHYARD_UPSTREAM__PROVIDER", "oidc"),
        (
            "SWITCHYARD_UPSTREAM__ISSUER",
            "https://upstream.example.com/",
        ),
        ("SWITCHYARD_UPSTREAM__CLIENT_ID", "switchyard"),
        ("SWITCHYARD_UPSTREAM__TIMEOUT_SECS", "500"),
        ("SWITCHYARD_UPSTREAM__MANAGEMENT__MAX_RATE", "fast"),
    ];
    let out = run_cli(&iso, &["config", "check"], None, &upstream);
    assert!(!out.status.success());
    let text = stdout(&out);
    assert!(text.contains("upstream.management.max_rate:"), "{text}");
    assert!(text.contains("upstream.timeout_secs:"), "{text}");
}

#[tokio::test]
async fn only_grant_types_the_token_endpoint_implements_can_be_allowed() {
    let iso = isolated().await;
    let out = switchyard(
        &iso,
        &[
            "clients",
            "add",
            "--id",
            "machine",
            "--grant-type",
            "implicit",
            "--redirect-uri",
            REDIRECT,
        ],
        None,
    );
    // RFC 9700 §2.1.2: the implicit grant is not implemented.
    assert!(!out.status.success(), "implicit is not implemented");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("implicit") && err.contains("client_credentials"),
        "{err}"
    );
    let listed = stdout(&switchyard(&iso, &["clients", "list"], None));
    assert!(!listed.contains("machine"), "{listed}");

    let password_client = switchyard(
        &iso,
        &[
            "clients",
            "add",
            "--id",
            "legacy",
            "--grant-type",
            "password",
            "--redirect-uri",
            REDIRECT,
        ],
        None,
    );
    assert!(
        password_client.status.success(),
        "{}",
        String::from_utf8_lossy(&password_client.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &dir,
        r#"
[[clients]]
client_id = "machine"
public = true
redirect_uris = ["https://app.example.com/cb"]
grant_types = ["authorization_code", "client_credentials"]
"#,
    );
    let out = switchyard(&iso, &["--config", &path, "config", "check"], None);
    assert!(!out.status.success());
    let text = stdout(&out);
    // RFC 6749 §4.4: client credentials are for confidential clients.
    assert!(
        text.contains("clients[0].grant_types:")
            && text.contains("a public client cannot use client_credentials"),
        "{text}"
    );
}

#[tokio::test]
async fn a_phase_that_needs_an_upstream_is_refused_without_one() {
    let iso = isolated().await;
    for phase in ["passthrough", "local_first"] {
        let out = switchyard(&iso, &["cutover", "set-phase", phase], None);
        assert!(!out.status.success(), "{phase} refused");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("no [upstream] is configured"), "{err}");
    }
    let shown = stdout(&switchyard(&iso, &["cutover", "show"], None));
    assert!(shown.contains("phase = \"lazy\""), "unchanged: {shown}");
    let local = switchyard(&iso, &["cutover", "set-phase", "local_only"], None);
    assert!(local.status.success());

    let upstream = [
        ("SWITCHYARD_UPSTREAM__PROVIDER", "oidc"),
        (
            "SWITCHYARD_UPSTREAM__ISSUER",
            "https://upstream.example.com/",
        ),
        ("SWITCHYARD_UPSTREAM__CLIENT_ID", "switchyard"),
    ];
    let out = run_cli(
        &iso,
        &["cutover", "set-phase", "passthrough"],
        None,
        &upstream,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bogus = run_cli(
        &iso,
        &["config", "check"],
        None,
        &[("SWITCHYARD_CUTOVER__PHASE", "passthrough")],
    );
    assert!(!bogus.status.success());
    assert!(stdout(&bogus).contains("cutover.phase:"));
}

#[tokio::test]
async fn a_piped_password_is_never_dropped_and_weak_ones_are_refused() {
    let iso = isolated().await;
    let piped = switchyard(
        &iso,
        &["users", "add", "--email", "dave@example.com"],
        Some("dave's long password\n"),
    );
    assert!(!piped.status.success(), "the piped password is not ignored");
    let err = String::from_utf8_lossy(&piped.stderr);
    assert!(err.contains("--password-stdin"), "{err}");
    assert!(!err.contains("dave's long password"), "{err}");
    assert!(!stdout(&switchyard(&iso, &["users", "list"], None)).contains("dave@"));

    // Nothing on stdin: a user without a password, as before.
    let bare = switchyard(&iso, &["users", "add", "--email", "erin@example.com"], None);
    assert!(
        bare.status.success(),
        "{}",
        String::from_utf8_lossy(&bare.stderr)
    );

    let add = |email: &str, username: &str, password: &str| {
        switchyard(
            &iso,
            &[
                "users",
                "add",
                "--email",
                email,
                "--username",
                username,
                "--password-stdin",
            ],
            Some(&format!("{password}\n")),
        )
    };
    for (password, why) in [
        ("password", "common"),
        ("Password123", "common, whatever the case"),
        ("Frank.Long@Example.com", "the email"),
        ("frank.long", "the email's local part"),
        ("FRANKIE_THE_GREAT", "the username"),
    ] {
        let out = add("frank.long@example.com", "frankie_the_great", password);
        assert!(!out.status.success(), "{why} refused");
        // ("password" itself is a word of the messages.)
        assert!(
            password == "password" || !String::from_utf8_lossy(&out.stderr).contains(password),
            "the password is not echoed"
        );
    }
    let ok = add(
        "frank.long@example.com",
        "frankie_the_great",
        "frank's long password",
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let set = |password: &str| {
        switchyard(
            &iso,
            &[
                "users",
                "set-password",
                "frankie_the_great",
                "--password-stdin",
            ],
            Some(&format!("{password}\n")),
        )
    };
    assert!(!set("qwerty123").status.success());
    assert!(!set("Frankie_The_Great").status.success());
    assert!(set("another long passphrase").status.success());
}

#[tokio::test]
async fn connection_failures_say_why_without_the_password() {
    let iso = isolated().await;
    // Nothing listens on port 1 of the loopback interface.
    let closed = [
        (
            "SWITCHYARD_DATABASE_URL",
            "postgres://app:hunter2-db@127.0.0.1:1/switchyard",
        ),
        ("SWITCHYARD_REDIS_URL", "redis://:hunter2-redis@127.0.0.1:1"),
    ];
    let out = run_cli(&iso, &["config", "check", "--connect"], None, &closed);
    assert!(!out.status.success());
    let text = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains("hunter2"), "{text}");
    let line = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("{key} in {text}"))
            .to_string()
    };
    assert!(
        line("database_url:").contains("refused"),
        "{}",
        line("database_url:")
    );
    assert!(
        line("redis_url:").contains("refused"),
        "{}",
        line("redis_url:")
    );

    // The commands that open the database say why too, at once rather than
    // after the pool's 5 s acquire timeout.
    let started = std::time::Instant::now();
    let out = run_cli(&iso, &["users", "list"], None, &closed[..1]);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("refused") && !err.contains("hunter2"), "{err}");
    let out = run_cli(
        &iso,
        &["serve"],
        None,
        &[("SWITCHYARD_LISTEN", "127.0.0.1:0"), closed[1]],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("refused") && !err.contains("hunter2"), "{err}");

    // Reachable services pass.
    let mut env = vec![];
    if let Some(redis) = &iso.redis_url {
        env.push(("SWITCHYARD_REDIS_URL", redis.as_str()));
    }
    let out = run_cli(&iso, &["config", "check", "--connect"], None, &env);
    assert!(
        out.status.success(),
        "{}{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
}
