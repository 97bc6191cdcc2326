//! Which targets are configured, and under which names. Today's settings (environment variables
//! and flags) describe at most two targets, one per kind of destination: `drive` (the Drive
//! folder of the backup's kind) and `local` (`PGDRIVE_LOCAL_DIR`, `--to`, `--from`). This module
//! is the one place that turns settings into [`TargetConfig`]s; [`super::open`] turns those into
//! targets. A configuration file naming more targets only has to produce more `TargetConfig`s.

use std::path::PathBuf;

use anyhow::Result;

use crate::config::{BackupConfig, NamedPlace, ReadConfig};
use crate::drive::auth::Credentials;
use crate::drive::retry::RetryPolicy;
use crate::error::config_error_hint;
use crate::jobs::Place;
use crate::kind::Kind;

/// The implicit Drive target's name.
pub const DRIVE: &str = "drive";
/// The implicit local-directory target's name.
pub const LOCAL: &str = "local";

/// One named target and where it stores.
#[derive(Debug)]
pub struct TargetConfig {
    pub name: String,
    pub kind: TargetKind,
}

/// What a job wants of one of its targets, beyond where it is: settings that override the
/// job's own for this target only.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TargetOptions {
    /// Upload part size for this target (else the job's `chunk_size`).
    pub chunk_size: Option<usize>,
    /// Backups to keep on this target (else the job's `keep`); 0 keeps all.
    pub keep: Option<u32>,
}

/// A target a backup writes to, with the job's options for it.
#[derive(Debug)]
pub struct BackupTarget {
    pub config: TargetConfig,
    pub options: TargetOptions,
}

#[derive(Debug)]
pub enum TargetKind {
    Drive(Box<DriveConfig>),
    Local {
        dir: PathBuf,
    },
    /// In-process storage (tests); the store is shared by every target opened on it.
    Memory(super::memory::MemoryStore),
    Sftp(super::sftp::SftpConfig),
    S3(Box<super::s3::S3Config>),
}

#[derive(Debug)]
pub struct DriveConfig {
    pub folder_id: String,
    pub base_url: String,
    pub credentials: Credentials,
    pub retry: RetryPolicy,
    /// Files per listing request (Drive allows up to 1000).
    pub page_size: u32,
}

impl DriveConfig {
    pub const DEFAULT_PAGE_SIZE: u32 = 1000;
}

/// The targets a backup writes to: the implicit `drive`, the job's named targets in its order,
/// then the implicit `local`. Takes the credentials out of the configuration.
pub fn for_backup(cfg: &mut BackupConfig) -> Vec<BackupTarget> {
    let retry = cfg.retry.clone();
    let drive = |name: String, d: crate::config::DriveSettings| TargetConfig {
        name,
        kind: TargetKind::Drive(Box::new(DriveConfig {
            folder_id: d.folder_id,
            base_url: d.base_url,
            credentials: d.credentials,
            retry: retry.clone(),
            page_size: DriveConfig::DEFAULT_PAGE_SIZE,
        })),
    };
    let implicit = |config| BackupTarget {
        config,
        options: TargetOptions::default(),
    };
    let mut out = Vec::new();
    if let Some(d) = cfg.drive.take() {
        out.push(implicit(drive(DRIVE.into(), d)));
    }
    for t in std::mem::take(&mut cfg.named) {
        let config = match t.place {
            NamedPlace::Drive(d) => drive(t.name, *d),
            NamedPlace::Local(dir) => TargetConfig {
                name: t.name,
                kind: TargetKind::Local { dir },
            },
            NamedPlace::Sftp(s) => TargetConfig {
                name: t.name,
                kind: TargetKind::Sftp(s),
            },
            NamedPlace::S3(place, credentials) => TargetConfig {
                name: t.name,
                kind: TargetKind::S3(Box::new(super::s3::S3Config {
                    place: *place,
                    credentials,
                    retry: retry.clone(),
                    page_size: 1000,
                })),
            },
        };
        out.push(BackupTarget {
            config,
            options: t.options,
        });
    }
    if let Some(dir) = &cfg.local_dir {
        out.push(implicit(TargetConfig {
            name: LOCAL.into(),
            kind: TargetKind::Local { dir: dir.clone() },
        }));
    }
    out
}

