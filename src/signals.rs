//! Stopping a run: SIGINT/SIGTERM/SIGHUP and the stall watchdog.
//!
//! The first signal sets a flag that every long-running step polls (the upload loop, retry
//! sleeps, the dump pipeline), so a run abandons its upload session, kills pg_dump and records an
//! ERROR row instead of dying half-way; a second signal exits at once. A request blocked on the
//! network cannot poll, so a watcher thread shuts down the process's HTTP agent
//! ([`cut_on_stop`]) the moment a signal arrives: the blocked call fails at once and the run
//! reaches its cleanup, whose own requests go through a fresh agent with short timeouts
//! ([`CLEANUP_TIMEOUT`]). Should the cleanup itself hang (a catalog that stopped answering), the
//! watcher exits the process [`GRACE`] after the signal, well inside systemd's TimeoutStopSec.
//!
//! The stall watchdog ([`watch`]) fails a run that makes no progress for the configured time: a
//! backup that gets no bytes from pg_dump and has none accepted by a target; a restore or verify
//! whose download delivers nothing and whose restore client accepts nothing (while its server
//! session does no work either). It stops the run the same way a signal does, with a "stalled"
//! error naming what it was waiting on.
//!
//! Stopping (a signal or a stall) also SIGKILLs the process groups of the running restore clients
//! ([`kill_on_stop`]): a write blocked on a client that stopped reading then fails at once (EPIPE)
//! instead of waiting for it, and the client, killed inside its transaction, commits nothing.
//! Reads that the kernel could block on (a local FIFO) poll instead (see `crate::fsutil`).
//!
//! Exiting at once never commits a restore: its client commits only on pgdrive's explicit
//! consent and dies with pgdrive (see `crate::psql`).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

static RECEIVED: OnceLock<Arc<AtomicUsize>> = OnceLock::new();

/// How long the cleanup after a signal may take before the process exits regardless.
pub const GRACE: Duration = Duration::from_secs(8);
/// The whole-request timeout of every HTTP request made after a stop (cancelling the upload
/// session, notifications), so that the cleanup is bounded too.
pub const CLEANUP_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the watcher looks at the signal flag and the watchdog.
const TICK: Duration = Duration::from_millis(50);

/// The error every step returns once a termination signal has arrived.
#[derive(Debug)]
pub struct Interrupted(pub usize);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.0 as i32 {
            SIGINT => "SIGINT",
            SIGTERM => "SIGTERM",
            SIGHUP => "SIGHUP",
            _ => "a signal",
        };
        write!(f, "interrupted by {name}")
    }
}

impl std::error::Error for Interrupted {}

/// Installs the handlers and starts the watcher thread; call once at start-up.
pub fn install() -> std::io::Result<()> {
    let flag = RECEIVED
        .get_or_init(|| Arc::new(AtomicUsize::new(0)))
        .clone();
    for sig in [SIGINT, SIGTERM, SIGHUP] {
        // Handlers run in registration order: the first delivery only records the signal and arms
        // the shutdown; a second delivery exits at once (status 1).
        let flag = flag.clone();
        let armed = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register_conditional_shutdown(sig, 1, armed.clone())?;
        signal_hook::flag::register_usize(sig, flag, sig as usize)?;
        signal_hook::flag::register(sig, armed)?;
    }
    std::thread::Builder::new()
        .name("signal-watcher".into())
        .spawn(watcher)?;
    Ok(())
}

/// The signal received so far, if any.
pub fn received() -> Option<usize> {
    RECEIVED
        .get()
        .map(|f| f.load(Ordering::SeqCst))
        .filter(|s| *s != 0)
}

/// `Err(Interrupted)` once a termination signal has arrived.
pub fn check() -> Result<(), Interrupted> {
    match received() {
        Some(sig) => Err(Interrupted(sig)),
        None => Ok(()),
    }
}

/// Like [`check`], and also `Err` (the "stalled" error) once the stall watchdog has fired.
pub fn check_run() -> anyhow::Result<()> {
    check()?;
    match STALLED.get() {
        Some(message) => Err(crate::error::failure_hint(
            message.clone(),
            "find what blocks it: a lock held on a table (see pg_stat_activity on the server), or \
             the network to the storage or the server; on a link that is only slow, raise \
             PGDRIVE_STALL_TIMEOUT_MS or lower PGDRIVE_CHUNK_SIZE",
        )),
        None => Ok(()),
    }
}

/// True once the run must stop (a signal, or a stall): requests made from now on are cleanup.
pub fn stopping() -> bool {
    received().is_some() || STALLED.get().is_some()
}

/// Sleeps, waking early (with `Err`) when the run must stop.
pub fn sleep(duration: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + duration;
    loop {
        check_run()?;
        let now = Instant::now();
        if now >= deadline {
            return Ok(());
        }
        std::thread::sleep((deadline - now).min(TICK));
    }
}

// ------------------------------------------------------------------ cutting in-flight requests

static CUT_ON_STOP: Mutex<Vec<ureq::Agent>> = Mutex::new(Vec::new());

/// Registers an agent whose connections are shut down when the run stops, which makes a request
/// blocked on one of them fail at once instead of waiting out its timeout.
pub fn cut_on_stop(agent: ureq::Agent) {
    CUT_ON_STOP
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(agent);
}

fn cut_requests() {
    let agents = std::mem::take(&mut *CUT_ON_STOP.lock().unwrap_or_else(|p| p.into_inner()));
    for agent in agents {
        agent.shutdown();
    }
}

