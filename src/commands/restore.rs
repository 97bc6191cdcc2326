//! `pgdrive restore`: one backup from storage into a database, in this order:
//!
//! configuration → the target URL (must name its database; never DATABASE_URL's nor the
//! catalog's, by identity: `source::refuse_the_source`) → find the backup (`latest` or an id;
//! storage alone, no catalog needed) → read-only checks of the target (`--create`: it must not
//! exist, or be the unused, marked leftover of an interrupted restore; otherwise it must not be
//! such a leftover and must have no user relations unless `--clean`) → print the plan and, on a
//! terminal, ask → `--create`: CREATE DATABASE from template0 with the recorded encoding and
//! locale, commented as unfinished → stream through the checks into psql (one transaction,
//! committed only after the checksums matched; see `crate::restore`) → remove the comment once
//! the client committed; on failure drop a database `--create` made.
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
use crate::dblocale::{quote_literal, DbLocale};
use crate::error::{config_error_hint, failure_hint, ExitStatus};
use crate::host::host_name;
use crate::pgconn::ConnInfo;
use crate::pgdump::DumpFormat;
use crate::progress::{self, Progress};
use crate::storage::props;
use crate::units::human_bytes;

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

/// The comment on a database that `--create` (or `verify --restore-test`) made, until its
/// restore committed: a database left by a killed run never looks restored, and the next
/// `restore --create` of that name recognises it as its own leftover.
pub const UNFINISHED_MARKER: &str = "pgdrive: unfinished restore";

/// What is already under the target's name.
#[derive(Debug, PartialEq, Eq)]
pub enum Existing {
    Nothing,
    /// A database marked by an interrupted restore, and how many sessions are connected to it.
    Unfinished {
        sessions: i64,
    },
    Database,
}

pub fn existing(info: &ConnInfo) -> Result<Existing> {
    let mut admin = maintenance(info)?;
    let row = admin.query_opt(
        "SELECT coalesce(shobj_description(d.oid, 'pg_database'), ''),
                (SELECT count(*) FROM pg_stat_activity a WHERE a.datid = d.oid)
           FROM pg_database d WHERE d.datname = $1",
        &[&info.dbname()],
    )?;
    Ok(match row {
        None => Existing::Nothing,
        Some(r) if r.get::<_, String>(0).starts_with(UNFINISHED_MARKER) => {
            Existing::Unfinished { sessions: r.get(1) }
        }
        Some(_) => Existing::Database,
    })
}

/// Whether the connected database carries the [`UNFINISHED_MARKER`] (read through the target's
/// own connection: a plain restore needs no access to the maintenance database).
fn is_marked_unfinished(client: &mut postgres::Client) -> Result<bool> {
    let comment: String = client
        .query_one(
            "SELECT coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database
              WHERE datname = current_database()",
            &[],
        )?
        .get(0);
    Ok(comment.starts_with(UNFINISHED_MARKER))
}

fn already_exists(info: &ConnInfo) -> anyhow::Error {
    failure_hint(
        format!(
            "database {} already exists; --create only makes a new one",
            info.dbname()
        ),
        "pick a new name, or restore into it with --clean",
    )
}