/// The names `list`, `restore`, `verify` and `status` can read from, in order of preference:
/// `drive` (when Google credentials and a folder are configured), the config file's
/// `[targets.*]`, then `local` (`PGDRIVE_LOCAL_DIR` or `--from DIR`).
pub fn readable_names(cfg: &ReadConfig) -> Vec<String> {
    let mut names = Vec::new();
    if !cfg.drive_folders.is_empty() {
        names.push(DRIVE.to_string());
    }
    if !cfg.only_from_dir {
        names.extend(cfg.settings.declared.targets.iter().map(|t| t.name.clone()));
    }
    if local_dir(cfg).is_some() {
        names.push(LOCAL.to_string());
    }
    names
}

/// Which of the readable targets to use: the one named `wanted`, else the first (today's
/// behaviour: Drive when configured) or, with `fallback`, all of them in order.
pub fn choose(cfg: &ReadConfig, wanted: Option<&str>, fallback: bool) -> Result<Vec<String>> {
    let names = readable_names(cfg);
    match wanted {
        Some(w) => match names.iter().find(|n| *n == w) {
            Some(n) => Ok(vec![n.clone()]),
            None => Err(config_error_hint(
                format!(
                    "no target named {w:?} is configured (configured: {})",
                    names.join(", ")
                ),
                "`drive` needs Google credentials and a Drive folder; `local` needs PGDRIVE_LOCAL_DIR or --from DIR; others are the config file's [targets.NAME]",
            )),
        },
        None if fallback => Ok(names),
        None => Ok(names.into_iter().take(1).collect()),
    }
}

/// The configurations of the readable target `name` for backups of `kind` (every configured
/// kind when `None`): the implicit Drive target has one folder per kind, so it may take several;
/// a named target is one place for every kind.
pub fn for_reading(cfg: &ReadConfig, name: &str, kind: Option<Kind>) -> Result<Vec<TargetConfig>> {
    if name == LOCAL {
        let dir = local_dir(cfg).ok_or_else(|| {
            config_error_hint(
                "no local directory is configured",
                "set PGDRIVE_LOCAL_DIR or pass --from DIR",
            )
        })?;
        return Ok(vec![TargetConfig {
            name: LOCAL.into(),
            kind: TargetKind::Local { dir },
        }]);
    }
    if let Some(spec) = cfg.settings.declared.target(name) {
        return Ok(vec![named(spec, &cfg.drive_url, &cfg.retry, || {
            cfg.credentials()
        })?]);
    }
    let folders: Vec<String> = match kind {
        Some(k) => vec![cfg.folder(k)?.to_string()],
        None => cfg.drive_folders.iter().map(|(_, f)| f.clone()).collect(),
    };
    let mut seen = std::collections::BTreeSet::new();
    folders
        .into_iter()
        .filter(|f| seen.insert(f.clone()))
        .map(|folder_id| {
            Ok(TargetConfig {
                name: DRIVE.into(),
                kind: TargetKind::Drive(Box::new(DriveConfig {
                    folder_id,
                    base_url: cfg.drive_url.clone(),
                    credentials: cfg.credentials()?,
                    retry: cfg.retry.clone(),
                    page_size: DriveConfig::DEFAULT_PAGE_SIZE,
                })),
            })
        })
        .collect()
}

