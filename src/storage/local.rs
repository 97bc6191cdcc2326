//! The local-directory target: lets anyone try pgdrive without a Google account, and keeps a local
//! copy beside the Drive one. A backup is written as `.<name>.<random>.partial` (mode 0600),
//! fsynced, read back and checked against the streamed checksums, described by a
//! `<name>.pgdrive.json` sidecar (its [`super::manifest`], which also holds the properties Drive
//! keeps in appProperties), and only then renamed into place.
//!
//! Whoever else can write the directory cannot turn pgdrive against its host (see `fsutil`):
//! temporary names are unpredictable and created exclusively (a planted symlink makes the run
//! fail, it is never written through), the final renames never replace anything already at the
//! backup's or the sidecar's name, and a failed write (a full disk) removes what it created.
//!
//! A backup killed outright (SIGKILL, a power cut) cannot remove its partial file, so every new
//! upload first removes the stale ones ([`stale_partials`]): only pgdrive's own
//! (`.<name>.<32 hex digits>.partial`, a regular file owned by this user), only when no process
//! holds the `flock` every upload keeps on its partial while writing it (any kind of run, for any
//! database), and only when unchanged for [`STALE_AFTER`] (partials of older builds were not
//! locked). `check` reports them.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::{
    Backend, Capabilities, Completion, Found, Listed, PartSize, StoredObject, Target, Upload,
};

pub const SIDECAR_SUFFIX: &str = ".pgdrive.json";

/// How long an unlocked partial file must have been left unchanged before it is removed.
pub const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// A partial file an interrupted backup left behind.
#[derive(Debug)]
pub struct StalePartial {
    pub path: PathBuf,
    pub size: u64,
}

pub struct LocalTarget {
    name: String,
    dir: PathBuf,
}

/// A directory has no server-side hash (the copy is read back instead), keeps properties in a
/// sidecar written at the end, has no size limits and is filtered by reading every sidecar.
pub const CAPABILITIES: Capabilities = Capabilities {
    server_md5: false,
    metadata_after_upload: true,
    max_property_bytes: None,
    part_size: PartSize {
        min: 1,
        align: 1,
        max_parts: None,
    },
    list_by_property: false,
    ranged_reads: true,
};

impl LocalTarget {
    /// Built by [`super::open`].
    pub(super) fn new(name: String, dir: PathBuf) -> LocalTarget {
        LocalTarget { name, dir }
    }
}

/// Whether `file_name` is one `create_temp(dir, name, "partial")` makes.
pub(crate) fn is_partial_name(file_name: &str) -> bool {
    let Some(rest) = file_name
        .strip_prefix('.')
        .and_then(|r| r.strip_suffix(".partial"))
    else {
        return false;
    };
    match rest.rsplit_once('.') {
        Some((name, token)) => {
            !name.is_empty()
                && token.len() == 32
                && token
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        }
        None => false,
    }
}

/// The partial files interrupted backups left: pgdrive's by name and owner, unchanged for
/// [`STALE_AFTER`], and locked by no live upload. With `remove`, each is deleted while this
/// process holds its lock (so no upload can be using it) and logged.
pub fn stale_partials(dir: &Path, remove: bool) -> Result<Vec<StalePartial>> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    let mut stale = Vec::new();
    for entry in entries {
        let entry = entry?;
        if !entry.file_name().to_str().is_some_and(is_partial_name) {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        let unchanged = meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age >= STALE_AFTER);
        if !meta.file_type().is_file() || meta.uid() != me || !unchanged {
            continue;
        }
        let Ok(file) = File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&path)
        else {
            continue;
        };
        let same = file
            .metadata()
            .is_ok_and(|m| m.ino() == meta.ino() && m.dev() == meta.dev());
        if !same || !crate::fsutil::try_lock_exclusive(&file)? {
            continue; // replaced meanwhile, or an upload is writing it
        }
        if remove {
            // still the file that was checked (and locked): nothing was swapped in
            let unchanged_name = fs::symlink_metadata(&path)
                .is_ok_and(|m| m.ino() == meta.ino() && m.dev() == meta.dev());
            if !unchanged_name {
                continue;
            }
            fs::remove_file(&path)
                .with_context(|| format!("removing the stale {}", path.display()))?;
            crate::log::info(
                "removed a partial file an interrupted backup left",
                &[
                    ("file", path.display().to_string()),
                    ("bytes", meta.len().to_string()),
                ],
            );
        }
        stale.push(StalePartial {
            path,
            size: meta.len(),
        });
    }
    Ok(stale)
}

