//! The binary's logs as a collector reads them: with
//! `SWITCHYARD_LOG_FORMAT=json`, one JSON object per line, every line of a
//! request carrying its request id (the client's `X-Request-Id` when it is
//! a sane token, else a new one), echoed in the response; no query string
//! in any line.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::*;

/// A `switchyard serve` with JSON logs, and its stderr line by line.
struct Served {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    fn start(iso: &Isolated) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("switchyard.toml");
        std::fs::write(&config, "listen = \"127.0.0.1:0\"\n").unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["--config", &config.to_string_lossy(), "serve"])
            .env("SWITCHYARD_DATABASE_URL", &iso.database_url)
            .env_remove("SWITCHYARD_CONFIG")
            .env("SWITCHYARD_LOG_FORMAT", "json")
            // tower-http's per-request lines are at debug.
            .env("SWITCHYARD_LOG", "info,tower_http=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the switchyard binary runs");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Served {
            child,
            lines,
            seen: Vec::new(),
            _dir: dir,
        }
    }

    /// Reads lines until `until` holds for one (returned), failing after a
    /// minute with every line seen.
    fn wait_for(&mut self, what: &str, until: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    let value: Value = serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line}"));
                    if until(&value) {
                        return value;
                    }
                }
                Err(_) => panic!("no log line for {what} in {:#?}", self.seen),
            }
        }
    }
}

/// The request span's fields on a line, wherever the span stands.
fn request_span(line: &Value) -> Option<&Value> {
    line["spans"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == "request")
}

#[tokio::test]
async fn json_logs_carry_each_requests_id_and_echo_it() {
    let iso = isolated().await;
    let mut served = Served::start(&iso);
    let serving = served.wait_for("the server starting", |l| {
        l["fields"]["message"] == "serving"
    });
    assert!(serving["timestamp"].is_string());
    assert_eq!(serving["level"], "INFO");
    assert!(serving.get("request_id").is_none(), "no request, no id");
    let port = serving["fields"]["port"]
        .as_u64()
        .expect("the port is logged");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();

    // A sane id from a proxy in front is kept and echoed.
    let sent = "edge-7f3a.9_B";
    let response = http
        .get(format!(
            "{base}/.well-known/openid-configuration?login_hint=secret-in-query"
        ))
        .header("X-Request-Id", sent)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    assert_eq!(response.headers()["x-request-id"], sent);
    let finished = served.wait_for("the request with an id", |l| {
        request_span(l).is_some_and(|s| s["request_id"] == sent)
            && l["fields"]["message"] == "finished processing request"
    });
    let span = request_span(&finished).unwrap();
    assert_eq!(span["method"], "GET");
    assert_eq!(span["path"], "/.well-known/openid-configuration");
    assert_eq!(finished["span"]["request_id"], sent);
    assert_eq!(
        finished["request_id"], sent,
        "on top, for a collector's filter"
    );
    assert_eq!(finished["fields"]["status"], 200);

    // Without one (or with one that is not a sane token), a new id is
    // made, logged and echoed.
    for header in [None, Some("x".repeat(65)), Some("two words".to_string())] {
        let mut request = http.get(format!("{base}/.well-known/jwks.json"));
        if let Some(h) = &header {
            request = request.header("X-Request-Id", h);
        }
        let response = request.send().await.unwrap();
        let id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            switchyard::startup::sane_request_id(&id),
            "a sane id is made: {id}"
        );
        assert_ne!(Some(&id), header.as_ref());
        served.wait_for("the request without an id", |l| {
            request_span(l).is_some_and(|s| s["request_id"] == id.as_str())
                && l["fields"]["message"] == "finished processing request"
        });
    }

    // Every line while serving was JSON (wait_for parsed each), and none
    // holds the query string.
    for line in &served.seen {
        assert!(!line.contains("secret-in-query"), "{line}");
    }
    // Each line logged in a request has its id: both the start and end.
    let ids: Vec<String> = served
        .seen
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| {
            l["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("tower_http"))
        })
        .map(|l| {
            let id = l["request_id"].as_str().unwrap_or_default().to_string();
            assert_eq!(
                request_span(&l).map(|s| &s["request_id"]),
                Some(&l["request_id"])
            );
            id
        })
        .collect();
    assert!(ids.len() >= 8, "start and end of 4 requests: {ids:?}");
    assert!(ids.iter().all(|id| !id.is_empty()), "{ids:?}");
}
