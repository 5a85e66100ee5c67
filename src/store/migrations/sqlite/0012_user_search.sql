-- What the admin API's user pages read. A user's recent logins come from
-- the audit trail by user: without this index a dormant user's page would
-- scan every login event ever recorded.
CREATE INDEX audit_events_user_at ON audit_events (user_id, at) WHERE user_id IS NOT NULL;
-- The pins list: few users are pinned, so a partial index stays tiny.
CREATE INDEX users_pinned ON users (id) WHERE pin IS NOT NULL;
