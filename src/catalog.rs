//! The `backups` catalog table, and the commands' SQL on it: migrations (embedded from
//! `migrations/`, applied idempotently under a transaction-level advisory lock so concurrent runs
//! do not race), the one row every run that took the lock leaves behind (SUCCESS or ERROR with the
//! reason), and what the other commands read and write there (`check`'s migration state and
//! size estimate, `list`'s facts per copy, `verify`'s row counts and results, pruning, rebuilds). `status`'s history queries are still
//! in `dashboard`.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use postgres::Client;

/// Every migration, in order. Append only; never edit one that has shipped.
pub const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_backups",
        include_str!("../migrations/0001_backups.sql"),
    ),
    (
        "0002_catalog_details",
        include_str!("../migrations/0002_catalog_details.sql"),
    ),
    (
        "0003_row_counts",
        include_str!("../migrations/0003_row_counts.sql"),
    ),
    (
        "0004_jobs_and_copies",
        include_str!("../migrations/0004_jobs_and_copies.sql"),
    ),
    (
        "0005_pinned_copies",
        include_str!("../migrations/0005_pinned_copies.sql"),
    ),
];

/// Serialises concurrent migrations (any value distinct from the job locks).
const MIGRATION_LOCK_KEY: i64 = 0x0070_6764_7269_7665; // "pgdrive"

/// Applies the migrations not yet recorded in `pgdrive_schema_migrations`; returns their names.
/// When everything is applied already this runs no DDL, so a user without CREATE privilege can
/// still back up once the owner has run `pgdrive migrate`.
pub fn migrate(client: &mut Client) -> Result<Vec<&'static str>> {
    if pending_migrations(client)?.is_empty() {
        return Ok(Vec::new());
    }
    refuse_foreign_backups_table(client)?;
    let mut tx = client
        .transaction()
        .context("starting the catalog migration")?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS pgdrive_schema_migrations (
             version    text PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .map_err(|e| migration_error(e, "pgdrive_schema_migrations"))?;
    forget_dropped_tables(&mut tx)?;
    let mut done = Vec::new();
    for (name, sql) in MIGRATIONS {
        let exists = tx
            .query_opt(
                "SELECT 1 FROM pgdrive_schema_migrations WHERE version = $1",
                &[name],
            )?
            .is_some();
        if exists {
            continue;
        }
        tx.batch_execute(sql)
            .map_err(|e| migration_error(e, name))?;
        tx.execute(
            "INSERT INTO pgdrive_schema_migrations (version) VALUES ($1)",
            &[name],
        )?;
        done.push(*name);
    }
    tx.commit().context("committing the catalog migration")?;
    Ok(done)
}

/// The migrations recorded in `pgdrive_schema_migrations` (none when it does not exist yet).
pub fn applied_migrations(client: &mut Client) -> Result<Vec<String>> {
    match client.query("SELECT version FROM pgdrive_schema_migrations", &[]) {
        Ok(rows) => Ok(rows.iter().map(|r| r.get(0)).collect()),
        Err(e) if e.code() == Some(&postgres::error::SqlState::UNDEFINED_TABLE) => Ok(Vec::new()),
        Err(e) => Err(e).context("reading pgdrive_schema_migrations"),
    }
}

/// The names of the [`MIGRATIONS`] not applied yet, in order. When they are all recorded but a
/// catalog table they create is gone (dropped by hand), every one is pending again: they are
/// written to be re-run (`IF NOT EXISTS` throughout), so the next migration recreates the tables
/// instead of every later run failing on a missing one.
pub fn pending_migrations(client: &mut Client) -> Result<Vec<&'static str>> {
    let applied = applied_migrations(client)?;
    if !applied.is_empty() && !catalog_tables_exist(client)? {
        return Ok(MIGRATIONS.iter().map(|(name, _)| *name).collect());
    }
    Ok(MIGRATIONS
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| !applied.iter().any(|a| a == name))
        .collect())
}

