//! The settings registry: every setting pgdrive reads is declared here once — its environment
//! name, its config-file key, its type, default, help, whether it is secret, which flags set it
//! and which commands use it. That one declaration feeds [`crate::config::Settings`] (an
//! undeclared name cannot be read: a debug build panics, a test scans the sources), the config
//! file's key mapping and unknown-key report, the `[env: …]` text of `--help`
//! ([`crate::cli::command`]), the man page's ENVIRONMENT section and the README's tables
//! (checked by a test, regenerated with `pgdrive generate-settings-table GROUP`).
//!
//! libpq's own `PG*` variables (`PGHOST`, `PGPASSWORD`, …) are declared where pgdrive resolves
//! them, in [`crate::pgconn`]; they are read from the environment and the env-file only.

/// The shape of a value, for the config file (which TOML types are accepted) and the docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    /// A string.
    Text,
    /// A whole number (TOML integer, or a string of digits).
    Number,
    /// A size such as `8MiB` (TOML string or integer bytes).
    Size,
    /// A comma-separated list (TOML array of strings or numbers, or one string).
    List,
}

/// How a setting's value must be treated when something could print it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Secret {
    No,
    /// The whole value is secret (a password, an API key).
    Value,
    /// A URL whose path or query is a token (webhooks, heartbeat pings).
    TokenUrl,
    /// A connection string or key setting that may hold a secret; its own parser finds it.
    Embedded,
}

/// Who reads a setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layer {
    /// Read through [`crate::config::Settings`]: environment > config file > env-file.
    Settings,
    /// Read by clap before anything else (it says where the other layers are): flag or
    /// environment only.
    Process,
}

/// The README and man-page section a setting is documented in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    General,
    Notify,
}

impl Group {
    pub fn name(self) -> &'static str {
        match self {
            Group::General => "general",
            Group::Notify => "notify",
        }
    }

    pub fn parse(s: &str) -> Option<Group> {
        [Group::General, Group::Notify]
            .into_iter()
            .find(|g| g.name() == s)
    }
}

#[derive(Debug)]
pub struct Setting {
    /// The environment variable (and env-file key).
    pub env: &'static str,
    /// The config-file key: `table.key` for grouped keys; `None` for [`Layer::Process`].
    pub key: Option<&'static str>,
    pub ty: Type,
    /// The default as documentation shows it ("" when there is none).
    pub default: &'static str,
    /// The flags that set it, as `subcommand --long` (`--long` alone for a global flag).
    pub flags: &'static [&'static str],
    /// The commands that read it.
    pub commands: &'static [&'static str],
    pub secret: Secret,
    pub layer: Layer,
    pub group: Group,
    pub help: &'static str,
}

const ALL: &[&str] = &[
    "backup",
    "migrate",
    "list",
    "restore",
    "verify",
    "notify-test",
    "check",
    "status",
];
const STORAGE: &[&str] = &["backup", "list", "restore", "verify", "check", "status"];
const DATABASE: &[&str] = &[
    "backup", "migrate", "list", "restore", "verify", "check", "status",
];
const BACKUP: &[&str] = &["backup", "check"];
const PLANNED: &[&str] = &["backup", "check", "status"];
const RESTORING: &[&str] = &["restore", "verify"];
const NOTIFYING: &[&str] = &["backup", "notify-test", "check"];

/// A setting read through [`crate::config::Settings`].
const fn setting(
    env: &'static str,
    key: &'static str,
    ty: Type,
    default: &'static str,
    flags: &'static [&'static str],
    commands: &'static [&'static str],
    help: &'static str,
) -> Setting {
    Setting {
        env,
        key: Some(key),
        ty,
        default,
        flags,
        commands,
        secret: Secret::No,
        layer: Layer::Settings,
        group: Group::General,
        help,
    }
}

impl Setting {
    const fn secret(mut self, secret: Secret) -> Setting {
        self.secret = secret;
        self
    }

    const fn notify(mut self) -> Setting {
        self.group = Group::Notify;
        self
    }

    /// Read by clap: flag or environment only, no config-file key.
    const fn process(mut self) -> Setting {
        self.layer = Layer::Process;
        self.key = None;
        self
    }
}

use Type::*;

