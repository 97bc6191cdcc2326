//! `pgdrive check`: the preflight a person runs after setting pgdrive up, and the user's CI runs
//! against their infrastructure. Every check runs (a failure never hides the next one), each
//! prints one line, and the exit status is 1 when any failed, 0 otherwise (warnings allowed).
//!
//! The checks reuse the backup's own pieces (`BackupConfig::new`, `server`, `pgdump::locate`,
//! `lock`, `DriveClient::folder`, the resumable upload), so `check` passing means the same code
//! will pass at 03:00. Nothing is written except a tiny Drive probe file, deleted again at once.

use std::collections::BTreeSet;

use anyhow::Result;

use crate::cli::{BackupOverrides, CheckArgs};
use crate::config::{database_from, BackupConfig, RunPlan, Settings};
use crate::drive::DriveError;
use crate::error::ExitStatus;
use crate::health::{configured_kinds, Finding, Level, CONTRIBUTED_CHECKS};
use crate::kind::Kind;
use crate::pgconn::ConnInfo;
use crate::server::{connect, resolve_tables, server_version};
use crate::storage::config::TargetKind;
use crate::storage::drive::{DriveTarget, ProbeFailure};
use crate::{catalog, lock, pgdump};

/// Prints findings as they are made (a slow Drive call should not hide the database's verdict).
struct Report {
    findings: Vec<Finding>,
}

impl Report {
    fn add(&mut self, f: Finding) {
        println!("{f}");
        self.findings.push(f);
    }

    fn count(&self, level: Level) -> usize {
        self.findings.iter().filter(|f| f.level == level).count()
    }
}

