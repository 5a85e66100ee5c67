//! What the Management API tests share: a backend's machine client and
//! token, obtained as an Auth0 SDK obtains them (the client credentials
//! grant with `audience=https://{domain}/api/v2/`), and the API called
//! with it.

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::*;

/// Every scope the Management API's users endpoints know.
pub const ALL_SCOPES: &[&str] = &[
    "read:users",
    "update:users",
    "create:users",
    "delete:users",
    "create:user_tickets",
];

impl TestApp {
    /// The Management API's identifier as Auth0's SDKs spell it:
    /// `https://{domain}/api/v2/`, the domain being the issuer's host.
    pub fn management_audience(&self) -> String {
        let issuer = url::Url::parse(&self.url("/")).unwrap();
        let host = match issuer.port() {
            Some(port) => format!("{}:{port}", issuer.host_str().unwrap()),
            None => issuer.host_str().unwrap().to_string(),
        };
        format!("https://{host}/api/v2/")
    }

    /// A confidential machine client (secret [`SECRET`]) allowed the
    /// client credentials grant and `scopes`, made once: its id.
    pub async fn management_client(&self, scopes: &[&str]) -> String {
        let client_id = format!("backend-{}", scopes.join("-").replace(':', "_"));
        self.machine_client(&client_id, scopes).await;
        client_id
    }

    /// The token endpoint's answer to an Auth0 SDK's request for a
    /// Management API token (`client_secret_post`, as Auth0's SDKs send
    /// it): the status and the JSON body.
    pub async fn management_grant(&self, client_id: &str, audience: &str) -> (StatusCode, Value) {
        let response = self
            .api
            .post(self.url("/oauth/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
                ("client_secret", SECRET),
                ("audience", audience),
            ])
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A Management API access token for a client allowed `scopes`.
    pub async fn management_token(&self, scopes: &[&str]) -> String {
        let client_id = self.management_client(scopes).await;
        let (status, body) = self
            .management_grant(&client_id, &self.management_audience())
            .await;
        assert_eq!(status, StatusCode::OK, "client credentials grant: {body}");
        body["access_token"].as_str().unwrap().to_string()
    }

    /// `{method} /api/v2{path}` with `token` and an optional JSON body:
    /// the status, the headers and the JSON body (`Null` when empty).
    pub async fn mgmt(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, HeaderMap, Value) {
        let mut request = self
            .api
            .request(method, self.url(&format!("/api/v2{path}")))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)))
        };
        (status, headers, body)
    }
}
