//! The globals step of `backup --job` (kinds daily and schema): before the job's databases,
//! `pg_dumpall --globals-only` (see `crate::dr::globals`) is dumped; after them, and only when
//! at least one of them was stored (never after SIGTERM), it is stored on every target of the job
//! as an object of kind `globals` (its own retention group, kept like the job's backups), and
//! the job run becomes one backup set: every database backup of the run records the set id and,
//! in its manifest, the globals object. A globals step that fails is reported (log, notification)
//! and fails the job (exit 1), but the databases are still backed up. Storing it last means a
//! job that fails or is stopped leaves no globals object that looks like a usable set.

use std::collections::BTreeMap;

use anyhow::{anyhow, Context, Result};
use serde_json::json;

use crate::cli::BackupArgs;
use crate::config::{BackupConfig, RunPlan, Settings};
use crate::dr::globals;
use crate::error::ExitStatus;
use crate::host::host_name;
use crate::log;
use crate::notify::{self, Report};
use crate::storage::{props, Completion, Hasher};
use crate::timeutil;

/// One job run's backup set, as its database backups record it.
#[derive(Clone, Debug)]
pub struct SetRef {
    pub id: String,
    /// The globals object the set will store (`None`: dumping the globals failed).
    pub globals: Option<serde_json::Value>,
}

impl SetRef {
    /// The manifest section of the set's database backups.
    pub fn manifest(&self) -> serde_json::Value {
        json!({ "set": self.id, "object": self.globals })
    }
}

/// The globals of a job run, dumped and sealed before its databases, stored after them.
pub struct Pending {
    job: String,
    started_ms: i64,
    cfg: BackupConfig,
    name: String,
    bytes: Vec<u8>,
    properties: BTreeMap<String, String>,
    done: Completion,
    passwords: bool,
    roles: usize,
}

/// Dumps the globals of the job `plans` belong to; returns the set, what is still to be stored
/// (by [`finish`], once the databases are) and the step's status.
pub fn run(
    args: &BackupArgs,
    settings: &Settings,
    plans: &[RunPlan],
) -> (SetRef, Option<Pending>, ExitStatus) {
    let started_ms = timeutil::now_millis();
    let id =
        crate::dr::new_set_id(started_ms).unwrap_or_else(|_| timeutil::compact_stamp(started_ms));
    let mut set = SetRef {
        id: id.clone(),
        globals: None,
    };
    match prepare(args, settings, plans, &id, started_ms) {
        Ok(pending) => {
            set.globals = Some(json!({
                "name": pending.name,
                "sha256": pending.done.digest.sha256,
                "passwords": pending.passwords,
            }));
            (set, Some(pending), ExitStatus::Ok)
        }
        Err(error) => {
            failed(args, settings, plans, started_ms, &error);
            (set, None, ExitStatus::Failed)
        }
    }
}

/// Stores the dumped globals after the job's databases: only when at least one of them was
/// stored (a job that stored nothing leaves nothing) and never after a termination signal.
pub fn finish(
    args: &BackupArgs,
    settings: &Settings,
    plans: &[RunPlan],
    pending: Pending,
    database_statuses: &[ExitStatus],
) -> ExitStatus {
    let any_stored = database_statuses.iter().any(|s| {
        matches!(
            s,
            ExitStatus::Ok | ExitStatus::FollowUpFailed | ExitStatus::PartiallyStored
        )
    });
    if crate::signals::check().is_err() {
        return ExitStatus::Failed;
    }
    if !any_stored {
        log::warn(
            "no database of the job was stored: its globals are not stored either",
            &[("job", pending.job.clone())],
        );
        return ExitStatus::Ok;
    }
    let started_ms = pending.started_ms;
    match store(pending) {
        Ok(_) => ExitStatus::Ok,
        Err(error) => {
            failed(args, settings, plans, started_ms, &error);
            ExitStatus::Failed
        }
    }
}