// ------------------------------------------------------------------ killing restore clients

static KILL_ON_STOP: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// Registers a child's process group to be SIGKILLed when the run stops. Call [`forget`] before
/// the child is reaped (waited for), so that a reused id is never signalled.
pub fn kill_on_stop(group: i32) {
    KILL_ON_STOP
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(group);
}

/// Undoes [`kill_on_stop`]; once it returns, the watcher will not signal the group.
pub fn forget(group: i32) {
    KILL_ON_STOP
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|g| *g != group);
}

fn kill_clients() {
    let groups = KILL_ON_STOP.lock().unwrap_or_else(|p| p.into_inner());
    for group in groups.iter().filter(|g| **g > 0) {
        // SAFETY: signals a process group registered by a child that has not been reaped yet
        // (it is forgotten before it is waited for), under the lock `forget` takes.
        unsafe { libc::kill(-group, libc::SIGKILL) };
    }
}

/// Cuts in-flight requests and kills the restore clients: what stopping the run means.
fn stop_io() {
    cut_requests();
    kill_clients();
}

// ------------------------------------------------------------------ the stall watchdog

static STALLED: OnceLock<String> = OnceLock::new();
/// Milliseconds since [`epoch`] of the last progress; the timeout (0: not watching).
static LAST_PROGRESS_MS: AtomicU64 = AtomicU64::new(0);
static STALL_TIMEOUT_MS: AtomicU64 = AtomicU64::new(0);
static WAITING_ON: Mutex<String> = Mutex::new(String::new());

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}

/// Arms the watchdog until the returned guard is dropped: if [`progress`] is not called for
/// `timeout`, the run stops with "stalled: <what it waits on> for N s".
#[must_use = "the watchdog is disarmed when the guard is dropped"]
pub fn watch(timeout: Duration) -> Watch {
    progress();
    STALL_TIMEOUT_MS.store(timeout.as_millis().max(1) as u64, Ordering::SeqCst);
    Watch(())
}

/// [`watch`], unless `timeout` is zero (the watchdog turned off).
#[must_use = "the watchdog is disarmed when the guard is dropped"]
pub fn watch_unless_zero(timeout: Duration) -> Option<Watch> {
    (!timeout.is_zero()).then(|| watch(timeout))
}

/// Whether the watchdog is armed: how often to look for progress elsewhere (see
/// `crate::psql`), `None` when it is not.
pub fn watched_timeout() -> Option<Duration> {
    match STALL_TIMEOUT_MS.load(Ordering::SeqCst) {
        0 => None,
        ms => Some(Duration::from_millis(ms)),
    }
}

/// Disarms the watchdog on drop.
pub struct Watch(());

impl Drop for Watch {
    fn drop(&mut self) {
        STALL_TIMEOUT_MS.store(0, Ordering::SeqCst);
    }
}

/// Records progress: bytes came from pg_dump or storage, a target or a restore client accepted
/// bytes, or a restore client's server session was seen working.
pub fn progress() {
    LAST_PROGRESS_MS.store(now_ms(), Ordering::SeqCst);
}

/// Says what the run is waiting on, for the stall message ("pg_dump produced no output").
pub fn waiting_on(what: impl Into<String>) {
    *WAITING_ON.lock().unwrap_or_else(|p| p.into_inner()) = what.into();
}

/// The stall message, when the watchdog is armed and has seen no progress for its timeout.
fn stall_now() -> Option<String> {
    let timeout = STALL_TIMEOUT_MS.load(Ordering::SeqCst);
    let idle = now_ms().saturating_sub(LAST_PROGRESS_MS.load(Ordering::SeqCst));
    if timeout == 0 || idle < timeout {
        return None;
    }
    let what = WAITING_ON.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Some(format!(
        "stalled: {what} for {} s (PGDRIVE_STALL_TIMEOUT_MS={timeout})",
        timeout as f64 / 1000.0
    ))
}

// ------------------------------------------------------------------ the watcher thread

fn watcher() {
    let mut signalled_at: Option<Instant> = None;
    loop {
        std::thread::sleep(TICK);
        if STALLED.get().is_none() {
            if let Some(message) = stall_now() {
                let _ = STALLED.set(message);
                stop_io();
            }
        }
        match (received(), signalled_at) {
            (Some(_), None) => {
                signalled_at = Some(Instant::now());
                stop_io();
            }
            (Some(sig), Some(at)) if at.elapsed() >= GRACE => {
                crate::log::error(
                    &format!(
                        "{}, and the cleanup did not finish within {} s: exiting now",
                        Interrupted(sig),
                        GRACE.as_secs()
                    ),
                    &[],
                );
                std::process::exit(1);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_fires_only_while_armed_and_idle() {
        assert!(stall_now().is_none(), "not armed");
        waiting_on("pg_dump produced no output");
        let guard = watch(Duration::from_millis(30));
        assert!(stall_now().is_none(), "just armed");
        std::thread::sleep(Duration::from_millis(20));
        progress();
        std::thread::sleep(Duration::from_millis(20));
        assert!(stall_now().is_none(), "progress resets the clock");
        std::thread::sleep(Duration::from_millis(30));
        let message = stall_now().expect("idle for longer than the timeout");
        assert!(
            message.starts_with("stalled: pg_dump produced no output for "),
            "{message}"
        );
        drop(guard);
        assert!(stall_now().is_none(), "disarmed");
    }
}
