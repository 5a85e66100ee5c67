-- Account recovery and the end of the migration.
--
-- A recovery token is stored only as its SHA-256 (the link carries the
-- 256-bit random value): whoever reads the database cannot use a link. A
-- token is single use (its row is deleted when spent), bound to one user,
-- and every other token of that user is deleted when a new one is issued
-- or the password changes. `purpose` is `reset` (Forgot password) or
-- `invite` (the end-game campaign); `authz` is the pending authorization
-- request the reset continues, when it started from a login page.
CREATE TABLE recovery_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    purpose TEXT NOT NULL,
    authz TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX recovery_tokens_user ON recovery_tokens (user_id);

-- The reset invitations the campaign sent: at most one per user within its
-- cooldown, also across a campaign that was stopped and resumed.
CREATE TABLE invitations (
    user_id TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    sent_at INTEGER NOT NULL,
    job_id TEXT
);

-- Sessions and refresh tokens issued before this instant are void: a
-- password reset ends every session the old password (or a thief of it)
-- had opened.
ALTER TABLE users ADD COLUMN sessions_valid_after INTEGER;

-- The upstream's last login (epoch seconds) as its user listing last said
-- it (Auth0 `last_login`, Okta `lastLogin`), for `report dormant`. A
-- column of its own rather than a claim: the stored claims leave out what
-- changes at every login, so that verify does not see every login as a
-- difference and the claims copied into tokens stay stable. NULL when the
-- upstream's record has none (never logged in, or a vendor that does not
-- list it). A login through Switchyard does not change it.
ALTER TABLE users ADD COLUMN upstream_last_login_at INTEGER;
