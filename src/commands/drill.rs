//! `pgdrive drill`: the disaster-recovery rehearsal. A throwaway cluster (`crate::dr::cluster`,
//! always removed) is created, the newest backup set of the job is restored into it from storage
//! alone, exactly as `restore --all` does (no catalog, no connection to the source server:
//! DATABASE_URL and the catalog are not used), and every database is checked: each table's row
//! count equals the manifest's, the roles and memberships of the globals exist, and the recorded
//! database properties were reapplied. It reports the RTO (from nothing to a checked server) and
//! the RPO (the age of the oldest data restored), as text or `--json`. Any failed check fails the
//! drill (exit 1).
//!
//! Afterwards, and only then, the drill is made known: when a catalog is reachable its result
//! line is recorded as the verification (`verified_at`, `verify_result`) of every backup of the
//! set (which is how `status` and the HTML report find the last drill), and the notification
//! channels are told, passed or failed (a drill is rare and its passing is the news, so the
//! on-failure policy is raised to always; `never` is respected). The drill never needs the
//! catalog: recording is best effort.

use std::time::Instant;

use anyhow::{anyhow, Result};
use serde_json::json;

use super::restore_all;
use super::source;
use crate::cli::{DrillArgs, NotifyPolicy, RestoreArgs};
use crate::config::Settings;
use crate::dr::{dbprops::DbProperties, globals};
use crate::error::ExitStatus;
use crate::notify::{self, Report, Status};
use crate::storage::{props, Backend};

pub fn run(args: &DrillArgs, settings: Settings) -> Result<ExitStatus> {
    let started_ms = crate::timeutil::now_millis();
    // a channel that is misconfigured is found before the drill, not after it
    let mut notifier = notify::load(&settings, args.kind, None)?;
    // the heartbeat ping belongs to the backups of the kind, not to the drill
    notifier.ping = None;
    if notifier.policy != NotifyPolicy::Never {
        notifier.policy = NotifyPolicy::Always;
    }
    notifier.job = args.job.clone();
    let host = crate::host::host_name();
    let outcome = drill(args, settings);
    let report = match &outcome {
        Ok((ok, line)) => {
            let status = if *ok {
                Status::Success
            } else {
                Status::Failure
            };
            let mut r = Report::new(status, args.kind, "all databases", &host, started_ms);
            r.drill = Some(line.clone());
            r
        }
        Err(e) => {
            let mut r = Report::failure(args.kind, "all databases", &host, started_ms, "drill", e);
            r.drill = Some(crate::error::render(e));
            r
        }
    };
    notifier.run_finished(&report);
    match outcome? {
        (true, _) => Ok(ExitStatus::Ok),
        (false, _) => Ok(ExitStatus::Failed),
    }
}

