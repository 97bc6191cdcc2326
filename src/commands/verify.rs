//! `pgdrive verify`: proves backups can be brought back. What "verified" means, precisely:
//!
//! 1. **Checksums** (always): the whole file is read from storage, and its size, MD5 and SHA-256
//!    equal what was recorded when the backup was stored (Drive appProperties / local sidecar);
//!    the compressed stream decodes to its end (gzip: every member's CRC-32 and length); a custom
//!    archive is read to its end by pg_restore (into nothing); a plain dump's SQL ends with
//!    pg_dump's "PostgreSQL database dump complete" trailer; and the per-table row counts of the
//!    stream (a plain dump's COPY blocks, an archive's data blocks) equal the manifest recorded
//!    at backup time: the Drive description or local sidecar, else the catalog's `row_counts`
//!    (a manifest too big for a description is only in the catalog); with neither, or an
//!    archive's empty manifest from a build that did not count archives, this one check is
//!    skipped.
//! 2. **Restore test** (`--restore-test SCRATCH_URL`): additionally the dump is restored, by
//!    psql or pg_restore in one transaction, stopping at the first error, into a new database
//!    `<dbname>_pgdrive_verify_<timestamp>` on the scratch server; every table that has data in
//!    the dump exists there, and `SELECT count(*) FROM ONLY` each equals the recorded count. The
//!    scratch database is always dropped afterwards.
//!
//! The outcome is recorded in the catalog when it is reachable: `verified_at` = when this check
//! ran, `verify_result` = `ok: …` or `FAILED: …` (matched by Drive file id or local file name).

use std::collections::BTreeMap;

use anyhow::{anyhow, Context, Result};

use super::source;
use crate::cli::VerifyArgs;
use crate::config::Settings;
use crate::error::{classify, corrupt, ExitStatus};
use crate::kind::Kind;
use crate::pgconn::ConnInfo;
use crate::pgdump::DumpFormat;
use crate::progress::{self, Progress};
use crate::storage::{Backend, Found, Target};

