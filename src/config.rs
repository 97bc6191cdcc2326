//! Configuration: merges flags, environment variables, the config file and `--env-file` (in
//! that order of precedence), validates everything a run needs before anything is attempted, and renders the
//! effective settings with secrets redacted. Errors here exit 78.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;

use crate::cli::{BackupArgs, BackupOverrides};
use crate::codec::Codec;
use crate::drive::auth::Credentials;
use crate::drive::retry::RetryPolicy;
use crate::error::config_error_hint;
use crate::kind::Kind;
use crate::pgconn::ConnInfo;
use crate::pgdump::DumpFormat;
use crate::registry::Secret;

pub const DEFAULT_DRIVE_URL: &str = "https://www.googleapis.com/";
pub const DEFAULT_CHUNK_SIZE: usize = 8 << 20;
pub const CHUNK_ALIGNMENT: usize = 256 << 10;
/// PGDRIVE_STALL_TIMEOUT_MS's default: longer than a full round of Drive retries (about 3 min).
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(300);

/// The config file read when no `--config` (PGDRIVE_CONFIG) names one and it exists.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/pgdrive/pgdrive.toml";

/// `PGDRIVE_STALL_TIMEOUT_MS` (zero: the watchdog is off), for backup, restore and verify.
pub fn stall_timeout(settings: &Settings) -> anyhow::Result<Duration> {
    Ok(settings
        .parsed::<u64>("PGDRIVE_STALL_TIMEOUT_MS")?
        .map(Duration::from_millis)
        .unwrap_or(DEFAULT_STALL_TIMEOUT))
}

/// Where settings come from, below the command line: the process environment, then the config
/// file, then the env-file. Every name read must be declared in [`crate::registry`].
#[derive(Clone)]
pub struct Settings {
    file: HashMap<String, String>,
    /// The config file's values, by environment name (the registry maps keys 1:1).
    config: HashMap<String, String>,
    /// The config file's named targets and jobs.
    pub declared: crate::jobs::Declared,
    pub env_file: Option<PathBuf>,
    pub config_file: Option<PathBuf>,
    pub warnings: Vec<String>,
}

impl Settings {
    /// The environment and an optional env-file; no config file.
    pub fn load(env_file: Option<&Path>) -> Result<Settings> {
        Settings::load_layers(None, env_file)
    }

    /// The config file to read for a `--config` flag (PGDRIVE_CONFIG): that file, none for
    /// `/dev/null`, else [`DEFAULT_CONFIG_FILE`] when it exists.
    pub fn config_file_for(flag: Option<&Path>) -> Option<PathBuf> {
        match flag {
            Some(path) if path == Path::new("/dev/null") => None,
            Some(path) => Some(path.to_path_buf()),
            None => Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|p| p.exists()),
        }
    }

    /// The environment, an optional config file and an optional env-file.
    pub fn load_layers(config_file: Option<&Path>, env_file: Option<&Path>) -> Result<Settings> {
        let mut warnings = Vec::new();
        let file = match env_file {
            None => HashMap::new(),
            Some(path) => {
                let meta = std::fs::metadata(path).map_err(|e| {
                    config_error_hint(format!("cannot read env-file {}: {e}", path.display()), "check the --env-file path, and that the user pgdrive runs as may read it (mode 0600)")
                })?;
                if meta.permissions().mode() & 0o077 != 0 {
                    warnings.push(format!(
                        "env-file {} is readable by group or others (mode {:o}); it holds secrets: chmod 600 it",
                        path.display(),
                        meta.permissions().mode() & 0o777
                    ));
                }
                let text = std::fs::read_to_string(path).map_err(|e| {
                    config_error_hint(format!("cannot read env-file {}: {e}", path.display()), "check the --env-file path, and that the user pgdrive runs as may read it (mode 0600)")
                })?;
                let file = parse_env_file(&text)
                    .map_err(|e| config_error_hint(format!("env-file {}: {e}", path.display()), "each line is KEY=value, `export KEY=value` or a # comment; quote values that hold spaces or #"))?;
                warnings.extend(unknown_env_file_keys(path, &file));
                file
            }
        };
        let contents = match config_file {
            None => crate::config_file::FileContents::default(),
            Some(path) => crate::config_file::read(path, &mut warnings)?,
        };
        let settings = Settings {
            file,
            config: contents.values,
            declared: contents.declared,
            env_file: env_file.map(Path::to_path_buf),
            config_file: config_file.map(Path::to_path_buf),
            warnings,
        };
        settings.register_secrets();
        Ok(settings)
    }

    /// Tells [`crate::redact`] every secret setting's value before anything can print it
    /// (connection strings register their passwords when they are parsed).
    fn register_secrets(&self) {
        for s in crate::registry::SETTINGS {
            match s.secret {
                Secret::Value => {
                    if let Some(v) = self.get(s.env) {
                        crate::redact::register(&v);
                    }
                }
                Secret::TokenUrl => {
                    if let Some(v) = self.get(s.env) {
                        crate::redact::register_url(v.trim());
                    }
                }
                Secret::No | Secret::Embedded => {}
            }
        }
        if let Some(v) = self.get("PGPASSWORD") {
            crate::redact::register(&v);
        }
    }

    /// A setting by its (declared) environment name: the environment wins over the config file,
    /// which wins over the env-file; empty values count as unset.
    pub fn get(&self, key: &str) -> Option<String> {
        debug_assert!(
            crate::registry::readable(key),
            "the setting {key} is read but not declared in src/registry.rs"
        );
        std::env::var(key)
            .ok()
            .filter(|v| !v.is_empty())
            .or_else(|| self.config.get(key).filter(|v| !v.is_empty()).cloned())
            .or_else(|| self.file.get(key).filter(|v| !v.is_empty()).cloned())
    }

    /// Where a setting's value comes from, for messages: its name, and the config-file key and
    /// file when the value is the config file's.
    pub fn origin(&self, key: &str) -> String {
        let from_env = std::env::var(key).is_ok_and(|v| !v.is_empty());
        match (
            &self.config_file,
            crate::registry::by_env(key).and_then(|s| s.key),
        ) {
            (Some(path), Some(file_key))
                if !from_env && self.config.get(key).is_some_and(|v| !v.is_empty()) =>
            {
                format!("{key} (`{file_key}` in {})", path.display())
            }
            _ => key.to_string(),
        }
    }

    /// A whole-number setting.
    fn parsed<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>> {
        debug_assert_eq!(
            crate::registry::by_env(key).map(|s| s.ty),
            Some(crate::registry::Type::Number),
            "{key} is parsed as a number but not declared as one"
        );
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.trim().parse().map(Some).map_err(|_| {
                config_error_hint(
                    format!("{}={v:?} is not a valid value", self.origin(key)),
                    "set it to a whole number (see README \"Configuration\")",
                )
            }),
        }
    }
}

