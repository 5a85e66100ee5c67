//! A person in a real browser (headless Chromium, the kit's `chrome` module): the
//! Quickstart's login on Switchyard's own pages, the lazy-migration track,
//! the form_post response mode, an issuer with a path through the
//! upstream's own login page, and single-page apps on the vendors' own SDKs
//! (Auth0's auth0-spa-js, Okta's okta-auth-js, from tests/browser) staying
//! signed in across reloads.
//!
//! Each test keeps its screenshots under `target/tmp/screenshots/<test>/`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use reqwest::StatusCode;
use serde_json::{Value, json};
use switchyard::config::{Phase, Settings};
use switchyard::crypto::random_token;
use switchyard::store::UserState;

use crate::helpers::*;
use crate::upstream::{UPSTREAM_CLIENT, UPSTREAM_SECRET, spawn_with_upstream};
use switchyard_kit::chrome::{self, Chrome};
use switchyard_kit::fake::{FakeUser, Flavor};

/// An ordinary OIDC request from `client_id` that returns to the site.
fn request_to(client_id: &str, site: &Site) -> AuthRequest {
    let mut request = AuthRequest::new(client_id, None);
    request.redirect_uri = site.callback();
    request
}

fn query_string(request: &AuthRequest) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(request.pairs())
        .finish()
}

/// The README's Quickstart request, with its PKCE pair.
const QUICKSTART_CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const QUICKSTART_VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

/// What the application received at its redirect URI.
type Received = Arc<Mutex<Vec<HashMap<String, String>>>>;

/// The application's side: a web site on its own origin that receives the
/// authorization response (by query or by form post) and serves the
/// single-page apps with the vendors' SDKs.
struct Site {
    origin: String,
    received: Received,
}

#[derive(Clone)]
struct SiteState {
    page: Arc<String>,
    received: Received,
}

impl Site {
    /// `page` is served at `/` (a single-page app), the SDKs under `/sdk/`.
    async fn start(page: String) -> Site {
        let received: Received = Arc::default();
        let state = SiteState {
            page: Arc::new(page),
            received: received.clone(),
        };
        let app = Router::new()
            .route("/", get(|State(s): State<SiteState>| async move { Html(s.page.to_string()) }))
            .route(
                "/callback",
                get(
                    |State(s): State<SiteState>, Query(q): Query<HashMap<String, String>>| async move {
                        s.received.lock().unwrap().push(q);
                        Html(CALLBACK_PAGE)
                    },
                )
                .post(
                    |State(s): State<SiteState>, axum::Form(f): axum::Form<HashMap<String, String>>| async move {
                        s.received.lock().unwrap().push(f);
                        Html(CALLBACK_PAGE)
                    },
                ),
            )
            .route("/sdk/auth0-spa-js.js", get(|| sdk("@auth0/auth0-spa-js/dist/auth0-spa-js.production.js")))
            .route("/sdk/okta-auth-js.js", get(|| sdk("@okta/okta-auth-js/umd/default.js")))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Site { origin, received }
    }

    fn callback(&self) -> String {
        format!("{}/callback", self.origin)
    }

    fn last_received(&self) -> HashMap<String, String> {
        self.received
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the application received a response")
    }
}

const CALLBACK_PAGE: &str = "<!doctype html><html><head><title>Example app</title></head>\
    <body><h1 id=\"app\">Example app: signed in</h1></body></html>";

fn sdk_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser/node_modules")
}

async fn sdk(path: &str) -> impl IntoResponse {
    match std::fs::read_to_string(sdk_dir().join(path)) {
        Ok(js) => (
            StatusCode::OK,
            [("content-type", "text/javascript; charset=utf-8")],
            js,
        ),
        Err(_) => (
            StatusCode::NOT_FOUND,
            [("content-type", "text/plain")],
            String::new(),
        ),
    }
}

/// The vendors' SDKs come from the npm registry (`npm ci --prefix
/// tests/browser`, run by `.ci/run`); like the browser, missing is a skip
/// locally and a failure in CI.
fn sdks_installed(test: &str) -> bool {
    let present = sdk_dir().join("@auth0/auth0-spa-js").exists()
        && sdk_dir().join("@okta/okta-auth-js").exists();
    if !present {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but the SDKs are not installed: npm ci --prefix tests/browser"
        );
        eprintln!("{test}: skipped, run `npm ci --prefix tests/browser` first");
    }
    present
}

