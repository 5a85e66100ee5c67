//! A real browser for the tests: Debian's Chromium, headless, driven through
//! ChromeDriver with the W3C WebDriver protocol (plain JSON over HTTP, so no
//! client crate is needed). What a person sees is what these tests see:
//! Content-Security-Policy, redirects after a form, cookies, iframes,
//! `postMessage`, and each page's screenshot.
//!
//! Screenshots go to `<dir>/screenshots/<test>/`, where `dir` is the
//! caller's (the tests pass cargo's `CARGO_TARGET_TMPDIR`, `target/tmp`,
//! which is kept after the run) so they can be looked at.
//!
//! When `chromium` or `chromedriver` is missing the browser tests say so
//! and pass without running, unless `CI` is set: then they fail, because
//! `.ci/run` installs both.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Chromium is the heaviest thing a test starts: on a 2-core machine a few
/// at a time finish sooner than all at once.
static BROWSERS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

pub struct Chrome {
    _turn: tokio::sync::SemaphorePermit<'static>,
    driver: Child,
    base: String,
    http: reqwest::Client,
    /// Where this test's screenshots go.
    pub shots: PathBuf,
    _profile: tempfile::TempDir,
}

/// Whether the browser tests can run here; `false` means skip (and say so).
/// With `CI` set, a missing browser is a failure, not a skip.
pub fn available(test: &str) -> bool {
    let present =
        std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists();
    if !present {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but chromium and chromium-driver are not installed"
        );
        eprintln!("{test}: skipped, chromium and chromium-driver are not installed");
    }
    present
}

