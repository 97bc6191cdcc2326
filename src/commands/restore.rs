//! `pgdrive restore`: one backup from storage into a database, in this order:
//!
//! configuration → the target URL (must name its database; never DATABASE_URL's nor the
//! catalog's) → find the backup (`latest` or an id; storage alone, no catalog needed) → read-only
//! checks of the target (`--create`: it must not exist; otherwise it must have no user relations
//! unless `--clean`) → print the plan and, on a terminal, ask → `--create`: CREATE DATABASE → stream through the checks into psql
//! (one transaction, committed only after the checksums matched; see `crate::restore`) → on
//! failure drop a database `--create` made.
//!
//! Plain dumps go to psql, custom archives to pg_restore (see `crate::restore` for why neither
//! can commit before the checksums matched).
//!
//! `--clean` for a plain dump does not rely on DROP statements in the dump (it has none): in the
//! same transaction as the restore, before the dump's first statement, it drops every non-system
//! schema with CASCADE and every large object, and recreates an empty `public` schema as
//! PostgreSQL creates it. If the restore fails, the clean is rolled back with it. For a custom
//! archive it is pg_restore's `--clean --if-exists`, in the same single transaction.
//!
//! `--jobs N > 1` (custom archives; requires `--create` or `--clean`): the free space of the spool
//! directory is checked with the other read-only checks; then the decompressed archive is written
//! through the same checks to a 0600 spool file, and only after they passed does
//! `pg_restore -j N` run on it. Not one transaction: a failure drops a `--create`d database, and
//! leaves a `--clean` target partially restored. The spool file is removed in every case.

use std::io::{BufRead, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};

use super::source::{self, quote_ident};
use crate::cli::RestoreArgs;
use crate::config::Settings;
use crate::error::{config_error_hint, failure_hint, ExitStatus};
use crate::pgconn::ConnInfo;
use crate::pgdump::DumpFormat;
use crate::progress::{self, Progress};
use crate::storage::props;

/// Run first, in the restore's transaction, by `--clean`.
pub const CLEAN_SQL: &str = r#"DO $pgdrive_clean$
DECLARE s text;
BEGIN
    FOR s IN SELECT nspname FROM pg_namespace
              WHERE nspname <> 'information_schema' AND nspname NOT LIKE 'pg\_%' LOOP
        EXECUTE format('DROP SCHEMA %I CASCADE', s);
    END LOOP;
    PERFORM lo_unlink(oid) FROM pg_largeobject_metadata;
    CREATE SCHEMA public;
    IF current_setting('server_version_num')::int >= 150000 THEN
        ALTER SCHEMA public OWNER TO pg_database_owner;
        GRANT USAGE ON SCHEMA public TO PUBLIC;
    ELSE
        GRANT ALL ON SCHEMA public TO PUBLIC;
    END IF;
    COMMENT ON SCHEMA public IS 'standard public schema';
END
$pgdrive_clean$;
"#;

/// User relations (tables, views, sequences, foreign tables) in a database.
pub fn user_relations(client: &mut postgres::Client) -> Result<i64> {
    let row = client.query_one(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
            AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'",
        &[],
    )?;
    Ok(row.get(0))
}

/// Connects to the server's maintenance database (`postgres`, else `template1`) to create or drop
/// databases.
pub fn maintenance(info: &ConnInfo) -> Result<postgres::Client> {
    super::backup::connect(
        &source::with_dbname(info, "postgres"),
        "the server's postgres database",
    )
    .or_else(|_| {
        super::backup::connect(
            &source::with_dbname(info, "template1"),
            "the server's template1 database",
        )
    })
}

pub fn database_exists(info: &ConnInfo) -> Result<bool> {
    let mut admin = maintenance(info)?;
    Ok(admin
        .query_opt(
            "SELECT 1 FROM pg_database WHERE datname = $1",
            &[&info.dbname()],
        )?
        .is_some())
}

/// Creates the database; one that already exists is an error (never restore over it by accident).
pub fn create_database(info: &ConnInfo) -> Result<()> {
    let mut admin = maintenance(info)?;
    let exists = admin
        .query_opt(
            "SELECT 1 FROM pg_database WHERE datname = $1",
            &[&info.dbname()],
        )?
        .is_some();
    if exists {
        return Err(failure_hint(
            format!(
                "database {} already exists; --create only makes a new one",
                info.dbname()
            ),
            "pick a new name, or restore into it with --clean",
        ));
    }
    admin
        .batch_execute(&format!("CREATE DATABASE {}", quote_ident(info.dbname())))
        .with_context(|| format!("creating database {}", info.dbname()))
}

