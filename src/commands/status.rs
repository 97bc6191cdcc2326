//! `pgdrive status`: the dashboard. Gathers the facts ([`dashboard`]) from the catalog, or from
//! the storage listings when the catalog is unreachable, prints them (text or JSON), optionally
//! writes the Prometheus textfile and the HTML page, and exits 1 when a kind is stale or its last
//! run failed, so that `status` itself can run from cron and alert.
//!
//! `backup` refreshes `PGDRIVE_PROMETHEUS_FILE` after every run, successful or not: as a
//! follow-up step before the notification when it stored something ([`refresh_prometheus`]),
//! at the end otherwise ([`after_backup`]).

use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::cli::StatusArgs;
use std::collections::BTreeMap;

use crate::config::{
    database_from, default_keep, keep_variable, normalize_base_url, BackupConfig, Settings,
    DEFAULT_DRIVE_URL,
};
use crate::dashboard::retention::RetentionView;
use crate::dashboard::{self, Dashboard, KindStatus, Source};
use crate::drive::auth::{Credentials, TokenSource};
use crate::drive::retry::RetryPolicy;
use crate::drive::DriveClient;
use crate::error::{config_error_hint, ExitStatus};
use crate::health::{configured_kinds, Alert, ALERT_SINKS};
use crate::kind::Kind;
use crate::log;
use crate::retention::RuleSpec;

pub fn run(args: &StatusArgs, settings: Settings) -> Result<ExitStatus> {
    for w in &settings.warnings {
        log::warn(w, &[]);
    }
    let max_ages = max_ages(&settings, args.max_age.as_deref())?;
    let kinds = configured_kinds(&settings, args.kind);
    let dash = collect(
        &settings,
        &kinds,
        &max_ages,
        args.history,
        args.target.as_deref(),
    )?;

    // what the catalog holds was scrubbed when written; the registry catches what this process
    // knows to be secret in any encoding, without touching the outputs' syntax
    if args.json {
        println!(
            "{}",
            crate::redact::values(&serde_json::to_string_pretty(&dash)?)
        );
    } else {
        print!(
            "{}",
            dashboard::render_text(&dash, std::io::stdout().is_terminal())
        );
    }
    if let Some(path) = &args.prometheus {
        let page = crate::redact::values(&dashboard::render_prometheus(&dash));
        write_atomically(path, &page, 0o644)?;
    }
    if let Some(path) = &args.html {
        let page = crate::redact::values(&dashboard::render_html(&dash));
        write_atomically(path, &page, 0o644)?;
    }
    if dash.healthy() {
        return Ok(ExitStatus::Ok);
    }
    let alert = Alert {
        database: dash.database.clone(),
        kinds: dash
            .kinds
            .iter()
            .filter(|k| !k.problems.is_empty())
            .map(|k| (k.kind, k.problems.clone()))
            .collect(),
    };
    for sink in ALERT_SINKS {
        if let Err(e) = sink(&settings, &alert) {
            log::error(
                "could not deliver the status alert",
                &[("error", crate::error::render(&e))],
            );
        }
    }
    Ok(ExitStatus::Failed)
}

fn max_ages(settings: &Settings, flag: Option<&str>) -> Result<Vec<(Kind, Option<Duration>)>> {
    let spec = flag
        .map(str::to_string)
        .or_else(|| settings.get("PGDRIVE_MAX_AGE"));
    dashboard::parse_max_age(spec.as_deref())
        .map(Vec::from)
        .map_err(|e| {
            config_error_hint(
                format!("{e:#}"),
                "use --max-age daily=26h,hourly=5h,schema=off (units s, m, h, d; off disables)",
            )
        })
}

fn keep_setting(settings: &Settings, kind: Kind) -> u32 {
    settings
        .get(keep_variable(kind))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default_keep(kind))
}

