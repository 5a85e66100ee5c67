//! One way to check a password login, whatever face asked for it: the
//! login page (`login`) and the password grant (`oidc::grant_password`)
//! each turn an [`Outcome`] into their own protocol's answer, and nothing
//! else.
//!
//! [`authenticate`] owns the steps both need, in this order: the input's
//! bounds; throttling, which counts the attempt atomically before any hash
//! is computed or any upstream called;
//! routing by the cutover rules ([`route_for`]); the local track or the
//! upstream-password track (lazy migration); recording the outcome with
//! the throttle, the audit trail and the metrics; and padding every failure
//! to the same duration (ASVS 6.3.8), so a fix to any step is made once.
//!
//! [`identify`] answers the login page's identifier step the same way for
//! every account until a password has been checked.

use std::net::IpAddr;
use std::time::Duration;

use crate::cutover::{Decision, Route, Subject, decide};
use crate::error::AppError;
use crate::metrics::Metrics;
use crate::migrate::lazy;
use crate::password::Verified;
use crate::state::AppState;
use crate::store::stats::{LoginResult, LoginRoute, login_detail};
use crate::store::{AuditEvent, User};
use crate::throttle::Counted;

/// The longest identifier (an email address, RFC 5321 §4.5.3.1) and
/// password accepted; longer input is refused before any work.
pub const MAX_IDENTIFIER: usize = 320;
pub const MAX_PASSWORD: usize = 4096;

/// Which face a login came through: it names the login in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    LoginPage,
    PasswordGrant,
}

/// A password login to check.
pub struct Attempt<'a> {
    pub identifier: &'a str,
    pub password: &'a str,
    pub client_id: &'a str,
    pub ip: IpAddr,
    pub via: Via,
    /// The identifier step's routing, when the same form carried the
    /// password; without it the login is routed after throttling.
    pub routed: Option<Routed>,
}

/// What became of an [`Attempt`].
#[derive(Debug)]
pub enum Outcome {
    /// The password is right and the user may sign in (migrated now, if the
    /// upstream verified it), with the route it took.
    Authenticated(Box<User>, LoginRoute),
    /// Wrong identifier or password, or a blocked user: one answer for all.
    Failed,
    /// The upstream's brute-force protection has locked the account for
    /// now. It says so whatever the password, so telling the user reveals
    /// nothing more than a failure; the answer is padded like one.
    Locked,
    /// Input out of bounds (empty or too long): refused before any work.
    Invalid,
    /// Too many recent failures for this account or address.
    Throttled { retry_after: Duration },
    /// The password cannot move this user (MFA, a required password change,
    /// a social identity, or the redirect track's route): the upstream's
    /// own page can still sign them in. The attempt, when it stays counted,
    /// is given back once the upstream has signed them in.
    NeedsRedirect(Option<Counted>),
    /// The upstream could not be asked.
    Unavailable,
}

