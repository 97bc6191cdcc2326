//! Applying retention on a target: `pgdrive prune` (outside a backup run) and the pruning step of
//! `backup` go through [`apply_group`], so both log the same decisions. The plan is
//! [`retention::plan_policy`]'s; this module only lists, prints, deletes and reports.
//!
//! `prune` needs no PostgreSQL to plan: it lists each target of each job (or built-in kind) and
//! groups what it finds by database; it records deletions in the catalog when it is reachable.
//! Before it deletes anything of a group it takes the advisory lock `backup` takes for that job
//! and database ([`lock::lock_run`]), so it never races a running backup: a held lock skips the
//! group, names the holder, and ends the run with `backup`'s status for it (75). A dry run
//! deletes nothing and takes no lock.

use std::collections::BTreeMap;

use anyhow::{Context, Result};

use crate::cli::PruneArgs;
use crate::config::{BackupConfig, RunPlan, Settings};
use crate::error::ExitStatus;
use crate::kind::Kind;
use crate::lock;
use crate::log;
use crate::retention::{self, Group, Policy, PrunePlan, Verdict};
use crate::storage::{props, Listed, Target};

/// What applying the rules to one group on one target did.
pub struct Applied {
    pub plan: PrunePlan,
    /// IDs deleted (unfinished leftovers included).
    pub deleted: Vec<String>,
}

/// Plans `group` under `policy` from `listed`, logs every decision, and (unless `dry_run`)
/// deletes the unfinished leftovers and, unless the circuit breaker tripped, the backups the
/// rules do not keep. A tripped breaker is not an error here: the caller reports it.
pub fn apply_group(
    target: &mut dyn Target,
    listed: &[Listed],
    group: Group,
    policy: &Policy,
    just_stored: Option<&str>,
    force: bool,
    dry_run: bool,
) -> Result<Applied> {
    let plan = retention::plan_policy(
        listed,
        group,
        policy,
        just_stored,
        crate::timeutil::now_millis(),
        force,
    );
    for d in &plan.decisions {
        log::info(
            "retention decision",
            &[
                ("target", target.name().to_string()),
                ("database", group.database.to_string()),
                ("file", d.name.clone()),
                ("id", d.id.clone()),
                ("decision", d.verdict.as_str().to_string()),
                ("why", d.why()),
            ],
        );
    }
    let mut deleted = Vec::new();
    if !dry_run {
        // unfinished leftovers first (they never counted toward any rule), then the excess
        let unfinished = plan.unfinished.iter().map(|id| (id, true));
        let excess = plan.delete.iter().map(|id| (id, false));
        for (id, unfinished) in unfinished.chain(excess) {
            let name = listed
                .iter()
                .find(|l| &l.id == id)
                .map(|l| l.name.clone())
                .unwrap_or_default();
            let what = if unfinished {
                "the unfinished upload "
            } else {
                ""
            };
            target
                .delete(id)
                .with_context(|| format!("deleting {what}{name} ({id})"))?;
            let fields = [
                ("target", target.name().to_string()),
                ("file", name),
                ("id", id.clone()),
            ];
            if unfinished {
                log::warn(
                    "deleted an unfinished upload: its checksums were never recorded, so it was never a backup",
                    &fields,
                );
            } else {
                log::info("pruned", &fields);
            }
            deleted.push(id.clone());
        }
    }
    log::info(
        "retention applied",
        &[
            ("target", target.name().to_string()),
            ("database", group.database.to_string()),
            ("rules", policy.describe()),
            ("kept", plan.keep.len().to_string()),
            ("deleted", deleted.len().to_string()),
            ("dry_run", dry_run.to_string()),
        ],
    );
    Ok(Applied { plan, deleted })
}

/// The error a tripped circuit breaker is reported with (exit 1 in `prune`, a follow-up failure
/// in `backup`).
pub fn tripped_error(target: &str, database: &str, t: &retention::Tripped) -> anyhow::Error {
    crate::error::failure_hint(
        format!("{target}: nothing was pruned for {database}: {t}"),
        "check the retention keys; `pgdrive prune --dry-run` shows which backups each rule keeps, and `pgdrive prune --force` deletes them anyway",
    )
}

/// One printed row of `prune --dry-run`.
struct Row {
    target: String,
    group: String,
    decision: retention::Decision,
}

