//! Switchyard: an OpenID Connect provider that applications are repointed at
//! when they leave Auth0, Okta, AWS Cognito or Keycloak.
//!
//! Every login passes through Switchyard. Users it already knows authenticate
//! locally; the upstream tracks (proxying, lazy migration, backfill) build on
//! the provider core kept here.
//!
//! # Layout
//!
//! - [`cli`]: the `switchyard` command line (serve, config, users, clients, keys).
//! - [`config`]: typed settings from one TOML file plus `SWITCHYARD_*` variables.
//! - [`startup`]: [`startup::Application`], which binds, wires and serves.
//! - [`state`]: [`state::AppState`], the one place dependencies are wired.
//! - [`error`]: the two edge error types, [`error::OAuthError`] and [`error::AppError`].
//! - [`oidc`]: the provider facade applications talk to, one file per endpoint or grant.
//! - [`cutover`]: who goes where: phases, cohorts, pins, per-client overrides.
//! - [`jobs`]: backfill, import, verify and status: users copied in bulk, resumably;
//!   the outbox worker that marks migrated users at the upstream.
//! - [`login`]: the login pages (identifier, password) and the gateway session cookie.
//! - [`password`]: argon2id hashing on a bounded blocking pool; imported hashes.
//! - [`migrate`]: lazy migration on login.
//! - [`throttle`]: per-account and per-IP attempt counters.
//! - [`tokens`]: signing keys, JWT minting and verification, codes and refresh families.
//! - [`upstream`]: the provider being migrated from: definitions, OIDC client, token mapping.
//! - [`metrics`]: Prometheus counters at `/metrics`.
//! - [`store`]: the SQL store (SQLite, PostgreSQL) and the session store (memory, Redis).
//! - [`templates`]: the HTML pages, rendered with auto-escaping.
//! - [`crypto`]: random identifiers, digests, constant-time comparison, AEAD sealing.

pub mod cli;
pub mod config;
pub mod crypto;
pub mod cutover;
pub mod error;
pub mod jobs;
pub mod login;
pub mod metrics;
pub mod migrate;
pub mod oidc;
pub mod password;
pub mod startup;
pub mod state;
pub mod store;
pub mod templates;
pub mod throttle;
pub mod tokens;
pub mod upstream;