/// Migrations recorded for catalog tables that were dropped since (by hand) are forgotten, so
/// they run again (they are written to be re-run: `IF NOT EXISTS` throughout); called under the
/// migration lock. A `backup_copies` left without its `backups` (`DROP TABLE backups CASCADE`
/// keeps it, minus the foreign key) is dropped too: its rows described runs that are gone, and
/// kept, they would attach to the new table's reused ids.
fn forget_dropped_tables(tx: &mut postgres::Transaction<'_>) -> Result<()> {
    let recorded: i64 = tx
        .query_one("SELECT count(*) FROM pgdrive_schema_migrations", &[])?
        .get(0);
    if recorded == 0 || catalog_tables_exist(tx)? {
        return Ok(());
    }
    crate::log::warn(
        "the catalog tables are missing although their migrations are recorded (dropped by hand?): creating them again",
        &[("hint", "pgdrive catalog rebuild refills the rows from the targets".to_string())],
    );
    let backups_gone: bool = tx
        .query_one("SELECT to_regclass('backups') IS NULL", &[])?
        .get(0);
    if backups_gone {
        tx.batch_execute("DROP TABLE IF EXISTS backup_copies")
            .context("dropping backup_copies of the dropped backups table")?;
    }
    tx.execute("DELETE FROM pgdrive_schema_migrations", &[])
        .context("forgetting the migrations of the dropped catalog tables")?;
    Ok(())
}

/// Whether the tables the migrations create are all there.
fn catalog_tables_exist(client: &mut impl postgres::GenericClient) -> Result<bool> {
    client
        .query_one(
            "SELECT to_regclass('backups') IS NOT NULL AND to_regclass('backup_copies') IS NOT NULL",
            &[],
        )
        .map(|r| r.get(0))
        .context("looking for the catalog tables")
}

/// What this user may do to apply migrations: creating the table needs CREATE on the schema,
/// upgrading an existing one needs to own it (`owns_table` is `None` when there is no table).
pub struct MigrationRights {
    pub can_create: bool,
    pub owns_table: Option<bool>,
}

pub fn migration_rights(client: &mut Client) -> Result<MigrationRights> {
    let row = client
        .query_one(
            "SELECT has_schema_privilege(current_schema(), 'CREATE'),
                    (SELECT pg_has_role(current_user, c.relowner, 'USAGE') FROM pg_class c WHERE c.oid = to_regclass('backups'))",
            &[],
        )
        .context("reading the catalog privileges")?;
    Ok(MigrationRights {
        can_create: row.get(0),
        owns_table: row.get(1),
    })
}

/// Succeeds when this connection sees a `backups` table (empty or not).
pub fn probe(client: &mut Client) -> std::result::Result<(), postgres::Error> {
    match client.query_one("SELECT 1 FROM backups LIMIT 0", &[]) {
        Ok(_) => Ok(()),
        // no row is what was asked for; a missing table (or any server error) is not
        Err(e) if e.code().is_none() => Ok(()),
        Err(e) => Err(e),
    }
}

/// What the catalog says of one stored copy, as `list` shows it.
pub struct CopyFacts {
    /// The Drive file the row records, if any.
    pub drive_file_id: Option<String>,
    /// The local file name the row records, if it has a local copy.
    pub local_file: Option<String>,
    pub status: Option<String>,
    /// RFC 3339, UTC.
    pub verified_at: Option<String>,
    pub verify_result: Option<String>,
}

/// Every row that names a stored copy, oldest first.
pub fn copy_facts(client: &mut Client) -> Result<Vec<CopyFacts>> {
    let rows = client
        .query(
            "SELECT drive_file_id, CASE WHEN local_path IS NOT NULL THEN filename END, status,
                    to_char(verified_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), verify_result
               FROM backups WHERE drive_file_id IS NOT NULL OR local_path IS NOT NULL ORDER BY id",
            &[],
        )
        .context("reading the backups catalog")?;
    Ok(rows
        .iter()
        .map(|r| CopyFacts {
            drive_file_id: r.get(0),
            local_file: r.get(1),
            status: r.get(2),
            verified_at: r.get(3),
            verify_result: r.get(4),
        })
        .collect())
}

