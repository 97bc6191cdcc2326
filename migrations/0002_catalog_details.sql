-- Upgrades the Node.js table in place and adds what a real catalog needs.
-- size_bytes was an integer in the Node.js version: it overflows at 2 GiB.
DO $$
BEGIN
    IF (SELECT data_type FROM information_schema.columns
         WHERE table_schema = current_schema() AND table_name = 'backups' AND column_name = 'size_bytes') = 'integer' THEN
        ALTER TABLE backups ALTER COLUMN size_bytes TYPE bigint;
    END IF;
END $$;

ALTER TABLE backups
    ADD COLUMN IF NOT EXISTS finished_at     timestamptz,
    ADD COLUMN IF NOT EXISTS duration_ms     bigint,
    ADD COLUMN IF NOT EXISTS database_name   text,
    ADD COLUMN IF NOT EXISTS sha256          text,
    ADD COLUMN IF NOT EXISTS md5             text,
    ADD COLUMN IF NOT EXISTS raw_size_bytes  bigint,
    ADD COLUMN IF NOT EXISTS compression     text,
    ADD COLUMN IF NOT EXISTS local_path      text,
    ADD COLUMN IF NOT EXISTS host            text,
    ADD COLUMN IF NOT EXISTS pgdrive_version text,
    ADD COLUMN IF NOT EXISTS pg_dump_version text,
    ADD COLUMN IF NOT EXISTS server_version  text,
    ADD COLUMN IF NOT EXISTS step            text,
    ADD COLUMN IF NOT EXISTS pruned_at       timestamptz,
    ADD COLUMN IF NOT EXISTS verified_at     timestamptz,
    ADD COLUMN IF NOT EXISTS verify_result   text;

CREATE INDEX IF NOT EXISTS backups_type_created_at_idx ON backups (type, created_at DESC);
CREATE INDEX IF NOT EXISTS backups_drive_file_id_idx ON backups (drive_file_id) WHERE drive_file_id IS NOT NULL;
