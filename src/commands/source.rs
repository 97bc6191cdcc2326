//! What `list`, `restore` and `verify` share: opening the storage to read from (Drive folders by
//! kind, or a local directory), finding a backup (`latest` or an id), the optional catalog
//! connection, and the guard that keeps a restore away from the source database.

use std::time::Duration;

use anyhow::Result;

use crate::cli::SourceArgs;
use crate::config::{ReadConfig, Settings};
use crate::error::config_error_hint;
use crate::kind::Kind;
use crate::pgconn::ConnInfo;
use crate::storage::config as storage_config;
use crate::storage::{props, Found, Listed, Target};

pub fn load(args: &SourceArgs, settings: Settings) -> Result<ReadConfig> {
    let cfg = ReadConfig::load(settings, args.from_dir.clone(), args.drive_url.clone())?;
    for w in &cfg.settings.warnings {
        crate::log::warn(w, &[]);
    }
    Ok(cfg)
}

/// The readable targets for these kinds (every configured kind when `kind` is `None`), opened
/// and checked: those of the target named `--target`, else of the first configured one (Drive
/// when configured: one per distinct folder; else the local directory).
pub fn targets(
    cfg: &ReadConfig,
    kind: Option<Kind>,
    wanted: Option<&str>,
) -> Result<Vec<Box<dyn Target>>> {
    let mut out = Vec::new();
    for name in storage_config::choose(cfg, wanted, false)? {
        out.extend(open_readable(cfg, &name, kind)?);
    }
    Ok(out)
}

/// The names a restore may read from, in order: `--target`'s alone, else every configured
/// target (Drive, then the local directory), so that it can fall back.
pub fn candidates(cfg: &ReadConfig, wanted: Option<&str>) -> Result<Vec<String>> {
    storage_config::choose(cfg, wanted, true)
}

/// Opens the targets named `name` for `kind` and checks they can be read.
pub fn open_readable(
    cfg: &ReadConfig,
    name: &str,
    kind: Option<Kind>,
) -> Result<Vec<Box<dyn Target>>> {
    storage_config::for_reading(cfg, name, kind)?
        .into_iter()
        .map(|c| {
            let mut t = crate::storage::open(c);
            let what = t.describe();
            t.check_readable()
                .map_err(|e| e.context(format!("opening {what}")))?;
            Ok(t)
        })
        .collect()
}

/// The database whose backups `latest` means: --database, else DATABASE_URL's.
pub fn wanted_database(cfg: &ReadConfig, args: &SourceArgs) -> Option<String> {
    args.database
        .clone()
        .or_else(|| cfg.database.as_ref().map(|d| d.dbname().to_string()))
}

/// Complete pgdrive backups in `target` (optionally of one kind and database), newest first.
pub fn complete_backups(
    target: &mut dyn Target,
    kind: Option<Kind>,
    database: Option<&str>,
) -> Result<Vec<Listed>> {
    let mut selector = std::collections::BTreeMap::from([(
        props::MARKER.to_string(),
        props::MARKER_VALUE.to_string(),
    )]);
    if let Some(k) = kind {
        selector.insert(props::KIND.to_string(), k.as_str().to_string());
    }
    if let Some(d) = database {
        // at most 63 bytes (NAMEDATALEN): recorded whole on every target
        selector.insert(props::DATABASE.to_string(), d.to_string());
    }
    let mut listed = target.list(&selector)?;
    listed.retain(|l| l.recorded_digest().is_some());
    listed.sort_by(|a, b| {
        b.created_ms
            .cmp(&a.created_ms)
            .then_with(|| b.name.cmp(&a.name))
    });
    Ok(listed)
}

/// Resolves `latest` or an id to one complete backup with its manifest.
pub fn find(
    target: &mut dyn Target,
    spec: &str,
    kind: Kind,
    database: Option<&str>,
) -> Result<Found> {
    find_in(target, spec, kind, database).map_err(FindError::into_inner)
}

/// Why a backup was not found: `Ambiguous` (backups of several databases, and none named) is a
/// question for the operator that another target must not answer by guessing.
enum FindError {
    Ambiguous(anyhow::Error),
    Other(anyhow::Error),
}

impl FindError {
    fn into_inner(self) -> anyhow::Error {
        match self {
            FindError::Ambiguous(e) | FindError::Other(e) => e,
        }
    }
}

impl From<anyhow::Error> for FindError {
    fn from(e: anyhow::Error) -> FindError {
        FindError::Other(e)
    }
}

