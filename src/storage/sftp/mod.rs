//! The SFTP target (a Hetzner Storage Box, a NAS, any OpenSSH server), spoken through the system
//! OpenSSH client ([`conn`]) in SFTP version 3 ([`proto`]). The host key must already be in a
//! `known_hosts` file; an unknown or changed one is a configuration error, never accepted.
//!
//! Files are named as in the local target (`super::local`): a backup is written as
//! `.<name>.<random>.partial` (created exclusively, mode 0600), with WRITE requests pipelined;
//! at the end every write is acknowledged, what was sent is compared with the streamed
//! checksums, the file is fsynced (`fsync@openssh.com`, where offered), closed, and its size
//! checked with STAT. Then the `<name>.pgdrive.json` sidecar (the manifest) is placed and the
//! backup renamed to its final name with plain SSH_FXP_RENAME, which fails rather than replace
//! an existing file (posix-rename, which replaces, is used only to rewrite a sidecar when a
//! backup is pinned or unpinned). Any failure, and a stop
//! (SIGTERM), removes the temporary file, over a new connection if the old one is gone.
//! Partials of a killed run are removed by the next upload once unchanged for
//! `local::STALE_AFTER` by the server's clock.
//!
//! Reads (restore, verify) are ranged and pipelined, and resume at the same offset over a new
//! connection when one drops.

pub mod conn;
pub mod proto;

use std::collections::{BTreeMap, VecDeque};
use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use super::local::{found_from_sidecar, is_partial_name, SIDECAR_SUFFIX, STALE_AFTER};
use super::{
    Backend, Capabilities, Completion, Found, Hasher, Listed, PartSize, StoredObject, Target,
    Upload,
};
use conn::Session;

/// Where an SFTP target stores: `[targets.NAME]` with `type = "sftp"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SftpConfig {
    pub host: String,
    pub port: u16,
    /// The login name; `None`: ssh's default (the local user, or ~/.ssh/config).
    pub user: Option<String>,
    /// The remote directory (relative to the login directory unless absolute); must exist.
    pub dir: String,
    /// The private key; `None`: the ssh-agent (and ssh's default keys).
    pub identity_file: Option<PathBuf>,
    /// `None`: ssh's default (~/.ssh/known_hosts).
    pub known_hosts: Option<PathBuf>,
}

impl SftpConfig {
    pub const DEFAULT_PORT: u16 = 22;

    /// `sftp://user@host:port/dir`, for logs and errors.
    pub fn describe(&self) -> String {
        format!(
            "sftp://{}{}:{}/{}",
            self.user
                .as_deref()
                .map(|u| format!("{u}@"))
                .unwrap_or_default(),
            self.host,
            self.port,
            self.dir.trim_start_matches('/')
        )
    }

    fn path(&self, name: &str) -> String {
        let dir = self.dir.trim_end_matches('/');
        if dir.is_empty() {
            format!("/{name}")
        } else {
            format!("{dir}/{name}")
        }
    }
}

/// A directory over SFTP: no server-side hash (what was sent is hashed, the stored size
/// checked), properties in a sidecar written at the end, no size limits, filtered by reading
/// every sidecar, ranged reads.
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

/// A session opened on first use and opened again when it was lost.
struct Conn {
    cfg: SftpConfig,
    session: Option<Session>,
}

impl Conn {
    fn get(&mut self) -> Result<&mut Session> {
        if self.session.as_ref().is_some_and(Session::is_lost) {
            self.session = None;
        }
        if self.session.is_none() {
            self.session = Some(Session::connect(&self.cfg, None)?);
        }
        Ok(self.session.as_mut().expect("connected"))
    }
}

pub struct SftpTarget {
    name: String,
    conn: Conn,
}

impl SftpTarget {
    pub(super) fn new(name: String, cfg: SftpConfig) -> SftpTarget {
        SftpTarget {
            name,
            conn: Conn { cfg, session: None },
        }
    }

    fn cfg(&self) -> &SftpConfig {
        &self.conn.cfg
    }