impl Chrome {
    /// A fresh headless Chromium with an empty profile; its screenshots
    /// go under `dir` (see the module documentation).
    pub async fn start(dir: impl AsRef<std::path::Path>, test: &str) -> Chrome {
        let turn = BROWSERS
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let (driver, port) = start_driver();
        let base = format!("http://127.0.0.1:{port}");
        let profile = tempfile::tempdir().expect("profile directory");
        let shots = dir.as_ref().join("screenshots").join(test);
        let _ = std::fs::remove_dir_all(&shots);
        std::fs::create_dir_all(&shots).expect("screenshot directory");
        let http = reqwest::Client::new();
        let caps = json!({
            "capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": CHROMIUM,
                    "args": [
                        "--headless=new", "--no-sandbox", "--disable-gpu",
                        "--disable-dev-shm-usage", "--window-size=900,800",
                        "--no-first-run", "--disable-sync",
                        format!("--user-data-dir={}", profile.path().display()),
                    ],
                },
                "goog:loggingPrefs": {"browser": "ALL"},
            }}
        });
        let mut chrome = Chrome {
            _turn: turn,
            driver,
            base,
            http,
            shots,
            _profile: profile,
        };
        let created = chrome.call("POST", "/session", caps).await;
        let id = created["sessionId"]
            .as_str()
            .expect("a WebDriver session")
            .to_string();
        chrome.base = format!("{}/session/{id}", chrome.base);
        chrome
    }

    async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "GET" => self.http.get(&url),
            "DELETE" => self.http.delete(&url),
            _ => self.http.post(&url).json(&body),
        };
        let response = request
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .expect("chromedriver answers");
        let status = response.status();
        let value: Value = response.json().await.expect("WebDriver JSON");
        assert!(
            status.is_success(),
            "WebDriver {method} {path}: {status} {value}"
        );
        value["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.call("POST", "/url", json!({ "url": url })).await;
    }

    /// Sets a cookie for the current page's site (WebDriver "Add Cookie").
    pub async fn add_cookie(&self, name: &str, value: &str) {
        self.call(
            "POST",
            "/cookie",
            json!({ "cookie": { "name": name, "value": value, "path": "/" } }),
        )
        .await;
    }

    pub async fn refresh(&self) {
        self.call("POST", "/refresh", json!({})).await;
    }

    pub async fn url(&self) -> String {
        self.call("GET", "/url", Value::Null)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub async fn title(&self) -> String {
        self.call("GET", "/title", Value::Null)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    async fn element(&self, css: &str) -> String {
        let found = self
            .call(
                "POST",
                "/element",
                json!({ "using": "css selector", "value": css }),
            )
            .await;
        found
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}"))
            .to_string()
    }

    /// Types `text` into the field `css` as a person would (key events).
    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.call(
            "POST",
            &format!("/element/{id}/value"),
            json!({ "text": text }),
        )
        .await;
    }

    pub async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.call("POST", &format!("/element/{id}/click"), json!({}))
            .await;
    }

    /// The handles of the open windows (tabs and popups).
    pub async fn windows(&self) -> Vec<String> {
        self.call("GET", "/window/handles", Value::Null)
            .await
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|h| h.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub async fn window(&self) -> String {
        self.call("GET", "/window", Value::Null)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Commands go to the window `handle` from now on.
    pub async fn switch_to(&self, handle: &str) {
        self.call("POST", "/window", json!({ "handle": handle }))
            .await;
    }

    /// The visible text of `css`.
    pub async fn text(&self, css: &str) -> String {
        let id = self.element(css).await;
        self.call("GET", &format!("/element/{id}/text"), Value::Null)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The current value of the field `css` (what the person sees in it).
    pub async fn value(&self, css: &str) -> String {
        let id = self.element(css).await;
        self.call("GET", &format!("/element/{id}/property/value"), Value::Null)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub async fn attribute(&self, css: &str, name: &str) -> Option<String> {
        let id = self.element(css).await;
        self.call(
            "GET",
            &format!("/element/{id}/attribute/{name}"),
            Value::Null,
        )
        .await
        .as_str()
        .map(String::from)
    }

    /// Runs `script` (a function body) in the page and returns its value.
    pub async fn eval(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            json!({ "script": script, "args": [] }),
        )
        .await
    }

    /// Waits until `script` (a function body) returns something truthy,
    /// and returns it; fails with a screenshot and the console after
    /// `timeout`.
    pub async fn wait_for(&self, what: &str, script: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.eval(script).await;
            let truthy = match &v {
                Value::Null | Value::Bool(false) => false,
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return v;
            }
            if Instant::now() > deadline {
                let shot = self.screenshot("timed-out").await;
                panic!(
                    "timed out waiting for {what}; at {} (screenshot {}); console: {:?}",
                    self.url().await,
                    shot.display(),
                    self.console().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the address bar starts with `prefix`.
    pub async fn wait_for_url(&self, prefix: &str) -> String {
        let script = format!(
            "return location.href.startsWith({}) ? location.href : null",
            json!(prefix)
        );
        self.wait_for(prefix, &script, Duration::from_secs(20))
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Saves a screenshot of the page as `<n>-<name>.png` and returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        use base64::Engine;
        let png = self.call("GET", "/screenshot", Value::Null).await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap_or_default())
            .expect("a base64 PNG");
        let n = std::fs::read_dir(&self.shots).map_or(0, |d| d.count());
        let path = self.shots.join(format!("{n:02}-{name}.png"));
        std::fs::write(&path, bytes).expect("screenshot written");
        path
    }

    /// Resizes the window (WebDriver "Set Window Rect"), e.g. to a
    /// phone's width.
    pub async fn set_window_size(&self, width: u32, height: u32) {
        self.call(
            "POST",
            "/window/rect",
            json!({ "width": width, "height": height }),
        )
        .await;
    }

    /// The console messages so far (errors, CSP violations, warnings).
    pub async fn console(&self) -> Vec<String> {
        let url = format!("{}/se/log", self.base);
        let Ok(response) = self
            .http
            .post(url)
            .json(&json!({ "type": "browser" }))
            .send()
            .await
        else {
            return Vec::new();
        };
        let value: Value = response.json().await.unwrap_or_default();
        value["value"]
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .filter_map(|e| e["message"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Chrome {
    fn drop(&mut self) {
        // Ending the session closes Chromium; killing the driver after it
        // is what stops a browser whose session could not be ended.
        let url = self.base.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async {
                    let _ = reqwest::Client::new()
                        .delete(url)
                        .timeout(Duration::from_secs(10))
                        .send()
                        .await;
                });
            }
        })
        .join();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Starts ChromeDriver on a port of the kernel's choosing; it prints
/// "… started successfully on port N." when ready. With `--port=0` two
/// drivers starting at once can race for the port and one exits, so a
/// failed start is tried again.
fn start_driver() -> (Child, u16) {
    use std::io::{BufRead, BufReader};
    let mut last = String::new();
    for _ in 0..5 {
        let mut driver = Command::new(CHROMEDRIVER)
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let stdout = driver.stdout.take().expect("driver stdout");
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.split("started successfully on port ").nth(1) {
                let port = rest.trim_end_matches('.').trim().parse().expect("a port");
                // Keep draining its output so the driver never blocks on a
                // full pipe.
                std::thread::spawn(move || for _ in lines {});
                return (driver, port);
            }
            last = line;
        }
        let _ = driver.kill();
        let _ = driver.wait();
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("chromedriver did not start: {last}");
}
