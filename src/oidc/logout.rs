//! RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0) at
//! `/oidc/logout`, and Auth0's `/v2/logout` for applications that use an
//! Auth0 SDK.
//!
//! `post_logout_redirect_uri` and `returnTo` are matched exactly against
//! the client's registered logout URIs (RFC 9700 §4.11): no other value,
//! and nothing when the client cannot be identified, so logout is never an
//! open redirector.

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::params::Params;
use super::redirect_uri;
use crate::crypto::{constant_time_eq, sha256_b64};
use crate::error::AppError;
use crate::login;
use crate::session::{cookie_header, cookie_name, current_session};
use crate::state::AppState;
use crate::templates::Csp;
use crate::tokens::grants::{self, Session};
use crate::tokens::jwt::{self, Expect, IdClaims};

/// `GET /oidc/logout`.
pub async fn get_logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let params = Params::parse(query.unwrap_or_default().as_bytes());
    logout(&state, &headers, params, false)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// `POST /oidc/logout`: the same parameters in a form, and the target of
/// the confirmation page.
pub async fn post_logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match Params::from_form_body(&headers, body).await {
        Ok(params) => logout(&state, &headers, params, true)
            .await
            .unwrap_or_else(IntoResponse::into_response),
        Err(e) => AppError::from(e).into_response(),
    }
}

async fn logout(
    state: &AppState,
    headers: &HeaderMap,
    params: Params,
    posted: bool,
) -> Result<Response, AppError> {
    params.reject_repeats()?;
    let bad = |m: &str| AppError::bad_request("Sign-out refused", m);
    // The hint names the client (its `aud`); it may be expired (§2).
    let hint = match params.get("id_token_hint")? {
        Some(token) => {
            let expect = Expect {
                issuer: &state.settings.issuer,
                audience: None,
                typ: None,
                allow_expired: true,
            };
            Some(
                jwt::verify::<IdClaims>(&state.keys.current(), token, &expect)
                    .map_err(|_| bad("The id_token_hint is not valid."))?,
            )
        }
        None => None,
    };
    let client_id = params.get("client_id")?;
    if let (Some(h), Some(c)) = (&hint, client_id)
        && h.aud != c
    {
        return Err(bad("The id_token_hint was not issued to this client_id."));
    }
    let client_id = client_id
        .map(String::from)
        .or_else(|| hint.as_ref().map(|h| h.aud.clone()));
    let target = params.get("post_logout_redirect_uri")?;
    let redirect = match target {
        Some(uri) => Some(checked_target(state, client_id.as_deref(), uri).await?),
        None => None,
    };

    let session = current_session(state, headers).await?;
    // §2: without a hint naming the signed-in session, the user confirms,
    // so a cross-site link cannot sign them out silently. The confirmation
    // form proves itself with a token derived from the session cookie.
    let hint_matches = match (&hint, &session) {
        (Some(h), Some((_, s))) => h.sid.as_deref() == Some(s.sid.as_str()) || h.sub == s.user_id,
        _ => false,
    };
    if let Some((key, _)) = &session {
        let confirmed = posted
            && params
                .get("csrf")?
                .is_some_and(|c| constant_time_eq(c.as_bytes(), logout_csrf(key).as_bytes()));
        if !hint_matches && !confirmed {
            let mut fields: Vec<(String, String)> = Vec::new();
            for name in ["client_id", "post_logout_redirect_uri", "state"] {
                if let Some(v) = params.get(name)? {
                    fields.push((name.into(), v.into()));
                }
            }
            if client_id.is_some() && params.get("client_id")?.is_none() {
                fields.push(("client_id".into(), client_id.clone().unwrap_or_default()));
            }
            return Ok(crate::templates::render(
                StatusCode::OK,
                "logout.html",
                minijinja::context! { title => "Sign out", confirm => true, csrf => logout_csrf(key), fields },
                &confirm_csp(state, client_id.as_deref(), redirect.as_deref()).await,
            ));
        }
    }
    end_session(state, session, redirect, params.get("state")?).await
}