impl LocalTarget {
    /// A backup and its sidecar; `None` when either is missing or the sidecar is unreadable.
    fn read_sidecar(&self, name: &str) -> Option<Found> {
        let meta = fs::metadata(self.dir.join(name)).ok()?;
        let text = fs::read_to_string(self.dir.join(format!("{name}{SIDECAR_SUFFIX}"))).ok()?;
        // a FIFO or device has no stored size to compare (tests stream through one)
        found_from_sidecar(name, text.as_bytes(), meta.is_file().then_some(meta.len()))
    }
}

/// The backup `name` as its sidecar (`text`) describes it, with the stored `size`; `None` when
/// the sidecar is not JSON. Shared by every target that keeps sidecars beside files (local, SFTP).
pub(crate) fn found_from_sidecar(name: &str, text: &[u8], size: Option<u64>) -> Option<Found> {
    let json = serde_json::from_slice::<serde_json::Value>(text).ok()?;
    let (properties, row_counts) = super::manifest::properties_and_counts(&json);
    Some(Found {
        listed: Listed {
            id: name.to_string(),
            name: name.to_string(),
            created_ms: json["created_time"]
                .as_str()
                .and_then(crate::timeutil::parse_rfc3339),
            size,
            properties,
        },
        row_counts,
        manifest: super::manifest::parse(&json),
    })
}

impl Target for LocalTarget {
    fn name(&self) -> &str {
        &self.name
    }

    fn backend(&self) -> Backend {
        Backend::Local
    }

    fn capabilities(&self) -> Capabilities {
        CAPABILITIES
    }

    fn describe(&self) -> String {
        format!("local directory {}", self.dir.display())
    }

    fn preflight(&mut self) -> Result<()> {
        fs::create_dir_all(&self.dir).map_err(|e| {
            crate::error::config_error_hint(format!(
                "cannot create the local backup directory {}: {e}",
                self.dir.display()
            ), "create the directory and give the user pgdrive runs as write access to it, or set PGDRIVE_LOCAL_DIR to another directory")
        })?;
        crate::fsutil::create_temp(&self.dir, "pgdrive-probe", "tmp", 0o600)
            .and_then(|(_, probe)| fs::remove_file(&probe).map_err(Into::into))
            .map_err(|e| {
                crate::error::config_error_hint(format!(
                    "cannot write into the local backup directory {}: {}",
                    self.dir.display(),
                    crate::error::render(&e)
                ), "give the user pgdrive runs as write access to the directory, or set PGDRIVE_LOCAL_DIR to another directory")
            })
    }

