//! Real S3 servers on loopback for the S3 target's tests: moto in server mode
//! (`pip install "moto[server]"`) and s3s-fs (`cargo install s3s-fs --version 0.14.1 --features binary`).
//! Each test starts its own server on a free port with its own bucket; a missing server fails the
//! test with the command that installs it (nothing is skipped silently).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pgdrive::drive::retry::RetryPolicy;
use pgdrive::storage::s3::{AwsCredentials, S3Config, S3Place, S3Target};

use super::{installed_tool, unique, TempDir};

pub const ACCESS_KEY: &str = "AKIAPGDRIVETEST";
pub const SECRET_KEY: &str = "pgdrive-test-secret-key-0123456789";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    Moto,
    S3sFs,
}

/// One S3 server process with one bucket, killed on drop.
pub struct S3Server {
    pub flavour: Flavour,
    pub endpoint: String,
    pub bucket: String,
    child: Child,
    root: TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl S3Server {
    pub fn start(flavour: Flavour) -> S3Server {
        let root = TempDir::new("s3root");
        let port = free_port();
        let bucket = unique("bkt").replace('_', "-").to_lowercase();
        let child = match flavour {
            Flavour::Moto => {
                let bin = installed_tool("moto_server", "pip install \"moto[server]\"")
                    .expect("moto_server is not installed: pip install \"moto[server]\"");
                Command::new(bin)
                    .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            }
            Flavour::S3sFs => {
                let bin = installed_tool(
                    "s3s-fs",
                    "cargo install s3s-fs --version 0.14.1 --features binary --locked",
                )
                .expect("s3s-fs is not installed: cargo install s3s-fs --version 0.14.1 --features binary --locked");
                std::fs::create_dir_all(root.path().join(&bucket)).unwrap();
                Command::new(bin)
                    .args([
                        "--host",
                        "127.0.0.1",
                        "--port",
                        &port.to_string(),
                        "--access-key",
                        ACCESS_KEY,
                        "--secret-key",
                        SECRET_KEY,
                    ])
                    .arg(root.path())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            }
        };
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "{flavour:?} did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        if flavour == Flavour::Moto {
            // moto takes any credentials; a bucket is made with a plain PUT
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            let r = agent
                .put(&format!("{endpoint}/{bucket}"))
                .send_empty()
                .unwrap();
            assert!(
                r.status().is_success(),
                "creating the moto bucket: {}",
                r.status()
            );
        }
        S3Server {
            flavour,
            endpoint,
            bucket,
            child,
            root,
        }
    }