/// Every setting, in the order the docs list them. Each entry reads
/// `setting(env name, config-file key, type, default, flags, commands, help)`, then whether it
/// is secret, documented with the notifications, or read by clap alone.
pub static SETTINGS: &[Setting] = &[
    setting("DATABASE_URL", "database_url", Text, "required for backup", &[], DATABASE,
        "The database to back up: `postgres://user:password@host:port/db?sslmode=…` or `host=… dbname=…`. The password may also come from `~/.pgpass` (or `passfile=`); `PG*` variables fill what the URL leaves out, as in libpq. Both forms are read as libpq reads them (see \"Passwords in connection strings\").")
        .secret(Secret::Embedded),
    setting("PGDRIVE_CATALOG_URL", "catalog_url", Text, "`DATABASE_URL`", &[], DATABASE,
        "Where the advisory lock and the `backups` table live, when not in the backed-up database (e.g. when backing up a read-only standby).")
        .secret(Secret::Embedded),
    setting("GOOGLE_SERVICE_ACCOUNT_JSON", "google.service_account_json", Text, "", &[], STORAGE,
        "A service account key: the JSON itself, or the path of the key file. A UTF-8 byte order mark and surrounding quotes are accepted. Anything else (base64 text, a cut-off key, a file that cannot be read) is a configuration error (78) that names the variable and what is wrong, never its content.")
        .secret(Secret::Embedded),
    setting("GOOGLE_APPLICATION_CREDENTIALS", "google.application_credentials", Text, "", &[], STORAGE,
        "Path of a service account key, or of OAuth user credentials (`authorized_user`). JSON put here instead of a path is refused (78) without being quoted."),
    setting("GOOGLE_IMPERSONATE_USER", "google.impersonate_user", Text, "", &[], STORAGE,
        "With a service account: the user to act as (domain-wide delegation; the JWT `sub`)."),
    setting("GOOGLE_DRIVE_FOLDER_ID", "drive.daily_folder_id", Text, "", &["backup --folder"], STORAGE,
        "Drive folder for daily backups (the last part of the folder's URL)."),
    setting("HOURLY_DRIVE_FOLDER_ID", "drive.hourly_folder_id", Text, "", &["backup --folder"], STORAGE,
        "Drive folder for hourly backups."),
    setting("SCHEMA_DRIVE_FOLDER_ID", "drive.schema_folder_id", Text, "", &["backup --folder"], STORAGE,
        "Drive folder for schema backups."),
    setting("PGDRIVE_DRIVE_URL", "drive.url", Text, "`https://www.googleapis.com/`",
        &["backup --drive-url", "list --drive-url", "restore --drive-url", "verify --drive-url"], STORAGE,
        "Drive API base (`{base}drive/v3/…`, `{base}upload/drive/v3/…`); `http://` works for an emulator. The token endpoint is the `token_uri` of the credentials file."),
    setting("PGDRIVE_RETRY_MAX", "drive.retry_max", Number, "8", &[], STORAGE,
        "Retries of a Google call before giving up."),
    setting("PGDRIVE_RETRY_INITIAL_MS", "drive.retry_initial_ms", Number, "1000", &[], STORAGE,
        "The first backoff of a retried Google call, in milliseconds; it doubles each time."),
    setting("PGDRIVE_RETRY_MAX_MS", "drive.retry_max_ms", Number, "64000", &[], STORAGE,
        "The longest backoff of a retried Google call, in milliseconds."),
    setting("PGDRIVE_LOCAL_DIR", "local.dir", Text, "", &["backup --to", "list --from", "restore --from", "verify --from"], STORAGE,
        "Also store each backup in this directory (or only there, without Google credentials); `list`, `restore` and `verify` read it when no Google credentials are set."),
    setting("PGDRIVE_CRITICAL_TABLES", "critical_tables", List, "", &[], PLANNED,
        "Tables for the hourly backup, comma-separated (in the config file: an array); `schema.table` and quoted `\"Mixed Case\"` names are resolved like SQL. Partitioned tables include their partitions. An empty list or a missing table is a configuration error (78) before anything is uploaded."),
    setting("PGDRIVE_KEEP_DAILY", "keep.daily", Number, "14", &["backup --keep"], PLANNED,
        "Daily backups to keep in each target; 0 keeps everything."),
    setting("PGDRIVE_KEEP_HOURLY", "keep.hourly", Number, "48", &["backup --keep"], PLANNED,
        "Hourly backups to keep in each target; 0 keeps everything."),
    setting("PGDRIVE_KEEP_SCHEMA", "keep.schema", Number, "0", &["backup --keep"], PLANNED,
        "Schema backups to keep in each target; 0 keeps everything."),
    setting("PGDRIVE_COMPRESS", "compress", Text, "`gzip:6`", &["backup --compress"], BACKUP,
        "`gzip[:1-9]`, `zstd[:1-19]` or `none`."),
    setting("PGDRIVE_ENCRYPT_RECIPIENTS", "encrypt.recipients", List, "", &[], BACKUP,
        "Encrypt every backup with age to these recipients (`age1…` keys or SSH public keys, comma-separated; in the config file an array); any one matching private key restores it (README \"Key handling\"). The name gains `.age`; `restore` and `verify` need `--identity`."),
    setting("PGDRIVE_ENCRYPT_RECIPIENTS_FILE", "encrypt.recipients_file", Text, "", &[], BACKUP,
        "A file of age recipients, one per line (`#` comments), as `age -R` reads; adds to `PGDRIVE_ENCRYPT_RECIPIENTS`."),
    setting("PGDRIVE_ENCRYPT_PASSPHRASE_FILE", "encrypt.passphrase_file", Text, "", &[], &["backup", "check", "restore", "verify"],
        "Encrypt with the passphrase on this file's first line (age's scrypt mode) instead of recipients; `restore` and `verify` read it to decrypt such backups."),
    setting("PGDRIVE_IDENTITY_FILE", "identity_file", Text, "", &["restore --identity", "verify --identity"], RESTORING,
        "The age identity file (`age-keygen`, `pgdrive keygen`) or unencrypted SSH private key that decrypts encrypted backups. Keep it off the backup host; pass it for the restore."),
    setting("PGDRIVE_THREADS", "threads", Number, "cores − 1, at least 1", &["backup --threads"], BACKUP,
        "Compression threads. gzip with several threads writes independent gzip members of 1 MiB blocks (as pigz does, without the shared dictionary: under 1 % larger); any gzip reader accepts them. zstd with several threads uses libzstd's workers; with one it compresses inline."),
    setting("PGDRIVE_FORMAT", "format", Text, "`plain`", &["backup --format"], BACKUP,
        "`plain` (an SQL script, restored with `psql`) or `custom` (`pg_dump -Fc -Z0`, compressed by pgdrive, restored with `pg_restore`, in parallel with `-j` from a file)."),
    setting("PGDRIVE_CHUNK_SIZE", "chunk_size", Size, "`8MiB`", &["backup --chunk-size"], BACKUP,
        "Upload chunk; a multiple of 256 KiB. Memory use is a few chunks."),
    setting("PGDRIVE_PG_DUMP", "pg_dump", Text, "", &["backup --pg-dump"], BACKUP,
        "The `pg_dump` to run. Otherwise the one on `PATH`, else `/usr/lib/postgresql/<server major>/bin/pg_dump`; one older than the server is refused."),
    setting("PGDRIVE_PSQL", "psql", Text, "", &["restore --psql", "verify --psql"], RESTORING,
        "The `psql` that `restore` and `verify --restore-test` run for plain dumps. Otherwise the one on `PATH`, else the newest `/usr/lib/postgresql/<version>/bin/psql`."),
    setting("PGDRIVE_PG_RESTORE", "pg_restore", Text, "", &["restore --pg-restore", "verify --pg-restore"], RESTORING,
        "The `pg_restore` that `restore` and `verify` run for custom archives. Otherwise the one on `PATH`, else the newest `/usr/lib/postgresql/<version>/bin/pg_restore`."),
    setting("PGDRIVE_STALL_TIMEOUT_MS", "stall_timeout_ms", Number, "`300000`", &[], &["backup", "restore", "verify", "check"],
        "A backup with no bytes from `pg_dump` and none accepted by a target for this long fails as `stalled` (exit 1); with several targets, one that accepts nothing for this long while another still does fails alone (that copy FAILED, exit 4 when another stored it). So does a `restore` or `verify` that received no byte of the backup and whose client accepted none while its session did no work; 0 turns the watchdog off. Drive's bytes count when Drive acknowledges a chunk, so on a link slower than chunk size ÷ this timeout, raise it or lower `PGDRIVE_CHUNK_SIZE`. The default outlasts a full round of Drive retries."),
    setting("PGDRIVE_MAX_AGE", "max_age", Text, "`daily=26h,hourly=5h,schema=off`", &["status --max-age"], &["status", "backup"],
        "`status` (and the metrics `backup` refreshes): the maximum age of the newest successful backup per kind; units `s`, `m`, `h`, `d`; `off` disables."),
    setting("PGDRIVE_PROMETHEUS_FILE", "prometheus_file", Text, "", &[], &["backup"],
        "`backup` rewrites this node_exporter textfile (as `status --prometheus`) at the end of every run."),
    setting("PGDRIVE_CONFIG", "", Text, "`/etc/pgdrive/pgdrive.toml` when present", &["--config"], ALL,
        "The config file (TOML): the settings of this table under their config-file keys. Environment variables override it; it overrides the env-file. `/dev/null` reads none.")
        .process(),
    setting("PGDRIVE_ENV_FILE", "", Text, "", &["--env-file"], ALL,
        "The env-file: `KEY=VALUE` lines as systemd's `EnvironmentFile=` reads them, below the environment and the config file.")
        .process(),
    setting("PGDRIVE_LOG_FORMAT", "", Text, "`text`", &["--log-format"], ALL,
        "`text` or `json` lines on stderr.")
        .process(),
    // --- notifications
    setting("PGDRIVE_NOTIFY", "notify.when", Text, "see the per-kind settings", &["backup --notify"], NOTIFYING,
        "When to send email, Slack and webhook messages: `on-failure`, `always` or `never`.")
        .notify(),
    setting("PGDRIVE_NOTIFY_DAILY", "notify.when_daily", Text, "`always`", &["backup --notify"], NOTIFYING,
        "The same for daily backups; wins over `PGDRIVE_NOTIFY`. Failures are reported unless the policy is `never`.")
        .notify(),
    setting("PGDRIVE_NOTIFY_HOURLY", "notify.when_hourly", Text, "`on-failure`", &["backup --notify"], NOTIFYING,
        "The same for hourly backups: their successes are not reported by default, so that the hourly job does not flood inboxes.")
        .notify(),
    setting("PGDRIVE_NOTIFY_SCHEMA", "notify.when_schema", Text, "`always`", &["backup --notify"], NOTIFYING,
        "The same for schema backups.")
        .notify(),
    setting("PGDRIVE_NOTIFY_EMAIL", "notify.email", List, "", &[], NOTIFYING,
        "Recipients, comma-separated (in the config file: an array). Needed by both email channels.")
        .notify(),
    setting("SENDGRID_API_KEY", "sendgrid.api_key", Text, "", &[], NOTIFYING,
        "Email through SendGrid's v3 mail-send API; a key with the Mail Send permission.")
        .secret(Secret::Value)
        .notify(),
    setting("SENDGRID_FROM_EMAIL", "sendgrid.from_email", Text, "", &[], NOTIFYING,
        "The sender, verified in SendGrid.")
        .notify(),
    setting("PGDRIVE_SENDGRID_URL", "sendgrid.url", Text, "`https://api.sendgrid.com/`", &[], NOTIFYING,
        "SendGrid API base (the tests point it at an emulator).")
        .notify(),
    setting("PGDRIVE_SMTP_HOST", "smtp.host", Text, "", &[], NOTIFYING,
        "Email through this SMTP server (as well as SendGrid, when both are set).")
        .notify(),
    setting("PGDRIVE_SMTP_TLS", "smtp.tls", Text, "`starttls`", &[], NOTIFYING,
        "`starttls` (required, never skipped), `tls` (implicit TLS, \"SMTPS\") or `none` (a relay on the same host only: with `PGDRIVE_SMTP_USER`/`PGDRIVE_SMTP_PASSWORD` set, a host other than `localhost`, `127.0.0.0/8` or `::1` is a configuration error (78), so the password never crosses a network unencrypted).")
        .notify(),
    setting("PGDRIVE_SMTP_PORT", "smtp.port", Number, "587 / 465 / 25", &[], NOTIFYING,
        "By `PGDRIVE_SMTP_TLS`.")
        .notify(),
    setting("PGDRIVE_SMTP_USER", "smtp.user", Text, "", &[], NOTIFYING,
        "The SMTP login; with `PGDRIVE_SMTP_PASSWORD`, both or neither.")
        .notify(),
    setting("PGDRIVE_SMTP_PASSWORD", "smtp.password", Text, "", &[], NOTIFYING,
        "The SMTP password.")
        .secret(Secret::Value)
        .notify(),
    setting("PGDRIVE_SMTP_FROM", "smtp.from", Text, "`SENDGRID_FROM_EMAIL`", &[], NOTIFYING,
        "The SMTP sender; defaults to the SendGrid sender so one setting serves both.")
        .notify(),
    setting("PGDRIVE_SLACK_WEBHOOK_URL", "notify.slack_webhook_url", Text, "", &[], NOTIFYING,
        "A Slack incoming webhook.")
        .secret(Secret::TokenUrl)
        .notify(),
    setting("PGDRIVE_WEBHOOK_URL", "notify.webhook_url", Text, "", &[], NOTIFYING,
        "Receives every report as JSON (`POST`), see below.")
        .secret(Secret::TokenUrl)
        .notify(),
    setting("PGDRIVE_PING_URL", "notify.ping_url", Text, "", &[], NOTIFYING,
        "Heartbeat (healthchecks.io, Uptime Kuma style), see below.")
        .secret(Secret::TokenUrl)
        .notify(),
    setting("PGDRIVE_PING_URL_DAILY", "notify.ping_url_daily", Text, "`PGDRIVE_PING_URL`", &[], NOTIFYING,
        "The heartbeat of daily backups: each job should have its own check.")
        .secret(Secret::TokenUrl)
        .notify(),
    setting("PGDRIVE_PING_URL_HOURLY", "notify.ping_url_hourly", Text, "`PGDRIVE_PING_URL`", &[], NOTIFYING,
        "The heartbeat of hourly backups.")
        .secret(Secret::TokenUrl)
        .notify(),
    setting("PGDRIVE_PING_URL_SCHEMA", "notify.ping_url_schema", Text, "`PGDRIVE_PING_URL`", &[], NOTIFYING,
        "The heartbeat of schema backups.")
        .secret(Secret::TokenUrl)
        .notify(),
    setting("PGDRIVE_NOTIFY_RETRY_DELAYS_MS", "notify.retry_delays_ms", List, "`1000,5000,15000`", &[], NOTIFYING,
        "Waits before the retries of SendGrid, SMTP, Slack and webhook deliveries. Network errors, 429 and 5xx (SMTP: 4xx) are retried; any other refusal (a bad key: 401) is final and logged with a hint.")
        .notify(),
    setting("PGDRIVE_NOTIFY_TIMEOUT_MS", "notify.timeout_ms", Number, "`30000`", &[], NOTIFYING,
        "The longest one delivery attempt may take.")
        .notify(),
];