/// The drill itself; returns whether it passed and its one-line result.
fn drill(args: &DrillArgs, settings: Settings) -> Result<(bool, String)> {
    let started = Instant::now();
    let mut cfg = source::load(&args.source, settings)?;
    // from storage alone: the source server and the catalog are not asked anything (the
    // catalog is put back for recording the result once the drill is over)
    cfg.database = None;
    let catalog = cfg.catalog.take();
    crate::encrypt::init_for_restore(args.identity.as_deref(), &cfg.settings)?;
    let restore = RestoreArgs {
        backup: None,
        all: true,
        globals: false,
        job: args.job.clone(),
        update_roles: false,
        no_owner: false,
        role_map: Vec::new(),
        kind: args.kind,
        target_url: String::new(),
        create: false,
        clean: false,
        yes: true,
        psql: args.pg_bin.as_ref().map(|b| b.join("psql")),
        pg_restore: args.pg_bin.as_ref().map(|b| b.join("pg_restore")),
        jobs: args.jobs,
        spool_dir: None,
        identity: args.identity.clone(),
        source: args.source.clone(),
    };
    let names = source::candidates(&cfg, args.source.target.as_deref())?;
    let set = restore_all::find_set(&cfg, &names, &restore)?;
    let bin = server_bin(args, &set)?;
    let scratch = crate::dr::cluster::Scratch::start(&bin)?;
    crate::log::info(
        "drill cluster started",
        &[
            ("dir", scratch.dir().display().to_string()),
            ("port", scratch.port.to_string()),
        ],
    );
    let server = scratch.url()?;
    let outcome = restore_all::restore_set(
        &cfg,
        &server,
        &set,
        &restore,
        globals::RestoreOptions {
            update_roles: false,
            skip_tablespaces: true,
        },
    )?;
    let mut problems = Vec::new();
    for (db, r) in &outcome.databases {
        if let Err(e) = r {
            problems.push(format!("{db}: not restored: {}", crate::error::render(e)));
        }
    }
    let mut tables = 0usize;
    let mut rows = 0u64;
    for listed in &set.databases {
        let db = listed.prop(props::DATABASE).unwrap_or("");
        if outcome.databases.iter().any(|(d, r)| d == db && r.is_err()) {
            continue;
        }
        match check_database(&cfg, &server, &set, listed, db) {
            Ok((t, r, mut p)) => {
                tables += t;
                rows += r;
                problems.append(&mut p);
            }
            Err(e) => problems.push(format!("{db}: {}", crate::error::render(&e))),
        }
    }
    problems.extend(check_roles(&server, &outcome.script)?);
    let rto = started.elapsed().as_secs_f64();
    let rpo = set
        .oldest_started_ms()
        .map(|t| (crate::timeutil::now_millis() - t) as f64 / 1000.0);
    drop(scratch);
    let ok = problems.is_empty();
    let report = json!({
        "ok": ok,
        "set": set.set,
        "target": set.target,
        "databases": set.databases.iter().filter_map(|l| l.prop(props::DATABASE)).collect::<Vec<_>>(),
        "tables": tables,
        "rows": rows,
        "roles_created": outcome.globals.created_roles.len(),
        "rto_seconds": (rto * 10.0).round() / 10.0,
        "rpo_seconds": rpo.map(|r| r.round()),
        "problems": problems,
    });
    if args.json {
        println!("{report}");
    } else {
        println!(
            "drill {}: set {} ({} databases, {tables} tables, {rows} rows, {} roles) RTO {rto:.1}s RPO {}",
            if ok { "passed" } else { "FAILED" },
            set.set,
            set.databases.len(),
            outcome.globals.created_roles.len(),
            rpo.map(|r| format!("{r:.0}s")).unwrap_or_else(|| "?".into()),
        );
        for p in &problems {
            println!("  FAIL {p}");
        }
    }
    let line = format!(
        "{} set {}, RTO {rto:.1}s, RPO {}, {} databases, {rows} rows{}",
        if ok {
            crate::catalog::DRILL_PASSED.to_string()
        } else {
            format!("{}FAILED", crate::catalog::DRILL_RESULT_PREFIX)
        },
        set.set,
        rpo.map(|r| format!("{r:.0}s"))
            .unwrap_or_else(|| "?".into()),
        set.databases.len(),
        if ok {
            String::new()
        } else {
            format!(": {}", problems.join("; "))
        },
    );
    if ok {
        crate::log::info("drill passed", &[("rto_s", format!("{rto:.1}"))]);
    } else {
        crate::log::error("drill FAILED", &[("problems", problems.join("; "))]);
    }
    cfg.catalog = catalog;
    record(&cfg, &set, &line);
    Ok((ok, line))
}

/// Records `line` as the verification of every backup of `set` in the catalog, when one is
/// reachable (best effort: the drill's outcome does not depend on it).
fn record(cfg: &crate::config::ReadConfig, set: &restore_all::BackupSet, line: &str) {
    let Some(mut client) = source::optional_catalog(cfg) else {
        return;
    };
    let backend = match source::open_readable(cfg, &set.target, None) {
        Ok(targets) => targets.first().map(|t| t.backend()),
        Err(_) => None,
    };
    let mut recorded = 0;
    for listed in set.databases.iter().chain([&set.globals.listed]) {
        let drive_id = (backend == Some(Backend::Drive)).then_some(listed.id.as_str());
        let local_name = (backend == Some(Backend::Local)).then_some(listed.name.as_str());
        match crate::catalog::record_verification(&mut client, drive_id, local_name, line) {
            Ok(n) => recorded += n,
            Err(e) => crate::log::warn(
                "could not record the drill in the catalog",
                &[("error", crate::error::render(&e))],
            ),
        }
    }
    crate::log::info(
        "drill recorded in the catalog",
        &[("rows", recorded.to_string())],
    );
}

