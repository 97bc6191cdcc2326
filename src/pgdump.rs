//! pg_dump as a child process: finding the right binary, checking its version against the
//! server's, building its arguments, and running it with the connection in its environment
//! (never on its command line). Its stderr is drained on a thread (a chatty pg_dump must never
//! block on a full pipe) and the tail is kept for error messages; its exit status is collected
//! only after its stdout reached EOF, and only a zero status lets a backup be finalised.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};

use anyhow::{Context, Result};

use crate::error::config_error_hint;
use crate::kind::Kind;

/// A pg_dump binary and its version.
#[derive(Clone, Debug)]
pub struct PgDump {
    pub path: PathBuf,
    /// e.g. `15.20`
    pub version: String,
    pub major: u32,
}

/// Parses `pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)` into (`15.20`, 15). Handles
/// pre-10 numbering (`9.6.24` → major 9).
pub fn parse_version(line: &str) -> Option<(String, u32)> {
    let version = line
        .split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))?;
    let version: String = version
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let major = version.split('.').next()?.parse().ok()?;
    Some((version, major))
}

fn probe(path: &Path) -> Result<PgDump> {
    let out = Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {} --version", path.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (version, major) = parse_version(text.trim()).with_context(|| {
        format!(
            "{} --version printed {:?}, not a pg_dump version",
            path.display(),
            text.trim()
        )
    })?;
    Ok(PgDump {
        path: path.to_path_buf(),
        version,
        major,
    })
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Chooses pg_dump: the explicit one if given (it must be new enough), otherwise the first of
/// PATH's and `/usr/lib/postgresql/<major>/bin`'s whose major version is at least the server's.
pub fn locate(explicit: Option<&Path>, server_major: u32) -> Result<PgDump> {
    let too_old = |d: &PgDump| {
        config_error_hint(
            format!(
                "{} is version {}, older than the server (major {server_major}); pg_dump must be at least the server's major version",
                d.path.display(),
                d.version
            ),
            format!("install postgresql-client-{server_major} and point PGDRIVE_PG_DUMP (or --pg-dump) at its pg_dump"),
        )
    };
    if let Some(path) = explicit {
        if !path.exists() {
            return Err(config_error_hint(format!(
                "pg_dump not found at {} (PGDRIVE_PG_DUMP / --pg-dump)",
                path.display()
            ), "install the PostgreSQL client programs matching the server's major version, or point PGDRIVE_PG_DUMP (--pg-dump) at pg_dump"));
        }
        let d = probe(path).map_err(|e| config_error_hint(format!("{e:#}"), "PGDRIVE_PG_DUMP (--pg-dump) must name a working pg_dump: `pg_dump --version` must run"))?;
        return if d.major >= server_major {
            Ok(d)
        } else {
            Err(too_old(&d))
        };
    }
    let mut candidates: Vec<PathBuf> = on_path("pg_dump").into_iter().collect();
    candidates.push(PathBuf::from(format!(
        "/usr/lib/postgresql/{server_major}/bin/pg_dump"
    )));
    let mut found = Vec::new();
    for c in candidates.iter().filter(|c| c.is_file()) {
        match probe(c) {
            Ok(d) if d.major >= server_major => return Ok(d),
            Ok(d) => found.push(d),
            Err(_) => {}
        }
    }
    match found.first() {
        Some(d) => Err(too_old(d)),
        None => Err(config_error_hint(
            "pg_dump was not found on PATH nor in /usr/lib/postgresql/<version>/bin",
            format!("install the PostgreSQL client (e.g. apt-get install postgresql-client-{server_major}) or set PGDRIVE_PG_DUMP"),
        )),
    }
}

/// pg_dump's output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DumpFormat {
    /// An SQL script, restored with psql.
    Plain,
    /// pg_dump's custom archive, uncompressed by pg_dump (pgdrive compresses), restored with
    /// pg_restore (in parallel with `-j` from a seekable file).
    Custom,
}

impl DumpFormat {
    pub fn parse(s: &str) -> Option<DumpFormat> {
        match s {
            "plain" => Some(DumpFormat::Plain),
            "custom" => Some(DumpFormat::Custom),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            DumpFormat::Plain => "plain",
            DumpFormat::Custom => "custom",
        }
    }

    /// The file-name extension before the codec's.
    pub fn extension(&self) -> &'static str {
        match self {
            DumpFormat::Plain => ".sql",
            DumpFormat::Custom => ".dump",
        }
    }
}

/// pg_dump's arguments for a backup kind. `tables` are exact `-t` patterns (already quoted).
pub fn arguments(kind: Kind, format: DumpFormat, tables: &[String]) -> Vec<OsString> {
    let mut args: Vec<OsString> = match format {
        DumpFormat::Plain => vec!["--format=plain".into()],
        // one codec and one checksum path: pgdrive compresses, pg_dump does not
        DumpFormat::Custom => vec!["--format=custom".into(), "--compress=0".into()],
    };
    // never prompt: under cron there is nobody to answer
    args.push("--no-password".into());
    match kind {
        Kind::Daily => {}
        Kind::Schema => args.push("--schema-only".into()),
        Kind::Hourly => {
            // fail rather than silently skip a table that vanished since validation
            args.push("--strict-names".into());
            for t in tables {
                args.push("--table".into());
                args.push(t.into());
            }
        }
    }
    args
}