/// Config-file tables that hold declarations rather than settings (read by `crate::jobs`).
pub const DECLARATION_TABLES: &[&str] = &["jobs", "targets"];

/// The declaration of an environment name, if any.
pub fn by_env(env: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.env == env)
}

/// The declaration of a config-file key, if any.
pub fn by_key(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.key == Some(key))
}

/// Whether `env` may be read through [`crate::config::Settings`]: a declared setting, or one of
/// libpq's variables.
pub fn readable(env: &str) -> bool {
    by_env(env).is_some_and(|s| s.layer == Layer::Settings)
        || crate::pgconn::libpq_variables().any(|v| v == env)
}

/// The known name nearest to `unknown` when it is close enough to be a typo of it.
pub fn nearest<'a>(unknown: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let unknown_lower = unknown.to_ascii_lowercase();
    let known: Vec<&str> = known.into_iter().collect();
    // a key written short (`folder` for `folder_id`) is meant, whatever the distance
    if let Some(k) = known
        .iter()
        .find(|k| unknown_lower.len() >= 4 && k.to_ascii_lowercase().starts_with(&unknown_lower))
    {
        return Some(k);
    }
    known
        .into_iter()
        .map(|k| (edit_distance(&unknown_lower, &k.to_ascii_lowercase()), k))
        .filter(|(d, k)| *d <= (k.len() / 4).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// The nearest env-file name for an unknown one.
pub fn nearest_env(unknown: &str) -> Option<&'static str> {
    nearest(
        unknown,
        SETTINGS
            .iter()
            .filter(|s| s.layer == Layer::Settings)
            .map(|s| s.env)
            .chain(crate::pgconn::libpq_variables()),
    )
}