/// `--pg-bin`, else the newest /usr/lib/postgresql/N/bin with initdb; its major must be at least
/// the backed-up server's.
fn server_bin(args: &DrillArgs, set: &restore_all::BackupSet) -> Result<std::path::PathBuf> {
    let wanted: u32 = set
        .globals
        .listed
        .prop(props::SERVER_VERSION)
        .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .unwrap_or(0);
    let candidates: Vec<(u32, std::path::PathBuf)> = match &args.pg_bin {
        Some(b) => vec![(u32::MAX, b.clone())],
        None => std::fs::read_dir("/usr/lib/postgresql")
            .map(|d| {
                d.filter_map(|e| {
                    let e = e.ok()?;
                    let major = e.file_name().to_str()?.parse::<u32>().ok()?;
                    let bin = e.path().join("bin");
                    bin.join("initdb").is_file().then_some((major, bin))
                })
                .collect()
            })
            .unwrap_or_default(),
    };
    candidates
        .into_iter()
        .filter(|(m, _)| *m >= wanted)
        .max_by_key(|(m, _)| *m)
        .map(|(_, b)| b)
        .ok_or_else(|| {
            crate::error::config_error_hint(
                format!("no PostgreSQL server programs of major version {wanted} or newer were found"),
                format!("install postgresql-{wanted} (initdb, pg_ctl), or point --pg-bin at their directory"),
            )
        })
}

/// Row counts against the manifest, and the database properties against the recorded ones.
fn check_database(
    cfg: &crate::config::ReadConfig,
    server: &crate::pgconn::ConnInfo,
    set: &restore_all::BackupSet,
    listed: &crate::storage::Listed,
    db: &str,
) -> Result<(usize, u64, Vec<String>)> {
    let mut target = source::open_readable(cfg, &set.target, None)?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("target {} has nothing to read", set.target))?;
    let found = target.get(&listed.id)?;
    let mut client =
        super::backup::connect(&source::with_dbname(server, db), "the drill's database")?;
    let mut problems = Vec::new();
    // the manifest's counts, unsealed with the drill's identity when the backup is encrypted
    let layout = crate::restore::Layout::of_found(&found)?;
    let expected = layout.expected_rows.clone().unwrap_or_default();
    let counted = crate::server::count_rows(&mut client, expected.keys())?;
    for (table, n) in &expected {
        match counted.get(table) {
            None => problems.push(format!("{db}: table {table} is missing")),
            Some(c) if *c as u64 != *n => {
                problems.push(format!("{db}: {table} has {c} rows, the manifest {n}"))
            }
            _ => {}
        }
    }
    if let Some(recorded) = DbProperties::from_found(&found, layout.encryption.as_ref())? {
        let mut now = DbProperties::read(&mut client)?;
        let mut was = recorded;
        for p in [&mut now, &mut was] {
            if let Some(a) = p.acl.as_mut() {
                a.sort_by(|x, y| (&x.grantee, &x.privilege).cmp(&(&y.grantee, &y.privilege)));
            }
        }
        if now != was {
            problems.push(format!(
                "{db}: database properties differ: restored {}, recorded {}",
                now.describe(),
                was.describe()
            ));
        }
    }
    Ok((expected.len(), expected.values().sum(), problems))
}

/// Every role of the globals exists, with its memberships.
fn check_roles(server: &crate::pgconn::ConnInfo, script: &str) -> Result<Vec<String>> {
    let (roles, members) = globals::roles_and_memberships(script);
    let mut client = super::backup::connect(server, "the drill's server")?;
    let mut problems = Vec::new();
    for r in roles {
        if client
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&r])?
            .is_none()
        {
            problems.push(format!("role {r} is missing"));
        }
    }
    for (group, member) in members {
        let found = client.query_opt(
            "SELECT 1 FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
               JOIN pg_roles u ON u.oid = m.member WHERE g.rolname = $1 AND u.rolname = $2",
            &[&group, &member],
        )?;
        if found.is_none() {
            problems.push(format!("{member} is not a member of {group}"));
        }
    }
    Ok(problems)
}