/// One warning per env-file key that is no setting (the value is never shown): a typo must not
/// silently leave a setting at its default. Warnings, not errors: env-files are shared with
/// systemd units and the jobs pgdrive replaced, which may hold other programs' variables.
fn unknown_env_file_keys(path: &Path, file: &HashMap<String, String>) -> Vec<String> {
    let mut unknown: Vec<&String> = file
        .keys()
        .filter(|k| !crate::registry::readable(k))
        .collect();
    unknown.sort();
    unknown
        .into_iter()
        .map(|key| {
            if let Some(flag) = crate::registry::by_env(key).and_then(|s| s.flags.first()) {
                return format!(
                    "env-file {}: {key} is read from the environment or {flag} only; here it is ignored",
                    path.display()
                );
            }
            let guess = match crate::registry::nearest_env(key) {
                Some(near) => format!(" (did you mean {near}?)"),
                None => String::new(),
            };
            format!(
                "env-file {}: {key} is not a pgdrive setting{guess}; it is ignored",
                path.display()
            )
        })
        .collect()
}

/// Parses systemd EnvironmentFile= syntax: `KEY=VALUE` lines, `#`/`;` comments, single or double
/// quotes (which may span lines), backslash escapes in double quotes and unquoted values.
pub fn parse_env_file(text: &str) -> Result<HashMap<String, String>> {
    let mut map = HashMap::new();
    let mut chars = text.chars().peekable();
    let mut line_no = 1;
    loop {
        // skip blank space and comment lines
        while let Some(&c) = chars.peek() {
            if c == '\n' {
                line_no += 1;
                chars.next();
            } else if c.is_whitespace() {
                chars.next();
            } else if c == '#' || c == ';' {
                for c in chars.by_ref() {
                    if c == '\n' {
                        line_no += 1;
                        break;
                    }
                }
            } else {
                break;
            }
        }
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == '\n' {
                break;
            }
            key.push(c);
            chars.next();
        }
        let key = key
            .trim()
            .strip_prefix("export ")
            .unwrap_or(key.trim())
            .trim()
            .to_string();
        if chars.next() != Some('=')
            || key.is_empty()
            || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            anyhow::bail!("line {line_no}: expected KEY=VALUE");
        }
        while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            chars.next();
        }
        let mut value = String::new();
        match chars.peek() {
            Some(&q @ ('"' | '\'')) => {
                chars.next();
                loop {
                    match chars.next() {
                        None => {
                            anyhow::bail!("line {line_no}: unterminated quote in value of {key}")
                        }
                        Some(c) if c == q => break,
                        Some('\\') if q == '"' => match chars.next() {
                            Some('n') => value.push('\n'),
                            Some('\n') => line_no += 1,
                            Some(c) => value.push(c),
                            None => {}
                        },
                        Some(c) => {
                            if c == '\n' {
                                line_no += 1;
                            }
                            value.push(c)
                        }
                    }
                }
                // ignore the rest of the line
                for c in chars.by_ref() {
                    if c == '\n' {
                        line_no += 1;
                        break;
                    }
                }
            }
            _ => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        line_no += 1;
                        break;
                    }
                    value.push(c);
                }
                value = value.trim_end().to_string();
            }
        }
        map.insert(key, value);
    }
    Ok(map)
}

/// Parses `8MiB`, `256KiB`, `1048576`, `16M` into bytes.
pub fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num.parse().ok()?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// Google Drive destination.
#[derive(Debug)]
pub struct DriveSettings {
    pub folder_id: String,
    pub base_url: String,
    pub credentials: Credentials,
}

