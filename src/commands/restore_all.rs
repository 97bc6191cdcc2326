//! `pgdrive restore --all` and `restore --globals`: a whole server from the newest backup set of
//! a job, from storage alone (no catalog needed). In this order:
//!
//! find the set (the newest complete `globals` object of the job, then the database backups that
//! carry its set id; a database the set lacks, because its backup failed that night, falls back
//! to its newest older backup of the job, with a warning) → print the plan and, on a terminal,
//! ask → the globals, checked against their recorded checksums, in one transaction (missing roles
//! created, existing ones left as they are unless `--update-roles`; see `crate::dr::globals`)
//! → every database as `restore --create` would (a new database of its own name, one
//! transaction, its recorded properties reapplied, dropped again on failure), `--jobs` at a time.
//! One database failing does not stop the others; the exit status is the worst of them.

use std::io::{Read, Write};
use std::sync::Mutex;

use anyhow::{anyhow, Result};

use super::source;
use crate::cli::RestoreArgs;
use crate::config::{ReadConfig, Settings};
use crate::dr::globals;
use crate::error::{config_error_hint, ExitStatus};
use crate::pgconn::ConnInfo;
use crate::storage::{props, Found, Listed, Target};

/// The newest backup set of a job, as found on one target.
pub struct BackupSet {
    /// The target it was found on.
    pub target: String,
    pub set: String,
    pub globals: Found,
    /// The database backups to restore (of the set, or older ones standing in for missing ones).
    pub databases: Vec<Listed>,
}

impl BackupSet {
    /// The oldest start time of what the set restores (the data's age is measured from it).
    pub fn oldest_started_ms(&self) -> Option<i64> {
        self.databases
            .iter()
            .chain(std::iter::once(&self.globals.listed))
            .filter_map(|l| {
                l.prop(props::STARTED_AT)
                    .and_then(crate::timeutil::parse_rfc3339)
                    .or(l.created_ms)
            })
            .min()
    }
}

pub fn run(args: &RestoreArgs, settings: Settings) -> Result<ExitStatus> {
    let cfg = source::load(&args.source, settings)?;
    crate::encrypt::init_for_restore(args.identity.as_deref(), &cfg.settings)?;
    let server = source::parse_url("--target-url", &args.target_url, &cfg.settings)?;
    let names = source::candidates(&cfg, args.source.target.as_deref())?;
    let set = find_set(&cfg, &names, args)?;
    let mut plan = vec![
        ("set", set.set.clone()),
        ("from", set.target.clone()),
        ("globals", set.globals.listed.name.clone()),
        (
            "databases",
            set.databases
                .iter()
                .map(|l| l.prop(props::DATABASE).unwrap_or("?").to_string())
                .collect::<Vec<_>>()
                .join(","),
        ),
        ("server", server.redacted()),
    ];
    if args.globals {
        plan.pop();
        plan.pop();
        plan.push(("server", server.redacted()));
    }
    crate::log::info("whole-server restore plan", &plan);
    if crate::progress::stdin_is_terminal() && !args.yes {
        let mut err = std::io::stderr().lock();
        writeln!(
            err,
            "\nRestore the backup set {} into the server {}\n   (roles that exist are left as they are{})",
            set.set,
            server.redacted(),
            if args.update_roles { ", except that --update-roles resets them" } else { "" }
        )?;
        drop(err);
        if !super::restore::confirmed()? {
            return Ok(ExitStatus::Failed);
        }
    }
    let outcome = restore_set(
        &cfg,
        &server,
        &set,
        args,
        globals::RestoreOptions {
            update_roles: args.update_roles,
            skip_tablespaces: false,
        },
    )?;
    Ok(outcome.status())
}

/// What [`restore_set`] did.
pub struct SetOutcome {
    pub globals: globals::Restored,
    /// The globals script (for checks: roles and memberships).
    pub script: String,
    /// Each database's name and outcome.
    pub databases: Vec<(String, Result<ExitStatus>)>,
}

impl SetOutcome {
    pub fn status(&self) -> ExitStatus {
        let statuses: Vec<ExitStatus> = self
            .databases
            .iter()
            .map(|(_, r)| match r {
                Ok(s) => *s,
                Err(e) => crate::error::print(e),
            })
            .collect();
        ExitStatus::worst(&statuses)
    }
}