    fn begin<'s>(
        &'s mut self,
        name: &str,
        _mime_type: &str,
        properties: &BTreeMap<String, String>,
        _chunk_size: usize,
    ) -> Result<Box<dyn Upload + Send + 's>> {
        if name.contains('/') || name.starts_with('.') {
            bail!("refusing to write a backup named {name:?}");
        }
        for taken in [
            self.dir.join(name),
            self.dir.join(format!("{name}{SIDECAR_SUFFIX}")),
        ] {
            if crate::fsutil::name_taken(&taken) {
                bail!(
                    "{} already exists; refusing to overwrite it",
                    taken.display()
                );
            }
        }
        if let Err(e) = stale_partials(&self.dir, true) {
            // a leftover that cannot be removed must not cost the backup
            crate::log::warn(
                "could not remove the partial files interrupted backups left",
                &[("error", crate::error::render(&e))],
            );
        }
        let (file, partial) = crate::fsutil::create_temp(&self.dir, name, "partial", 0o600)?;
        // held until the upload ends (or the process dies): tells other runs it is in use
        if !crate::fsutil::try_lock_exclusive(&file)
            .with_context(|| format!("locking {}", partial.display()))?
        {
            let _ = fs::remove_file(&partial);
            bail!(
                "{} was locked by another process as soon as it was created",
                partial.display()
            );
        }
        Ok(Box::new(LocalUpload {
            target: self.name.clone(),
            dir: self.dir.clone(),
            name: name.to_string(),
            partial,
            file: Some(file),
            properties: properties.clone(),
            placed_sidecar: false,
        }))
    }

    fn list(&mut self, selector: &BTreeMap<String, String>) -> Result<Vec<Listed>> {
        let mut out = Vec::new();
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e).with_context(|| format!("listing {}", self.dir.display())),
        };
        for entry in entries {
            let entry = entry?;
            let file_name = entry.file_name().to_string_lossy().into_owned();
            let Some(name) = file_name.strip_suffix(SIDECAR_SUFFIX) else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            let Some(found) = self.read_sidecar(name) else {
                continue;
            };
            if selector
                .iter()
                .all(|(k, v)| found.listed.properties.get(k) == Some(v))
            {
                out.push(found.listed);
            }
        }
        Ok(out)
    }

    fn delete(&mut self, id: &str) -> Result<()> {
        if id.contains('/') || id.starts_with('.') {
            bail!("refusing to delete {id:?}");
        }
        fs::remove_file(self.dir.join(id))
            .with_context(|| format!("deleting {}", self.dir.join(id).display()))?;
        let _ = fs::remove_file(self.dir.join(format!("{id}{SIDECAR_SUFFIX}")));
        crate::fsutil::sync_dir(&self.dir)
    }

    fn check_readable(&mut self) -> Result<()> {
        fs::read_dir(&self.dir).map(|_| ()).map_err(|e| {
            crate::error::config_error_hint(format!(
                "cannot read the local backup directory {}: {e}",
                self.dir.display()
            ), "check PGDRIVE_LOCAL_DIR (or --from) and that the user pgdrive runs as may read the directory")
        })
    }

    fn get(&mut self, id: &str) -> Result<Found> {
        if id.contains('/') || id.starts_with('.') {
            bail!("{id:?} is not a backup file name");
        }
        self.read_sidecar(id).ok_or_else(|| {
            crate::error::config_error_hint(
                format!(
                    "no backup {id} (with its {SIDECAR_SUFFIX} sidecar) in {}",
                    self.dir.display()
                ),
                "take the name from `pgdrive list --from DIR`",
            )
        })
    }

    fn location(&self, id: &str) -> String {
        self.dir.join(id).display().to_string()
    }

    fn set_pinned(&mut self, id: &str, pinned: bool) -> Result<()> {
        self.get(id)?; // a backup with its sidecar, by a plain name
        let path = self.dir.join(format!("{id}{SIDECAR_SUFFIX}"));
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let mut json: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        super::manifest::set_pinned(&mut json, pinned)?;
        crate::fsutil::write_atomically(
            &path,
            serde_json::to_string_pretty(&json)?.as_bytes(),
            0o600,
            crate::fsutil::Existing::Replace,
        )
        .with_context(|| format!("rewriting {}", path.display()))
    }

    fn open_at<'s>(
        &'s mut self,
        id: &str,
        offset: u64,
        _size: Option<u64>,
    ) -> Result<Box<dyn Read + 's>> {
        use std::io::{Seek, SeekFrom};
        let path = self.dir.join(id);
        // polled: a FIFO whose writer stops cannot hold off a signal or the stall watchdog
        let mut file = crate::fsutil::open_polled(&path)?;
        if offset > 0 {
            file.seek(SeekFrom::Start(offset))
                .with_context(|| format!("seeking in {}", path.display()))?;
        }
        Ok(Box::new(file))
    }
}

struct LocalUpload {
    target: String,
    dir: PathBuf,
    name: String,
    partial: PathBuf,
    file: Option<File>,
    properties: BTreeMap<String, String>,
    /// The sidecar at the final name is this upload's (so a failure may remove it).
    placed_sidecar: bool,
}

