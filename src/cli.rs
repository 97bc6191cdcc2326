//! The command line: clap definitions only. `--help` and the man page are read from here, with
//! each flag's `[env: …]` text added from the settings registry ([`command`]).
//! Secrets (database password, key files' contents, API keys) have no flags by design.

use std::path::PathBuf;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::kind::Kind;
use crate::log::LogFormat;

/// Shown after the options of `pgdrive --help`, below the exit-status table.
const PRECEDENCE_HELP: &str = "\
Configuration precedence: command-line flags, then environment variables, then the config file
(--config), then --env-file.";

/// The command line as parsed and documented: the clap definitions below, with each flag's
/// `[env: …]` text taken from the settings registry and the exit statuses from
/// [`crate::error::EXIT_STATUSES`].
pub fn command() -> clap::Command {
    crate::registry::annotate(Cli::command())
        .after_long_help(format!("{}\n{PRECEDENCE_HELP}", crate::error::help_text()))
}

/// Parses the process's arguments against [`command`].
pub fn try_parse() -> Result<Cli, clap::Error> {
    Cli::from_arg_matches(&command().try_get_matches()?)
}

/// Back up PostgreSQL to Google Drive
///
/// pg_dump is streamed through gzip and checksums straight into a Google Drive resumable upload
/// (or a local directory): no temporary file, bounded memory. Old backups of the same kind are
/// pruned, and every run is recorded in a `backups` table. Run by cron or a systemd timer; the
/// exit status says what happened.
#[derive(Debug, Parser)]
#[command(name = "pgdrive", version, max_term_width = 100)]
pub struct Cli {
    /// Read KEY=VALUE settings from this file (the format of systemd's EnvironmentFile=).
    /// Environment variables override it; a warning is printed when it is readable by group or others.
    #[arg(long, global = true, value_name = "PATH", env = "PGDRIVE_ENV_FILE")]
    pub env_file: Option<PathBuf>,

    /// Read settings from this TOML file (keys as in pgdrive.toml.example) [default:
    /// /etc/pgdrive/pgdrive.toml when it exists; /dev/null reads none]. Environment variables
    /// override it; it overrides the env-file. A warning is printed when it holds a secret and
    /// is readable by group or others; an unknown key is a configuration error.
    #[arg(long, global = true, value_name = "FILE", env = "PGDRIVE_CONFIG")]
    pub config: Option<PathBuf>,

    /// Log line format on stderr.
    #[arg(
        long,
        global = true,
        value_enum,
        value_name = "FORMAT",
        env = "PGDRIVE_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,

    /// Log debug detail (every HTTP retry, every chunk).
    #[arg(short, long, global = true, conflicts_with = "quiet")]
    pub verbose: bool,

