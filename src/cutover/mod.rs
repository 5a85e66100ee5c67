//! Who goes where: phases, cohorts, pins, per-client overrides.
//!
//! [`decide`] is a pure function of the rules and what is known about the
//! user, so `switchyard cutover explain` prints exactly what a login would
//! do. [`Cutover`] holds the rules in force: the file's, replaced by the
//! ones `switchyard cutover …` stored in the database, re-read every
//! [`RELOAD_INTERVAL`] so every instance follows a change within seconds
//! without a restart or a deploy.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::config::{CutoverSettings, Phase};
use crate::crypto::sha256;
use crate::store::{Database, StoreResult, User, UserState};

/// How stale the rules may be on an instance.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);
const SETTING: &str = "cutover";

/// The track a login takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Verify the local credential; no upstream call.
    Local,
    /// Verify the password at the upstream once, then migrate the user.
    UpstreamPassword,
    /// Log in on the upstream's own page (the user stays a shadow).
    UpstreamRedirect,
    /// No usable credential and no upstream: the user must reset their password.
    ResetPassword,
}

impl Route {
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Local => "local",
            Route::UpstreamPassword => "upstream_password",
            Route::UpstreamRedirect => "upstream_redirect",
            Route::ResetPassword => "reset_password",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub route: Route,
    pub reason: String,
}

/// What the routing knows about one login.
pub struct Subject<'a> {
    /// What the user typed (email or username).
    pub identifier: &'a str,
    pub user: Option<&'a User>,
    /// The user has a local password credential.
    pub has_password: bool,
    pub client_id: Option<&'a str>,
    /// An upstream is configured.
    pub upstream: bool,
    /// The upstream offers a password grant Switchyard can use.
    pub password_grant: bool,
}

fn decision(route: Route, reason: impl Into<String>) -> Decision {
    Decision {
        route,
        reason: reason.into(),
    }
}

/// Decides the route of a login.
/// The phase in force for `client_id`: its override, or the global phase.
pub fn phase_for(rules: &CutoverSettings, client_id: Option<&str>) -> Phase {
    client_id
        .and_then(|c| rules.clients.get(c).copied())
        .unwrap_or(rules.phase)
}

pub fn decide(rules: &CutoverSettings, s: &Subject<'_>) -> Decision {
    let local_or_reset = |why: &str| {
        if s.has_password {
            decision(
                Route::Local,
                format!("{why}; the user has a local password"),
            )
        } else {
            decision(
                Route::ResetPassword,
                format!("{why}; the user has no local password and must reset it"),
            )
        }
    };
    if !s.upstream {
        return decision(Route::Local, "no upstream is configured");
    }
    let (phase, phase_source) = match s
        .client_id
        .and_then(|c| rules.clients.get(c).map(|p| (c, *p)))
    {
        Some((client, p)) => (
            p,
            format!("client {client} overrides the phase to {}", p.name()),
        ),
        None => (rules.phase, format!("phase {}", rules.phase.name())),
    };
    // local_only is "upstream switched off": nothing, not even a pin, calls it.
    if phase == Phase::LocalOnly {
        return local_or_reset(&phase_source);
    }
    if let Some(user) = s.user {
        match user.pin.as_deref() {
            Some("force_local") => return local_or_reset("pinned to local"),
            Some("force_upstream") => return upstream(s, "pinned to the upstream (rollback)"),
            _ => {}
        }
    }
    match phase {
        Phase::Passthrough => decision(
            Route::UpstreamRedirect,
            format!("{phase_source}: every login goes to the upstream"),
        ),
        Phase::LocalFirst if s.has_password => decision(
            Route::Local,
            format!("{phase_source}: the user has a local password"),
        ),
        Phase::LocalFirst => migrate(s, &format!("{phase_source}: the user is still pending")),
        Phase::Lazy if s.has_password => decision(
            Route::Local,
            format!("{phase_source}: the user is migrated"),
        ),
        Phase::Lazy => match cohort(rules, s) {
            Ok(why) => migrate(s, &format!("{phase_source}: {why}")),
            Err(why) => decision(
                Route::UpstreamRedirect,
                format!("{phase_source}: {why}, so the login is passed through"),
            ),
        },
        Phase::LocalOnly => local_or_reset(&phase_source),
    }
}

fn upstream(s: &Subject<'_>, why: &str) -> Decision {
    if s.password_grant && !is_federated(s.user) {
        decision(
            Route::UpstreamPassword,
            format!("{why}: the password is verified at the upstream"),
        )
    } else {
        decision(
            Route::UpstreamRedirect,
            format!("{why}: the upstream's own login page"),
        )
    }
}

