//! `pgdrive catalog rebuild`: recreates the `backups` rows missing for the backups in storage,
//! from what each backup records about itself (its manifest, else its properties), so that a
//! dropped catalog or a fresh host gets its history back. Never duplicates a row: a backup is
//! matched by SHA-256, Drive file id or local file name, and a second copy of one backup on
//! another target only fills in that row's location.

use anyhow::{Context, Result};

use super::source;
use crate::catalog::{self, Known, RunRecord};
use crate::cli::RebuildArgs;
use crate::config::Settings;
use crate::error::{config_error_hint, ExitStatus};
use crate::storage::{props, Backend, Found, Target};

pub fn run(args: &RebuildArgs, settings: Settings) -> Result<ExitStatus> {
    let cfg = source::load(&args.source, settings)?;
    let info = cfg.catalog.as_ref().ok_or_else(|| {
        config_error_hint(
            "no catalog database is configured",
            "set DATABASE_URL (or PGDRIVE_CATALOG_URL)",
        )
    })?;
    let mut client = crate::server::connect(info, "the catalog database")?;
    if catalog::recreate_if_dropped(&mut client)? {
        crate::log::info("the backups table was missing; created it", &[]);
    } else {
        catalog::migrate(&mut client)?;
    }
    let (mut added, mut filled, mut known) = (0usize, 0usize, 0usize);
    for name in source::candidates(&cfg, args.source.target.as_deref())? {
        for mut target in source::open_readable(&cfg, &name, args.kind)? {
            let what = target.describe();
            let backups = source::complete_backups(
                target.as_mut(),
                args.kind,
                args.source.database.as_deref(),
            )
            .with_context(|| format!("listing {what}"))?;
            for listed in backups {
                let found = target
                    .get(&listed.id)
                    .with_context(|| format!("reading backup {} in {what}", listed.name))?;
                match rebuild_one(&mut client, target.as_ref(), &found)? {
                    Outcome::Added => added += 1,
                    Outcome::Filled => filled += 1,
                    Outcome::Known => known += 1,
                }
            }
        }
    }
    crate::log::info(
        "catalog rebuilt",
        &[
            ("added", added.to_string()),
            ("locations_filled", filled.to_string()),
            ("already_recorded", known.to_string()),
        ],
    );
    println!(
        "added {added} row{} to the catalog ({} backup{} already recorded)",
        if added == 1 { "" } else { "s" },
        known + filled,
        if known + filled == 1 { "" } else { "s" },
    );
    Ok(ExitStatus::Ok)
}

#[derive(PartialEq, Eq)]
enum Outcome {
    Added,
    Filled,
    Known,
}

fn rebuild_one(
    client: &mut postgres::Client,
    target: &dyn Target,
    found: &Found,
) -> Result<Outcome> {
    let outcome = record_one(client, target, found)?;
    // a pin lives in the backup's manifest; the catalog's mirror of it comes back with the row
    if outcome != Outcome::Known && crate::retention::is_pinned(&found.listed) {
        catalog::record_pin(client, target.name(), &found.listed.id, true)?;
    }
    Ok(outcome)
}

fn record_one(
    client: &mut postgres::Client,
    target: &dyn Target,
    found: &Found,
) -> Result<Outcome> {
    let l = &found.listed;
    let digest = l
        .recorded_digest()
        .context("a listed backup has no recorded checksums")?;
    let location = target.location(&l.id);
    let (drive_file_id, local_path, local_name) = match target.backend() {
        Backend::Drive => (Some(l.id.clone()), None, None),
        _ => (None, Some(location), Some(l.name.clone())),
    };
    match catalog::known(
        client,
        &digest.sha256,
        drive_file_id.as_deref(),
        local_name.as_deref(),
    )? {
        Known::Recorded { fill: false, .. } => Ok(Outcome::Known),
        Known::Recorded { id, fill: true } => {
            catalog::fill_location(client, id, drive_file_id.as_deref(), local_path.as_deref())?;
            Ok(Outcome::Filled)
        }
        Known::Missing => {
            let prop = |k: &str| l.prop(k).map(str::to_string);
            let finished_ms = found
                .manifest
                .as_ref()
                .and_then(|m| m.created_ms)
                .or(l.created_ms)
                .unwrap_or_else(crate::timeutil::now_millis);
            let record = RunRecord {
                started_ms: prop(props::STARTED_AT)
                    .as_deref()
                    .and_then(crate::timeutil::parse_rfc3339)
                    .unwrap_or(finished_ms),
                finished_ms,
                kind: prop(props::KIND).unwrap_or_default(),
                success: true,
                filename: Some(l.name.clone()),
                size_bytes: Some(digest.size as i64),
                raw_size_bytes: prop(props::RAW_SIZE).and_then(|s| s.parse().ok()),
                drive_file_id,
                local_path,
                database_name: prop(props::DATABASE).unwrap_or_default(),
                sha256: Some(digest.sha256),
                md5: Some(digest.md5),
                compression: prop(props::COMPRESSION),
                host: prop(props::HOST).unwrap_or_default(),
                pg_dump_version: prop(props::PG_DUMP_VERSION),
                server_version: prop(props::SERVER_VERSION),
                row_counts: found
                    .row_counts
                    .as_ref()
                    .map(|c| serde_json::to_string(c).unwrap_or_default()),
                job: prop(props::JOB),
                copies: vec![catalog::CopyRecord {
                    target: target.name().to_string(),
                    backend: target.backend().as_str().to_string(),
                    stored: true,
                    object_id: Some(l.id.clone()),
                    location: Some(target.location(&l.id)),
                    error: None,
                }],
                ..RunRecord::default()
            };
            catalog::record(client, &record)?;
            Ok(Outcome::Added)
        }
    }
}