/// The globals, then (unless `--globals`) every database of `set`, into `server`.
pub fn restore_set(
    cfg: &ReadConfig,
    server: &ConnInfo,
    set: &BackupSet,
    args: &RestoreArgs,
    options: globals::RestoreOptions,
) -> Result<SetOutcome> {
    let script = download_globals(cfg, set, args)?;
    let mut admin = super::backup::connect(server, "the target server")?;
    if !globals::is_superuser(&mut admin)? {
        return Err(config_error_hint(
            format!(
                "{} does not connect as a superuser: roles cannot be created",
                server.redacted()
            ),
            "connect as the new server's superuser (e.g. postgres) to restore a whole server",
        ));
    }
    let restored = globals::restore(&mut admin, &script, options)?;
    drop(admin);
    crate::log::info(
        "globals restored",
        &[
            ("created_roles", restored.created_roles.len().to_string()),
            ("existing_roles_kept", restored.kept_roles.join(",")),
            ("statements", restored.statements.to_string()),
            (
                "passwords",
                if set.globals.manifest.as_ref().is_some_and(|m| {
                    m.document[globals::MANIFEST_KEY]["passwords"] == serde_json::json!(false)
                }) {
                    "left out at backup time: set them again".into()
                } else {
                    "as backed up".to_string()
                },
            ),
        ],
    );
    if !restored.skipped_tablespaces.is_empty() {
        crate::log::warn(
            "tablespaces left out",
            &[("tablespaces", restored.skipped_tablespaces.join(","))],
        );
    }
    let mut outcome = SetOutcome {
        globals: restored,
        script,
        databases: Vec::new(),
    };
    if args.globals {
        return Ok(outcome);
    }
    let queue = Mutex::new(set.databases.iter());
    let results = Mutex::new(Vec::new());
    let workers = (args.jobs as usize).clamp(1, set.databases.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let Some(listed) = queue.lock().unwrap_or_else(|p| p.into_inner()).next() else {
                    return;
                };
                let db = listed.prop(props::DATABASE).unwrap_or("").to_string();
                let result = restore_database(cfg, server, set, args, listed, &db);
                results
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((db, result));
            });
        }
    });
    outcome.databases = results.into_inner().unwrap_or_else(|p| p.into_inner());
    outcome.databases.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(outcome)
}

fn restore_database(
    cfg: &ReadConfig,
    server: &ConnInfo,
    set: &BackupSet,
    args: &RestoreArgs,
    listed: &Listed,
    db: &str,
) -> Result<ExitStatus> {
    crate::signals::check_run()?;
    let into = source::with_dbname(server, db);
    source::refuse_the_source(cfg, &into, false)?;
    let mut target = open(cfg, &set.target, args)?;
    let found = target.get(&listed.id)?;
    let mut one = args.clone();
    one.all = false;
    one.globals = false;
    one.create = true;
    one.yes = true;
    one.jobs = 1;
    one.backup = Some(listed.id.clone());
    super::restore::restore_one(&one, cfg, &into, target.as_mut(), &found)
        .map_err(|e| e.context(format!("database {db}")))
}

fn open(cfg: &ReadConfig, name: &str, args: &RestoreArgs) -> Result<Box<dyn Target>> {
    source::open_readable(cfg, name, Some(args.kind))?
        .into_iter()
        .next()
        .ok_or_else(|| {
            config_error_hint(
                format!("target {name} has nothing to read"),
                "check its settings",
            )
        })
}

/// The globals' SQL, checked against the recorded size and checksums.
fn download_globals(cfg: &ReadConfig, set: &BackupSet, args: &RestoreArgs) -> Result<String> {
    let listed = &set.globals.listed;
    let expected = crate::restore::expected_digest(listed)?;
    let mut target = open(cfg, &set.target, args)?;
    let mut bytes = Vec::new();
    target
        .open(&listed.id, Some(expected.size))?
        .read_to_end(&mut bytes)?;
    let mut h = crate::storage::Hasher::default();
    h.update(&bytes);
    let got = h.finish();
    if got != expected {
        return Err(crate::error::corrupt(format!(
            "the globals {} read back as {} bytes with SHA-256 {}, but {} bytes with SHA-256 {} were stored",
            listed.name, got.size, got.sha256, expected.size, expected.sha256
        )));
    }
    let sql = globals::open_from_storage(bytes, &set.globals)?;
    String::from_utf8(sql).map_err(|_| crate::error::corrupt("the globals are not UTF-8 text"))
}

