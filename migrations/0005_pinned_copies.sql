-- Pins (`pgdrive pin`) are recorded in each copy's manifest on its target; the catalog keeps a
-- copy of that fact so that `status` can count what each retention rule holds without listing
-- every target.
ALTER TABLE backup_copies ADD COLUMN IF NOT EXISTS pinned boolean NOT NULL DEFAULT false;
