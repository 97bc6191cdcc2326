-- The backups catalog, with the columns and values of the Node.js implementation's table so that
-- applications reading it keep working: status is 'SUCCESS' or 'ERROR', type is 'daily',
-- 'hourly' or 'schema'. A table created by the Node.js version is left as it is here and upgraded
-- by the next migration.
CREATE TABLE IF NOT EXISTS backups (
    id            serial PRIMARY KEY,
    created_at    timestamptz NOT NULL DEFAULT now(),
    filename      text,
    size_bytes    bigint,
    drive_file_id text,
    status        text NOT NULL,
    type          text NOT NULL,
    error         text
);
