//! `pgdrive backup`: the orchestration of one run, in a fixed order so that a failure in one step
//! can neither hide another nor turn a failed backup into a success:
//!
//! configuration → connect → advisory lock (or exit 75) → catalog migration → preflight (pg_dump
//! version, critical tables, Drive credentials and folder, each target's chunk size) → open the
//! upload sessions → pg_dump → gzip → checksums → chunks to every target at once (`fanout`) →
//! finish only after pg_dump exited 0 → verify size and MD5 → catalog row with each target's copy
//! → prune (only where the backup was stored) → release the lock → Prometheus file → notify.
//!
//! A target that fails is dropped and the others go on: stored on some targets but not all is a
//! SUCCESS row with FAILED copies, told in the notification, exit 4. Every target failing fails
//! the run, as does a failed dump (nothing is stored anywhere).
//!
//! Notifications (`notify`) never change the outcome: a stored backup whose notification failed
//! exits 3, a failed backup stays a failure. The heartbeat's start ping is sent once the lock is
//! held: a run skipped because another holds the lock did not start anything.
//!
//! No protocol code lives here; see `pipeline`, `pgdump`, `storage`, `drive`, `catalog`, `retention`.

use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::catalog::{self, RunRecord};
use crate::cli::BackupArgs;
use crate::config::{BackupConfig, RunPlan, Settings};
use crate::error::ExitStatus;
use crate::host::host_name;
use crate::jobs::{Databases, JobSpec};
use crate::kind::Kind;
use crate::lock;
use crate::log;
use crate::notify::{self, Report, Status};
use crate::pgdump::{self, PgDump, RunningDump};
use crate::pipeline::{spawn_compressor, Piece, StreamOptions};
use crate::retention;
// shared with `check`, `status` and `migrate`: one implementation of each
use crate::fanout;
pub use crate::server::{connect, connect_as};
use crate::server::{resolve_tables, server_version};
use crate::storage::config::TargetOptions;
use crate::storage::{props, Backend, Completion, StoredObject, Target};
use crate::timeutil;
use crate::units::human_bytes;

/// Facts gathered during the run, for the catalog row, the properties and the logs.
struct RunFacts {
    started_ms: i64,
    host: String,
    database: String,
    server_version: Option<String>,
    pg_dump: Option<PgDump>,
    file_name: Option<String>,
    /// Recorded with the backup so that `restore --create` recreates the database as it was.
    locale: Option<crate::dblocale::DbLocale>,
    /// Owner, settings, privileges, comment: recorded in the manifest for `restore --create`.
    db_properties: Option<crate::dr::dbprops::DbProperties>,
    /// The job run's backup set (its globals), see `crate::dr`.
    set: Option<super::backup_globals::SetRef>,
}

/// A failure, with the step it happened in, and what became of each target when that is known.
struct StepError {
    step: &'static str,
    error: anyhow::Error,
    /// A FAILED copy for each target the stream was sent to (empty before the stream).
    copies: Vec<catalog::CopyRecord>,
}

