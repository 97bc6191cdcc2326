//! Named targets and jobs, declared in the config file as `[targets.NAME]` and `[jobs.NAME]`:
//! their keys (declared once here: the parser, the unknown-key report and the README's tables
//! come from [`TARGET_KEYS`] and [`JOB_KEYS`]), read into typed specs, and checked against each
//! other before anything runs (every target a job names exists, kinds and types are known,
//! names can be told apart).
//!
//! A target is a place with its own retention and part size; a job says what to dump (a kind
//! and its defaults, one database, a list, or every connectable database), how, and to which
//! targets. The implicit targets of the environment-only setup keep their names: `drive` (the
//! Drive folder of the job's kind) and `local` (`PGDRIVE_LOCAL_DIR`); a job that names no
//! targets writes to those, as `backup --kind` does.
//!
//! Invariant (as for the rest of the config file): no value is ever quoted in a message.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::config_file::FileError;
use crate::kind::Kind;

/// One key of a `[targets.NAME]` or `[jobs.NAME]` table.
pub struct Key {
    pub name: &'static str,
    /// What the value looks like, for errors and the README.
    pub shape: &'static str,
    pub help: &'static str,
}

/// The keys of `[targets.NAME]`.
pub const TARGET_KEYS: &[Key] = &[
    Key {
        name: "type",
        shape: "\"drive\", \"local\", \"s3\" or \"sftp\"",
        help: "What the target is: a Google Drive folder, a local directory, an S3-compatible bucket or a directory on an SSH server (required).",
    },
    Key {
        name: "folder_id",
        shape: "string",
        help: "`drive`: the folder's ID, the last part of its URL (required). The Google credentials are the global ones.",
    },
    Key {
        name: "drive_url",
        shape: "URL",
        help: "`drive`: the API base URL [default: `drive_url`, else Google's].",
    },
    Key {
        name: "dir",
        shape: "path",
        help: "`local`: the directory (required); created when missing, as with `--to`. `sftp`: the directory on the server, relative to the login directory unless absolute (required; must exist).",
    },
    Key {
        name: "host",
        shape: "host name",
        help: "`sftp`: the SSH server (required), e.g. `u12345.your-storagebox.de`.",
    },
    Key {
        name: "port",
        shape: "number",
        help: "`sftp`: the SSH port [default: 22; a Hetzner Storage Box uses 23].",
    },
    Key {
        name: "user",
        shape: "string",
        help: "`sftp`: the login name [default: ssh's, the local user or ~/.ssh/config's].",
    },
    Key {
        name: "identity_file",
        shape: "path",
        help: "`sftp`: the private key (without a passphrase) [default: the ssh-agent's keys and ssh's default keys]. No password is ever used.",
    },
    Key {
        name: "known_hosts",
        shape: "path",
        help: "`sftp`: the known_hosts file holding the server's host key; an unknown or changed key is refused [default: ~/.ssh/known_hosts].",
    },
    Key {
        name: "bucket",
        shape: "string",
        help: "`s3`: the bucket (required). Credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, else AWS_PROFILE in the shared credentials file (never in this file).",
    },
    Key {
        name: "prefix",
        shape: "string",
        help: "`s3`: key prefix the backups and their manifests go under, e.g. `pg/prod/` [default: the bucket's top].",
    },
    Key {
        name: "region",
        shape: "string",
        help: "`s3`: the region signed into every request (`auto` for R2) [default: `us-east-1`].",
    },
    Key {
        name: "endpoint",
        shape: "URL",
        help: "`s3`: the provider's endpoint, e.g. `https://fsn1.your-objectstorage.com` [default: AWS, `https://s3.REGION.amazonaws.com`].",
    },
    Key {
        name: "path_style",
        shape: "true or false",
        help: "`s3`: address the bucket in the path (`ENDPOINT/BUCKET/KEY`) instead of the host name [default: true with `endpoint`, false for AWS].",
    },
    Key {
        name: "storage_class",
        shape: "string",
        help: "`s3`: storage class of new backups, e.g. `STANDARD_IA` [default: the bucket's].",
    },
    Key {
        name: "sse",
        shape: "\"AES256\" or \"aws:kms\"",
        help: "`s3`: server-side encryption requested for new backups (SSE-S3 or SSE-KMS) [default: the bucket's].",
    },
    Key {
        name: "sse_kms_key_id",
        shape: "string",
        help: "`s3` with `sse = \"aws:kms\"`: the KMS key id or ARN [default: the account's S3 key].",
    },
    Key {
        name: "part_size",
        shape: "size",
        help: "`s3`: the smallest part of an upload, 5MiB to 5GiB. Each backup grows it so that 4 × the largest earlier backup of its job and database fits in 10,000 parts (logged with the resulting ceiling); the size is fixed per upload, as R2 requires [default: the target's `chunk_size`].",
    },
    Key {
        name: "keep",
        shape: "number",
        help: "Keep the newest N backups of each job and database on this target (keep-last). A target that sets any `keep*` rule uses its own rules alone, else the job's; no rule at all keeps everything [default: the job's rules].",
    },
    Key {
        name: "chunk_size",
        shape: "size",
        help: "Upload part size for this target, a multiple of 256KiB; `s3`: at least 5MiB, and one backup holds at most 10,000 parts (8MiB: 78 GiB, 64MiB: 625 GiB) [default: the job's].",
    },
];

