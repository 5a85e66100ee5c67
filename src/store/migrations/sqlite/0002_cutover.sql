-- Runtime settings changed with the CLI (the cutover rules), read by every
-- instance within seconds, so a phase change needs no restart.
CREATE TABLE runtime_settings (
    name       TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
