//! What the admin tests share: an operator's token and session, and the
//! admin API called as a machine would.
#![allow(dead_code)] // the admin test modules that use these land next

use switchyard_kit::chrome::Chrome;

use reqwest::StatusCode;
use serde_json::Value;
use switchyard::admin::access::{ADMIN_READ_SCOPE, ADMIN_SCOPE, AdminSession};
use switchyard::crypto::random_token;
use switchyard::store::SessionStoreExt;

use crate::helpers::*;

/// The access an admin token is asked with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminScope {
    Write,
    Read,
}

impl AdminScope {
    pub fn scope(self) -> &'static str {
        match self {
            AdminScope::Write => ADMIN_SCOPE,
            AdminScope::Read => ADMIN_READ_SCOPE,
        }
    }
}

impl TestApp {
    /// An admin access token for a machine client allowed `scope`,
    /// obtained as a machine obtains it: the client credentials grant at
    /// `/oauth/token` with `client_secret_basic`.
    pub async fn admin_token(&self, scope: AdminScope) -> String {
        let client_id = self.admin_client(scope).await;
        let (status, body) = self.client_credentials(&client_id, None).await;
        assert_eq!(status, StatusCode::OK, "client credentials grant: {body}");
        body["access_token"]
            .as_str()
            .expect("an access token")
            .to_string()
    }

    /// A confidential machine client (secret [`SECRET`]) allowed only the
    /// client credentials grant and `scope`, made once: its id.
    pub async fn admin_client(&self, scope: AdminScope) -> String {
        let client_id = format!("ops-{}", scope.scope().replace(':', "-"));
        if self
            .state
            .db
            .get_client(&client_id)
            .await
            .unwrap()
            .is_none()
        {
            let client = switchyard::config::ClientSettings {
                client_id: client_id.clone(),
                grant_types: vec![switchyard::store::GrantType::ClientCredentials],
                scopes: vec![scope.scope().into()],
                ..Default::default()
            }
            .to_client(
                Some(switchyard::crypto::hash_secret(SECRET)),
                switchyard::store::ClientSource::Cli,
            );
            self.state.db.create_client(&client).await.unwrap();
        }
        client_id
    }

    /// `POST /oauth/token` with `grant_type=client_credentials` as
    /// `client_id` (secret [`SECRET`], `client_secret_basic`), asking for
    /// `scope` when given: the status and the JSON body.
    pub async fn client_credentials(
        &self,
        client_id: &str,
        scope: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut form = vec![("grant_type", "client_credentials")];
        if let Some(scope) = scope {
            form.push(("scope", scope));
        }
        let response = self
            .api
            .post(self.url("/oauth/token"))
            .basic_auth(client_id, Some(SECRET))
            .form(&form)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// `GET {API}{path}` with `token`: the status and the JSON body.
    pub async fn admin_get(&self, token: &str, path: &str) -> (StatusCode, Value) {
        let response = self
            .api
            .get(self.url(&format!("{}{path}", switchyard::admin::API)))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// `{method} {API}{path}` with `token` and a JSON body.
    pub async fn admin_send(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .api
            .request(
                method,
                self.url(&format!("{}{path}", switchyard::admin::API)),
            )
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Makes `email` (a user with [`PASSWORD`], added when missing) an
    /// operator and opens an admin session for them: the cookie's name and
    /// value.
    pub async fn admin_session(&self, email: &str) -> (String, String) {
        let user = match self.state.db.find_user_by_login(email).await.unwrap() {
            Some(u) => u,
            None => self.add_user(email, PASSWORD).await,
        };
        self.state
            .db
            .grant_operator(&user.id, switchyard::store::now())
            .await
            .unwrap();
        let cookie = random_token();
        let session = AdminSession {
            user_id: user.id,
            csrf: random_token(),
            created_at: switchyard::store::now(),
        };
        self.state
            .sessions
            .put_json(
                &AdminSession::key(&cookie),
                &session,
                std::time::Duration::from_secs(600),
            )
            .await
            .unwrap();
        (AdminSession::cookie_name(&self.state), cookie)
    }

    /// Signs `email` (a user with [`PASSWORD`], added when missing and made
    /// an operator) in to the dashboard through the real pages in
    /// `chrome`: `/admin/login`, Switchyard's identifier and password
    /// pages, back through `/admin/callback`. Ends on the dashboard page
    /// the sign-in returned to.
    pub async fn admin_sign_in(&self, chrome: &Chrome, email: &str) {
        self.admin_sign_in_to(chrome, email, "/admin").await;
    }

    /// [`Self::admin_sign_in`], coming back to `return_to` (a dashboard path).
    pub async fn admin_sign_in_to(&self, chrome: &Chrome, email: &str, return_to: &str) {
        let user = match self.state.db.find_user_by_login(email).await.unwrap() {
            Some(u) => u,
            None => self.add_user(email, PASSWORD).await,
        };
        self.state
            .db
            .grant_operator(&user.id, switchyard::store::now())
            .await
            .unwrap();
        let start = format!(
            "/admin/login?return_to={}",
            form_urlencoded::byte_serialize(return_to.as_bytes()).collect::<String>()
        );
        chrome.goto(&self.url(&start)).await;
        chrome
            .wait_for(
                "the identifier field",
                "return document.querySelector('#username')",
                std::time::Duration::from_secs(20),
            )
            .await;
        chrome.type_into("#username", email).await;
        chrome.click("button[type=submit]").await;
        chrome
            .wait_for(
                "the password field",
                "return document.querySelector('#password')",
                std::time::Duration::from_secs(20),
            )
            .await;
        chrome.type_into("#password", PASSWORD).await;
        chrome.click("button[type=submit]").await;
        // Exactly there: the callback is on the way, under /admin too.
        let script = format!(
            "return location.href === {} && document.readyState === 'complete'",
            serde_json::json!(self.url(return_to))
        );
        chrome
            .wait_for(
                &format!("the dashboard at {return_to}"),
                &script,
                std::time::Duration::from_secs(20),
            )
            .await;
    }
}