/// The keys of `[jobs.NAME]`.
pub const JOB_KEYS: &[Key] = &[
    Key {
        name: "kind",
        shape: "\"daily\", \"hourly\" or \"schema\"",
        help: "What is dumped, and the defaults (keep, Drive folder, lock) that come with it (required).",
    },
    Key {
        name: "databases",
        shape: "array of names, or \"all\"",
        help: "The databases of `database_url`'s server to back up, each with its own lock, catalog row, file and retention; \"all\": every database that accepts connections, templates excepted [default: `database_url`'s database].",
    },
    Key {
        name: "targets",
        shape: "array of target names",
        help: "Where each backup goes, all at once: names of `[targets.*]`, or `drive` / `local` for the environment's [default: `drive` and/or `local`, as configured].",
    },
    Key {
        name: "keep",
        shape: "number",
        help: "Keep the newest N backups per database on each target without its own rules (keep-last); the `keep_*` rules below combine with it [default: the kind's keep setting when the job sets no rule].",
    },
    Key {
        name: "format",
        shape: "\"plain\" or \"custom\"",
        help: "Dump format [default: `format`].",
    },
    Key {
        name: "compress",
        shape: "codec[:level]",
        help: "Compression [default: `compress`].",
    },
    Key {
        name: "chunk_size",
        shape: "size",
        help: "Upload part size for targets without their own [default: `chunk_size`].",
    },
    Key {
        name: "critical_tables",
        shape: "array of table names",
        help: "`hourly` jobs: the tables to dump [default: `critical_tables`].",
    },
    Key {
        name: "encrypt_recipients",
        shape: "array of age1… or SSH public keys",
        help: "Encrypt every backup with age to these recipients (any one private key restores); the name gains `.age`. A job with any `encrypt_*` key ignores the `encrypt.*` settings [default: `encrypt.recipients`].",
    },
    Key {
        name: "encrypt_recipients_file",
        shape: "path",
        help: "A file of recipients, one per line, as `age -R` reads [default: `encrypt.recipients_file`].",
    },
    Key {
        name: "encrypt_passphrase_file",
        shape: "path",
        help: "Encrypt with the passphrase on this file's first line (age's scrypt mode) instead of recipients [default: `encrypt.passphrase_file`].",
    },
];

/// The names the environment-only setup's targets are known by.
pub const IMPLICIT_TARGETS: &[&str] = &["drive", "local"];

/// Where a named target stores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    Drive {
        folder_id: String,
        drive_url: Option<String>,
    },
    Local {
        dir: PathBuf,
    },
    Sftp(crate::storage::sftp::SftpConfig),
    S3(Box<crate::storage::s3::S3Place>),
}

/// A `[targets.NAME]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetSpec {
    pub name: String,
    pub place: Place,
    pub keep: Option<u32>,
    pub chunk_size: Option<String>,
    /// The other retention keys (`keep_daily`, ...; `keep_last` is `keep`).
    pub rules: crate::retention::RuleSpec,
}

/// Which databases a job backs up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Databases {
    /// The database of `database_url` (the environment-only behaviour).
    Configured,
    Named(Vec<String>),
    /// Every database of the server that accepts connections, templates excepted.
    AllConnectable,
}