/// The row counts the catalog recorded for a backup stored as Drive file `drive_id` or local
/// file `local_name` (the fallback for a backup without a manifest).
pub fn recorded_row_counts(
    client: &mut Client,
    drive_id: Option<&str>,
    local_name: Option<&str>,
) -> Result<Option<std::collections::BTreeMap<String, u64>>> {
    let row = client
        .query_opt(
            "SELECT row_counts::text FROM backups
              WHERE row_counts IS NOT NULL AND status = 'SUCCESS'
                AND (($1::text IS NOT NULL AND drive_file_id = $1) OR ($2::text IS NOT NULL AND local_path IS NOT NULL AND filename = $2))
              ORDER BY id DESC LIMIT 1",
            &[&drive_id, &local_name],
        )
        .context("reading the row counts from the backups catalog")?;
    let Some(row) = row else { return Ok(None) };
    let text: String = row.get(0);
    Ok(serde_json::from_str(&text).ok())
}

/// Records a verification's outcome on the backup's row(s); returns how many rows matched.
pub fn record_verification(
    client: &mut Client,
    drive_id: Option<&str>,
    local_name: Option<&str>,
    result: &str,
) -> Result<u64> {
    client
        .execute(
            "UPDATE backups SET verified_at = now(), verify_result = $3
              WHERE ($1::text IS NOT NULL AND drive_file_id = $1) OR ($2::text IS NOT NULL AND local_path IS NOT NULL AND filename = $2)",
            &[&drive_id, &local_name, &crate::redact::scrub(result)],
        )
        .context("recording the verification in the backups catalog")
}

/// What `pgdrive drill` records in `verify_result` starts with this (see [`last_drill`]).
pub const DRILL_RESULT_PREFIX: &str = "drill ";
/// The result line of a drill that passed starts with this.
pub const DRILL_PASSED: &str = "drill passed";

