//! What an operator is told when Switchyard starts (and by `config check`)
//! about a production deployment that is unsafe.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::helpers::*;

const KEK: &str = "SWITCHYARD_KEY_ENCRYPTION_KEY";
const WARNING: &str = "SWITCHYARD_KEY_ENCRYPTION_KEY is not set";

/// A production configuration (an `https` issuer) in a temporary directory.
fn production_config(dir: &tempfile::TempDir) -> String {
    let path = dir.path().join("switchyard.toml");
    std::fs::write(
        &path,
        "issuer = \"https://login.example.com/\"\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    path.to_string_lossy().to_string()
}

#[tokio::test]
async fn config_check_warns_of_unencrypted_signing_keys_in_production() {
    let iso = isolated().await;
    let dir = tempfile::tempdir().unwrap();
    let config = production_config(&dir);
    let check = |env: &[(&str, &str)]| {
        let out = run_cli(&iso, &["--config", &config, "config", "check"], None, env);
        assert!(out.status.success(), "a warning is not a problem: {out:?}");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let text = check(&[(KEK, "")]);
    assert!(text.contains(&format!("warning: {WARNING}")), "{text}");
    let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let text = check(&[(KEK, key)]);
    assert!(!text.contains(WARNING), "{text}");
    // Not in development (the embedded default's http issuer).
    let out = run_cli(&iso, &["config", "check"], None, &[(KEK, "")]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains(WARNING));
}

#[tokio::test]
async fn serve_warns_at_start_of_unencrypted_signing_keys_in_production() {
    let iso = isolated().await;
    let dir = tempfile::tempdir().unwrap();
    let config = production_config(&dir);
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["--config", &config, "serve"])
        .env("SWITCHYARD_DATABASE_URL", &iso.database_url)
        .env_remove("SWITCHYARD_CONFIG")
        .env(KEK, "")
        .env("SWITCHYARD_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let found = loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) if line.contains(WARNING) => break true,
            Ok(line) => seen.push(line),
            Err(_) => break false,
        }
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(found, "no warning in {seen:#?}");
}