/// A `[jobs.NAME]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobSpec {
    pub name: String,
    pub kind: Kind,
    pub databases: Databases,
    /// Target names; empty: the implicit ones.
    pub targets: Vec<String>,
    pub keep: Option<u32>,
    pub rules: crate::retention::RuleSpec,
    pub format: Option<String>,
    pub compress: Option<String>,
    pub chunk_size: Option<String>,
    pub critical_tables: Option<Vec<String>>,
    pub encrypt: crate::encrypt::EncryptSpec,
}

/// Everything `[targets]` and `[jobs]` declare.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Declared {
    pub targets: Vec<TargetSpec>,
    pub jobs: Vec<JobSpec>,
}

impl Declared {
    pub fn job(&self, name: &str) -> Option<&JobSpec> {
        self.jobs.iter().find(|j| j.name == name)
    }

    pub fn target(&self, name: &str) -> Option<&TargetSpec> {
        self.targets.iter().find(|t| t.name == name)
    }
}

fn refused(message: String, hint: &str) -> FileError {
    FileError {
        message,
        hint: hint.to_string(),
    }
}

const HINT: &str = "the keys of [targets.NAME] and [jobs.NAME] are listed in pgdrive.toml.example and README \"Jobs and targets\"";

/// Reads the `[targets]` and `[jobs]` tables of a config file (either may be absent).
pub fn parse(
    targets: Option<&toml::Value>,
    jobs: Option<&toml::Value>,
) -> Result<Declared, FileError> {
    let mut declared = Declared::default();
    for (name, table) in tables("targets", targets)? {
        declared.targets.push(target(&name, table)?);
    }
    for (name, table) in tables("jobs", jobs)? {
        declared.jobs.push(job(&name, table)?);
    }
    for j in &declared.jobs {
        for t in &j.targets {
            if declared.target(t).is_none() && !IMPLICIT_TARGETS.contains(&t.as_str()) {
                let known: Vec<&str> = declared
                    .targets
                    .iter()
                    .map(|t| t.name.as_str())
                    .chain(IMPLICIT_TARGETS.iter().copied())
                    .collect();
                return Err(refused(
                    format!(
                        "[jobs.{}] names the target `{t}`, which is not declared (declared: {})",
                        j.name,
                        known.join(", ")
                    ),
                    "add a [targets.NAME] table for it, or correct the name in the job's `targets`",
                ));
            }
        }
    }
    Ok(declared)
}

/// The `NAME = { ... }` entries of `[section]`, with checked names.
fn tables<'a>(
    section: &str,
    value: Option<&'a toml::Value>,
) -> Result<BTreeMap<String, &'a toml::Table>, FileError> {
    let Some(value) = value else {
        return Ok(BTreeMap::new());
    };
    let toml::Value::Table(entries) = value else {
        return Err(refused(
            format!("`{section}` must be a table of [{section}.NAME] tables"),
            HINT,
        ));
    };
    let mut out = BTreeMap::new();
    for (name, entry) in entries {
        let toml::Value::Table(table) = entry else {
            return Err(refused(
                format!("`{section}.{name}` must be a table ([{section}.{name}])"),
                HINT,
            ));
        };
        check_name(section, name)?;
        out.insert(name.clone(), table);
    }
    Ok(out)
}

/// Names are short words: they end up in logs, catalog rows, lock names and `--target`.
fn check_name(section: &str, name: &str) -> Result<(), FileError> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if !ok {
        return Err(refused(
            format!("[{section}.…] has a name that is not 1 to 40 letters, digits, `-` or `_`"),
            "name jobs and targets like `nightly`, `offsite-drive` or `nas_1`",
        ));
    }
    if section == "targets" && IMPLICIT_TARGETS.contains(&name) {
        return Err(refused(
            format!("[targets.{name}]: `{name}` is the name of the environment's own target"),
            "give the target another name (`drive` is the Drive folder of the environment settings, `local` is PGDRIVE_LOCAL_DIR)",
        ));
    }
    Ok(())
}

