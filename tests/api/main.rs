//! Integration tests: one binary, a module per feature (zero-to-production's
//! `tests/api/main.rs`). Every test starts its own Switchyard on port 0 with
//! its own database (a SQLite file, or a fresh PostgreSQL schema) and its
//! own session store (in-process, or a fresh Redis key prefix).
//!
//! The backend comes from `SWITCHYARD_TEST_BACKEND`: `embedded` (default)
//! or `postgres-redis`, so one suite runs over every backend.
//!
//! What the tests share with the benches (the fake upstreams, the client
//! helpers, the per-test isolation, the WebDriver client) is the
//! `switchyard-kit` crate in `tests/kit`; `helpers` keeps what needs
//! Switchyard's own types (starting the app, adding its users and clients).

mod admin_access;
mod admin_helpers;
mod admin_jobs;
mod admin_openapi;
mod admin_overview;
mod admin_steer;
mod adoption;
mod authorize;
mod backfill;
mod bad_input;
mod browser;
mod browser_pages;
mod cli;
mod email;
mod endgame;
mod fake_upstream;
mod fuzz_found;
mod helpers;
mod hot_path;
mod isolation;
mod jobs;
mod layers;
mod login;
mod logout;
mod logs;
mod mgmt_api;
mod mgmt_helpers;
mod mgmt_sdk;
mod mgmt_upstream;
mod migration;
mod moto;
mod outbox;
mod recovery;
mod redirect_uri;
mod refresh_faults;
mod relying_party;
mod startup;
mod store;
mod store_faults;
mod tokens;
mod unknown_kid;
mod upstream;
mod write_back;
