-- Core schema. Timestamps are Unix seconds and flags are 0/1 integers so one
-- set of queries serves SQLite and PostgreSQL through sqlx's Any driver.

CREATE TABLE users (
    id               TEXT PRIMARY KEY,
    email            TEXT,
    email_normalized TEXT UNIQUE,
    email_verified   BIGINT NOT NULL DEFAULT 0,
    username         TEXT UNIQUE,
    name             TEXT,
    given_name       TEXT,
    family_name      TEXT,
    nickname         TEXT,
    picture          TEXT,
    phone_number     TEXT,
    -- The full upstream profile as last seen, for claim mapping and verify.
    profile          TEXT NOT NULL DEFAULT '{}',
    user_metadata    TEXT NOT NULL DEFAULT '{}',
    app_metadata     TEXT NOT NULL DEFAULT '{}',
    -- local | pending | shadow | migrated
    state            TEXT NOT NULL,
    blocked          BIGINT NOT NULL DEFAULT 0,
    -- Which provider definition the user came from, NULL for local users.
    upstream         TEXT,
    -- Per-user cutover pin: force_upstream | force_local.
    pin              TEXT,
    -- The route the user took when migrated (password, redirect, import).
    route            TEXT,
    migrated_at      BIGINT,
    -- Last change made through Switchyard: backfills never overwrite a newer one.
    local_updated_at BIGINT,
    last_login_at    BIGINT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
CREATE INDEX users_state ON users (state);

CREATE TABLE credentials (
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind       TEXT NOT NULL,
    hash       TEXT NOT NULL,
    algorithm  TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, kind)
);

CREATE TABLE identities (
    provider   TEXT NOT NULL,
    subject    TEXT NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    profile    TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL,
    PRIMARY KEY (provider, subject)
);
CREATE INDEX identities_user ON identities (user_id);

CREATE TABLE clients (
    client_id                 TEXT PRIMARY KEY,
    name                      TEXT,
    secret_hash               TEXT,
    public                    BIGINT NOT NULL,
    redirect_uris             TEXT NOT NULL,
    post_logout_redirect_uris TEXT NOT NULL,
    grant_types               TEXT NOT NULL,
    token_mode                TEXT NOT NULL,
    source                    TEXT NOT NULL,
    created_at                BIGINT NOT NULL
);

CREATE TABLE signing_keys (
    kid           TEXT PRIMARY KEY,
    alg           TEXT NOT NULL,
    private_key   TEXT NOT NULL,
    state         TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    publish_until BIGINT
);

CREATE TABLE audit_events (
    id        BIGSERIAL PRIMARY KEY,
    at        BIGINT NOT NULL,
    kind      TEXT NOT NULL,
    user_id   TEXT,
    client_id TEXT,
    ip        TEXT,
    detail    TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_events_at ON audit_events (at);

CREATE TABLE jobs (
    id         TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    state      TEXT NOT NULL,
    cursor     TEXT,
    counters   TEXT NOT NULL DEFAULT '{}',
    heartbeat  BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE outbox (
    id              BIGSERIAL PRIMARY KEY,
    kind            TEXT NOT NULL,
    payload         TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error      TEXT,
    created_at      BIGINT NOT NULL
);