/// A table's own keys and the retention keys both tables take.
fn all_keys(keys: &'static [Key]) -> impl Iterator<Item = &'static Key> {
    keys.iter().chain(crate::retention::KEYS)
}

/// Reports keys of `table` that `keys` does not declare, each with the nearest declared one.
fn unknown_keys(what: &str, table: &toml::Table, keys: &'static [Key]) -> Result<(), FileError> {
    let unknown: Vec<String> = table
        .keys()
        .filter(|k| !all_keys(keys).any(|d| d.name == k.as_str()))
        .map(
            |k| match crate::registry::nearest(k, all_keys(keys).map(|d| d.name)) {
                Some(near) => format!("`{k}` (did you mean `{near}`?)"),
                None => format!("`{k}`"),
            },
        )
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(refused(
        format!(
            "{what}: unknown key{} {}: a misspelt key would leave its setting unset",
            if unknown.len() == 1 { "" } else { "s" },
            unknown.join(", ")
        ),
        HINT,
    ))
}

/// Typed access to one table's values; errors name the table and key, never the value.
struct Table<'a> {
    what: String,
    table: &'a toml::Table,
    keys: &'static [Key],
}

impl Table<'_> {
    fn wrong(&self, key: &str) -> FileError {
        let shape = all_keys(self.keys)
            .find(|k| k.name == key)
            .map_or("?", |k| k.shape);
        refused(format!("{}: `{key}` must be {shape}", self.what), HINT)
    }

    fn string(&self, key: &str) -> Result<Option<String>, FileError> {
        match self.table.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
            Some(_) => Err(self.wrong(key)),
        }
    }

    fn required(&self, key: &str) -> Result<String, FileError> {
        self.string(key)?.ok_or_else(|| {
            refused(
                format!("{}: `{key}` is required", self.what),
                "see pgdrive.toml.example",
            )
        })
    }

    fn number(&self, key: &str) -> Result<Option<u32>, FileError> {
        match self.table.get(key) {
            None => Ok(None),
            Some(toml::Value::Integer(n)) => {
                u32::try_from(*n).map(Some).map_err(|_| self.wrong(key))
            }
            Some(_) => Err(self.wrong(key)),
        }
    }

    /// A size as written (a TOML integer of bytes becomes its digits); checked where it is used.
    fn size(&self, key: &str) -> Result<Option<String>, FileError> {
        match self.table.get(key) {
            Some(toml::Value::Integer(n)) if *n > 0 => Ok(Some(n.to_string())),
            Some(toml::Value::Integer(_)) => Err(self.wrong(key)),
            _ => self.string(key),
        }
    }

    /// The retention rules of the table (`keep` included), each checked.
    fn rules(&self) -> Result<crate::retention::RuleSpec, FileError> {
        use crate::retention::{Period, Within};
        let within = |key: &str| -> Result<Option<Within>, FileError> {
            self.string(key)?
                .map(|s| Within::parse(&s).ok_or_else(|| self.wrong(key)))
                .transpose()
        };
        let mut rules = crate::retention::RuleSpec {
            keep_last: self.number("keep")?,
            keep_within: within("keep_within")?,
            ..Default::default()
        };
        for (i, p) in Period::ALL.iter().enumerate() {
            rules.keep_periods[i] = self.number(&format!("keep_{}", p.as_str()))?;
            rules.keep_within_periods[i] = within(&format!("keep_within_{}", p.as_str()))?;
        }
        if let Some(zone) = self.string("timezone")? {
            rules.timezone = Some(jiff::tz::TimeZone::get(zone.trim()).map_err(|_| {
                refused(
                    format!("{}: `timezone` is not a time zone this system knows", self.what),
                    "use an IANA name such as Europe/Berlin or America/New_York (see /usr/share/zoneinfo), or remove it for UTC",
                )
            })?);
        }
        rules.max_delete_share = match self.number("max_delete_share")? {
            Some(n) if n <= 100 => Some(n as u8),
            Some(_) => return Err(self.wrong("max_delete_share")),
            None => None,
        };
        Ok(rules)
    }

    fn names(&self, key: &str) -> Result<Option<Vec<String>>, FileError> {
        match self.table.get(key) {
            None => Ok(None),
            Some(toml::Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    toml::Value::String(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
                    _ => Err(self.wrong(key)),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(self.wrong(key)),
        }
    }
}

fn target(name: &str, table: &toml::Table) -> Result<TargetSpec, FileError> {
    let what = format!("[targets.{name}]");
    unknown_keys(&what, table, TARGET_KEYS)?;
    let t = Table {
        what,
        table,
        keys: TARGET_KEYS,
    };
    let ty = t.required("type")?;
    let only = |key: &str, ty: &str| -> Result<(), FileError> {
        if table.contains_key(key) {
            return Err(refused(
                format!("{}: `{key}` does not apply to a `{ty}` target", t.what),
                HINT,
            ));
        }
        Ok(())
    };
    if ty != "sftp" {
        for key in SFTP_ONLY {
            only(key, &ty)?;
        }
    }
    let place = match ty.as_str() {
        "sftp" => {
            only("folder_id", "sftp")?;
            only("drive_url", "sftp")?;
            sftp_place(&t)?
        }
        "drive" => {
            only("dir", "drive")?;
            Place::Drive {
                folder_id: t.required("folder_id")?,
                drive_url: t.string("drive_url")?,
            }
        }
        "local" => {
            only("folder_id", "local")?;
            only("drive_url", "local")?;
            Place::Local {
                dir: PathBuf::from(t.required("dir")?),
            }
        }
        "s3" => {
            for key in ["dir", "folder_id", "drive_url"] {
                only(key, "s3")?;
            }
            Place::S3(Box::new(s3_place(&t)?))
        }
        _ => return Err(t.wrong("type")),
    };
    if !matches!(place, Place::S3(_)) {
        for key in S3_ONLY {
            only(key, &ty)?;
        }
    }
    Ok(TargetSpec {
        name: name.to_string(),
        place,
        keep: t.number("keep")?,
        chunk_size: t.size("chunk_size")?,
        rules: t.rules()?,
    })
}

/// The keys only an `sftp` target has.
const SFTP_ONLY: [&str; 5] = ["host", "port", "user", "identity_file", "known_hosts"];

/// A host or user name that ssh takes as one (no option, no spaces, no `@` in a user).
fn ssh_word(s: &str, user: bool) -> bool {
    !s.starts_with('-')
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || (user && c == '@'))
}

