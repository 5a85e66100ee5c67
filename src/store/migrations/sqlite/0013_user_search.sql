-- What the admin API's user pages read. (A user's recent logins are read
-- through audit_events_user_id, migration 0010.)
-- The pins list: few users are pinned, so a partial index stays tiny.
CREATE INDEX users_pinned ON users (id) WHERE pin IS NOT NULL;