/// Everything `pgdrive backup` needs, validated.
#[derive(Debug)]
pub struct BackupConfig {
    pub kind: Kind,
    pub database: ConnInfo,
    /// Where the lock and the `backups` table live; the backed-up database unless
    /// PGDRIVE_CATALOG_URL says otherwise.
    pub catalog: ConnInfo,
    pub keep: u32,
    pub drive: Option<DriveSettings>,
    pub local_dir: Option<PathBuf>,
    pub codec: Codec,
    /// Compression threads.
    pub threads: usize,
    pub format: DumpFormat,
    pub chunk_size: usize,
    pub pg_dump: Option<PathBuf>,
    pub critical_tables: Vec<String>,
    pub retry: RetryPolicy,
    /// A backup with no bytes from pg_dump and none accepted by a target for this long fails
    /// as stalled (zero: never).
    pub stall_timeout: Duration,
    pub settings_warnings: Vec<String>,
    /// The config file the settings were read from, if any (shown in the first log line).
    pub config_file: Option<PathBuf>,
    /// The config file's job this run belongs to (`backup --job NAME`).
    pub job: Option<String>,
    /// The config file's targets the job writes to, in the job's order, besides the implicit
    /// `drive` and `local` targets above.
    pub named: Vec<NamedTarget>,
    /// The job's retention rules (`[jobs.NAME]` keep keys), the default of its targets.
    pub rules: crate::retention::RuleSpec,
    /// age encryption of every stored backup (`None`: stored as compressed).
    pub encryption: Option<std::sync::Arc<crate::encrypt::Encryption>>,
}

/// A `[targets.NAME]` a run writes to, resolved.
#[derive(Debug)]
pub struct NamedTarget {
    pub name: String,
    pub place: NamedPlace,
    pub options: crate::storage::config::TargetOptions,
}

#[derive(Debug)]
pub enum NamedPlace {
    Drive(Box<DriveSettings>),
    Local(PathBuf),
    Sftp(crate::storage::sftp::SftpConfig),
    S3(
        Box<crate::storage::s3::S3Place>,
        crate::storage::s3::AwsCredentials,
    ),
}

/// What one run of `backup` is: a built-in kind (`--kind`), or one database of a config file's
/// job (`--job`).
#[derive(Clone, Debug)]
pub struct RunPlan {
    pub kind: Kind,
    pub job: Option<crate::jobs::JobSpec>,
    /// The database to back up when it is not DATABASE_URL's own (from the job's `databases`).
    pub database: Option<String>,
}

pub fn default_keep(kind: Kind) -> u32 {
    match kind {
        Kind::Daily => 14,
        Kind::Hourly => 48,
        Kind::Schema => 0,
    }
}

pub fn folder_variable(kind: Kind) -> &'static str {
    match kind {
        Kind::Daily => "GOOGLE_DRIVE_FOLDER_ID",
        Kind::Hourly => "HOURLY_DRIVE_FOLDER_ID",
        Kind::Schema => "SCHEMA_DRIVE_FOLDER_ID",
    }
}

pub fn keep_variable(kind: Kind) -> &'static str {
    match kind {
        Kind::Daily => "PGDRIVE_KEEP_DAILY",
        Kind::Hourly => "PGDRIVE_KEEP_HOURLY",
        Kind::Schema => "PGDRIVE_KEEP_SCHEMA",
    }
}

/// Splits `PGDRIVE_CRITICAL_TABLES` on commas outside double quotes.
pub fn split_table_list(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            ',' if !quoted => {
                out.push(std::mem::take(&mut current));
            }
            c => current.push(c),
        }
    }
    out.push(current);
    out.into_iter()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

/// The database connection from `DATABASE_URL`, resolved like libpq would.
pub fn database_from(settings: &Settings, key: &str) -> Result<Option<ConnInfo>> {
    let Some(url) = settings.get(key) else {
        return Ok(None);
    };
    let info = ConnInfo::parse_setting(key, &url)?;
    Ok(Some(info.resolve(&|k| settings.get(k))))
}

/// `DATABASE_URL`, which must be set for a backup.
pub fn required_database(settings: &Settings) -> Result<ConnInfo> {
    database_from(settings, "DATABASE_URL")?.ok_or_else(|| {
        config_error_hint(
            "DATABASE_URL is not set",
            "set DATABASE_URL=postgres://user@host:5432/dbname in the environment, the config file or the env-file (the password may come from ~/.pgpass)",
        )
    })
}

/// A chunk size setting (`what` names where it was written), checked against Drive's rules.
fn parse_chunk_size(what: &str, s: &str) -> Result<usize> {
    let n = parse_size(s).ok_or_else(|| {
        config_error_hint(
            format!("{what}: chunk size {s:?} is not a size (e.g. 8MiB)"),
            "write a size such as 8MiB: a multiple of 256KiB, at most 1GiB",
        )
    })?;
    if n == 0 || n % CHUNK_ALIGNMENT != 0 || n > (1 << 30) {
        return Err(config_error_hint(
            format!("{what}: chunk size {s:?} is not a multiple of 256KiB between 256KiB and 1GiB"),
            "Drive requires upload chunks in multiples of 256KiB; try 8MiB",
        ));
    }
    Ok(n)
}