fn sftp_place(t: &Table) -> Result<Place, FileError> {
    let host = t.required("host")?;
    let user = t.string("user")?;
    if !ssh_word(&host, false) {
        return Err(t.wrong("host"));
    }
    if user.as_deref().is_some_and(|u| !ssh_word(u, true)) {
        return Err(t.wrong("user"));
    }
    let port = match t.number("port")? {
        None => crate::storage::sftp::SftpConfig::DEFAULT_PORT,
        Some(p) => u16::try_from(p)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| t.wrong("port"))?,
    };
    Ok(Place::Sftp(crate::storage::sftp::SftpConfig {
        host,
        port,
        user,
        dir: t.required("dir")?,
        identity_file: t.string("identity_file")?.map(PathBuf::from),
        known_hosts: t.string("known_hosts")?.map(PathBuf::from),
    }))
}

/// The keys only an `s3` target has.
const S3_ONLY: [&str; 9] = [
    "part_size",
    "bucket",
    "prefix",
    "region",
    "endpoint",
    "path_style",
    "storage_class",
    "sse",
    "sse_kms_key_id",
];

fn s3_place(t: &Table) -> Result<crate::storage::s3::S3Place, FileError> {
    let sse = t.string("sse")?;
    if sse
        .as_deref()
        .is_some_and(|s| s != "AES256" && s != "aws:kms")
    {
        return Err(t.wrong("sse"));
    }
    let part_size = match t.size("part_size")? {
        None => None,
        Some(text) => Some(
            crate::config::parse_size(&text)
                .map(|n| n as u64)
                .filter(|n| {
                    (crate::storage::s3::MIN_PART as u64..=crate::storage::s3::MAX_PART).contains(n)
                })
                .ok_or_else(|| t.wrong("part_size"))?,
        ),
    };
    let endpoint = t.string("endpoint")?;
    if endpoint
        .as_deref()
        .is_some_and(|e| !e.starts_with("https://") && !e.starts_with("http://"))
    {
        return Err(t.wrong("endpoint"));
    }
    let path_style = match t.table.get("path_style") {
        None => None,
        Some(toml::Value::Boolean(b)) => Some(*b),
        Some(_) => return Err(t.wrong("path_style")),
    };
    Ok(crate::storage::s3::S3Place {
        bucket: t.required("bucket")?,
        prefix: crate::storage::s3::S3Place::normalized_prefix(
            &t.string("prefix")?.unwrap_or_default(),
        ),
        region: t.string("region")?.unwrap_or_else(|| "us-east-1".into()),
        endpoint: endpoint.map(|e| e.trim_end_matches('/').to_string()),
        path_style,
        storage_class: t.string("storage_class")?,
        sse,
        sse_kms_key_id: t.string("sse_kms_key_id")?,
        part_size,
    })
}

