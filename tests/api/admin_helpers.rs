//! What the admin tests share: an operator's token and session, and the
//! admin API called as a machine would, every answer checked against the
//! API's own OpenAPI 3.1 document (the one served at
//! `/admin/api/v1/openapi.json`): the operation must be described, the
//! status among its responses, the media type among the response's, and
//! the body valid against the schema (JSON Schema 2020-12, OpenAPI 3.1
//! §4.8.24).

use reqwest::{Method, StatusCode};
use serde_json::{Map, Value};
use switchyard::admin::access::{ADMIN_READ_SCOPE, ADMIN_SCOPE, AdminSession};
use switchyard::crypto::random_token;
use switchyard::store::SessionStoreExt;
use switchyard_kit::chrome::Chrome;

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
        self.machine_client(&client_id, &[scope.scope()]).await;
        client_id
    }

    /// A confidential client `client_id` (secret [`SECRET`]) allowed only
    /// the client credentials grant and `scopes`, made when missing.
    pub async fn machine_client(&self, client_id: &str, scopes: &[&str]) {
        if self.state.db.get_client(client_id).await.unwrap().is_none() {
            let client = switchyard::config::ClientSettings {
                client_id: client_id.into(),
                grant_types: vec![switchyard::store::GrantType::ClientCredentials],
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            }
            .to_client(
                Some(switchyard::crypto::hash_secret(SECRET)),
                switchyard::store::ClientSource::Cli,
            );
            self.state.db.create_client(&client).await.unwrap();
        }
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

    /// `GET {API}{path}` with `token`: the status and the JSON body. The
    /// response must be one the OpenAPI document describes
    /// ([`check_response`]); a response it does not is a test failure.
    pub async fn admin_get(&self, token: &str, path: &str) -> (StatusCode, Value) {
        let response = self
            .api
            .get(self.url(&format!("{}{path}", switchyard::admin::API)))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        self.documented_response(&reqwest::Method::GET, path, response)
            .await
    }

    /// `{method} {API}{path}` with `token` and a JSON body; the response is
    /// checked against the OpenAPI document like [`TestApp::admin_get`]'s.
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
                method.clone(),
                self.url(&format!("{}{path}", switchyard::admin::API)),
            )
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        self.documented_response(&method, path, response).await
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

impl TestApp {
    /// The OpenAPI document the app serves (without a token: it is public).
    pub async fn admin_openapi(&self) -> Value {
        let response = self
            .api
            .get(self.url(&format!("{}/openapi.json", switchyard::admin::API)))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "the OpenAPI document");
        response.json().await.expect("the OpenAPI document is JSON")
    }

    /// Reads an admin API response and fails the test unless the document
    /// describes it: the status and the JSON body (`Null` when empty).
    pub async fn documented_response(
        &self,
        method: &Method,
        path: &str,
        response: reqwest::Response,
    ) -> (StatusCode, Value) {
        let status = response.status();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = response.bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Body::Empty
        } else {
            match serde_json::from_slice::<Value>(&bytes) {
                Ok(v) => Body::Json(v),
                Err(_) => Body::Other,
            }
        };
        let document = self.admin_openapi().await;
        if let Err(e) = check_response(
            &document,
            method,
            path,
            status,
            content_type.as_deref(),
            &body,
        ) {
            panic!(
                "{method} {}{path} answered {status}, which the OpenAPI document does not describe: {e}\nbody: {}",
                switchyard::admin::API,
                String::from_utf8_lossy(&bytes)
                    .chars()
                    .take(2000)
                    .collect::<String>()
            );
        }
        let json = match body {
            Body::Json(v) => v,
            _ => Value::Null,
        };
        (status, json)
    }
}

/// A response body as the checker sees it.
#[derive(Debug, Clone)]
pub enum Body {
    Empty,
    Json(Value),
    /// Bytes that are not JSON (a CSV export, say): only its media type is
    /// checked.
    Other,
}

/// The path template of `document` that `path` (relative to the server
/// url, query allowed) falls under: `/users/{id}` for `/users/u-1`. Of
/// several, the one with the most literal segments (`/outbox/retry-failed`
/// over `/outbox/{id}`), as OpenAPI 3.1 §4.8.8.2 asks.
pub fn path_template<'d>(document: &'d Value, path: &str) -> Option<&'d str> {
    let path = path.split(['?', '#']).next().unwrap_or(path);
    let segments: Vec<&str> = path.split('/').collect();
    document["paths"]
        .as_object()?
        .keys()
        .filter_map(|template| {
            let parts: Vec<&str> = template.split('/').collect();
            if parts.len() != segments.len() {
                return None;
            }
            let mut literal = 0;
            for (part, segment) in parts.iter().zip(&segments) {
                if part.starts_with('{') && part.ends_with('}') {
                    if segment.is_empty() {
                        return None;
                    }
                } else if part == segment {
                    literal += 1;
                } else {
                    return None;
                }
            }
            Some((literal, template.as_str()))
        })
        .max_by_key(|(literal, _)| *literal)
        .map(|(_, template)| template)
}