trait AtStep<T> {
    fn at(self, step: &'static str) -> std::result::Result<T, StepError>;
}

impl<T> AtStep<T> for Result<T> {
    fn at(self, step: &'static str) -> std::result::Result<T, StepError> {
        self.map_err(|error| StepError {
            step,
            error,
            copies: Vec::new(),
        })
    }
}

pub fn run(args: &BackupArgs, settings: Settings) -> Result<ExitStatus> {
    let plans = plan_runs(args, &settings)?;
    // a job that dumps whole databases dumps the server's globals first and stores them after
    // its databases (see backup_globals), as one set with them
    let (set, pending, globals_status) = match plans.first() {
        Some(RunPlan {
            job: Some(_), kind, ..
        }) if *kind != Kind::Hourly => {
            let (set, pending, status) = super::backup_globals::run(args, &settings, &plans);
            (Some(set), pending, status)
        }
        _ => (None, None, ExitStatus::Ok),
    };
    let finish_globals = |statuses: &[ExitStatus]| match pending {
        Some(p) => super::backup_globals::finish(args, &settings, &plans, p, statuses),
        None => globals_status,
    };
    if let [plan] = plans.as_slice() {
        return match run_one(args, settings.clone(), plan, set.as_ref()) {
            Ok(status) => Ok(ExitStatus::worst(&[status, finish_globals(&[status])])),
            Err(e) => {
                finish_globals(&[ExitStatus::Failed]);
                Err(e)
            }
        };
    }
    // several databases: each is its own run (lock, row, file, notification); one failing does
    // not keep the others from being backed up, and the exit status is the worst of them
    let mut statuses = Vec::new();
    for plan in &plans {
        statuses.push(match run_one(args, settings.clone(), plan, set.as_ref()) {
            Ok(status) => status,
            Err(e) => crate::error::print(&e),
        });
    }
    let globals_status = finish_globals(&statuses);
    statuses.push(globals_status);
    let worst = ExitStatus::worst(&statuses);
    log::info(
        "job finished",
        &[
            ("job", args.job.clone().unwrap_or_default()),
            ("databases", plans.len().to_string()),
            (
                "failed",
                statuses
                    .iter()
                    .filter(|s| s.is_failure())
                    .count()
                    .to_string(),
            ),
            ("exit_status", worst.code().to_string()),
        ],
    );
    Ok(worst)
}

fn run_one(
    args: &BackupArgs,
    settings: Settings,
    plan: &RunPlan,
    set: Option<&super::backup_globals::SetRef>,
) -> Result<ExitStatus> {
    // PGDRIVE_PROMETHEUS_FILE is refreshed after every run, whatever its outcome (see `status`):
    // by a run that stored something as a follow-up step before its notification, here otherwise
    let metrics = settings.clone();
    match run_backup(args, settings, plan, &metrics, set) {
        Ok(status) if stored_something(status) => Ok(status),
        outcome => super::status::after_backup(&metrics, plan.kind, outcome),
    }
}

/// The statuses of a run that stored the backup on at least one target.
fn stored_something(status: ExitStatus) -> bool {
    matches!(
        status,
        ExitStatus::Ok | ExitStatus::FollowUpFailed | ExitStatus::PartiallyStored
    )
}

/// The runs `backup` makes: one for `--kind`; one per database for `--job` (the job's list, or
/// every connectable non-template database of the server).
fn plan_runs(args: &BackupArgs, settings: &Settings) -> Result<Vec<RunPlan>> {
    let Some(name) = &args.job else {
        let kind = args.kind.ok_or_else(|| {
            crate::error::config_error_hint(
                "no backup job was named",
                "pass --kind daily|hourly|schema, or --job NAME for a [jobs.NAME] of the config file",
            )
        })?;
        return Ok(vec![RunPlan {
            kind,
            job: None,
            database: None,
        }]);
    };
    let declared = &settings.declared;
    let job = declared.job(name).cloned().ok_or_else(|| {
        let known: Vec<&str> = declared.jobs.iter().map(|j| j.name.as_str()).collect();
        crate::error::config_error_hint(
            match &settings.config_file {
                Some(file) => format!("no job named {name:?} is declared in {}", file.display()),
                None => format!("no job named {name:?}: no config file was read"),
            },
            if known.is_empty() {
                "declare it as [jobs.NAME] in the config file (--config, PGDRIVE_CONFIG; see pgdrive.toml.example)".to_string()
            } else {
                format!("the declared jobs are: {}", known.join(", "))
            },
        )
    })?;
    let databases = match &job.databases {
        Databases::Configured => vec![None],
        Databases::Named(names) => names.iter().cloned().map(Some).collect(),
        Databases::AllConnectable => all_databases(settings, &job, args)?
            .into_iter()
            .map(Some)
            .collect(),
    };
    Ok(databases
        .into_iter()
        .map(|database| RunPlan {
            kind: job.kind,
            job: Some(job.clone()),
            database,
        })
        .collect())
}

/// Every database of DATABASE_URL's server that accepts connections, templates excepted; a
/// failure to ask is reported like any failed run.
fn all_databases(settings: &Settings, job: &JobSpec, args: &BackupArgs) -> Result<Vec<String>> {
    let listed = crate::config::required_database(settings).and_then(|server| {
        let mut client = connect(&server, "the database server")?;
        crate::server::connectable_databases(&mut client)
    });
    listed.map_err(|error| {
        if let Ok(notifier) = notify::load(settings, job.kind, args.notify) {
            notifier.run_finished(&Report::failure(
                job.kind,
                "",
                &host_name(),
                timeutil::now_millis(),
                "connect",
                &error,
            ));
        }
        error.context(format!("listing the databases of job {}", job.name))
    })
}

fn run_backup(
    args: &BackupArgs,
    settings: Settings,
    plan: &RunPlan,
    metrics: &Settings,
    set: Option<&super::backup_globals::SetRef>,
) -> Result<ExitStatus> {
    let started = Instant::now();
    let mut notifier = notify::load(&settings, plan.kind, args.notify)?;
    notifier.job = plan.job.as_ref().map(|j| j.name.clone());
    // A setting that breaks a scheduled run (a malformed key, a bad URL) is reported like any
    // other failure of the job: someone must hear of it before the backups are missed.
    let database_name = plan.database.clone().unwrap_or_else(|| {
        crate::config::database_from(&settings, "DATABASE_URL")
            .ok()
            .flatten()
            .map(|d| d.dbname().to_string())
            .unwrap_or_default()
    });
    let mut cfg = BackupConfig::for_run(settings, &args.overrides, plan).inspect_err(|error| {
        notifier.run_finished(&Report::failure(
            plan.kind,
            &database_name,
            &host_name(),
            timeutil::now_millis(),
            "config",
            error,
        ));
    })?;
    for w in &cfg.settings_warnings {
        log::warn(w, &[]);
    }
    log::info("backup starting", &cfg.summary());

    let mut facts = RunFacts {
        started_ms: timeutil::now_millis(),
        host: host_name(),
        database: cfg.database.dbname().to_string(),
        server_version: None,
        pg_dump: None,
        file_name: None,
        locale: None,
        db_properties: None,
        set: set.cloned(),
    };

    // every failure from here on is reported (the notification's own failures are only logged)
    let (kind, database, host, started_ms) = (
        cfg.kind,
        facts.database.clone(),
        facts.host.clone(),
        facts.started_ms,
    );
    let failed = |step: &str, error: anyhow::Error| {
        notifier.run_finished(&Report::failure(
            kind, &database, &host, started_ms, step, &error,
        ));
        error
    };
    let application_name = lock::holder_application_name(cfg.kind, &facts.host);
    let mut control = connect_as(&cfg.catalog, "the catalog database", &application_name)
        .map_err(|e| failed("connect", e))?;
    // The backed-up database, when the catalog lives elsewhere. Its failure is recorded in the
    // catalog, which is reachable (no lock is needed to insert one row).
    let mut separate = None;
    if cfg.catalog.redacted() != cfg.database.redacted() {
        match connect(&cfg.database, "the database") {
            Ok(client) => separate = Some(client),
            Err(e) => {
                let mut record = run_record(&cfg, &facts);
                record.finished_ms = timeutil::now_millis();
                record_failure(&mut control, record, "connect", &e, true);
                return Err(failed("connect", e));
            }
        }
    }
    let job_lock = lock::JobLock::resolve(cfg.kind, &mut control, separate.as_mut())
        .map(|l| l.scoped(cfg.job.as_deref()))
        .map_err(|e| failed("lock", e))?;
    let mut guard = match lock::try_lock(control, &job_lock).map_err(|e| failed("lock", e))? {
        Ok(guard) => guard,
        Err(mut control) => {
            let holder = lock::describe_holder(&mut control, &job_lock)
                .unwrap_or_else(|e| format!("unknown ({})", crate::error::render(&e)));
            log::warn(
                "skipped: another run holds the lock of this job (kind and database); nothing was backed up",
                &[
                    ("kind", cfg.kind.to_string()),
                    ("database", facts.database.clone()),
                    ("lock", job_lock.name.clone()),
                    ("key", job_lock.key.to_string()),
                    ("holder", holder),
                ],
            );
            return Ok(ExitStatus::Locked);
        }
    };
    // the final line reports the backup's own duration: time spent notifying is left out
    let start_notified = Instant::now();
    notifier.run_started();
    let notifying = start_notified.elapsed();
    let applied = catalog::migrate(guard.client()).map_err(|e| failed("catalog", e))?;
    if !applied.is_empty() {
        log::info("catalog migrated", &[("applied", applied.join(","))]);
    }

    let mut targets = build_targets(&mut cfg);
    let outcome = back_up(&cfg, &mut guard, separate, &mut targets, &mut facts);
    let mut record = run_record(&cfg, &facts);
    record.finished_ms = timeutil::now_millis();

    let Streamed {
        stored,
        failed: failed_targets,
        done,
        raw_bytes,
        row_counts,
    } = match outcome {
        Ok(streamed) => streamed,
        Err(StepError {
            step,
            error,
            copies,
        }) => {
            record.copies = copies;
            record_failure(guard.client(), record, step, &error, false);
            log::error(
                "backup failed",
                &[
                    ("step", step.to_string()),
                    (
                        "duration_s",
                        format!(
                            "{:.1}",
                            started.elapsed().saturating_sub(notifying).as_secs_f64()
                        ),
                    ),
                ],
            );
            drop(guard);
            return Err(failed(step, error));
        }
    };

    // The backup is stored and verified on at least one target: from here on, failures are
    // follow-up failures (exit 3); a target that did not store it makes the run partial (exit 4).
    let mut follow_ups = FollowUps::default();
    for s in &stored {
        if let Some(e) = &s.metadata_failure {
            follow_ups.failed(
                &format!(
                    "the backup is stored and verified at {}, but recording its metadata failed (it is kept)",
                    s.location
                ),
                e,
            );
        }
    }
    let not_stored: Vec<String> = failed_targets
        .iter()
        .map(|f| {
            format!(
                "the backup was not stored on target {} ({}): {}",
                f.target.name,
                f.target.describe,
                crate::error::render(&f.error)
            )
        })
        .collect();
    record.success = true;
    let digest = &done.digest;
    record.row_counts = Some(serde_json::to_string(&row_counts).unwrap_or_default());
    record.size_bytes = Some(digest.size as i64);
    record.raw_size_bytes = Some(raw_bytes as i64);
    record.sha256 = Some(digest.sha256.clone());
    record.md5 = Some(digest.md5.clone());
    record.drive_file_id = stored
        .iter()
        .find(|s| s.backend == Backend::Drive)
        .map(|s| s.id.clone());
    record.local_path = stored
        .iter()
        .find(|s| s.backend == Backend::Local)
        .map(|s| s.location.clone());
    record.copies = copies_in_target_order(&targets, &stored, &failed_targets);
    if let Err(e) = guard
        .verify_held()
        .and_then(|_| catalog::record(guard.client(), &record))
    {
        follow_ups.failed(
            "the backup is stored, but recording it in the catalog failed",
            &e,
        );
    }

    // prune only where this backup is stored: elsewhere the older backups are still needed
    let mut kept = None;
    for t in targets.iter_mut() {
        let policy = t.policy(&cfg);
        let Some(new) = stored.iter().find(|s| s.target == t.target.name()) else {
            continue;
        };
        if policy.keeps_all() {
            continue;
        }
        let target = t.target.as_mut();
        let group = retention::Group {
            kind: cfg.kind.as_str(),
            database: &facts.database,
            job: cfg.job.as_deref(),
        };
        match prune(target, group, &policy, &new.id) {
            Ok((deleted, now_kept, tripped)) => {
                if let Some(e) = tripped {
                    follow_ups.failed(
                        "the backup is stored, but the circuit breaker held the pruning",
                        &e,
                    );
                }
                kept = kept.or(Some(now_kept)); // the first target's count: Drive's when there is one
                if deleted.is_empty() {
                    continue;
                }
                let drive = target.backend() == Backend::Drive;
                if let Err(e) = catalog::mark_pruned(guard.client(), target.name(), drive, &deleted)
                {
                    follow_ups.failed("pruned, but recording that in the catalog failed", &e);
                }
            }
            Err(e) => follow_ups.failed(
                &format!(
                    "the backup is stored, but pruning old backups in {} failed",
                    target.describe()
                ),
                &e,
            ),
        }
    }
    drop(guard);
    if let Err(e) = super::status::refresh_prometheus(metrics, cfg.kind) {
        follow_ups.failed(
            "the backup is stored, but refreshing the Prometheus file failed",
            &e,
        );
    }

    let mut report = Report::new(
        Status::Success,
        cfg.kind,
        &facts.database,
        &facts.host,
        facts.started_ms,
    );
    report.file = facts.file_name.clone();
    report.drive_file_id = record.drive_file_id.clone();
    report.local_path = record.local_path.clone();
    report.size_bytes = Some(digest.size);
    report.kept = kept;
    report.follow_up_errors = not_stored
        .iter()
        .chain(&follow_ups.errors)
        .cloned()
        .collect();
    let elapsed = started.elapsed().saturating_sub(notifying).as_secs_f64();
    let notifications_failed = !notifier.run_finished(&report).is_empty();
    let follow_up_failed = notifications_failed || !follow_ups.errors.is_empty();

    let attempted = stored.len() + failed_targets.len();
    let outcome = match (failed_targets.is_empty(), follow_up_failed) {
        (true, false) => "stored".to_string(),
        (true, true) => "stored, follow-up failed".to_string(),
        (false, false) => format!("stored on {} of {attempted} targets", stored.len()),
        (false, true) => format!(
            "stored on {} of {attempted} targets, follow-up failed",
            stored.len()
        ),
    };
    let mut fields = vec![
        ("outcome", outcome),
        ("size_bytes", digest.size.to_string()),
        ("size", human_bytes(digest.size)),
        ("dump_bytes", raw_bytes.to_string()),
        ("duration_s", format!("{elapsed:.1}")),
        (
            "throughput",
            format!(
                "{}/s",
                human_bytes((raw_bytes as f64 / elapsed.max(0.001)) as u64)
            ),
        ),
        ("tables", row_counts.len().to_string()),
        ("rows", row_counts.values().sum::<u64>().to_string()),
        ("sha256", digest.sha256.clone()),
    ];
    for s in &stored {
        fields.push(if s.backend == Backend::Drive {
            ("drive", s.location.clone())
        } else {
            ("local", s.location.clone())
        });
    }
    if !failed_targets.is_empty() {
        let names: Vec<&str> = failed_targets
            .iter()
            .map(|f| f.target.name.as_str())
            .collect();
        fields.push(("failed_targets", names.join(",")));
    }
    log::info("backup finished", &fields);
    // a target that did not store the backup outranks a follow-up failure: it needs a person
    Ok(if !failed_targets.is_empty() {
        ExitStatus::PartiallyStored
    } else if follow_up_failed {
        ExitStatus::FollowUpFailed
    } else {
        ExitStatus::Ok
    })
}

/// Each target's copy for the catalog, stored or failed, in the targets' order.
fn copies_in_target_order(
    targets: &[OpenTarget],
    stored: &[StoredObject],
    failed: &[fanout::Failure],
) -> Vec<catalog::CopyRecord> {
    targets
        .iter()
        .filter_map(|t| {
            let name = t.target.name();
            stored
                .iter()
                .find(|s| s.target == name)
                .map(StoredObject::copy_record)
                .or_else(|| {
                    failed
                        .iter()
                        .find(|f| f.target.name == name)
                        .map(fanout::Failure::copy_record)
                })
        })
        .collect()
}

/// The facts of this run every catalog row carries.
fn run_record(cfg: &BackupConfig, facts: &RunFacts) -> RunRecord {
    RunRecord {
        started_ms: facts.started_ms,
        kind: cfg.kind.to_string(),
        job: cfg.job.clone(),
        database_name: facts.database.clone(),
        host: facts.host.clone(),
        filename: facts.file_name.clone(),
        compression: Some(cfg.codec.label()),
        server_version: facts.server_version.clone(),
        pg_dump_version: facts.pg_dump.as_ref().map(|d| d.version.clone()),
        ..RunRecord::default()
    }
}

/// Records a failed run's ERROR row (after applying the catalog's migrations first when
/// `migrate`, for a failure before the lock); a catalog that refuses it is logged, never fatal.
fn record_failure(
    client: &mut postgres::Client,
    mut record: RunRecord,
    step: &str,
    error: &anyhow::Error,
    migrate: bool,
) {
    record.success = false;
    record.step = Some(step.to_string());
    record.error = Some(crate::error::render(error));
    if crate::signals::stopping() {
        // a stopping run must exit within seconds, even if the catalog is blocked
        let timeout = crate::signals::CLEANUP_TIMEOUT.as_millis();
        let _ = client.batch_execute(&format!("SET statement_timeout = {timeout}"));
    }
    let recorded = if migrate {
        catalog::migrate(client).map(|_| ())
    } else {
        Ok(())
    }
    .and_then(|()| catalog::record(client, &record).map(|_| ()));
    if let Err(e) = recorded {
        log::error(
            "could not record the failure in the catalog",
            &[("error", crate::error::render(&e))],
        );
    }
}

/// Follow-up steps that failed after the backup was stored: each is logged (with its hint) as
/// it happens and told in the notification; any of them makes the exit status 3.
#[derive(Default)]
struct FollowUps {
    errors: Vec<String>,
}

impl FollowUps {
    fn failed(&mut self, what: &str, error: &anyhow::Error) {
        let rendered = crate::error::render(error);
        let mut fields = vec![("error", rendered.clone())];
        fields.extend(crate::error::hint(error).map(|h| ("hint", h)));
        log::error(what, &fields);
        self.errors.push(format!("{what}: {rendered}"));
    }
}

/// An opened target, with the job's options for it.
pub(super) struct OpenTarget {
    pub(super) target: Box<dyn Target>,
    pub(super) options: TargetOptions,
}

impl OpenTarget {
    /// The upload part size this target gets: its own, else the job's.
    fn chunk_size(&self, cfg: &BackupConfig) -> usize {
        self.options.chunk_size.unwrap_or(cfg.chunk_size)
    }