pub fn run(args: &CheckArgs, settings: Settings) -> Result<ExitStatus> {
    let mut report = Report {
        findings: Vec::new(),
    };

    // --- configuration
    let is_config_file_warning = |w: &String| w.starts_with("config file ");
    match &settings.env_file {
        Some(path) if !settings.warnings.iter().any(|w| !is_config_file_warning(w)) => {
            report.add(Finding::ok(
                "env-file",
                format!("{} is readable only by its owner", path.display()),
            ))
        }
        _ => {}
    }
    if let Some(path) = &settings.config_file {
        if !settings.warnings.iter().any(is_config_file_warning) {
            report.add(Finding::ok(
                "config-file",
                format!("{} is read; every key in it is known", path.display()),
            ));
        }
    }
    for w in &settings.warnings {
        let label = if is_config_file_warning(w) {
            "config-file"
        } else {
            "env-file"
        };
        report.add(Finding::warn(label, w.clone(), None));
    }
    let kinds = configured_kinds(&settings, args.kind);
    let mut configs = Vec::new();
    for kind in &kinds {
        match BackupConfig::new(*kind, settings.clone(), &BackupOverrides::default()) {
            Ok(cfg) => {
                let mut targets = Vec::new();
                if let Some(d) = &cfg.drive {
                    targets.push(format!(
                        "Drive folder {} as {}",
                        d.folder_id,
                        d.credentials.describe()
                    ));
                }
                if let Some(l) = &cfg.local_dir {
                    targets.push(format!("local directory {}", l.display()));
                }
                let keep = if cfg.keep == 0 {
                    "all".to_string()
                } else {
                    cfg.keep.to_string()
                };
                report.add(Finding::ok(
                    format!("config {kind}"),
                    format!("complete: {}; keep {keep}", targets.join(" and ")),
                ));
                report.add(encryption_finding(&format!("encrypt {kind}"), &cfg));
                configs.push(cfg);
            }
            Err(e) => report.add(Finding::from_error(format!("config {kind}"), &e)),
        }
    }

    // the config file's jobs: each is judged as a scheduled `backup --job NAME` sees it (its
    // first database stands for the others; their targets are probed below with the kinds')
    let mut job_configs = Vec::new();
    for job in &settings.declared.jobs {
        let database = match &job.databases {
            crate::jobs::Databases::Named(names) => names.first().cloned(),
            _ => None,
        };
        let plan = RunPlan {
            kind: job.kind,
            job: Some(job.clone()),
            database,
        };
        let label = format!("config job {}", job.name);
        match BackupConfig::for_run(settings.clone(), &BackupOverrides::default(), &plan) {
            Ok(cfg) => {
                let mut targets: Vec<String> = cfg.named.iter().map(|t| t.name.clone()).collect();
                targets.extend(cfg.drive.as_ref().map(|_| "drive".to_string()));
                targets.extend(cfg.local_dir.as_ref().map(|_| "local".to_string()));
                let databases = match &job.databases {
                    crate::jobs::Databases::Configured => cfg.database.dbname().to_string(),
                    crate::jobs::Databases::Named(names) => names.join(", "),
                    crate::jobs::Databases::AllConnectable => "every connectable database".into(),
                };
                report.add(Finding::ok(
                    label,
                    format!(
                        "complete: {} backup of {databases} to {}",
                        job.kind,
                        targets.join(", ")
                    ),
                ));
                report.add(encryption_finding(
                    &format!("encrypt job {}", job.name),
                    &cfg,
                ));
                job_configs.push(cfg);
            }
            Err(e) => report.add(Finding::from_error(label, &e)),
        }
    }

    // --- database, catalog, lock, pg_dump, critical tables
    let (database, catalog_info) = match configs.first() {
        Some(c) => (Some(c.database.clone()), Some(c.catalog.clone())),
        None => {
            // The configuration lines already said what is wrong; still try what can be tried.
            let db = database_from(&settings, "DATABASE_URL").ok().flatten();
            let cat = database_from(&settings, "PGDRIVE_CATALOG_URL")
                .ok()
                .flatten()
                .or_else(|| db.clone());
            (db, cat)
        }
    };
    let mut last_sizes = Vec::new();
    if let (Some(database), Some(catalog_info)) = (&database, &catalog_info) {
        check_database(&mut report, database, &configs, &settings);
        last_sizes = check_catalog(&mut report, catalog_info, &kinds, database);
    } else if configs.is_empty() && database.is_none() {
        report.add(Finding::fail(
            "database",
            "DATABASE_URL is not set or invalid, so nothing about the database could be checked",
            None,
        ));
    }

    // --- storage
    let mut seen = BTreeSet::new();
    let mut seen_dirs = BTreeSet::new();
    for cfg in configs.iter_mut().chain(job_configs.iter_mut()) {
        let kind = cfg.kind;
        for target in crate::storage::config::for_backup(cfg)
            .into_iter()
            .map(|t| t.config)
        {
            if let TargetKind::Local { dir } = &target.kind {
                if !seen_dirs.insert(dir.clone()) {
                    continue; // one directory, however many jobs write to it
                }
            }
            if let TargetKind::Sftp(s) = &target.kind {
                if !seen_dirs.insert(s.describe().into()) {
                    continue;
                }
            }
            match &target.kind {
                TargetKind::Drive(d) => {
                    let folder_id = d.folder_id.clone();
                    let mut drive = crate::storage::open_drive(target).expect("a Drive target");
                    check_drive(
                        &mut report,
                        kind,
                        &mut drive,
                        &folder_id,
                        &mut seen,
                        &last_sizes,
                    );
                }
                TargetKind::Local { dir } => {
                    let dir = dir.clone();
                    match crate::storage::open(target).preflight() {
                        Ok(()) => report.add(Finding::ok(
                            format!("local {kind}"),
                            format!("{} can be written", dir.display()),
                        )),
                        Err(e) => report.add(Finding::from_error(format!("local {kind}"), &e)),
                    }
                    check_stale_partials(&mut report, kind, &dir);
                }
                TargetKind::Sftp(_) => check_sftp(&mut report, kind, target),
                TargetKind::Memory(_) => {}
                TargetKind::S3(_) => {
                    let label = format!("{} {kind}", target.name);
                    let crate::storage::config::TargetKind::S3(s3) = target.kind else {
                        unreachable!()
                    };
                    let mut t = crate::storage::s3::S3Target::from_config(target.name, *s3);
                    for finding in t.check(&label) {
                        report.add(finding);
                    }
                }
            }
        }
    }

    // --- checks contributed by other modules (notification channels)
    for contributor in CONTRIBUTED_CHECKS {
        for f in contributor(&settings) {
            report.add(f);
        }
    }

    let failed = report.count(Level::Fail);
    println!(
        "{} ok, {} warnings, {} failed",
        report.count(Level::Ok),
        report.count(Level::Warn),
        failed
    );
    Ok(if failed > 0 {
        ExitStatus::Failed
    } else {
        ExitStatus::Ok
    })
}

