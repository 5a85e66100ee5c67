//! Switchyard: an OpenID Connect provider that applications are repointed at
//! when they leave Auth0, Okta, AWS Cognito or Keycloak.
//!
//! Every login passes through Switchyard. During the migration the old
//! provider (the *upstream*) is the primary: logins it owns are proxied to
//! it, and each user is moved here at their first password login (lazy
//! migration) or in bulk (backfill, import). Users Switchyard already knows
//! authenticate locally.
//!
//! # Layers
//!
//! Each module uses only those below it (a test, `tests/api/layers.rs`,
//! fails on a cycle between files):
//!
//! 1. [`crypto`], [`metrics`], [`templates`]: no knowledge of the domain.
//! 2. [`store`]: the SQL store on SQLite or PostgreSQL, the session store
//!    in memory or on Redis, the job queue with typed chunk positions, the
//!    bulk user writer, the one function that decides a user's state
//!    ([`store::transition`]), the outbox, and the rules a registered
//!    client must follow.
//! 3. [`config`] (typed settings from one TOML file plus `SWITCHYARD_*`
//!    variables), [`tokens`] (signing keys, JWTs, codes, refresh families)
//!    and [`error`] (the two edge error types, [`error::OAuthError`] and
//!    [`error::AppError`]).
//! 4. [`password`] (argon2id on a bounded blocking pool, and the imported
//!    hash formats), [`throttle`] (per-account and per-IP failure
//!    counters), [`cutover`] (who goes where: phases, cohorts, pins,
//!    per-client phases) and [`upstream`] (the provider being migrated
//!    from: definitions in `providers/*.toml`, its OIDC client, the sealed
//!    session ↔ upstream token mapping, profile mapping, and its
//!    Management API client with pacing and paging, and the write-back of
//!    local changes, [`upstream::management::write_back`]), and [`email`]
//!    (the mailer: SMTP or `.eml` files, and the messages' templates).
//! 5. [`state`]: [`state::AppState`], where dependencies are wired.
//! 6. [`session`] (cookies, the gateway session, the client address,
//!    the recovery pages' CSRF cookie), [`recovery`] (reset and invitation
//!    links: tokens minted at delivery, kept as hashes), [`migrate`] (lazy
//!    migration on login) and [`jobs`] (backfill, import, verify, the
//!    dormant report, the reset campaign and status on one resumable job
//!    runner, and the outbox worker, which delivers email and the writes
//!    the upstream is owed).
//! 7. [`auth`]: the one authentication service both login faces use.
//! 8. The faces: [`oidc`], the endpoints applications call, one file
//!    per endpoint or grant; and [`login`], the login pages (Forgot
//!    password, the reset link and the signed-in password change among
//!    them) and the upstream's callback. They share no file cycle, but the authorization
//!    and logout endpoints call into the upstream's redirect track
//!    ([`login::upstream`]), the one import that runs up a layer. And
//!    [`admin`], the operators' dashboard and JSON API; and [`api_v2`],
//!    the Auth0-compatible Management API backends call, whose users
//!    adapter reads through to the upstream and writes to it by phase.
//! 9. [`startup`] (binds, wires and serves) and [`cli`] (the `switchyard`
//!    command: serve, config, users, clients, keys, cutover, backfill,
//!    import, verify, status, outbox, report, campaign).
//!
//! # Five flows
//!
//! **A browser login** on Switchyard's pages:
//! 1. [`oidc::authorize`] checks the client and redirect URI (a page on
//!    error), then the rest (an `error=` response once the redirect URI is
//!    trusted); a live gateway session answers at once, otherwise the
//!    request is stored as a [`tokens::grants::PendingAuthorization`] bound
//!    to the browser by a cookie, and the browser goes to `/login` (or, in
//!    the passthrough phase, to the upstream: [`login::upstream::start`]).
//! 2. `login::post_login` routes the identifier ([`auth::route_for`]); the
//!    redirect track goes to the upstream, every other login gets the
//!    password page.
//! 3. `login::post_password` asks [`auth::authenticate`]: throttling,
//!    routing, the local hash ([`auth::authenticate_local`]) or the upstream
//!    password grant with migration ([`migrate::lazy::verify_and_migrate`]),
//!    then the throttle, audit and metrics, failures padded to one duration.
//! 4. [`login::finish::finish_login`] makes a new gateway session and
//!    [`oidc::response::complete`] answers the application with a code, by
//!    the response mode it asked for.
//! 5. The application exchanges it: [`oidc::token`] authenticates the
//!    client ([`oidc::client_auth`]), [`oidc::grant_authorization_code`]
//!    spends the code once, [`oidc::issue`] signs and answers.
//!
//! **A refresh grant**:
//! 1. [`oidc::token`] → [`oidc::grant_refresh_token::refresh`].
//! 2. A token Switchyard never issued, from a known client, is adopted:
//!    [`oidc::adoption::adopt`] spends it once at the upstream.
//! 3. Otherwise the client and the user come from copies at most 1 s old
//!    ([`store::recent`]) and the new tokens are signed
//!    ([`oidc::issue::sign`], RS256 on [`tokens::pool`]) while a session
//!    that went through the upstream gets its upstream tokens refreshed
//!    when near expiry, once across instances ([`upstream::tokens`]).
//! 4. The rotation is claimed in the database, in one statement with the
//!    concurrent grants' ([`store::refresh::Rotations`]) and only if the
//!    user's row still accepts the login; a reused token (past a short
//!    grace) revokes its family. The answer carries the family's next
//!    refresh token.
//!
//! **The upstream's callback** (the redirect track):
//! 1. [`login::upstream::start`] stores a transaction of our own `state`,
//!    `nonce` and PKCE verifier and sends the browser to the upstream.
//! 2. [`login::upstream::get_callback`] takes the transaction (single use),
//!    checks the browser binding and `iss` (RFC 9207), exchanges the code
//!    ([`upstream::client::UpstreamClient::exchange_code`]) and validates
//!    the ID token ([`upstream::id_token`]).
//! 3. The profile is mapped ([`upstream::profile`]) and the shadow user,
//!    its identity and the audit events are written in one commit.
//! 4. [`login::finish::finish_login`] keeps the upstream tokens sealed for
//!    the new session and answers the application.
//!
//! **One backfill page**:
//! 1. [`jobs::backfill::run`] creates the job or resumes the unfinished
//!    one ([`jobs::runner::Runner`], shared with `import`), and starts
//!    workers.
//! 2. A worker claims a chunk of the job (leases taken over from dead
//!    workers), each chunk with its own typed position
//!    ([`store::position::ChunkPosition`]).
//! 3. It fetches the chunk's next page from the upstream's Management API
//!    ([`upstream::management`]), at the pace the rate-limit headers allow
//!    ([`upstream::management::pacer`]).
//! 4. The records are mapped ([`upstream::management::mapping`]) and
//!    written with the chunk's next position in one transaction (an upsert, or binary COPY
//!    for a page of new users on PostgreSQL), so a crash resumes at the
//!    last committed page.
//!
//! **A password reset**:
//! 1. `login::forgot::post_forgot` counts the request with the throttle,
//!    queues an email for an account that may reset (nothing tells which),
//!    keeps the pending authorization request for the link's lifetime, and
//!    answers one page after a fixed delay.
//! 2. The outbox worker ([`jobs::outbox`]) mints the link
//!    ([`recovery::mint_link`]), renders and sends the email ([`email`]).
//! 3. `login::forgot::post_reset` checks the policy, asks the write-back
//!    ([`upstream::management::write_back`]) what the upstream is owed, and
//!    [`store::recovery::RecoveryStore::complete_reset`] spends the token,
//!    stores the password, migrates a pending or shadow user, voids older
//!    sessions and queues the write, in one transaction.
//! 4. [`login::finish::finish_login`] continues the application's request
//!    when this browser started it.

pub mod admin;
pub mod api_v2;
pub mod auth;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod cutover;
pub mod email;
pub mod error;
pub mod jobs;
pub mod login;
pub mod metrics;
pub mod migrate;
pub mod oidc;
pub mod password;
pub mod recovery;
pub mod session;
pub mod startup;
pub mod state;
pub mod store;
pub mod templates;
pub mod throttle;
pub mod tokens;
pub mod upstream;

#[doc(hidden)]
pub mod fuzzing;