/// The nearest config-file key for an unknown one; an environment name written as a key
/// (`DATABASE_URL = …`) points at its key.
pub fn nearest_key(unknown: &str) -> Option<&'static str> {
    let leaf = unknown.rsplit('.').next().unwrap_or(unknown);
    if let Some(key) = SETTINGS
        .iter()
        .find(|s| s.env.eq_ignore_ascii_case(leaf))
        .and_then(|s| s.key)
    {
        return Some(key);
    }
    nearest(unknown, SETTINGS.iter().filter_map(|s| s.key))
}

/// Edit distance by characters, a swap of two neighbours counting as one edit (the optimal
/// string alignment distance): `kepe` is one edit from `keep`, as a typist sees it.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for j in 0..=b.len() {
        d[0][j] = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// The `[env: …]` text that `--help` shows for the settings a flag sets.
pub fn flag_help(settings: &[&Setting]) -> String {
    let parts: Vec<String> = settings
        .iter()
        .map(|s| {
            let mut part = s.env.to_string();
            let mut notes = Vec::new();
            if let Some(key) = s.key {
                notes.push(format!("config {key}"));
            }
            if !s.default.is_empty() {
                notes.push(format!("default {}", s.default.replace('`', "")));
            }
            if !notes.is_empty() {
                part.push_str(&format!(" ({})", notes.join(", ")));
            }
            part
        })
        .collect();
    format!("[env: {}]", parts.join("; "))
}