/// `GET /v2/logout` (Auth0): `client_id` and `returnTo`. Auth0 signs out
/// without a confirmation page, and SDKs depend on that: they always send
/// both. A request without them names no application, so it may be any
/// site's link or image: the user is asked to confirm instead, on the
/// same page `/oidc/logout` shows (RP-Initiated Logout 1.0 §2).
pub async fn get_auth0_logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let params = Params::parse(query.unwrap_or_default().as_bytes());
    let run = async {
        params.reject_repeats()?;
        let client_id = params.get("client_id")?;
        let redirect = match params.get("returnTo")? {
            Some(uri) => Some(checked_target(&state, client_id, uri).await?),
            None => None,
        };
        let session = current_session(&state, &headers).await?;
        if let (Some((key, _)), None) = (&session, &redirect) {
            let mut fields: Vec<(String, String)> = Vec::new();
            if let Some(c) = client_id {
                fields.push(("client_id".into(), c.into()));
            }
            return Ok(crate::templates::render(
                StatusCode::OK,
                "logout.html",
                minijinja::context! { title => "Sign out", confirm => true, csrf => logout_csrf(key), fields },
                &confirm_csp(&state, client_id, None).await,
            ));
        }
        end_session(&state, session, redirect, None).await
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

fn logout_csrf(session_key: &str) -> String {
    sha256_b64(format!("logout:{session_key}").as_bytes())
}

async fn checked_target(
    state: &AppState,
    client_id: Option<&str>,
    uri: &str,
) -> Result<String, AppError> {
    let bad = |m: &str| AppError::bad_request("Sign-out refused", m);
    let client_id = client_id
        .ok_or_else(|| bad("A return address needs client_id or id_token_hint to be checked."))?;
    let client = state
        .recent
        .client(&*state.db, client_id)
        .await?
        .ok_or_else(|| bad("The application is not known here."))?;
    if !redirect_uri::matches(&client.post_logout_redirect_uris, uri) {
        return Err(bad(
            "The return address is not registered for this application.",
        ));
    }
    Ok(uri.to_string())
}

async fn end_session(
    state: &AppState,
    session: Option<(String, Session)>,
    redirect: Option<String>,
    client_state: Option<&str>,
) -> Result<Response, AppError> {
    let target = redirect.map(|mut uri| {
        if let Some(s) = client_state {
            let q = form_urlencoded::Serializer::new(String::new())
                .append_pair("state", s)
                .finish();
            uri.push(if uri.contains('?') { '&' } else { '?' });
            uri.push_str(&q);
        }
        uri
    });
    let mut chained = None;
    if let Some((key, session)) = session {
        state.sessions.delete(&key).await?;
        revoke_session_grants(state, &session).await?;
        chained = end_upstream_session(state, &session, target.as_deref()).await?;
    }
    let clear = cookie_header(state, &cookie_name(state, "session"), "", 0).ok();
    let mut response = match chained.or(target) {
        Some(uri) => (StatusCode::SEE_OTHER, [(header::LOCATION, uri)]).into_response(),
        None => signed_out_page(),
    };
    if let Some(c) = clear {
        response.headers_mut().append(header::SET_COOKIE, c);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Revokes every grant the session gave applications: their refresh
/// tokens stop working and userinfo refuses their access tokens
/// (OpenID Connect RP-Initiated Logout 1.0 §2 ends the session at the OP;
/// RFC 7009 §2.1 lets related tokens be revoked with it).
async fn revoke_session_grants(state: &AppState, session: &Session) -> Result<(), AppError> {
    grants::revoke_session_grants(&*state.sessions, &*state.db, &session.sid).await?;
    Ok(())
}

fn signed_out_page() -> Response {
    crate::templates::render(
        StatusCode::OK,
        "logout.html",
        minijinja::context! { title => "Signed out", confirm => false },
        &Csp::default(),
    )
}

/// The confirmation form is answered with a redirect to the application's
/// return address, or to the upstream's logout first; browsers hold those
/// redirects to the form's `form-action` (CSP Level 3 §6.4.1).
async fn confirm_csp(state: &AppState, client_id: Option<&str>, redirect: Option<&str>) -> Csp {
    let mut targets: Vec<String> = redirect.into_iter().map(String::from).collect();
    targets.extend(login::upstream::browser_targets(state, client_id).await);
    Csp::form_targets(targets.iter().map(String::as_str))
}

/// `GET /oidc/logged-out`: where a chained upstream logout returns when the
/// application named no return address.
pub async fn get_logged_out() -> Response {
    signed_out_page()
}

/// Revokes the session's upstream refresh token (where the upstream offers
/// revocation) and forgets its upstream tokens. With `chain_logout`, returns
/// the upstream logout URL the browser must visit, which comes back to
/// `target` (or Switchyard's signed-out page).
async fn end_upstream_session(
    state: &AppState,
    session: &Session,
    target: Option<&str>,
) -> Result<Option<String>, AppError> {
    let Some(up) = &state.upstream else {
        return Ok(None);
    };
    let mapping = up.mapping(&*state.sessions, &*state.db);
    let Some(tokens) = mapping.load(&session.sid).await? else {
        return Ok(None);
    };
    mapping.delete(&session.sid).await?;
    // Only Switchyard's own upstream tokens can be revoked here: those of an
    // adopted session belong to the application's client and its secret.
    if let Some(rt) = tokens
        .refresh_token
        .as_deref()
        .filter(|_| tokens.client_id == up.client.creds.client_id)
    {
        match up.client.revoke(rt, &up.client.creds).await {
            Ok(_) => state.metrics.upstream.count("revoke", "ok"),
            Err(e) => {
                state.metrics.upstream.count("revoke", e.kind());
                tracing::warn!(error = %e, "upstream revocation at logout failed");
            }
        }
    }
    if !up.client.settings.chain_logout {
        return Ok(None);
    }
    let back = target
        .map(String::from)
        .unwrap_or_else(|| format!("{}/oidc/logged-out", state.settings.issuer_base()));
    Ok(up
        .client
        .logout_url(tokens.id_token.as_deref(), &back)
        .await)
}
