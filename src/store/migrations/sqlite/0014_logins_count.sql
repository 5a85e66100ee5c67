-- How many times the user has logged in through Switchyard: the
-- Management API (`/api/v2/`) answers it as Auth0's `logins_count`.
-- Counted from here on; logins at the upstream before are not known.
ALTER TABLE users ADD COLUMN logins_count BIGINT NOT NULL DEFAULT 0;