/// Appends to each flag's help the `[env: …]` text of the settings it sets (flags read by clap
/// itself, such as `--env-file`, get clap's own).
pub fn annotate(mut cmd: clap::Command) -> clap::Command {
    let mut by_flag: Vec<(&str, &str, Vec<&Setting>)> = Vec::new();
    for s in SETTINGS.iter().filter(|s| s.layer == Layer::Settings) {
        for flag in s.flags {
            let (sub, long) = flag
                .split_once(" --")
                .expect("registry flags are `subcommand --long`");
            match by_flag
                .iter_mut()
                .find(|(sc, l, _)| *sc == sub && *l == long)
            {
                Some((_, _, settings)) => settings.push(s),
                None => by_flag.push((sub, long, vec![s])),
            }
        }
    }
    for (sub, long, settings) in by_flag {
        let suffix = flag_help(&settings);
        cmd = cmd.mut_subcommand(sub, |sc| {
            let id = sc
                .get_arguments()
                .find(|a| a.get_long() == Some(long))
                .unwrap_or_else(|| {
                    panic!("the registry names `{sub} --{long}`, which does not exist")
                })
                .get_id()
                .clone();
            sc.mut_arg(id, |arg| {
                let help = arg.get_help().map(|h| format!("{h} {suffix}"));
                let long_help = arg.get_long_help().map(|h| format!("{h} {suffix}"));
                let arg = arg.help(help.unwrap_or_else(|| suffix.clone()));
                match long_help {
                    Some(h) => arg.long_help(h),
                    None => arg,
                }
            })
        });
    }
    cmd
}

