//! The end-user pages as a person meets them in a real browser (headless
//! Chromium, the kit's `chrome` module): the identifier and password
//! pages, Forgot password, the error pages a broken link leads to, and
//! the logout confirmation. Each page is read as shown: no `None`, `null`,
//! `undefined` or template braces where a value belongs, every field with
//! a visible label tied to it, the application's name, and the identifier
//! carried from page to page (and kept by Back).
//!
//! Each test keeps its screenshots under `target/tmp/screenshots/<test>/`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;
use switchyard_kit::chrome::{self, Chrome};

/// Where the tests' sign-ins return: a registered loopback redirect of
/// the `add_client` fixture, so the browser leaves Switchyard without
/// waiting on a name that does not resolve.
const NATIVE: &str = "http://127.0.0.1/native";

/// What a page must not show or hold, and the fields without a label
/// tied to them: each problem as a sentence, none when the page reads
/// right.
const READS_RIGHT: &str = r#"
const problems = [];
const text = document.body.innerText;
for (const [what, re] of [
  ["None", /\bNone\b/], ["null", /\bnull\b/], ["undefined", /\bundefined\b/],
  ["NaN", /\bNaN\b/], ["a template's {{", /\{\{|\}\}/], ["a template's {%", /\{%|%\}/],
]) {
  if (re.test(text)) problems.push("the page shows " + what + ": " + text.slice(0, 300));
}
if (!document.title.trim()) problems.push("the page has no title");
if (!document.documentElement.lang) problems.push("the page names no language");
if (document.querySelectorAll("h1").length !== 1) problems.push("the page has not one h1");
for (const input of document.querySelectorAll("input, select, textarea")) {
  const name = input.name || input.id || input.outerHTML.slice(0, 80);
  if (/^(None|null|undefined)$/.test(input.value)) {
    problems.push("field " + name + " holds " + input.value);
  }
  if (input.type === "hidden" || input.hidden) continue;
  const labels = input.labels ? [...input.labels] : [];
  const visible = labels.filter(l => l.offsetParent !== null && l.innerText.trim());
  if (!visible.length) problems.push("field " + name + " has no visible label tied to it");
}
for (const button of document.querySelectorAll("button")) {
  if (!button.innerText.trim()) problems.push("a button without text");
}
for (const a of document.querySelectorAll("a")) {
  if (!a.innerText.trim()) problems.push("a link without text: " + a.outerHTML.slice(0, 80));
  if (/=(None|null|undefined)(&|$)/.test(a.getAttribute("href") || "")) {
    problems.push("a link with an empty value spelled out: " + a.getAttribute("href"));
  }
}
return problems;
"#;

/// Screenshots the page as `name` and fails on anything [`READS_RIGHT`]
/// finds.
async fn reads_right(chrome: &Chrome, name: &str) {
    let shot = chrome.screenshot(name).await;
    let problems = chrome.eval(READS_RIGHT).await;
    assert_eq!(
        problems,
        json!([]),
        "{name} ({}) at {}",
        shot.display(),
        chrome.url().await
    );
}

/// Waits until the page's heading reads `heading`.
async fn wait_for_heading(chrome: &Chrome, heading: &str) {
    let script = format!(
        "const e = document.querySelector('h1'); return e && e.textContent.trim() === {};",
        json!(heading)
    );
    chrome
        .wait_for(
            &format!("the heading {heading:?}"),
            &script,
            Duration::from_secs(20),
        )
        .await;
}

/// The visible text of the page.
async fn page_text(chrome: &Chrome) -> String {
    match chrome.eval("return document.body.innerText").await {
        Value::String(s) => s,
        other => panic!("no page text: {other}"),
    }
}

async fn label_of(chrome: &Chrome, id: &str) -> String {
    chrome.text(&format!("label[for={id}]")).await
}

fn authorize_url(app: &TestApp, request: &AuthRequest) -> String {
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(request.pairs())
        .finish();
    app.url(&format!("/authorize?{query}"))
}

fn native_request() -> AuthRequest {
    let mut request = AuthRequest::new("web", None);
    request.redirect_uri = NATIVE.into();
    request
}

