//! The restore clients as child processes: psql for plain dumps, pg_restore for custom archives.
//! Finding the binary (`PGDRIVE_PSQL` / `PGDRIVE_PG_RESTORE`, PATH, then the newest
//! `/usr/lib/postgresql/*/bin`), running it with the connection in its environment (never argv),
//! draining its stderr on a thread (tail kept for the error message), and ending it either
//! cleanly (close stdin → it commits its single transaction) or by SIGKILL before its stdin is
//! closed, which drops the connection mid-transaction so the server rolls everything back.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use anyhow::{Context, Result};

use crate::error::config_error_hint;

/// Finds psql. An explicit path must exist.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf> {
    locate_tool("psql", "PGDRIVE_PSQL", explicit)
}

/// Finds a PostgreSQL client program (`psql`, `pg_restore`). An explicit path must exist.
pub fn locate_tool(name: &str, variable: &str, explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(config_error_hint(format!(
                "{name} not found at {} ({variable})",
                p.display()
            ), "install the PostgreSQL client programs, or point the variable named above at the program"))
        };
    }
    if let Some(path) = std::env::var_os("PATH") {
        if let Some(p) = std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
        {
            return Ok(p);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            Some((
                e.file_name().to_str()?.parse().ok()?,
                e.path().join("bin").join(name),
            ))
        })
        .filter(|(_, p): &(u32, PathBuf)| p.is_file())
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p).ok_or_else(|| {
        crate::error::config_error_hint(
            format!("{name} was not found on PATH nor in /usr/lib/postgresql/<version>/bin"),
            format!("install the PostgreSQL client (e.g. apt-get install postgresql-client) or set {variable}"),
        )
    })
}

/// A running restore client reading from its stdin: `psql -X -q -v ON_ERROR_STOP=1
/// --single-transaction -f -`, or `pg_restore --single-transaction --exit-on-error -d DB`.
pub struct RunningClient {
    program: &'static str,
    child: Child,
    /// Runs in its own process group (parallel pg_restore: the leader and its workers), which is
    /// killed as a whole.
    group: bool,
    stdin: Option<ChildStdin>,
    stderr: crate::child::StderrTail,
}

/// How the client ended.
pub struct ClientOutcome {
    /// `psql` or `pg_restore`.
    pub program: &'static str,
    pub success: bool,
    pub description: String,
    pub stderr_tail: String,
}