    /// The directory must exist and be a directory (a typo is not silently created).
    fn check_dir(&mut self) -> Result<()> {
        let cfg = self.conn.cfg.clone();
        let dir = if cfg.dir.is_empty() {
            "."
        } else {
            cfg.dir.as_str()
        };
        match self.conn.get()?.stat(dir, true)? {
            Some(a) if a.is_dir() => Ok(()),
            Some(_) => Err(crate::error::config_error_hint(
                format!("{} is not a directory", cfg.describe()),
                "set the target's `dir` to a directory on the server",
            )),
            None => Err(crate::error::config_error_hint(
                format!("the directory of {} does not exist", cfg.describe()),
                format!("create it (`echo 'mkdir {}' | sftp -b - -P {} {}{}`), or correct the target's `dir`", cfg.dir, cfg.port, cfg.user.as_deref().map(|u| format!("{u}@")).unwrap_or_default(), cfg.host),
            )),
        }
    }

    /// Free bytes in the directory, when the server tells (`statvfs@openssh.com`).
    pub fn free_space(&mut self) -> Result<Option<u64>> {
        let dir = self.conn.cfg.dir.clone();
        self.conn
            .get()?
            .free_space(if dir.is_empty() { "." } else { &dir })
    }

    /// Partial files interrupted backups left (pgdrive's names), unchanged for `STALE_AFTER`
    /// by the server's clock (`now`, seconds), with their sizes; removed with `remove`.
    fn stale_partials(
        &mut self,
        now: u32,
        remove: bool,
        except: &str,
    ) -> Result<Vec<(String, u64)>> {
        let cfg = self.conn.cfg.clone();
        let s = self.conn.get()?;
        let mut stale = Vec::new();
        for (name, attrs) in s.read_dir(&cfg.dir)? {
            let old = attrs
                .mtime
                .is_some_and(|m| now.saturating_sub(m) as u64 >= STALE_AFTER.as_secs());
            if name == except || !is_partial_name(&name) || !attrs.is_file() || !old {
                continue;
            }
            if remove {
                s.remove(&cfg.path(&name))?;
                crate::log::info(
                    "removed a partial file an interrupted backup left",
                    &[("file", cfg.path(&name)), ("target", cfg.describe())],
                );
            }
            stale.push((name, attrs.size.unwrap_or(0)));
        }
        Ok(stale)
    }

    /// What `check` reports: free space and the stale partials (not removed).
    pub fn report(&mut self) -> Result<Report> {
        let free = self.free_space()?;
        // the server's "now": the mtime of the directory is no clock; a probe file's is
        let cfg = self.conn.cfg.clone();
        let probe = cfg.path(&format!(
            ".pgdrive-probe.{}.tmp",
            crate::fsutil::random_token()?
        ));
        let s = self.conn.get()?;
        let h = s.open(
            &probe,
            proto::OPEN_WRITE | proto::OPEN_CREAT | proto::OPEN_EXCL,
            Some(0o600),
        )?;
        let now = s.fstat(&h).map(|a| a.mtime.unwrap_or(0));
        let _ = s.close(&h);
        s.remove(&probe)?;
        let stale = self.stale_partials(now?, false, "")?;
        Ok(Report { free, stale })
    }

    fn read_found(&mut self, name: &str, size: Option<u64>) -> Result<Option<Found>> {
        let cfg = self.conn.cfg.clone();
        let s = self.conn.get()?;
        let size = match size {
            Some(n) => Some(n),
            None => match s.stat(&cfg.path(name), false)? {
                Some(a) if a.is_file() => a.size,
                _ => return Ok(None),
            },
        };
        let sidecar = cfg.path(&format!("{name}{SIDECAR_SUFFIX}"));
        let text = match s.read_file(&sidecar, super::manifest::MAX_BYTES) {
            Ok(t) => t,
            Err(e) if s.is_lost() => return Err(e),
            Err(_) => return Ok(None),
        };
        Ok(found_from_sidecar(name, &text, size))
    }
}

/// What `check` shows of an SFTP target.
pub struct Report {
    /// Bytes free, when the server tells.
    pub free: Option<u64>,
    /// Partial files of interrupted backups: (name, bytes).
    pub stale: Vec<(String, u64)>,
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        bail!("{name:?} is not a backup file name");
    }
    Ok(())
}

impl Target for SftpTarget {
    fn name(&self) -> &str {
        &self.name
    }

    fn backend(&self) -> Backend {
        Backend::Sftp
    }