/// An SFTP target: connected (host key, key), directory present and writable, free space when
/// the server tells, and partial files interrupted backups left.
fn check_sftp(
    report: &mut Report,
    kind: crate::kind::Kind,
    target: crate::storage::config::TargetConfig,
) {
    use crate::storage::Target;
    let what = format!("{} {kind}", target.name);
    let mut t = crate::storage::open_sftp(target).expect("an SFTP target");
    if let Err(e) = t.preflight() {
        return report.add(Finding::from_error(what, &e));
    }
    match t.report() {
        Ok(crate::storage::sftp::Report { free, stale }) => {
            let free = free.map_or(String::new(), |b| {
                format!(", {} free", crate::units::human_bytes(b))
            });
            report.add(Finding::ok(
                what.clone(),
                format!("{} can be written{free}", t.describe()),
            ));
            if !stale.is_empty() {
                report.add(Finding::warn(
                    what,
                    format!(
                        "{} partial file(s) of interrupted backups ({} bytes): {}",
                        stale.len(),
                        stale.iter().map(|s| s.1).sum::<u64>(),
                        stale
                            .iter()
                            .map(|s| s.0.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    Some(
                        "the next backup to this target removes them (unchanged for an hour)"
                            .into(),
                    ),
                ));
            }
        }
        Err(e) => report.add(Finding::from_error(what, &e)),
    }
}

/// Partial files of interrupted backups in a local directory: reported, never removed here.
/// Whether a job encrypts (its recipients parsed when the config was read), and a warning when
/// it stores unencrypted backups somewhere remote, where whoever gets the folder reads them.
fn encryption_finding(label: &str, cfg: &BackupConfig) -> Finding {
    if let Some(e) = &cfg.encryption {
        return Finding::ok(
            label,
            format!(
                "age to {} (fingerprints {}); restore needs the private key",
                if e.fingerprints == ["scrypt"] {
                    "a passphrase".to_string()
                } else {
                    format!("{} recipient(s)", e.fingerprints.len())
                },
                e.fingerprint_list()
            ),
        );
    }
    let remote = cfg.drive.is_some()
        || cfg
            .named
            .iter()
            .any(|t| !matches!(t.place, crate::config::NamedPlace::Local(_)));
    if remote {
        Finding::warn(
            label,
            "backups are stored unencrypted on a remote target: anyone who gets the folder reads the data",
            Some("set PGDRIVE_ENCRYPT_RECIPIENTS (or the job's encrypt_recipients) to an age public key whose private key is kept offline; README \"Key handling\"".into()),
        )
    } else {
        Finding::ok(label, "not encrypted (local targets only)")
    }
}

fn check_stale_partials(report: &mut Report, kind: crate::kind::Kind, dir: &std::path::Path) {
    match crate::storage::local::stale_partials(dir, false) {
        Ok(stale) if stale.is_empty() => {}
        Ok(stale) => report.add(Finding::warn(
            format!("local {kind}"),
            format!(
                "{} partial file(s) of interrupted backups ({} bytes) in {}: {}",
                stale.len(),
                stale.iter().map(|p| p.size).sum::<u64>(),
                dir.display(),
                stale
                    .iter()
                    .filter_map(|p| p.path.file_name())
                    .map(|n| n.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Some("the next backup into the directory removes them; they are unlocked and unchanged for an hour, so no run is writing them".into()),
        )),
        Err(e) => report.add(Finding::from_error(format!("local {kind}"), &e)),
    }
}

/// The backed-up database: reachable, pg_dump new enough, critical tables present.
fn check_database(
    report: &mut Report,
    database: &ConnInfo,
    configs: &[BackupConfig],
    settings: &Settings,
) {
    let mut client = match connect(database, "the database") {
        Ok(c) => c,
        Err(e) => return report.add(Finding::from_error("database", &e)),
    };
    let (version, major) = match server_version(&mut client) {
        Ok(v) => v,
        Err(e) => return report.add(Finding::from_error("database", &e)),
    };
    report.add(Finding::ok(
        "database",
        format!(
            "connected to {} (PostgreSQL {version})",
            database.redacted()
        ),
    ));
    // what `backup --job` stores of the server's globals (see crate::dr::globals)
    match crate::dr::globals::is_superuser(&mut client) {
        Ok(true) => report.add(Finding::ok(
            "globals",
            "a superuser: the globals of a job's backup set include the role passwords",
        )),
        Ok(false) => report.add(Finding::warn(
            "globals",
            crate::dr::globals::LEFT_OUT.to_string(),
            Some("back up as a superuser to keep role passwords, or keep them elsewhere".into()),
        )),
        Err(e) => report.add(Finding::from_error("globals", &e)),
    }

    let explicit = configs
        .iter()
        .find_map(|c| c.pg_dump.clone())
        .or_else(|| settings.get("PGDRIVE_PG_DUMP").map(Into::into));
    match pgdump::locate(explicit.as_deref(), major) {
        Ok(d) => {
            // An older pg_dump first on PATH is skipped by the backup, but a person running
            // pg_dump by hand (or a restore script) would get it: worth a warning.
            let first_on_path = std::env::var_os("PATH").and_then(|p| {
                std::env::split_paths(&p)
                    .map(|dir| dir.join("pg_dump"))
                    .find(|p| p.is_file())
            });
            if let Some(shadow) = first_on_path.filter(|p| explicit.is_none() && *p != d.path) {
                if let Err(e) = pgdump::locate(Some(&shadow), major) {
                    report.add(Finding::warn(
                        "pg_dump",
                        format!("{} (pgdrive skips it)", crate::error::render(&e)),
                        crate::error::hint(&e),
                    ));
                }
            }
            report.add(Finding::ok(
                "pg_dump",
                format!(
                    "{} is version {} (server major {major})",
                    d.path.display(),
                    d.version
                ),
            ))
        }
        Err(e) => report.add(Finding::from_error("pg_dump", &e)),
    }

    if let Some(hourly) = configs.iter().find(|c| c.kind == Kind::Hourly) {
        // One table at a time, so every missing table is named, not only the first.
        let missing: Vec<Finding> = hourly
            .critical_tables
            .iter()
            .filter_map(|t| {
                resolve_tables(&mut client, std::slice::from_ref(t))
                    .err()
                    .map(|e| Finding::from_error("critical tables", &e))
            })
            .collect();
        if missing.is_empty() {
            report.add(Finding::ok(
                "critical tables",
                format!(
                    "all {} exist ({})",
                    hourly.critical_tables.len(),
                    hourly.critical_tables.join(", ")
                ),
            ));
        }
        for f in missing {
            report.add(f);
        }
    }
}

/// The catalog database: the table migrated (or creatable), the lock of each kind taken and
/// released on a direct connection. Returns the last successful size per kind, for the quota.
fn check_catalog(
    report: &mut Report,
    info: &ConnInfo,
    kinds: &[Kind],
    database_info: &ConnInfo,
) -> Vec<(Kind, u64)> {
    let database = database_info.dbname();
    let mut client = match connect(info, "the catalog database") {
        Ok(c) => c,
        Err(e) => {
            report.add(Finding::from_error("catalog", &e));
            return Vec::new();
        }
    };
    match catalog_state(&mut client) {
        Ok(f) => report.add(f),
        Err(e) => report.add(Finding::from_error("catalog", &e)),
    }
    // the backed-up database's identity decides the lock key, as in `backup`
    let mut separate = None;
    if info.redacted() != database_info.redacted() {
        match connect(database_info, "the database") {
            Ok(c) => separate = Some(c),
            Err(e) => {
                report.add(Finding::from_error("lock", &e));
                return Vec::new();
            }
        }
    }
    let mut direct_reported = false;
    for kind in kinds {
        let job_lock = match lock::JobLock::resolve(*kind, &mut client, separate.as_mut()) {
            Ok(l) => l,
            Err(e) => {
                report.add(Finding::from_error(format!("lock {kind}"), &e));
                continue;
            }
        };
        let name = &job_lock.name;
        let outcome =
            connect(info, "the catalog database").and_then(|c| lock::try_lock(c, &job_lock));
        match outcome {
            Ok(Ok(guard)) => {
                if !direct_reported {
                    direct_reported = true;
                    report.add(Finding::ok("connection", "direct: the session kept its backend and its lock across statements (no transaction pooler)"));
                }
                match guard.release() {
                    Ok(()) => report.add(Finding::ok(
                        format!("lock {kind}"),
                        format!("{name} taken and released"),
                    )),
                    Err(e) => report.add(Finding::from_error(format!("lock {kind}"), &e)),
                }
            }
            Ok(Err(_)) => report.add(Finding::warn(
                format!("lock {kind}"),
                format!("{name} is held by another session right now (a {kind} backup running?)"),
                Some("run the check again when no backup is running".into()),
            )),
            Err(e) if lock::is_pooler_error(&e) => {
                report.add(Finding::from_error("connection", &e))
            }
            Err(e) => report.add(Finding::from_error(format!("lock {kind}"), &e)),
        }
    }
    kinds
        .iter()
        .filter_map(|k| {
            catalog::last_success_size(&mut client, *k, database)
                .ok()
                .flatten()
                .map(|s| (*k, s))
        })
        .collect()
}

/// The catalog table: migrated, or creatable by the first backup.
fn catalog_state(client: &mut postgres::Client) -> Result<Finding> {
    let pending = catalog::pending_migrations(client)?;
    if pending.is_empty() {
        return Ok(Finding::ok(
            "catalog",
            format!(
                "backups table present and migrated ({} migrations)",
                catalog::MIGRATIONS.len()
            ),
        ));
    }
    // The same refusal the backup's migration would give.
    catalog::refuse_foreign_backups_table(client)?;
    if crate::server::in_recovery(client)? {
        return Ok(Finding::fail(
            "catalog",
            format!(
                "the backups table needs migrations {} but this server is a read-only standby",
                pending.join(", ")
            ),
            Some("keep the catalog and the lock on the primary with PGDRIVE_CATALOG_URL".into()),
        ));
    }
    let rights = catalog::migration_rights(client)?;
    if rights.can_create && rights.owns_table != Some(false) {
        Ok(Finding::ok(
            "catalog",
            format!(
                "not migrated yet ({} pending); the first backup (or `pgdrive migrate`) will do it",
                pending.join(", ")
            ),
        ))
    } else {
        Ok(Finding::fail(
            "catalog",
            format!("the backups table needs migrations {} and this user cannot apply them", pending.join(", ")),
            Some("run `pgdrive migrate` once as the database owner, or GRANT CREATE ON SCHEMA public to the backup user".into()),
        ))
    }
}

/// One kind's Drive folder: token, folder, write and prune rights, and (once per account) quota.
fn check_drive(
    report: &mut Report,
    kind: Kind,
    target: &mut DriveTarget,
    folder_id: &str,
    seen: &mut BTreeSet<String>,
    last_sizes: &[(Kind, u64)],
) {
    let who = target.client().credentials().describe();
    let subject = format!("drive {kind}");
    if seen.contains(&format!("no token {who}")) {
        return; // already reported for an earlier kind; the folder cannot be checked without one
    }
    if let Err(e) = target.client().token() {
        seen.insert(format!("no token {who}"));
        return report.add(Finding::from_error(
            format!("google credentials ({who})"),
            &e,
        ));
    }
    if seen.insert(format!("token {who}")) {
        report.add(Finding::ok(
            "google credentials",
            format!("a token was obtained for {who}"),
        ));
    }
    let folder = match target.folder_info() {
        Ok(f) => f,
        Err(e) => return report.add(Finding::from_error(subject, &e)),
    };
    let place = match &folder.drive_id {
        Some(d) => format!("folder {:?} ({folder_id}) in shared drive {d}", folder.name),
        None => format!("folder {:?} ({folder_id}) in a My Drive", folder.name),
    };
    report.add(Finding::ok(
        subject.clone(),
        format!("{place} exists and is a folder"),
    ));
    // pruning, `list`, `restore latest`, `verify` and `status` all list the folder
    let probes = std::collections::BTreeMap::from([(
        crate::storage::drive::PROBE_PROPERTY.to_string(),
        "1".to_string(),
    )]);
    match crate::storage::Target::list(target, &probes) {
        Ok(_) => report.add(Finding::ok(subject.clone(), "its files can be listed")),
        Err(e) => report.add(Finding::from_error(format!("{subject} list"), &e)),
    }
    let plain_sa = target.client().credentials().is_plain_service_account();

    if folder.drive_id.is_some() && folder.can_delete_children == Some(false) {
        // Drive already says a delete would be refused: do not leave a probe file behind.
        if folder.can_add_children == Some(false) {
            report.add(Finding::fail(
                subject.clone(),
                format!("{who} cannot add files to the folder"),
                Some(MANAGER_HINT.into()),
            ));
        } else {
            report.add(Finding::ok(
                subject.clone(),
                "files can be added (by Drive's capabilities)",
            ));
        }
        report.add(Finding::fail(
            subject,
            format!("{who} cannot delete permanently in this shared drive, so pruning old backups will fail"),
            Some(MANAGER_HINT.into()),
        ));
    } else {
        match target.probe() {
            Ok(_) => {
                report.add(Finding::ok(
                    subject.clone(),
                    "can write and prune: a probe file was uploaded and permanently deleted",
                ));
                if plain_sa && folder.drive_id.is_none() {
                    report.add(Finding::warn(
                        subject,
                        "a service account writes into a My Drive: this works only for accounts that still own storage (created before April 2025)",
                        Some("move the folder into a shared drive (service account as Manager), or set GOOGLE_IMPERSONATE_USER".into()),
                    ));
                }
            }
            Err(ProbeFailure::Write(e)) => {
                let sa_quota = e.chain().any(|c| {
                    c.downcast_ref::<DriveError>()
                        .is_some_and(DriveError::is_service_account_quota)
                });
                if sa_quota {
                    report.add(Finding::fail(
                        subject,
                        format!("{who} cannot write outside a shared drive without impersonation (service accounts own no storage)"),
                        crate::error::hint(&e),
                    ));
                } else {
                    report.add(Finding::from_error(format!("{subject} write"), &e));
                }
            }
            Err(ProbeFailure::Delete(id, e)) => {
                let mut f = Finding::from_error(format!("{subject} prune"), &e);
                f.detail = format!("the probe file was uploaded but cannot be deleted permanently, so pruning will fail ({}); delete the probe {id} by hand", f.detail);
                f.hint = f.hint.or(Some(MANAGER_HINT.into()));
                report.add(f);
            }
        }
    }

    if !seen.insert(format!("quota {who}")) {
        return;
    }
    let estimate = last_sizes.iter().map(|(_, s)| *s).max();
    match target.client().about() {
        Err(e) => report.add(Finding::from_error("drive quota", &e)),
        Ok(q) => report.add(quota_finding(&q, estimate, folder.drive_id.is_some())),
    }
}

const MANAGER_HINT: &str = "in a shared drive, make the account a Manager (Content managers can only trash, Contributors cannot delete); in a My Drive, the account must own the files it uploads";

/// Whether the account's storage has room for the next backup, estimated from the last one.
pub fn quota_finding(
    q: &crate::drive::StorageQuota,
    estimate: Option<u64>,
    shared_drive: bool,
) -> Finding {
    use crate::units::human_bytes;
    let used = human_bytes(q.usage);
    if shared_drive {
        return Finding::ok("drive quota", format!("the folder is in a shared drive, which uses the organization's pooled storage (this account's own: {used} used)"));
    }
    let (Some(limit), Some(free)) = (q.limit, q.free()) else {
        return Finding::ok("drive quota", format!("{used} used, no limit"));
    };
    let figures = format!(
        "{} free of {} ({} in Trash)",
        human_bytes(free),
        human_bytes(limit),
        human_bytes(q.usage_in_drive_trash)
    );
    match estimate {
        None => Finding::ok("drive quota", format!("{figures}; no earlier backup to estimate the next one from")),
        Some(next) if free < next => Finding::fail(
            "drive quota",
            format!("{figures}, but the next backup needs about {}", human_bytes(next)),
            Some("free space (files in Trash still count: empty it), lower the keep counts, or buy storage".into()),
        ),
        Some(next) if free < next.saturating_mul(3) => Finding::warn(
            "drive quota",
            format!("{figures}: room for fewer than three more backups of about {}", human_bytes(next)),
            Some("free space or lower the keep counts before the Drive fills up".into()),
        ),
        Some(next) => Finding::ok("drive quota", format!("{figures}; the next backup needs about {}", human_bytes(next))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drive::StorageQuota;

    #[test]
    fn quota_verdicts() {
        let q = |limit: Option<u64>, usage| StorageQuota {
            limit,
            usage,
            usage_in_drive_trash: 0,
        };
        assert_eq!(
            quota_finding(&q(Some(1000), 900), Some(200), false).level,
            Level::Fail
        );
        assert_eq!(
            quota_finding(&q(Some(1000), 500), Some(200), false).level,
            Level::Warn
        );
        assert_eq!(
            quota_finding(&q(Some(10_000), 500), Some(200), false).level,
            Level::Ok
        );
        assert_eq!(
            quota_finding(&q(None, 500), Some(200), false).level,
            Level::Ok
        );
        assert_eq!(
            quota_finding(&q(Some(1000), 900), None, false).level,
            Level::Ok
        );
        assert_eq!(
            quota_finding(&q(Some(1000), 999), Some(200), true).level,
            Level::Ok
        );
    }
}