pub fn drop_database(info: &ConnInfo) -> Result<()> {
    let mut admin = maintenance(info)?;
    admin
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_ident(info.dbname())
        ))
        .with_context(|| format!("dropping database {}", info.dbname()))
}

/// Where and how much a parallel restore spools (checked before anything changes).
pub struct SpoolPlan {
    pub dir: PathBuf,
    pub needed: u64,
}

/// The checks of `--jobs N > 1` that need the backup: its format, `--create`/`--clean`, and the
/// free space of the spool directory.
fn plan_spool(
    args: &RestoreArgs,
    backup: &crate::storage::Listed,
    layout: crate::restore::Layout,
    stored_size: u64,
) -> Result<SpoolPlan> {
    if layout.format != DumpFormat::Custom {
        return Err(config_error_hint(
            format!(
                "--jobs {} needs a custom-format backup; {} is a plain SQL dump, which psql restores in one stream",
                args.jobs, backup.name
            ),
            "drop --jobs (plain dumps are restored by psql, which has no parallel mode), or back up with PGDRIVE_FORMAT=custom",
        ));
    }
    if !args.create && !args.clean {
        return Err(config_error_hint(
            format!(
                "--jobs {} needs --create or --clean: a parallel pg_restore is not one transaction, so a failed restore leaves objects behind",
                args.jobs
            ),
            "use --create (a new database, dropped again if the restore fails), or --clean if a partially restored target is acceptable on failure",
        ));
    }
    let dir = args.spool_dir.clone().unwrap_or_else(std::env::temp_dir);
    if !dir.is_dir() {
        return Err(config_error_hint(
            format!("the spool directory {} does not exist", dir.display()),
            "point --spool-dir at an existing directory with room for the decompressed archive",
        ));
    }
    let (needed, basis) = match backup
        .prop(props::RAW_SIZE)
        .and_then(|v| v.parse::<u64>().ok())
    {
        Some(raw) => (raw, "the backup's recorded decompressed size".to_string()),
        None => (
            stored_size.saturating_mul(10),
            "an estimate, 10 × the stored size: the backup records no decompressed size"
                .to_string(),
        ),
    };
    let free = free_bytes(&dir)?;
    if free < needed {
        return Err(config_error_hint(
            format!(
                "not enough free space for --jobs in {}: {} free, {} needed ({basis})",
                dir.display(),
                super::backup::human_bytes(free),
                super::backup::human_bytes(needed),
            ),
            "point --spool-dir at a directory with more room, or restore without --jobs (streamed, no temporary file)",
        ));
    }
    crate::log::info(
        "spooling for a parallel restore",
        &[
            ("spool_dir", dir.display().to_string()),
            ("needed_bytes", needed.to_string()),
            ("needed_basis", basis),
            ("free_bytes", free.to_string()),
        ],
    );
    Ok(SpoolPlan { dir, needed })
}

/// Bytes available to an unprivileged user on the file system holding `dir` (statvfs).
fn free_bytes(dir: &Path) -> Result<u64> {
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .with_context(|| format!("spool directory {}", dir.display()))?;
    // SAFETY: a valid NUL-terminated path and a zeroed, properly sized out-parameter.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(anyhow::Error::new(std::io::Error::last_os_error()))
            .with_context(|| format!("checking the free space of {}", dir.display()));
    }
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// The temporary archive of a parallel restore: created new with mode 0600 under a unique name,
/// removed when dropped (success, error, or the unwinding of an interrupted run).
struct SpoolFile {
    path: PathBuf,
    file: Option<std::fs::File>,
}

impl SpoolFile {
    fn create(dir: &Path) -> Result<SpoolFile> {
        // an unpredictable name, created exclusively: the spool directory may be /tmp
        let (file, path) = crate::fsutil::create_temp(dir, "pgdrive-restore", "dump", 0o600)
            .with_context(|| format!("creating a spool file in {}", dir.display()))?;
        Ok(SpoolFile {
            path,
            file: Some(file),
        })
    }
}