/// The configuration of a config file's `[targets.NAME]` for reading (a Drive one with the
/// global credentials, and its own API URL or `default_url`).
fn named(
    spec: &crate::jobs::TargetSpec,
    default_url: &str,
    retry: &RetryPolicy,
    credentials: impl FnOnce() -> Result<Credentials>,
) -> Result<TargetConfig> {
    let kind = match &spec.place {
        Place::Local { dir } => TargetKind::Local { dir: dir.clone() },
        Place::Sftp(s) => TargetKind::Sftp(s.clone()),
        Place::S3(place) => TargetKind::S3(Box::new(super::s3::S3Config {
            place: (**place).clone(),
            credentials: super::s3::AwsCredentials::from_environment()?,
            retry: retry.clone(),
            page_size: 1000,
        })),
        Place::Drive {
            folder_id,
            drive_url,
        } => TargetKind::Drive(Box::new(DriveConfig {
            folder_id: folder_id.clone(),
            base_url: match drive_url {
                Some(url) => crate::config::normalize_base_url(url)?,
                None => default_url.to_string(),
            },
            credentials: credentials()?,
            retry: retry.clone(),
            page_size: DriveConfig::DEFAULT_PAGE_SIZE,
        })),
    };
    Ok(TargetConfig {
        name: spec.name.clone(),
        kind,
    })
}

/// The local directory readers may use: `--from DIR`, or PGDRIVE_LOCAL_DIR (also when Drive is
/// configured, as the second place `restore` looks).
fn local_dir(cfg: &ReadConfig) -> Option<PathBuf> {
    cfg.local_dir
        .clone()
        .or_else(|| cfg.settings.get("PGDRIVE_LOCAL_DIR").map(PathBuf::from))
}

/// The target `status` lists a kind's backups from when the catalog cannot be read: `wanted`, or
/// the first of Drive (folder and credentials set) and PGDRIVE_LOCAL_DIR; `None` when nothing is
/// configured. Its Drive retries are few: the dashboard is informative and must not wait minutes.
pub fn for_status(
    settings: &crate::config::Settings,
    kind: Kind,
    wanted: Option<&str>,
) -> Result<Option<TargetConfig>> {
    let mut candidates = Vec::new();
    if let (Some(folder_id), Some(credentials)) = (
        settings.get(crate::config::folder_variable(kind)),
        Credentials::from_settings(settings)?,
    ) {
        let base_url = crate::config::normalize_base_url(
            &settings
                .get("PGDRIVE_DRIVE_URL")
                .unwrap_or_else(|| crate::config::DEFAULT_DRIVE_URL.into()),
        )?;
        candidates.push(TargetConfig {
            name: DRIVE.into(),
            kind: TargetKind::Drive(Box::new(DriveConfig {
                folder_id,
                base_url,
                credentials,
                retry: RetryPolicy {
                    max_retries: 2,
                    ..RetryPolicy::default()
                },
                page_size: DriveConfig::DEFAULT_PAGE_SIZE,
            })),
        });
    }
    if let Some(dir) = settings.get("PGDRIVE_LOCAL_DIR") {
        candidates.push(TargetConfig {
            name: LOCAL.into(),
            kind: TargetKind::Local { dir: dir.into() },
        });
    }
    if let Some(spec) = wanted.and_then(|w| settings.declared.target(w)) {
        let base_url = crate::config::normalize_base_url(
            &settings
                .get("PGDRIVE_DRIVE_URL")
                .unwrap_or_else(|| crate::config::DEFAULT_DRIVE_URL.into()),
        )?;
        let retry = RetryPolicy {
            max_retries: 2,
            ..RetryPolicy::default()
        };
        return named(spec, &base_url, &retry, || {
            Credentials::from_settings(settings)?.ok_or_else(|| {
                config_error_hint(
                    format!("the Drive target {:?} needs Google credentials", spec.name),
                    "set GOOGLE_SERVICE_ACCOUNT_JSON (key JSON or path) or GOOGLE_APPLICATION_CREDENTIALS (path)",
                )
            })
        })
        .map(Some);
    }
    Ok(match wanted {
        Some(w) => Some(
            candidates
                .into_iter()
                .find(|c| c.name == w)
                .ok_or_else(|| {
                    config_error_hint(
                        format!("no target named {w:?} is configured for {kind} backups"),
                        "`drive` needs Google credentials and the kind's Drive folder; `local` needs PGDRIVE_LOCAL_DIR",
                    )
                })?,
        ),
        None => candidates.into_iter().next(),
    })
}