/// Creates the database from template0 with the source's encoding and locale (`None`: a backup
/// that does not record them; then the server's defaults), and marks it unfinished (see
/// [`UNFINISHED_MARKER`]) until [`mark_finished`]. One that already exists is an error (never
/// restore over it by accident).
pub fn create_database(info: &ConnInfo, locale: Option<&DbLocale>) -> Result<()> {
    let mut admin = maintenance(info)?;
    let exists = admin
        .query_opt(
            "SELECT 1 FROM pg_database WHERE datname = $1",
            &[&info.dbname()],
        )?
        .is_some();
    if exists {
        return Err(already_exists(info));
    }
    let (_, major) = crate::server::server_version(&mut admin)?;
    let options = match locale {
        Some(l) => l.create_options(major)?,
        None => {
            crate::log::warn(
                "the backup records no encoding or locale (made by an older pgdrive): creating the database from template0 with the server's defaults",
                &[("database", info.dbname().to_string())],
            );
            String::new()
        }
    };
    let name = quote_ident(info.dbname());
    if let Err(e) = admin.batch_execute(&format!(
        "CREATE DATABASE {name} TEMPLATE template0 {options}"
    )) {
        let reason = e
            .as_db_error()
            .map(|d| d.message().to_string())
            .unwrap_or_else(|| e.to_string());
        return Err(match locale {
            Some(l) => failure_hint(
                format!(
                    "creating database {} with the source's settings ({}) failed: {reason}",
                    info.dbname(),
                    l.describe()
                ),
                "the target server may lack that locale (see `locale -a` there) or the role the CREATEDB privilege; install the locale, or create the database yourself and restore into it without --create",
            ),
            None => failure_hint(
                format!("creating database {} failed: {reason}", info.dbname()),
                "the role needs the CREATEDB privilege",
            ),
        });
    }
    let marker = format!(
        "{UNFINISHED_MARKER} (pgdrive pid {} on {}, {}): not a restored database until pgdrive removes this comment; `pgdrive restore --create` of this name drops and recreates it",
        std::process::id(),
        host_name(),
        crate::timeutil::rfc3339_millis(crate::timeutil::now_millis()),
    );
    if let Err(e) = admin.batch_execute(&format!(
        "COMMENT ON DATABASE {name} IS {}",
        quote_literal(&marker)
    )) {
        let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name}"));
        return Err(anyhow::Error::new(e))
            .with_context(|| format!("marking database {} as unfinished", info.dbname()));
    }
    Ok(())
}

/// Asks for `yes` on the terminal (after the plan was printed); logs a refusal.
pub fn confirmed() -> Result<bool> {
    let mut err = std::io::stderr().lock();
    write!(err, "Type yes to continue: ")?;
    err.flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if answer.trim() != "yes" {
        crate::log::info("restore cancelled; nothing was changed", &[]);
        return Ok(false);
    }
    Ok(true)
}

/// Drops the database a failed `--create` restore made (logging either way); returns `e`.
fn dropped_after(target_db: &ConnInfo, e: anyhow::Error) -> anyhow::Error {
    match drop_database(target_db) {
        Ok(()) => crate::log::warn(
            "dropped the database created for this restore",
            &[("database", target_db.dbname().to_string())],
        ),
        Err(d) => crate::log::error(
            "could not drop the database created for this restore",
            &[("error", crate::error::render(&d))],
        ),
    }
    e
}

/// Replaces the unfinished-restore mark with the database's recorded comment (or none), once
/// the restore committed.
pub fn mark_finished(info: &ConnInfo, comment: Option<&str>) -> Result<()> {
    let mut admin = maintenance(info)?;
    admin
        .batch_execute(&crate::dr::dbprops::comment_sql(info.dbname(), comment))
        .map_err(|e| {
            failure_hint(
                format!(
                    "the restore committed, but removing the unfinished-restore comment from database {} failed: {e}",
                    info.dbname()
                ),
                format!(
                    "run COMMENT ON DATABASE {} IS NULL as its owner",
                    quote_ident(info.dbname())
                ),
            )
        })
}

/// Drops the database `--create` made, whatever is connected to it.
pub fn drop_database(info: &ConnInfo) -> Result<()> {
    drop_with(info, "WITH (FORCE)")
}

fn drop_with(info: &ConnInfo, options: &str) -> Result<()> {
    let mut admin = maintenance(info)?;
    admin
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} {options}",
            quote_ident(info.dbname())
        ))
        .with_context(|| format!("dropping database {}", info.dbname()))
}

