//! One SFTP session over the system OpenSSH client: `ssh -s HOST sftp` with batch mode and
//! strict host key checking, its stdin/stdout carrying SFTP version 3 ([`super::proto`]).
//!
//! A reader thread turns stdout into packets; requests are written without waiting for their
//! replies, so writes and reads are pipelined (many requests in flight, not one round trip per
//! packet). Writes to ssh's stdin are non-blocking and polled, so a signal or the stall watchdog
//! is acted on while the server is slow; after a stop, requests are bounded by
//! [`crate::signals::CLEANUP_TIMEOUT`] (removing the temporary file). When ssh fails to connect,
//! its stderr says why, and [`classify`] turns that into a configuration error (unknown or
//! changed host key, refused key: exit 78) or an unavailable server (69).

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::proto::{self, Attrs, Hello, Packet, Reader, Status};
use super::SftpConfig;
use crate::error::{Classified, ExitStatus};

/// How long connecting (TCP, key exchange, authentication, the SFTP hello) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes of WRITE requests in flight before waiting for the oldest reply.
const WRITE_WINDOW: usize = 8 << 20;
/// READ requests in flight.
pub const READ_AHEAD: usize = 16;
/// Bytes per READ or WRITE when the server does not say (`limits@openssh.com`); every server
/// must accept 32 KiB.
const DEFAULT_IO: usize = 32 << 10;
const MAX_IO: usize = 255 << 10;
const POLL: Duration = Duration::from_millis(50);

enum Incoming {
    Packet(u8, Vec<u8>),
    Closed(String),
}

pub struct Session {
    child: Child,
    stdin: ChildStdin,
    replies: Receiver<Incoming>,
    stash: HashMap<u32, (u8, Vec<u8>)>,
    next_id: u32,
    pub hello: Hello,
    pub max_write: usize,
    pub max_read: usize,
    /// WRITE requests awaiting their status, with their sizes.
    writes: VecDeque<(u32, usize)>,
    in_flight: usize,
    stderr: crate::child::StderrTail,
    who: String,
    lost: Option<String>,
    /// Set once the run stops: requests end by then instead of on the stop itself.
    deadline: Option<Instant>,
}

fn ssh_command(cfg: &SftpConfig) -> Command {
    let mut cmd = Command::new("ssh");
    cmd.args(["-T", "-x", "-a"]);
    for o in [
        "BatchMode=yes",
        "StrictHostKeyChecking=yes",
        "UpdateHostKeys=no",
        "ControlMaster=no",
        "ControlPath=none",
        "ClearAllForwardings=yes",
        "ForwardAgent=no",
        "PasswordAuthentication=no",
        "KbdInteractiveAuthentication=no",
        "ServerAliveInterval=15",
        "ServerAliveCountMax=4",
        "ConnectTimeout=20",
    ] {
        cmd.arg("-o").arg(o);
    }
    if let Some(k) = &cfg.known_hosts {
        cmd.arg("-o")
            .arg(format!("UserKnownHostsFile={}", k.display()));
    }
    if let Some(i) = &cfg.identity_file {
        cmd.arg("-o").arg("IdentitiesOnly=yes").arg("-i").arg(i);
    }
    cmd.arg("-p").arg(cfg.port.to_string());
    if let Some(u) = &cfg.user {
        cmd.arg("-l").arg(u);
    }
    cmd.arg("-s").arg("--").arg(&cfg.host).arg("sftp");
    cmd
}

