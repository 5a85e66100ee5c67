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

/// A per-user pin (the `users.pin` column): the track a user's logins
/// take whatever the phase, except `local_only`, which calls no upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pin {
    /// Keep the user local (`force_local`).
    Local,
    /// Roll the user back to the upstream (`force_upstream`).
    Upstream,
}

impl Pin {
    /// As the store spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Pin::Local => "force_local",
            Pin::Upstream => "force_upstream",
        }
    }

    pub fn parse(stored: &str) -> Option<Self> {
        [Pin::Local, Pin::Upstream]
            .into_iter()
            .find(|p| p.as_str() == stored)
    }
}

/// Which side answers a login: Switchyard alone (a local password, or a
/// reset) or the upstream (its password grant or its own page).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Track {
    Local,
    Upstream,
}

impl Route {
    pub fn track(self) -> Track {
        match self {
            Route::Local | Route::ResetPassword => Track::Local,
            Route::UpstreamPassword | Route::UpstreamRedirect => Track::Upstream,
        }
    }

    pub const ALL: [Route; 4] = [
        Route::Local,
        Route::UpstreamPassword,
        Route::UpstreamRedirect,
        Route::ResetPassword,
    ];
}

/// What the instance knows of its upstream, for routing outside a login
/// (`cutover explain`, the admin API, a preview).
#[derive(Debug, Clone, Copy, Default)]
pub struct UpstreamCaps {
    /// An upstream is configured.
    pub configured: bool,
    /// It offers a password grant Switchyard can use.
    pub password_grant: bool,
}

/// The route a login by `identifier` (an id, email or username; the user
/// need not exist) for `client_id` would take under `rules`, and why:
/// what `switchyard cutover explain` prints and the admin API shows.
pub struct Explanation {
    pub identifier: String,
    pub user: Option<User>,
    pub decision: Decision,
}

impl Explanation {
    /// The lines `switchyard cutover explain` prints.
    pub fn lines(&self) -> [String; 3] {
        let who = match &self.user {
            Some(u) => format!(
                "user {} (state {}, pin {})",
                u.id,
                u.state.as_str(),
                u.pin.as_deref().unwrap_or("none")
            ),
            None => format!("{}: not known locally", self.identifier),
        };
        [
            who,
            format!("route: {}", self.decision.route.as_str()),
            format!("why:   {}", self.decision.reason),
        ]
    }
}

pub async fn explain(
    db: &dyn Database,
    rules: &CutoverSettings,
    identifier: &str,
    client_id: Option<&str>,
    caps: UpstreamCaps,
) -> StoreResult<Explanation> {
    let found = match db.get_user(identifier).await? {
        Some(u) => Some(u),
        None => db.find_user_by_login(identifier).await?,
    };
    let has_password = match &found {
        Some(u) => db.get_password(&u.id).await?.is_some(),
        None => false,
    };
    let subject = Subject {
        identifier,
        user: found.as_ref(),
        has_password,
        client_id,
        upstream: caps.configured,
        password_grant: caps.password_grant,
    };
    let decision = decide(rules, &subject);
    Ok(Explanation {
        identifier: identifier.to_string(),
        user: found,
        decision,
    })
}

/// A rule that cannot be stored: the field that holds it (`cohorts[0].percent`)
/// and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

