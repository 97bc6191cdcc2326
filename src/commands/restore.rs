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

use std::io::{BufRead, Write};
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
    let expected = backup
        .recorded_digest()
        .expect("find returns complete backups");
    let layout = crate::restore::Layout::of(backup)?;

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

    let mode = if args.create {
        "create it, then restore into it"
    } else if args.clean && layout.format == DumpFormat::Custom {
        "DROP the archive's objects where they exist (pg_restore --clean), then restore, in one transaction"
    } else if args.clean {
        "DROP every schema in it (CASCADE) and all large objects, then restore, in one transaction"
    } else {
        "restore into it (it must have no tables)"
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
        ("action", mode.to_string()),
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

    // --- stream
    let outcome = (|| -> Result<crate::restore::Checked> {
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
