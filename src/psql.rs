//! The restore clients as child processes: psql for plain dumps, pg_restore for custom archives.
//! Finding the binary (`PGDRIVE_PSQL` / `PGDRIVE_PG_RESTORE`, PATH, then the newest
//! `/usr/lib/postgresql/*/bin`), running it with the connection in its environment (never argv),
//! draining its stderr on a thread (tail kept for the error message), and ending it either
//! cleanly ([`RunningClient::finish`]: pgdrive's consent to commit, then end of input) or by
//! SIGKILL before its stdin is closed, which drops the connection mid-transaction so the server
//! rolls everything back.
//!
//! Only pgdrive's consent commits, whatever happens to pgdrive:
//! - psql does not run the script as `--single-transaction` (which commits at end of input, so a
//!   pgdrive killed mid-stream — SIGKILL, the OOM killer, a second signal — would commit what it
//!   had sent). pgdrive sends `BEGIN;` itself and `COMMIT;` only in `finish`; psql reaching end
//!   of input inside that transaction disconnects, and the server rolls it back.
//! - pg_restore commits only after reading the archive's last data block, which pgdrive holds back
//!   until every check passed (`crate::restore`); an archive that ends early is a fatal error, and
//!   pg_restore exits without committing.
//! - Every client gets `PR_SET_PDEATHSIG(SIGKILL)` (it dies with pgdrive instead of running on)
//!   and its own process group (a terminal's Ctrl-C reaches pgdrive alone, which decides; a
//!   parallel pg_restore's workers are killed with their leader).
//!
//! A stopping run (a signal, the stall watchdog) kills every running client's process group at
//! once (`crate::signals::kill_on_stop`), so a write blocked on a client that stopped reading
//! fails then rather than never. A client that stops reading because its server is busy (a long
//! `CREATE INDEX`) is not stalled: [`RunningClient::watch_session`] looks at its session in
//! `pg_stat_activity` (found by a unique `application_name`) and counts a session that is
//! working, not waiting on a lock, as progress.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

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

/// What pgdrive sends psql first: the restore's transaction, which only [`COMMIT`] ends well.
const BEGIN: &[u8] = b"BEGIN;\n";
/// pgdrive's consent, sent by [`RunningClient::finish`] (on a line of its own even if the dump's
/// last line has no newline).
const COMMIT: &[u8] = b"\nCOMMIT;\n";