pub fn run(args: &PruneArgs, settings: Settings) -> Result<ExitStatus> {
    for w in &settings.warnings {
        log::warn(w, &[]);
    }
    let plans = run_plans(args, &settings)?;
    let application_name = format!(
        "pgdrive prune on {} pid {}",
        crate::host::host_name(),
        std::process::id()
    );
    let mut rows: Vec<Row> = Vec::new();
    let mut status = ExitStatus::Ok;
    let mut problems: Vec<anyhow::Error> = Vec::new();
    for plan in plans {
        let mut cfg = BackupConfig::for_run(settings.clone(), &Default::default(), &plan)?;
        let catalog = cfg.catalog.clone();
        let configured = cfg.database.clone();
        let job = cfg.job.clone();
        // the locks `backup` takes, one per database, held until this job's groups are done
        let mut locks: BTreeMap<String, lock::Taken> = BTreeMap::new();
        let default_keep = cfg.keep;
        let job_rules = cfg.rules.clone();
        for t in crate::storage::config::for_backup(&mut cfg) {
            if args.target.as_deref().is_some_and(|n| n != t.config.name) {
                continue;
            }
            let policy = retention::RuleSpec::resolve(&t.options.rules, &job_rules, default_keep);
            let mut target = crate::storage::open(t.config);
            let mut selector = BTreeMap::from([
                (props::MARKER.to_string(), props::MARKER_VALUE.to_string()),
                (props::KIND.to_string(), plan.kind.as_str().to_string()),
            ]);
            if let Some(j) = &job {
                selector.insert(props::JOB.to_string(), j.clone());
            }
            let listed = target
                .list(&selector)
                .with_context(|| format!("listing {}", target.describe()))?;
            let databases: std::collections::BTreeSet<String> = listed
                .iter()
                .filter(|l| l.prop(props::JOB) == job.as_deref())
                .filter_map(|l| l.prop(props::DATABASE).map(str::to_string))
                .collect();
            for database in databases {
                if !args.dry_run {
                    let taken = match locks.entry(database.clone()) {
                        std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::btree_map::Entry::Vacant(e) => {
                            let of = if database == configured.dbname() {
                                configured.clone()
                            } else {
                                configured.with_param("dbname", &database)
                            };
                            e.insert(lock::lock_run(
                                plan.kind,
                                job.as_deref(),
                                &catalog,
                                &of,
                                &application_name,
                            )?)
                        }
                    };
                    if let lock::Taken::Busy { lock, holder } = taken {
                        log::warn(
                            "skipped: a backup of this job and database holds its lock; nothing was pruned",
                            &[
                                ("target", target.name().to_string()),
                                ("kind", plan.kind.to_string()),
                                ("database", database.clone()),
                                ("lock", lock.name.clone()),
                                ("key", lock.key.to_string()),
                                ("holder", holder.clone()),
                            ],
                        );
                        status = ExitStatus::worst(&[status, ExitStatus::Locked]);
                        continue;
                    }
                }
                let group = Group {
                    kind: plan.kind.as_str(),
                    database: &database,
                    job: job.as_deref(),
                };
                let applied = apply_group(
                    target.as_mut(),
                    &listed,
                    group,
                    &policy,
                    None,
                    args.force,
                    args.dry_run,
                )?;
                let label = format!(
                    "{}/{}/{database}",
                    job.as_deref().unwrap_or("-"),
                    plan.kind.as_str()
                );
                if let Some(t) = &applied.plan.tripped {
                    let e = tripped_error(target.name(), &database, t);
                    if !args.dry_run {
                        log::error(&crate::error::render(&e), &[]);
                        problems.push(e);
                    }
                }
                rows.extend(applied.plan.decisions.into_iter().map(|decision| Row {
                    target: target.name().to_string(),
                    group: label.clone(),
                    decision,
                }));
                if !applied.deleted.is_empty() {
                    let drive = target.backend() == crate::storage::Backend::Drive;
                    let recorded = catalog.connect("pgdrive prune").and_then(|mut c| {
                        crate::catalog::mark_pruned(&mut c, target.name(), drive, &applied.deleted)
                    });
                    if let Err(e) = recorded {
                        log::error(
                            "pruned, but recording that in the catalog failed",
                            &[("error", crate::error::render(&e))],
                        );
                        status = ExitStatus::FollowUpFailed;
                    }
                }
            }
        }
    }
    print_rows(&rows, args.json)?;
    if let Some(e) = problems.into_iter().next() {
        return Err(e);
    }
    Ok(status)
}

fn print_rows(rows: &[Row], json: bool) -> Result<()> {
    if json {
        let out: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "target": r.target,
                    "group": r.group,
                    "id": r.decision.id,
                    "name": r.decision.name,
                    "time": r.decision.time_ms.map(crate::timeutil::rfc3339_millis),
                    "decision": r.decision.verdict.as_str(),
                    "reasons": r.decision.reasons.iter().map(ToString::to_string).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "{:<10} {:<24} {:<24} {:<8} {:<40} WHY",
        "TARGET", "GROUP", "TIME", "DECISION", "BACKUP"
    );
    for r in rows {
        let d = &r.decision;
        let time = d
            .time_ms
            .map(crate::timeutil::rfc3339_millis)
            .unwrap_or_else(|| "?".into());
        println!(
            "{:<10} {:<24} {:<24} {:<8} {:<40} {}",
            r.target,
            r.group,
            time,
            d.verdict.as_str(),
            d.name,
            d.why()
        );
    }
    let count = |v: Verdict| rows.iter().filter(|r| r.decision.verdict == v).count();
    println!(
        "{} kept, {} deleted, {} held by the circuit breaker",
        count(Verdict::Keep),
        count(Verdict::Delete),
        count(Verdict::Held)
    );
    Ok(())
}