    /// The multipart uploads the server holds unfinished: asked through ListMultipartUploads
    /// (moto), or read from its storage directory (s3s-fs implements no such listing and keeps
    /// `.upload-ID.json` and `.upload_id-ID.part-N` files in its root).
    pub fn pending_uploads(&self) -> Vec<String> {
        match self.flavour {
            Flavour::Moto => self
                .target("", 1000)
                .stale_uploads(Duration::ZERO, false)
                .unwrap()
                .into_iter()
                .map(|u| format!("<unfinished upload of {}>", u.key))
                .collect(),
            Flavour::S3sFs => {
                let mut v: Vec<String> = std::fs::read_dir(self.root.path())
                    .unwrap()
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(".upload"))
                    .collect();
                v.sort();
                v
            }
        }
    }

    /// Where the server keeps what it stores (objects and its own metadata files).
    pub fn root(&self) -> &std::path::Path {
        self.root.path()
    }

    pub fn place(&self, prefix: &str) -> S3Place {
        S3Place {
            bucket: self.bucket.clone(),
            prefix: S3Place::normalized_prefix(prefix),
            region: "us-east-1".into(),
            endpoint: Some(self.endpoint.clone()),
            path_style: Some(true),
            storage_class: None,
            sse: None,
            sse_kms_key_id: None,
        }
    }

    pub fn config(&self, prefix: &str, page_size: u32) -> S3Config {
        S3Config {
            place: self.place(prefix),
            credentials: AwsCredentials::new(ACCESS_KEY, SECRET_KEY, None),
            retry: RetryPolicy {
                max_retries: 3,
                initial: Duration::from_millis(20),
                max: Duration::from_millis(100),
                ..RetryPolicy::default()
            },
            page_size,
        }
    }

    pub fn target(&self, prefix: &str, page_size: u32) -> S3Target {
        S3Target::from_config("s3".into(), self.config(prefix, page_size))
    }

    /// A config file with `[targets.s3]` on this server and a daily job writing to it.
    pub fn config_file(&self, dir: &std::path::Path, prefix: &str, keep: u32) -> PathBuf {
        let path = dir.join("pgdrive.toml");
        std::fs::write(
            &path,
            format!(
                "[targets.s3]\ntype = \"s3\"\nbucket = \"{}\"\nprefix = \"{prefix}\"\nendpoint = \"{}\"\nkeep = {keep}\nchunk_size = \"5MiB\"\n\n[jobs.nightly]\nkind = \"daily\"\ntargets = [\"s3\"]\n",
                self.bucket, self.endpoint
            ),
        )
        .unwrap();
        path
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fault-injecting HTTP proxy of our own in front of a real S3 server: every request is
/// forwarded on a fresh upstream connection (`Connection: close`) and logged as
/// `METHOD path?query`; a request whose target contains `fail_match` is answered `500
/// InternalError` the first `fail_times` times, without reaching the server.
pub struct FaultProxy {
    pub endpoint: String,
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl FaultProxy {
    pub fn start(upstream: &str, fail_match: &str, fail_times: u32) -> FaultProxy {
        Self::start_slow(upstream, fail_match, fail_times, Duration::ZERO)
    }

    /// As [`FaultProxy::start`], and a request matching `fail_match` once its failures are used
    /// up is held `delay` before it is forwarded (a slow server).
    pub fn start_slow(
        upstream: &str,
        fail_match: &str,
        fail_times: u32,
        delay: Duration,
    ) -> FaultProxy {
        use std::io::{Read, Write};
        use std::sync::{Arc, Mutex};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let upstream = upstream.trim_start_matches("http://").to_string();
        let log = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(Mutex::new(fail_times));
        let (log2, fail_match) = (log.clone(), fail_match.to_string());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut client) = conn else { return };
                let (log, failures, upstream, fail_match) = (
                    log2.clone(),
                    failures.clone(),
                    upstream.clone(),
                    fail_match.clone(),
                );
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let mut byte = [0u8; 1];
                    while !buf.ends_with(b"\r\n\r\n") {
                        if client.read(&mut byte).unwrap_or(0) == 0 {
                            return;
                        }
                        buf.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&buf).into_owned();
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    let mut body = vec![0u8; len];
                    if client.read_exact(&mut body).is_err() {
                        return;
                    }
                    let line = head.lines().next().unwrap_or("").to_string();
                    let target: Vec<&str> = line.split(' ').collect();
                    log.lock().unwrap().push(format!(
                        "{} {}",
                        target[0],
                        target.get(1).unwrap_or(&"")
                    ));
                    if line.contains(&fail_match) {
                        let mut left = failures.lock().unwrap();
                        if *left > 0 {
                            *left -= 1;
                            let err = "<Error><Code>InternalError</Code><Message>injected</Message></Error>";
                            let _ = write!(client, "HTTP/1.1 500 Internal Server Error\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{err}", err.len());
                            return;
                        }
                        drop(left);
                        std::thread::sleep(delay);
                    }
                    let mut headers: Vec<&str> = head
                        .trim_end()
                        .lines()
                        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
                        .collect();
                    headers.push("Connection: close");
                    let Ok(mut up) = std::net::TcpStream::connect(&upstream) else {
                        return;
                    };
                    let _ = up.write_all(format!("{}\r\n\r\n", headers.join("\r\n")).as_bytes());
                    let _ = up.write_all(&body);
                    let mut answer = Vec::new();
                    let _ = up.read_to_end(&mut answer);
                    let _ = client.write_all(&answer);
                });
            }
        });
        FaultProxy {
            endpoint: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    pub fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}
