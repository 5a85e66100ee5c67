-- Jobs queued from the admin API and run by `serve`: a verify job's
-- report is kept with the job (it commits no pages); the records a job
-- expects, where the source says (for progress and an ETA); when a
-- queued job was started. The runner finds queued jobs by state, oldest
-- first.
ALTER TABLE jobs ADD COLUMN result TEXT;
ALTER TABLE jobs ADD COLUMN total BIGINT;
ALTER TABLE jobs ADD COLUMN started_at BIGINT;
CREATE INDEX jobs_state_created ON jobs (state, created_at);
