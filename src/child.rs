//! What pgdrive's child processes (pg_dump, psql, pg_restore) share: stderr drained on its own
//! thread, so a chatty child never blocks on a full pipe, keeping only the tail for error
//! messages; and an exit status described in words.

use std::io::Read;
use std::process::{ChildStderr, ExitStatus};
use std::thread::JoinHandle;

/// How much of a child's stderr is kept.
pub const STDERR_TAIL_BYTES: usize = 4096;

/// The thread draining a child's stderr.
pub struct StderrTail(Option<JoinHandle<Vec<u8>>>);

/// Starts draining `stderr` on a thread named after the program.
pub fn drain_stderr(mut stderr: ChildStderr, program: &str) -> std::io::Result<StderrTail> {
    let handle = std::thread::Builder::new()
        .name(format!("{program}-stderr"))
        .spawn(move || {
            let mut tail = Vec::new();
            let mut buf = [0u8; 8192];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > 2 * STDERR_TAIL_BYTES {
                    tail.drain(..tail.len() - STDERR_TAIL_BYTES);
                }
            }
            tail
        })?;
    Ok(StderrTail(Some(handle)))
}

impl StderrTail {
    /// The last part of what the child wrote (call after the child exited), trimmed, with `…`
    /// where earlier output was dropped.
    pub fn collect(&mut self) -> String {
        let bytes = self
            .0
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        let mut tail = String::from_utf8_lossy(&bytes).into_owned();
        if tail.len() > STDERR_TAIL_BYTES {
            let mut cut = tail.len() - STDERR_TAIL_BYTES;
            while !tail.is_char_boundary(cut) {
                cut += 1;
            }
            tail = format!("…{}", &tail[cut..]);
        }
        tail.trim().to_string()
    }
}

/// `exited 0`, `exited with status 1`, `was killed by signal 9`.
pub fn describe_exit(status: &ExitStatus) -> String {
    match (
        status.code(),
        std::os::unix::process::ExitStatusExt::signal(status),
    ) {
        (Some(0), _) => "exited 0".to_string(),
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => "ended abnormally".to_string(),
    }
}

/// Makes the child a process group of its own and has the kernel SIGKILL it when pgdrive dies
/// (`PR_SET_PDEATHSIG`). The death signal follows the spawning *thread*: children are started by
/// the main thread, which lives as long as pgdrive.
pub fn dies_with_pgdrive(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls (prctl, getppid) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // pgdrive died before the death signal was armed: do not start at all
            if libc::getppid() != parent {
                return Err(std::io::Error::other(
                    "pgdrive exited while starting the child",
                ));
            }
            Ok(())
        })
    };
}