/// Gathers the dashboard. Only a missing DATABASE_URL (or an unknown `target` name) is an error:
/// everything else that cannot be read becomes a warning in the dashboard. With `target`, the
/// facts come from that target's listing alone, not from the catalog.
pub fn collect(
    settings: &Settings,
    kinds: &[Kind],
    max_ages: &[(Kind, Option<Duration>)],
    history: u32,
    target: Option<&str>,
) -> Result<Dashboard> {
    use crate::storage::config::{DRIVE, LOCAL};
    if let Some(t) = target.filter(|t| ![DRIVE, LOCAL].contains(t)) {
        return Err(config_error_hint(
            format!("no target named {t:?}"),
            "status reads the target `drive` (Google Drive) or `local` (PGDRIVE_LOCAL_DIR)",
        ));
    }
    let database = database_from(settings, "DATABASE_URL")?.ok_or_else(|| {
        config_error_hint(
            "DATABASE_URL is not set",
            "status names the database whose backups it reports: set DATABASE_URL as for backup",
        )
    })?;
    let catalog =
        database_from(settings, "PGDRIVE_CATALOG_URL")?.unwrap_or_else(|| database.clone());
    let dbname = database.dbname().to_string();
    let mut warnings = Vec::new();

    let from_catalog = match target {
        Some(t) => Err(anyhow::anyhow!(
            "--target {t} reads the storage, not the catalog"
        )),
        None => crate::server::connect(&catalog, "the catalog database").and_then(|mut client| {
            let statuses = kinds
                .iter()
                .map(|k| {
                    dashboard::from_catalog(
                        &mut client,
                        *k,
                        &dbname,
                        keep_setting(settings, *k),
                        history,
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            let drill = crate::catalog::last_drill(&mut client)?
                .map(|(at, result)| dashboard::LastDrill::from_catalog(at, result));
            Ok((statuses, drill))
        }),
    };
    let catalog_ok = from_catalog.is_ok();
    let mut last_drill = None;
    let mut statuses = match from_catalog {
        Ok((s, drill)) => {
            last_drill = drill;
            s
        }
        Err(e) => {
            if target.is_none() {
                warnings.push(format!(
                    "the catalog could not be read ({}); showing what the storage holds",
                    crate::error::render(&e)
                ));
            }
            kinds
                .iter()
                .map(|k| from_storage(settings, *k, target, &dbname, history, &mut warnings))
                .collect()
        }
    };
    let now = crate::timeutil::now_millis();
    for s in statuses.iter_mut() {
        let max = max_ages
            .iter()
            .find(|(k, _)| *k == s.kind)
            .and_then(|(_, m)| *m);
        dashboard::judge(s, max, now);
    }

    let quota = match drive_client(settings) {
        Ok(Some(mut client)) => match client.about() {
            Ok(q) => Some(q.into()),
            Err(e) => {
                warnings.push(format!(
                    "the Drive quota could not be read: {}",
                    crate::error::render(&e)
                ));
                None
            }
        },
        Ok(None) => None,
        Err(e) => {
            warnings.push(format!(
                "the Google credentials are unusable: {}",
                crate::error::render(&e)
            ));
            None
        }
    };
    let catalog_client = match (target, catalog_ok) {
        (None, true) => crate::server::connect(&catalog, "the catalog database").ok(),
        _ => None,
    };
    let retention = retention_views(settings, catalog_client, target, now, &mut warnings);
    Ok(Dashboard {
        generated_ms: now,
        database: dbname,
        catalog_ok,
        kinds: statuses,
        quota,
        retention,
        last_drill,
        warnings,
    })
}

/// Per target, job (or built-in kind) and database, what each retention rule holds
/// ([`dashboard::retention`]): counted from the catalog's copy rows when `catalog` is given and
/// can be read (no target is contacted, so an unreachable one changes nothing), else from each
/// target's listing, where a target that cannot be listed is shown as unreachable. The targets
/// and rules are `prune`'s: every job of the config file and every built-in kind that is set
/// up; `only` narrows them to one target, read from its listing.
fn retention_views(
    settings: &Settings,
    mut catalog: Option<postgres::Client>,
    only: Option<&str>,
    now_ms: i64,
    warnings: &mut Vec<String>,
) -> Vec<RetentionView> {
    use crate::storage::props;
    let every = crate::cli::PruneArgs {
        job: None,
        kind: None,
        target: only.map(str::to_string),
        dry_run: true,
        json: false,
        force: false,
    };
    let plans = match crate::commands::prune::run_plans(&every, settings) {
        Ok(p) => p,
        Err(e) => {
            warnings.push(format!(
                "retention: the jobs could not be read: {}",
                crate::error::render(&e)
            ));
            return Vec::new();
        }
    };
    let mut catalog_failed = false;
    let mut views = Vec::new();
    for plan in plans {
        let mut cfg = match BackupConfig::for_run(settings.clone(), &Default::default(), &plan) {
            Ok(c) => c,
            Err(e) => {
                warnings.push(format!("retention: {}", crate::error::render(&e)));
                continue;
            }
        };
        let kind = plan.kind.as_str();
        let job = cfg.job.clone();
        let (default_keep, job_rules) = (cfg.keep, cfg.rules.clone());
        for t in crate::storage::config::for_backup(&mut cfg) {
            if only.is_some_and(|n| n != t.config.name) {
                continue;
            }
            let policy = RuleSpec::resolve(&t.options.rules, &job_rules, default_keep);
            let name = t.config.name.clone();
            let copies = catalog
                .as_mut()
                .map(|client| crate::catalog::stored_copies(client, &name, kind, job.as_deref()));
            match copies {
                Some(Ok(listed)) => {
                    views.extend(dashboard::retention::summarize_all(
                        &name,
                        kind,
                        job.as_deref(),
                        &policy,
                        &listed,
                        dashboard::retention::FROM_CATALOG,
                        now_ms,
                    ));
                    continue;
                }
                Some(Err(e)) if !catalog_failed => {
                    catalog_failed = true;
                    warnings.push(format!(
                        "retention: the catalog's copies could not be read ({}); counting the targets' listings",
                        crate::error::render(&e)
                    ));
                }
                _ => {}
            }
            let mut selector = BTreeMap::from([
                (props::MARKER.to_string(), props::MARKER_VALUE.to_string()),
                (props::KIND.to_string(), kind.to_string()),
            ]);
            if let Some(j) = &job {
                selector.insert(props::JOB.to_string(), j.clone());
            }
            let mut target = crate::storage::open(t.config);
            match target.list(&selector) {
                Ok(listed) => views.extend(dashboard::retention::summarize_all(
                    &name,
                    kind,
                    job.as_deref(),
                    &policy,
                    &listed,
                    dashboard::retention::FROM_TARGET,
                    now_ms,
                )),
                Err(e) => views.push(dashboard::retention::unreachable(
                    &name,
                    kind,
                    job.as_deref(),
                    &policy,
                    crate::error::render(&e),
                )),
            }
        }
    }
    views
}

/// A Drive client from the settings, or `None` without Google credentials.
fn drive_client(settings: &Settings) -> Result<Option<DriveClient>> {
    let Some(credentials) = Credentials::from_settings(settings)? else {
        return Ok(None);
    };
    let base = normalize_base_url(
        &settings
            .get("PGDRIVE_DRIVE_URL")
            .unwrap_or_else(|| DEFAULT_DRIVE_URL.into()),
    )?;
    // The dashboard's Drive reads are informative: a Drive outage must not hold up `status`, or
    // the end of a backup, for the minutes the full retry policy would take.
    let retry = RetryPolicy {
        max_retries: 2,
        ..RetryPolicy::default()
    };
    Ok(Some(DriveClient::new(
        &base,
        TokenSource::new(credentials),
        retry,
    )))
}

/// A kind's facts from the target named `target`, else its Drive folder, else its local directory.
fn from_storage(
    settings: &Settings,
    kind: Kind,
    target: Option<&str>,
    dbname: &str,
    history: u32,
    warnings: &mut Vec<String>,
) -> KindStatus {
    let selector = crate::retention::selector(kind.as_str(), dbname);
    let keep = keep_setting(settings, kind);
    let listed = (|| -> Result<Option<Vec<crate::storage::Listed>>> {
        let Some(config) = crate::storage::config::for_status(settings, kind, target)? else {
            return Ok(None);
        };
        let mut target = crate::storage::open(config);
        target.check_readable()?;
        Ok(Some(target.list(&selector)?))
    })();
    match listed {
        Ok(Some(l)) => dashboard::from_listing(kind, &l, keep, history),
        Ok(None) => {
            warnings.push(format!(
                "{kind}: no storage is configured to list backups from"
            ));
            empty(kind, keep)
        }
        Err(e) => {
            warnings.push(format!(
                "{kind}: the storage could not be listed: {}",
                crate::error::render(&e)
            ));
            empty(kind, keep)
        }
    }
}

fn empty(kind: Kind, keep: u32) -> KindStatus {
    let mut s = dashboard::from_listing(kind, &[], keep, 1);
    s.source = Source::None;
    s.kept = None;
    s
}

/// Writes FILE through a temporary file (unpredictable name, exclusive create, fsync) renamed
/// over it, so readers (node_exporter, a web server) see the old file or the new one, never a
/// partial one, and a symlink planted in the directory is never written through. node_exporter
/// ignores the temporary name (it reads only `*.prom`).
pub fn write_atomically(path: &Path, contents: &str, mode: u32) -> Result<()> {
    crate::fsutil::write_atomically(
        path,
        contents.as_bytes(),
        mode,
        crate::fsutil::Existing::Replace,
    )
}

/// When PGDRIVE_PROMETHEUS_FILE is set, rewrites it with every kind's facts (this run's
/// included); `Ok(None)` when it is not set. A backup that stored something calls this as a
/// follow-up step before its notification (a failure is told there and exits 3).
pub fn refresh_prometheus(settings: &Settings, kind: Kind) -> Result<Option<String>> {
    let Some(path) = settings.get("PGDRIVE_PROMETHEUS_FILE") else {
        return Ok(None);
    };
    let refresh = || -> Result<()> {
        let max_ages = max_ages(settings, None)?;
        let mut kinds = configured_kinds(settings, None);
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
        let dash = collect(settings, &kinds, &max_ages, 30, None)?;
        write_atomically(
            Path::new(&path),
            &dashboard::render_prometheus(&dash),
            0o644,
        )
    };
    refresh().with_context(|| format!("file {path}"))?;
    log::debug("Prometheus file refreshed", &[("file", path.clone())]);
    Ok(Some(path))
}

/// `backup`'s last step for a run that stored nothing (it failed, or another run held the
/// lock): the Prometheus file is refreshed all the same ([`refresh_prometheus`]); a refresh
/// that fails is logged and the run keeps its status.
pub fn after_backup(
    settings: &Settings,
    kind: Kind,
    outcome: Result<ExitStatus>,
) -> Result<ExitStatus> {
    if let Err(e) = refresh_prometheus(settings, kind) {
        log::error(
            "refreshing the Prometheus file failed",
            &[("error", crate::error::render(&e))],
        );
    }
    outcome
}
