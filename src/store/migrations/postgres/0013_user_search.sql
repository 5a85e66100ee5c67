-- What the admin API's user pages read. (A user's recent logins are read
-- through audit_events_user_id, migration 0010.)
-- Prefix search on email (`LIKE 'ann%'`): the unique index's collation
-- cannot serve LIKE, text_pattern_ops can (PostgreSQL docs, "Operator
-- Classes and Operator Families").
CREATE INDEX users_email_prefix ON users (email_normalized text_pattern_ops);
-- The pins list: few users are pinned, so a partial index stays tiny.
CREATE INDEX users_pinned ON users (id) WHERE pin IS NOT NULL;