impl Session {
    /// Connects and exchanges the SFTP hello; `deadline` bounds it (cleanup) when given.
    pub fn connect(cfg: &SftpConfig, deadline: Option<Instant>) -> Result<Session> {
        let mut cmd = ssh_command(cfg);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("SSH_ASKPASS")
            .env_remove("DISPLAY");
        crate::child::dies_with_pgdrive(&mut cmd);
        let mut child = cmd.spawn().map_err(|e| {
            crate::error::config_error_hint(
                format!(
                    "cannot run the OpenSSH client `ssh` for {}: {e}",
                    cfg.describe()
                ),
                "install the OpenSSH client (Debian: apt install openssh-client)",
            )
        })?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = crate::child::drain_stderr(child.stderr.take().expect("piped"), "ssh")?;
        // SAFETY: sets O_NONBLOCK on a pipe this process owns.
        unsafe {
            let fd = stdin.as_raw_fd();
            let flags = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
        let (tx, replies) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("sftp-reader".into())
            .spawn(move || read_packets(stdout, tx))?;
        let mut s = Session {
            child,
            stdin,
            replies,
            stash: HashMap::new(),
            next_id: 1,
            hello: Hello::default(),
            max_write: DEFAULT_IO,
            max_read: DEFAULT_IO,
            writes: VecDeque::new(),
            in_flight: 0,
            stderr,
            who: cfg.describe(),
            lost: None,
            deadline: Some(deadline.unwrap_or_else(|| Instant::now() + CONNECT_TIMEOUT)),
        };
        let hello = s.send(Packet::init()).and_then(|()| s.wait_hello());
        let hello = match hello {
            Ok(h) => h,
            Err(e) => return Err(s.connect_failed(cfg, e)),
        };
        s.deadline = deadline;
        if hello.version != proto::VERSION {
            bail!(
                "{} speaks SFTP version {}, pgdrive speaks {}",
                s.who,
                hello.version,
                proto::VERSION
            );
        }
        s.hello = hello;
        if s.hello.offers(proto::EXT_LIMITS) {
            let id = s.id();
            let mut p = Packet::request(proto::FXP_EXTENDED, id);
            p.str(proto::EXT_LIMITS);
            s.send(p)?;
            let (read, write) = proto::parse_limits(&s.extended_reply(id)?)?;
            let fit = |n: u64| {
                if n == 0 {
                    MAX_IO
                } else {
                    (n as usize).min(MAX_IO)
                }
            };
            s.max_read = fit(read).max(DEFAULT_IO);
            s.max_write = fit(write).max(DEFAULT_IO);
        }
        Ok(s)
    }

    /// What ssh said when the session could not be opened, as one classified error.
    fn connect_failed(&mut self, cfg: &SftpConfig, e: anyhow::Error) -> anyhow::Error {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let said = self.stderr.collect();
        if said.is_empty() {
            return e.context(format!("connecting to {}", cfg.describe()));
        }
        classify(cfg, &said)
    }

    fn wait_hello(&mut self) -> Result<Hello> {
        match self.next_incoming()? {
            (proto::FXP_VERSION, body) => Hello::parse(&body),
            (t, _) => bail!("{} answered the SFTP hello with packet type {t}", self.who),
        }
    }

    /// Runs from now on under the cleanup bound (the run stopped), not the stop flag.
    pub fn cleanup_mode(&mut self) {
        self.deadline = Some(Instant::now() + crate::signals::CLEANUP_TIMEOUT);
    }

    pub fn is_lost(&self) -> bool {
        self.lost.is_some()
    }

    fn keep_going(&self) -> Result<()> {
        match self.deadline {
            Some(d) if Instant::now() >= d => {
                bail!("{} did not answer in time", self.who)
            }
            Some(_) => Ok(()),
            None => crate::signals::check_run(),
        }
    }

    /// The connection was lost (ssh exited, or its output ended): 69, the outcome of the
    /// requests in flight unknown; [`Session::is_lost`] says so from then on.
    fn lost_error(&self) -> anyhow::Error {
        anyhow::Error::new(Classified {
            status: ExitStatus::Unavailable,
            message: format!(
                "the connection to {} was lost{}",
                self.who,
                self.lost
                    .as_deref()
                    .filter(|s| !s.is_empty())
                    .map(|s| format!(" ({s})"))
                    .unwrap_or_default()
            ),
            hint: Some("check the network and the server; the run can be repeated".into()),
        })
    }

    pub fn id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    /// Writes one packet entirely (a half-written packet would corrupt the stream, so once it is
    /// started only the deadline, not the stop, ends it).
    pub fn send(&mut self, p: Packet) -> Result<()> {
        if self.lost.is_some() {
            return Err(self.lost_error());
        }
        let bytes = p.finish();
        let mut done = 0;
        let mut finish_by: Option<Instant> = None;
        while done < bytes.len() {
            match self.stdin.write(&bytes[done..]) {
                Ok(n) => {
                    done += n;
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.lost = Some(e.to_string());
                    return Err(self.lost_error());
                }
            }
            if done == 0 {
                self.keep_going()?;
            } else if let Err(e) = self.keep_going() {
                let by = *finish_by
                    .get_or_insert_with(|| Instant::now() + crate::signals::CLEANUP_TIMEOUT);
                if Instant::now() >= by {
                    self.lost = Some("a request could not be sent".into());
                    let _ = self.child.kill();
                    return Err(e);
                }
            }
            let mut fd = libc::pollfd {
                fd: self.stdin.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut fd, 1, POLL.as_millis() as i32) };
        }
        Ok(())
    }