    /// Log only warnings and errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Dump the database, compress and upload it, prune old backups of that kind, record the run.
    ///
    /// Takes the job's PostgreSQL advisory lock (the same keys as the Node.js implementation:
    /// `daily-backup-job`, `hourly-backup-job`, `schema-backup-job`), so only one run of a kind
    /// happens at a time across hosts. The lock needs a direct connection: PgBouncer in
    /// transaction mode breaks session locks.
    ///
    /// SIGINT/SIGTERM stop the run within seconds (the request in flight is cut, the upload
    /// cancelled, the interruption recorded); a run that gets no bytes from pg_dump and has none
    /// accepted by a target for PGDRIVE_STALL_TIMEOUT_MS (5 min) fails as stalled.
    Backup(BackupArgs),
    /// Create or upgrade the `backups` catalog table (also done automatically by every backup).
    Migrate,
    /// Maintain the `backups` catalog from storage.
    Catalog {
        #[command(subcommand)]
        action: CatalogCommand,
    },
    /// List the backups in storage (read from Drive's appProperties, all pages, or a local
    /// directory's sidecars), joined with the catalog when it is reachable.
    ///
    /// Needs no database: without DATABASE_URL (or when it is unreachable) the storage alone is listed.
    List(ListArgs),
    /// Restore a backup into a database: streamed from storage (resumed after dropped
    /// connections), checked against the recorded size, MD5 and SHA-256 while it streams, and fed
    /// to psql as one transaction that commits only after every check passed.
    ///
    /// Works from storage alone (no catalog, no source database): the disaster-recovery path.
    /// The target is printed before anything changes and, on a terminal, must be confirmed.
    ///
    /// SIGINT/SIGTERM stop it within seconds, and a download that delivers nothing while the
    /// client accepts nothing (and its session does no work) for PGDRIVE_STALL_TIMEOUT_MS fails
    /// as stalled; either way the client is killed and nothing commits. The same holds for verify.
    Restore(RestoreArgs),
    /// Check backups end to end: size, MD5, SHA-256, the whole gzip stream and pg_dump's
    /// completion trailer; with --restore-test also restore into a new scratch database, compare
    /// every table's row count with the manifest recorded at backup time, and drop it. The result
    /// is recorded in the catalog (verified_at, verify_result) when it is reachable.
    Verify(VerifyArgs),
    /// Apply the retention rules (`keep`, `keep_daily`, ... of each target and job) outside a
    /// backup run: every complete backup of each job (or kind) and database on each target is
    /// kept or deleted, with the rule that decided it. The newest complete backup and pinned
    /// ones are always kept; a run that would delete more than `max_delete_share` of a group
    /// deletes nothing and exits 1 unless --force.
    ///
    /// Needs no dump: it reads the storage listings; deletions are recorded in the catalog when
    /// it is reachable (exit 3 when that fails).
    Prune(PruneArgs),
    /// Pin a backup: it is never pruned, by any rule, on any host (for the backup taken before a
    /// migration, or one kept for an audit). Recorded in the backup's manifest (and Drive's
    /// appProperties index) on every configured target that holds a copy.
    Pin(PinArgs),
    /// Remove a pin set by `pin`: the backup is subject to the retention rules again.
    Unpin(PinArgs),
    /// Send a test message through every configured notification channel (SendGrid, SMTP, Slack,
    /// webhook, heartbeat pings) and report each.
    ///
    /// Exit status: 0 when every configured channel accepted the message, 1 when any failed, 78
    /// when none is configured. Heartbeat URLs get `<url>/log`, which records an event without
    /// changing the check's state.
    NotifyTest,
    /// Create an age key pair for encrypted backups: the private identity is written to FILE
    /// (mode 0600, never overwritten) and the public recipient printed on stdout, for
    /// PGDRIVE_ENCRYPT_RECIPIENTS. Keep FILE offline, away from the backup host (README "Key
    /// handling"); `age-keygen -o FILE` makes the same kind of file.
    Keygen {
        /// Where to write the private identity.
        #[arg(long, short = 'o', value_name = "FILE")]
        output: PathBuf,
    },
    /// Check the whole setup without backing up: configuration, database, catalog, lock, pg_dump,
    /// critical tables, Google credentials, each folder's write and prune rights, Drive quota.
    ///
    /// Prints one line per check (ok, warn or FAIL, with a hint) and evaluates everything, even
    /// after a failure. Exit status 0 when nothing failed (warnings allowed), 1 when any check
    /// failed. The Drive check uploads a tiny probe file (appProperties pgdrive_probe=1) and
    /// deletes it permanently again.
    Check(CheckArgs),
    /// Show, per kind, the newest successful backup, the last failure, retention and the size
    /// trend, from the catalog (or from Drive alone when the catalog is unreachable).
    ///
    /// Exit status 1 when a kind's newest backup is older than its max age or its last run
    /// failed, so it can run from cron and alert. Can also write a Prometheus textfile and an
    /// HTML page.
    Status(StatusArgs),
    /// Rehearse a disaster: restore the newest backup set of a job into a throwaway cluster and check it.
    ///
    /// initdb (the backed-up server's major version or newer) in a new temporary directory, on a
    /// free loopback port; the set restored from storage alone, as `restore --all` does (no
    /// catalog, no connection to the source server); every table's row count compared with the
    /// manifest, the roles and memberships of the globals and each database's recorded
    /// properties checked; the RTO and RPO reported. The cluster and its directory are removed
    /// afterwards, also on failure and SIGINT/SIGTERM. Exit status 0 when every check passed, 1
    /// otherwise.
    Drill(DrillArgs),
    /// Print the man page (roff) generated from these definitions.
    #[command(hide = true)]
    GenerateMan,
    /// Print a README settings table (general or notify: the settings registry; jobs: the keys
    /// of `[targets.NAME]` and `[jobs.NAME]`).
    #[command(hide = true)]
    GenerateSettingsTable {
        #[arg(default_value = "general")]
        group: String,
    },
    /// Print README's exit-status table, generated from the one in src/error.rs.
    #[command(hide = true)]
    GenerateExitTable,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Check only this kind (default: daily, plus hourly and schema when configured).
    #[arg(long, value_enum)]
    pub kind: Option<Kind>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Show only this kind (default: daily, plus hourly and schema when configured).
    #[arg(long, value_enum)]
    pub kind: Option<Kind>,