#[tokio::test]
async fn the_sign_in_pages_read_right_to_a_person() {
    let test = "the_sign_in_pages_read_right_to_a_person";
    if !chrome::available(test) {
        return;
    }
    // The reset email this test asks for is written to a directory of
    // its own, not the working directory.
    let mail = tempfile::tempdir().unwrap();
    let drop_dir = mail.path().to_path_buf();
    let app = spawn_app_with(move |s| s.email.drop_dir = drop_dir).await;
    app.with_alice_and_web().await;
    let chrome = &Chrome::start(env!("CARGO_TARGET_TMPDIR"), "sign_in_pages").await;

    // The identifier page, without a hint: the application's name, an
    // empty box with its label.
    chrome.goto(&authorize_url(&app, &native_request())).await;
    wait_for_heading(chrome, "Sign in").await;
    reads_right(chrome, "identifier").await;
    assert_eq!(chrome.title().await, "Sign in");
    assert!(
        page_text(chrome)
            .await
            .contains("to continue to Example App"),
        "the client's name is shown"
    );
    assert_eq!(label_of(chrome, "username").await, "Email or username");
    assert_eq!(chrome.value("#username").await, "", "no hint, an empty box");
    assert_eq!(chrome.text("button[type=submit]").await, "Continue");

    // The password page names the account the person typed.
    chrome.type_into("#username", "alice@example.com").await;
    chrome.click("button[type=submit]").await;
    wait_for_heading(chrome, "Enter your password").await;
    reads_right(chrome, "password").await;
    assert!(page_text(chrome).await.contains("alice@example.com"));
    assert_eq!(label_of(chrome, "password").await, "Password");
    assert_eq!(chrome.value("#password").await, "");
    assert_eq!(chrome.text("button[type=submit]").await, "Sign in");

    // Back: the identifier page again, the box still holding what was
    // typed, never the text of a null.
    chrome.back().await;
    wait_for_heading(chrome, "Sign in").await;
    reads_right(chrome, "identifier_after_back").await;
    assert_eq!(chrome.value("#username").await, "alice@example.com");

    // Forgot password from the identifier page: an empty box.
    chrome.click("a[href^='/login/forgot']").await;
    wait_for_heading(chrome, "Reset your password").await;
    reads_right(chrome, "forgot_from_identifier").await;
    assert_eq!(label_of(chrome, "username").await, "Email or username");
    assert_eq!(chrome.value("#username").await, "");
    assert_eq!(chrome.text("button[type=submit]").await, "Email me a link");

    // "Back to sign in", then the password page's Forgot password: the box
    // carries the account.
    chrome.click("a[href^='/login?authz=']").await;
    wait_for_heading(chrome, "Sign in").await;
    reads_right(chrome, "identifier_from_forgot").await;
    chrome.type_into("#username", "alice@example.com").await;
    chrome.click("button[type=submit]").await;
    wait_for_heading(chrome, "Enter your password").await;
    chrome.click("a[href^='/login/forgot']").await;
    wait_for_heading(chrome, "Reset your password").await;
    reads_right(chrome, "forgot_from_password").await;
    assert_eq!(chrome.value("#username").await, "alice@example.com");
    chrome.click("button[type=submit]").await;
    wait_for_heading(chrome, "Check your email").await;
    reads_right(chrome, "forgot_sent").await;
    let sent = page_text(chrome).await;
    assert!(sent.contains("alice@example.com"), "{sent}");
    assert!(
        chrome
            .eval("return /works for \\d+ minutes/.test(document.body.innerText)")
            .await
            == json!(true),
        "the link's lifetime is a number: {sent}"
    );

    // A wrong password: the error, the account still named, and the
    // password page on a phone's width.
    chrome.click("a[href^='/login?authz=']").await;
    wait_for_heading(chrome, "Sign in").await;
    chrome.type_into("#username", "alice@example.com").await;
    chrome.click("button[type=submit]").await;
    wait_for_heading(chrome, "Enter your password").await;
    chrome.type_into("#password", "not the password").await;
    chrome.click("button[type=submit]").await;
    chrome
        .wait_for(
            "the error",
            "return document.querySelector('[role=alert]')",
            Duration::from_secs(20),
        )
        .await;
    reads_right(chrome, "wrong_password").await;
    assert!(page_text(chrome).await.contains("alice@example.com"));
    chrome.set_window_size(390, 844).await;
    reads_right(chrome, "wrong_password_phone").await;
    let fits = chrome
        .eval("return document.documentElement.scrollWidth <= window.innerWidth")
        .await;
    assert_eq!(fits, json!(true), "no sideways scrolling on a phone");
}