/// A browser application's client: public, PKCE, its site's origin as the
/// redirect URI and web origin.
async fn register_spa(app: &TestApp, client_id: &str, site: &Site) {
    let client = switchyard::config::ClientSettings {
        client_id: client_id.into(),
        name: Some("Example SPA".into()),
        public: true,
        redirect_uris: vec![format!("{}/", site.origin)],
        post_logout_redirect_uris: vec![format!("{}/", site.origin)],
        web_origins: vec![site.origin.clone()],
        ..Default::default()
    }
    .to_client(None, switchyard::store::ClientSource::Cli);
    app.state.db.create_client(&client).await.unwrap();
}

/// A confidential client whose redirect URI is the site's `/callback`.
async fn register_web(app: &TestApp, client_id: &str, site: &Site) {
    let mut client = app.add_client(client_id, false).await;
    client.redirect_uris = vec![site.callback()];
    app.state.db.upsert_client(&client).await.unwrap();
}

/// CSP violations and script errors are shown in the console, and nowhere
/// else a test could see them.
async fn assert_quiet_console(chrome: &Chrome) {
    let console = chrome.console().await;
    let bad: Vec<&String> = console
        .iter()
        .filter(|m| {
            m.contains("Content Security Policy")
                || m.contains("Uncaught")
                || m.contains("Password forms should have")
        })
        .collect();
    assert!(bad.is_empty(), "console: {bad:#?}");
}

async fn wait_for_heading(chrome: &Chrome, heading: &str) {
    wait_for_text(chrome, "h1", heading).await;
}

/// Waits until the element `css` shows exactly `text`.
async fn wait_for_text(chrome: &Chrome, css: &str, text: &str) {
    let script = format!(
        "const e = document.querySelector({}); return e && e.textContent.trim() === {};",
        json!(css),
        json!(text)
    );
    chrome
        .wait_for(
            &format!("{css} to read {text:?}"),
            &script,
            Duration::from_secs(20),
        )
        .await;
}

/// Identifier page, then password page, as a person fills them.
async fn sign_in_on_switchyard(chrome: &Chrome, email: &str, password: &str) {
    wait_for_heading(chrome, "Sign in").await;
    chrome.screenshot("identifier").await;
    chrome.type_into("#username", email).await;
    chrome.click("button[type=submit]").await;
    wait_for_heading(chrome, "Enter your password").await;
    chrome.screenshot("password").await;
    chrome.type_into("#password", password).await;
    chrome.click("button[type=submit]").await;
}