    fn capabilities(&self) -> Capabilities {
        CAPABILITIES
    }

    fn describe(&self) -> String {
        format!("SFTP {}", self.cfg().describe())
    }

    fn preflight(&mut self) -> Result<()> {
        self.check_dir()?;
        let cfg = self.conn.cfg.clone();
        let probe = cfg.path(&format!(
            ".pgdrive-probe.{}.tmp",
            crate::fsutil::random_token()?
        ));
        let s = self.conn.get()?;
        let written = s
            .open(
                &probe,
                proto::OPEN_WRITE | proto::OPEN_CREAT | proto::OPEN_EXCL,
                Some(0o600),
            )
            .and_then(|h| {
                s.write_at(&h, 0, b"pgdrive probe")?;
                s.flush_writes()?;
                s.close(&h)
            });
        let removed = s.remove(&probe);
        written.and(removed.map(|_| ())).map_err(|e| {
            if crate::error::classify(&e) == crate::error::ExitStatus::Unavailable {
                return e;
            }
            crate::error::config_error_hint(
                format!(
                    "cannot write into {}: {}",
                    cfg.describe(),
                    crate::error::render(&e)
                ),
                "give the SSH user write access to the directory, or set the target's `dir` to one it may write",
            )
        })
    }

    fn begin<'s>(
        &'s mut self,
        name: &str,
        _mime_type: &str,
        properties: &BTreeMap<String, String>,
        _chunk_size: usize,
    ) -> Result<Box<dyn Upload + Send + 's>> {
        check_name(name)?;
        let cfg = self.conn.cfg.clone();
        let s = self.conn.get()?;
        for taken in [cfg.path(name), cfg.path(&format!("{name}{SIDECAR_SUFFIX}"))] {
            if s.stat(&taken, false)?.is_some() {
                bail!(
                    "{taken} already exists on {}; refusing to overwrite it",
                    cfg.describe()
                );
            }
        }
        let partial_name = format!(".{name}.{}.partial", crate::fsutil::random_token()?);
        let partial = cfg.path(&partial_name);
        let handle = s
            .open(
                &partial,
                proto::OPEN_WRITE | proto::OPEN_CREAT | proto::OPEN_EXCL,
                Some(0o600),
            )
            .with_context(|| format!("creating the temporary file on {}", cfg.describe()))?;
        // the server's clock says what "unchanged for an hour" means for other partials
        match s.fstat(&handle).map(|a| a.mtime) {
            Ok(Some(now)) => {
                if let Err(e) = self.stale_partials(now, true, &partial_name) {
                    crate::log::warn(
                        "could not remove the partial files interrupted backups left",
                        &[("error", crate::error::render(&e))],
                    );
                }
            }
            Ok(None) => {}
            Err(e) => {
                let s = self.conn.get()?;
                let _ = s.close(&handle);
                let _ = s.remove(&partial);
                return Err(e);
            }
        }
        Ok(Box::new(SftpUpload {
            target: self.name.clone(),
            conn: &mut self.conn,
            name: name.to_string(),
            partial,
            handle: Some(handle),
            offset: 0,
            sent: Hasher::default(),
            properties: properties.clone(),
            placed_sidecar: false,
            ended: false,
        }))
    }

    fn list(&mut self, selector: &BTreeMap<String, String>) -> Result<Vec<Listed>> {
        let dir = self.conn.cfg.dir.clone();
        let entries = self.conn.get()?.read_dir(&dir)?;
        let sizes: BTreeMap<String, u64> = entries
            .iter()
            .filter(|(_, a)| a.is_file())
            .map(|(n, a)| (n.clone(), a.size.unwrap_or(0)))
            .collect();
        let mut out = Vec::new();
        for (file, _) in &entries {
            let Some(name) = file.strip_suffix(SIDECAR_SUFFIX) else {
                continue;
            };
            let Some(&size) = sizes.get(name) else {
                continue; // a sidecar whose backup is gone (or not a file)
            };
            if name.starts_with('.') {
                continue;
            }
            let Some(found) = self.read_found(name, Some(size))? else {
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
        check_name(id)?;
        let cfg = self.conn.cfg.clone();
        let s = self.conn.get()?;
        if !s.remove(&cfg.path(id))? {
            bail!("{} is not on {}", id, cfg.describe());
        }
        s.remove(&cfg.path(&format!("{id}{SIDECAR_SUFFIX}")))?;
        Ok(())
    }

    fn check_readable(&mut self) -> Result<()> {
        self.check_dir()
    }

    fn get(&mut self, id: &str) -> Result<Found> {
        check_name(id)?;
        let describe = self.cfg().describe();
        self.read_found(id, None)?.ok_or_else(|| {
            crate::error::config_error_hint(
                format!("no backup {id} (with its {SIDECAR_SUFFIX} sidecar) in {describe}"),
                "take the name from `pgdrive list --target NAME`",
            )
        })
    }

    /// The sidecar is rewritten as the upload writes it (a temporary file, fsynced) and renamed
    /// over the old one with `posix-rename@openssh.com`, so that a reader, or a connection lost
    /// half-way, sees the old sidecar or the new one and the backup never goes unlisted. A server
    /// without that extension is refused rather than given a window without a sidecar.
    fn set_pinned(&mut self, id: &str, pinned: bool) -> Result<()> {
        self.get(id)?; // a backup with its sidecar
        let cfg = self.conn.cfg.clone();
        let sidecar_name = format!("{id}{SIDECAR_SUFFIX}");
        let sidecar = cfg.path(&sidecar_name);
        let s = self.conn.get()?;
        let text = s.read_file(&sidecar, super::manifest::MAX_BYTES)?;
        let mut json: serde_json::Value =
            serde_json::from_slice(&text).with_context(|| format!("{sidecar} is not JSON"))?;
        super::manifest::set_pinned(&mut json, pinned)?;
        let tmp = write_temporary(s, &cfg, &sidecar_name, &serde_json::to_vec_pretty(&json)?)?;
        let replaced = s.rename_replace(&tmp, &sidecar);
        if !matches!(replaced, Ok(true)) {
            let _ = s.remove(&tmp);
        }
        if !replaced? {
            return Err(crate::error::config_error_hint(
                format!(
                    "{} does not offer posix-rename@openssh.com, so a sidecar cannot be replaced atomically",
                    cfg.describe()
                ),
                "pin the backup on an OpenSSH server (or a Storage Box), or keep it with a longer keep rule",
            ));
        }
        Ok(())
    }

    fn location(&self, id: &str) -> String {
        format!("{}/{id}", self.cfg().describe().trim_end_matches('/'))
    }

    fn open_at<'s>(
        &'s mut self,
        id: &str,
        offset: u64,
        size: Option<u64>,
    ) -> Result<Box<dyn Read + 's>> {
        check_name(id)?;
        let path = self.cfg().path(id);
        let mut r = SftpRead {
            conn: &mut self.conn,
            path,
            handle: None,
            offset,
            next: offset,
            pending: VecDeque::new(),
            buf: Vec::new(),
            at: 0,
            eof: false,
            size,
            resumes: 0,
        };
        r.reopen()?;
        Ok(Box::new(r))
    }
}

