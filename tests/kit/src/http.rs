//! The client side of a test or a bench: PKCE pairs, `Location` and query
//! parsing, the forms of login pages, cookies carried by hand, and the two
//! kinds of `reqwest` client.

use std::collections::HashMap;

use anyhow::{Context, ensure};
use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use scraper::{Html, Selector};
use serde_json::Value;

use crate::random_token;

/// A browser tab: keeps cookies, follows no redirects, so a test steps
/// through each one by hand.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a reqwest client")
}

/// An application's back end: no cookies, no redirects followed.
pub fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a reqwest client")
}

/// A PKCE verifier and its S256 challenge (RFC 7636).
pub fn pkce() -> (String, String) {
    let verifier = random_token();
    let challenge = URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, verifier.as_bytes()));
    (verifier, challenge)
}

/// The `Location` header, if there is one and it is text.
pub fn try_location(headers: &HeaderMap) -> Option<String> {
    Some(headers.get(LOCATION)?.to_str().ok()?.to_string())
}

/// The `Location` header; panics without one.
pub fn location(headers: &HeaderMap) -> String {
    try_location(headers).expect("a Location header")
}

/// The query parameters of a URL.
pub fn query_of(url: &str) -> HashMap<String, String> {
    url::Url::parse(url)
        .expect("absolute URL")
        .query_pairs()
        .into_owned()
        .collect()
}

/// The query parameters of a redirect's `Location` (`code`, `state`, `iss`,
/// or `error`...).
pub fn redirect_params(response: &reqwest::Response) -> HashMap<String, String> {
    let location = response
        .headers()
        .get(LOCATION)
        .unwrap_or_else(|| panic!("a redirect, got {}", response.status()))
        .to_str()
        .expect("ASCII Location");
    url::Url::parse(location)
        .expect("an absolute Location")
        .query_pairs()
        .into_owned()
        .collect()
}

/// The `Location` of a 303 as an absolute URL (a path is resolved against
/// `base`); an error names `step` when the response is not such a redirect.
pub fn redirect_target(
    base: &str,
    response: &reqwest::Response,
    step: &str,
) -> anyhow::Result<String> {
    ensure!(
        response.status() == reqwest::StatusCode::SEE_OTHER,
        "{step} answered {} instead of a redirect",
        response.status()
    );
    let location = response
        .headers()
        .get(LOCATION)
        .context("a redirect without Location")?
        .to_str()?;
    Ok(if location.starts_with('/') {
        format!("{base}{location}")
    } else {
        location.to_string()
    })
}

/// The `action` and the named inputs (name to value) of the first form on
/// a page.
pub fn form_fields(html: &str) -> (String, HashMap<String, String>) {
    let doc = Html::parse_document(html);
    let form = doc
        .select(&Selector::parse("form").expect("selector"))
        .next()
        .expect("a form on the page");
    let action = form.value().attr("action").unwrap_or("").to_string();
    let fields = form
        .select(&Selector::parse("input[name]").expect("selector"))
        .map(|input| {
            (
                input.value().attr("name").unwrap_or("").to_string(),
                input.value().attr("value").unwrap_or("").to_string(),
            )
        })
        .collect();
    (action, fields)
}

/// The value of the hidden input `name`, by a plain string search rather
/// than an HTML parser: a load generator that shares the cores with what it
/// measures stays cheap. The values are base64url tokens, which HTML
/// escaping leaves alone.
pub fn hidden_input(html: &str, name: &str) -> anyhow::Result<String> {
    let at = html
        .find(&format!("name=\"{name}\""))
        .with_context(|| format!("no {name} input on the login page"))?;
    let start = html[..at].rfind('<').context("an input outside a tag")?;
    let end = at + html[at..].find('>').context("an unclosed input tag")?;
    html[start..end]
        .split_once("value=\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(value, _)| value.to_string())
        .with_context(|| format!("the {name} input has no value"))
}

/// A response's cookies as a `Cookie` header, for a client that carries
/// them by hand.
pub fn cookies_of(response: &reqwest::Response) -> String {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The claims of a JWT, unverified (a test checks what was issued).
pub fn jwt_claims(jwt: &str) -> Value {
    jwt_part(jwt, 1)
}

/// The JOSE header of a JWT, unverified.
pub fn jwt_header(jwt: &str) -> Value {
    jwt_part(jwt, 0)
}

fn jwt_part(jwt: &str, i: usize) -> Value {
    let part = jwt.split('.').nth(i).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("JSON")
}