    /// Maximum age of the newest successful backup per kind, e.g. daily=26h,hourly=5h,schema=off
    /// (units s, m, h, d; "off" disables the check).
    #[arg(long, value_name = "KIND=AGE,...")]
    pub max_age: Option<String>,

    /// Print the dashboard as JSON instead of text.
    #[arg(long)]
    pub json: bool,

    /// Also write the metrics in the node_exporter textfile-collector format to FILE (atomically).
    #[arg(long, value_name = "FILE")]
    pub prometheus: Option<PathBuf>,

    /// Also write a self-contained HTML page with the same facts and a timeline chart to FILE.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,

    /// How many recent runs the size trend and the chart show.
    #[arg(long, value_name = "N", default_value_t = 30)]
    pub history: u32,

    /// Show what the target of this name holds (`drive` or `local`), from its listing rather
    /// than the catalog [default: the catalog, or the first configured target when the catalog
    /// cannot be read].
    #[arg(long = "target", value_name = "NAME")]
    pub target: Option<String>,
}

/// When `pgdrive backup` sends email, Slack and webhook messages (heartbeat pings are always sent).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum NotifyPolicy {
    /// Only when the run failed.
    OnFailure,
    /// After every run.
    Always,
    /// Never.
    Never,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Which built-in backup job to run (configured by environment variables or the config
    /// file's top-level keys).
    #[arg(
        long,
        value_enum,
        required_unless_present = "job",
        conflicts_with = "job"
    )]
    pub kind: Option<Kind>,

    /// Run the config file's `[jobs.NAME]`: its kind, databases and targets (each database is
    /// backed up in turn, to every target at once).
    #[arg(long, value_name = "NAME", conflicts_with_all = ["folder", "local_dir"])]
    pub job: Option<String>,

    #[command(flatten)]
    pub overrides: BackupOverrides,

    /// When to send email, Slack and webhook messages about this run (the setting of the kind
    /// wins over PGDRIVE_NOTIFY).
    #[arg(long, value_enum, value_name = "WHEN")]
    pub notify: Option<NotifyPolicy>,
}

/// The `backup` flags that override a job's settings. None (the default) is what a scheduled run
/// without flags sees, as `check` judges it.
#[derive(Debug, Default, Args)]
pub struct BackupOverrides {
    /// Keep the newest N backups of this kind in each target; 0 keeps everything.
    #[arg(long, value_name = "N")]
    pub keep: Option<u32>,

    /// Google Drive folder ID to upload into (by kind).
    #[arg(long, value_name = "ID")]
    pub folder: Option<String>,

    /// Also (or, without Google credentials, only) store the backup in this local directory.
    #[arg(long = "to", value_name = "DIR")]
    pub local_dir: Option<PathBuf>,