    fn next_incoming(&mut self) -> Result<(u8, Vec<u8>)> {
        loop {
            if self.lost.is_some() {
                return Err(self.lost_error());
            }
            match self.replies.recv_timeout(POLL) {
                Ok(Incoming::Packet(t, body)) => return Ok((t, body)),
                Ok(Incoming::Closed(why)) => self.lost = Some(why),
                Err(RecvTimeoutError::Disconnected) => self.lost = Some(String::new()),
                Err(RecvTimeoutError::Timeout) => self.keep_going()?,
            }
        }
    }

    /// The reply to request `id`: its type and body after the id.
    pub fn wait(&mut self, id: u32) -> Result<(u8, Vec<u8>)> {
        if let Some(r) = self.stash.remove(&id) {
            return Ok(r);
        }
        loop {
            let (t, body) = self.next_incoming()?;
            let mut r = Reader::new(&body);
            let got = r.u32()?;
            let rest = body[4..].to_vec();
            if got == id {
                return Ok((t, rest));
            }
            self.stash.insert(got, (t, rest));
        }
    }

    /// Waits for `id`'s reply, which must be a STATUS: `Ok` for SSH_FX_OK, else the status.
    pub fn status(&mut self, id: u32) -> Result<std::result::Result<(), Status>> {
        match self.wait(id)? {
            (proto::FXP_STATUS, body) => {
                let s = Status::parse(&mut Reader::new(&body))?;
                Ok(if s.code == proto::FX_OK {
                    Ok(())
                } else {
                    Err(s)
                })
            }
            (t, _) => bail!("{} sent packet type {t} where a status was due", self.who),
        }
    }

    fn expect(&mut self, id: u32, kind: u8) -> Result<std::result::Result<Vec<u8>, Status>> {
        match self.wait(id)? {
            (t, body) if t == kind => Ok(Ok(body)),
            (proto::FXP_STATUS, body) => Ok(Err(Status::parse(&mut Reader::new(&body))?)),
            (t, _) => bail!("{} sent packet type {t} where {kind} was due", self.who),
        }
    }

    fn extended_reply(&mut self, id: u32) -> Result<Vec<u8>> {
        Ok(self.expect(id, proto::FXP_EXTENDED_REPLY)??)
    }

    pub fn open(&mut self, path: &str, flags: u32, mode: Option<u32>) -> Result<Vec<u8>> {
        let id = self.id();
        let mut p = Packet::request(proto::FXP_OPEN, id);
        p.str(path).u32(flags).attrs(mode);
        self.send(p)?;
        let body = self
            .expect(id, proto::FXP_HANDLE)?
            .with_context(|| format!("opening {path} on {}", self.who))?;
        Ok(Reader::new(&body).bytes()?.to_vec())
    }

    pub fn close(&mut self, handle: &[u8]) -> Result<()> {
        let id = self.id();
        let mut p = Packet::request(proto::FXP_CLOSE, id);
        p.bytes(handle);
        self.send(p)?;
        self.status(id)?.context("closing a file")
    }