fn failed(
    args: &BackupArgs,
    settings: &Settings,
    plans: &[RunPlan],
    started_ms: i64,
    error: &anyhow::Error,
) {
    log::error(
        "storing the server's globals (roles, memberships, tablespaces) failed; restore --all needs them: run the job again",
        &[("error", crate::error::render(error))],
    );
    if let Some(plan) = plans.first() {
        if let Ok(mut notifier) = notify::load(settings, plan.kind, args.notify) {
            notifier.job = plan.job.as_ref().map(|j| j.name.clone());
            notifier.run_finished(&Report::failure(
                plan.kind,
                "globals",
                &host_name(),
                started_ms,
                "globals",
                error,
            ));
        }
    }
}

fn prepare(
    args: &BackupArgs,
    settings: &Settings,
    plans: &[RunPlan],
    set: &str,
    started_ms: i64,
) -> Result<Pending> {
    let plan = plans
        .first()
        .ok_or_else(|| anyhow!("the job has no database"))?;
    let job = plan
        .job
        .as_ref()
        .map(|j| j.name.clone())
        .unwrap_or_default();
    let cfg = BackupConfig::for_run(settings.clone(), &args.overrides, plan)?;
    let mut client = super::backup::connect(&cfg.database, "the database server")?;
    let (server_version, major) = crate::server::server_version(&mut client)?;
    let superuser = globals::is_superuser(&mut client)?;
    drop(client);
    if !superuser {
        log::warn(globals::LEFT_OUT, &[("job", job.clone())]);
    }
    let pg_dump = crate::pgdump::locate(cfg.pg_dump.as_deref(), major)?;
    let dumpall = globals::locate_pg_dumpall(&pg_dump.path);
    let dumped = globals::dump(&dumpall, &cfg.database, superuser)?;
    let (roles, memberships) =
        globals::roles_and_memberships(&String::from_utf8_lossy(&dumped.sql));
    // role password hashes are secrets: sealed whenever the job encrypts its backups
    let (bytes, plain_sha256) = globals::seal_for_storage(dumped.sql, cfg.encryption.as_deref())?;
    let mut hasher = Hasher::default();
    hasher.update(&bytes);
    let digest = hasher.finish();
    let name = format!(
        "{}-globals-{}.sql{}",
        crate::commands::backup::file_name_part(&job),
        timeutil::compact_stamp(started_ms),
        if plain_sha256.is_some() { ".age" } else { "" }
    );
    let databases: Vec<String> = plans.iter().filter_map(|p| p.database.clone()).collect();
    let mut properties = BTreeMap::from([
        (props::MARKER.to_string(), props::MARKER_VALUE.to_string()),
        (props::KIND.to_string(), props::GLOBALS_KIND.to_string()),
        (props::DATABASE.to_string(), "*".to_string()),
        (props::JOB.to_string(), job.clone()),
        (props::SET.to_string(), set.to_string()),
        (
            props::STARTED_AT.to_string(),
            timeutil::rfc3339_millis(started_ms),
        ),
        (
            props::VERSION.to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
        (props::SERVER_VERSION.to_string(), server_version.clone()),
        (props::FORMAT.to_string(), "plain".to_string()),
        (props::COMPRESSION.to_string(), "none".to_string()),
        (props::HOST.to_string(), host_name()),
    ]);
    properties.insert(props::PG_DUMP_VERSION.to_string(), dumped.version.clone());
    if let (Some(plain), Some(e)) = (&plain_sha256, cfg.encryption.as_deref()) {
        properties.insert(
            props::ENCRYPTION.to_string(),
            crate::encrypt::SCHEME.to_string(),
        );
        properties.insert(props::RECIPIENTS.to_string(), e.fingerprint_list());
        properties.insert(props::PLAIN_SHA256.to_string(), plain.clone());
    }
    let done = Completion {
        properties: BTreeMap::from([
            (props::SHA256.to_string(), digest.sha256.clone()),
            (props::MD5.to_string(), digest.md5.clone()),
            (props::SIZE.to_string(), digest.size.to_string()),
            (props::RAW_SIZE.to_string(), digest.size.to_string()),
        ]),
        digest: digest.clone(),
        row_counts: BTreeMap::new(),
        sealed_row_counts: None,
        recipients: cfg
            .encryption
            .as_deref()
            .map(|e| e.fingerprints.clone())
            .unwrap_or_default(),
        manifest_extra: BTreeMap::from([(
            globals::MANIFEST_KEY.to_string(),
            globals::manifest_section(
                json!({
                    "set": set,
                    "kind": plan.kind.as_str(),
                    "passwords": dumped.passwords,
                    "left_out": (!dumped.passwords).then_some(globals::LEFT_OUT),
                    "databases": databases,
                }),
                &roles,
                &memberships,
                cfg.encryption.as_deref(),
            )?,
        )]),
    };
    Ok(Pending {
        job,
        started_ms,
        cfg,
        name,
        bytes,
        properties,
        done,
        passwords: dumped.passwords,
        roles: roles.len(),
    })
}

/// Stores `pending` on every target of the job, pruning old globals by the job's rules.
fn store(pending: Pending) -> Result<serde_json::Value> {
    let Pending {
        job,
        mut cfg,
        name,
        bytes,
        mut properties,
        done,
        passwords,
        roles,
        ..
    } = pending;
    let set = properties.get(props::SET).cloned().unwrap_or_default();
    let mut targets = super::backup::build_targets(&mut cfg);
    // one set of properties for every target: it must fit the strictest one's limit
    let budget = targets
        .iter()
        .filter_map(|t| t.target.capabilities().max_property_bytes)
        .min();
    for (k, v) in properties.iter_mut() {
        *v = crate::storage::fit_property(k, v, budget);
    }
    let digest = done.digest.clone();
    let mut stored = serde_json::Map::new();
    let mut errors = Vec::new();
    for t in targets.iter_mut() {
        let what = t.target.describe();
        let attempt = (|| -> Result<String> {
            let mut up = t.target.begin(
                &name,
                "application/sql",
                &properties,
                bytes.len().max(1 << 18),
            )?;
            up.write(bytes::Bytes::from(bytes.clone()))?;
            Ok(up.finish(&done)?.id)
        })();
        match attempt {
            Ok(id) => {
                stored.insert(t.target.name().to_string(), json!(id));
                // the globals of a set follow the job's rules on this target, as its databases do
                let policy = t.policy(&cfg);
                if !policy.keeps_all() {
                    let group = crate::retention::Group {
                        kind: props::GLOBALS_KIND,
                        database: "*",
                        job: Some(&job),
                    };
                    let pruned = super::backup::prune(t.target.as_mut(), group, &policy, &id)
                        .and_then(|(_, _, tripped)| tripped.map_or(Ok(()), Err));
                    if let Err(e) = pruned {
                        log::error(
                            "pruning old globals failed (they are kept)",
                            &[
                                ("target", what.clone()),
                                ("error", crate::error::render(&e)),
                            ],
                        );
                    }
                }
            }
            Err(e) => errors.push(format!("{what}: {}", crate::error::render(&e))),
        }
    }
    if !errors.is_empty() {
        return Err(anyhow!(
            "the globals were not stored on {}",
            errors.join("; ")
        ))
        .context(format!("{} targets stored them", stored.len()));
    }
    log::info(
        "globals stored",
        &[
            ("job", job),
            ("set", set),
            ("file", name.clone()),
            ("roles", roles.to_string()),
            (
                "passwords",
                if passwords { "included" } else { "left out" }.into(),
            ),
            ("size_bytes", digest.size.to_string()),
        ],
    );
    Ok(json!({
        "name": name,
        "sha256": digest.sha256,
        "passwords": passwords,
        "stored": stored,
    }))
}