#[tokio::test]
async fn the_quickstart_login_completes_in_chromium() {
    if !chrome::available("the_quickstart_login_completes_in_chromium") {
        return;
    }
    let app = spawn_app().await;
    let site = Site::start(String::new()).await;
    // The Quickstart, by the CLI: a user and a client. Its redirect URI
    // names port 3000; a loopback redirect may use any port (RFC 8252 §7.3),
    // which is how the test's site, on a port of its own, receives it.
    let iso = app._isolated.same_database();
    let added = run_cli(
        &iso,
        &[
            "users",
            "add",
            "--email",
            "alice@example.com",
            "--password-stdin",
        ],
        Some("a long password\n"),
        &[],
    );
    assert!(added.status.success(), "{added:?}");
    let added = run_cli(
        &iso,
        &[
            "clients",
            "add",
            "--id",
            "web",
            "--redirect-uri",
            "http://127.0.0.1:3000/callback",
        ],
        None,
        &[],
    );
    assert!(added.status.success(), "{added:?}");
    let stdout = String::from_utf8(added.stdout).unwrap();
    let secret = stdout
        .lines()
        .find_map(|l| l.strip_prefix("client_secret: "))
        .expect("a generated secret")
        .to_string();

    let chrome = &Chrome::start(env!("CARGO_TARGET_TMPDIR"), "quickstart").await;
    let redirect = site.callback();
    chrome
        .goto(&app.url(&format!(
            "/authorize?response_type=code&client_id=web&redirect_uri={redirect}&scope=openid%20email\
             &state=xyz&code_challenge={QUICKSTART_CHALLENGE}&code_challenge_method=S256"
        )))
        .await;
    wait_for_heading(chrome, "Sign in").await;
    // Without a login_hint the email box is empty and reads as a label.
    assert_eq!(
        chrome.value("#username").await,
        "",
        "the email box starts empty"
    );
    assert_eq!(
        chrome.text("label[for=username]").await,
        "Email or username"
    );
    assert_eq!(chrome.title().await, "Sign in");
    sign_in_on_switchyard(chrome, "alice@example.com", "a long password").await;

    // The password form's answer is a 303 to the application's origin: the
    // browser follows it.
    let landed = chrome.wait_for_url(&redirect).await;
    wait_for_heading(chrome, "Example app: signed in").await;
    chrome.screenshot("application").await;
    let q = query_of(&landed);
    assert_eq!(q["state"], "xyz");
    assert_eq!(q["iss"], app.issuer);
    assert_quiet_console(chrome).await;

    // The password page names the account for password managers.
    // (Checked on the page source the browser was given.)
    let tokens = app
        .api
        .post(app.url("/oauth/token"))
        .basic_auth("web", Some(&secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", q["code"].as_str()),
            ("redirect_uri", redirect.as_str()),
            ("code_verifier", QUICKSTART_VERIFIER),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(tokens.status(), StatusCode::OK);
    let tokens: Value = tokens.json().await.unwrap();
    assert_eq!(
        jwt_claims(tokens["id_token"].as_str().unwrap())["email"],
        "alice@example.com"
    );
}

#[tokio::test]
async fn the_password_page_names_the_account_for_password_managers() {
    if !chrome::available("the_password_page_names_the_account_for_password_managers") {
        return;
    }
    let app = spawn_app().await;
    app.add_user("alice@example.com", PASSWORD).await;
    let site = Site::start(String::new()).await;
    register_web(&app, "web", &site).await;
    let chrome = &Chrome::start(env!("CARGO_TARGET_TMPDIR"), "password_page").await;
    let request = request_to("web", &site).with("login_hint", "alice@example.com");
    let query = query_string(&request);
    chrome.goto(&app.url(&format!("/authorize?{query}"))).await;
    wait_for_heading(chrome, "Sign in").await;
    assert_eq!(
        chrome.value("#username").await,
        "alice@example.com",
        "a hint prefills the box"
    );
    chrome.click("button[type=submit]").await;
    wait_for_heading(chrome, "Enter your password").await;
    assert_eq!(
        chrome
            .attribute("input[name=username]", "autocomplete")
            .await
            .as_deref(),
        Some("username")
    );
    assert_eq!(
        chrome.value("input[name=username]").await,
        "alice@example.com"
    );
    chrome.screenshot("password").await;
    assert_quiet_console(chrome).await;
}

#[tokio::test]
async fn a_lazily_migrated_user_lands_on_the_application_in_chromium() {
    if !chrome::available("a_lazily_migrated_user_lands_on_the_application_in_chromium") {
        return;
    }
    let t = spawn_with_upstream(Flavor::Auth0, |s| {
        s.upstream.as_mut().unwrap().connection = Some("Username-Password-Authentication".into());
        s.password.failure_floor_ms = 50;
    })
    .await;
    const SUB: &str = "auth0|7b2c3d4e5f60718293a4b5c6";
    t.fake
        .add_user(FakeUser::new(SUB, "dana@example.com", PASSWORD));
    let site = Site::start(String::new()).await;
    register_web(&t.app, "shop", &site).await;

    let chrome = &Chrome::start(env!("CARGO_TARGET_TMPDIR"), "lazy_migration").await;
    let request = request_to("shop", &site);
    let query = query_string(&request);
    chrome
        .goto(&t.app.url(&format!("/authorize?{query}")))
        .await;
    sign_in_on_switchyard(chrome, "dana@example.com", PASSWORD).await;
    chrome.wait_for_url(&site.callback()).await;
    wait_for_heading(chrome, "Example app: signed in").await;
    chrome.screenshot("application").await;
    assert!(site.last_received().contains_key("code"));
    assert_quiet_console(chrome).await;
    let user = t
        .app
        .state
        .db
        .get_user(SUB)
        .await
        .unwrap()
        .expect("migrated");
    assert_eq!(user.state, UserState::Migrated);
}

#[tokio::test]
async fn a_form_post_response_reaches_the_application_in_chromium() {
    if !chrome::available("a_form_post_response_reaches_the_application_in_chromium") {
        return;
    }
    let app = spawn_app().await;
    app.add_user("alice@example.com", PASSWORD).await;
    let site = Site::start(String::new()).await;
    register_web(&app, "web", &site).await;
    let chrome = &Chrome::start(env!("CARGO_TARGET_TMPDIR"), "form_post").await;
    let request = request_to("web", &site).with("response_mode", "form_post");
    let query = query_string(&request);
    chrome.goto(&app.url(&format!("/authorize?{query}"))).await;
    sign_in_on_switchyard(chrome, "alice@example.com", PASSWORD).await;
    chrome.wait_for_url(&site.callback()).await;
    wait_for_heading(chrome, "Example app: signed in").await;
    chrome.screenshot("application").await;
    let posted = site.last_received();
    assert!(
        posted.contains_key("code"),
        "the code was posted: {posted:?}"
    );
    assert_eq!(posted["iss"], app.issuer);
    assert_quiet_console(chrome).await;
}

#[tokio::test]
async fn an_issuer_with_a_path_brings_the_user_back_from_the_upstreams_page() {
    if !chrome::available("an_issuer_with_a_path_brings_the_user_back_from_the_upstreams_page") {
        return;
    }
    let t = spawn_with_upstream(Flavor::Okta, |s: &mut Settings| {
        s.issuer = format!("{}oauth2/default", s.issuer);
        s.cutover.phase = Phase::Passthrough;
    })
    .await;
    // The upstream sends the browser back to `{issuer}/login/callback`.
    let callback = format!("{}/login/callback", t.app.issuer);
    t.fake
        .add_client(UPSTREAM_CLIENT, Some(UPSTREAM_SECRET), &[&callback]);
    t.fake.add_user(FakeUser::new(
        "00u1a2b3c4d5e6f7g8h9",
        "erin@example.com",
        PASSWORD,
    ));
    let site = Site::start(String::new()).await;
    register_web(&t.app, "okta-web", &site).await;

    let chrome = &Chrome::start(env!("CARGO_TARGET_TMPDIR"), "path_issuer").await;
    let request = request_to("okta-web", &site);
    let query = query_string(&request);
    // Okta's SDKs call `{issuer}/v1/authorize`.
    chrome
        .goto(&format!("{}/v1/authorize?{query}", t.app.issuer))
        .await;
    // The upstream's own login page.
    chrome.wait_for_url(&t.fake.issuer()).await;
    chrome.screenshot("upstream_login").await;
    chrome
        .type_into("input[name=username]", "erin@example.com")
        .await;
    chrome.type_into("input[name=password]", PASSWORD).await;
    chrome.click("button[type=submit]").await;
    let landed = chrome.wait_for_url(&site.callback()).await;
    wait_for_heading(chrome, "Example app: signed in").await;
    chrome.screenshot("application").await;
    assert_eq!(query_of(&landed)["iss"], t.app.issuer);
    assert_quiet_console(chrome).await;
}

/// A single-page app on Auth0's SDK, exactly as its quickstart writes one:
/// log in by redirect, handle the callback, show the user.
fn auth0_spa_page(domain: &str, client_id: &str, refresh_tokens: bool) -> String {
    let mut config = json!({
        "domain": domain,
        "clientId": client_id,
        "authorizationParams": {"scope": "openid profile email"},
    });
    if refresh_tokens {
        config["useRefreshTokens"] = json!(true);
        config["cacheLocation"] = json!("localstorage");
    }
    format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>Example SPA</title></head>
<body><h1>Example SPA</h1><p id="status">loading</p><button id="login">Log in</button>
<button id="popup">Log in in a popup</button>
<script src="/sdk/auth0-spa-js.js"></script>
<script>
const config = {config};
config.authorizationParams.redirect_uri = location.origin + "/";
const show = (s) => {{ document.getElementById("status").textContent = s; }};
(async () => {{
  try {{
    const client = await auth0.createAuth0Client(config);
    window.spa = client;
    const q = new URLSearchParams(location.search);
    if (q.has("code") || q.has("error")) {{
      await client.handleRedirectCallback();
      history.replaceState({{}}, "", "/");
    }}
    document.getElementById("login").onclick = () => client.loginWithRedirect();
    document.getElementById("popup").onclick = () => client.loginWithPopup()
      .then(() => client.getUser())
      .then((user) => show("signed in as " + user.email + " by popup"))
      .catch((e) => show("error: " + (e.error || e.message)));
    if (await client.isAuthenticated()) {{
      const user = await client.getUser();
      show("signed in as " + user.email);
    }} else {{
      show("signed out");
    }}
  }} catch (e) {{
    show("error: " + (e.error || e.message) + " " + (e.error_description || ""));
  }}
}})();
</script></body></html>"#
    )
}

async fn wait_for_status(chrome: &Chrome, prefix: &str) -> String {
    // An error is shown at once rather than waited out.
    let script = format!(
        "const s = document.getElementById('status'); if (!s) return null; \
         const t = s.textContent; \
         return t.startsWith({}) || t.startsWith('error') ? t : null;",
        json!(prefix)
    );
    let found = chrome
        .wait_for(
            &format!("status {prefix:?}"),
            &script,
            Duration::from_secs(30),
        )
        .await;
    let found = found.as_str().unwrap_or_default().to_string();
    assert!(
        found.starts_with(prefix),
        "the app says {found:?}, not {prefix:?}"
    );
    found
}

/// Runs `script` (an async function body returning a value) in the page.
async fn run_async(chrome: &Chrome, script: &str) -> Value {
    let key = format!("r{}", &random_token()[..8]).replace(['-', '_'], "x");
    chrome
        .eval(&format!(
            "window.{key} = null; (async () => {{ {script} }})().then(\
               v => {{ window.{key} = {{ok: v}}; }}, \
               e => {{ window.{key} = {{err: (e.error || e.errorCode || e.name) + ': ' + (e.error_description || e.message)}}; }});"
        ))
        .await;
    let result = chrome
        .wait_for(
            script,
            &format!("return window.{key};"),
            Duration::from_secs(30),
        )
        .await;
    assert!(result.get("err").is_none(), "{script}: {result}");
    result["ok"].clone()
}

/// A single-page app on its own origin, registered as the public client
/// `client_id`, opened in Chromium and showing "signed out".
struct Spa {
    app: TestApp,
    site: Site,
    chrome: Chrome,
}

impl Spa {
    async fn open(app: TestApp, client_id: &str, page: String, shots: &str) -> Spa {
        app.add_user("alice@example.com", PASSWORD).await;
        let site = Site::start(page).await;
        register_spa(&app, client_id, &site).await;
        let chrome = Chrome::start(env!("CARGO_TARGET_TMPDIR"), shots).await;
        chrome.goto(&format!("{}/", site.origin)).await;
        wait_for_status(&chrome, "signed out").await;
        Spa { app, site, chrome }
    }

    /// Log in by redirect through Switchyard's pages, back to the app.
    async fn sign_in_by_redirect(&self) {
        self.chrome.click("#login").await;
        sign_in_on_switchyard(&self.chrome, "alice@example.com", PASSWORD).await;
        self.chrome.wait_for_url(&self.site.origin).await;
        wait_for_status(&self.chrome, "signed in as alice@example.com").await;
    }
}

#[tokio::test]
async fn an_auth0_spa_stays_signed_in_across_reloads_by_silent_authentication() {
    let test = "an_auth0_spa_stays_signed_in_across_reloads_by_silent_authentication";
    if !chrome::available(test) || !sdks_installed(test) {
        return;
    }
    let app = spawn_app().await;
    let page = auth0_spa_page(&app.address, "spa", false);
    let spa = Spa::open(app, "spa", page, "auth0_spa_web_message").await;
    spa.sign_in_by_redirect().await;
    let chrome = &spa.chrome;
    chrome.screenshot("signed_in").await;

    // The default cache is in memory: after a reload the SDK asks
    // /authorize with prompt=none and response_mode=web_message in a hidden
    // iframe, and the gateway session answers.
    chrome.refresh().await;
    wait_for_status(chrome, "signed in as alice@example.com").await;
    chrome.screenshot("after_reload").await;
    let token = run_async(
        chrome,
        "return await window.spa.getTokenSilently({cacheMode: 'off'});",
    )
    .await;
    let claims = jwt_claims(token.as_str().expect("an access token"));
    assert_eq!(claims["client_id"], "spa");
    assert_quiet_console(chrome).await;
}

#[tokio::test]
async fn an_auth0_spa_with_refresh_tokens_in_local_storage_renews_from_its_origin() {
    let test = "an_auth0_spa_with_refresh_tokens_in_local_storage_renews_from_its_origin";
    if !chrome::available(test) || !sdks_installed(test) {
        return;
    }
    let app = spawn_app().await;
    let page = auth0_spa_page(&app.address, "spa", true);
    let spa = Spa::open(app, "spa", page, "auth0_spa_refresh_tokens").await;
    spa.sign_in_by_redirect().await;
    let chrome = &spa.chrome;
    let first = run_async(chrome, "return await window.spa.getTokenSilently();").await;

    chrome.refresh().await;
    wait_for_status(chrome, "signed in as alice@example.com").await;
    // cacheMode off: the SDK spends its refresh token at /oauth/token
    // from the app's origin (CORS for the client's web origin).
    let renewed = run_async(
        chrome,
        "return await window.spa.getTokenSilently({cacheMode: 'off'});",
    )
    .await;
    assert_ne!(first, renewed, "a new access token");
    chrome.screenshot("renewed").await;
    assert_quiet_console(chrome).await;
}

/// A single-page app on Okta's SDK, as its samples write one.
fn okta_spa_page(issuer: &str, client_id: &str) -> String {
    let config = json!({
        "issuer": issuer,
        "clientId": client_id,
        "scopes": ["openid", "profile", "email", "offline_access"],
        "pkce": true,
        "tokenManager": {"autoRenew": false},
    });
    format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>Example Okta SPA</title></head>
<body><h1>Example Okta SPA</h1><p id="status">loading</p><button id="login">Log in</button>
<script src="/sdk/okta-auth-js.js"></script>
<script>
const config = {config};
config.redirectUri = location.origin + "/";
const show = (s) => {{ document.getElementById("status").textContent = s; }};
const OktaAuthClass = window.OktaAuth.OktaAuth || window.OktaAuth.default || window.OktaAuth;
(async () => {{
  try {{
    const okta = new OktaAuthClass(config);
    window.okta = okta;
    if (okta.isLoginRedirect()) {{
      const {{ tokens }} = await okta.token.parseFromUrl();
      okta.tokenManager.setTokens(tokens);
      history.replaceState({{}}, "", "/");
    }}
    document.getElementById("login").onclick = () => okta.token.getWithRedirect();
    const idToken = await okta.tokenManager.get("idToken");
    show(idToken ? "signed in as " + idToken.claims.email : "signed out");
  }} catch (e) {{
    show("error: " + (e.errorCode || e.name) + " " + (e.errorSummary || e.message));
  }}
}})();
</script></body></html>"#
    )
}