/// The implicit targets of `backup --kind`: the kind's Drive folder (with Google credentials)
/// and the local directory (`--to`, PGDRIVE_LOCAL_DIR); at least one must be configured.
fn implicit_targets(
    overrides: &BackupOverrides,
    settings: &Settings,
    kind: Kind,
    drive_url: &str,
) -> Result<(Option<DriveSettings>, Option<PathBuf>)> {
    let credentials = Credentials::from_settings(settings)?;
    let folder = overrides
        .folder
        .clone()
        .or_else(|| settings.get(folder_variable(kind)));
    let drive = match (credentials, folder) {
            (Some(credentials), Some(folder_id)) => {
                Some(DriveSettings { folder_id, base_url: normalize_base_url(drive_url)?, credentials })
            }
            (Some(_), None) => {
                return Err(config_error_hint(
                    format!("no Drive folder for {kind} backups"),
                    format!("set {} (or pass --folder ID): the ID is the last part of the folder's URL", folder_variable(kind)),
                ))
            }
            (None, Some(_)) => {
                return Err(config_error_hint(
                    format!("a Drive folder is set for {kind} backups but no Google credentials are"),
                    "set GOOGLE_SERVICE_ACCOUNT_JSON (key JSON or path) or GOOGLE_APPLICATION_CREDENTIALS (path)",
                ))
            }
            (None, None) => None,
        };
    let local_dir = overrides
        .local_dir
        .clone()
        .or_else(|| settings.get("PGDRIVE_LOCAL_DIR").map(PathBuf::from));
    if drive.is_none() && local_dir.is_none() {
        return Err(config_error_hint(
                "no backup target is configured",
                format!(
                    "set GOOGLE_SERVICE_ACCOUNT_JSON and {} for Google Drive, or pass --to DIR (PGDRIVE_LOCAL_DIR) for a local directory",
                    folder_variable(kind)
                ),
            ));
    }

    Ok((drive, local_dir))
}

type ResolvedTargets = (Option<DriveSettings>, Option<PathBuf>, Vec<NamedTarget>);

/// The targets a job names: `drive` and `local` as for `--kind`, the rest from `[targets.*]`.
fn named_targets_of(
    settings: &Settings,
    kind: Kind,
    job: &str,
    names: &[String],
    drive_url: &str,
) -> Result<ResolvedTargets> {
    let missing_credentials = |what: &str| {
        config_error_hint(
            format!("[jobs.{job}] writes to {what}, but no Google credentials are configured"),
            "set GOOGLE_SERVICE_ACCOUNT_JSON (key JSON or path) or GOOGLE_APPLICATION_CREDENTIALS (path)",
        )
    };
    let (mut drive, mut local_dir, mut named) = (None, None, Vec::new());
    for name in names {
        match name.as_str() {
            "drive" => {
                let folder_id = settings.get(folder_variable(kind)).ok_or_else(|| {
                    config_error_hint(
                        format!("[jobs.{job}] writes to `drive`, but no Drive folder is set for {kind} backups"),
                        format!("set {}, or declare a [targets.NAME] with type = \"drive\" and name it in the job", folder_variable(kind)),
                    )
                })?;
                let credentials = Credentials::from_settings(settings)?
                    .ok_or_else(|| missing_credentials("`drive`"))?;
                drive = Some(DriveSettings {
                    folder_id,
                    base_url: normalize_base_url(drive_url)?,
                    credentials,
                });
            }
            "local" => {
                local_dir = Some(settings.get("PGDRIVE_LOCAL_DIR").map(PathBuf::from).ok_or_else(|| {
                    config_error_hint(
                        format!("[jobs.{job}] writes to `local`, but PGDRIVE_LOCAL_DIR is not set"),
                        "set PGDRIVE_LOCAL_DIR, or declare a [targets.NAME] with type = \"local\" and name it in the job",
                    )
                })?);
            }
            _ => {
                let spec = settings.declared.target(name).ok_or_else(|| {
                    config_error_hint(
                        format!("[jobs.{job}] names the target `{name}`, which is not declared"),
                        "add a [targets.NAME] table for it",
                    )
                })?;
                let place = match &spec.place {
                    crate::jobs::Place::Drive {
                        folder_id,
                        drive_url: own_url,
                    } => {
                        let credentials =
                            Credentials::from_settings(settings)?.ok_or_else(|| {
                                missing_credentials(&format!("the Drive target `{name}`"))
                            })?;
                        NamedPlace::Drive(Box::new(DriveSettings {
                            folder_id: folder_id.clone(),
                            base_url: normalize_base_url(own_url.as_deref().unwrap_or(drive_url))?,
                            credentials,
                        }))
                    }
                    crate::jobs::Place::Local { dir } => NamedPlace::Local(dir.clone()),
                    crate::jobs::Place::Sftp(s) => NamedPlace::Sftp(s.clone()),
                    crate::jobs::Place::S3(p) => NamedPlace::S3(
                        p.clone(),
                        crate::storage::s3::AwsCredentials::from_environment()?,
                    ),
                };
                let chunk_size = spec
                    .chunk_size
                    .as_deref()
                    .map(|s| parse_chunk_size(&format!("[targets.{name}] chunk_size"), s))
                    .transpose()?;
                named.push(NamedTarget {
                    name: name.clone(),
                    place,
                    options: crate::storage::config::TargetOptions {
                        chunk_size,
                        keep: spec.keep,
                        rules: spec.rules.clone(),
                    },
                });
            }
        }
    }
    Ok((drive, local_dir, named))
}