    /// The retention rules of this target: its own, else the job's, else the kind's keep count.
    pub(super) fn policy(&self, cfg: &BackupConfig) -> retention::Policy {
        let mut own = self.options.rules.clone();
        own.keep_last = own.keep_last.or(self.options.keep);
        retention::RuleSpec::resolve(&own, &cfg.rules, cfg.keep)
    }

    fn id(&self) -> fanout::TargetId {
        fanout::TargetId {
            name: self.target.name().to_string(),
            backend: self.target.backend(),
            describe: self.target.describe(),
        }
    }
}

/// The storage targets, Drive first. Takes the credentials out of the configuration.
pub(super) fn build_targets(cfg: &mut BackupConfig) -> Vec<OpenTarget> {
    crate::storage::config::for_backup(cfg)
        .into_iter()
        .map(|t| OpenTarget {
            target: crate::storage::open(t.config),
            options: t.options,
        })
        .collect()
}

/// Everything from the preflight to the verified upload. Returns what was stored.
fn back_up(
    cfg: &BackupConfig,
    guard: &mut lock::LockGuard,
    mut separate: Option<postgres::Client>,
    targets: &mut [OpenTarget],
    facts: &mut RunFacts,
) -> std::result::Result<Streamed, StepError> {
    // from here to the verified upload, a run that makes no progress fails as "stalled"
    let _watch = crate::signals::watch_unless_zero(cfg.stall_timeout);

    // --- preflight: nothing has been written anywhere yet
    crate::signals::waiting_on("the database did not answer the preflight");
    let data_client = match separate.as_mut() {
        Some(client) => client,
        None => guard.client(),
    };
    let (server_version, server_major) = server_version(data_client).at("preflight")?;
    facts.server_version = Some(server_version.clone());
    facts.locale =
        Some(crate::dblocale::DbLocale::read(data_client, server_major).at("preflight")?);
    if cfg.kind != Kind::Hourly {
        facts.db_properties =
            Some(crate::dr::dbprops::DbProperties::read(data_client).at("preflight")?);
    }
    let pg_dump = pgdump::locate(cfg.pg_dump.as_deref(), server_major).at("preflight")?;
    facts.pg_dump = Some(pg_dump.clone());
    let tables = if cfg.kind == Kind::Hourly {
        resolve_tables(data_client, &cfg.critical_tables).at("preflight")?
    } else {
        Vec::new()
    };
    for open in targets.iter_mut() {
        let chunk_size = open.chunk_size(cfg);
        let t = open.target.as_mut();
        let what = t.describe();
        let caps = t.capabilities();
        if let Some(why) = caps.part_size.refuse(chunk_size) {
            let refused: Result<()> = Err(crate::error::config_error_hint(
                format!("chunk size {chunk_size} does not suit {what}: {why}"),
                "set PGDRIVE_CHUNK_SIZE (--chunk-size), or this target's own chunk size, to a size it accepts, e.g. 8MiB",
            ));
            refused.at("preflight")?;
        }
        // a target that takes properties only at the start (S3) records the checksums, known
        // only at the end of the stream, in the manifest it writes beside the backup
        crate::signals::waiting_on(format!("{what} did not answer the preflight"));
        t.preflight()
            .with_context(|| format!("checking {what}"))
            .at("preflight")?;
        crate::signals::progress();
    }
    log::info(
        "preflight passed",
        &[
            ("server", server_version.clone()),
            (
                "pg_dump",
                format!("{} ({})", pg_dump.version, pg_dump.path.display()),
            ),
            (
                "targets",
                targets
                    .iter()
                    .map(|t| t.target.describe())
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
        ],
    );

    // --- stream
    let name = format!(
        "{}-{}-{}{}{}{}",
        file_name_part(&facts.database),
        cfg.kind,
        timeutil::compact_stamp(facts.started_ms),
        cfg.format.extension(),
        cfg.codec.extension(),
        if cfg.encryption.is_some() {
            crate::encrypt::EXTENSION
        } else {
            ""
        }
    );
    facts.file_name = Some(name.clone());
    // one set of properties for every target, so it must fit the strictest one's limit
    let budget = targets
        .iter()
        .filter_map(|t| t.target.capabilities().max_property_bytes)
        .min();
    let properties = initial_properties(cfg, facts, &pg_dump, budget);
    let args = pgdump::arguments(cfg.kind, cfg.format, &tables);
    let env = cfg.database.child_env();
    let mut extra = BTreeMap::new();
    if let Some(p) = &facts.db_properties {
        let (key, entry) = p
            .manifest_entry(cfg.encryption.as_deref())
            .at("preflight")?;
        extra.insert(key.to_string(), entry);
    }
    if let Some(set) = &facts.set {
        extra.insert(crate::dr::globals::MANIFEST_KEY.to_string(), set.manifest());
    }
    stream(
        targets,
        &name,
        &properties,
        cfg,
        &pg_dump,
        &args,
        &env,
        extra,
    )
}

/// What the stream stored, and where it failed: each target's outcome, the digest and row
/// counts, and the dump's raw size.
struct Streamed {
    stored: Vec<StoredObject>,
    failed: Vec<fanout::Failure>,
    done: Completion,
    raw_bytes: u64,
    /// Rows per table (in `done` too unless encrypted: the catalog, in the database, has them).
    row_counts: BTreeMap<String, u64>,
}

/// Opens every upload, runs pg_dump through the compressor into all of them at once (see
/// `fanout`), and finishes them only after pg_dump exited 0 and its output ends like a complete
/// dump. A target that fails is dropped and the others go on; the stream fails when every
/// target failed, or when the dump did (then nothing is stored anywhere).
#[allow(clippy::too_many_arguments)]
fn stream(
    targets: &mut [OpenTarget],
    name: &str,
    properties: &BTreeMap<String, String>,
    cfg: &BackupConfig,
    pg_dump: &PgDump,
    args: &[std::ffi::OsString],
    env: &[(&'static str, String)],
    manifest_extra: BTreeMap<String, serde_json::Value>,
) -> std::result::Result<Streamed, StepError> {
    // the pipeline cuts the smallest part any target wants; targets wanting larger ones regroup
    let chunk_size = smallest_part(targets.iter().map(|t| t.options.chunk_size), cfg.chunk_size);
    let order: Vec<String> = targets
        .iter()
        .map(|t| t.target.name().to_string())
        .collect();
    let mut lanes = Vec::new();
    let mut failed = Vec::new();
    for t in targets.iter_mut() {
        let id = t.id();
        let own_chunk = t.chunk_size(cfg);
        crate::signals::waiting_on(format!("{} did not open the upload session", id.describe));
        match t
            .target
            .begin(name, cfg.codec.mime_type(), properties, own_chunk)
        {
            Ok(upload) => lanes.push(fanout::Lane { target: id, upload }),
            Err(e) => failed.push(fanout::Failure {
                error: e.context(format!("starting the upload to {}", id.describe)),
                target: id,
                step: "upload",
            }),
        }
    }
    if !lanes.is_empty() {
        failed.iter().for_each(fanout::Failure::log_going_on);
    }
    std::thread::scope(|scope| {
        let mut fan = fanout::FanOut::start(scope, lanes, fanout::QUEUE_DEPTH);
        if fan.live() == 0 {
            failed.extend(fan.abort().0);
            return Err(every_target_failed(failed, &order));
        }
        let mut dump = match RunningDump::spawn(pg_dump, args, env) {
            Ok(d) => d,
            Err(e) => return Err(abandon(fan, failed, "dump", e)),
        };
        log::debug("pg_dump started", &[("pid", dump.pid().to_string())]);
        let options = StreamOptions {
            codec: cfg.codec,
            threads: cfg.threads,
            chunk_size,
            plain: cfg.format == pgdump::DumpFormat::Plain,
        };
        let compressor = dump
            .take_stdout()
            .and_then(|out| spawn_compressor(out, options, cfg.encryption.clone()));
        let (rx, handle) = match compressor {
            Ok(c) => c,
            Err(e) => return Err(abandon(fan, failed, "dump", e)),
        };

        let StreamEnd {
            tail,
            mut hasher,
            raw_bytes,
            dump_complete,
            row_counts,
            plain_sha256,
        } = match pump(&rx, &mut fan) {
            Ok(end) => end,
            Err(Pumped::EveryTargetFailed) => {
                // nobody takes the rest of the dump: stop it, then report every target's failure
                dump.kill();
                drop(rx);
                let _ = handle.join();
                let _ = dump.wait();
                let (known, _) = fan.abort();
                failed.extend(known);
                return Err(every_target_failed(failed, &order));
            }
            Err(Pumped::Failed(e)) => {
                // Abandon: stop pg_dump and the compressor, cancel the sessions, then report.
                dump.kill();
                drop(rx);
                let _ = handle.join();
                let outcome = dump.wait();
                let e = match outcome {
                    Ok(o)
                        if !o.success
                            && !o.stderr_tail.is_empty()
                            && !crate::signals::stopping() =>
                    {
                        e.context(format!(
                            "pg_dump {}: {}",
                            o.description,
                            o.stderr_tail.replace('\n', " | ")
                        ))
                    }
                    _ => e,
                };
                return Err(abandon(fan, failed, "upload", e));
            }
        };
        let _ = handle.join();
        let outcome = match dump.wait() {
            Ok(o) => o,
            Err(e) => return Err(abandon(fan, failed, "dump", e)),
        };
        if let Err(e) = pgdump::check_outcome(&outcome) {
            return Err(abandon(fan, failed, "dump", e));
        }
        if !dump_complete {
            let e = anyhow::anyhow!(
                "pg_dump exited 0 but its output does not end with \"PostgreSQL database dump complete\": the dump is truncated"
            );
            return Err(abandon(fan, failed, "dump", e));
        }
        if !outcome.stderr_tail.is_empty() {
            log::warn(
                "pg_dump wrote to stderr",
                &[("stderr", outcome.stderr_tail.clone())],
            );
        }
        hasher.update(&tail);
        if !tail.is_empty() && !fan.send(tail.into()) {
            let (known, _) = fan.abort();
            failed.extend(known);
            return Err(every_target_failed(failed, &order));
        }
        let digest = hasher.finish();
        let mut final_properties = BTreeMap::from([
            (props::SHA256.to_string(), digest.sha256.clone()),
            (props::MD5.to_string(), digest.md5.clone()),
            (props::SIZE.to_string(), digest.size.to_string()),
            (props::RAW_SIZE.to_string(), raw_bytes.to_string()),
        ]);
        // with encryption the row counts (table names) are stored sealed like the dump
        let counted = row_counts.clone();
        let (row_counts, sealed_row_counts) = match &cfg.encryption {
            None => (row_counts, None),
            Some(e) => {
                let json = serde_json::to_vec(&row_counts).unwrap_or_default();
                match e.seal_to_base64(&json) {
                    Ok(sealed) => (BTreeMap::new(), Some(sealed)),
                    Err(err) => {
                        return Err(abandon(
                            fan,
                            failed,
                            "upload",
                            err.context("encrypting the row counts"),
                        ))
                    }
                }
            }
        };
        if let Some(plain) = plain_sha256 {
            final_properties.insert(props::PLAIN_SHA256.to_string(), plain);
        }
        let done = Completion {
            properties: final_properties,
            digest,
            row_counts,
            manifest_extra,
            sealed_row_counts,
            recipients: cfg
                .encryption
                .as_ref()
                .map(|e| e.fingerprints.clone())
                .unwrap_or_default(),
        };
        let mut outcome = fan.finish(done.clone());
        failed.append(&mut outcome.failed);
        if outcome.stored.is_empty() {
            return Err(every_target_failed(failed, &order));
        }
        Ok(Streamed {
            stored: outcome.stored,
            failed,
            done,
            raw_bytes,
            row_counts: counted,
        })
    })
}

/// The part size the pipeline cuts: the smallest of the targets' own sizes, the job's `job`
/// standing in for a target that has none.
fn smallest_part(own: impl Iterator<Item = Option<usize>>, job: usize) -> usize {
    own.map(|size| size.unwrap_or(job)).min().unwrap_or(job)
}

/// The stream's failure when no target is left (`failed` in the order they failed; `order`: the
/// targets' names). The step is the one the last target failed in, where the run as a whole
/// failed; the first target's error decides the exit status (Drive's, when there is one), the
/// others are named before it.
fn every_target_failed(mut failed: Vec<fanout::Failure>, order: &[String]) -> StepError {
    let step = failed.last().map_or("upload", |f| f.step);
    failed.sort_by_key(|f| order.iter().position(|name| *name == f.target.name));
    let copies = failed.iter().map(fanout::Failure::copy_record).collect();
    if failed.is_empty() {
        return StepError {
            step: "upload",
            error: anyhow::anyhow!("no storage target is configured"),
            copies,
        };
    }
    let first = failed.remove(0);
    let error = if failed.is_empty() {
        first.error
    } else {
        let others: Vec<String> = failed
            .iter()
            .map(|f| crate::error::render(&f.error))
            .collect();
        first
            .error
            .context(format!("every target failed ({})", others.join("; ")))
    };
    StepError {
        step,
        error,
        copies,
    }
}

/// Cancels every upload because the run failed at `step`: the error, with a FAILED copy for
/// each target (its own failure, or abandoned).
fn abandon(
    fan: fanout::FanOut<'_>,
    mut failed: Vec<fanout::Failure>,
    step: &'static str,
    error: anyhow::Error,
) -> StepError {
    let (known, abandoned) = fan.abort();
    failed.extend(known);
    StepError {
        step,
        error,
        copies: failed
            .iter()
            .map(fanout::Failure::copy_record)
            .chain(abandoned.iter().map(|t| abandoned_copy(t, step)))
            .collect(),
    }
}

/// The FAILED copy of a target whose upload was cancelled because the run failed at `step`.
fn abandoned_copy(target: &fanout::TargetId, step: &str) -> catalog::CopyRecord {
    catalog::CopyRecord {
        target: target.name.clone(),
        backend: target.backend.as_str().to_string(),
        stored: false,
        object_id: None,
        location: None,
        error: Some(format!("not stored: the backup failed at the {step} step")),
    }
}

/// The compressor's last word, with the running digest of everything it produced so far.
struct StreamEnd {
    tail: Vec<u8>,
    hasher: crate::storage::Hasher,
    raw_bytes: u64,
    dump_complete: bool,
    row_counts: BTreeMap<String, u64>,
    plain_sha256: Option<String>,
}

/// Why the pump stopped before the end of the stream.
enum Pumped {
    /// The dump, the compressor, a signal or the stall watchdog.
    Failed(anyhow::Error),
    /// No target is left to take the chunks (their failures are in the fan-out).
    EveryTargetFailed,
}

/// Moves chunks from the compressor to the fan-out until the end of the stream, hashing them on
/// the way (the targets write on their own threads; the compressor's does not wait on them
/// beyond their queues).
fn pump(
    rx: &Receiver<Piece>,
    fan: &mut fanout::FanOut<'_>,
) -> std::result::Result<StreamEnd, Pumped> {
    let mut hasher = crate::storage::Hasher::default();
    loop {
        crate::signals::waiting_on("pg_dump produced no output");
        crate::signals::check_run().map_err(Pumped::Failed)?;
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(Piece::Chunk(chunk)) => {
                hasher.update(&chunk);
                if !fan.send(chunk) {
                    return Err(Pumped::EveryTargetFailed);
                }
            }
            Ok(Piece::End {
                tail,
                raw_bytes,
                dump_complete,
                row_counts,
                plain_sha256,
            }) => {
                return Ok(StreamEnd {
                    tail,
                    hasher,
                    raw_bytes,
                    dump_complete,
                    row_counts,
                    plain_sha256,
                })
            }
            Ok(Piece::Failed(e)) => return Err(Pumped::Failed(e)),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                return Err(Pumped::Failed(anyhow::anyhow!(
                    "the compressor stopped unexpectedly"
                )))
            }
        }
    }
}

/// Applies this target's retention rules to `group`, which the backup `just_stored` belongs to;
/// returns the deleted IDs, how many backups of the group remain, and the error to report when
/// the circuit breaker held the deletions.
pub(super) fn prune(
    target: &mut dyn Target,
    group: retention::Group<'_>,
    policy: &retention::Policy,
    just_stored: &str,
) -> Result<(Vec<String>, usize, Option<anyhow::Error>)> {
    let listed = target.list(&group.selector()).context("listing backups")?;
    let applied = super::prune::apply_group(
        target,
        &listed,
        group,
        policy,
        Some(just_stored),
        false,
        false,
    )?;
    let tripped = applied
        .plan
        .tripped
        .as_ref()
        .map(|t| super::prune::tripped_error(target.name(), group.database, t));
    Ok((applied.deleted, applied.plan.keep.len(), tripped))
}

fn initial_properties(
    cfg: &BackupConfig,
    facts: &RunFacts,
    pg_dump: &PgDump,
    budget: Option<usize>,
) -> BTreeMap<String, String> {
    let fit = |k: &str, v: &str| (k.to_string(), crate::storage::fit_property(k, v, budget));
    let locale = facts.locale.as_ref().and_then(|l| {
        let recorded = l.properties(budget);
        if recorded.is_none() {
            log::warn(
                "the database's locale names are too long to record; restore --create will use the server's defaults",
                &[("settings", l.describe())],
            );
        }
        recorded
    });
    let mut properties = BTreeMap::from([
        fit(props::MARKER, props::MARKER_VALUE),
        fit(props::KIND, cfg.kind.as_str()),
        fit(props::DATABASE, &facts.database),
        fit(
            props::STARTED_AT,
            &timeutil::rfc3339_millis(facts.started_ms),
        ),
        fit(props::VERSION, env!("CARGO_PKG_VERSION")),
        fit(
            props::SERVER_VERSION,
            facts.server_version.as_deref().unwrap_or(""),
        ),
        fit(props::PG_DUMP_VERSION, &pg_dump.version),
        fit(props::FORMAT, cfg.format.as_str()),
        fit(props::COMPRESSION, &cfg.codec.label()),
        fit(props::HOST, &facts.host),
    ]);
    if let Some(job) = &cfg.job {
        properties.insert(props::JOB.to_string(), job.clone());
    }
    if let Some(set) = &facts.set {
        properties.insert(props::SET.to_string(), set.id.clone());
    }
    properties.extend(locale.into_iter().flatten());
    if let Some(e) = &cfg.encryption {
        properties.extend([
            fit(props::ENCRYPTION, crate::encrypt::SCHEME),
            fit(props::RECIPIENTS, &e.fingerprint_list()),
        ]);
    }
    properties
}

/// The database name as it appears in file names: path separators and control characters replaced.
pub fn file_name_part(db: &str) -> String {
    let cleaned: String = db
        .chars()
        .map(|c| {
            if c == '/' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    let cleaned = cleaned.trim_start_matches('.').to_string();
    if cleaned.is_empty() {
        "db".into()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        assert_eq!(file_name_part("shop"), "shop");
        assert_eq!(file_name_part("a/b"), "a_b");
        assert_eq!(file_name_part("..hidden"), "hidden");
        assert_eq!(file_name_part("магазин"), "магазин");
    }

    #[test]
    fn the_pipeline_cuts_the_smallest_part_any_target_wants() {
        const MIB: usize = 1 << 20;
        let cut = |own: &[Option<usize>]| smallest_part(own.iter().copied(), 8 * MIB);
        assert_eq!(cut(&[None, Some(MIB)]), MIB);
        assert_eq!(cut(&[Some(16 * MIB), None]), 8 * MIB);
        assert_eq!(cut(&[Some(16 * MIB)]), 16 * MIB);
        assert_eq!(cut(&[]), 8 * MIB);
    }
}