/// The README table of one group, as committed between its markers.
pub fn markdown_table(group: Group) -> String {
    let mut out = String::from(
        "| Setting | Config file | Flag | Default | Used by | Meaning |\n|---|---|---|---|---|---|\n",
    );
    for s in SETTINGS.iter().filter(|s| s.group == group) {
        let mut flags: Vec<&str> = s
            .flags
            .iter()
            .map(|f| f.rsplit(' ').next().unwrap_or(f))
            .collect();
        flags.dedup();
        let flags: Vec<String> = flags.iter().map(|f| format!("`{f}`")).collect();
        let commands = if s.commands == ALL {
            "all".to_string()
        } else {
            s.commands.join(", ")
        };
        let mut help = s.help.to_string();
        if s.secret == Secret::Value || s.secret == Secret::TokenUrl {
            help.push_str(" Secret: never shown.");
        }
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {} |\n",
            s.env,
            s.key.map(|k| format!("`{k}`")).unwrap_or_default(),
            flags.join(", "),
            s.default,
            commands,
            help,
        ));
    }
    if group == Group::General {
        out.push_str(&format!(
            "| {} | | | | | libpq's variables, read as libpq reads them, from the environment and the env-file only; they fill in what `DATABASE_URL` and the other connection strings leave out. |\n",
            crate::pgconn::libpq_variables()
                .map(|v| format!("`{v}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    out
}

/// The man page's ENVIRONMENT items: (name, text).
pub fn man_environment() -> Vec<(String, String)> {
    let mut items: Vec<(String, String)> = SETTINGS
        .iter()
        .map(|s| {
            let mut text = s.help.replace('`', "");
            if let Some(key) = s.key {
                text.push_str(&format!(" Config file: {key}."));
            }
            if !s.default.is_empty() {
                text.push_str(&format!(" Default: {}.", s.default.replace('`', "")));
            }
            (s.env.to_string(), text)
        })
        .collect();
    items.push((
        crate::pgconn::libpq_variables()
            .collect::<Vec<_>>()
            .join(", "),
        "libpq's variables, read as libpq reads them, from the environment and the env-file only."
            .into(),
    ));
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_keys_are_unique_and_well_formed() {
        let mut envs = std::collections::HashSet::new();
        let mut keys = std::collections::HashSet::new();
        for s in SETTINGS {
            assert!(envs.insert(s.env), "{} declared twice", s.env);
            assert!(
                s.env
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'),
                "{}",
                s.env
            );
            match (s.layer, s.key) {
                (Layer::Settings, Some(key)) => {
                    assert!(keys.insert(key), "config key {key} declared twice");
                    assert!(
                        key.chars().all(|c| c.is_ascii_lowercase()
                            || c.is_ascii_digit()
                            || "_.".contains(c)),
                        "{key}"
                    );
                    let table = key.split('.').next().unwrap();
                    assert!(!DECLARATION_TABLES.contains(&table), "{key}");
                    // a key is either a value or a table, never both
                    assert!(
                        SETTINGS
                            .iter()
                            .filter_map(|o| o.key)
                            .all(|o| !o.starts_with(&format!("{key}."))),
                        "{key} is both a value and a table"
                    );
                }
                (Layer::Process, None) => {}
                other => panic!("{}: {other:?}", s.env),
            }
            assert!(!s.help.is_empty() && !s.commands.is_empty(), "{}", s.env);
        }
    }

    #[test]
    fn typos_find_the_setting_they_meant() {
        assert_eq!(nearest_env("DATABSE_URL"), Some("DATABASE_URL"));
        assert_eq!(nearest_env("PGDRIVE_KEEP_DALY"), Some("PGDRIVE_KEEP_DAILY"));
        assert_eq!(nearest_env("NODE_ENV"), None);
        assert_eq!(nearest_key("databse_url"), Some("database_url"));
        assert_eq!(
            nearest_key("drive.daily_foldr_id"),
            Some("drive.daily_folder_id")
        );
        assert_eq!(nearest_key("DATABASE_URL"), Some("database_url"));
        assert_eq!(nearest_key("smtp.PGDRIVE_SMTP_HOST"), Some("smtp.host"));
        assert_eq!(nearest_key("completely_else"), None);
    }

    /// Every literal name the code reads through `Settings::get` is declared (dynamic names are
    /// caught at run time by the debug assertion in `Settings::get`).
    #[test]
    fn every_literal_setting_read_in_the_sources_is_declared() {
        let src = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
        let mut stack = vec![std::path::PathBuf::from(src)];
        let mut reads = 0;
        while let Some(path) = stack.pop() {
            if path.is_dir() {
                stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            // also reads split over lines (`settings\n    .get(…)`)
            let compact: String = text.split_whitespace().collect();
            for piece in compact.split("settings.get(\"").skip(1) {
                let name = piece.split('"').next().unwrap();
                assert!(
                    readable(name),
                    "{}: reads undeclared {name}",
                    path.display()
                );
                reads += 1;
            }
        }
        assert!(reads > 30, "the scan found only {reads} reads");
    }
}
