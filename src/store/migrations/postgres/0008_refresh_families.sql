-- Refresh-token families and the sealed upstream tokens their sessions
-- need, durable so that losing the session store (Redis restarted empty)
-- logs nobody out. The session store only caches them.
--
-- A family holds one live refresh token at a time, kept as its SHA-256
-- (RFC 6819 §5.1.4.1.3): `current_hash`. A rotation is one conditional
-- UPDATE (`WHERE current_hash = <presented>`), so of two instances
-- spending the same token exactly one wins. `previous_hash` is the token
-- spent last, `rotated_at` when, and `successor` the token that replaced
-- it, sealed under a key derived from the spent token (which is not
-- stored): a retry within the grace window receives the same successor,
-- and only the holder of the spent token can open it. `record` is the
-- grant as the token layer describes it (JSON). `revoked` is 0 or 1.
-- `tag_hash` is the SHA-256 of a secret every token of the family carries
-- and nothing else does (not the access tokens, which name the grant): a
-- token that names the grant without it is forged, not reused, and does
-- not revoke the family.
CREATE TABLE refresh_families (
    grant_id TEXT PRIMARY KEY,
    sid TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    client_id TEXT NOT NULL,
    record TEXT NOT NULL,
    tag_hash TEXT,
    current_hash TEXT,
    previous_hash TEXT,
    rotated_at BIGINT,
    successor TEXT,
    revoked BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
-- Logout revokes every family of the session.
CREATE INDEX refresh_families_sid ON refresh_families (sid);
CREATE INDEX refresh_families_expires ON refresh_families (expires_at);

-- The upstream's tokens of a gateway session, sealed with AES-256-GCM
-- under a key held outside the database, the session id as associated
-- data: never in plaintext here.
CREATE TABLE upstream_session_tokens (
    sid TEXT PRIMARY KEY,
    sealed TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
-- Expired rows are purged by every instance, hourly.
CREATE INDEX upstream_session_tokens_expires ON upstream_session_tokens (expires_at);