impl RunningClient {
    /// Starts psql reading a script from stdin as one transaction (`-1 -f -`: `--single-transaction`
    /// only applies to `-f`/`-c` input). The connection comes from `env` (PG* variables replace any
    /// inherited ones).
    pub fn spawn(bin: &Path, env: &[(&'static str, String)]) -> Result<RunningClient> {
        let args = [
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "--single-transaction",
            "-f",
            "-",
        ];
        Self::start("psql", bin, &args.map(String::from), env)
    }

    /// Starts pg_restore reading a custom archive from stdin into `dbname` as one transaction;
    /// `clean` adds `--clean --if-exists` (drop the archive's objects before recreating them).
    /// The database name is not a secret; host, user and password come from `env`.
    pub fn spawn_pg_restore(
        bin: &Path,
        dbname: &str,
        clean: bool,
        env: &[(&'static str, String)],
    ) -> Result<RunningClient> {
        let mut args: Vec<String> = ["--single-transaction", "--exit-on-error", "--no-password"]
            .map(String::from)
            .to_vec();
        if clean {
            args.extend(["--clean", "--if-exists"].map(String::from));
        }
        // as `dbname='…'`, a name containing '=' or a URI prefix is never read as a conninfo
        let quoted = dbname.replace('\\', "\\\\").replace('\'', "\\'");
        args.push(format!("--dbname=dbname='{quoted}'"));
        Self::start("pg_restore", bin, &args, env)
    }

    /// Starts `pg_restore -j JOBS --exit-on-error` on a custom archive in a (seekable) file into
    /// `dbname`. Not one transaction: pg_restore cannot combine `-j` with
    /// `--single-transaction`. `clean` adds `--clean --if-exists`. Its stdin is not read.
    pub fn spawn_pg_restore_parallel(
        bin: &Path,
        dbname: &str,
        clean: bool,
        jobs: u32,
        file: &Path,
        env: &[(&'static str, String)],
    ) -> Result<RunningClient> {
        let mut args: Vec<String> = vec![
            format!("--jobs={jobs}"),
            "--exit-on-error".into(),
            "--no-password".into(),
        ];
        if clean {
            args.extend(["--clean", "--if-exists"].map(String::from));
        }
        let quoted = dbname.replace('\\', "\\\\").replace('\'', "\\'");
        args.push(format!("--dbname=dbname='{quoted}'"));
        args.push(file.to_string_lossy().into_owned());
        Self::start_in("pg_restore", bin, &args, env, true)
    }

    /// Waits for the client to exit, polling for SIGINT/SIGTERM: on one, the client is killed
    /// and `Interrupted` returned.
    pub fn wait_interruptible(mut self) -> Result<ClientOutcome> {
        drop(self.stdin.take());
        loop {
            if let Err(e) = crate::signals::check() {
                self.kill();
                let _ = self.child.wait();
                return Err(e.into());
            }
            if self
                .child
                .try_wait()
                .context("waiting for pg_restore")?
                .is_some()
            {
                return self.collect();
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Starts pg_restore turning a custom archive on stdin into SQL that is thrown away: it
    /// reads and parses the whole archive, without a database.
    pub fn spawn_pg_restore_check(bin: &Path) -> Result<RunningClient> {
        Self::start("pg_restore", bin, &["--file=/dev/null".to_string()], &[])
    }

    fn start(
        program: &'static str,
        bin: &Path,
        args: &[String],
        env: &[(&'static str, String)],
    ) -> Result<RunningClient> {
        Self::start_in(program, bin, args, env, false)
    }

    fn start_in(
        program: &'static str,
        bin: &Path,
        args: &[String],
        env: &[(&'static str, String)],
        group: bool,
    ) -> Result<RunningClient> {
        let mut cmd = Command::new(bin);
        if group {
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        }
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PG") {
                cmd.env_remove(&key);
            }
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdin = child
            .stdin
            .take()
            .context("psql's stdin was not captured")?;
        let stderr = child
            .stderr
            .take()
            .context("psql's stderr was not captured")?;
        let stderr = crate::child::drain_stderr(stderr, program)?;
        Ok(RunningClient {
            program,
            child,
            group,
            stdin: Some(stdin),
            stderr,
        })
    }

    /// Writes script bytes. A failure usually means psql stopped at an error (ON_ERROR_STOP):
    /// the caller then collects its stderr through [`RunningClient::abort`].
    pub fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self.stdin.as_mut() {
            Some(s) => s.write_all(data),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "psql's input is closed",
            )),
        }
    }

    /// Ends the input: psql commits the transaction and exits.
    pub fn finish(mut self) -> Result<ClientOutcome> {
        drop(self.stdin.take());
        self.collect()
    }

    /// Kills psql while its input is still open, so its transaction can never commit; then
    /// collects what it said.
    pub fn abort(mut self) -> Result<ClientOutcome> {
        // SIGKILL first, stdin closed after: closing first would let psql reach end of input and COMMIT.
        let _ = self.child.kill();
        let _ = self.child.wait();
        drop(self.stdin.take());
        self.collect()
    }

    /// SIGKILL to the client (and, for a process group, to its workers too).
    fn kill(&mut self) {
        if self.group {
            if let Ok(pid) = i32::try_from(self.child.id()) {
                // SAFETY: signals the process group this child leads (created at spawn).
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            }
        }
        let _ = self.child.kill();
    }

    fn collect(&mut self) -> Result<ClientOutcome> {
        let status = self.child.wait().context("waiting for psql")?;
        Ok(ClientOutcome {
            program: self.program,
            success: status.success(),
            description: crate::child::describe_exit(&status),
            stderr_tail: crate::redact::scrub(&self.stderr.collect()),
        })
    }
}

impl Drop for RunningClient {
    fn drop(&mut self) {
        // dropped without finish/abort: the restore is being abandoned, so it must not commit
        if let Ok(None) = self.child.try_wait() {
            self.kill();
            let _ = self.child.wait();
        }
    }
}