    /// `None` when nothing is at `path`.
    pub fn stat(&mut self, path: &str, follow: bool) -> Result<Option<Attrs>> {
        let id = self.id();
        let kind = if follow {
            proto::FXP_STAT
        } else {
            proto::FXP_LSTAT
        };
        let mut p = Packet::request(kind, id);
        p.str(path);
        self.send(p)?;
        match self.expect(id, proto::FXP_ATTRS)? {
            Ok(body) => Ok(Some(Reader::new(&body).attrs()?)),
            Err(s) if s.code == proto::FX_NO_SUCH_FILE => Ok(None),
            Err(s) => Err(anyhow::Error::new(s).context(format!("looking at {path}"))),
        }
    }

    pub fn fstat(&mut self, handle: &[u8]) -> Result<Attrs> {
        let id = self.id();
        let mut p = Packet::request(proto::FXP_FSTAT, id);
        p.bytes(handle);
        self.send(p)?;
        let body = self.expect(id, proto::FXP_ATTRS)??;
        Reader::new(&body).attrs()
    }

    /// Removes a file; `Ok(false)` when it was not there.
    pub fn remove(&mut self, path: &str) -> Result<bool> {
        let id = self.id();
        let mut p = Packet::request(proto::FXP_REMOVE, id);
        p.str(path);
        self.send(p)?;
        match self.status(id)? {
            Ok(()) => Ok(true),
            Err(s) if s.code == proto::FX_NO_SUCH_FILE => Ok(false),
            Err(s) => Err(anyhow::Error::new(s).context(format!("removing {path}"))),
        }
    }

    /// Plain SSH_FXP_RENAME, which fails when `to` exists (posix-rename replaces: see
    /// [`Session::rename_replace`]).
    pub fn rename_noreplace(
        &mut self,
        from: &str,
        to: &str,
    ) -> Result<std::result::Result<(), Status>> {
        let id = self.id();
        let mut p = Packet::request(proto::FXP_RENAME, id);
        p.str(from).str(to);
        self.send(p)?;
        self.status(id)
    }

    /// `posix-rename@openssh.com`: `from` replaces `to` atomically (a reader sees the old file
    /// or the new one). Only for rewriting a sidecar; `Ok(false)` when the server does not offer it.
    pub fn rename_replace(&mut self, from: &str, to: &str) -> Result<bool> {
        if !self.hello.offers(proto::EXT_POSIX_RENAME) {
            return Ok(false);
        }
        let id = self.id();
        let mut p = Packet::request(proto::FXP_EXTENDED, id);
        p.str(proto::EXT_POSIX_RENAME).str(from).str(to);
        self.send(p)?;
        self.status(id)?
            .with_context(|| format!("renaming {from} over {to}"))?;
        Ok(true)
    }

    /// `fsync@openssh.com` on an open handle; `false` when the server does not offer it.
    pub fn fsync(&mut self, handle: &[u8]) -> Result<bool> {
        if !self.hello.offers(proto::EXT_FSYNC) {
            return Ok(false);
        }
        let id = self.id();
        let mut p = Packet::request(proto::FXP_EXTENDED, id);
        p.str(proto::EXT_FSYNC).bytes(handle);
        self.send(p)?;
        self.status(id)?.context("syncing the file to disk")?;
        Ok(true)
    }

    /// Free bytes where `path` is (`statvfs@openssh.com`); `None` when not offered.
    pub fn free_space(&mut self, path: &str) -> Result<Option<u64>> {
        if !self.hello.offers(proto::EXT_STATVFS) {
            return Ok(None);
        }
        let id = self.id();
        let mut p = Packet::request(proto::FXP_EXTENDED, id);
        p.str(proto::EXT_STATVFS).str(path);
        self.send(p)?;
        Ok(Some(proto::parse_statvfs_free(&self.extended_reply(id)?)?))
    }