/// `--create` on a name that is taken: only a database an interrupted restore left (marked, and
/// nobody connected: a restore still running holds a session) may be replaced. Returns whether
/// one must be dropped first.
fn check_create_target(info: &ConnInfo) -> Result<bool> {
    match existing(info)? {
        Existing::Nothing => Ok(false),
        Existing::Database => Err(already_exists(info)),
        Existing::Unfinished { sessions: 0 } => {
            crate::log::warn(
                "the target database was left unfinished by an interrupted restore; it is dropped and created again",
                &[("database", info.dbname().to_string())],
            );
            Ok(true)
        }
        Existing::Unfinished { sessions } => Err(failure_hint(
            format!(
                "database {} is an unfinished restore and {sessions} sessions are connected to it: another restore may still be running",
                info.dbname()
            ),
            "wait for it to finish, or stop it and run this restore again (it then drops and recreates the database)",
        )),
    }
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
                human_bytes(free),
                human_bytes(needed),
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
    stall: std::time::Duration,
) -> Result<crate::restore::Checked> {
    let bin = crate::psql::locate_tool(
        "pg_restore",
        "PGDRIVE_PG_RESTORE",
        clients.pg_restore.as_deref(),
    )?;
    let mut spool = SpoolFile::create(&plan.dir)?;
    // watched while downloading; pg_restore -j then takes as long as it needs
    let watch = crate::signals::watch_unless_zero(stall);
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
    drop(watch);
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
        clients.owners.leave_out(),
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
    if args.all || args.globals {
        return super::restore_all::run(args, settings);
    }
    let cfg = source::load(&args.source, settings)?;
    let target_db = source::parse_url("--target-url", &args.target_url, &cfg.settings)?;
    source::refuse_the_source(&cfg, &target_db, args.clean)?;
    let database = source::wanted_database(&cfg, &args.source);
    let names = source::candidates(&cfg, args.source.target.as_deref())?;
    let spec = args.backup.as_deref().unwrap_or("latest");
    let (mut storage, found) =
        source::find_with_fallback(&cfg, &names, spec, args.kind, database.as_deref())?;
    restore_one(args, &cfg, &target_db, storage.as_mut(), &found)
}