fn find_in(
    target: &mut dyn Target,
    spec: &str,
    kind: Kind,
    database: Option<&str>,
) -> std::result::Result<Found, FindError> {
    if spec != "latest" {
        let found = target.get(spec)?;
        if found.listed.recorded_digest().is_none() {
            return Err(FindError::Other(config_error_hint(
                format!("{} ({spec}) is not a complete pgdrive backup: it has no recorded size and checksums", found.listed.name),
                "take the id of a complete backup from `pgdrive list`",
            )));
        }
        return Ok(found);
    }
    let all = complete_backups(target, Some(kind), database)?;
    if database.is_none() {
        let mut names: Vec<&str> = all.iter().filter_map(|l| l.prop(props::DATABASE)).collect();
        names.sort();
        names.dedup();
        if names.len() > 1 {
            return Err(FindError::Ambiguous(config_error_hint(
                format!("{kind} backups of several databases are stored here ({}): which one is latest?", names.join(", ")),
                "pass --database NAME (or set DATABASE_URL)",
            )));
        }
    }
    let Some(newest) = all.into_iter().next() else {
        return Err(FindError::Other(config_error_hint(
            format!(
                "no complete {kind} backup{} in {}",
                database
                    .map(|d| format!(" of database {d}"))
                    .unwrap_or_default(),
                target.describe()
            ),
            "`pgdrive list` shows what is stored; choose another with --kind or --database",
        )));
    };
    Ok(target.get(&newest.id)?)
}