/// The newest backup set of `--job` on the first of `names` that holds one.
pub fn find_set(cfg: &ReadConfig, names: &[String], args: &RestoreArgs) -> Result<BackupSet> {
    let mut first_error = None;
    for name in names {
        match open(cfg, name, args).and_then(|mut t| find_set_in(t.as_mut(), name, args)) {
            Ok(set) => return Ok(set),
            Err(e) => {
                crate::log::warn(
                    &format!("target {name} cannot provide a backup set"),
                    &[("error", crate::error::render(&e))],
                );
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or_else(|| {
        config_error_hint(
            "no backup storage is configured",
            "set PGDRIVE_LOCAL_DIR or Google Drive credentials and folder",
        )
    }))
}

fn find_set_in(target: &mut dyn Target, name: &str, args: &RestoreArgs) -> Result<BackupSet> {
    let mut selector = std::collections::BTreeMap::from([
        (props::MARKER.to_string(), props::MARKER_VALUE.to_string()),
        (props::KIND.to_string(), props::GLOBALS_KIND.to_string()),
    ]);
    if let Some(job) = &args.job {
        selector.insert(props::JOB.to_string(), job.clone());
    }
    let mut all = target.list(&selector)?;
    all.retain(|l| l.recorded_digest().is_some());
    all.sort_by(|a, b| {
        b.created_ms
            .cmp(&a.created_ms)
            .then_with(|| b.name.cmp(&a.name))
    });
    if args.job.is_none() {
        let mut jobs: Vec<&str> = all.iter().filter_map(|l| l.prop(props::JOB)).collect();
        jobs.sort();
        jobs.dedup();
        if jobs.len() > 1 {
            return Err(config_error_hint(
                format!(
                    "backup sets of several jobs are stored here ({}): which one?",
                    jobs.join(", ")
                ),
                "pass --job NAME",
            ));
        }
    }
    let newest = all.first().ok_or_else(|| {
        config_error_hint(
            format!(
                "no backup set (globals) {}in {}",
                args.job.as_deref().map(|j| format!("of job {j} ")).unwrap_or_default(),
                target.describe()
            ),
            "back up with `pgdrive backup --job NAME` (daily or schema jobs store the globals); `pgdrive list` shows what is stored",
        )
    })?;
    let globals = target.get(&newest.id)?;
    let set = newest
        .prop(props::SET)
        .ok_or_else(|| anyhow!("{} records no set id", newest.name))?
        .to_string();
    let job = newest.prop(props::JOB).map(String::from);
    let section = globals
        .manifest
        .as_ref()
        .map(|m| m.document[globals::MANIFEST_KEY].clone())
        .unwrap_or_default();
    let planned: Vec<String> = section["databases"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let kind = section["kind"].as_str().unwrap_or("daily").to_string();
    let mut databases = target.list(&std::collections::BTreeMap::from([
        (props::MARKER.to_string(), props::MARKER_VALUE.to_string()),
        (props::SET.to_string(), set.clone()),
    ]))?;
    databases.retain(|l| {
        l.recorded_digest().is_some() && l.prop(props::KIND) != Some(props::GLOBALS_KIND)
    });
    for db in &planned {
        if databases
            .iter()
            .any(|l| l.prop(props::DATABASE) == Some(db.as_str()))
        {
            continue;
        }
        let k = crate::kind::Kind::parse(&kind);
        let older = source::complete_backups(target, k, Some(db))?
            .into_iter()
            .find(|l| l.prop(props::JOB) == job.as_deref());
        match older {
            Some(l) => {
                crate::log::warn(
                    "the backup set has no backup of this database (it failed that run): restoring its newest older backup",
                    &[("database", db.clone()), ("backup", l.name.clone())],
                );
                databases.push(l);
            }
            None => crate::log::error(
                "the backup set has no backup of this database, and no older one is stored: it is not restored",
                &[("database", db.clone())],
            ),
        }
    }
    databases.sort_by(|a, b| a.prop(props::DATABASE).cmp(&b.prop(props::DATABASE)));
    Ok(BackupSet {
        target: name.to_string(),
        set,
        globals,
        databases,
    })
}