/// Checks rules before they are stored: percentages up to 100, domains
/// that are host names (with or without a leading `@`), list entries and
/// client ids that are not blank.
pub fn validate(rules: &CutoverSettings, caps: UpstreamCaps) -> Result<(), Invalid> {
    let invalid = |field: String, message: String| Err(Invalid { field, message });
    let needs = |p: Phase| p.needs_upstream() && !caps.configured;
    if needs(rules.phase) {
        return invalid(
            "phase".into(),
            format!(
                "phase {} routes logins to the upstream, and no upstream is configured",
                rules.phase.name()
            ),
        );
    }
    for (i, c) in rules.cohorts.iter().enumerate() {
        if let Some(p) = c.percent
            && p > 100
        {
            return invalid(
                format!("cohorts[{i}].percent"),
                format!("{p} is not a percentage (0 to 100)"),
            );
        }
        for (j, d) in c.email_domains.iter().enumerate() {
            if !is_domain(d.strip_prefix('@').unwrap_or(d)) {
                return invalid(
                    format!("cohorts[{i}].email_domains[{j}]"),
                    format!("{d:?} is not a domain name"),
                );
            }
        }
    }
    for (name, list) in [("allow", &rules.allow), ("deny", &rules.deny)] {
        for (i, entry) in list.iter().enumerate() {
            let bad = match entry.strip_prefix('@') {
                Some(domain) => !is_domain(domain),
                None => entry.trim().is_empty() || entry.len() > 320,
            };
            if bad {
                return invalid(
                    format!("{name}[{i}]"),
                    format!("{entry:?} is not an identifier or an @domain"),
                );
            }
        }
    }
    for (client, phase) in &rules.clients {
        if client.trim().is_empty() || client.len() > 255 {
            return invalid("clients".into(), "a client id is blank or too long".into());
        }
        if needs(*phase) {
            return invalid(
                format!("clients.{client}"),
                format!(
                    "phase {} routes logins to the upstream, and no upstream is configured",
                    phase.name()
                ),
            );
        }
    }
    Ok(())
}

/// A DNS name as RFC 1035 §2.3.1 spells one (letters, digits, hyphens;
/// labels of 1 to 63, not starting or ending with a hyphen), at least two
/// labels, 253 characters at most.
fn is_domain(d: &str) -> bool {
    let labels: Vec<&str> = d.split('.').collect();
    d.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// What a change of rules does to the users' next logins.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Preview {
    /// Users looked at (every user in the store).
    pub users: u64,
    /// Users whose next login moves from the upstream to Switchyard.
    pub to_local: u64,
    /// Users whose next login moves from Switchyard to the upstream.
    pub to_upstream: u64,
    /// Users whose route changes at all (including within a track).
    pub changed: u64,
    /// Next-login routes under the rules in force, by route.
    pub before: std::collections::BTreeMap<&'static str, u64>,
    /// And under the proposed rules.
    pub after: std::collections::BTreeMap<&'static str, u64>,
}

/// Users read per page by [`preview`].
const PREVIEW_PAGE: u32 = 5000;

/// Applies [`decide`] under `before` and `after` to every user, read in
/// pages of [`PREVIEW_PAGE`] in id order: exact, at the cost of one pass
/// over the users (1,000,000 users took about 11 s in an unoptimized
/// build, of which the SQL about half a second). A login names a client,
/// and per-client overrides depend on it: the preview counts a login
/// without a client, that is under the global phase.
pub async fn preview(
    db: &dyn Database,
    before: &CutoverSettings,
    after: &CutoverSettings,
    caps: UpstreamCaps,
) -> StoreResult<Preview> {
    let mut out = Preview::default();
    for r in Route::ALL {
        out.before.insert(r.as_str(), 0);
        out.after.insert(r.as_str(), 0);
    }
    let mut cursor: Option<String> = None;
    loop {
        let page = db.routing_page(cursor.as_deref(), PREVIEW_PAGE).await?;
        let Some((last, _)) = page.last() else { break };
        cursor = Some(last.id.clone());
        for (user, has_password) in &page {
            let identifier = user
                .profile
                .email
                .as_deref()
                .or(user.profile.username.as_deref())
                .unwrap_or(&user.id);
            let subject = Subject {
                identifier,
                user: Some(user),
                has_password: *has_password,
                client_id: None,
                upstream: caps.configured,
                password_grant: caps.password_grant,
            };
            let was = decide(before, &subject).route;
            let will = decide(after, &subject).route;
            out.users += 1;
            *out.before.entry(was.as_str()).or_default() += 1;
            *out.after.entry(will.as_str()).or_default() += 1;
            if was != will {
                out.changed += 1;
            }
            match (was.track(), will.track()) {
                (Track::Upstream, Track::Local) => out.to_local += 1,
                (Track::Local, Track::Upstream) => out.to_upstream += 1,
                _ => {}
            }
        }
        if page.len() < PREVIEW_PAGE as usize {
            break;
        }
    }
    Ok(out)
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
            logins_count: 0,
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