/// The runs whose groups `prune` looks at: `--job`, else `--kind`, else every job of the config
/// file and every built-in kind whose settings load.
pub(crate) fn run_plans(args: &PruneArgs, settings: &Settings) -> Result<Vec<RunPlan>> {
    if let Some(name) = &args.job {
        let job = settings.declared.job(name).ok_or_else(|| {
            crate::error::config_error_hint(
                format!("no [jobs.{name}] in the config file"),
                "name a job the config file declares",
            )
        })?;
        return Ok(vec![RunPlan {
            kind: job.kind,
            job: Some(job.clone()),
            database: None,
        }]);
    }
    let built_in = |kind: Kind| RunPlan {
        kind,
        job: None,
        database: None,
    };
    if let Some(kind) = args.kind {
        return Ok(vec![built_in(kind)]);
    }
    let mut plans: Vec<RunPlan> = settings
        .declared
        .jobs
        .iter()
        .map(|j| RunPlan {
            kind: j.kind,
            job: Some(j.clone()),
            database: None,
        })
        .collect();
    for kind in [Kind::Daily, Kind::Hourly, Kind::Schema] {
        // a kind that is not set up (no folder, no critical tables) has nothing to prune
        if BackupConfig::for_run(settings.clone(), &Default::default(), &built_in(kind)).is_ok() {
            plans.push(built_in(kind));
        }
    }
    Ok(plans)
}

/// `pgdrive pin ID` / `unpin ID`: finds the backup `ID` on the configured targets (every job's
/// and built-in kind's, or `--target`'s) and pins or unpins it and its copies on the other
/// targets (the same SHA-256 and name).
pub fn pin(args: &crate::cli::PinArgs, settings: Settings, pinned: bool) -> Result<ExitStatus> {
    let all = PruneArgs {
        job: None,
        kind: None,
        target: args.target.clone(),
        dry_run: true,
        json: false,
        force: false,
    };
    let mut targets: Vec<Box<dyn Target>> = Vec::new();
    let mut catalog = None;
    for plan in run_plans(&all, &settings)? {
        let mut cfg = BackupConfig::for_run(settings.clone(), &Default::default(), &plan)?;
        catalog.get_or_insert_with(|| cfg.catalog.clone());
        for t in crate::storage::config::for_backup(&mut cfg) {
            let wanted = args.target.as_deref().is_none_or(|n| n == t.config.name);
            if !wanted {
                continue;
            }
            // jobs and kinds sharing a folder list it once
            let target = crate::storage::open(t.config);
            if !targets.iter().any(|o| o.describe() == target.describe()) {
                targets.push(target);
            }
        }
    }
    let marker = BTreeMap::from([(props::MARKER.to_string(), props::MARKER_VALUE.to_string())]);
    let mut listings = Vec::new();
    for t in targets.iter_mut() {
        let listed = t
            .list(&marker)
            .with_context(|| format!("listing {}", t.describe()))?;
        listings.push(listed);
    }
    let Some(backup) = listings
        .iter()
        .flatten()
        .find(|l| l.id == args.id && l.recorded_digest().is_some())
        .cloned()
    else {
        return Err(crate::error::config_error_hint(
            format!(
                "no complete backup with the id {} on the configured targets",
                args.id
            ),
            "take the id (a Drive file id or a local file name) from `pgdrive list`",
        ));
    };
    let digest = backup.recorded_digest();
    let mut done = 0;
    // the catalog keeps a copy of each pin for `status`; the manifests stay the record
    let mut recorder = catalog.map(|c| {
        c.connect("pgdrive pin").and_then(|mut client| {
            crate::catalog::migrate(&mut client)?;
            Ok(client)
        })
    });
    let mut status = ExitStatus::Ok;
    for (t, listed) in targets.iter_mut().zip(&listings) {
        for copy in listed
            .iter()
            .filter(|l| l.name == backup.name && l.recorded_digest() == digest)
        {
            t.set_pinned(&copy.id, pinned).with_context(|| {
                format!(
                    "{} {} in {}",
                    if pinned { "pinning" } else { "unpinning" },
                    copy.name,
                    t.describe()
                )
            })?;
            log::info(
                if pinned { "pinned" } else { "unpinned" },
                &[
                    ("target", t.name().to_string()),
                    ("file", copy.name.clone()),
                    ("id", copy.id.clone()),
                ],
            );
            done += 1;
            let recorded = match recorder.as_mut() {
                Some(Ok(client)) => {
                    crate::catalog::record_pin(client, t.name(), &copy.id, pinned).map(|_| ())
                }
                Some(Err(e)) => Err(anyhow::anyhow!("{}", crate::error::render(e))),
                None => Ok(()),
            };
            if let Err(e) = recorded {
                log::error(
                    "the pin is in the manifest, but recording it in the catalog failed; `status` counts it once the catalog has it (pin again)",
                    &[("error", crate::error::render(&e))],
                );
                status = ExitStatus::FollowUpFailed;
            }
        }
    }
    println!(
        "{} {} ({} cop{})",
        if pinned { "pinned" } else { "unpinned" },
        backup.name,
        done,
        if done == 1 { "y" } else { "ies" }
    );
    Ok(status)
}