pub fn run(args: &VerifyArgs, settings: Settings) -> Result<ExitStatus> {
    let cfg = source::load(&args.source, settings)?;
    crate::encrypt::init_for_restore(args.identity.as_deref(), &cfg.settings)?;
    let scratch = match &args.restore_test {
        Some(url) => Some(source::parse_url("--restore-test", url, &cfg.settings)?),
        None => None,
    };
    let clients = crate::restore::Clients {
        psql: args
            .psql
            .clone()
            .or_else(|| cfg.settings.get("PGDRIVE_PSQL").map(Into::into)),
        pg_restore: args
            .pg_restore
            .clone()
            .or_else(|| cfg.settings.get("PGDRIVE_PG_RESTORE").map(Into::into)),
        owners: Default::default(),
    };
    let stall = crate::config::stall_timeout(&cfg.settings)?;
    let database = source::wanted_database(&cfg, &args.source);
    let mut targets = source::targets(
        &cfg,
        if args.all {
            args.kind
        } else {
            Some(args.kind.unwrap_or(Kind::Daily))
        },
        args.source.target.as_deref(),
    )?;

    // (target index, backup)
    let mut work: Vec<(usize, Found)> = Vec::new();
    for (i, t) in targets.iter_mut().enumerate() {
        if args.all {
            for l in
                source::complete_backups(t.as_mut(), args.kind, args.source.database.as_deref())?
            {
                let found = t.get(&l.id)?;
                work.push((i, found));
            }
        } else {
            let spec = args.backup.as_deref().unwrap_or("latest");
            work.push((
                i,
                source::find(
                    t.as_mut(),
                    spec,
                    args.kind.unwrap_or(Kind::Daily),
                    database.as_deref(),
                )?,
            ));
            break;
        }
    }
    if work.is_empty() {
        // Nothing proven is not a pass: an empty folder, or one whose every sidecar is unreadable,
        // must not look like a healthy verification to the cron job running it.
        let places: Vec<String> = targets.iter().map(|t| t.describe()).collect();
        return Err(crate::error::failure_hint(
            format!(
                "verify --all found no complete backup to verify in {}",
                places.join(" or ")
            ),
            "check the folder or PGDRIVE_LOCAL_DIR and --kind/--database; a backup whose recorded size and checksums (its .pgdrive.json sidecar or Drive properties) are missing or unreadable is not complete: see `pgdrive list`",
        ));
    }

    let mut catalog = source::optional_catalog(&cfg);
    let total = work.len();
    let mut errors: Vec<anyhow::Error> = Vec::new();
    for (i, mut found) in work {
        if crate::signals::stopping() {
            // a signal or a stall ended the run: the rest is not verified, nor recorded as failed
            break;
        }
        let target = targets[i].as_mut();
        let backend = target.backend();
        let drive_id = (backend == Backend::Drive).then_some(found.listed.id.clone());
        let local_name = (backend == Backend::Local).then_some(found.listed.name.clone());
        if found.row_counts.is_none() {
            // the storage's manifest is missing or was too big for a Drive description
            if let Some(client) = catalog.as_mut() {
                found.row_counts = crate::catalog::recorded_row_counts(
                    client,
                    drive_id.as_deref(),
                    local_name.as_deref(),
                )
                .unwrap_or_else(|e| {
                    crate::log::warn(
                        "could not read the row counts from the catalog",
                        &[("error", crate::error::render(&e))],
                    );
                    None
                });
            }
        }
        let outcome = verify_one(target, &found, scratch.as_ref(), &clients, stall);
        let result = match &outcome {
            Ok(summary) => format!("ok: {summary}"),
            Err(e) => format!("FAILED: {}", crate::error::render(e)),
        };
        if let Some(client) = catalog.as_mut() {
            match crate::catalog::record_verification(
                client,
                drive_id.as_deref(),
                local_name.as_deref(),
                &result,
            ) {
                Ok(0) => crate::log::debug(
                    "the catalog has no row for this backup",
                    &[("id", found.listed.id.clone())],
                ),
                Ok(_) => {}
                Err(e) => crate::log::warn(
                    "could not record the verification in the catalog",
                    &[("error", crate::error::render(&e))],
                ),
            }
        }
        match outcome {
            Ok(summary) => crate::log::info(
                "verified",
                &[
                    ("backup", found.listed.name.clone()),
                    ("id", found.listed.id.clone()),
                    ("result", summary),
                ],
            ),
            Err(e) => {
                crate::log::error(
                    "verification failed",
                    &[
                        ("backup", found.listed.name.clone()),
                        ("id", found.listed.id.clone()),
                        ("error", crate::error::render(&e)),
                    ],
                );
                errors.push(e);
            }
        }
    }
    let failed = errors.len();
    // a corrupt backup (65) outranks other failures (1), which outrank transient ones (69): the
    // exit status names what most needs a person
    let rank = |e: &anyhow::Error| match classify(e) {
        ExitStatus::Corrupt => 0,
        ExitStatus::Unavailable => 2,
        _ => 1,
    };
    let worst = match (0..errors.len()).min_by_key(|&i| rank(&errors[i])) {
        Some(i) => errors.swap_remove(i),
        None => return Ok(ExitStatus::Ok),
    };
    Err(if total > 1 {
        worst.context(format!("{failed} of {total} backups failed verification"))
    } else {
        worst
    })
}