/// Restores the backup `found` of `target` into `target_db` (checked against the source
/// already): the plan, the question on a terminal, the restore, and with `--create` the
/// database's recorded properties (see `crate::dr::dbprops`).
pub fn restore_one(
    args: &RestoreArgs,
    cfg: &crate::config::ReadConfig,
    target_db: &ConnInfo,
    target: &mut dyn crate::storage::Target,
    found: &crate::storage::Found,
) -> Result<ExitStatus> {
    let started = Instant::now();
    if found.listed.prop(props::KIND) == Some(props::GLOBALS_KIND) {
        return Err(config_error_hint(
            format!(
                "{} holds a job's globals (roles, memberships, tablespaces), not a database",
                found.listed.name
            ),
            format!(
                "restore it with restore --globals --job {} --target-url postgres://…/postgres (or the whole set with restore --all)",
                found.listed.prop(props::JOB).unwrap_or("NAME")
            ),
        ));
    }
    let target_db = target_db.clone();
    let stall = crate::config::stall_timeout(&cfg.settings)?;
    crate::encrypt::init_for_restore(args.identity.as_deref(), &cfg.settings)?;
    let clients = crate::restore::Clients {
        psql: args
            .psql
            .clone()
            .or_else(|| cfg.settings.get("PGDRIVE_PSQL").map(Into::into)),
        pg_restore: args
            .pg_restore
            .clone()
            .or_else(|| cfg.settings.get("PGDRIVE_PG_RESTORE").map(Into::into)),
        owners: crate::dr::rolemap::Owners::from_args(args.no_owner, &args.role_map)?,
    };
    let backup = &found.listed;
    let expected = crate::restore::expected_digest(backup)?;
    let layout = crate::restore::Layout::of_found(found)?;
    if let Some(enc) = &layout.encryption {
        // the identity must match before anything is created, dropped or asked
        let header = target.open(&backup.id, Some(expected.size))?;
        drop(crate::restore::decrypting(header, enc)?);
    }
    let spool = if args.jobs > 1 {
        Some(plan_spool(args, backup, layout.clone(), expected.size)?)
    } else {
        None
    };

    if !args.role_map.is_empty() && args.jobs > 1 {
        return Err(config_error_hint(
            "--role-map cannot be combined with --jobs N > 1 for one database (pg_restore -j cannot rename roles)",
            "drop --jobs: the restore then streams through pgdrive, which renames them, in one transaction",
        ));
    }
    let db_properties =
        crate::dr::dbprops::DbProperties::from_found(found, layout.encryption.as_ref())?
            .map(|p| p.with_roles_renamed(&clients.owners));

    // --- read-only checks of the target, before anyone is asked anything
    let locale = DbLocale::from_properties(&backup.properties);
    let mut replace_unfinished = false;
    if let Some(map) = clients.owners.map() {
        let mut server = if args.create {
            maintenance(&target_db)?
        } else {
            super::backup::connect(&target_db, "the restore target")?
        };
        map.check_targets_exist(&mut server)?;
    }
    if args.create {
        replace_unfinished = check_create_target(&target_db)?;
    } else {
        let mut client = super::backup::connect(&target_db, "the restore target")?;
        if is_marked_unfinished(&mut client)? {
            return Err(failure_hint(
                format!(
                    "database {} is marked as an unfinished restore (an interrupted restore --create left it)",
                    target_db.dbname()
                ),
                "run the restore again with --create: it drops that database and creates it anew",
            ));
        }
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
    } else if args.create && replace_unfinished {
        "DROP the unfinished database an interrupted restore left, create it again, then restore into it".into()
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
        ("size", human_bytes(expected.size)),
        ("from", target.describe()),
        ("target", target_db.redacted()),
        ("action", mode.clone()),
    ];
    let mut plan = plan.to_vec();
    if let Some(map) = clients.owners.map() {
        plan.push(("roles", format!("renamed: {}", map.describe())));
    }
    if let (true, Some(p)) = (args.create, &db_properties) {
        plan.push(("properties", p.describe()));
    }
    if args.create {
        plan.push((
            "settings",
            locale
                .as_ref()
                .map(DbLocale::describe)
                .unwrap_or_else(|| "not recorded in the backup: the server's defaults".into()),
        ));
    }
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
        drop(err);
        if !confirmed()? {
            return Ok(ExitStatus::Failed);
        }
    }

    // --- change the target (the checks ran before the question)
    let mut prelude = String::new();
    if args.create {
        if replace_unfinished {
            // no FORCE: a session that connected since the check means someone uses it now
            drop_with(&target_db, "")?;
            crate::log::info(
                "dropped the unfinished database",
                &[("database", target_db.dbname().to_string())],
            );
        }
        create_database(&target_db, locale.as_ref())?;
        crate::log::info(
            "created the target database",
            &[
                ("database", target_db.dbname().to_string()),
                (
                    "settings",
                    locale
                        .as_ref()
                        .map(DbLocale::describe)
                        .unwrap_or_else(|| "the server's defaults".into()),
                ),
            ],
        );
    } else if args.clean && layout.format == DumpFormat::Plain {
        prelude.push_str(CLEAN_SQL);
    }

    // --- stream (or spool, then restore in parallel)
    let outcome = (|| -> Result<crate::restore::Checked> {
        if let Some(spool) = &spool {
            return spool_and_restore(
                spool,
                args,
                &clients,
                &target_db,
                target,
                &backup.id,
                &expected,
                layout.clone(),
                stall,
            );
        }
        let _watch = crate::signals::watch_unless_zero(stall);
        let client = clients.restore_into(layout.format, &target_db, args.clean)?;
        let script = clients.archive_to_script(layout.format, args.clean)?;
        let reader = target.open(&backup.id, Some(expected.size))?;
        let mut reader = Progress::new(
            reader,
            Some(expected.size),
            progress::stderr_is_terminal() && !cfg!(test),
        );
        let checked = crate::restore::into_client_with(
            &mut reader,
            &expected,
            layout.clone(),
            client,
            script,
            &prelude,
            &clients.owners,
        );
        reader.clear();
        checked
    })();
    match outcome {
        Ok(checked) => {
            // the restore committed: only now does a created database stop being marked
            // unfinished (a failure here leaves it marked, and restored: it is not dropped)
            if args.create {
                let comment = db_properties.as_ref().and_then(|p| p.comment.as_deref());
                if let Some(p) = &db_properties {
                    let applied = maintenance(&target_db).and_then(|mut admin| {
                        p.apply(
                            &mut admin,
                            target_db.dbname(),
                            crate::dr::dbprops::ApplyOptions {
                                no_owner: clients.owners.leave_out(),
                            },
                        )
                    });
                    if let Err(e) = applied {
                        return Err(dropped_after(&target_db, e).context(format!(
                            "restoring {} into {}",
                            backup.name,
                            target_db.redacted()
                        )));
                    }
                }
                mark_finished(&target_db, comment)?;
            }
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
            let e = if args.create {
                dropped_after(&target_db, e)
            } else {
                e
            };
            Err(e.context(format!(
                "restoring {} into {}",
                backup.name,
                target_db.redacted()
            )))
        }
    }
}