    /// Compression: gzip[:1-9], zstd[:1-19] or none.
    #[arg(long, value_name = "CODEC[:LEVEL]")]
    pub compress: Option<String>,

    /// Compression threads.
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

    /// Dump format: plain (an SQL script) or custom (pg_dump -Fc, for pg_restore, compressed by
    /// pgdrive).
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,

    /// Upload chunk size, a multiple of 256KiB (e.g. 8MiB, 262144).
    #[arg(long, value_name = "SIZE")]
    pub chunk_size: Option<String>,

    /// The pg_dump to run (otherwise pg_dump on PATH, else
    /// /usr/lib/postgresql/<server major>/bin/pg_dump).
    #[arg(long, value_name = "PATH")]
    pub pg_dump: Option<PathBuf>,

    /// Drive API base URL; API calls go to {base}drive/v3/, uploads to {base}upload/drive/v3/.
    #[arg(long, value_name = "URL")]
    pub drive_url: Option<String>,
}

/// Where `list`, `restore` and `verify` read backups from.
#[derive(Clone, Debug, Args)]
pub struct SourceArgs {
    /// Read backups from this local directory instead of Google Drive: the `local` target, read
    /// when no Google credentials are configured, with --target local, and by restore when Drive
    /// cannot provide the backup.
    #[arg(long = "from", value_name = "DIR")]
    pub from_dir: Option<PathBuf>,

    /// Only backups of this database (as recorded in each backup); `latest` picks among these
    /// [default: the database in DATABASE_URL, else the only one in storage].
    #[arg(long, value_name = "NAME")]
    pub database: Option<String>,

    /// Drive API base URL.
    #[arg(long, value_name = "URL")]
    pub drive_url: Option<String>,

    /// Read from the target of this name: `drive` (the Drive folders) or `local`
    /// (PGDRIVE_LOCAL_DIR, or --from DIR) [default: drive when Google credentials are set, else
    /// local; `restore` tries them in that order].
    #[arg(long = "target", value_name = "NAME")]
    pub target: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// Recreate the `backups` rows missing for backups in storage, from each backup's manifest
    /// (or properties), on every configured target: after the table was dropped or lost, or on a
    /// fresh host.
    ///
    /// Idempotent: a backup that already has a row (same SHA-256, Drive file or local file name)
    /// gets none, only its missing location filled in. Prints how many rows it added. Recreates
    /// the table itself when it was dropped.
    Rebuild(RebuildArgs),
}

#[derive(Debug, Args)]
pub struct RebuildArgs {
    /// Only this kind [default: every kind].
    #[arg(long, value_enum)]
    pub kind: Option<Kind>,

    #[command(flatten)]
    pub source: SourceArgs,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this kind [default: every kind whose Drive folder is configured].
    #[arg(long, value_enum)]
    pub kind: Option<Kind>,

    /// Print a JSON array (one object per backup) instead of a table.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub source: SourceArgs,
}

#[derive(Debug, Args)]
pub struct PinArgs {
    /// The backup: a Drive file id or a local file name, from `pgdrive list`.
    #[arg(value_name = "ID")]
    pub id: String,

    /// Only look on this target [default: every configured target].
    #[arg(long, value_name = "NAME")]
    pub target: Option<String>,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Only this job of the config file [default: every job, and every built-in kind that is set up].
    #[arg(long, value_name = "NAME", conflicts_with = "kind")]
    pub job: Option<String>,

    /// Only this built-in kind (the environment-only setup's backups).
    #[arg(long, value_enum)]
    pub kind: Option<Kind>,

    /// Only this target (`drive`, `local`, or a `[targets.NAME]`).
    #[arg(long, value_name = "NAME")]
    pub target: Option<String>,

    /// Delete nothing: print every backup with keep/delete and the rule that decided it.
    #[arg(long)]
    pub dry_run: bool,

