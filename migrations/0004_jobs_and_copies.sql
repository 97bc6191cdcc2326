-- Jobs and named targets: which job made a row, and one row per target a backup was sent to,
-- so a run stored on some targets and not others says which, and pruning is recorded per copy.
ALTER TABLE backups ADD COLUMN IF NOT EXISTS job text;

CREATE TABLE IF NOT EXISTS backup_copies (
    backup_id  integer NOT NULL REFERENCES backups (id) ON DELETE CASCADE,
    target     text NOT NULL,
    backend    text NOT NULL,
    status     text NOT NULL CHECK (status IN ('STORED', 'FAILED')),
    object_id  text,
    location   text,
    error      text,
    pruned_at  timestamptz,
    PRIMARY KEY (backup_id, target)
);
CREATE INDEX IF NOT EXISTS backup_copies_target_object_idx ON backup_copies (target, object_id);