struct SftpUpload<'s> {
    target: String,
    conn: &'s mut Conn,
    name: String,
    partial: String,
    handle: Option<Vec<u8>>,
    offset: u64,
    /// What was sent, to compare with the stream's digest.
    sent: Hasher,
    properties: BTreeMap<String, String>,
    placed_sidecar: bool,
    ended: bool,
}

impl SftpUpload<'_> {
    fn complete(&mut self, done: &Completion) -> Result<String> {
        let cfg = self.conn.cfg.clone();
        let digest = &done.digest;
        let handle = self.handle.clone().context("upload already finished")?;
        let s = self.conn.get()?;
        s.flush_writes()?;
        let sent = std::mem::take(&mut self.sent).finish();
        if sent.size != digest.size || sent.md5 != digest.md5 {
            bail!(
                "pgdrive sent {} bytes with MD5 {}, but the stream had {} bytes with MD5 {}",
                sent.size,
                sent.md5,
                digest.size,
                digest.md5
            );
        }
        s.fsync(&handle)?;
        self.handle = None;
        s.close(&handle)?;
        let stored = s.stat(&self.partial, false)?.and_then(|a| a.size);
        if stored != Some(digest.size) {
            bail!(
                "the server holds {} bytes of the upload, but pgdrive wrote {}",
                stored.map_or("no".into(), |n| n.to_string()),
                digest.size
            );
        }
        let mut properties = self.properties.clone();
        properties.extend(done.properties.clone());
        let sidecar = super::manifest::build_for(&self.name, &self.name, &properties, done);
        let sidecar = serde_json::to_vec_pretty(&sidecar)?;
        // the sidecar first: a backup is listed only once both exist, so it appears complete
        let sidecar_name = format!("{}{SIDECAR_SUFFIX}", self.name);
        let sidecar_tmp = write_temporary(s, &cfg, &sidecar_name, &sidecar)?;
        if let Err(e) = place(s, &sidecar_tmp, &cfg.path(&sidecar_name), &cfg) {
            let _ = s.remove(&sidecar_tmp);
            return Err(e);
        }
        self.placed_sidecar = true;
        let final_path = cfg.path(&self.name);
        place(s, &self.partial, &final_path, &cfg)?;
        Ok(final_path)
    }

    /// Removes what this upload created (bounded: it may run after a stop); over a new
    /// connection when the old one is gone.
    fn clean_up(&mut self) {
        if self.ended {
            return;
        }
        self.ended = true;
        let deadline = std::time::Instant::now() + crate::signals::CLEANUP_TIMEOUT;
        if self.conn.session.as_ref().is_none_or(Session::is_lost) {
            self.conn.session = Session::connect(&self.conn.cfg, Some(deadline)).ok();
        }
        let Some(s) = self.conn.session.as_mut() else {
            crate::log::warn(
                "could not remove the temporary file of the failed upload; the next backup removes it",
                &[("file", self.partial.clone())],
            );
            return;
        };
        s.cleanup_mode();
        if let Some(h) = self.handle.take() {
            let _ = s.close(&h);
        }
        if let Err(e) = s.remove(&self.partial) {
            crate::log::warn(
                "could not remove the temporary file of the failed upload; the next backup removes it",
                &[("file", self.partial.clone()), ("error", crate::error::render(&e))],
            );
        }
        if self.placed_sidecar {
            let _ = s.remove(
                &self
                    .conn
                    .cfg
                    .path(&format!("{}{SIDECAR_SUFFIX}", self.name)),
            );
        }
        // the session went through a stop's bounds: a later use reconnects
        self.conn.session = None;
    }
}