/// A running pg_dump.
pub struct RunningDump {
    child: Child,
    stderr: crate::child::StderrTail,
}

/// Room pg_dump may write ahead of the reader. The default pipe (64 KiB) wakes the reader for
/// every few of pg_dump's small writes and stops pg_dump whenever the compressor is busy for a
/// moment; 1 MiB (the unprivileged maximum by default) lets both run in longer stretches.
const DUMP_PIPE_BYTES: libc::c_int = 1 << 20;

/// Enlarges the pipe pg_dump writes into; a refusal (a lower `fs.pipe-max-size`) only keeps
/// the default size.
fn widen_pipe(stdout: &ChildStdout) {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl(2) on a pipe descriptor this process owns; no memory is passed
    let _ = unsafe { libc::fcntl(stdout.as_raw_fd(), libc::F_SETPIPE_SZ, DUMP_PIPE_BYTES) };
}

/// How pg_dump ended.
pub struct DumpOutcome {
    pub success: bool,
    pub description: String,
    pub stderr_tail: String,
}

impl RunningDump {
    /// Starts pg_dump with the connection in `env` (PG* variables replace any inherited ones).
    pub fn spawn(
        bin: &PgDump,
        args: &[OsString],
        env: &[(&'static str, String)],
    ) -> Result<RunningDump> {
        let mut cmd = Command::new(&bin.path);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PG") {
                cmd.env_remove(&key);
            }
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        // a pgdrive killed outright must not leave pg_dump (or a wrapper's children) running
        crate::child::dies_with_pgdrive(&mut cmd);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.path.display()))?;
        let stderr = child
            .stderr
            .take()
            .context("pg_dump's stderr was not captured")?;
        let stderr = crate::child::drain_stderr(stderr, "pg_dump")?;
        if let Some(stdout) = &child.stdout {
            widen_pipe(stdout);
        }
        Ok(RunningDump { child, stderr })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn take_stdout(&mut self) -> Result<ChildStdout> {
        self.child
            .stdout
            .take()
            .context("pg_dump's stdout was already taken")
    }

    /// Kills pg_dump (used when the run is being abandoned).
    pub fn kill(&mut self) {
        // the whole group: a wrapper script's pg_dump must not keep the pipe open
        if self.child.try_wait().ok().flatten().is_none() {
            // SAFETY: kill(2) on the group this child leads (it was started with process_group(0))
            unsafe { libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL) };
        }
        let _ = self.child.kill();
    }

    /// Waits for pg_dump to exit and collects its stderr tail.
    pub fn wait(mut self) -> Result<DumpOutcome> {
        let status = self.child.wait().context("waiting for pg_dump")?;
        Ok(DumpOutcome {
            success: status.success(),
            description: crate::child::describe_exit(&status),
            stderr_tail: self.stderr.collect(),
        })
    }
}

impl Drop for RunningDump {
    fn drop(&mut self) {
        // a dump that is dropped without `wait` is being abandoned: never leave it running
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Fails with pg_dump's own words when it did not exit 0.
pub fn check_outcome(outcome: &DumpOutcome) -> Result<()> {
    if outcome.success {
        return Ok(());
    }
    Err(DumpFailed {
        description: outcome.description.clone(),
        stderr_tail: outcome.stderr_tail.clone(),
    }
    .into())
}

/// pg_dump failed; the stderr tail is kept apart so that failure notifications can show it as is.
#[derive(Debug)]
pub struct DumpFailed {
    pub description: String,
    pub stderr_tail: String,
}

impl std::fmt::Display for DumpFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.stderr_tail.is_empty() {
            write!(f, "pg_dump {}", self.description)
        } else {
            write!(
                f,
                "pg_dump {}: {}",
                self.description,
                self.stderr_tail.replace('\n', " | ")
            )
        }
    }
}

impl std::error::Error for DumpFailed {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(
            parse_version("pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)"),
            Some(("15.20".into(), 15))
        );
        assert_eq!(
            parse_version("pg_dump (PostgreSQL) 17beta1"),
            Some(("17".into(), 17))
        );
        assert_eq!(
            parse_version("pg_dump (PostgreSQL) 9.6.24"),
            Some(("9.6.24".into(), 9))
        );
        assert_eq!(parse_version("hello"), None);
    }

    #[test]
    fn arguments_by_kind() {
        let strings = |args: Vec<OsString>| -> Vec<String> {
            args.iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(
            strings(arguments(Kind::Daily, DumpFormat::Plain, &[])),
            vec!["--format=plain", "--no-password"]
        );
        assert_eq!(
            strings(arguments(Kind::Daily, DumpFormat::Custom, &[])),
            vec!["--format=custom", "--compress=0", "--no-password"]
        );
        let schema = arguments(Kind::Schema, DumpFormat::Plain, &[]);
        assert!(schema.iter().any(|a| a == "--schema-only"));
        let hourly = strings(arguments(
            Kind::Hourly,
            DumpFormat::Plain,
            &["\"public\".\"orders\"".into()],
        ));
        assert_eq!(
            hourly[2..],
            ["--strict-names", "--table", "\"public\".\"orders\""]
        );
    }
}
