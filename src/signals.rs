//! SIGINT/SIGTERM/SIGHUP handling. The first signal sets a flag that every long-running step polls
//! (the upload loop, retry sleeps, the dump pipeline), so a run abandons its upload session, kills
//! pg_dump and records an ERROR row instead of dying half-way; a second signal exits at once.
//! Exiting at once never commits a restore: its client commits only on pgdrive's explicit
//! consent and dies with pgdrive (see `crate::psql`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

static RECEIVED: OnceLock<Arc<AtomicUsize>> = OnceLock::new();

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

/// Installs the handlers; call once at start-up.
pub fn install() -> std::io::Result<()> {
    let flag = RECEIVED
        .get_or_init(|| Arc::new(AtomicUsize::new(0)))
        .clone();
    for sig in [SIGINT, SIGTERM, SIGHUP] {
        // Handlers run in registration order: the first delivery only records the signal and arms
        // the shutdown; a second delivery exits at once (status 1).
        let flag = flag.clone();
        let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        signal_hook::flag::register_conditional_shutdown(sig, 1, armed.clone())?;
        signal_hook::flag::register_usize(sig, flag, sig as usize)?;
        signal_hook::flag::register(sig, armed)?;
    }
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

/// Sleeps, waking early (with `Err`) when a termination signal arrives.
pub fn sleep(duration: std::time::Duration) -> Result<(), Interrupted> {
    let deadline = std::time::Instant::now() + duration;
    loop {
        check()?;
        let now = std::time::Instant::now();
        if now >= deadline {
            return Ok(());
        }
        std::thread::sleep((deadline - now).min(std::time::Duration::from_millis(50)));
    }
}