    /// Every entry of directory `path` (names without the path), with its attributes.
    pub fn read_dir(&mut self, path: &str) -> Result<Vec<(String, Attrs)>> {
        let id = self.id();
        let mut p = Packet::request(proto::FXP_OPENDIR, id);
        p.str(path);
        self.send(p)?;
        let body = self
            .expect(id, proto::FXP_HANDLE)?
            .with_context(|| format!("listing {path} on {}", self.who))?;
        let handle = Reader::new(&body).bytes()?.to_vec();
        let mut out = Vec::new();
        let listed = loop {
            let id = self.id();
            let mut p = Packet::request(proto::FXP_READDIR, id);
            p.bytes(&handle);
            self.send(p)?;
            match self.expect(id, proto::FXP_NAME)? {
                Ok(body) => {
                    let mut r = Reader::new(&body);
                    for _ in 0..r.u32()? {
                        let name = r.string()?;
                        r.bytes()?; // long name
                        let attrs = r.attrs()?;
                        if name != "." && name != ".." {
                            out.push((name, attrs));
                        }
                    }
                }
                Err(s) if s.code == proto::FX_EOF => break Ok(()),
                Err(s) => break Err(anyhow::Error::new(s).context(format!("listing {path}"))),
            }
        };
        let closed = self.close(&handle);
        listed?;
        closed?;
        Ok(out)
    }

    /// Sends WRITE requests for `data` at `offset` (split to the server's size), waiting only
    /// while more than [`WRITE_WINDOW`] bytes are unacknowledged.
    pub fn write_at(&mut self, handle: &[u8], mut offset: u64, data: &[u8]) -> Result<()> {
        for piece in data.chunks(self.max_write) {
            while self.in_flight + piece.len() > WRITE_WINDOW && !self.writes.is_empty() {
                self.ack_oldest_write()?;
            }
            let id = self.id();
            let mut p = Packet::request(proto::FXP_WRITE, id);
            p.bytes(handle).u64(offset).bytes(piece);
            self.send(p)?;
            self.writes.push_back((id, piece.len()));
            self.in_flight += piece.len();
            offset += piece.len() as u64;
        }
        Ok(())
    }

    fn ack_oldest_write(&mut self) -> Result<()> {
        let (id, len) = self.writes.pop_front().expect("a write in flight");
        self.in_flight -= len;
        self.status(id)?.context("writing")?;
        crate::signals::progress();
        Ok(())
    }

    /// Waits until every WRITE sent was acknowledged.
    pub fn flush_writes(&mut self) -> Result<()> {
        while !self.writes.is_empty() {
            self.ack_oldest_write()?;
        }
        Ok(())
    }

    /// Sends a READ of `len` bytes at `offset`; the reply is [`Session::read_reply`]'s.
    pub fn send_read(&mut self, handle: &[u8], offset: u64, len: usize) -> Result<u32> {
        let id = self.id();
        let mut p = Packet::request(proto::FXP_READ, id);
        p.bytes(handle).u64(offset).u32(len as u32);
        self.send(p)?;
        Ok(id)
    }

    /// The data of READ `id`; empty at the end of the file.
    pub fn read_reply(&mut self, id: u32) -> Result<Vec<u8>> {
        match self.expect(id, proto::FXP_DATA)? {
            Ok(body) => Ok(Reader::new(&body).bytes()?.to_vec()),
            Err(s) if s.code == proto::FX_EOF => Ok(Vec::new()),
            Err(s) => Err(anyhow::Error::new(s).context("reading")),
        }
    }