/// Follows a local `$ref` (`#/components/responses/NotFound`) to what it
/// names; anything else is returned as it is.
fn resolve<'d>(document: &'d Value, value: &'d Value) -> Result<&'d Value, String> {
    let mut value = value;
    for _ in 0..16 {
        let Some(reference) = value.get("$ref").and_then(Value::as_str) else {
            return Ok(value);
        };
        let pointer = reference
            .strip_prefix('#')
            .ok_or_else(|| format!("$ref {reference} is not local to the document"))?;
        value = document
            .pointer(pointer)
            .ok_or_else(|| format!("$ref {reference} names nothing in the document"))?;
    }
    Err("a $ref cycle".into())
}

/// Checks one response against `document`: `Err` says what is not
/// described or what in the body breaks the schema.
pub fn check_response(
    document: &Value,
    method: &Method,
    path: &str,
    status: StatusCode,
    content_type: Option<&str>,
    body: &Body,
) -> Result<(), String> {
    let template = path_template(document, path)
        .ok_or_else(|| format!("no path in the document matches {path}"))?;
    let item = resolve(document, &document["paths"][template])?;
    let operation = item
        .get(method.as_str().to_ascii_lowercase())
        .ok_or_else(|| format!("{template} has no {method} operation"))?;
    let responses = operation
        .get("responses")
        .and_then(Value::as_object)
        .ok_or_else(|| format!("{method} {template} lists no responses"))?;
    // An exact code, then its range (`4XX`), then `default` (§4.8.16).
    let code = status.as_u16().to_string();
    let range = format!("{}XX", status.as_u16() / 100);
    let response = responses
        .get(&code)
        .or_else(|| responses.get(&range))
        .or_else(|| responses.get(&range.to_ascii_lowercase()))
        .or_else(|| responses.get("default"))
        .ok_or_else(|| {
            format!(
                "{method} {template} does not list status {code} (it lists {:?}); an error status can reference a shared response such as #/components/responses/NotFound",
                responses.keys().collect::<Vec<_>>()
            )
        })?;
    let response = resolve(document, response)?;
    let content = response.get("content").and_then(Value::as_object);
    let Some(content) = content.filter(|c| !c.is_empty()) else {
        return match body {
            Body::Empty => Ok(()),
            _ => Err(format!(
                "{method} {template} {code} is described without a body, but one came"
            )),
        };
    };
    let essence = content_type
        .map(|c| c.split(';').next().unwrap_or(c).trim().to_ascii_lowercase())
        .ok_or_else(|| format!("{method} {template} {code} came without a Content-Type"))?;
    let wildcard = format!("{}/*", essence.split('/').next().unwrap_or(""));
    let media = content
        .get(&essence)
        .or_else(|| content.get(&wildcard))
        .or_else(|| content.get("*/*"))
        .ok_or_else(|| {
            format!(
                "{method} {template} {code} came as {essence}, but is described as {:?}",
                content.keys().collect::<Vec<_>>()
            )
        })?;
    let Some(schema) = media.get("schema") else {
        return Ok(());
    };
    let json_like = essence == "application/json" || essence.ends_with("+json");
    let instance = match body {
        Body::Json(v) => v,
        Body::Empty if json_like => {
            return Err(format!(
                "{method} {template} {code} came with no body where {essence} is described"
            ));
        }
        Body::Other if json_like => {
            return Err(format!(
                "{method} {template} {code} came as {essence} but is not JSON"
            ));
        }
        _ => return Ok(()),
    };
    validate(document, schema, instance).map_err(|e| format!("{method} {template} {code}: {e}"))
}

/// Validates `instance` against `schema`, a schema taken from `document`
/// whose `$ref`s point into the document (`#/components/schemas/…`): the
/// schema is validated as a resource that carries the document's
/// `components` beside it, so those pointers resolve as they are written.
pub fn validate(document: &Value, schema: &Value, instance: &Value) -> Result<(), String> {
    let mut root = Map::new();
    root.insert(
        "$schema".into(),
        Value::String("https://json-schema.org/draft/2020-12/schema".into()),
    );
    root.insert("components".into(), document["components"].clone());
    root.insert("x-response".into(), schema.clone());
    root.insert("$ref".into(), Value::String("#/x-response".into()));
    let validator = jsonschema::draft202012::options()
        .build(&Value::Object(root))
        .map_err(|e| format!("the schema does not compile: {e}"))?;
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("at '{}': {e}", e.instance_path()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the body does not match the schema: {}",
            errors.join("; ")
        ))
    }
}
