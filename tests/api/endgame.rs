//! The end game, run as an operator runs it: `report dormant` lists the
//! users a switch-off would lock out, and `campaign reset` queues one
//! invitation email for each, resumably, paced, and never twice within
//! the cooldown. The real binary on the test's database; the report's users
//! come through real backfills of the fake Auth0 and Okta Management APIs
//! and an Auth0 export file, the campaign's are seeded through the store
//! the way a backfill writes them.

use std::collections::HashMap;
use std::process::{Output, Stdio};
use std::sync::Arc;

use serde_json::{Value, json};
use switchyard::config::Settings;
use switchyard::state::open_database;
use switchyard::store::jobs::PageCommit;
use switchyard::store::outbox::OutboxKind;
use switchyard::store::record::{Claims, Record};
use switchyard::store::{Database, Migration, NewUser, Profile, UpstreamProfile};

use crate::backfill::Operator;
use crate::helpers::*;
use switchyard_kit::fake::{FakeUpstream, FakeUser, Flavor};

async fn database(iso: &Isolated) -> Arc<dyn Database> {
    open_database(&Settings {
        database_url: iso.database_url.clone(),
        ..Settings::default()
    })
    .await
    .unwrap()
}

/// A user as a backfill of `provider` reads them: `claims` is the
/// upstream's record.
fn record(id: &str, email: Option<&str>, claims: Value) -> Record {
    let mut r = Record::new(id);
    r.profile.email = email.map(Into::into);
    let Value::Object(map) = claims else {
        panic!("claims are an object")
    };
    r.claims = Claims::new(&map);
    r
}

/// Writes the records as `pending` users of `provider`, as a backfill page does.
async fn backfill(db: &dyn Database, provider: &str, records: &[Record]) {
    let applied = db
        .commit_page(&PageCommit {
            chunk: None,
            done: false,
            split: vec![],
            records,
            rejected: &[],
            provider,
            dry_run: false,
            order: None,
        })
        .await
        .unwrap();
    assert_eq!(applied.counters.created, records.len() as u64);
}