    /// A whole (small) file, at most `limit` bytes.
    pub fn read_file(&mut self, path: &str, limit: u64) -> Result<Vec<u8>> {
        let handle = self.open(path, proto::OPEN_READ, None)?;
        let mut out = Vec::new();
        let read = loop {
            let id = self.send_read(&handle, out.len() as u64, self.max_read)?;
            match self.read_reply(id) {
                Ok(d) if d.is_empty() => break Ok(()),
                Ok(d) => out.extend_from_slice(&d),
                Err(e) => break Err(e),
            }
            if out.len() as u64 > limit {
                break Err(anyhow::anyhow!("{path} is larger than {limit} bytes"));
            }
        };
        let closed = self.close(&handle);
        read?;
        closed?;
        Ok(out)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_packets(mut out: std::process::ChildStdout, tx: std::sync::mpsc::Sender<Incoming>) {
    let why = loop {
        let mut len = [0u8; 4];
        match out.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break String::new(),
            Err(e) => break e.to_string(),
        }
        let len = u32::from_be_bytes(len) as usize;
        if len == 0 || len > proto::MAX_PACKET {
            break format!("the server sent a packet of {len} bytes");
        }
        let mut body = vec![0u8; len];
        if let Err(e) = out.read_exact(&mut body) {
            break e.to_string();
        }
        let kind = body.remove(0);
        if tx.send(Incoming::Packet(kind, body)).is_err() {
            return;
        }
    };
    let _ = tx.send(Incoming::Closed(why));
}

/// The error for ssh's stderr `said` when it could not open the session: a host key not known
/// or changed, a refused or unreadable key, no SFTP on the server (78); a server that cannot be
/// reached (69). Only ssh's own last line is quoted (it holds no secret: batch mode never asks).
pub fn classify(cfg: &SftpConfig, said: &str) -> anyhow::Error {
    let known_hosts = cfg
        .known_hosts
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "~/.ssh/known_hosts".into());
    let host_entry = if cfg.port == 22 {
        cfg.host.clone()
    } else {
        format!("[{}]:{}", cfg.host, cfg.port)
    };
    let last = said
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("")
        .to_string();
    let fingerprint = said
        .split_whitespace()
        .find(|w| w.starts_with("SHA256:"))
        .map(|f| format!(" (the server now presents {f})"))
        .unwrap_or_default();
    let (status, message, hint) = if said.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
        || said.contains("has changed and you have requested strict checking")
    {
        (
            ExitStatus::Config,
            format!("the host key of {} has changed{fingerprint}; refusing to connect", cfg.describe()),
            format!("someone may be intercepting the connection; only if the server's key was really replaced, remove the old entry (`ssh-keygen -R '{host_entry}' -f {known_hosts}`), add the new one (`ssh-keyscan -p {} {} >> {known_hosts}`) and check its fingerprint (`ssh-keygen -lf {known_hosts}`) against the one the provider publishes", cfg.port, cfg.host),
        )
    } else if said.contains("Host key verification failed") || said.contains("host key is known") {
        (
            ExitStatus::Config,
            format!("the host key of {} is not in {known_hosts}; refusing to connect", cfg.describe()),
            format!("add it: `ssh-keyscan -p {} {} >> {known_hosts}`, then check its fingerprint (`ssh-keygen -lf {known_hosts}`) against the one the provider publishes", cfg.port, cfg.host),
        )
    } else if said.contains("Permission denied") {
        (
            ExitStatus::Config,
            format!("{} refused the key: {last}", cfg.describe()),
            "install the public key of `identity_file` (or of the ssh-agent's key) in the server's authorized_keys (Hetzner Storage Box: `cat KEY.pub | ssh -p23 USER@HOST install-ssh-key`), and check `user`".to_string(),
        )
    } else if said.contains("Load key")
        || said.contains("not accessible")
        || said.contains("invalid format")
        || said.contains("UNPROTECTED PRIVATE KEY")
    {
        (
            ExitStatus::Config,
            format!("ssh cannot use the key file for {}: {last}", cfg.describe()),
            "set `identity_file` to a readable private key without a passphrase (mode 0600, owned by the user pgdrive runs as), or unset it to use the ssh-agent".to_string(),
        )
    } else if said.contains("subsystem request failed") {
        (
            ExitStatus::Config,
            format!("{} offers no SFTP: {last}", cfg.describe()),
            "enable the sftp subsystem on the server (Hetzner Storage Box: enable SSH support in the console)".to_string(),
        )
    } else {
        (
            ExitStatus::Unavailable,
            format!("cannot connect to {}: {last}", cfg.describe()),
            "check `host` and `port`, that the server is up and that the network lets SSH through; the run can be repeated".to_string(),
        )
    };
    anyhow::Error::new(Classified {
        status,
        message,
        hint: Some(hint),
    })
}