/// A job's encryption: its own `encrypt_*` keys when it has any, else the settings'.
fn encrypt_spec(
    settings: &Settings,
    job: Option<&crate::jobs::JobSpec>,
) -> crate::encrypt::EncryptSpec {
    if let Some(spec) = job.map(|j| &j.encrypt).filter(|s| !s.is_empty()) {
        return spec.clone();
    }
    crate::encrypt::EncryptSpec {
        recipients: settings
            .get("PGDRIVE_ENCRYPT_RECIPIENTS")
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|r| !r.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default(),
        recipients_file: settings
            .get("PGDRIVE_ENCRYPT_RECIPIENTS_FILE")
            .map(PathBuf::from),
        passphrase_file: settings
            .get("PGDRIVE_ENCRYPT_PASSPHRASE_FILE")
            .map(PathBuf::from),
    }
}

impl BackupConfig {
    /// The configuration of `backup --kind` (a built-in kind) with its flags.
    pub fn load(args: &BackupArgs, settings: Settings) -> Result<BackupConfig> {
        let kind = args.kind.ok_or_else(|| {
            config_error_hint("no backup job was named", "pass --kind daily|hourly|schema, or --job NAME for a [jobs.NAME] of the config file")
        })?;
        BackupConfig::new(kind, settings, &args.overrides)
    }

    /// The configuration of a `kind` job from the settings, with `overrides` (the command line's
    /// flags) on top; `BackupOverrides::default()` is what a scheduled run without flags sees
    /// (`check` judges that one).
    pub fn new(
        kind: Kind,
        settings: Settings,
        overrides: &BackupOverrides,
    ) -> Result<BackupConfig> {
        BackupConfig::for_run(
            settings,
            overrides,
            &RunPlan {
                kind,
                job: None,
                database: None,
            },
        )
    }

    /// The configuration of one run (a kind, or one database of a job): the flags, then the
    /// job's keys, then the settings.
    pub fn for_run(
        settings: Settings,
        overrides: &BackupOverrides,
        plan: &RunPlan,
    ) -> Result<BackupConfig> {
        let kind = plan.kind;
        let job = plan.job.as_ref();
        let configured = required_database(&settings)?;
        let database = match &plan.database {
            Some(name) => configured.with_param("dbname", name),
            None => configured.clone(),
        };
        // a job over several databases keeps one catalog: the configured database's
        let catalog =
            database_from(&settings, "PGDRIVE_CATALOG_URL")?.unwrap_or_else(|| configured.clone());

        let keep = match overrides.keep.or(job.and_then(|j| j.keep)) {
            Some(k) => k,
            None => settings
                .parsed::<u32>(keep_variable(kind))?
                .unwrap_or(default_keep(kind)),
        };

        let codec = match overrides
            .compress
            .clone()
            .or_else(|| job.and_then(|j| j.compress.clone()))
            .or_else(|| settings.get("PGDRIVE_COMPRESS"))
        {
            Some(spec) => Codec::parse(&spec)?,
            None => crate::codec::DEFAULT,
        };
        let threads = match overrides.threads {
            Some(n) => n,
            None => settings
                .parsed::<usize>("PGDRIVE_THREADS")?
                .unwrap_or_else(crate::codec::default_threads),
        };
        if threads == 0 || threads > 256 {
            return Err(config_error_hint(
                format!("--threads {threads} is not between 1 and 256"),
                "set --threads (PGDRIVE_THREADS) to a number from 1 to 256",
            ));
        }
        let format = match overrides
            .format
            .clone()
            .or_else(|| job.and_then(|j| j.format.clone()))
            .or_else(|| settings.get("PGDRIVE_FORMAT"))
        {
            Some(f) => DumpFormat::parse(&f).ok_or_else(|| {
                config_error_hint(format!("unknown dump format {f:?}"), "use plain or custom")
            })?,
            None => DumpFormat::Plain,
        };

        let chunk_size = match overrides
            .chunk_size
            .clone()
            .or_else(|| job.and_then(|j| j.chunk_size.clone()))
            .or_else(|| settings.get("PGDRIVE_CHUNK_SIZE"))
        {
            None => DEFAULT_CHUNK_SIZE,
            Some(s) => parse_chunk_size("chunk_size", &s)?,
        };

        let critical_tables = if kind == Kind::Hourly {
            let tables = match job.and_then(|j| j.critical_tables.clone()) {
                Some(tables) => tables,
                None => {
                    split_table_list(&settings.get("PGDRIVE_CRITICAL_TABLES").unwrap_or_default())
                }
            };
            if tables.is_empty() {
                return Err(config_error_hint(
                    "PGDRIVE_CRITICAL_TABLES is empty: the hourly backup has nothing to dump",
                    "set PGDRIVE_CRITICAL_TABLES=orders,public.payments (comma-separated, schema-qualified names allowed)",
                ));
            }
            tables
        } else {
            Vec::new()
        };

        let drive_url = overrides
            .drive_url
            .clone()
            .or_else(|| settings.get("PGDRIVE_DRIVE_URL"))
            .unwrap_or_else(|| DEFAULT_DRIVE_URL.into());
        // a job names its targets; `--kind` (and a job that names none) writes to the implicit ones
        let named_targets: &[String] = job.map(|j| j.targets.as_slice()).unwrap_or_default();
        let (drive, local_dir, named) = if named_targets.is_empty() {
            let (drive, local_dir) = implicit_targets(overrides, &settings, kind, &drive_url)?;
            (drive, local_dir, Vec::new())
        } else {
            let job_name = job.map(|j| j.name.as_str()).unwrap_or_default();
            let (drive, local_dir, mut named) =
                named_targets_of(&settings, kind, job_name, named_targets, &drive_url)?;
            // a flag wins over a target's own setting too
            for t in &mut named {
                if overrides.keep.is_some() {
                    t.options.keep = None;
                    t.options.rules = Default::default();
                }
                if overrides.chunk_size.is_some() {
                    t.options.chunk_size = None;
                }
            }
            (drive, local_dir, named)
        };

        let pg_dump = overrides
            .pg_dump
            .clone()
            .or_else(|| settings.get("PGDRIVE_PG_DUMP").map(PathBuf::from));

        let mut retry = RetryPolicy::default();
        if let Some(n) = settings.parsed::<u32>("PGDRIVE_RETRY_MAX")? {
            retry.max_retries = n;
        }
        if let Some(ms) = settings.parsed::<u64>("PGDRIVE_RETRY_INITIAL_MS")? {
            retry.initial = Duration::from_millis(ms);
        }
        if let Some(ms) = settings.parsed::<u64>("PGDRIVE_RETRY_MAX_MS")? {
            retry.max = Duration::from_millis(ms);
        }

        let stall_timeout = stall_timeout(&settings)?;
        let encryption = crate::encrypt::Encryption::from_spec(&encrypt_spec(&settings, job))?
            .map(std::sync::Arc::new);

        Ok(BackupConfig {
            kind,
            database,
            catalog,
            keep,
            drive,
            local_dir,
            codec,
            threads,
            format,
            chunk_size,
            pg_dump,
            critical_tables,
            retry,
            stall_timeout,
            settings_warnings: settings.warnings,
            config_file: settings.config_file,
            job: job.map(|j| j.name.clone()),
            named,
            // `--keep` replaces every rule
            rules: match (overrides.keep, job) {
                (None, Some(j)) => j.rules.clone(),
                _ => Default::default(),
            },
            encryption,
        })
    }