    /// Print the decisions as a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Delete even when the rules would delete more than `max_delete_share` of a group.
    #[arg(long)]
    pub force: bool,
}

#[derive(Clone, Debug, Args)]
pub struct RestoreArgs {
    /// `latest` (the newest complete backup of --kind) or a file id from `pgdrive list`.
    #[arg(value_name = "latest|FILE_ID", required_unless_present_any = ["all", "globals"])]
    pub backup: Option<String>,

    /// Restore a whole server from the newest backup set of a job (--job): its globals first
    /// (missing roles created; an existing role keeps its password and attributes unless
    /// --update-roles), then every database of the set, each into a new database of its own name
    /// (as --create, one transaction each), --jobs at a time. --target-url names the server's
    /// maintenance database, e.g. postgres://postgres@newhost:5432/postgres.
    #[arg(long, conflicts_with_all = ["backup", "clean", "create", "globals"])]
    pub all: bool,

    /// Restore only the globals (roles, memberships, role settings, tablespaces) of the newest
    /// backup set of --job into the server of --target-url.
    #[arg(long, conflicts_with_all = ["backup", "clean", "create"])]
    pub globals: bool,

    /// The job whose backup set --all and --globals restore [default: the only job with
    /// globals in storage].
    #[arg(long, value_name = "NAME")]
    pub job: Option<String>,

    /// With --all or --globals: also reset the password, attributes, settings and comment of
    /// roles that already exist on the target server to those of the backup.
    #[arg(long)]
    pub update_roles: bool,

    /// Do not restore ownership nor privileges (pg_restore --no-owner --no-privileges), and leave
    /// out the database-level grants and role settings of roles the target server lacks: for a
    /// server where the original roles must not exist. For plain SQL dumps the script's OWNER TO,
    /// GRANT/REVOKE and SET SESSION AUTHORIZATION statements are left out.
    #[arg(long)]
    pub no_owner: bool,

    /// Restore what role OLD owns, or is granted, as role NEW (repeat for each role; names are
    /// exact, split at the first '='): the owners, privileges, policies and user mappings of the
    /// dump, and the database's recorded owner, grants and role settings with --create. Roles not
    /// named keep their names. Every NEW role must exist on the target server, which is checked
    /// before anything changes. Not with --jobs N > 1 (pg_restore -j cannot rename roles).
    #[arg(long, value_name = "OLD=NEW", conflicts_with_all = ["no_owner", "all", "globals"])]
    pub role_map: Vec<String>,

    /// The kind `latest` means.
    #[arg(long, value_enum, default_value = "daily")]
    pub kind: Kind,

    /// The database to restore into, e.g. postgres://user@host:5432/newdb. Required, and never
    /// the database in DATABASE_URL or PGDRIVE_CATALOG_URL (recognised by asking the servers,
    /// however the address is written; no flag overrides this). Keep the password out of the
    /// command line: ~/.pgpass and PGPASSWORD are honoured.
    #[arg(long, value_name = "URL")]
    pub target_url: String,

    /// Create the target database first, from template0 with the source's recorded encoding and
    /// locale; it is dropped again if the restore fails, and marked unfinished (a comment) until
    /// the restore committed. It must not exist, except as such a marked leftover of an
    /// interrupted restore, which is dropped and created again.
    #[arg(long)]
    pub create: bool,

    /// Allow a target that already has tables: in the restore's own transaction, drop every
    /// non-system schema (CASCADE) and every large object, and recreate an empty public schema.
    #[arg(long, conflicts_with = "create")]
    pub clean: bool,

    /// Do not ask for confirmation on a terminal (scripts never get asked).
    #[arg(long, short = 'y')]
    pub yes: bool,

    /// The psql to run (otherwise psql on PATH, else the newest
    /// /usr/lib/postgresql/<version>/bin/psql).
    #[arg(long, value_name = "PATH")]
    pub psql: Option<PathBuf>,