#[tokio::test]
async fn an_okta_spa_signs_in_reloads_and_renews_by_refresh_token_and_silently() {
    let test = "an_okta_spa_signs_in_reloads_and_renews_by_refresh_token_and_silently";
    if !chrome::available(test) || !sdks_installed(test) {
        return;
    }
    // Okta's SDKs are configured with an issuer that has a path.
    let app = spawn_app_with(|s| s.issuer = format!("{}oauth2/default", s.issuer)).await;
    let page = okta_spa_page(&app.issuer, "okta-spa");
    let spa = Spa::open(app, "okta-spa", page, "okta_spa").await;
    spa.sign_in_by_redirect().await;
    let (app, chrome) = (&spa.app, &spa.chrome);
    chrome.screenshot("signed_in").await;

    // Okta's token storage is local storage: a reload keeps the user.
    chrome.refresh().await;
    wait_for_status(chrome, "signed in as alice@example.com").await;
    let first = run_async(
        chrome,
        "return (await window.okta.tokenManager.get('accessToken')).accessToken;",
    )
    .await;
    // Renewal with the refresh token, at `{issuer}/v1/token`.
    let by_refresh = run_async(
        chrome,
        "return (await window.okta.tokenManager.renew('accessToken')).accessToken;",
    )
    .await;
    assert_ne!(first, by_refresh);
    // Silent renewal: /v1/authorize with prompt=none and
    // response_mode=okta_post_message in a hidden iframe.
    let silent = run_async(
        chrome,
        "const r = await window.okta.token.getWithoutPrompt(); return r.tokens.accessToken.accessToken;",
    )
    .await;
    assert_ne!(by_refresh, silent);
    assert_eq!(
        jwt_claims(silent.as_str().unwrap())["iss"],
        app.issuer,
        "tokens from the path issuer"
    );
    chrome.screenshot("renewed").await;
    assert_quiet_console(chrome).await;
}