fn job(name: &str, table: &toml::Table) -> Result<JobSpec, FileError> {
    let what = format!("[jobs.{name}]");
    unknown_keys(&what, table, JOB_KEYS)?;
    let t = Table {
        what,
        table,
        keys: JOB_KEYS,
    };
    let kind = Kind::parse(&t.required("kind")?).ok_or_else(|| t.wrong("kind"))?;
    let databases = match table.get("databases") {
        None => Databases::Configured,
        Some(toml::Value::String(s)) if s == "all" => Databases::AllConnectable,
        Some(_) => {
            let names = t.names("databases")?.unwrap_or_default();
            if names.is_empty() {
                return Err(t.wrong("databases"));
            }
            let mut unique = names.clone();
            unique.sort();
            unique.dedup();
            if unique.len() != names.len() {
                return Err(refused(
                    format!("{}: `databases` names a database twice", t.what),
                    "list each database once",
                ));
            }
            Databases::Named(names)
        }
    };
    if kind != Kind::Hourly && table.contains_key("critical_tables") {
        return Err(refused(
            format!(
                "{}: `critical_tables` only applies to `hourly` jobs",
                t.what
            ),
            "remove it, or make the job `kind = \"hourly\"`",
        ));
    }
    let targets = t.names("targets")?.unwrap_or_default();
    if table.contains_key("targets") && targets.is_empty() {
        return Err(t.wrong("targets"));
    }
    Ok(JobSpec {
        name: name.to_string(),
        kind,
        databases,
        targets,
        keep: t.number("keep")?,
        rules: t.rules()?,
        format: t.string("format")?,
        compress: t.string("compress")?,
        chunk_size: t.size("chunk_size")?,
        critical_tables: t.names("critical_tables")?,
        encrypt: crate::encrypt::EncryptSpec {
            recipients: t.names("encrypt_recipients")?.unwrap_or_default(),
            recipients_file: t.string("encrypt_recipients_file")?.map(PathBuf::from),
            passphrase_file: t.string("encrypt_passphrase_file")?.map(PathBuf::from),
        },
    })
}