fn stdout_of(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn cli(iso: &Isolated, args: &[&str]) -> String {
    stdout_of(&run_cli(iso, args, None, &[]))
}

fn cli_json(iso: &Isolated, args: &[&str]) -> Value {
    let out = cli(iso, args);
    serde_json::from_str(&out).unwrap_or_else(|_| panic!("not JSON: {out}"))
}

/// The email rows of the outbox, per user.
async fn emails_per_user(db: &dyn Database) -> HashMap<String, Vec<Value>> {
    let mut per_user: HashMap<String, Vec<Value>> = HashMap::new();
    for row in db.list_outbox(None, 100_000).await.unwrap() {
        assert_eq!(row.kind, OutboxKind::Email);
        per_user.entry(row.user_id).or_default().push(row.payload);
    }
    per_user
}

/// A user of the fake upstream whose record says they last logged in
/// at `last_login` (`None`: never), spelled as the vendor spells it.
fn upstream_user(op: &Operator, id: &str, email: &str, last_login: Option<&str>) {
    op.fake.add_user(FakeUser::new(id, email, "pw-unused-here"));
    let field = match op.fake.flavor {
        Flavor::Okta => "lastLogin",
        _ => "last_login",
    };
    let mut patch = serde_json::Map::new();
    patch.insert(field.into(), json!(last_login));
    op.fake.update_management_user(id, Value::Object(patch));
}

/// Pending users of four sources: Auth0 and Okta backfilled through their
/// Management APIs (their listings carry the last login), an Auth0 export
/// file imported (its lines carry it too), a Keycloak user (whose records
/// carry none); and one user in each other state. The Auth0 operator is
/// returned for a later listing.
async fn seed_every_state(iso: &Isolated, db: &dyn Database) -> Operator {
    let auth0 = Operator::on(
        iso.same_database(),
        FakeUpstream::start(Flavor::Auth0).await,
    );
    upstream_user(
        &auth0,
        "auth0|a",
        "a@example.com",
        Some("2024-01-10T00:00:00.000Z"),
    );
    upstream_user(
        &auth0,
        "auth0|b",
        "b@example.com",
        Some("2025-06-01T00:00:00.000Z"),
    );
    upstream_user(&auth0, "auth0|c", "c@example.com", None);
    // A full Auth0 backfill: a users-export job of the fields the mapping reads.
    let report = auth0.json(&["backfill"]);
    assert_eq!(report["report"]["created"], 3, "{report:#}");

    let okta = Operator::on(iso.same_database(), FakeUpstream::start(Flavor::Okta).await);
    upstream_user(
        &okta,
        "00u1okta",
        "o@example.com",
        Some("2024-03-01T12:00:00.000Z"),
    );
    let report = okta.json(&["backfill"]);
    assert_eq!(report["report"]["created"], 1, "{report:#}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.ndjson");
    let line = json!({"user_id": "auth0|file", "email": "f@example.com",
                      "last_login": "2023-05-05T00:00:00.000Z", "logins_count": 2});
    std::fs::write(&path, format!("{line}\n")).unwrap();
    let imported = cli_json(
        iso,
        &[
            "import",
            path.to_str().unwrap(),
            "--format",
            "auth0-export",
            "--json",
        ],
    );
    assert_eq!(imported["created"], 1, "{imported:#}");

    // Keycloak's records carry no last login: a claim of Auth0's spelling
    // in the stored claims means nothing, there or anywhere.
    backfill(
        db,
        "keycloak",
        &[record(
            "kc-1",
            None,
            json!({"last_login": "2020-01-01T00:00:00Z"}),
        )],
    )
    .await;
    let profile = |id: &str, email: &str| UpstreamProfile {
        id: id.into(),
        profile: Profile {
            email: Some(email.into()),
            ..Profile::default()
        },
        raw: Default::default(),
    };
    db.upsert_upstream_user("auth0", &profile("auth0|shadow", "s@example.com"))
        .await
        .unwrap();
    db.migrate_upstream_user(
        "auth0",
        &profile("auth0|migrated", "m@example.com"),
        &Migration {
            hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g".into(),
            algorithm: "argon2id".into(),
            route: "password".into(),
            mark_upstream: false,
        },
    )
    .await
    .unwrap();
    db.create_user(
        &NewUser {
            profile: Profile {
                email: Some("l@example.com".into()),
                ..Profile::default()
            },
            ..NewUser::default()
        },
        None,
    )
    .await
    .unwrap();
    auth0
}

const PENDING: [&str; 6] = [
    "00u1okta",
    "auth0|a",
    "auth0|b",
    "auth0|c",
    "auth0|file",
    "kc-1",
];

// Multi-threaded: the fake upstreams serve while the test waits for the binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dormant_report_lists_pending_users_in_every_format_with_totals() {
    let iso = isolated().await;
    let db = database(&iso).await;
    let auth0 = seed_every_state(&iso, &*db).await;
    // One of them invited: the first by id.
    let invited = cli_json(&iso, &["campaign", "reset", "--limit", "1", "--json"]);
    assert_eq!(invited["invited"], 1, "{invited:#}");

    // JSON: every pending user, and no one else; the totals beside.
    let report = cli_json(&iso, &["report", "dormant", "--format", "json"]);
    let users = report["users"].as_array().unwrap();
    let ids: Vec<&str> = users.iter().map(|u| u["id"].as_str().unwrap()).collect();
    assert_eq!(ids, PENDING, "{report:#}");
    assert_eq!(report["listed"], 6);
    assert_eq!(
        report["totals"],
        json!({"local": 1, "pending": 6, "shadow": 1, "migrated": 1, "total": 9})
    );
    let by_id: HashMap<&str, &Value> = ids.iter().copied().zip(users).collect();
    assert_eq!(
        by_id["auth0|a"]["upstream_last_login"],
        "2024-01-10T00:00:00Z"
    );
    assert_eq!(
        by_id["00u1okta"]["upstream_last_login"],
        "2024-03-01T12:00:00Z"
    );
    assert_eq!(
        by_id["auth0|file"]["upstream_last_login"],
        "2023-05-05T00:00:00Z"
    );
    assert_eq!(by_id["auth0|c"]["upstream_last_login"], Value::Null);
    assert_eq!(by_id["kc-1"]["upstream_last_login"], Value::Null);
    assert_eq!(by_id["kc-1"]["email"], Value::Null);
    assert_eq!(by_id["auth0|a"]["email"], "a@example.com");
    assert!(by_id["00u1okta"]["invited_at"].is_string(), "{report:#}");
    assert_eq!(by_id["auth0|a"]["invited_at"], Value::Null);
    assert!(
        by_id["auth0|b"]["created_at"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );

    // CSV: a header and one record per user, no totals.
    let csv_text = cli(&iso, &["report", "dormant", "--format", "csv"]);
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    assert_eq!(
        reader.headers().unwrap(),
        vec![
            "id",
            "email",
            "upstream_last_login",
            "created_at",
            "invited_at"
        ]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 6, "{csv_text}");
    let a = rows.iter().find(|r| &r[0] == "auth0|a").unwrap();
    assert_eq!(&a[1], "a@example.com");
    assert_eq!(&a[2], "2024-01-10T00:00:00Z");
    assert_eq!(&a[4], "");
    assert!(!csv_text.contains("total"));

    // The table: a line per user, then the users by state.
    let table = cli(&iso, &["report", "dormant"]);
    for id in PENDING {
        assert!(
            table.lines().any(|l| l.starts_with(&format!("{id} "))),
            "{id} in {table}"
        );
    }
    for absent in ["auth0|shadow", "auth0|migrated", "l@example.com"] {
        assert!(!table.contains(absent), "{absent} in {table}");
    }
    for (state, n) in [
        ("pending", 6),
        ("shadow", 1),
        ("migrated", 1),
        ("local", 1),
        ("total", 9),
    ] {
        assert!(
            table
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>() == [state, &n.to_string()]),
            "{state} {n} in {table}"
        );
    }

    // --since: last login strictly before the date, or unknown.
    let since = |date: &str| -> Vec<String> {
        let r = cli_json(
            &iso,
            &["report", "dormant", "--format", "json", "--since", date],
        );
        r["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        since("2024-02-01"),
        ["auth0|a", "auth0|c", "auth0|file", "kc-1"]
    );
    assert_eq!(
        since("2024-03-01T12:00:00Z"),
        ["auth0|a", "auth0|c", "auth0|file", "kc-1"]
    );
    assert_eq!(
        since("2024-03-01T12:00:01Z"),
        ["00u1okta", "auth0|a", "auth0|c", "auth0|file", "kc-1"]
    );
    assert_eq!(since("2023-05-05"), ["auth0|c", "kc-1"]);
    assert_eq!(since("2030-01-01"), PENDING);

    // A login at the upstream is no difference for verify; the next
    // listing refreshes the last login, and changes nothing else.
    auth0
        .fake
        .update_management_user("auth0|a", json!({"last_login": "2024-06-01T08:30:00.000Z"}));
    // (Verify is not clean as a whole: the shadow and migrated users and
    // the imported one are Auth0's too, and the fake does not list them.)
    let verify = auth0.run(&["verify", "--json"], &[]);
    let verify: Value = serde_json::from_slice(&verify.stdout).unwrap();
    assert_eq!(verify["differing_users"], 0, "{verify:#}");
    assert_eq!(verify["missing_locally"]["count"], 0, "{verify:#}");
    let again = auth0.json(&["backfill"]);
    assert_eq!(again["report"]["created"], 0, "{again:#}");
    assert_eq!(again["report"]["updated"], 0, "{again:#}");
    assert_eq!(again["report"]["unchanged"], 3, "{again:#}");
    let report = cli_json(&iso, &["report", "dormant", "--format", "json"]);
    let a = report["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["id"] == "auth0|a")
        .unwrap();
    assert_eq!(a["upstream_last_login"], "2024-06-01T08:30:00Z");
    assert_eq!(since("2024-02-01"), ["auth0|c", "auth0|file", "kc-1"]);
    let bad = run_cli(
        &iso,
        &["report", "dormant", "--since", "yesterday"],
        None,
        &[],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("YYYY-MM-DD"));

    // --output: the report goes to the file, nothing to standard output.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dormant.json");
    let printed = cli(
        &iso,
        &[
            "report",
            "dormant",
            "--format",
            "json",
            "--output",
            path.to_str().unwrap(),
        ],
    );
    assert_eq!(printed, "");
    let written: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(
        written,
        cli_json(&iso, &["report", "dormant", "--format", "json"])
    );
}

#[tokio::test]
async fn a_campaign_killed_midway_resumes_and_invites_every_pending_user_once() {
    let iso = isolated().await;
    let db = database(&iso).await;
    let records: Vec<Record> = (0..1000)
        .map(|i| {
            record(
                &format!("auth0|{i:04}"),
                Some(&format!("u{i}@example.com")),
                json!({}),
            )
        })
        .collect();
    backfill(&*db, "auth0", &records).await;

    // The real binary, killed once it has queued some of the emails.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["campaign", "reset", "--rate", "50"])
        .env("SWITCHYARD_DATABASE_URL", &iso.database_url)
        .env_remove("SWITCHYARD_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    loop {
        let queued = db.outbox_counts(0).await.unwrap().pending;
        if queued >= 100 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the campaign ended before it was killed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let queued = db.outbox_counts(0).await.unwrap().pending;
    assert!(queued < 1000, "killed half-way: {queued}");
    let status = cli_json(&iso, &["status", "--json"]);
    assert_eq!(status["jobs"][0]["job"]["kind"], "campaign");
    assert_eq!(status["jobs"][0]["job"]["state"], "running");
    let job = status["jobs"][0]["job"]["id"].as_str().unwrap().to_string();
    assert_eq!(status["campaigns"][&job]["invited"], queued, "{status:#}");

    // A new campaign is refused while this one is unfinished.
    let refused = run_cli(&iso, &["campaign", "reset"], None, &[]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--resume"));

    let resumed = cli_json(&iso, &["campaign", "reset", "--resume", "--json"]);
    assert_eq!(resumed["job"], job.as_str());
    assert_eq!(resumed["invited"], 1000, "{resumed:#}");
    assert_eq!(resumed["invited_this_run"], 1000 - queued);
    assert_eq!(resumed["skipped_cooldown"], 0, "nobody is seen twice");

    // Exactly one invitation email per user, to their address.
    let emails = emails_per_user(&*db).await;
    assert_eq!(emails.len(), 1000);
    for (i, r) in records.iter().enumerate() {
        let sent = &emails[&r.id];
        assert_eq!(sent.len(), 1, "{}: {sent:?}", r.id);
        assert_eq!(sent[0]["message"], "invitation");
        assert_eq!(sent[0]["to"], format!("u{i}@example.com"));
    }
    let report = cli_json(&iso, &["report", "dormant", "--format", "json"]);
    let invited = report["users"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["invited_at"].is_string())
        .count();
    assert_eq!(invited, 1000, "an invitation recorded for each");
    let status = cli_json(&iso, &["status", "--json"]);
    assert_eq!(status["jobs"][0]["job"]["state"], "done");

    // A second campaign within the cooldown queues nothing.
    let again = cli_json(&iso, &["campaign", "reset", "--json"]);
    assert_ne!(again["job"], job.as_str());
    assert_eq!(again["invited"], 0, "{again:#}");
    assert_eq!(again["skipped_cooldown"], 1000);
    assert_eq!(db.outbox_counts(0).await.unwrap().pending, 1000);
    let text = cli(&iso, &["status"]);
    assert!(
        text.contains(
            "invited 0, skipped (cooldown) 1000, skipped (no email) 0, skipped (blocked) 0"
        ),
        "{text}"
    );
    assert!(
        text.contains("invited 1000, skipped (cooldown) 0"),
        "{text}"
    );

    // A server on that database sends them: one message to each address,
    // each with its own link.
    let sink = switchyard_kit::smtp::SmtpSink::start().await;
    let _app = spawn_app_on(iso.same_database(), |s| crate::recovery::send_to(&sink, s)).await;
    let messages = sink
        .wait_for(1000, std::time::Duration::from_secs(180))
        .await
        .unwrap();
    let mut per_address: HashMap<String, usize> = HashMap::new();
    let mut links = std::collections::HashSet::new();
    for m in &messages {
        for to in &m.rcpt_to {
            *per_address.entry(to.clone()).or_default() += 1;
        }
        links.insert(m.reset_link().expect("an invitation link"));
    }
    assert_eq!(per_address.len(), 1000);
    assert!(per_address.values().all(|&n| n == 1), "one message each");
    assert_eq!(links.len(), 1000, "a link of its own each");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(sink.messages().len(), 1000, "and no more");
}

#[tokio::test]
async fn a_campaign_skips_blocked_and_emailless_users_dry_runs_and_stops_at_its_limit() {
    let iso = isolated().await;
    let db = database(&iso).await;
    let mut records: Vec<Record> = (0..10)
        .map(|i| {
            record(
                &format!("auth0|{i:02}"),
                Some(&format!("u{i}@example.com")),
                json!({}),
            )
        })
        .collect();
    let mut blocked = record("auth0|blocked", Some("blocked@example.com"), json!({}));
    blocked.blocked = true;
    records.push(blocked);
    records.push(record("auth0|no-email", None, json!({})));
    backfill(&*db, "auth0", &records).await;
    // Not pending: never invited.
    db.upsert_upstream_user(
        "auth0",
        &UpstreamProfile {
            id: "auth0|shadow".into(),
            profile: Profile {
                email: Some("s@example.com".into()),
                ..Profile::default()
            },
            raw: Default::default(),
        },
    )
    .await
    .unwrap();

    let dry = cli_json(&iso, &["campaign", "reset", "--dry-run", "--json"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["invited"], 10, "{dry:#}");
    assert_eq!(dry["skipped_blocked"], 1);
    assert_eq!(dry["skipped_no_email"], 1);
    assert_eq!(
        db.outbox_counts(0).await.unwrap().pending,
        0,
        "a dry run writes nothing"
    );
    assert_eq!(db.list_jobs(10).await.unwrap().len(), 0);

    let limited = cli_json(
        &iso,
        &[
            "campaign", "reset", "--limit", "3", "--rate", "1000", "--json",
        ],
    );
    assert_eq!(limited["invited"], 3, "{limited:#}");
    assert_eq!(limited["stopped_at_limit"], true);
    assert_eq!(db.outbox_counts(0).await.unwrap().pending, 3);
    let text = cli(&iso, &["campaign", "reset", "--resume", "--limit", "2"]);
    assert!(text.contains("invited 5,"), "{text}");
    assert!(text.contains("--resume"), "{text}");

    let done = cli_json(&iso, &["campaign", "reset", "--resume", "--json"]);
    assert_eq!(done["invited"], 10, "{done:#}");
    assert_eq!(done["invited_this_run"], 5);
    assert_eq!(done["skipped_blocked"], 1);
    assert_eq!(done["skipped_no_email"], 1);
    assert_eq!(done["stopped_at_limit"], false);
    let emails = emails_per_user(&*db).await;
    assert_eq!(emails.len(), 10);
    assert!(emails.values().all(|e| e.len() == 1));
    for skipped in ["auth0|blocked", "auth0|no-email", "auth0|shadow"] {
        assert!(!emails.contains_key(skipped), "{skipped}");
    }

    // Within the cooldown a dry run finds nobody to invite.
    let dry = cli_json(&iso, &["campaign", "reset", "--dry-run", "--json"]);
    assert_eq!(dry["invited"], 0, "{dry:#}");
    assert_eq!(dry["skipped_cooldown"], 10);

    let bad = run_cli(
        &iso,
        &["campaign", "reset", "--cooldown", "7 weeks"],
        None,
        &[],
    );
    assert!(!bad.status.success());
}

#[tokio::test]
async fn two_campaigns_at_once_never_invite_a_user_twice() {
    use switchyard::store::invitations::{Invite, Outcome};
    use switchyard::store::jobs::JobKind;
    use switchyard::store::outbox::QueuedWrite;
    use switchyard::store::position::ChunkPosition;

    let iso = isolated().await;
    // Two handles with their own connections, as two processes have.
    let (one, two) = (database(&iso).await, database(&iso).await);
    let records: Vec<Record> = (0..30)
        .map(|i| {
            record(
                &format!("auth0|{i:02}"),
                Some(&format!("u{i}@example.com")),
                json!({}),
            )
        })
        .collect();
    backfill(&*one, "auth0", &records).await;
    let start = |db: Arc<dyn Database>, job: &'static str| async move {
        db.create_job(
            job,
            JobKind::Campaign,
            &json!({}),
            &[ChunkPosition::Campaign { after: None }],
        )
        .await
        .unwrap();
        db.claim_chunk(job, job, 0, &[]).await.unwrap().unwrap()
    };
    let (a, b) = (start(one.clone(), "a").await, start(two.clone(), "b").await);
    let now = switchyard::store::now();
    for r in &records {
        let email = |to: &str| QueuedWrite {
            kind: OutboxKind::Email,
            user_id: r.id.clone(),
            payload: json!({"message": "invitation", "to": to}),
            secret: None,
        };
        let invite = |chunk, worker| Invite {
            chunk,
            worker,
            position: ChunkPosition::Campaign {
                after: Some(r.id.clone()),
            },
            user_id: &r.id,
            cooldown_since: now - 3600,
            now,
            email: &email,
        };
        let (for_a, for_b) = (invite(&a, "a"), invite(&b, "b"));
        let (x, y) = tokio::join!(one.invite(&for_a), two.invite(&for_b));
        let mut outcomes = [x.unwrap(), y.unwrap()];
        outcomes.sort_by_key(|o| *o == Outcome::Cooldown);
        assert_eq!(outcomes, [Outcome::Invited, Outcome::Cooldown], "{}", r.id);
    }
    assert_eq!(one.outbox_counts(0).await.unwrap().pending, 30);
    let (ca, cb) = (
        one.campaign_counters("a").await.unwrap(),
        one.campaign_counters("b").await.unwrap(),
    );
    assert_eq!(ca.invited + cb.invited, 30);
    assert_eq!(ca.skipped_cooldown + cb.skipped_cooldown, 30);
}