/// The newest drill recorded on any backup row: when (Unix ms) and its result line.
pub fn last_drill(client: &mut Client) -> Result<Option<(i64, String)>> {
    let row = client
        .query_opt(
            "SELECT (extract(epoch FROM verified_at) * 1000)::int8, verify_result FROM backups
              WHERE verified_at IS NOT NULL AND left(verify_result, length($1::text)) = $1::text
              ORDER BY verified_at DESC LIMIT 1",
            &[&DRILL_RESULT_PREFIX],
        )
        .context("reading the last drill from the backups catalog")?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

/// The size of the newest successful backup of a kind (for `check`'s quota estimate).
pub fn last_success_size(
    client: &mut Client,
    kind: crate::kind::Kind,
    database: &str,
) -> Result<Option<u64>> {
    let row = client.query_opt(
        "SELECT size_bytes FROM backups WHERE type = $1 AND status = 'SUCCESS' AND COALESCE(database_name, $2) = $2
          ORDER BY created_at DESC, id DESC LIMIT 1",
        &[&kind.as_str(), &database],
    )?;
    Ok(row
        .and_then(|r| r.get::<_, Option<i64>>(0))
        .map(|s| s.max(0) as u64))
}

/// Creates the `backups` table again when it was dropped after its migrations were recorded
/// (see [`forget_dropped_tables`]); returns whether it did.
pub fn recreate_if_dropped(client: &mut Client) -> Result<bool> {
    let present: bool = client
        .query_one("SELECT to_regclass('backups') IS NOT NULL", &[])?
        .get(0);
    if present {
        return Ok(false);
    }
    migrate(client)?;
    Ok(true)
}

/// How a stored backup stands in the catalog.
#[derive(Debug, PartialEq, Eq)]
pub enum Known {
    /// No row describes it.
    Missing,
    /// A row describes it (same checksum, or the same Drive file or local file name); `fill`
    /// when that row lacks this copy's location.
    Recorded { id: i32, fill: bool },
}

/// Whether the catalog has a SUCCESS row for the backup with this SHA-256 stored at
/// `drive_file_id` or as the local file `local_name`.
pub fn known(
    client: &mut Client,
    sha256: &str,
    drive_file_id: Option<&str>,
    local_name: Option<&str>,
) -> Result<Known> {
    let row = client
        .query_opt(
            "SELECT id, drive_file_id, local_path FROM backups
              WHERE status = 'SUCCESS'
                AND (sha256 = $1 OR drive_file_id = $2
                     OR regexp_replace(local_path, '^.*/', '') = $3)
              ORDER BY id LIMIT 1",
            &[&sha256, &drive_file_id, &local_name],
        )
        .context("looking the backup up in the catalog")?;
    Ok(match row {
        None => Known::Missing,
        Some(r) => {
            let (drive, local): (Option<String>, Option<String>) = (r.get(1), r.get(2));
            Known::Recorded {
                id: r.get(0),
                fill: (drive_file_id.is_some() && drive.is_none())
                    || (local_name.is_some() && local.is_none()),
            }
        }
    })
}

/// Adds a copy's location to the row `id` where it has none.
pub fn fill_location(
    client: &mut Client,
    id: i32,
    drive_file_id: Option<&str>,
    local_path: Option<&str>,
) -> Result<()> {
    client
        .execute(
            "UPDATE backups SET drive_file_id = COALESCE(drive_file_id, $2),
                                local_path = COALESCE(local_path, $3)
              WHERE id = $1",
            &[&id, &drive_file_id, &local_path],
        )
        .context("recording the backup's location in the catalog")?;
    Ok(())
}

/// A table called `backups` that is neither pgdrive's nor the Node.js version's belongs to the
/// application: pgdrive must not add columns to it or write rows into it.
pub fn refuse_foreign_backups_table(client: &mut Client) -> Result<()> {
    let columns: Vec<String> = client
        .query(
            "SELECT a.attname::text FROM pg_attribute a
              WHERE a.attrelid = to_regclass('backups') AND a.attnum > 0 AND NOT a.attisdropped",
            &[],
        )
        .context("inspecting an existing backups table")?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let required = [
        "id",
        "created_at",
        "filename",
        "size_bytes",
        "drive_file_id",
        "status",
        "type",
        "error",
    ];
    let missing: Vec<&str> = required
        .iter()
        .copied()
        .filter(|c| !columns.iter().any(|have| have == c))
        .collect();
    if !columns.is_empty() && !missing.is_empty() {
        return Err(crate::error::config_error_hint(
            format!("this database already has a table named backups that is not a backup catalog (it lacks {})", missing.join(", ")),
            "keep pgdrive's catalog in another database with PGDRIVE_CATALOG_URL",
        ));
    }
    Ok(())
}

fn migration_error(e: postgres::Error, name: &str) -> anyhow::Error {
    if e.code() == Some(&postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION) {
        return crate::error::config_error_hint(
            format!("cannot create the backups catalog ({name}): the database is read-only (a standby?)"),
            "keep the catalog and the lock on the primary with PGDRIVE_CATALOG_URL",
        );
    }
    if e.code() == Some(&postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) {
        return crate::error::config_error_hint(
            format!(
                "cannot create or upgrade the backups catalog ({name}): {}",
                crate::error::postgres_message(&e)
            ),
            "run `pgdrive migrate` once as the database owner, or GRANT CREATE ON SCHEMA public to the backup user",
        );
    }
    anyhow::Error::new(e).context(format!("applying catalog migration {name}"))
}

/// One run, as recorded.
#[derive(Debug, Default, Clone)]
pub struct RunRecord {
    pub started_ms: i64,
    pub finished_ms: i64,
    pub kind: String,
    pub success: bool,
    pub filename: Option<String>,
    pub size_bytes: Option<i64>,
    pub raw_size_bytes: Option<i64>,
    pub drive_file_id: Option<String>,
    pub local_path: Option<String>,
    pub error: Option<String>,
    pub step: Option<String>,
    pub database_name: String,
    pub sha256: Option<String>,
    pub md5: Option<String>,
    pub compression: Option<String>,
    pub host: String,
    pub pg_dump_version: Option<String>,
    pub server_version: Option<String>,
    /// JSON object: rows per table in the dump.
    pub row_counts: Option<String>,
    /// The job that made the run (`--job NAME`); `None` for the built-in kinds.
    pub job: Option<String>,
    /// What happened on each target the backup was sent to (the `backup_copies` rows).
    pub copies: Vec<CopyRecord>,
}

/// One target's outcome for one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyRecord {
    /// The target's configured name.
    pub target: String,
    /// `drive`, `local`, ...: what kind of storage the name stood for at the time.
    pub backend: String,
    /// Stored and verified (`STORED`), else `FAILED` with `error`.
    pub stored: bool,
    pub object_id: Option<String>,
    /// A link or path a person can use.
    pub location: Option<String>,
    pub error: Option<String>,
}