impl Drop for SpoolFile {
    fn drop(&mut self) {
        drop(self.file.take());
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                crate::log::error(
                    "could not delete the spool file",
                    &[
                        ("path", self.path.display().to_string()),
                        ("error", e.to_string()),
                    ],
                );
            }
        }
    }
}

/// `--jobs N > 1`: download into a spool file through the checks, then — only if they all
/// passed — `pg_restore -j N` on it. The file is deleted whatever happens.
#[allow(clippy::too_many_arguments)]
fn spool_and_restore(
    plan: &SpoolPlan,
    args: &RestoreArgs,
    clients: &crate::restore::Clients,
    target_db: &ConnInfo,
    storage: &mut dyn crate::storage::Target,
    id: &str,
    expected: &crate::storage::Digest,
    layout: crate::restore::Layout,
) -> Result<crate::restore::Checked> {
    let bin = crate::psql::locate_tool(
        "pg_restore",
        "PGDRIVE_PG_RESTORE",
        clients.pg_restore.as_deref(),
    )?;
    let mut spool = SpoolFile::create(&plan.dir)?;
    let reader = storage.open(id, Some(expected.size))?;
    let mut reader = Progress::new(
        reader,
        Some(expected.size),
        progress::stderr_is_terminal() && !cfg!(test),
    );
    let checked = crate::restore::into_file(
        &mut reader,
        expected,
        layout,
        spool.file.as_mut().expect("open until dropped"),
    );
    reader.clear();
    let checked =
        checked.context("nothing was restored: the backup is checked before pg_restore starts")?;
    drop(spool.file.take());
    crate::log::info(
        "checksums match; starting the parallel restore",
        &[
            ("jobs", args.jobs.to_string()),
            ("dump_bytes", checked.raw_bytes.to_string()),
            ("estimated_bytes", plan.needed.to_string()),
        ],
    );
    let client = crate::psql::RunningClient::spawn_pg_restore_parallel(
        &bin,
        target_db.dbname(),
        args.clean,
        args.jobs,
        &spool.path,
        &target_db.child_env(),
    )?;
    crate::restore::run_parallel(client).context(if args.clean {
        "the parallel restore failed; it is not one transaction, so the target is partially restored"
    } else {
        "the parallel restore failed"
    })?;
    drop(spool);
    Ok(checked)
}