    /// The effective settings for the first log line; no secret is included.
    pub fn summary(&self) -> Vec<(&'static str, String)> {
        let mut s = vec![
            ("kind", self.kind.to_string()),
            ("database", self.database.redacted()),
            (
                "keep",
                if self.keep == 0 {
                    "all".into()
                } else {
                    self.keep.to_string()
                },
            ),
            ("format", self.format.as_str().to_string()),
            ("compress", self.codec.label()),
            (
                "encrypt",
                self.encryption.as_ref().map_or("none".into(), |e| {
                    format!("age to {}", e.fingerprint_list())
                }),
            ),
            ("threads", self.threads.to_string()),
            ("chunk_size", self.chunk_size.to_string()),
            (
                "stall_timeout_ms",
                self.stall_timeout.as_millis().to_string(),
            ),
        ];
        if self.catalog.redacted() != self.database.redacted() {
            s.push(("catalog", self.catalog.redacted()));
        }
        if let Some(d) = &self.drive {
            s.push(("drive_folder", d.folder_id.clone()));
            s.push(("drive_url", d.base_url.clone()));
            s.push(("auth", d.credentials.describe()));
        }
        if let Some(l) = &self.local_dir {
            s.push(("local_dir", l.display().to_string()));
        }
        if let Some(job) = &self.job {
            s.push(("job", job.clone()));
        }
        for t in &self.named {
            let place = match &t.place {
                NamedPlace::Drive(d) => format!("Drive folder {}", d.folder_id),
                NamedPlace::Local(dir) => dir.display().to_string(),
                NamedPlace::Sftp(s) => s.describe(),
                NamedPlace::S3(p, _) => format!("s3://{}/{}", p.bucket, p.prefix),
            };
            s.push(("target", format!("{}: {place}", t.name)));
        }
        if !self.critical_tables.is_empty() {
            s.push(("tables", self.critical_tables.join(",")));
        }
        if let Some(path) = &self.config_file {
            s.push(("config", path.display().to_string()));
        }
        s
    }
}