/// Checks one backup; returns a short summary of what was proven.
fn verify_one(
    target: &mut dyn Target,
    found: &Found,
    scratch: Option<&ConnInfo>,
    clients: &crate::restore::Clients,
    stall: std::time::Duration,
) -> Result<String> {
    let backup = &found.listed;
    let expected = crate::restore::expected_digest(backup)?;
    let mut layout = crate::restore::Layout::of(backup)?;
    let show = progress::stderr_is_terminal();
    let sealed_only =
        layout.encryption.is_some() && scratch.is_none() && crate::encrypt::identities().is_none();
    // the recorded counts are compared below, with the restore test's; sealed ones need the identity
    let recorded_rows = if sealed_only {
        None
    } else {
        layout = crate::restore::Layout::of_found(found)?;
        layout.expected_rows.take()
    };
    if sealed_only {
        let _watch = crate::signals::watch_unless_zero(stall);
        let mut reader = Progress::new(
            target.open(&backup.id, Some(expected.size))?,
            Some(expected.size),
            show,
        );
        let checked = crate::restore::check_sealed(&mut reader, &expected);
        reader.clear();
        checked?;
        return Ok(
            "checksums of the encrypted bytes and the age header only: the content was NOT checked (pass --identity to decrypt it)"
                .into(),
        );
    }
    let (checked, restored) = match scratch {
        None => {
            let _watch = crate::signals::watch_unless_zero(stall);
            let mut reader = Progress::new(
                target.open(&backup.id, Some(expected.size))?,
                Some(expected.size),
                show,
            );
            let checked = match clients.checker(layout.format)? {
                Some(client) => {
                    crate::restore::into_client(&mut reader, &expected, layout.clone(), client, "")
                }
                None => crate::restore::check_stream(
                    &mut reader,
                    &expected,
                    layout.clone(),
                    &mut |_| Ok(()),
                ),
            };
            reader.clear();
            (checked?, None)
        }
        Some(server) => {
            let db = scratch_database(
                server,
                backup.prop(crate::storage::props::DATABASE).unwrap_or("db"),
            );
            super::restore::create_database(
                &db,
                crate::dblocale::DbLocale::from_properties(&found.listed.properties).as_ref(),
            )?;
            let restored = (|| -> Result<(crate::restore::Checked, BTreeMap<String, i64>)> {
                let _watch = crate::signals::watch_unless_zero(stall);
                let client = clients.restore_into(layout.format, &db, false)?;
                let mut reader = Progress::new(
                    target.open(&backup.id, Some(expected.size))?,
                    Some(expected.size),
                    show,
                );
                let checked =
                    crate::restore::into_client(&mut reader, &expected, layout.clone(), client, "");
                reader.clear();
                drop(_watch);
                let checked = checked?;
                let mut scratch = super::backup::connect(&db, "the scratch database")?;
                let counts = crate::server::count_rows(&mut scratch, checked.row_counts.keys())?;
                Ok((checked, counts))
            })();
            let dropped = super::restore::drop_database(&db);
            let (checked, counts) = restored?;
            dropped.context("dropping the scratch database")?;
            (checked, Some(counts))
        }
    };
    // earlier builds recorded no counts for archives: an empty manifest of an archive means
    // "not recorded" (an archive of a database without tables has nothing to compare anyway)
    let plain = layout.format == DumpFormat::Plain;
    if let Some(manifest) = recorded_rows.as_ref().filter(|m| plain || !m.is_empty()) {
        if manifest != &checked.row_counts {
            return Err(corrupt(format!(
                "the dump's row counts differ from the manifest recorded at backup time: {}",
                crate::restore::row_count_diff(manifest, &checked.row_counts)
            )));
        }
    }
    let expected_rows = &checked.row_counts;
    let rows: u64 = expected_rows.values().sum();
    let tables = expected_rows.len();
    let Some(counts) = restored else {
        return Ok(if plain {
            format!(
                "checksums, {} stream and dump trailer ({tables} tables, {rows} rows in the dump)",
                layout.codec.label()
            )
        } else {
            format!(
                "checksums, {} stream and the whole archive read by pg_restore ({tables} tables, {rows} rows in the archive)",
                layout.codec.label()
            )
        });
    };
    let mut wrong = Vec::new();
    for (table, want) in expected_rows {
        match counts.get(table) {
            Some(got) if *got as u64 == *want => {}
            Some(got) => wrong.push(format!(
                "{table}: {got} rows restored, {want} in the backup"
            )),
            None => wrong.push(format!("{table}: missing after the restore")),
        }
    }
    if !wrong.is_empty() {
        return Err(anyhow!(
            "the restore test brought back different data: {}",
            wrong.join("; ")
        ));
    }
    Ok(format!(
        "restore test: {tables} tables, {rows} rows, counts equal the backup's"
    ))
}

/// A new database name on the scratch server: `<dbname>_pgdrive_verify_<timestamp>`, within
/// PostgreSQL's 63-byte limit.
fn scratch_database(server: &ConnInfo, source_db: &str) -> ConnInfo {
    let stamp = crate::timeutil::compact_stamp(crate::timeutil::now_millis());
    let suffix = format!("_pgdrive_verify_{stamp}_{}", std::process::id());
    let mut base: String = source_db
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    while base.len() + suffix.len() > 63 {
        base.pop();
    }
    source::with_dbname(server, &format!("{base}{suffix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_names_are_new_and_fit() {
        let server = ConnInfo::parse("postgres://u@h:5432/postgres").unwrap();
        let db = scratch_database(&server, "shop");
        assert!(
            db.dbname().starts_with("shop_pgdrive_verify_"),
            "{}",
            db.dbname()
        );
        let long = scratch_database(&server, &"x".repeat(80));
        assert!(long.dbname().len() <= 63 && long.dbname().contains("_pgdrive_verify_"));
        let odd = scratch_database(&server, "we\"ird; DROP");
        assert!(
            odd.dbname().starts_with("weirdDROP_pgdrive_verify_"),
            "{}",
            odd.dbname()
        );
        assert_eq!(db.get("host"), Some("h"));
    }

    #[test]
    fn manifest_differences_are_named() {
        let want = BTreeMap::from([("a".to_string(), 1u64), ("b".to_string(), 2)]);
        let got = BTreeMap::from([("a".to_string(), 1u64), ("c".to_string(), 3)]);
        assert_eq!(
            crate::restore::row_count_diff(&want, &got),
            "b: recorded 2, found none; c: recorded none, found 3"
        );
    }
}
