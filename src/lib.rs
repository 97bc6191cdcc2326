//! pgdrive: PostgreSQL backups streamed into Google Drive.
//!
//! # Layout
//! - `cli`: clap definitions (`kind`: the backup kinds they name); `registry`: every setting declared once (env name, config-file
//!   key, type, default, help, secrecy), feeding the parser, `--help`, the man page and README;
//!   `config`: flags > environment > config file (`config_file`, TOML) > env-file, validated;
//!   `error`: exit statuses and hints, mapped in one place; `log`, `redact`, `timeutil`, `signals`,
//!   `host` (this machine's name), `units` (sizes as people read them).
//! - `commands`: one module per command, orchestration only.
//! - `pgconn`: DATABASE_URL → pgdrive's own connection and pg_dump's environment;
//!   `pgtls`: libpq's sslmode semantics for pgdrive's own connections.
//! - `server`: connecting, the server version, standby or not, the critical tables and row counts
//!   (shared by `backup`, `check` and `verify`);
//!   `dblocale`: a database's encoding and locale, recorded at backup, recreated by `restore --create`;
//!   `identity`: whether two connections reach the same database, asked of the servers.
//! - `lock`: the per-kind advisory lock; `catalog`: the `backups` table, its migrations and the
//!   commands' SQL on it (`dashboard` still reads `status`'s history itself).
//! - `pgdump`: the pg_dump child (`child`: what every child process shares); `pipeline`:
//!   compression and chunking on a thread (checksums are taken on the main thread); `fanout`:
//!   the chunks to every target's upload at once, each on its own thread, with per-target outcomes;
//!   `rowcount`: per-table row counts read off the dump as it streams (`archive`: the same for
//!   custom-format archives); `codec`: gzip (parallel
//!   members), zstd and none, encoders and decoders.
//! - `storage`: the `Target` interface with Drive and local implementations; `fsutil`: temporary
//!   files and no-replace renames that a writable directory cannot redirect.
//! - `drive`: Drive v3 over one HTTP stack: `auth` (tokens), `upload` (resumable protocol),
//!   `download` (ranged, resumed), `retry` (policy and classifier).
//! - `retention`: the pure pruning plan.
//! - `restore`: the checked restore stream shared by `restore` and `verify` (download → checksums →
//!   decompression → psql or pg_restore in one transaction that only pgdrive commits); `psql`:
//!   the psql/pg_restore child; `dumpscript`: a plain dump's own large-object transaction taken
//!   out of it; `progress`: the terminal progress line.
//! - `notify`: run reports to people and monitors: SendGrid/SMTP email, Slack, a JSON webhook,
//!   heartbeat pings; each channel independent, retries as data.
//! - `health`: findings shared by `check` and `status`, and the seams for contributed checks and alerts
//!   (the notification channels use both: `health::notifications`);
//!   `dashboard`: the facts `status` reports and their text, JSON, Prometheus and HTML renderings.
//!
//! # Concurrency
//! Synchronous on purpose: the main thread runs the steps in order and owns pg_dump, the upload
//! sessions' opening and finishing, and the database connections (the sync `postgres` client must never run inside an async
//! runtime); two helper threads drain pg_dump's stderr and compress, and `fanout` gives each
//! storage target's upload a scoped thread of its own, fed through a bounded queue. A restore runs on the main
//! thread too (download, hash, gunzip, write to psql); one helper thread drains psql's stderr. No async runtime is used.

pub mod archive;
pub mod catalog;
pub mod child;
pub mod cli;
pub mod codec;
pub mod commands;
pub mod config;
pub mod config_file;
pub mod dashboard;
pub mod dblocale;
pub mod dr;
pub mod drive;
pub mod dumpscript;
pub mod encrypt;
pub mod error;
pub mod fanout;
pub mod fsutil;
pub mod health;
pub mod host;
pub mod identity;
pub mod jobs;
pub mod kind;
pub mod lock;
pub mod log;
pub mod manpage;
pub mod notify;
pub mod pgconn;
pub mod pgdump;
pub mod pgtls;
pub mod pipeline;
pub mod progress;
pub mod psql;
pub mod redact;
pub mod registry;
pub mod restore;
pub mod retention;
pub mod rowcount;
pub mod server;
pub mod signals;
pub mod storage;
pub mod timeutil;
pub mod units;