#[tokio::test]
async fn an_auth0_spa_signs_in_through_a_popup_by_web_message() {
    let test = "an_auth0_spa_signs_in_through_a_popup_by_web_message";
    if !chrome::available(test) || !sdks_installed(test) {
        return;
    }
    let app = spawn_app().await;
    let page = auth0_spa_page(&app.address, "spa", false);
    let spa = Spa::open(app, "spa", page, "auth0_spa_popup").await;
    let chrome = &spa.chrome;
    let main = chrome.window().await;
    chrome.click("#popup").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let popup = loop {
        if let Some(h) = chrome.windows().await.into_iter().find(|h| *h != main) {
            break h;
        }
        assert!(std::time::Instant::now() < deadline, "no popup opened");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    chrome.switch_to(&popup).await;
    sign_in_on_switchyard(chrome, "alice@example.com", PASSWORD).await;
    // The answer page posts the code to the opener, which closes the popup.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while chrome.windows().await.contains(&popup) {
        assert!(
            std::time::Instant::now() < deadline,
            "the popup stayed open"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    chrome.switch_to(&main).await;
    wait_for_status(chrome, "signed in as alice@example.com by popup").await;
    chrome.screenshot("signed_in").await;
    assert_quiet_console(chrome).await;
}

/// The recovery pages as a person meets them: "Forgot password?" on the
/// password page, the link from the email (read from the kit's SMTP sink),
/// the new password typed twice, and the application's sign-in going on;
/// then the signed-in password change.
#[tokio::test]
async fn a_person_who_forgot_their_password_resets_it_and_lands_in_the_application() {
    let test = "a_person_who_forgot_their_password_resets_it_and_lands_in_the_application";
    if !chrome::available(test) {
        return;
    }
    let sink = switchyard_kit::smtp::SmtpSink::start().await;
    let app = spawn_app_with(|s| crate::recovery::send_to(&sink, s)).await;
    app.add_user("alice@example.com", PASSWORD).await;
    let site = Site::start(String::new()).await;
    register_web(&app, "web", &site).await;
    let chrome = &Chrome::start(env!("CARGO_TARGET_TMPDIR"), "recovery").await;
    let query = query_string(&request_to("web", &site));
    chrome.goto(&app.url(&format!("/authorize?{query}"))).await;
    wait_for_heading(chrome, "Sign in").await;
    chrome.type_into("#username", "alice@example.com").await;
    chrome.click("button[type=submit]").await;
    wait_for_heading(chrome, "Enter your password").await;
    chrome.click("a[href^='/login/forgot']").await;
    wait_for_heading(chrome, "Reset your password").await;
    assert_eq!(chrome.value("#username").await, "alice@example.com");
    assert_eq!(chrome.text("button[type=submit]").await, "Email me a link");
    chrome.screenshot("forgot").await;
    chrome.click("button[type=submit]").await;
    wait_for_heading(chrome, "Check your email").await;
    assert!(chrome.text("main").await.contains("alice@example.com"));
    chrome.screenshot("sent").await;

    // The email as the person sees it, and its button followed.
    let messages = sink.wait_for(1, Duration::from_secs(20)).await.unwrap();
    let html = messages[0].part("text/html").expect("an HTML part");
    let mailbox = tempfile::tempdir().unwrap();
    let opened = mailbox.path().join("message.html");
    std::fs::write(&opened, &html).unwrap();
    chrome.goto(&format!("file://{}", opened.display())).await;
    chrome.screenshot("email").await;
    let link = messages[0].reset_link().expect("a reset link");
    assert_eq!(
        chrome
            .attribute("a[href*='/login/reset']", "href")
            .await
            .as_deref(),
        Some(link.as_str()),
        "the email's button is the link"
    );
    chrome.click("a[href*='/login/reset']").await;
    wait_for_heading(chrome, "Set a new password").await;
    assert_eq!(chrome.text("label[for=password]").await, "New password");
    assert_eq!(
        chrome.text("label[for=confirm]").await,
        "Repeat the new password"
    );
    chrome.type_into("#password", "correct horse").await;
    chrome.type_into("#confirm", "correct horse battery").await;
    chrome.click("button[type=submit]").await;
    // The answer has the same heading as the form it replaces: wait for
    // what only the answer shows.
    wait_for_text(chrome, ".error", "The two passwords are not the same.").await;
    assert_eq!(chrome.text("h1").await, "Set a new password");
    chrome.screenshot("mismatch").await;
    chrome.type_into("#password", "correct horse battery").await;
    chrome.type_into("#confirm", "correct horse battery").await;
    chrome.screenshot("reset").await;
    chrome.click("button[type=submit]").await;
    chrome.wait_for_url(&site.callback()).await;
    wait_for_heading(chrome, "Example app: signed in").await;
    assert!(site.last_received().contains_key("code"));
    assert_quiet_console(chrome).await;

    // Signed in, the person changes the password again on the account page.
    chrome.goto(&app.url("/account/password")).await;
    wait_for_heading(chrome, "Change your password").await;
    assert_eq!(chrome.text("label[for=current]").await, "Current password");
    chrome.type_into("#current", "correct horse battery").await;
    chrome.type_into("#password", "staple and more").await;
    chrome.type_into("#confirm", "staple and more").await;
    chrome.screenshot("account").await;
    chrome.click("button[type=submit]").await;
    wait_for_heading(chrome, "Your password is changed").await;
    chrome.screenshot("changed").await;
    assert_quiet_console(chrome).await;
}

/// In `local_only`, a person whose password never moved is offered the link
/// on the spot; a spent link says so in words.
#[tokio::test]
async fn in_local_only_the_person_without_a_password_here_is_offered_a_link() {
    let test = "in_local_only_the_person_without_a_password_here_is_offered_a_link";
    if !chrome::available(test) {
        return;
    }
    let sink = switchyard_kit::smtp::SmtpSink::start().await;
    let t = spawn_with_upstream(Flavor::Auth0, |s| {
        crate::recovery::send_to(&sink, s);
        s.cutover.phase = Phase::LocalOnly;
        s.password.failure_floor_ms = 50;
    })
    .await;
    t.shadow("auth0|00000000000000000000beef", "erin@example.com")
        .await;
    let site = Site::start(String::new()).await;
    register_web(&t.app, "site", &site).await;
    let chrome = &Chrome::start(env!("CARGO_TARGET_TMPDIR"), "local_only_reset").await;
    let query = query_string(&request_to("site", &site));
    chrome
        .goto(&t.app.url(&format!("/authorize?{query}")))
        .await;
    sign_in_on_switchyard(chrome, "erin@example.com", "what she remembers").await;
    // The answer of a wrong password: nothing tells an account that moved
    // without its password apart. Its reset link is the way on.
    wait_for_text(
        chrome,
        ".error",
        "Wrong email, username or password. If you have not set a password here yet, use \u{201c}Forgot password?\u{201d} below.",
    )
    .await;
    chrome.screenshot("moved").await;
    chrome.click("a[href^='/login/forgot']").await;
    wait_for_heading(chrome, "Reset your password").await;
    assert_eq!(chrome.value("#username").await, "erin@example.com");
    assert_eq!(chrome.text("button[type=submit]").await, "Email me a link");
    chrome.click("button[type=submit]").await;
    wait_for_heading(chrome, "Check your email").await;
    let messages = sink.wait_for(1, Duration::from_secs(20)).await.unwrap();
    let link = messages[0].reset_link().expect("a reset link");
    chrome.goto(&link).await;
    wait_for_heading(chrome, "Set a new password").await;
    chrome.type_into("#password", "correct horse battery").await;
    chrome.type_into("#confirm", "correct horse battery").await;
    chrome.click("button[type=submit]").await;
    chrome.wait_for_url(&site.callback()).await;
    wait_for_heading(chrome, "Example app: signed in").await;
    // The same link a second time.
    chrome.goto(&link).await;
    wait_for_heading(chrome, "This link no longer works").await;
    chrome.screenshot("spent").await;
    assert_quiet_console(chrome).await;
}

/// The end-game invitation as its reader meets it: the email in the
/// browser, its button, the new password, and the page that says it is set
/// (no application sign-in to continue).
#[tokio::test]
async fn an_invited_person_follows_the_email_and_sets_a_password() {
    let test = "an_invited_person_follows_the_email_and_sets_a_password";
    if !chrome::available(test) {
        return;
    }
    let sink = switchyard_kit::smtp::SmtpSink::start().await;
    let app = spawn_app_with(|s| crate::recovery::send_to(&sink, s)).await;
    let user = app.add_user("dana@example.com", PASSWORD).await;
    let invitation = switchyard::email::EmailRequest {
        message: switchyard::email::Message::Invitation,
        to: "dana@example.com".into(),
        authz: None,
    };
    app.state
        .db
        .enqueue_outbox(&invitation.queued(&user.id))
        .await
        .unwrap();
    let messages = sink.wait_for(1, Duration::from_secs(20)).await.unwrap();
    let html = messages[0].part("text/html").expect("an HTML part");
    let mailbox = tempfile::tempdir().unwrap();
    let opened = mailbox.path().join("invitation.html");
    std::fs::write(&opened, &html).unwrap();
    let chrome = &Chrome::start(env!("CARGO_TARGET_TMPDIR"), "invitation").await;
    chrome.goto(&format!("file://{}", opened.display())).await;
    chrome.screenshot("email").await;
    assert!(chrome.text("body").await.contains("dana@example.com"));
    chrome.click("a[href*='/login/reset']").await;
    wait_for_heading(chrome, "Set a new password").await;
    chrome.type_into("#password", "correct horse battery").await;
    chrome.type_into("#confirm", "correct horse battery").await;
    chrome.click("button[type=submit]").await;
    wait_for_heading(chrome, "Your password is set").await;
    chrome.screenshot("set").await;
    assert_quiet_console(chrome).await;
}

#[tokio::test]
async fn a_plain_v2_logout_link_asks_before_signing_out_in_chromium() {
    if !chrome::available("a_plain_v2_logout_link_asks_before_signing_out_in_chromium") {
        return;
    }
    let app = spawn_app().await;
    app.add_user("alice@example.com", PASSWORD).await;
    let site = Site::start(String::new()).await;
    register_web(&app, "web", &site).await;
    let chrome = &Chrome::start(env!("CARGO_TARGET_TMPDIR"), "v2_logout").await;
    let query = query_string(&request_to("web", &site));
    chrome.goto(&app.url(&format!("/authorize?{query}"))).await;
    sign_in_on_switchyard(chrome, "alice@example.com", PASSWORD).await;
    chrome.wait_for_url(&site.callback()).await;

    // What any page can make a browser fetch: no application, no return
    // address. The person is asked.
    chrome.goto(&app.url("/v2/logout")).await;
    wait_for_heading(chrome, "Sign out?").await;
    chrome.screenshot("v2_logout_confirm").await;
    chrome.click("button[type=submit]").await;
    wait_for_heading(chrome, "You are signed out").await;
    chrome.screenshot("v2_logout_done").await;
    assert_quiet_console(chrome).await;

    // Signed out for real: the next sign-in asks again.
    chrome.goto(&app.url(&format!("/authorize?{query}"))).await;
    wait_for_heading(chrome, "Sign in").await;
}