/// Checks `attempt` (see the module documentation for the steps).
pub async fn authenticate(state: &AppState, attempt: Attempt<'_>) -> Result<Outcome, AppError> {
    let Attempt {
        identifier,
        password,
        client_id,
        ip,
        via,
        routed,
    } = attempt;
    if identifier.is_empty()
        || identifier.len() > MAX_IDENTIFIER
        || password.is_empty()
        || password.len() > MAX_PASSWORD
    {
        return Ok(Outcome::Invalid);
    }
    let counted = match state.throttle.attempt(identifier, ip).await? {
        Ok(counted) => counted,
        Err(limited) => {
            return Ok(Outcome::Throttled {
                retry_after: limited.retry_after,
            });
        }
    };
    let started = tokio::time::Instant::now();
    let Routed {
        decision,
        account,
        anonymous_route,
    } = match routed {
        Some(routed) => routed,
        None => route_for(state, identifier, client_id).await?,
    };
    let label = match via {
        Via::LoginPage => decision.route.as_str(),
        Via::PasswordGrant => "password_grant",
    };
    let route = login_route(decision.route);
    let user = match decision.route {
        Route::Local => authenticate_local(state, account, password).await?,
        // A user with no password here (never signed in during the
        // migration, or unknown) gets the answer of a wrong password: which
        // accounts exist, and which have moved without their password, must
        // not show (ASVS 6.3.8). The failure page offers the reset link to
        // everyone alike.
        Route::ResetPassword => None,
        Route::UpstreamPassword => {
            let asked = tokio::time::Instant::now();
            // The end user's address goes to the upstream's brute-force
            // protection with the password (src/upstream/client.rs).
            let checked = lazy::verify_and_migrate(state, identifier, password, ip).await;
            if checked.is_ok() {
                // How long the upstream takes to answer is how long every
                // failure must take (see `pad_failure`).
                state.throttle.record_upstream_check(asked.elapsed());
            }
            match checked {
                Ok(lazy::Outcome::Migrated(user)) => Some(*user),
                Ok(lazy::Outcome::Failed | lazy::Outcome::Blocked) => None,
                Ok(lazy::Outcome::Locked) => {
                    // Counted and padded like a failure.
                    let end = (route, LoginResult::Locked);
                    failed(state, label, end, client_id, ip, started).await;
                    return Ok(Outcome::Locked);
                }
                Ok(lazy::Outcome::Redirect(why)) => {
                    // The upstream says so only once the password was right
                    // (MFA, a required change, a leaked password): the
                    // attempt stays counted and the answer waits like a
                    // failure, so neither its timing nor the throttle tells
                    // a right password from a wrong one.
                    tracing::info!(reason = %why, "password track not possible; redirect track");
                    pad_failure(state, started).await;
                    return Ok(Outcome::NeedsRedirect(Some(counted)));
                }
                Err(e) => {
                    state.throttle.give_back(counted).await?;
                    return match e {
                        AppError::Unavailable => Ok(Outcome::Unavailable),
                        e => Err(e),
                    };
                }
            }
        }
        Route::UpstreamRedirect => {
            if redirect_reveals_account(&decision, anonymous_route) {
                // Counted and padded like a failure: a redirect that only
                // this account gets must be no cheaper an oracle than a
                // wrong password.
                pad_failure(state, started).await;
                return Ok(Outcome::NeedsRedirect(Some(counted)));
            }
            state.throttle.give_back(counted).await?;
            return Ok(Outcome::NeedsRedirect(None));
        }
    };
    match user {
        Some(user) => {
            state.throttle.succeeded(counted).await?;
            Metrics::count(&state.metrics.logins, label, "ok");
            Ok(Outcome::Authenticated(Box::new(user), route))
        }
        None => {
            // The attempt stays counted.
            let end = (route, LoginResult::Failed);
            failed(state, label, end, client_id, ip, started).await;
            Ok(Outcome::Failed)
        }
    }
}

/// A login that did not authenticate: counted under its result, audited
/// with its route and result (so the overview counts them from the one
/// event), and answered no sooner than the failure floor.
async fn failed(
    state: &AppState,
    label: &str,
    (route, result): (LoginRoute, LoginResult),
    client_id: &str,
    ip: IpAddr,
    started: tokio::time::Instant,
) {
    Metrics::count(&state.metrics.logins, label, result.as_str());
    let event =
        audit_event("login_failed", None, client_id, ip).with_detail(login_detail(route, result));
    record(state, event).await;
    pad_failure(state, started).await;
}

/// The route a login event names for a routing decision.
pub fn login_route(route: Route) -> LoginRoute {
    match route {
        Route::Local => LoginRoute::Local,
        Route::UpstreamPassword => LoginRoute::UpstreamPassword,
        Route::UpstreamRedirect => LoginRoute::UpstreamRedirect,
        Route::ResetPassword => LoginRoute::ResetPassword,
    }
}

/// A routed login: the decision, and the account it was made on, read once
/// so the local track verifies what routing saw without reading it again.
pub struct Routed {
    pub decision: Decision,
    pub account: Account,
    /// The route an identifier no account has would take here: an answer
    /// that differs from it tells the account apart.
    pub anonymous_route: Route,
}

/// Whether sending this login to the upstream's page says something about
/// the account (a federated user, a pin) that an unknown identifier would
/// not be told.
fn redirect_reveals_account(decision: &Decision, anonymous_route: Route) -> bool {
    decision.route == Route::UpstreamRedirect && anonymous_route != Route::UpstreamRedirect
}

/// What the identifier step (the first form, without a password) answers.
pub enum Identified {
    /// Ask for the password: the same page whatever the account, so
    /// nothing is told until a password has been checked.
    Password(Box<Routed>),
    /// Send the browser to the upstream's own page, with the attempt that
    /// stays counted until the upstream has signed the user in.
    Redirect(Option<Counted>),
    /// Too many recent failures for this account or address.
    Throttled { retry_after: Duration },
}

