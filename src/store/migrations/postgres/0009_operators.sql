-- The scopes a client may be granted beyond the OpenID ones, a JSON array:
-- `switchyard:admin` (or `switchyard:admin:read`) lets a client use the
-- client credentials grant (RFC 6749 §4.4) to call the admin API.
ALTER TABLE clients ADD COLUMN scopes TEXT NOT NULL DEFAULT '[]';

-- Operators: the users with the `admin` role, who may sign in to /admin.
-- A deleted user stops being one.
CREATE TABLE operators (
    user_id    TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    granted_at BIGINT NOT NULL
);

-- Who made an operator's change (`user:<id>` or `client:<id>`), so the
-- audit trail can be filtered by operator; NULL for events a login or a
-- job caused.
ALTER TABLE audit_events ADD COLUMN actor TEXT;
CREATE INDEX audit_events_actor_at ON audit_events (actor, at);
CREATE INDEX audit_events_kind_at ON audit_events (kind, at);
