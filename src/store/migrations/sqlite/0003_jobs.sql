-- Backfill, import and verify jobs (src/jobs). A job is split into chunks:
-- a page cursor, a time window, an offset range or an export file. A worker
-- claims one chunk at a time (FOR UPDATE SKIP LOCKED on PostgreSQL), and
-- commits the users of each page together with the chunk's new position, so
-- a crash loses at most the page in flight and a resume repeats nothing.

-- What the job was started with (source, --since, page size …), so a resume
-- continues the same job.
ALTER TABLE jobs ADD COLUMN params TEXT NOT NULL DEFAULT '{}';
ALTER TABLE jobs ADD COLUMN finished_at INTEGER;
-- Why a job stopped, when it failed (no secrets: the runner writes it).
ALTER TABLE jobs ADD COLUMN error TEXT;

CREATE TABLE job_chunks (
    job_id     TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    -- JSON: what to fetch next, updated with every committed page.
    spec       TEXT NOT NULL,
    -- pending | claimed | done
    state      TEXT NOT NULL,
    claimed_by TEXT,
    heartbeat  INTEGER,
    -- JSON counters of what this chunk did (created, updated, …).
    counters   TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (job_id, seq)
);
CREATE INDEX job_chunks_state ON job_chunks (job_id, state);

-- Records a job could not apply (conflicts, failures, skips), with the
-- reason and, for files, the line: the job's report reads them back.
CREATE TABLE job_issues (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id  TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    kind    TEXT NOT NULL,
    user_id TEXT,
    line    INTEGER,
    reason  TEXT NOT NULL,
    at      INTEGER NOT NULL
);
CREATE INDEX job_issues_job ON job_issues (job_id, kind);
-- `status` counts recent migrations; most users have none, and a partial
-- index costs a bulk import nothing for them. Counting users by state is a
-- scan `status` can afford, cheaper than an index every import maintains.
CREATE INDEX users_migrated_at ON users (migrated_at) WHERE migrated_at IS NOT NULL;
DROP INDEX users_state;