    /// The pg_restore to run for custom-format backups (otherwise pg_restore on PATH, else the
    /// newest /usr/lib/postgresql/<version>/bin/pg_restore).
    #[arg(long, value_name = "PATH")]
    pub pg_restore: Option<PathBuf>,

    /// With --all: restore N databases at a time, each as one transaction. Otherwise:
    /// restore a custom-format backup with N parallel pg_restore jobs (1, the default, streams
    /// as one transaction). With N > 1 the decompressed archive is first written to a temporary
    /// file in --spool-dir (mode 0600, deleted afterwards, also on failure or SIGINT/SIGTERM)
    /// while its size, MD5 and SHA-256 are checked; only then does `pg_restore -j N
    /// --exit-on-error` run on it. That restore is NOT one transaction, so --jobs requires
    /// --create (the new database is dropped if the restore fails) or --clean (a failed restore
    /// leaves the target partially restored). Refused for plain-format backups, and when the
    /// spool directory has too little free space.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub jobs: u32,

    /// Where --jobs N > 1 writes its temporary archive [default: the system temporary
    /// directory, $TMPDIR or /tmp]. It needs room for the decompressed archive.
    #[arg(long, value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,

    /// Decrypt age-encrypted backups with this identity file (`age-keygen`, `pgdrive keygen`) or
    /// unencrypted SSH private key; a passphrase backup reads PGDRIVE_ENCRYPT_PASSPHRASE_FILE.
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,

    #[command(flatten)]
    pub source: SourceArgs,
}

#[derive(Debug, Args)]
pub struct DrillArgs {
    /// The job whose newest backup set is rehearsed [default: the only job with globals in storage].
    #[arg(long, value_name = "NAME")]
    pub job: Option<String>,

    /// The directory of initdb, pg_ctl, psql and pg_restore [default: the newest
    /// /usr/lib/postgresql/N/bin, N at least the backed-up server's major version]: a newer
    /// major version rehearses an upgrade by dump and restore.
    #[arg(long, value_name = "DIR")]
    pub pg_bin: Option<PathBuf>,

    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,

    /// The kind whose storage is read (Drive folders are by kind).
    #[arg(long, value_enum, default_value = "daily")]
    pub kind: Kind,

    /// Databases restored at a time.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub jobs: u32,

    /// Decrypt age-encrypted backups (and globals) with this identity file or unencrypted SSH
    /// private key [default: PGDRIVE_IDENTITY_FILE]: the drill proves the offline key works.
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,

    #[command(flatten)]
    pub source: SourceArgs,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// `latest` (the newest complete backup of --kind) or a file id from `pgdrive list`.
    #[arg(
        value_name = "latest|FILE_ID",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    pub backup: Option<String>,

    /// Verify every backup (of --kind, if given).
    #[arg(long)]
    pub all: bool,

    /// The kind `latest` means (default daily), or the kind --all is limited to.
    #[arg(long, value_enum)]
    pub kind: Option<Kind>,

    /// Also restore into a new database created on this server (named
    /// <dbname>_pgdrive_verify_<timestamp>; the URL's own database is only used to connect),
    /// compare row counts, then drop it.
    #[arg(long, value_name = "SCRATCH_URL")]
    pub restore_test: Option<String>,

    /// The psql to run for --restore-test.
    #[arg(long, value_name = "PATH")]
    pub psql: Option<PathBuf>,

    /// The pg_restore to run for custom-format backups (otherwise pg_restore on PATH, else the
    /// newest /usr/lib/postgresql/<version>/bin/pg_restore).
    #[arg(long, value_name = "PATH")]
    pub pg_restore: Option<PathBuf>,

    /// Decrypt age-encrypted backups with this identity file (`age-keygen`, `pgdrive keygen`) or
    /// unencrypted SSH private key; a passphrase backup reads PGDRIVE_ENCRYPT_PASSPHRASE_FILE.
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,

    #[command(flatten)]
    pub source: SourceArgs,
}