/// Inserts the run's row and its copies' rows, together; returns the run's id.
pub fn record(client: &mut Client, r: &RunRecord) -> Result<i32> {
    let status = if r.success { "SUCCESS" } else { "ERROR" };
    let started = r.started_ms as f64 / 1000.0;
    let finished = r.finished_ms as f64 / 1000.0;
    let duration = r.finished_ms - r.started_ms;
    let mut tx = client
        .transaction()
        .context("recording the run in the backups table")?;
    let row = tx
        .query_one(
            "INSERT INTO backups (created_at, finished_at, duration_ms, filename, size_bytes, raw_size_bytes, drive_file_id,
                                  local_path, status, type, error, step, database_name, sha256, md5, compression, host,
                                  pgdrive_version, pg_dump_version, server_version, row_counts, job)
             VALUES (to_timestamp($1), to_timestamp($2), $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                     $18, $19, $20, $21::text::jsonb, $22)
             RETURNING id",
            &[
                &started,
                &finished,
                &duration,
                &r.filename,
                &r.size_bytes,
                &r.raw_size_bytes,
                &r.drive_file_id,
                &r.local_path,
                &status,
                &r.kind,
                &r.error.as_deref().map(crate::redact::scrub),
                &r.step,
                &r.database_name,
                &r.sha256,
                &r.md5,
                &r.compression,
                &r.host,
                &env!("CARGO_PKG_VERSION"),
                &r.pg_dump_version,
                &r.server_version,
                &r.row_counts,
                &r.job,
            ],
        )
        .context("recording the run in the backups table")?;
    let id: i32 = row.get(0);
    for c in &r.copies {
        tx.execute(
            "INSERT INTO backup_copies (backup_id, target, backend, status, object_id, location, error)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &id,
                &c.target,
                &c.backend,
                &if c.stored { "STORED" } else { "FAILED" },
                &c.object_id,
                &c.location,
                &c.error.as_deref().map(crate::redact::scrub),
            ],
        )
        .context("recording the run's copies in backup_copies")?;
    }
    tx.commit()
        .context("recording the run in the backups table")?;
    Ok(id)
}

