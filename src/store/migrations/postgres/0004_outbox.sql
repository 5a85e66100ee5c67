-- The write outbox: writes to a secondary (the upstream, while it is kept
-- in sync during the migration) that must not block the request that
-- caused them. A row is inserted in the same transaction as the local
-- change, so a crash leaves both or neither; a worker delivers it later,
-- with retries.
-- Nothing is dropped: a row that keeps failing stays, in state `failed`,
-- until an operator retries or discards it (`switchyard outbox`).
--
-- 0001 created the table with its kind, payload (JSON, no secrets),
-- attempts, next_attempt_at and last_error (bounded, no tokens); nothing
-- wrote to it before this migration, which adds what delivery needs.
ALTER TABLE outbox ADD COLUMN user_id TEXT NOT NULL DEFAULT '';
-- pending | done | failed
ALTER TABLE outbox ADD COLUMN state TEXT NOT NULL DEFAULT 'pending';
-- The worker delivering the row, and since when: a lease, so the claim of
-- a worker that died expires.
ALTER TABLE outbox ADD COLUMN claimed_by TEXT;
ALTER TABLE outbox ADD COLUMN claimed_at BIGINT;
ALTER TABLE outbox ADD COLUMN updated_at BIGINT NOT NULL DEFAULT 0;
-- The worker's query: due pending rows, oldest first.
CREATE INDEX outbox_due ON outbox (state, next_attempt_at);
CREATE INDEX outbox_user ON outbox (user_id);