/// A running restore client reading from its stdin: `psql -X -q -w -v ON_ERROR_STOP=1 -f -`
/// inside pgdrive's `BEGIN;`, or `pg_restore --single-transaction --exit-on-error -d DB`.
pub struct RunningClient {
    program: &'static str,
    child: Child,
    /// The statement that commits (psql), sent only by `finish`.
    commit: Option<&'static [u8]>,
    stdin: Option<ChildStdin>,
    stderr: crate::child::StderrTail,
    /// The `application_name` the client's session has (unique to this client).
    application_name: String,
    /// Set to end the [`RunningClient::watch_session`] thread.
    stop_watching: Arc<AtomicBool>,
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
    /// Starts psql reading a script from stdin inside a transaction pgdrive has begun and only
    /// [`RunningClient::finish`] commits (see the module docs). `-w`: never prompt for a
    /// password (it has no terminal in its own process group). The connection comes from `env`
    /// (PG* variables replace any inherited ones).
    pub fn spawn(bin: &Path, env: &[(&'static str, String)]) -> Result<RunningClient> {
        let args = ["-X", "-q", "-w", "-v", "ON_ERROR_STOP=1", "-f", "-"];
        let mut client = Self::start("psql", bin, &args.map(String::from), env)?;
        client.commit = Some(COMMIT);
        if client.write(BEGIN).is_err() {
            // psql already stopped (e.g. it could not connect): nothing may reach it without its
            // BEGIN; the first write fails and its stderr is quoted
            client.stdin = None;
        }
        Ok(client)
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
        Self::spawn_pg_restore_with(bin, dbname, clean, false, env)
    }

    /// [`RunningClient::spawn_pg_restore`]; `no_owner` adds `--no-owner --no-privileges`.
    pub fn spawn_pg_restore_with(
        bin: &Path,
        dbname: &str,
        clean: bool,
        no_owner: bool,
        env: &[(&'static str, String)],
    ) -> Result<RunningClient> {
        let mut args: Vec<String> = ["--single-transaction", "--exit-on-error", "--no-password"]
            .map(String::from)
            .to_vec();
        args.extend(restore_flags(clean, no_owner));
        args.push(dbname_arg(dbname));
        Self::start("pg_restore", bin, &args, env)
    }

    /// Starts pg_restore turning a custom archive on stdin into the SQL script it would run,
    /// written to the returned stdout (no database, no transaction of its own: the script goes to
    /// a psql inside pgdrive's). `clean` adds `--clean --if-exists`.
    pub fn spawn_pg_restore_script(
        bin: &Path,
        clean: bool,
    ) -> Result<(RunningClient, ChildStdout)> {
        let mut args = vec!["--file=-".to_string()];
        args.extend(restore_flags(clean, false));
        let mut client = Self::start_piped("pg_restore", bin, &args, &[], Stdio::piped())?;
        let stdout = client
            .child
            .stdout
            .take()
            .context("pg_restore's stdout was not captured")?;
        Ok((client, stdout))
    }

    /// Starts `pg_restore -j JOBS --exit-on-error` on a custom archive in a (seekable) file into
    /// `dbname`. Not one transaction: pg_restore cannot combine `-j` with
    /// `--single-transaction`. `clean` adds `--clean --if-exists`, `no_owner` `--no-owner
    /// --no-privileges`. Its stdin is not read.
    pub fn spawn_pg_restore_parallel(
        bin: &Path,
        dbname: &str,
        clean: bool,
        no_owner: bool,
        jobs: u32,
        file: &Path,
        env: &[(&'static str, String)],
    ) -> Result<RunningClient> {
        let mut args: Vec<String> = vec![
            format!("--jobs={jobs}"),
            "--exit-on-error".into(),
            "--no-password".into(),
        ];
        args.extend(restore_flags(clean, no_owner));
        args.push(dbname_arg(dbname));
        args.push(file.to_string_lossy().into_owned());
        Self::start("pg_restore", bin, &args, env)
    }

    /// Waits for the client to exit, polling for SIGINT/SIGTERM: on one, the client is killed
    /// and `Interrupted` returned.
    pub fn wait_interruptible(mut self) -> Result<ClientOutcome> {
        drop(self.stdin.take());
        // this loop kills it on a signal itself; the watcher must not signal a reaped id
        self.forget();
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
        Self::start_piped(program, bin, args, env, Stdio::null())
    }

    fn start_piped(
        program: &'static str,
        bin: &Path,
        args: &[String],
        env: &[(&'static str, String)],
        stdout: Stdio,
    ) -> Result<RunningClient> {
        let mut cmd = Command::new(bin);
        crate::child::dies_with_pgdrive(&mut cmd);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(stdout)
            .stderr(Stdio::piped());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PG") {
                cmd.env_remove(&key);
            }
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        let application_name = format!(
            "pgdrive {program} {}",
            &crate::fsutil::random_token()?[..12]
        );
        if !env.is_empty() {
            cmd.env("PGAPPNAME", &application_name);
        }
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
        crate::signals::kill_on_stop(child.id() as i32);
        Ok(RunningClient {
            program,
            child,
            commit: None,
            stdin: Some(stdin),
            stderr,
            application_name,
            stop_watching: Arc::new(AtomicBool::new(false)),
        })
    }

    /// `psql` or `pg_restore`.
    pub fn program(&self) -> &'static str {
        self.program
    }

    /// While the stall watchdog is armed, looks at the client's session on `db` a few times per
    /// timeout and records progress whenever it is working (`active`, and waiting neither on a
    /// lock nor on its client): a client busy building an index reads nothing, yet is not stalled.
    /// Runs on its own thread and connection until the client ends, so a server that stopped
    /// answering only means no progress is recorded.
    pub fn watch_session(&self, db: &crate::pgconn::ConnInfo) {
        let (db, name, stop) = (
            db.clone(),
            self.application_name.clone(),
            self.stop_watching.clone(),
        );
        let _ = std::thread::Builder::new()
            .name(format!("{}-session", self.program))
            .spawn(move || watch_session_until(&db, &name, &stop));
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

    /// pgdrive's consent: psql is sent `COMMIT;`, then end of input (pg_restore has had the
    /// archive's end already); it commits and exits.
    pub fn finish(mut self) -> Result<ClientOutcome> {
        let consent = match self.commit {
            Some(commit) => self.write(commit),
            None => Ok(()),
        };
        drop(self.stdin.take());
        let mut outcome = self.collect()?;
        if consent.is_err() {
            // it stopped before it could be told to commit: it cannot have committed
            outcome.success = false;
        }
        Ok(outcome)
    }

    /// Kills the client while its input is still open, so its transaction can never commit;
    /// then collects what it said.
    pub fn abort(mut self) -> Result<ClientOutcome> {
        // SIGKILL first, stdin closed after: the client never sees an orderly end of input.
        self.forget();
        self.kill();
        let _ = self.child.wait();
        drop(self.stdin.take());
        self.collect()
    }

    /// SIGKILL to the client's process group (a parallel pg_restore's workers too).
    fn kill(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: signals the process group this child leads (created at spawn); the child has
            // not been reaped yet, so the id is still its own.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        let _ = self.child.kill();
    }

    /// Whether the client has exited, leaving it unreaped (`waitid` with `WNOWAIT`).
    fn has_exited(&self) -> Result<bool> {
        // SAFETY: a zeroed siginfo_t is a valid out-parameter; waitid only inspects our own child.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            if libc::waitid(
                libc::P_PID,
                self.child.id() as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            ) != 0
            {
                let e = std::io::Error::last_os_error();
                // already reaped (abort waits for it): `Child::wait` has its status
                if e.raw_os_error() == Some(libc::ECHILD) {
                    return Ok(true);
                }
                return Err(e).with_context(|| format!("waiting for {}", self.program));
            }
            Ok(info.si_pid() != 0)
        }
    }

    /// Ends the watcher's claim on the client (before it is reaped) and the session watch.
    fn forget(&mut self) {
        crate::signals::forget(self.child.id() as i32);
        self.stop_watching.store(true, Ordering::SeqCst);
    }

    fn collect(&mut self) -> Result<ClientOutcome> {
        // waited for without reaping, so the watcher can still kill it (a signal, a stall) and
        // never signals an id that was reused
        while !self.has_exited()? {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.forget();
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
        self.forget();
        if let Ok(None) = self.child.try_wait() {
            self.kill();
            let _ = self.child.wait();
        }
    }
}

/// pg_restore's `--clean --if-exists` and `--no-owner --no-privileges`, as asked.
fn restore_flags(clean: bool, no_owner: bool) -> Vec<String> {
    let mut flags = Vec::new();
    if clean {
        flags.extend(["--clean", "--if-exists"].map(String::from));
    }
    if no_owner {
        flags.extend(["--no-owner", "--no-privileges"].map(String::from));
    }
    flags
}

/// `--dbname` as `dbname='…'`: a name containing '=' or a URI prefix is never read as a conninfo.
fn dbname_arg(dbname: &str) -> String {
    let quoted = dbname.replace('\\', "\\\\").replace('\'', "\\'");
    format!("--dbname=dbname='{quoted}'")
}

/// The loop behind [`RunningClient::watch_session`], until `stop` is set.
fn watch_session_until(db: &crate::pgconn::ConnInfo, application_name: &str, stop: &AtomicBool) {
    const WORKING: &str = "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 \
        AND state = 'active' AND coalesce(wait_event_type, '') NOT IN ('Lock', 'Client')";
    let mut session: Option<postgres::Client> = None;
    while !stop.load(Ordering::SeqCst) {
        let Some(timeout) = crate::signals::watched_timeout() else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        std::thread::sleep((timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(10)));
        if session.is_none() {
            session = db.connect("pgdrive session watch").ok();
        }
        let Some(client) = session.as_mut() else {
            continue;
        };
        match client.query_one(WORKING, &[&application_name]) {
            Ok(row) if row.get::<_, i64>(0) > 0 => crate::signals::progress(),
            Ok(_) => {}
            // reconnect next time; meanwhile nothing counts as progress
            Err(_) => session = None,
        }
    }
}