/// The README's tables of the `[targets.NAME]` and `[jobs.NAME]` keys (checked by a test).
pub fn markdown_tables() -> String {
    let mut out = String::new();
    for (title, keys) in [
        ("`[targets.NAME]`", TARGET_KEYS),
        ("`[jobs.NAME]`", JOB_KEYS),
    ] {
        out.push_str(&format!(
            "\n| {title} key | Value | Meaning |\n|---|---|---|\n"
        ));
        for k in all_keys(keys) {
            out.push_str(&format!("| `{}` | {} | {} |\n", k.name, k.shape, k.help));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<Declared, FileError> {
        let table: toml::Table = text.parse().unwrap();
        parse(table.get("targets"), table.get("jobs"))
    }

    #[test]
    fn a_job_with_two_targets_and_two_databases() {
        let d = parse_text(
            "[targets.offsite]\ntype = \"drive\"\nfolder_id = \"F\"\nkeep = 90\n\
             [targets.nas]\ntype = \"local\"\ndir = \"/srv/b\"\nkeep = 30\nchunk_size = \"16MiB\"\n\
             [jobs.nightly]\nkind = \"daily\"\ndatabases = [\"shop\", \"crm\"]\ntargets = [\"offsite\", \"nas\", \"local\"]\n\
             [jobs.everything]\nkind = \"schema\"\ndatabases = \"all\"\n",
        )
        .unwrap();
        assert_eq!(d.targets.len(), 2);
        let nas = d.target("nas").unwrap();
        assert_eq!(nas.keep, Some(30));
        assert_eq!(nas.chunk_size.as_deref(), Some("16MiB"));
        assert_eq!(
            d.target("offsite").unwrap().place,
            Place::Drive {
                folder_id: "F".into(),
                drive_url: None
            }
        );
        let j = d.job("nightly").unwrap();
        assert_eq!(j.kind, Kind::Daily);
        assert_eq!(
            j.databases,
            Databases::Named(vec!["shop".into(), "crm".into()])
        );
        assert_eq!(j.targets, ["offsite", "nas", "local"]);
        assert_eq!(
            d.job("everything").unwrap().databases,
            Databases::AllConnectable
        );
    }

    #[test]
    fn an_sftp_target_with_defaults_and_its_mistakes() {
        let d = parse_text("[targets.box]\ntype = \"sftp\"\nhost = \"u1.example\"\ndir = \"pg\"\n")
            .unwrap();
        let Place::Sftp(s) = &d.target("box").unwrap().place else {
            panic!("not sftp")
        };
        assert_eq!(
            (s.port, s.user.as_deref(), s.dir.as_str()),
            (22, None, "pg")
        );
        assert_eq!(s.known_hosts, None);
        for (text, expected) in [
            ("type = \"sftp\"\ndir = \"pg\"\n", "`host` is required"),
            ("type = \"sftp\"\nhost = \"h\"\n", "`dir` is required"),
            (
                "type = \"sftp\"\nhost = \"-oProxyCommand=SECRETVALUE\"\ndir = \"d\"\n",
                "`host` must be",
            ),
            (
                "type = \"sftp\"\nhost = \"h\"\nuser = \"a@SECRETVALUE\"\ndir = \"d\"\n",
                "`user` must be",
            ),
            (
                "type = \"sftp\"\nhost = \"h\"\nport = 70000\ndir = \"d\"\n",
                "`port` must be",
            ),
            (
                "type = \"sftp\"\nhost = \"h\"\ndir = \"d\"\nfolder_id = \"SECRETVALUE\"\n",
                "does not apply",
            ),
            (
                "type = \"local\"\ndir = \"/x\"\nhost = \"SECRETVALUE\"\n",
                "does not apply",
            ),
        ] {
            let e = parse_text(&format!("[targets.t]\n{text}")).unwrap_err();
            assert!(e.message.contains(expected), "{text}: {e:?}");
            assert!(!e.message.contains("SECRETVALUE"), "{text}: {e:?}");
        }
    }

    #[test]
    fn mistakes_are_refused_without_quoting_values() {
        let cases = [
            (
                "[targets.t]\ntype = \"drive\"\nfolder = \"SECRETVALUE\"\n",
                "`folder` (did you mean `folder_id`?)",
            ),
            ("[targets.t]\ntype = \"s4\"\n", "`type` must be"),
            ("[targets.t]\ntype = \"local\"\n", "`dir` is required"),
            (
                "[targets.t]\ntype = \"local\"\ndir = \"/x\"\nfolder_id = \"SECRETVALUE\"\n",
                "does not apply",
            ),
            (
                "[targets.drive]\ntype = \"local\"\ndir = \"/x\"\n",
                "environment's own target",
            ),
            (
                "[targets.\"a b\"]\ntype = \"local\"\ndir = \"/x\"\n",
                "not 1 to 40 letters",
            ),
            ("[jobs.j]\nkind = \"weekly\"\n", "`kind` must be"),
            (
                "[jobs.j]\nkind = \"daily\"\ntargets = [\"nowhere\"]\n",
                "`nowhere`, which is not declared",
            ),
            (
                "[jobs.j]\nkind = \"daily\"\ndatabases = \"SECRETVALUE\"\n",
                "`databases` must be",
            ),
            (
                "[jobs.j]\nkind = \"daily\"\ndatabases = [\"a\", \"a\"]\n",
                "twice",
            ),
            (
                "[jobs.j]\nkind = \"daily\"\ncritical_tables = [\"t\"]\n",
                "only applies to `hourly`",
            ),
            ("[jobs.j]\nkind = \"daily\"\nkeep = -1\n", "`keep` must be"),
            (
                "[jobs.j]\nkind = \"daily\"\nkepe = 3\n",
                "`kepe` (did you mean `keep`?)",
            ),
        ];
        for (text, expected) in cases {
            let e = parse_text(text).unwrap_err();
            assert!(e.message.contains(expected), "{text}: {e:?}");
            assert!(!e.message.contains("SECRETVALUE"), "{text}: {e:?}");
        }
    }
}