/// Writes `data` to a new temporary file beside `name` (`.<name>.<random>.partial`, created
/// exclusively, mode 0600), fsynced and closed; its path. Removed again when that fails.
fn write_temporary(s: &mut Session, cfg: &SftpConfig, name: &str, data: &[u8]) -> Result<String> {
    let tmp = cfg.path(&format!(
        ".{name}.{}.partial",
        crate::fsutil::random_token()?
    ));
    let h = s.open(
        &tmp,
        proto::OPEN_WRITE | proto::OPEN_CREAT | proto::OPEN_EXCL,
        Some(0o600),
    )?;
    let written = s
        .write_at(&h, 0, data)
        .and_then(|()| s.flush_writes())
        .and_then(|()| s.fsync(&h).map(|_| ()));
    let closed = s.close(&h);
    if let Err(e) = written.and(closed) {
        let _ = s.remove(&tmp);
        return Err(e);
    }
    Ok(tmp)
}

/// Renames `from` to `to` unless something is at `to`.
fn place(s: &mut Session, from: &str, to: &str, cfg: &SftpConfig) -> Result<()> {
    match s.rename_noreplace(from, to)? {
        Ok(()) => Ok(()),
        Err(status) => {
            if s.stat(to, false)?.is_some() {
                bail!(
                    "{to} appeared on {} while the backup ran; refusing to replace it",
                    cfg.describe()
                );
            }
            Err(anyhow::Error::new(status).context(format!("renaming into {to}")))
        }
    }
}