/// Finds `spec` in the first of `names` that can be reached and holds it (the next one is tried
/// when a target cannot be opened, listed or read, or lacks the backup; not when `latest` is
/// ambiguous there), and returns that target with the backup. When none has it, the first target's error is returned, so a single target
/// fails exactly as it always did.
pub fn find_with_fallback(
    cfg: &ReadConfig,
    names: &[String],
    spec: &str,
    kind: Kind,
    database: Option<&str>,
) -> Result<(Box<dyn Target>, Found)> {
    let mut first_error = None;
    for (i, name) in names.iter().enumerate() {
        let attempt = (|| -> std::result::Result<_, FindError> {
            let mut target = open_readable(cfg, name, Some(kind))?
                .into_iter()
                .next()
                .ok_or_else(|| {
                    config_error_hint(
                        format!("target {name} has nothing to read"),
                        "check its settings",
                    )
                })?;
            let found = find_in(target.as_mut(), spec, kind, database)?;
            Ok((target, found))
        })();
        match attempt {
            Ok(hit) => return Ok(hit),
            // which database is meant is for the operator to say, not for the next target
            Err(FindError::Ambiguous(e)) => return Err(e),
            Err(FindError::Other(e)) => {
                if let Some(next) = names.get(i + 1) {
                    crate::log::warn(
                        &format!("target {name} cannot provide the backup; trying target {next}"),
                        &[("error", crate::error::render(&e))],
                    );
                }
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

/// The catalog connection, if one is configured and reachable within a few seconds; otherwise
/// one warning line and `None` (these commands work without it).
pub fn optional_catalog(cfg: &ReadConfig) -> Option<postgres::Client> {
    let info = cfg.catalog.as_ref()?;
    let attempt = || -> Result<postgres::Client> {
        let mut config = info.client_config("pgdrive")?;
        config.connect_timeout(Duration::from_secs(5));
        // the same TLS as every other connection: sslmode=require must not look unreachable
        let mut client = info.connect_with(config)?;
        // a missing table means there is no catalog here
        crate::catalog::probe(&mut client)?;
        Ok(client)
    };
    match attempt() {
        Ok(c) => Some(c),
        Err(e) => {
            crate::log::warn(
                "the catalog is not reachable; continuing with storage alone",
                &[
                    ("catalog", info.redacted()),
                    ("error", crate::error::render(&e)),
                ],
            );
            None
        }
    }
}

/// Refuses a restore into a database pgdrive protects (DATABASE_URL's, the catalog's), decided by
/// identity (see [`crate::identity`]), whatever flags are given. A target database that does not
/// exist is none of them. A protected database that cannot be reached cannot be compared: then
/// only `--clean` is refused (it would replace what is there); a restore into an empty database
/// or a new one cannot overwrite anything.
pub fn refuse_the_source(cfg: &ReadConfig, target: &ConnInfo, clean: bool) -> Result<()> {
    let mut protected: Vec<(&str, &ConnInfo)> = Vec::new();
    for (what, info) in [
        ("DATABASE_URL", &cfg.database),
        ("PGDRIVE_CATALOG_URL", &cfg.catalog),
    ] {
        if let Some(info) = info {
            if !protected
                .iter()
                .any(|(_, p)| p.redacted() == info.redacted())
            {
                protected.push((what, info));
            }
        }
    }
    if protected.is_empty() {
        return Ok(());
    }
    let mut target_client = match target.connect("pgdrive") {
        Ok(c) => c,
        Err(e) if crate::server::database_missing(&e) => return Ok(()),
        Err(e) => {
            return Err(crate::server::connect_failure(
                target,
                "the restore target",
                e,
            ))
        }
    };
    for (what, info) in protected {
        let probe = match crate::identity::probe(info) {
            Ok(p) => p,
            Err(e) if clean => {
                return Err(config_error_hint(
                    format!(
                        "refusing to restore with --clean: the database in {what} cannot be reached ({}), so pgdrive cannot prove that {} is not it",
                        crate::error::render(&e),
                        target.redacted()
                    ),
                    format!("if that database is gone, unset {what}; or restore into a new database with --create"),
                ));
            }
            Err(e) => {
                crate::log::warn(
                    "the protected database cannot be reached to compare it with the target; going on, since the target must be empty",
                    &[("database", what.to_string()), ("error", crate::error::render(&e))],
                );
                continue;
            }
        };
        if let Some(how) = crate::identity::same_as(&mut target_client, &probe)? {
            return Err(config_error_hint(
                format!(
                    "refusing to restore into {}: it is the database in {what} ({how})",
                    target.redacted()
                ),
                "restore into a new database (--create) and switch over once it is checked; no flag overrides this",
            ));
        }
    }
    Ok(())
}

/// Parses a user-given database URL (target or scratch), insisting that it names its database
/// (a database inherited from PGDATABASE or the user name would be a surprise), then resolves it.
pub fn parse_url(flag: &str, url: &str, settings: &Settings) -> Result<ConnInfo> {
    let info = ConnInfo::parse_setting(flag, url)?;
    if info.get("dbname").is_none_or(|d| d.is_empty()) {
        return Err(config_error_hint(
            format!("{flag} names no database"),
            "write it as postgres://user@host:5432/DBNAME",
        ));
    }
    Ok(info.resolve(&|k| settings.get(k)))
}

/// The same server, another database (for CREATE/DROP DATABASE).
pub fn with_dbname(info: &ConnInfo, dbname: &str) -> ConnInfo {
    info.with_param("dbname", dbname)
}

/// Quotes an identifier for SQL.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::config::{TargetConfig, TargetKind};
    use crate::storage::memory::{Faults, MemoryStore};
    use crate::storage::{Completion, Hasher};

    fn memory(store: &MemoryStore) -> Box<dyn Target> {
        crate::storage::open(TargetConfig {
            name: "mem".into(),
            kind: TargetKind::Memory(store.clone()),
        })
    }

    /// Stores a daily backup of `database`; `complete: false` leaves out the recorded checksums.
    fn stored(t: &mut dyn Target, name: &str, database: &str, complete: bool) -> String {
        let props = std::collections::BTreeMap::from([
            (props::MARKER.to_string(), props::MARKER_VALUE.to_string()),
            (props::KIND.to_string(), "daily".to_string()),
            (props::DATABASE.to_string(), database.to_string()),
        ]);
        let data = name.as_bytes().to_vec();
        let mut h = Hasher::default();
        h.update(&data);
        let digest = h.finish();
        let mut done = Completion {
            properties: Default::default(),
            digest: digest.clone(),
            row_counts: Default::default(),
            manifest_extra: Default::default(),
            sealed_row_counts: None,
            recipients: Vec::new(),
        };
        if complete {
            done.properties = std::collections::BTreeMap::from([
                (props::SHA256.to_string(), digest.sha256),
                (props::MD5.to_string(), digest.md5),
                (props::SIZE.to_string(), digest.size.to_string()),
            ]);
        }
        let mut up = t.begin(name, "application/gzip", &props, 1 << 20).unwrap();
        up.write(data.into()).unwrap();
        let id = up.finish(&done).unwrap().id;
        std::thread::sleep(std::time::Duration::from_millis(2)); // distinct creation times
        id
    }

    #[test]
    fn latest_is_the_newest_complete_backup_of_the_database_and_never_a_guess() {
        let store = MemoryStore::default();
        let mut t = memory(&store);
        stored(t.as_mut(), "a-1", "a", true);
        let newest_complete = stored(t.as_mut(), "a-2", "a", true);
        stored(t.as_mut(), "a-3", "a", false); // newer, but its checksums were never recorded
        let found = find(t.as_mut(), "latest", Kind::Daily, Some("a")).unwrap();
        assert_eq!(found.listed.id, newest_complete);
        // the only database stored: no name needed
        assert_eq!(
            find(t.as_mut(), "latest", Kind::Daily, None)
                .unwrap()
                .listed
                .id,
            newest_complete
        );
        // an incomplete backup asked for by id is refused
        let incomplete = t.list(&Default::default()).unwrap();
        let a3 = incomplete.iter().find(|l| l.name == "a-3").unwrap();
        assert!(find(t.as_mut(), &a3.id, Kind::Daily, None).is_err());
        // two databases and none named: a question, not a guess
        stored(t.as_mut(), "b-1", "b", true);
        let e = find(t.as_mut(), "latest", Kind::Daily, None).unwrap_err();
        assert!(format!("{e:#}").contains("which one is latest?"), "{e:#}");
        assert!(find(t.as_mut(), "latest", Kind::Hourly, Some("a")).is_err());
        // a storage that cannot be reached fails the lookup
        store.set_faults(Faults {
            unreachable: true,
            ..Faults::default()
        });
        assert!(find(t.as_mut(), "latest", Kind::Daily, Some("a")).is_err());
    }

    #[test]
    fn user_urls_must_name_their_database() {
        let settings = Settings::load(None).unwrap();
        assert!(parse_url("--target-url", "postgres://u@h:5432", &settings).is_err());
        assert!(parse_url("--target-url", "postgres://u@h:5432/", &settings).is_err());
        let ok = parse_url("--target-url", "postgres://u:pw@h:5432/new", &settings).unwrap();
        assert_eq!(ok.dbname(), "new");
        assert!(!with_dbname(&ok, "postgres").redacted().contains("pw"));
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