/// Where `list`, `restore` and `verify` read backups from, and where the catalog is (if anywhere).
/// Unlike a backup, these commands must work from the storage alone (disaster recovery): no
/// DATABASE_URL is needed, and the catalog is optional.
pub struct ReadConfig {
    /// `--from DIR` was given: that directory is the one target.
    pub only_from_dir: bool,
    /// Drive folders by kind (only the kinds whose folder is configured).
    pub drive_folders: Vec<(Kind, String)>,
    pub drive_url: String,
    pub local_dir: Option<PathBuf>,
    /// DATABASE_URL, when set: names the database whose backups `latest` means.
    pub database: Option<ConnInfo>,
    /// PGDRIVE_CATALOG_URL, else DATABASE_URL.
    pub catalog: Option<ConnInfo>,
    pub retry: RetryPolicy,
    pub settings: Settings,
}

impl ReadConfig {
    /// `from_dir` (a `--from DIR` flag) selects the local directory and ignores Drive; otherwise
    /// Drive is used when credentials are configured, else PGDRIVE_LOCAL_DIR.
    pub fn load(
        settings: Settings,
        from_dir: Option<PathBuf>,
        drive_url: Option<String>,
    ) -> Result<ReadConfig> {
        let database = database_from(&settings, "DATABASE_URL")?;
        let catalog = match database_from(&settings, "PGDRIVE_CATALOG_URL")? {
            Some(c) => Some(c),
            None => database.clone(),
        };
        let mut drive_folders = Vec::new();
        let mut local_dir = from_dir.clone();
        if from_dir.is_none() {
            let has_credentials = settings.get("GOOGLE_SERVICE_ACCOUNT_JSON").is_some()
                || settings.get("GOOGLE_APPLICATION_CREDENTIALS").is_some();
            if has_credentials {
                for kind in [Kind::Daily, Kind::Hourly, Kind::Schema] {
                    if let Some(folder) = settings.get(folder_variable(kind)) {
                        drive_folders.push((kind, folder));
                    }
                }
                if drive_folders.is_empty() && settings.declared.targets.is_empty() {
                    return Err(config_error_hint(
                        "Google credentials are set but no Drive folder is",
                        "set GOOGLE_DRIVE_FOLDER_ID (and HOURLY_DRIVE_FOLDER_ID / SCHEMA_DRIVE_FOLDER_ID for those kinds), or declare [targets.NAME] in the config file",
                    ));
                }
            } else {
                local_dir = settings.get("PGDRIVE_LOCAL_DIR").map(PathBuf::from);
            }
        }
        let named = from_dir.is_none() && !settings.declared.targets.is_empty();
        if drive_folders.is_empty() && local_dir.is_none() && !named {
            return Err(config_error_hint(
                "no backup storage is configured",
                "set GOOGLE_SERVICE_ACCOUNT_JSON and GOOGLE_DRIVE_FOLDER_ID for Google Drive, or pass --from DIR (PGDRIVE_LOCAL_DIR)",
            ));
        }
        let drive_url = normalize_base_url(
            &drive_url
                .or_else(|| settings.get("PGDRIVE_DRIVE_URL"))
                .unwrap_or_else(|| DEFAULT_DRIVE_URL.into()),
        )?;
        let mut retry = RetryPolicy::default();
        if let Some(n) = settings.parsed::<u32>("PGDRIVE_RETRY_MAX")? {
            retry.max_retries = n;
        }
        if let Some(ms) = settings.parsed::<u64>("PGDRIVE_RETRY_INITIAL_MS")? {
            retry.initial = Duration::from_millis(ms);
        }
        if let Some(ms) = settings.parsed::<u64>("PGDRIVE_RETRY_MAX_MS")? {
            retry.max = Duration::from_millis(ms);
        }
        Ok(ReadConfig {
            only_from_dir: from_dir.is_some(),
            drive_folders,
            drive_url,
            local_dir,
            database,
            catalog,
            retry,
            settings,
        })
    }

    /// The Drive folder of a kind, or a configuration error naming the variable to set.
    pub fn folder(&self, kind: Kind) -> Result<&str> {
        self.drive_folders
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, f)| f.as_str())
            .ok_or_else(|| {
                config_error_hint(
                    format!("no Drive folder for {kind} backups"),
                    format!("set {}", folder_variable(kind)),
                )
            })
    }

    /// Drive credentials, read afresh (each target owns its client).
    pub fn credentials(&self) -> Result<Credentials> {
        Credentials::from_settings(&self.settings)?
            .ok_or_else(|| config_error_hint("Google credentials are not set", "set GOOGLE_SERVICE_ACCOUNT_JSON (or GOOGLE_APPLICATION_CREDENTIALS); see README \"Google setup\""))
    }
}

