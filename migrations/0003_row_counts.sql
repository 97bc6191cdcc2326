-- Rows per table as read off the dump while it streamed: what a restore test must get back.
ALTER TABLE backups ADD COLUMN IF NOT EXISTS row_counts jsonb;
