//! Account recovery: "Forgot password", the reset link, a signed-in user's
//! password change, and the invitations of the end-game campaign.
//!
//! A link carries a 256-bit random token; the database keeps only its
//! SHA-256 ([`crate::store::recovery`]). The token is minted when the email
//! is *delivered*, by the outbox worker, not when it is asked for: the
//! queued row then holds nothing that could open an account, and a later
//! request, which mints a newer token, invalidates the earlier link
//! (OWASP Forgot Password Cheat Sheet).

use axum::http::{HeaderMap, header};
use axum::response::Response;

use crate::crypto::{constant_time_eq, random_token, sha256_b64};
use crate::error::AppError;
use crate::session::{cookie_header, cookie_name, read_cookie};
use crate::state::AppState;
use crate::store::now;
use crate::store::recovery::Purpose;

mod account;
mod pages;

/// The recovery and account pages.
pub fn router() -> axum::Router<AppState> {
    use axum::routing::get;
    pages::router().route(
        "/account/password",
        get(account::get_password).post(account::post_password),
    )
}

/// A fresh link for `user_id`: the token is stored (as its hash), and every
/// earlier link of theirs stops working. `authz` is the pending
/// authorization request the reset continues.
pub async fn mint_link(
    state: &AppState,
    user_id: &str,
    purpose: Purpose,
    authz: Option<&str>,
) -> Result<String, AppError> {
    let token = random_token();
    let ttl = match purpose {
        Purpose::Reset => state.settings.recovery.token_ttl_secs,
        Purpose::Invite => state.settings.recovery.invite_ttl_secs,
    };
    let now = now();
    state
        .db
        .issue_recovery_token(
            &token_hash(&token),
            user_id,
            purpose,
            authz,
            now,
            now + ttl as i64,
        )
        .await?;
    Ok(format!(
        "{}/login/reset?token={token}",
        state.settings.issuer_base()
    ))
}

/// How a token is stored.
pub fn token_hash(token: &str) -> String {
    sha256_b64(token.as_bytes())
}

/// The double-submit CSRF token of the recovery and account pages (OWASP
/// CSRF Prevention Cheat Sheet): a random value in a `SameSite=Lax`,
/// `HttpOnly` cookie, repeated in a hidden form field. A cross-site form
/// cannot read the cookie, so it cannot send the matching field. These
/// pages have no pending authorization request whose token could serve.
pub(crate) struct CsrfCookie {
    pub value: String,
    fresh: bool,
}

/// How long a recovery form may stay open.
const CSRF_COOKIE_SECS: u64 = 2 * 3600;

impl CsrfCookie {
    /// The browser's token, or a new one when it has none.
    pub fn read_or_new(state: &AppState, headers: &HeaderMap) -> Self {
        match read_cookie(headers, &cookie_name(state, "csrf")).filter(|v| v.len() == 43) {
            Some(value) => Self {
                value,
                fresh: false,
            },
            None => Self {
                value: random_token(),
                fresh: true,
            },
        }
    }

    /// `response`, setting the cookie when the token is new.
    pub fn attach(&self, state: &AppState, mut response: Response) -> Response {
        if self.fresh
            && let Ok(v) = cookie_header(
                state,
                &cookie_name(state, "csrf"),
                &self.value,
                CSRF_COOKIE_SECS,
            )
        {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
        response
    }

    /// The token, when the form's field matches the cookie.
    pub fn check(
        state: &AppState,
        headers: &HeaderMap,
        field: Option<&str>,
    ) -> Result<String, AppError> {
        let cookie = read_cookie(headers, &cookie_name(state, "csrf")).unwrap_or_default();
        match field {
            Some(field)
                if cookie.len() == 43 && constant_time_eq(field.as_bytes(), cookie.as_bytes()) =>
            {
                Ok(cookie)
            }
            _ => Err(AppError::bad_request(
                "Form refused",
                "The form was not sent by this page, or its cookie was lost. Open the page again and retry.",
            )),
        }
    }
}
