//! `import`, `backfill`, `verify` and `status`, run as an operator runs
//! them: the real binary, on the test's database (SQLite or PostgreSQL),
//! then a login through HTTP with what they brought in.

use std::io::Write;
use std::process::Output;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

const LEGACY_PASSWORD: &str = "legacy password 1";

fn ok(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&out.stdout)))
}

fn write_file(dir: &tempfile::TempDir, name: &str, contents: &[u8]) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, contents).unwrap();
    path.to_string_lossy().to_string()
}

fn issue_lines(report: &Value, kind: &str) -> Vec<(i64, String)> {
    report["issues"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["kind"] == kind)
        .map(|i| {
            (
                i["line"].as_i64().unwrap_or(0),
                i["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Signs in on the login page with the imported (legacy) password, as an
/// application's user would, and expects to be sent back to the app.
async fn signs_in_with_the_legacy_password(app: &TestApp, login: &str) {
    app.add_client("web", false).await;
    let (_, challenge) = pkce();
    let browser = browser();
    let start = app
        .authorize(&browser, &AuthRequest::new("web", Some(&challenge)))
        .await;
    let done = app
        .login(&browser, &location(start.headers()), login, LEGACY_PASSWORD)
        .await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    assert!(location(done.headers()).starts_with(REDIRECT));
}

fn show(iso: &Isolated, user: &str) -> Value {
    ok(&run_cli(iso, &["users", "show", user], None, &[]))
}

/// An Auth0 export as the export job writes it, and as a hash-export
/// ticket does (`_id.$oid`, `passwordHash`), with every kind of bad line.
fn auth0_export() -> String {
    let bcrypt = bcrypt::hash(LEGACY_PASSWORD, 4).unwrap();
    let lines = [
        json!({"user_id": "auth0|60425da93519d90068f82961", "email": "ann@example.com", "email_verified": true,
               "name": "Ann", "nickname": "ann", "app_metadata": {"roles": ["admin"]},
               "identities": [{"provider": "auth0", "user_id": "60425da93519d90068f82961", "connection": "Username-Password-Authentication", "isSocial": false}],
               "created_at": "2021-03-05T16:34:49.502Z", "updated_at": "2024-01-01T00:00:00.000Z"}).to_string(),
        json!({"_id": {"$oid": "60425da93519d90068f82962"}, "email": "bob@example.com", "email_verified": false,
               "passwordHash": bcrypt, "tenant": "acme", "connection": "Username-Password-Authentication"}).to_string(),
        "{\"user_id\": \"auth0|broken\", \"email\": ".to_string(),
        json!({"user_id": "google-oauth2|1234", "email": "cy@example.com", "blocked": true,
               "identities": [{"provider": "google-oauth2", "user_id": "1234", "connection": "google-oauth2", "isSocial": true}]}).to_string(),
        String::new(),
        json!({"email": "noid@example.com"}).to_string(),
        json!({"user_id": "auth0|60425da93519d90068f82961", "email": "ann-again@example.com"}).to_string(),
        json!({"_id": {"$oid": "60425da93519d90068f82963"}, "email": "md5@example.com", "passwordHash": "5f4dcc3b5aa765d61d8327deb882cf99"}).to_string(),
        json!({"user_id": "auth0|huge", "user_metadata": {"blob": "x".repeat(1_100_000)}}).to_string(),
    ];
    lines.join("\n") + "\n"
}

#[tokio::test]
async fn an_auth0_export_imports_once_reports_bad_lines_and_logs_in_with_its_hashes() {
    let iso = isolated().await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(&dir, "users.ndjson", auth0_export().as_bytes());

    let report = ok(&run_cli(&iso, &["import", &path, "--json"], None, &[]));
    assert_eq!(report["created"], 3, "{report:#}");
    assert_eq!(report["failed"], 5, "{report:#}");
    let failed = issue_lines(&report, "failed");
    let lines: Vec<i64> = failed.iter().map(|(l, _)| *l).collect();
    assert_eq!(lines, [3, 6, 7, 8, 9], "{failed:?}");
    assert!(failed[0].1.contains("malformed JSON"));
    assert!(failed[1].1.contains("user_id"));
    assert!(failed[2].1.contains("duplicate id"));
    assert!(failed[3].1.contains("unknown password hash"));
    assert!(failed[4].1.contains("larger than 1 MiB"));

    // Ids are kept as they are; the profile, metadata and blocked state come along.
    let ann = show(&iso, "auth0|60425da93519d90068f82961");
    assert_eq!(ann["state"], "pending");
    assert_eq!(ann["email"], "ann@example.com");
    assert_eq!(ann["app_metadata"], json!({"roles": ["admin"]}));
    assert_eq!(show(&iso, "google-oauth2|1234")["blocked"], true);
    assert_eq!(
        show(&iso, "bob@example.com")["id"],
        "auth0|60425da93519d90068f82962"
    );

    // The same file again changes nothing.
    let again = ok(&run_cli(&iso, &["import", &path, "--json"], None, &[]));
    assert_eq!(again["created"], 0, "{again:#}");
    assert_eq!(again["updated"], 0);
    assert_eq!(again["unchanged"], 3);

    // The imported bcrypt hash verifies at the first login, and is replaced
    // with argon2id.
    let app = spawn_app_on(iso, |_| {}).await;
    signs_in_with_the_legacy_password(&app, "bob@example.com").await;
    let stored = app
        .state
        .db
        .get_password("auth0|60425da93519d90068f82962")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.algorithm, "argon2id");
}

#[tokio::test]
async fn a_gzipped_export_and_a_dry_run() {
    let iso = isolated().await;
    let dir = tempfile::tempdir().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(auth0_export().as_bytes()).unwrap();
    let path = write_file(&dir, "export.ndjson.gz", &gz.finish().unwrap());

    let dry = ok(&run_cli(
        &iso,
        &["import", &path, "--dry-run", "--json"],
        None,
        &[],
    ));
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["created"], 3, "{dry:#}");
    assert_eq!(dry["failed"], 5);
    let listed = run_cli(&iso, &["users", "list"], None, &[]);
    assert!(
        listed.status.success() && listed.stdout.is_empty(),
        "a dry run writes nothing"
    );

    let real = ok(&run_cli(&iso, &["import", &path, "--json"], None, &[]));
    assert_eq!(real["created"], 3);
}

#[tokio::test]
async fn bulk_import_keycloak_okta_and_cognito_files_import() {
    let iso = isolated().await;
    let dir = tempfile::tempdir().unwrap();
    let bcrypt = bcrypt::hash(LEGACY_PASSWORD, 4).unwrap();

    // Auth0 bulk-import JSON: ids without the strategy prefix.
    let bulk = json!([
        {"user_id": "b1", "email": "b1@example.com", "given_name": "Bea",
         "custom_password_hash": {"algorithm": "bcrypt", "hash": {"value": bcrypt}}},
        {"email": "no-id@example.com"},
        {"user_id": "b3", "email": "b3@example.com",
         "custom_password_hash": {"algorithm": "md5", "hash": {"value": "x", "encoding": "hex"}}},
        {"user_id": "b4", "email": "b4@example.com", "password_hash": bcrypt}
    ]);
    // One element a line: element n starts on line n + 1.
    let text = format!(
        "[\n{}\n]\n",
        bulk.as_array()
            .unwrap()
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join(",\n")
    );
    let path = write_file(&dir, "bulk.json", text.as_bytes());
    let r = ok(&run_cli(&iso, &["import", &path, "--json"], None, &[]));
    assert_eq!(
        (r["created"].as_u64(), r["failed"].as_u64()),
        (Some(2), Some(2)),
        "{r:#}"
    );
    let lines: Vec<i64> = issue_lines(&r, "failed").iter().map(|(l, _)| *l).collect();
    assert_eq!(lines, [3, 4]);
    assert_eq!(show(&iso, "auth0|b1")["given_name"], "Bea");

    // A Keycloak realm export with its PBKDF2 credentials.
    let salt = base64_std(b"0123456789abcdef");
    let secret =
        json!({"value": pbkdf2_sha256(LEGACY_PASSWORD, b"0123456789abcdef", 1000), "salt": salt})
            .to_string();
    let data = json!({"hashIterations": 1000, "algorithm": "pbkdf2-sha256"}).to_string();
    let realm = json!({
        "realm": "acme",
        "users": [
            {"id": "8f6c2a0e-0b7a-4c1e-9a53-6f2d7f1c0a11", "username": "kay", "email": "kay@example.com",
             "emailVerified": true, "firstName": "Kay", "enabled": false,
             "credentials": [{"type": "password", "secretData": secret, "credentialData": data}]},
            {"username": "no-id"},
            {"id": "8f6c2a0e-0b7a-4c1e-9a53-6f2d7f1c0a13", "username": "argon",
             "credentials": [{"type": "password", "secretData": "{}", "credentialData": "{\"algorithm\":\"argon2\"}"}]}
        ],
        "clients": [{"id": "not-a-user"}]
    });
    let path = write_file(
        &dir,
        "realm-export.json",
        serde_json::to_string_pretty(&realm).unwrap().as_bytes(),
    );
    let r = ok(&run_cli(&iso, &["import", &path, "--json"], None, &[]));
    assert_eq!(
        (r["created"].as_u64(), r["failed"].as_u64()),
        (Some(1), Some(2)),
        "{r:#}"
    );
    let kay = show(&iso, "kay");
    assert_eq!(
        (kay["blocked"].clone(), kay["upstream"].clone()),
        (json!(true), json!("keycloak"))
    );

    // Okta's CSV (profile attribute names) and a row that is not CSV.
    let okta = "id,login,email,firstName,lastName,status\n\
                00u1,olga,olga@example.com,Olga,O,ACTIVE\n\
                00u2,otto,otto@example.com,Otto,O,SUSPENDED\n\
                ,nobody,nobody@example.com,No,Body,ACTIVE\n";
    let path = write_file(&dir, "okta.csv", okta.as_bytes());
    let r = ok(&run_cli(&iso, &["import", &path, "--json"], None, &[]));
    assert_eq!(
        (r["created"].as_u64(), r["failed"].as_u64()),
        (Some(2), Some(1)),
        "{r:#}"
    );
    assert_eq!(issue_lines(&r, "failed")[0].0, 4);
    assert_eq!(show(&iso, "00u2")["blocked"], true);
    assert_eq!(show(&iso, "olga")["given_name"], "Olga");

    // Cognito's import CSV plus the `sub` applications stored.
    let cognito = "sub,cognito:username,email,email_verified,given_name,custom:tenant\n\
                   5a1f0c7e-1111-4d2e-8f00-0000000000c1,cleo,cleo@example.com,TRUE,Cleo,acme\n";
    let path = write_file(&dir, "cognito.csv", cognito.as_bytes());
    let r = ok(&run_cli(&iso, &["import", &path, "--json"], None, &[]));
    assert_eq!(r["created"], 1, "{r:#}");
    let cleo = show(&iso, "cleo@example.com");
    assert_eq!(cleo["id"], "5a1f0c7e-1111-4d2e-8f00-0000000000c1");
    assert_eq!(cleo["email_verified"], true);
    assert_eq!(cleo["profile"]["custom:tenant"], "acme");
    assert_eq!(cleo["profile"]["cognito:username"], "cleo");

    // A Cognito file without `sub` would lose every user's id: refused whole.
    let path = write_file(
        &dir,
        "nosub.csv",
        b"cognito:username,email\ncleo,c@example.com\n",
    );
    let out = run_cli(
        &iso,
        &["import", &path, "--format", "cognito-csv"],
        None,
        &[],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("sub"));
}

#[tokio::test]
async fn an_import_killed_midway_resumes_where_it_stopped() {
    let iso = isolated().await;
    let dir = tempfile::tempdir().unwrap();
    let text: String = (0..2500)
        .map(|i| {
            json!({"user_id": format!("auth0|{i:024x}"), "email": format!("u{i}@example.com")})
                .to_string()
                + "\n"
        })
        .collect();
    let path = write_file(&dir, "big.ndjson", text.as_bytes());

    let crashed = run_cli(
        &iso,
        &["import", &path, "--batch", "1000"],
        None,
        &[("SWITCHYARD_TEST_CRASH_AFTER_PAGES", "1")],
    );
    assert!(
        !crashed.status.success(),
        "the crash hook aborts the process"
    );
    // Killed after its first committed page; on PostgreSQL the next batches
    // were in flight and may have committed too (the last one, of 500,
    // included), always whole and in order: what is in the store is exactly
    // what the job's position says.
    let status = ok(&run_cli(&iso, &["status", "--json"], None, &[]));
    let committed = status["users"]["total"].as_u64().unwrap();
    assert!(
        [1000, 2000, 2500].contains(&committed),
        "whole pages only: {status:#}"
    );
    assert_eq!(status["jobs"][0]["counters"]["created"], committed);
    assert_eq!(status["jobs"][0]["job"]["state"], "running");

    let refused = run_cli(&iso, &["import", &path, "--batch", "1000"], None, &[]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--resume"));

    let resumed = ok(&run_cli(
        &iso,
        &["import", &path, "--resume", "--json"],
        None,
        &[],
    ));
    assert_eq!(resumed["created"], 2500, "{resumed:#}");
    assert_eq!(resumed["unchanged"], 0, "nothing is read twice");
    let status = ok(&run_cli(&iso, &["status", "--json"], None, &[]));
    assert_eq!(status["users"]["by_state"]["pending"], 2500);
    assert_eq!(status["jobs"][0]["job"]["state"], "done");
}

#[tokio::test]
async fn strict_stops_at_the_first_bad_record() {
    let iso = isolated().await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(
        &dir,
        "users.ndjson",
        b"{\"user_id\": \"auth0|1\"}\nnot json\n{\"user_id\": \"auth0|2\"}\n",
    );
    let out = run_cli(&iso, &["import", &path, "--strict"], None, &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 2"));
    let listed = run_cli(&iso, &["users", "list"], None, &[]);
    assert!(
        listed.stdout.is_empty(),
        "--strict wrote nothing of the bad batch"
    );
}

fn base64_std(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn pbkdf2_sha256(password: &str, salt: &[u8], rounds: u32) -> String {
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password.as_bytes(), salt, rounds, &mut out);
    base64_std(&out)
}

#[tokio::test]
async fn users_sharing_an_email_across_batches_are_both_kept_one_as_the_login() {
    let iso = isolated().await;
    let dir = tempfile::tempdir().unwrap();
    // Auth0 allows one email on two connections; with two records a batch
    // the pair falls in different batches, which run concurrently.
    // The pair is two batches apart: with three batches in flight on
    // PostgreSQL, the third must still wait for the first.
    let lines: Vec<String> = [
        ("auth0|000000000000000000000001", "one@example.com"),
        ("auth0|000000000000000000000002", "shared@example.com"),
        ("auth0|000000000000000000000003", "three@example.com"),
        ("auth0|000000000000000000000004", "four@example.com"),
        ("google-oauth2|42", "Shared@Example.com"),
        ("auth0|000000000000000000000006", "six@example.com"),
    ]
    .iter()
    .map(|(id, email)| json!({"user_id": id, "email": email}).to_string())
    .collect();
    let path = write_file(&dir, "users.ndjson", (lines.join("\n") + "\n").as_bytes());
    let r = ok(&run_cli(
        &iso,
        &["import", &path, "--batch", "2", "--json"],
        None,
        &[],
    ));
    assert_eq!(r["created"], 6, "{r:#}");
    let notes = issue_lines(&r, "note");
    assert_eq!(notes.len(), 1, "{r:#}");
    assert_eq!(notes[0].0, 5);
    assert!(notes[0].1.contains("not usable to log in"));
    assert_eq!(
        show(&iso, "shared@example.com")["id"],
        "auth0|000000000000000000000002"
    );
    assert_eq!(
        show(&iso, "google-oauth2|42")["email"],
        "Shared@Example.com"
    );
}

/// On PostgreSQL a page of users none of whom exists is written by COPY,
/// and a page with any existing user by the general upsert
/// (src/store/pg_copy.rs). Whichever wrote a user, it must read back the
/// same: same fields, identities and metadata (a second import finds
/// nothing to change), and an imported hash that logs in.
#[tokio::test]
async fn new_users_are_stored_the_same_by_copy_and_by_upsert() {
    let iso = isolated().await;
    let dir = tempfile::tempdir().unwrap();
    let bcrypt = bcrypt::hash(LEGACY_PASSWORD, 4).unwrap();
    let user = |n: u32| {
        json!({"user_id": format!("auth0|{n:024x}"), "email": format!("U{n}@Example.com"), "email_verified": true,
               "name": "Ann Linked", "given_name": "Ann", "family_name": "Linked", "nickname": "ann",
               "picture": "https://cdn.example.com/ann.png", "blocked": n == 2,
               // Text COPY would have to escape these; the binary format must not.
               "user_metadata": {"note": "tab\there, \\ and \"quotes\", ünïcode, new\nline"},
               "app_metadata": {"roles": ["admin"], "plan": null},
               "identities": [
                   {"provider": "auth0", "user_id": format!("{n:024x}"), "connection": "Username-Password-Authentication", "isSocial": false},
                   {"provider": "google-oauth2", "user_id": format!("g{n}"), "connection": "google-oauth2", "isSocial": true}],
               "passwordHash": bcrypt, "last_login": "2024-02-02T10:00:00.000Z",
               "created_at": "2021-03-05T16:34:49.502Z", "updated_at": "2024-01-01T00:00:00.000Z"})
        .to_string()
    };
    let postgres = backend() == Backend::PostgresRedis;
    let debug = [("SWITCHYARD_LOG", "switchyard=debug")];
    let stderr = |out: &Output| String::from_utf8_lossy(&out.stderr).into_owned();

    let first = write_file(&dir, "first.ndjson", format!("{}\n", user(1)).as_bytes());
    let out = run_cli(&iso, &["import", &first, "--json"], None, &debug);
    assert_eq!(ok(&out)["created"], 1);
    assert_eq!(stderr(&out).contains("page written by COPY"), postgres);

    // User 1 exists now, so this page is upserted, user 2 with it.
    let second = write_file(
        &dir,
        "second.ndjson",
        format!("{}\n{}\n", user(1), user(2)).as_bytes(),
    );
    let out = run_cli(&iso, &["import", &second, "--json"], None, &debug);
    let r = ok(&out);
    assert_eq!(
        (r["created"].as_u64(), r["unchanged"].as_u64()),
        (Some(1), Some(1)),
        "{r:#}"
    );
    assert!(!stderr(&out).contains("page written by COPY"));

    let mut copied = show(&iso, &format!("auth0|{:024x}", 1));
    let mut upserted = show(&iso, &format!("auth0|{:024x}", 2));
    assert_eq!(copied["email"], "U1@Example.com");
    assert_eq!(
        copied["user_metadata"]["note"],
        "tab\there, \\ and \"quotes\", ünïcode, new\nline"
    );
    assert_eq!(
        (copied["blocked"].as_bool(), upserted["blocked"].as_bool()),
        (Some(false), Some(true))
    );
    for user in [&mut copied, &mut upserted] {
        let user = user.as_object_mut().unwrap();
        for varies in [
            "id",
            "email",
            "blocked",
            "created_at",
            "updated_at",
            "profile",
        ] {
            user.remove(varies);
        }
    }
    assert_eq!(copied, upserted);
    // The upstream's last login, which the profile leaves out, both ways too.
    let dormant = ok(&run_cli(
        &iso,
        &["report", "dormant", "--format", "json"],
        None,
        &[],
    ));
    let logins: Vec<&Value> = dormant["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| &u["upstream_last_login"])
        .collect();
    assert_eq!(logins, ["2024-02-02T10:00:00Z", "2024-02-02T10:00:00Z"]);

    // Identities, metadata and hashes read back as imported, whichever
    // path wrote them.
    let again = ok(&run_cli(&iso, &["import", &second, "--json"], None, &[]));
    assert_eq!(again["unchanged"], 2, "{again:#}");

    // A page large enough to go in several CopyData messages, whose last
    // user exists: the COPY fails after most of the page was sent, and the
    // page is upserted whole.
    let big: String = (3..400).chain([1]).map(|n| user(n) + "\n").collect();
    let big = write_file(&dir, "big.ndjson", big.as_bytes());
    let out = run_cli(&iso, &["import", &big, "--json"], None, &debug);
    let r = ok(&out);
    assert_eq!(
        (r["created"].as_u64(), r["unchanged"].as_u64()),
        (Some(397), Some(1)),
        "{r:#}"
    );
    assert_eq!(stderr(&out).contains("upserting"), postgres);

    let app = spawn_app_on(iso, |_| {}).await;
    signs_in_with_the_legacy_password(&app, "u1@example.com").await;
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[tokio::test]
async fn a_file_refused_at_its_header_leaves_no_job_to_resume() {
    let iso = isolated().await;
    let dir = tempfile::tempdir().unwrap();
    // A CSV export without the id column: refused before any record.
    let path = write_file(&dir, "users.csv", b"name,mail\nAnn,ann@example.com\n");
    let refused = run_cli(&iso, &["import", &path, "--format", "csv"], None, &[]);
    assert!(!refused.status.success());
    assert!(
        stderr_of(&refused).contains("no id column"),
        "{}",
        stderr_of(&refused)
    );
    let status = ok(&run_cli(&iso, &["status", "--json"], None, &[]));
    assert!(
        status["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["job"]["state"] != "running"),
        "no job left running: {status:#}"
    );

    // Fixed, the same file imports with a plain run (no --resume).
    std::fs::write(&path, b"id,name,email\nu1,Ann,ann@example.com\n").unwrap();
    let fixed = ok(&run_cli(
        &iso,
        &["import", &path, "--format", "csv", "--json"],
        None,
        &[],
    ));
    assert_eq!(fixed["created"], 1, "{fixed:#}");
}

#[tokio::test]
async fn a_job_that_failed_before_committing_anything_starts_afresh() {
    let iso = isolated().await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(
        &dir,
        "users.ndjson",
        b"not json\n{\"user_id\": \"auth0|1\"}\n",
    );
    let stopped = run_cli(&iso, &["import", &path, "--strict"], None, &[]);
    assert!(!stopped.status.success());
    let status = ok(&run_cli(&iso, &["status", "--json"], None, &[]));
    assert_eq!(status["jobs"][0]["job"]["state"], "failed", "{status:#}");

    let again = ok(&run_cli(&iso, &["import", &path, "--json"], None, &[]));
    assert_eq!(again["created"], 1, "{again:#}");
    assert_eq!(again["failed"], 1, "{again:#}");
}

#[tokio::test]
async fn resume_keeps_the_format_and_provider_the_job_began_with() {
    let iso = isolated().await;
    let dir = tempfile::tempdir().unwrap();
    // `.txt`: the format cannot be guessed, only the job knows it.
    let path = write_file(
        &dir,
        "users.txt",
        b"{\"user_id\": \"auth0|1\"}\nnot json\n{\"user_id\": \"auth0|2\"}\n",
    );
    let stopped = run_cli(
        &iso,
        &[
            "import",
            &path,
            "--format",
            "auth0-export",
            "--strict",
            "--batch",
            "1",
        ],
        None,
        &[],
    );
    assert!(!stopped.status.success());

    let other = run_cli(
        &iso,
        &["import", &path, "--resume", "--format", "auth0-bulk"],
        None,
        &[],
    );
    assert!(!other.status.success());
    let why = stderr_of(&other);
    assert!(why.contains("imports this file as auth0-export"), "{why}");

    let other = run_cli(
        &iso,
        &["import", &path, "--resume", "--provider", "okta"],
        None,
        &[],
    );
    assert!(!other.status.success());
    let why = stderr_of(&other);
    assert!(why.contains("coming from auth0, not okta"), "{why}");

    let elsewhere = write_file(&dir, "other.ndjson", b"{\"user_id\": \"auth0|3\"}\n");
    let other = run_cli(&iso, &["import", &elsewhere, "--resume"], None, &[]);
    assert!(!other.status.success());
    let why = stderr_of(&other);
    assert!(why.contains("users.txt"), "names the job's file: {why}");

    let resumed = ok(&run_cli(
        &iso,
        &["import", &path, "--resume", "--json"],
        None,
        &[],
    ));
    assert_eq!(resumed["created"], 2, "{resumed:#}");
    assert_eq!(resumed["failed"], 1, "{resumed:#}");
}

#[tokio::test]
async fn an_import_where_every_record_failed_exits_non_zero() {
    let iso = isolated().await;
    let dir = tempfile::tempdir().unwrap();
    // A CSV given as an Auth0 export: every line is malformed JSON.
    let path = write_file(
        &dir,
        "users.ndjson",
        b"id,email\nu1,ann@example.com\nu2,bob@example.com\n",
    );
    for dry in [true, false] {
        let mut args = vec!["import", path.as_str(), "--json"];
        if dry {
            args.push("--dry-run");
        }
        let out = run_cli(&iso, &args, None, &[]);
        assert!(!out.status.success(), "dry run {dry}");
        let why = stderr_of(&out);
        assert!(why.contains("every record failed (3)"), "{why}");
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["failed"], 3, "the report is still printed");
    }
    // The job ran to its end: running it again is not a resume.
    let again = run_cli(&iso, &["import", &path], None, &[]);
    assert!(!again.status.success());
    assert!(
        !stderr_of(&again).contains("--resume"),
        "{}",
        stderr_of(&again)
    );

    // A JSON object given as a bulk-import array fails as a whole.
    let bulk = write_file(&dir, "bulk.json", b"{\"user_id\": \"1\"}\n");
    let out = run_cli(
        &iso,
        &["import", &bulk, "--format", "auth0-bulk"],
        None,
        &[],
    );
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains("every record failed (1)"));
}