#[tokio::test]
async fn a_hint_is_carried_through_the_sign_in_pages() {
    let test = "a_hint_is_carried_through_the_sign_in_pages";
    if !chrome::available(test) {
        return;
    }
    let app = spawn_app().await;
    app.with_alice_and_web().await;
    let chrome = &Chrome::start(env!("CARGO_TARGET_TMPDIR"), "sign_in_hint").await;
    let request = native_request().with("login_hint", "alice@example.com");
    chrome.goto(&authorize_url(&app, &request)).await;
    wait_for_heading(chrome, "Sign in").await;
    reads_right(chrome, "identifier_hinted").await;
    assert_eq!(chrome.value("#username").await, "alice@example.com");
    chrome.click("button[type=submit]").await;
    wait_for_heading(chrome, "Enter your password").await;
    reads_right(chrome, "password_hinted").await;
    // "Use another account": the identifier page, the hint in the box.
    chrome.click("a[href^='/login?authz=']").await;
    wait_for_heading(chrome, "Sign in").await;
    reads_right(chrome, "another_account").await;
    assert_eq!(chrome.value("#username").await, "alice@example.com");

    // The check itself sees what it is for: a null spelled out, a field
    // without a label.
    chrome
        .eval(
            "const p = document.createElement('p'); p.textContent = 'Hello None'; \
             document.body.append(p); \
             const i = document.createElement('input'); i.name = 'stray'; \
             document.querySelector('form').append(i); return true",
        )
        .await;
    let problems = chrome.eval(READS_RIGHT).await;
    let problems = problems.as_array().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p.as_str().unwrap().contains("shows None")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.as_str().unwrap().contains("stray has no visible label")),
        "{problems:?}"
    );
}

#[tokio::test]
async fn a_broken_sign_in_link_says_what_is_wrong() {
    let test = "a_broken_sign_in_link_says_what_is_wrong";
    if !chrome::available(test) {
        return;
    }
    let app = spawn_app().await;
    app.with_alice_and_web().await;
    let chrome = &Chrome::start(env!("CARGO_TARGET_TMPDIR"), "error_pages").await;

    let mut unknown = native_request();
    unknown.client_id = "no-such-app".into();
    let mut unregistered = native_request();
    unregistered.redirect_uri = "https://evil.example.com/callback".into();
    for (shot, url, says) in [
        (
            "unknown_client",
            authorize_url(&app, &unknown),
            "The application is not known here.",
        ),
        (
            "bad_redirect",
            authorize_url(&app, &unregistered),
            "The redirect_uri is not registered for this application.",
        ),
        (
            "no_client",
            app.url("/authorize?response_type=code"),
            "The request has no client_id.",
        ),
    ] {
        chrome.goto(&url).await;
        wait_for_heading(chrome, "Sign-in request refused").await;
        reads_right(chrome, shot).await;
        assert!(
            page_text(chrome).await.contains(says),
            "{shot}: {}",
            page_text(chrome).await
        );
        // The person stays here: nothing sends them to an unregistered
        // address.
        assert!(chrome.url().await.starts_with(&app.address), "{shot}");
    }

    // A sign-in page whose request is gone (a stale bookmark).
    chrome.goto(&app.url("/login?authz=stale")).await;
    chrome
        .wait_for(
            "a page",
            "return document.querySelector('h1')",
            Duration::from_secs(20),
        )
        .await;
    reads_right(chrome, "stale_login").await;
    assert_eq!(chrome.text("h1").await, "Sign-in expired");
    assert!(page_text(chrome).await.contains("sign in again"));
}

#[tokio::test]
async fn signing_out_asks_a_person_first() {
    let test = "signing_out_asks_a_person_first";
    if !chrome::available(test) {
        return;
    }
    let app = spawn_app().await;
    app.with_alice_and_web().await;
    let chrome = &Chrome::start(env!("CARGO_TARGET_TMPDIR"), "logout_pages").await;
    chrome.goto(&authorize_url(&app, &native_request())).await;
    wait_for_heading(chrome, "Sign in").await;
    chrome.type_into("#username", "alice@example.com").await;
    chrome.click("button[type=submit]").await;
    wait_for_heading(chrome, "Enter your password").await;
    chrome.type_into("#password", PASSWORD).await;
    chrome.click("button[type=submit]").await;
    // The application is not there (an error page the browser makes, where
    // no script runs): the address bar is what tells.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !chrome.url().await.starts_with(NATIVE) {
        assert!(
            std::time::Instant::now() < deadline,
            "never left for {NATIVE}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A logout without an id_token_hint: the person is asked.
    chrome.goto(&app.url("/oidc/logout")).await;
    wait_for_heading(chrome, "Sign out?").await;
    reads_right(chrome, "logout_confirm").await;
    assert_eq!(chrome.text("button[type=submit]").await, "Sign out");
    assert!(page_text(chrome).await.contains("close this window"));
    chrome.click("button[type=submit]").await;
    wait_for_heading(chrome, "You are signed out").await;
    reads_right(chrome, "logged_out").await;

    // Signed out: the next sign-in asks again.
    chrome.goto(&authorize_url(&app, &native_request())).await;
    wait_for_heading(chrome, "Sign in").await;
}
