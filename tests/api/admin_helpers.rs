//! What the admin tests share: an operator's token and session, and the
//! admin API called as a machine would.
#![allow(dead_code)] // the admin test modules that use these land next

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
    /// An admin access token for a machine client allowed `scope`.
    pub async fn admin_token(&self, scope: AdminScope) -> String {
        // Until the client credentials grant lands, the token is minted
        // the way the grant will: an RFC 9068 token for the admin audience.
        let client_id = format!("ops-{}", scope.scope().replace(':', "-"));
        let mut client = self.add_client(&client_id, false).await;
        client.scopes = vec![scope.scope().into()];
        self.state.db.upsert_client(&client).await.unwrap();
        let keys = self.state.keys.current();
        let key = keys.active(self.state.signing_alg).unwrap();
        let now = switchyard::store::now();
        let claims = serde_json::json!({
            "iss": self.issuer, "sub": client_id, "client_id": client_id,
            "aud": switchyard::admin::access::admin_audience(&self.issuer),
            "exp": now + 300, "iat": now, "jti": random_token(), "scope": scope.scope(),
        });
        switchyard::tokens::jwt::sign(key, switchyard::tokens::jwt::ACCESS_TOKEN_TYP, &claims)
            .unwrap()
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
}