/// The migration route, or the redirect track for users whose password
/// the upstream cannot verify.
fn migrate(s: &Subject<'_>, why: &str) -> Decision {
    if !s.password_grant {
        return decision(
            Route::UpstreamRedirect,
            format!("{why}, but the upstream offers no password grant: redirect track"),
        );
    }
    if is_federated(s.user) {
        return decision(
            Route::UpstreamRedirect,
            format!("{why}, but the user signs in with a federated identity: redirect track"),
        );
    }
    decision(
        Route::UpstreamPassword,
        format!("{why}: migrated at this login"),
    )
}

/// A user whose upstream identity is social or enterprise has no password
/// at the upstream (Auth0 ids name the connection: `google-oauth2|…`,
/// `samlp|…`; database users are `auth0|…`). Backfilled users (`pending`)
/// are judged the same way as those who logged in once (`shadow`).
fn is_federated(user: Option<&User>) -> bool {
    user.is_some_and(|u| {
        matches!(u.state, UserState::Shadow | UserState::Pending)
            && u.upstream.as_deref() == Some("auth0")
            && u.id.contains('|')
            && !u.id.starts_with("auth0|")
    })
}

/// Whether the lazy phase migrates this user: allow and deny lists first,
/// then the cohorts (none means everyone).
fn cohort(rules: &CutoverSettings, s: &Subject<'_>) -> Result<String, String> {
    let email = s
        .user
        .and_then(|u| u.profile.email.clone())
        .unwrap_or_else(|| s.identifier.to_string())
        .to_lowercase();
    let names: Vec<String> = [
        Some(s.identifier.to_lowercase()),
        Some(email.clone()),
        s.user.map(|u| u.id.clone()),
    ]
    .into_iter()
    .flatten()
    .collect();
    let domain = email
        .rsplit_once('@')
        .map(|(_, d)| d.to_string())
        .unwrap_or_default();
    let listed = |list: &[String]| {
        list.iter().any(|entry| {
            let entry = entry.to_lowercase();
            names.contains(&entry) || entry.strip_prefix('@').is_some_and(|d| d == domain)
        })
    };
    if listed(&rules.deny) {
        return Err("the user is on the deny list".into());
    }
    if listed(&rules.allow) {
        return Ok("the user is on the allow list".into());
    }
    if rules.cohorts.is_empty() {
        return Ok("every user is in the migration".into());
    }
    // A stable hash, so a user's cohort never flips between logins: the
    // user id when known, else what they typed.
    let key = s
        .user
        .map(|u| u.id.clone())
        .unwrap_or_else(|| s.identifier.trim().to_lowercase());
    let bucket = u64::from_be_bytes(sha256(key.as_bytes())[..8].try_into().unwrap_or([0; 8])) % 100;
    for (i, c) in rules.cohorts.iter().enumerate() {
        if c.percent.is_some_and(|p| bucket < u64::from(p)) {
            return Ok(format!(
                "cohort {i} ({}%) contains the user (bucket {bucket})",
                c.percent.unwrap_or(0)
            ));
        }
        if c.email_domains
            .iter()
            .any(|d| d.trim_start_matches('@').eq_ignore_ascii_case(&domain))
        {
            return Ok(format!("cohort {i} contains the domain {domain}"));
        }
    }
    Err(format!("no cohort contains the user (bucket {bucket})"))
}

/// The rules in force on this instance.
pub struct Cutover {
    db: Arc<dyn Database>,
    /// The rules from the file, used until the CLI stores others.
    base: CutoverSettings,
    /// The last rules read, and when: replaced whole on reload.
    current: RwLock<(Instant, Arc<CutoverSettings>)>,
}

impl Cutover {
    pub fn new(db: Arc<dyn Database>, base: CutoverSettings) -> Self {
        let current = RwLock::new((Instant::now() - RELOAD_INTERVAL * 2, Arc::new(base.clone())));
        Self { db, base, current }
    }

    /// The rules in force, re-read when older than [`RELOAD_INTERVAL`].
    pub async fn rules(&self) -> StoreResult<Arc<CutoverSettings>> {
        {
            let current = self.current.read().unwrap_or_else(|p| p.into_inner());
            if current.0.elapsed() < RELOAD_INTERVAL {
                return Ok(current.1.clone());
            }
        }
        let rules = Arc::new(load(&*self.db, &self.base).await?);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = (Instant::now(), rules.clone());
        Ok(rules)
    }
}

/// The stored rules, or `base` when none were stored.
pub async fn load(db: &dyn Database, base: &CutoverSettings) -> StoreResult<CutoverSettings> {
    match db.get_setting(SETTING).await? {
        Some(json) => serde_json::from_str(&json)
            .map_err(|e| crate::store::StoreError::Corrupt(format!("cutover rules: {e}"))),
        None => Ok(base.clone()),
    }
}