/// The copies `target` holds (stored, not pruned) of the successful runs of `kind` and `job`
/// (`None`: the built-in kind), as the listing entries the retention planner reads: the
/// properties a complete backup carries (kind, database, job, start time, checksums, the pin).
pub fn stored_copies(
    client: &mut Client,
    target: &str,
    kind: &str,
    job: Option<&str>,
) -> Result<Vec<crate::storage::Listed>> {
    use crate::storage::props;
    let rows = client
        .query(
            "SELECT c.object_id, COALESCE(b.filename, c.object_id), (extract(epoch FROM b.created_at) * 1000)::int8,
                    b.database_name, b.sha256, b.md5, b.size_bytes, c.pinned
               FROM backup_copies c JOIN backups b ON b.id = c.backup_id
              WHERE c.target = $1 AND b.type = $2 AND b.job IS NOT DISTINCT FROM $3
                AND b.status = 'SUCCESS' AND c.status = 'STORED' AND c.pruned_at IS NULL
                AND c.object_id IS NOT NULL AND b.database_name IS NOT NULL",
            &[&target, &kind, &job],
        )
        .with_context(|| format!("reading the catalog's copies on {target}"))?;
    Ok(rows
        .iter()
        .map(|r| {
            let started: i64 = r.get(2);
            let mut properties = BTreeMap::from([
                (props::MARKER.to_string(), props::MARKER_VALUE.to_string()),
                (props::KIND.to_string(), kind.to_string()),
                (props::DATABASE.to_string(), r.get(3)),
                (
                    props::STARTED_AT.to_string(),
                    crate::timeutil::rfc3339_millis(started),
                ),
            ]);
            if let Some(job) = job {
                properties.insert(props::JOB.to_string(), job.to_string());
            }
            let optional: [(&str, Option<String>); 3] = [
                (props::SHA256, r.get(4)),
                (props::MD5, r.get(5)),
                (
                    props::SIZE,
                    r.get::<_, Option<i64>>(6).map(|n| n.to_string()),
                ),
            ];
            for (key, value) in optional {
                if let Some(v) = value {
                    properties.insert(key.to_string(), v);
                }
            }
            if r.get::<_, bool>(7) {
                properties.insert(
                    crate::retention::PINNED.to_string(),
                    crate::retention::PINNED_VALUE.to_string(),
                );
            }
            crate::storage::Listed {
                id: r.get(0),
                name: r.get(1),
                created_ms: Some(started),
                size: r.get::<_, Option<i64>>(6).map(|n| n.max(0) as u64),
                properties,
            }
        })
        .collect())
}

/// Records a pin (or unpin) of the copy `object_id` on `target`; how many copies it matched.
pub fn record_pin(client: &mut Client, target: &str, object_id: &str, pinned: bool) -> Result<u64> {
    client
        .execute(
            "UPDATE backup_copies SET pinned = $3 WHERE target = $1 AND object_id = $2",
            &[&target, &object_id, &pinned],
        )
        .context("recording the pin in the catalog")
}

/// Records that `target` no longer holds the objects `ids` (Drive file ids, local file names):
/// their copies are marked pruned, and a run is marked pruned once none of its stored copies is
/// left. Rows from before per-target copies are matched as they were recorded: by Drive file id
/// (`drive`), else by file name for a local copy. Returns how many runs became pruned.
pub fn mark_pruned(client: &mut Client, target: &str, drive: bool, ids: &[String]) -> Result<u64> {
    // the outer statement sees the table as it was before the CTE's update, hence the exclusion
    let n = client
        .execute(
            "WITH pruned AS (
                 UPDATE backup_copies SET pruned_at = now()
                  WHERE target = $1 AND object_id = ANY($2) AND pruned_at IS NULL
                  RETURNING backup_id)
             UPDATE backups b SET pruned_at = now()
              WHERE b.pruned_at IS NULL
                AND ((b.id IN (SELECT backup_id FROM pruned)
                      AND NOT EXISTS (SELECT 1 FROM backup_copies c
                                       WHERE c.backup_id = b.id AND c.status = 'STORED' AND c.pruned_at IS NULL
                                         AND NOT (c.target = $1 AND c.object_id = ANY($2))))
                  OR (NOT EXISTS (SELECT 1 FROM backup_copies c WHERE c.backup_id = b.id)
                      AND (($3 AND b.drive_file_id = ANY($2))
                           OR (NOT $3 AND b.local_path IS NOT NULL AND b.filename = ANY($2)))))",
            &[&target, &ids, &drive],
        )
        .context("recording pruned backups in the catalog")?;
    Ok(n)
}