/// Routes the identifier step. A redirect every identifier would get
/// (passthrough, a cohort outside the migration, an upstream without a
/// password grant) is answered at once; one only this account gets is
/// counted by the throttle and padded like a failed password first (ASVS
/// 6.3.8), since it cannot be avoided: such a user has no password to ask.
pub async fn identify(
    state: &AppState,
    identifier: &str,
    client_id: &str,
    ip: IpAddr,
) -> Result<Identified, AppError> {
    let routed = route_for(state, identifier, client_id).await?;
    if routed.decision.route != Route::UpstreamRedirect {
        return Ok(Identified::Password(Box::new(routed)));
    }
    if !redirect_reveals_account(&routed.decision, routed.anonymous_route) {
        return Ok(Identified::Redirect(None));
    }
    let started = tokio::time::Instant::now();
    // The attempt stays counted, as a failure's does, until the upstream
    // has signed the user in.
    let counted = match state.throttle.attempt(identifier, ip).await? {
        Ok(counted) => counted,
        Err(limited) => {
            return Ok(Identified::Throttled {
                retry_after: limited.retry_after,
            });
        }
    };
    Metrics::count(&state.metrics.logins, "identifier", "redirect");
    pad_failure(state, started).await;
    Ok(Identified::Redirect(Some(counted)))
}

/// The user a login names and their stored password hash.
pub struct Account {
    pub user: Option<User>,
    pub password_hash: Option<String>,
}

/// The route of a login by `identifier` for `client_id` (src/cutover).
pub async fn route_for(
    state: &AppState,
    identifier: &str,
    client_id: &str,
) -> Result<Routed, AppError> {
    let (user, password_hash) = match state.db.find_login(identifier).await? {
        Some((user, hash)) => (Some(user), hash),
        None => (None, None),
    };
    let rules = state.cutover.rules().await?;
    let upstream = state.upstream.as_ref();
    let password_grant = upstream.is_some_and(|u| u.client.def.password.is_some());
    let subject = Subject {
        identifier,
        user: user.as_ref(),
        has_password: password_hash.is_some(),
        client_id: Some(client_id),
        upstream: upstream.is_some(),
        password_grant,
    };
    let decision = decide(&rules, &subject);
    let anonymous_route = decide(
        &rules,
        &Subject {
            user: None,
            has_password: false,
            ..subject
        },
    )
    .route;
    Ok(Routed {
        decision,
        account: Account {
            user,
            password_hash,
        },
        anonymous_route,
    })
}

/// Every failed password login takes at least `password.failure_floor_ms`,
/// whichever track it took (local hash, imported hash, upstream call,
/// unknown user), so its duration tells nothing (ASVS 6.3.8). When the
/// upstream's password checks take longer than that (their rolling p99),
/// that is the floor: otherwise a migrated user's wrong password would
/// answer sooner than an unmigrated one's.
pub async fn pad_failure(state: &AppState, started: tokio::time::Instant) {
    let configured = Duration::from_millis(state.settings.password.failure_floor_ms);
    let floor = state
        .throttle
        .upstream_check_p99()
        .map_or(configured, |p99| p99.max(configured));
    tokio::time::sleep_until(started + floor).await;
}

/// Verifies a local password against the account routing read. `None` for
/// every failure alike.
pub async fn authenticate_local(
    state: &AppState,
    account: Account,
    password: &str,
) -> Result<Option<User>, AppError> {
    let Account {
        user,
        password_hash,
    } = account;
    let verified = state
        .passwords
        .verify(password.to_string(), password_hash)
        .await
        .map_err(anyhow::Error::from)?;
    match (user, verified) {
        (Some(user), Verified::Yes { rehash }) if !user.blocked => {
            if rehash {
                let hash = state
                    .passwords
                    .hash(password.to_string())
                    .await
                    .map_err(anyhow::Error::from)?;
                state
                    .db
                    .set_password(&user.id, &hash, crate::password::ARGON2ID)
                    .await?;
            }
            Ok(Some(user))
        }
        _ => Ok(None),
    }
}

/// A login event of `kind` from `ip` through `client_id`.
pub fn audit_event(kind: &str, user_id: Option<&str>, client_id: &str, ip: IpAddr) -> AuditEvent {
    AuditEvent::new(kind, user_id, Some(client_id)).with_ip(ip)
}

/// Records a login event (see [`record`]).
pub async fn audit(
    state: &AppState,
    kind: &str,
    user_id: Option<&str>,
    client_id: &str,
    ip: IpAddr,
) {
    record(state, audit_event(kind, user_id, client_id, ip)).await;
}

/// Writes `event` to the audit trail. An audit write never fails the
/// request that caused it: a failure is logged instead.
pub async fn record(state: &AppState, event: AuditEvent) {
    if let Err(e) = state.db.record_event(&event).await {
        tracing::warn!(error = %e, kind = %event.kind, "audit event not recorded");
    }
}