pub fn run(args: &RestoreArgs, settings: Settings) -> Result<ExitStatus> {
    let started = Instant::now();
    let cfg = source::load(&args.source, settings)?;
    let target_db = source::parse_url("--target-url", &args.target_url, &cfg.settings)?;
    for (what, other) in [
        ("DATABASE_URL", &cfg.database),
        ("PGDRIVE_CATALOG_URL", &cfg.catalog),
    ] {
        if let Some(other) = other {
            if source::same_database(&target_db, other) {
                return Err(config_error_hint(
                    format!(
                        "refusing to restore into {}: it is the database in {what}",
                        target_db.redacted()
                    ),
                    "restore into a new database (--create) and switch over once it is checked",
                ));
            }
        }
    }
    let clients = crate::restore::Clients {
        psql: args
            .psql
            .clone()
            .or_else(|| cfg.settings.get("PGDRIVE_PSQL").map(Into::into)),
        pg_restore: args
            .pg_restore
            .clone()
            .or_else(|| cfg.settings.get("PGDRIVE_PG_RESTORE").map(Into::into)),
    };

    let database = source::wanted_database(&cfg, &args.source);
    let mut targets = source::targets(&cfg, Some(args.kind))?;
    let target = targets[0].as_mut();
    let found = source::find(target, &args.backup, args.kind, database.as_deref())?;
    let backup = &found.listed;
    let expected = crate::restore::expected_digest(backup)?;
    let layout = crate::restore::Layout::of(backup)?;
    let spool = if args.jobs > 1 {
        Some(plan_spool(args, backup, layout, expected.size)?)
    } else {
        None
    };

    // --- read-only checks of the target, before anyone is asked anything
    if args.create {
        if database_exists(&target_db)? {
            return Err(failure_hint(
                format!(
                    "database {} already exists; --create only makes a new one",
                    target_db.dbname()
                ),
                "pick a new name, or restore into it with --clean",
            ));
        }
    } else {
        let mut client = super::backup::connect(&target_db, "the restore target")?;
        let n = user_relations(&mut client)?;
        if n > 0 && !args.clean {
            return Err(failure_hint(
                format!(
                    "refusing to restore: {} already has {n} tables, views or sequences",
                    target_db.redacted()
                ),
                "restore into a new database with --create, or replace its contents with --clean",
            ));
        }
    }

    let mode = if spool.is_some() && args.create {
        format!(
            "create it, then restore into it with pg_restore -j {} from a checked temporary file (not one transaction; the database is dropped again if the restore fails)",
            args.jobs
        )
    } else if spool.is_some() {
        format!(
            "DROP the archive's objects where they exist (pg_restore --clean), then restore with pg_restore -j {} from a checked temporary file: NOT one transaction, a failed restore leaves the database partially restored",
            args.jobs
        )
    } else if args.create {
        "create it, then restore into it".into()
    } else if args.clean && layout.format == DumpFormat::Custom {
        "DROP the archive's objects where they exist (pg_restore --clean), then restore, in one transaction".into()
    } else if args.clean {
        "DROP every schema in it (CASCADE) and all large objects, then restore, in one transaction"
            .into()
    } else {
        "restore into it (it must have no tables)".into()
    };
    let plan = [
        ("backup", backup.name.clone()),
        ("id", backup.id.clone()),
        (
            "created",
            backup
                .created_ms
                .map(crate::timeutil::rfc3339_millis)
                .unwrap_or_else(|| "?".into()),
        ),
        (
            "database",
            backup.prop(props::DATABASE).unwrap_or("?").to_string(),
        ),
        ("size", super::backup::human_bytes(expected.size)),
        ("from", target.describe()),
        ("target", target_db.redacted()),
        ("action", mode.clone()),
    ];
    crate::log::info("restore plan", &plan);
    if progress::stdin_is_terminal() && !args.yes {
        let mut err = std::io::stderr().lock();
        writeln!(
            err,
            "\nRestore {} ({})\n   into {}\n   {}",
            backup.name,
            backup.id,
            target_db.redacted(),
            mode
        )?;
        write!(err, "Type yes to continue: ")?;
        err.flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if answer.trim() != "yes" {
            crate::log::info("restore cancelled; nothing was changed", &[]);
            return Ok(ExitStatus::Failed);
        }
    }

    // --- change the target (the checks ran before the question)
    let mut prelude = String::new();
    if args.create {
        create_database(&target_db)?;
        crate::log::info(
            "created the target database",
            &[("database", target_db.dbname().to_string())],
        );
    } else if args.clean && layout.format == DumpFormat::Plain {
        prelude.push_str(CLEAN_SQL);
    }

    // --- stream (or spool, then restore in parallel)
    let outcome = (|| -> Result<crate::restore::Checked> {
        if let Some(spool) = &spool {
            return spool_and_restore(
                spool, args, &clients, &target_db, target, &backup.id, &expected, layout,
            );
        }
        let client = clients.restore_into(layout.format, &target_db, args.clean)?;
        let reader = target.open(&backup.id, Some(expected.size))?;
        let mut reader = Progress::new(
            reader,
            Some(expected.size),
            progress::stderr_is_terminal() && !cfg!(test),
        );
        let checked = crate::restore::into_client(&mut reader, &expected, layout, client, &prelude);
        reader.clear();
        checked
    })();
    match outcome {
        Ok(checked) => {
            crate::log::info(
                "restore finished",
                &[
                    ("target", target_db.redacted()),
                    ("tables", checked.row_counts.len().to_string()),
                    ("rows", checked.row_counts.values().sum::<u64>().to_string()),
                    ("dump_bytes", checked.raw_bytes.to_string()),
                    ("sha256", checked.digest.sha256.clone()),
                    (
                        "duration_s",
                        format!("{:.1}", started.elapsed().as_secs_f64()),
                    ),
                ],
            );
            Ok(ExitStatus::Ok)
        }
        Err(e) => {
            if args.create {
                match drop_database(&target_db) {
                    Ok(()) => crate::log::warn(
                        "dropped the database created for this restore",
                        &[("database", target_db.dbname().to_string())],
                    ),
                    Err(d) => crate::log::error(
                        "could not drop the database created for this restore",
                        &[("error", crate::error::render(&d))],
                    ),
                }
            }
            Err(e.context(format!(
                "restoring {} into {}",
                backup.name,
                target_db.redacted()
            )))
        }
    }
}