pub async fn store(db: &dyn Database, rules: &CutoverSettings) -> StoreResult<()> {
    let json = serde_json::to_string(rules)
        .map_err(|e| crate::store::StoreError::Corrupt(e.to_string()))?;
    db.put_setting(SETTING, &json).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Cohort;

    fn user(id: &str, state: UserState, pin: Option<&str>) -> User {
        User {
            id: id.into(),
            profile: crate::store::Profile {
                email: Some("alice@example.com".into()),
                email_verified: true,
                ..Default::default()
            },
            user_metadata: serde_json::json!({}),
            app_metadata: serde_json::json!({}),
            state,
            blocked: false,
            upstream: Some("auth0".into()),
            claims: serde_json::json!({}),
            pin: pin.map(Into::into),
            route: None,
            migrated_at: None,
            created_at: 0,
            updated_at: 0,
            last_login_at: None,
            sessions_valid_after: None,
        }
    }

    fn subject<'a>(user: Option<&'a User>, has_password: bool) -> Subject<'a> {
        Subject {
            identifier: "alice@example.com",
            user,
            has_password,
            client_id: Some("web"),
            upstream: true,
            password_grant: true,
        }
    }

    #[test]
    fn each_phase_routes_as_documented() {
        let migrated = user("auth0|1", UserState::Migrated, None);
        let pending = user("auth0|2", UserState::Pending, None);
        let mut rules = CutoverSettings::default();
        let route = |rules: &CutoverSettings, u: &User, pw: bool| {
            decide(rules, &subject(Some(u), pw)).route
        };
        for (phase, migrated_route, pending_route) in [
            (
                Phase::Passthrough,
                Route::UpstreamRedirect,
                Route::UpstreamRedirect,
            ),
            (Phase::Lazy, Route::Local, Route::UpstreamPassword),
            (Phase::LocalFirst, Route::Local, Route::UpstreamPassword),
            (Phase::LocalOnly, Route::Local, Route::ResetPassword),
        ] {
            rules.phase = phase;
            assert_eq!(
                route(&rules, &migrated, true),
                migrated_route,
                "{phase:?} migrated"
            );
            assert_eq!(
                route(&rules, &pending, false),
                pending_route,
                "{phase:?} pending"
            );
        }
    }

    #[test]
    fn pins_roll_back_or_force_local_but_never_call_a_switched_off_upstream() {
        let rolled_back = user("auth0|1", UserState::Migrated, Some("force_upstream"));
        let rules = CutoverSettings::default();
        assert_eq!(
            decide(&rules, &subject(Some(&rolled_back), true)).route,
            Route::UpstreamPassword
        );
        let forced = user("auth0|1", UserState::Pending, Some("force_local"));
        assert_eq!(
            decide(&rules, &subject(Some(&forced), false)).route,
            Route::ResetPassword
        );
        let local_only = CutoverSettings {
            phase: Phase::LocalOnly,
            ..CutoverSettings::default()
        };
        assert_eq!(
            decide(&local_only, &subject(Some(&rolled_back), true)).route,
            Route::Local
        );
    }

    #[test]
    fn cohorts_lists_and_client_overrides_narrow_the_lazy_phase() {
        let mut rules = CutoverSettings {
            cohorts: vec![Cohort {
                percent: None,
                email_domains: vec!["example.org".into()],
            }],
            ..CutoverSettings::default()
        };
        let decision = decide(&rules, &subject(None, false));
        assert_eq!(
            decision.route,
            Route::UpstreamRedirect,
            "{}",
            decision.reason
        );
        rules.cohorts[0].email_domains.push("example.com".into());
        assert_eq!(
            decide(&rules, &subject(None, false)).route,
            Route::UpstreamPassword
        );
        rules.deny.push("@example.com".into());
        assert_eq!(
            decide(&rules, &subject(None, false)).route,
            Route::UpstreamRedirect
        );
        rules.deny.clear();
        rules.clients.insert("web".into(), Phase::Passthrough);
        assert_eq!(
            decide(&rules, &subject(None, false)).route,
            Route::UpstreamRedirect
        );
    }

    #[test]
    fn a_percentage_cohort_is_stable_and_roughly_that_size() {
        let rules = CutoverSettings {
            cohorts: vec![Cohort {
                percent: Some(30),
                email_domains: vec![],
            }],
            ..CutoverSettings::default()
        };
        let mut inside = 0;
        for i in 0..2000 {
            let id = format!("user{i}@example.com");
            let s = Subject {
                identifier: &id,
                user: None,
                has_password: false,
                client_id: None,
                upstream: true,
                password_grant: true,
            };
            let first = decide(&rules, &s).route;
            assert_eq!(first, decide(&rules, &s).route, "stable");
            if first == Route::UpstreamPassword {
                inside += 1;
            }
        }
        assert!((500..700).contains(&inside), "about 30% of 2000: {inside}");
    }

    #[test]
    fn federated_users_take_the_redirect_track() {
        for state in [UserState::Shadow, UserState::Pending] {
            let google = user("google-oauth2|1234", state, None);
            assert_eq!(
                decide(&CutoverSettings::default(), &subject(Some(&google), false)).route,
                Route::UpstreamRedirect,
                "{state:?}"
            );
        }
    }
}