/// Ensures the base URL ends with '/', is http(s) and carries no credentials or query.
pub fn normalize_base_url(url: &str) -> Result<String> {
    let url = url.trim();
    if !(url.starts_with("https://") || url.starts_with("http://"))
        || url.contains('?')
        || url.contains('@')
    {
        return Err(config_error_hint(
            format!("PGDRIVE_DRIVE_URL {url:?} is not an http(s) base URL"),
            "use the default https://www.googleapis.com/ or an emulator's root such as http://127.0.0.1:8080/",
        ));
    }
    Ok(if url.ends_with('/') {
        url.to_string()
    } else {
        format!("{url}/")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_env_file_names_are_reported_without_their_values() {
        let file = parse_env_file(
            "DATABASE_URL=x\nPGHOST=h\nDATABSE_URL=postgres://u:hunter2@h/db\nNODE_ENV=hunter2\nPGDRIVE_LOG_FORMAT=json\n",
        )
        .unwrap();
        let warnings = unknown_env_file_keys(Path::new("/etc/pgdrive/pgdrive.env"), &file);
        assert_eq!(
            warnings,
            [
                "env-file /etc/pgdrive/pgdrive.env: DATABSE_URL is not a pgdrive setting (did you mean DATABASE_URL?); it is ignored",
                "env-file /etc/pgdrive/pgdrive.env: NODE_ENV is not a pgdrive setting; it is ignored",
                "env-file /etc/pgdrive/pgdrive.env: PGDRIVE_LOG_FORMAT is read from the environment or --log-format only; here it is ignored",
            ]
        );
    }

    /// The registry documents defaults as text; they must be the defaults the code applies.
    #[test]
    fn documented_defaults_are_the_code_defaults() {
        let documented = |env: &str| {
            crate::registry::by_env(env)
                .unwrap()
                .default
                .trim_matches('`')
                .to_string()
        };
        for kind in [Kind::Daily, Kind::Hourly, Kind::Schema] {
            assert_eq!(
                documented(keep_variable(kind)),
                default_keep(kind).to_string()
            );
        }
        assert_eq!(
            documented("PGDRIVE_COMPRESS"),
            crate::codec::DEFAULT.label()
        );
        assert_eq!(
            parse_size(&documented("PGDRIVE_CHUNK_SIZE")),
            Some(DEFAULT_CHUNK_SIZE)
        );
        assert_eq!(documented("PGDRIVE_FORMAT"), DumpFormat::Plain.as_str());
        assert_eq!(
            documented("PGDRIVE_STALL_TIMEOUT_MS"),
            DEFAULT_STALL_TIMEOUT.as_millis().to_string()
        );
        assert_eq!(documented("PGDRIVE_DRIVE_URL"), DEFAULT_DRIVE_URL);
        let retry = RetryPolicy::default();
        assert_eq!(
            documented("PGDRIVE_RETRY_MAX"),
            retry.max_retries.to_string()
        );
        assert_eq!(
            documented("PGDRIVE_RETRY_INITIAL_MS"),
            retry.initial.as_millis().to_string()
        );
        assert_eq!(
            documented("PGDRIVE_RETRY_MAX_MS"),
            retry.max.as_millis().to_string()
        );
        assert_eq!(
            documented("PGDRIVE_SENDGRID_URL"),
            crate::notify::settings::DEFAULT_SENDGRID_URL
        );
        assert_eq!(
            documented("PGDRIVE_CONFIG"),
            format!("{DEFAULT_CONFIG_FILE}` when present")
        );
    }

    #[test]
    fn the_config_file_is_the_flag_s_else_the_default_when_present() {
        let given = Path::new("/srv/pgdrive.toml");
        assert_eq!(
            Settings::config_file_for(Some(given)).as_deref(),
            Some(given)
        );
        assert_eq!(
            Settings::config_file_for(Some(Path::new("/dev/null"))),
            None
        );
        assert_eq!(
            Settings::config_file_for(None),
            Path::new(DEFAULT_CONFIG_FILE)
                .exists()
                .then(|| PathBuf::from(DEFAULT_CONFIG_FILE))
        );
    }

    #[test]
    fn env_file_syntax() {
        let text = "# comment\n; other comment\nA=1\nexport B = two words  \nC=\"quoted # not comment\"\nD='single \\n raw'\nE=\"multi\nline\"\nF=\"esc \\\" q\"\n\nG=\n";
        let m = parse_env_file(text).unwrap();
        assert_eq!(m["A"], "1");
        assert_eq!(m["B"], "two words");
        assert_eq!(m["C"], "quoted # not comment");
        assert_eq!(m["D"], "single \\n raw");
        assert_eq!(m["E"], "multi\nline");
        assert_eq!(m["F"], "esc \" q");
        assert_eq!(m["G"], "");
    }

    #[test]
    fn env_file_errors_name_the_line_not_the_value() {
        let err = parse_env_file("A=1\nthis is not a setting\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
        let err = parse_env_file("A=\"secret-unterminated\n")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("secret"), "{err}");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("8MiB"), Some(8 << 20));
        assert_eq!(parse_size("256KiB"), Some(256 << 10));
        assert_eq!(parse_size("262144"), Some(262_144));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("lots"), None);
    }

    #[test]
    fn table_lists_respect_quotes() {
        assert_eq!(
            split_table_list(" orders, public.payments ,"),
            vec!["orders", "public.payments"]
        );
        assert_eq!(
            split_table_list("\"a,b\".\"c\",d"),
            vec!["\"a,b\".\"c\"", "d"]
        );
        assert!(split_table_list(" , ").is_empty());
    }

    #[test]
    fn base_urls() {
        assert_eq!(
            normalize_base_url("http://127.0.0.1:9/").unwrap(),
            "http://127.0.0.1:9/"
        );
        assert_eq!(
            normalize_base_url("https://x.test").unwrap(),
            "https://x.test/"
        );
        assert!(normalize_base_url("ftp://x").is_err());
        assert!(normalize_base_url("www.googleapis.com").is_err());
    }
}
