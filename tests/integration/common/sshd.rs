//! A real OpenSSH `sshd` (Debian's openssh-server) on a free loopback port, started per test
//! with a generated host key, a generated user key in `authorized_keys`, and a `known_hosts`
//! file with the `[127.0.0.1]:PORT` entry; plus a TCP proxy in front of it that can drop the
//! connection after a number of bytes (the server "going away" mid-transfer).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::TempDir;

pub const SSHD: &str = "/usr/sbin/sshd";

pub struct Sshd {
    pub dir: TempDir,
    pub port: u16,
    /// The remote directory backups go to (an absolute path on this machine).
    pub data: PathBuf,
    pub identity_file: PathBuf,
    pub known_hosts: PathBuf,
    pub user: String,
    child: Child,
}

fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "pgdrive-test", "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen");
    assert!(out.status.success(), "{out:?}");
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A new key pair in `dir` named `name`; returns the private key's path.
pub fn new_key(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    keygen(&p);
    p
}

impl Sshd {
    /// `None` (the test is skipped) when sshd is not installed, except on CI.
    pub fn start() -> Option<Sshd> {
        if !Path::new(SSHD).exists() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "sshd is required on CI (apt install openssh-server)"
            );
            eprintln!("SKIPPED: {SSHD} is not installed (apt install openssh-server)");
            return None;
        }
        let dir = TempDir::new("sshd");
        let host_key = new_key(dir.path(), "host_key");
        let identity_file = new_key(dir.path(), "id_user");
        std::fs::copy(
            dir.path().join("id_user.pub"),
            dir.path().join("authorized_keys"),
        )
        .unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let port = free_port();
        let known_hosts = dir.path().join("known_hosts");
        let host_pub = std::fs::read_to_string(dir.path().join("host_key.pub")).unwrap();
        std::fs::write(&known_hosts, format!("[127.0.0.1]:{port} {host_pub}")).unwrap();
        // root's sshd separates privileges into this directory
        let _ = std::fs::create_dir_all("/run/sshd");
        let config = dir.path().join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nPidFile {pid}\n\
                 AuthorizedKeysFile {ak}\nUsePAM no\nStrictModes no\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
                 Subsystem sftp internal-sftp\nMaxStartups 50\nMaxSessions 50\nLogLevel VERBOSE\n",
                hk = host_key.display(),
                pid = dir.path().join("sshd.pid").display(),
                ak = dir.path().join("authorized_keys").display(),
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("sshd.log")).unwrap();
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sshd");
        let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_string();
        let s = Sshd {
            dir,
            port,
            data,
            identity_file,
            known_hosts,
            user,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sshd did not listen: {}",
                s.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(s)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// Trusts this server's host key under another port too (a proxy in front of it).
    pub fn trust_port(&self, port: u16) {
        let host_pub = std::fs::read_to_string(self.dir.path().join("host_key.pub")).unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.known_hosts)
            .unwrap();
        writeln!(f, "[127.0.0.1]:{port} {}", host_pub.trim()).unwrap();
    }

    /// The `[targets.NAME]` table of an SFTP target on this server, at `port`.
    pub fn target_toml(&self, name: &str, port: u16, extra: &str) -> String {
        format!(
            "[targets.{name}]\ntype = \"sftp\"\nhost = \"127.0.0.1\"\nport = {port}\nuser = \"{}\"\n\
             dir = \"{}\"\nidentity_file = \"{}\"\nknown_hosts = \"{}\"\n{extra}\n",
            self.user,
            self.data.display(),
            self.identity_file.display(),
            self.known_hosts.display()
        )
    }

    pub fn config(&self, port: u16) -> pgdrive::storage::sftp::SftpConfig {
        pgdrive::storage::sftp::SftpConfig {
            host: "127.0.0.1".into(),
            port,
            user: Some(self.user.clone()),
            dir: self.data.display().to_string(),
            identity_file: Some(self.identity_file.clone()),
            known_hosts: Some(self.known_hosts.clone()),
        }
    }

    /// Every name in the remote directory, sorted, but the job's globals (see
    /// [`super::without_globals`]).
    pub fn files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.data)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        super::without_globals(v)
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Forwards loopback connections to `127.0.0.1:to`; [`Proxy::drop_after`] makes it cut the
/// next connection once that many bytes went through in the given direction.
pub struct Proxy {
    pub port: u16,
    /// Bytes left before the cut (negative: no cut armed); counts client->server when
    /// `upstream`, else server->client.
    budget: Arc<AtomicI64>,
    upstream: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(to: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let budget = Arc::new(AtomicI64::new(-1));
        let upstream = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, u, s) = (budget.clone(), upstream.clone(), stop.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else {
                    continue;
                };
                for (from, into, up) in [
                    (
                        client.try_clone().unwrap(),
                        server.try_clone().unwrap(),
                        true,
                    ),
                    (server, client, false),
                ] {
                    let (b, u) = (b.clone(), u.clone());
                    std::thread::spawn(move || pump(from, into, up, b, u));
                }
            }
        });
        Proxy {
            port,
            budget,
            upstream,
            stop,
        }
    }

    /// Cuts the connection that moves `bytes` more bytes (client to server when `upstream`).
    pub fn drop_after(&self, bytes: i64, upstream: bool) {
        self.upstream.store(upstream, Ordering::SeqCst);
        self.budget.store(bytes, Ordering::SeqCst);
    }

    /// Whether an armed cut happened.
    pub fn cut_done(&self) -> bool {
        self.budget.load(Ordering::SeqCst) == i64::MIN
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn pump(
    mut from: TcpStream,
    mut into: TcpStream,
    up: bool,
    budget: Arc<AtomicI64>,
    upstream: Arc<AtomicBool>,
) {
    let mut buf = [0u8; 16 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if upstream.load(Ordering::SeqCst) == up {
            let left = budget.load(Ordering::SeqCst);
            if left >= 0 {
                if left < n as i64 {
                    budget.store(i64::MIN, Ordering::SeqCst);
                    break;
                }
                budget.fetch_sub(n as i64, Ordering::SeqCst);
            }
        }
        if into.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = into.shutdown(Shutdown::Both);
}