impl Upload for SftpUpload<'_> {
    fn write(&mut self, data: bytes::Bytes) -> Result<()> {
        let handle = self.handle.as_ref().context("upload already finished")?;
        let s = self.conn.get()?;
        s.write_at(handle, self.offset, &data)
            .with_context(|| format!("writing {}", self.partial))?;
        self.sent.update(&data);
        self.offset += data.len() as u64;
        Ok(())
    }

    fn finish(mut self: Box<Self>, done: &Completion) -> Result<StoredObject> {
        match self.complete(done) {
            Ok(_) => {
                self.ended = true;
                Ok(StoredObject {
                    target: self.target.clone(),
                    backend: Backend::Sftp,
                    id: self.name.clone(),
                    name: self.name.clone(),
                    location: format!(
                        "{}/{}",
                        self.conn.cfg.describe().trim_end_matches('/'),
                        self.name
                    ),
                    metadata_failure: None,
                })
            }
            Err(e) => {
                self.clean_up();
                Err(e.context(format!(
                    "storing {} on {}",
                    self.name,
                    self.conn.cfg.describe()
                )))
            }
        }
    }

    fn abort(mut self: Box<Self>) {
        self.clean_up();
    }
}

impl Drop for SftpUpload<'_> {
    fn drop(&mut self) {
        self.clean_up();
    }
}

/// How often a read reconnects after a dropped connection before giving up.
const RESUMES: u32 = 5;

/// A ranged, pipelined read that resumes at the same offset after a dropped connection.
struct SftpRead<'s> {
    conn: &'s mut Conn,
    path: String,
    handle: Option<Vec<u8>>,
    /// The offset of the next byte handed out (after `buf[at..]`).
    offset: u64,
    /// The offset the next READ request asks for.
    next: u64,
    pending: VecDeque<(u32, u64, usize)>,
    buf: Vec<u8>,
    at: usize,
    eof: bool,
    size: Option<u64>,
    resumes: u32,
}

impl SftpRead<'_> {
    fn lost(&self) -> bool {
        self.conn.session.as_ref().is_none_or(Session::is_lost)
    }

    fn reopen(&mut self) -> Result<()> {
        self.pending.clear();
        self.handle = None;
        let s = self.conn.get()?;
        self.handle = Some(s.open(&self.path, proto::OPEN_READ, None)?);
        self.next = self.offset + (self.buf.len() - self.at) as u64;
        Ok(())
    }

    /// The next piece of the file; empty at its end.
    fn fill(&mut self) -> Result<Vec<u8>> {
        let handle = self.handle.clone().context("not open")?;
        let s = self.conn.get()?;
        while !self.eof && self.pending.len() < conn::READ_AHEAD {
            let len = s.max_read;
            let id = s.send_read(&handle, self.next, len)?;
            self.pending.push_back((id, self.next, len));
            self.next += len as u64;
        }
        let Some((id, at, len)) = self.pending.pop_front() else {
            return Ok(Vec::new());
        };
        let data = s.read_reply(id)?;
        if data.is_empty() {
            // the end: the requests after it answer EOF too
            self.eof = true;
            for (id, _, _) in std::mem::take(&mut self.pending) {
                s.read_reply(id)?;
            }
            return Ok(Vec::new());
        }
        if data.len() < len {
            // a short read: ask again for the rest, before everything queued after it
            let rest = at + data.len() as u64;
            let id = s.send_read(&handle, rest, len - data.len())?;
            self.pending.push_front((id, rest, len - data.len()));
        }
        Ok(data)
    }
}

impl Read for SftpRead<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.buf.len() {
            if self.eof && self.pending.is_empty() {
                return Ok(0);
            }
            match self.fill() {
                Ok(data) if data.is_empty() => return Ok(0),
                Ok(data) => {
                    self.buf = data;
                    self.at = 0;
                }
                Err(e) if self.lost() && self.resumes < RESUMES => {
                    self.resumes += 1;
                    crate::log::warn(
                        "the SFTP connection dropped during a read; resuming",
                        &[
                            ("offset", self.offset.to_string()),
                            ("error", crate::error::render(&e)),
                        ],
                    );
                    let _ = self.size;
                    let reopened = crate::signals::sleep(std::time::Duration::from_millis(
                        500 << self.resumes.min(4),
                    ))
                    .and_then(|()| self.reopen());
                    if let Err(e) = reopened {
                        return Err(std::io::Error::other(e));
                    }
                }
                Err(e) => return Err(std::io::Error::other(e)),
            }
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        self.offset += n as u64;
        crate::signals::progress();
        Ok(n)
    }
}
