-- Usernames are optional (Auth0 and Cognito users often have none), yet a
-- unique constraint's index holds an entry for every NULL although NULLs
-- never conflict, and a bulk import pays for each one. A partial index
-- enforces the same rule on the rows that have a username; `ON CONFLICT DO
-- NOTHING` honours it like the constraint. (SQLite keeps the column
-- constraint: it cannot drop one without rebuilding the table.)
ALTER TABLE users DROP CONSTRAINT users_username_key;
CREATE UNIQUE INDEX users_username ON users (username) WHERE username IS NOT NULL;