impl LocalUpload {
    fn complete(&mut self, done: &Completion) -> Result<PathBuf> {
        let digest = &done.digest;
        // kept open (and so locked) until renamed: it is in use until then
        let file = self.file.take().context("upload already finished")?;
        file.sync_all()
            .with_context(|| format!("syncing {}", self.partial.display()))?;
        // Read back what the disk holds and compare with what was streamed.
        let mut reader = File::open(&self.partial)?;
        // Only what is compared is computed: SHA-256 alone (SHA-NI where the CPU has it, several
        // times faster than MD5), not the stream's full Hasher.
        let mut read_back = <sha2::Sha256 as sha2::Digest>::new();
        let mut size = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                break;
            }
            sha2::Digest::update(&mut read_back, &buf[..n]);
            size += n as u64;
        }
        let sha256 = super::hex(&sha2::Digest::finalize(read_back));
        if size != digest.size || sha256 != digest.sha256 {
            bail!("the file on disk has {size} bytes with SHA-256 {sha256}, but pgdrive wrote {} bytes with SHA-256 {}", digest.size, digest.sha256);
        }
        let mut properties = self.properties.clone();
        properties.extend(done.properties.clone());
        // the sidecar is the backup's manifest (a local backup's id is its name)
        let sidecar = super::manifest::build_for(&self.name, &self.name, &properties, done);
        let final_path = self.dir.join(&self.name);
        // the sidecar first: a backup is listed only once both exist, so it appears complete
        crate::fsutil::write_atomically(
            &self.sidecar_path(),
            serde_json::to_string_pretty(&sidecar)?.as_bytes(),
            0o600,
            crate::fsutil::Existing::Keep,
        )?;
        self.placed_sidecar = true;
        crate::fsutil::rename_noreplace(&self.partial, &final_path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                anyhow::anyhow!(
                    "{} appeared while the backup ran; refusing to replace it",
                    final_path.display()
                )
            } else {
                anyhow::Error::new(e).context(format!("renaming into {}", final_path.display()))
            }
        })?;
        drop(file);
        crate::fsutil::sync_dir(&self.dir)?;
        Ok(final_path)
    }

    fn sidecar_path(&self) -> PathBuf {
        self.dir.join(format!("{}{SIDECAR_SUFFIX}", self.name))
    }
}

/// Starts writing what is dirty of `file` to the disk without waiting for it, so that the
/// `fsync` at the end of the upload has little left to do instead of the whole backup (which
/// otherwise adds its full write-out to the run's wall time). Linux only; best effort.
fn start_writeback(file: &File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid open descriptor; offset 0 and length 0 mean the whole file.
        unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
}

impl Upload for LocalUpload {
    fn write(&mut self, data: bytes::Bytes) -> Result<()> {
        let file = self.file.as_mut().context("upload already finished")?;
        file.write_all(&data)
            .with_context(|| format!("writing {}", self.partial.display()))?;
        start_writeback(file);
        Ok(())
    }

    fn finish(mut self: Box<Self>, done: &Completion) -> Result<StoredObject> {
        match self.complete(done) {
            Ok(path) => Ok(StoredObject {
                target: self.target.clone(),
                backend: Backend::Local,
                id: self.name.clone(),
                name: self.name.clone(),
                location: path.display().to_string(),
                metadata_failure: None,
            }),
            Err(e) => {
                let _ = fs::remove_file(&self.partial);
                if self.placed_sidecar {
                    let _ = fs::remove_file(self.sidecar_path());
                }
                Err(e.context(format!("storing {} in {}", self.name, self.dir.display())))
            }
        }
    }

    fn abort(mut self: Box<Self>) {
        self.file.take();
        let _ = fs::remove_file(&self.partial);
    }
}

#[cfg(test)]
mod tests {
    use super::is_partial_name;

    #[test]
    fn only_pgdrives_own_partial_names_match() {
        let token = "0123456789abcdef0123456789abcdef";
        assert!(is_partial_name(&format!(
            ".db-daily-x.sql.gz.{token}.partial"
        )));
        for foreign in [
            format!("db.{token}.partial"),
            format!(".{token}.partial"),
            format!(".db.{}.partial", &token[1..]),
            format!(".db.{}.partial", token.to_uppercase()),
            format!(".db.{token}.partial.keep"),
            format!(".db.{token}x.partial"),
            ".db.partial".to_string(),
        ] {
            assert!(!is_partial_name(&foreign), "{foreign}");
        }
    }
}
