//! Files written into directories other people may be able to write (the local backup
//! directory, a node_exporter textfile directory): temporary files that cannot be redirected, and
//! renames that cannot replace what someone else put at the final name.
//!
//! - Every temporary file gets an unpredictable name (random bytes from the kernel) and is created
//!   with `O_CREAT|O_EXCL|O_NOFOLLOW`, so a symlink or file planted at any name pgdrive might use
//!   makes the create fail instead of writing through it.
//! - [`rename_noreplace`] moves a file into place only if nothing (not even a dangling symlink)
//!   is at the final name: `renameat2(RENAME_NOREPLACE)`, or `link` + `unlink` on file systems
//!   without it.
//! - A temporary file whose writing failed (a full disk) is removed, so no empty or partial file
//!   is left behind.
//! - A file read as a backup may be a FIFO whose writer stopped: [`open_polled`] neither blocks
//!   opening it nor reading it for longer than a poll interval, so a signal or the stall watchdog
//!   is acted on within that interval.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// 16 random bytes from the kernel, as 32 hex digits.
pub fn random_token() -> io::Result<String> {
    let mut bytes = [0u8; 16];
    let mut filled = 0;
    while filled < bytes.len() {
        // SAFETY: the pointer and length describe the unfilled part of `bytes`.
        let n = unsafe {
            libc::getrandom(bytes[filled..].as_mut_ptr().cast(), bytes.len() - filled, 0)
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(crate::storage::hex(&bytes))
}

/// A new file `dir/.<stem>.<random>.<ext>`, created exclusively (never through a symlink), with
/// `mode`. Returns the file and its path.
pub fn create_temp(dir: &Path, stem: &str, ext: &str, mode: u32) -> Result<(File, PathBuf)> {
    let path = dir.join(format!(".{stem}.{}.{ext}", random_token()?));
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .mode(mode)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    Ok((file, path))
}

/// How long one wait for readable data lasts before the run's stop flags are looked at again.
const POLL_INTERVAL_MS: i32 = 100;

/// A file opened for reading whose reads wait in `poll` rather than in `read`, checking between
/// waits whether the run must stop ([`crate::signals::check_run`]).
pub struct PolledFile(File);

/// Opens `path` for reading without blocking on a FIFO that has no writer yet (`O_NONBLOCK`,
/// then back to blocking reads, which are only made once `poll` says data or the end is there).
pub fn open_polled(path: &Path) -> Result<PolledFile> {
    use std::os::fd::AsRawFd;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: fcntl on a descriptor this function owns.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, 0) } != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("opening {}", path.display()));
    }
    Ok(PolledFile(file))
}

impl io::Seek for PolledFile {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        self.0.seek(pos)
    }
}

impl io::Read for PolledFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        loop {
            crate::signals::check_run().map_err(io::Error::other)?;
            let mut fd = libc::pollfd {
                fd: self.0.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd. A FIFO whose writer never connected reports nothing (it
            // is waited for); data, or a writer that went away (POLLHUP: the end), ends the wait.
            let n = unsafe { libc::poll(&mut fd, 1, POLL_INTERVAL_MS) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n > 0 {
                return self.0.read(buf);
            }
        }
    }
}

/// Takes an exclusive `flock` on `file` without waiting; `false` when another open file holds
/// one. The lock lasts as long as the file stays open in this process (it dies with it).
pub fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor `file` owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))
}

/// Renames `from` to `to` unless something already exists at `to` (then `AlreadyExists`).
pub fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let (cfrom, cto) = (c_path(from)?, c_path(to)?);
    // SAFETY: two valid NUL-terminated paths.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            cfrom.as_ptr(),
            libc::AT_FDCWD,
            cto.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        // the file system (or an old kernel) has no RENAME_NOREPLACE: a hard link also refuses
        // an existing name, and does not follow a symlink there
        Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => {
            link_then_unlink(from, to)
        }
        _ => Err(e),
    }
}

fn link_then_unlink(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::hard_link(from, to)?;
    std::fs::remove_file(from)
}

/// Whether anything, a dangling symlink included, has the name `path`.
pub fn name_taken(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// fsyncs a directory, so that renames in it survive a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))
}

/// Whether an existing file at the final name may be replaced.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Existing {
    /// Readers see the old file or the new one (a metrics file rewritten on every run).
    Replace,
    /// Fail with `AlreadyExists` (a backup's sidecar).
    Keep,
}

/// Writes `bytes` to `path` through a temporary file in the same directory (unpredictable name,
/// exclusive create, fsync, rename, directory fsync). On failure nothing is left behind.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32, existing: Existing) -> Result<()> {
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file path", path.display()))?
        .to_string_lossy()
        .into_owned();
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let (mut file, tmp) = create_temp(dir, &name, "tmp", mode)?;
    let written = (|| -> Result<()> {
        file.write_all(bytes)?;
        file.sync_all()?;
        match existing {
            Existing::Replace => std::fs::rename(&tmp, path)?,
            Existing::Keep => rename_noreplace(&tmp, path).map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    anyhow::anyhow!("{} already exists; refusing to replace it", path.display())
                } else {
                    e.into()
                }
            })?,
        }
        sync_dir(dir)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("pgdrive-fsutil-{name}-{}", random_token().unwrap()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn tokens_are_random_and_long() {
        let (a, b) = (random_token().unwrap(), random_token().unwrap());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }

    #[test]
    fn noreplace_refuses_files_and_dangling_symlinks() {
        let d = scratch("noreplace");
        let (from, to) = (d.join("from"), d.join("to"));
        std::fs::write(&from, b"new").unwrap();
        std::fs::write(&to, b"old").unwrap();
        assert_eq!(
            rename_noreplace(&from, &to).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        assert_eq!(std::fs::read(&to).unwrap(), b"old");
        std::fs::remove_file(&to).unwrap();
        std::os::unix::fs::symlink(d.join("nowhere"), &to).unwrap();
        assert!(rename_noreplace(&from, &to).is_err());
        assert!(!d.join("nowhere").exists());
        std::fs::remove_file(&to).unwrap();
        rename_noreplace(&from, &to).unwrap();
        assert_eq!(std::fs::read(&to).unwrap(), b"new");
        assert!(!from.exists());
        // the fallback behaves the same
        std::fs::write(&from, b"newer").unwrap();
        assert_eq!(
            link_then_unlink(&from, &to).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        assert_eq!(std::fs::read(&to).unwrap(), b"new");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
