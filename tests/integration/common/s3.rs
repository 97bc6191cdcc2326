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
                .unfinished_uploads()
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

    /// A request to moto, which checks no signature (but wants an `Authorization` naming a key),
    /// for setting the scene and looking behind pgdrive's back.
    fn moto_request(
        &self,
        method: &str,
        key: &str,
        query: &str,
    ) -> ureq::http::Response<ureq::Body> {
        assert_eq!(self.flavour, Flavour::Moto, "unsigned requests need moto");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}/{}/{key}{query}", self.endpoint, self.bucket))
            .header(
                "authorization",
                format!("AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0"),
            )
            .body(Vec::<u8>::new())
            .unwrap();
        let r = agent.run(request).unwrap();
        assert!(
            r.status().is_success(),
            "{method} {key}{query}: {}",
            r.status()
        );
        r
    }

    /// Starts a multipart upload of `key` and leaves it unfinished, as a killed tool would.
    pub fn start_raw_upload(&self, key: &str) {
        self.moto_request("POST", key, "?uploads");
    }

    /// The headers a HEAD of `key` answers (names lower case).
    pub fn head_headers(&self, key: &str) -> std::collections::BTreeMap<String, String> {
        self.moto_request("HEAD", key, "")
            .headers()
            .iter()
            .filter_map(|(k, v)| {
                Some((
                    k.as_str().to_ascii_lowercase(),
                    v.to_str().ok()?.to_string(),
                ))
            })
            .collect()
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
            part_size: None,
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

/// What [`FaultProxy`] does to the requests that match its rule.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Answer `500 InternalError` without reaching the server.
    Fail500,
    /// Hold the request this long before forwarding it (a slow server).
    Delay(Duration),
    /// Read this many bytes of the request body, then drop the connection (a network that breaks
    /// mid-upload: the server never sees the request).
    DropRequestBody(usize),
    /// Forward the request, then drop the connection after this many bytes of the answer's body
    /// (a download that breaks mid-body).
    DropResponseBody(usize),
    /// Forward the request and make every `<Initiated>` time of the answer this one (milliseconds
    /// since the epoch): moto reports the same fixed 2010 time for every unfinished upload, so the
    /// tests say how old an upload looks; the server itself is not changed.
    UploadsInitiatedAt(i64),
}

/// A fault-injecting HTTP proxy of our own in front of a real S3 server: every request is
/// forwarded on a fresh upstream connection (`Connection: close`) and logged as
/// `METHOD path?query` (and its whole head in [`FaultProxy::heads`]); a request whose request
/// line contains every string of `matching` gets the [`Fault`] the first `times` times
/// (`u32::MAX`: always).
pub struct FaultProxy {
    pub endpoint: String,
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    heads: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// The body offset of an HTTP message (after the blank line), if its head is complete.
fn body_start(message: &[u8]) -> Option<usize> {
    message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
}

impl FaultProxy {
    /// Requests matching `fail_match` are answered 500 the first `fail_times` times.
    pub fn start(upstream: &str, fail_match: &str, fail_times: u32) -> FaultProxy {
        Self::start_with(upstream, &[fail_match], fail_times, Fault::Fail500)
    }

    /// As [`FaultProxy::start`], and a request matching `fail_match` once its failures are used
    /// up is held `delay` before it is forwarded (a slow server).
    pub fn start_slow(
        upstream: &str,
        fail_match: &str,
        fail_times: u32,
        delay: Duration,
    ) -> FaultProxy {
        if fail_times == 0 {
            return Self::start_with(upstream, &[fail_match], u32::MAX, Fault::Delay(delay));
        }
        assert!(delay.is_zero(), "failures then delays: not needed yet");
        Self::start(upstream, fail_match, fail_times)
    }

    pub fn start_with(upstream: &str, matching: &[&str], times: u32, fault: Fault) -> FaultProxy {
        use std::sync::{Arc, Mutex};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let upstream = upstream.trim_start_matches("http://").to_string();
        let log = Arc::new(Mutex::new(Vec::new()));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let left = Arc::new(Mutex::new(times));
        let (log2, heads2, matching) = (
            log.clone(),
            heads.clone(),
            matching.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
        );
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { return };
                let (log, heads, left, upstream, matching) = (
                    log2.clone(),
                    heads2.clone(),
                    left.clone(),
                    upstream.clone(),
                    matching.clone(),
                );
                std::thread::spawn(move || {
                    serve(client, &upstream, &log, &heads, |line| {
                        if !matching.iter().all(|m| line.contains(m.as_str())) {
                            return None;
                        }
                        let mut left = left.lock().unwrap();
                        if *left == 0 {
                            return None;
                        }
                        if *left != u32::MAX {
                            *left -= 1;
                        }
                        Some(fault)
                    })
                });
            }
        });
        FaultProxy {
            endpoint: format!("http://127.0.0.1:{port}"),
            log,
            heads,
        }
    }

    pub fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// The whole head (request line and headers) of every request, in order.
    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

/// One proxied request: `fault_for` decides, from the request line, what goes wrong.
fn serve(
    mut client: std::net::TcpStream,
    upstream: &str,
    log: &std::sync::Mutex<Vec<String>>,
    heads: &std::sync::Mutex<Vec<String>>,
    fault_for: impl FnOnce(&str) -> Option<Fault>,
) {
    use std::io::{Read, Write};
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
    let line = head.lines().next().unwrap_or("").to_string();
    let target: Vec<&str> = line.split(' ').collect();
    log.lock()
        .unwrap()
        .push(format!("{} {}", target[0], target.get(1).unwrap_or(&"")));
    heads.lock().unwrap().push(head.clone());
    let fault = fault_for(&line);
    if let Some(Fault::DropRequestBody(after)) = fault {
        let mut some = vec![0u8; after.min(len)];
        let _ = client.read_exact(&mut some);
        let _ = client.shutdown(std::net::Shutdown::Both);
        return;
    }
    let mut body = vec![0u8; len];
    if client.read_exact(&mut body).is_err() {
        return;
    }
    match fault {
        Some(Fault::Fail500) => {
            let err = "<Error><Code>InternalError</Code><Message>injected</Message></Error>";
            let _ = write!(client, "HTTP/1.1 500 Internal Server Error\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{err}", err.len());
            return;
        }
        Some(Fault::Delay(d)) => std::thread::sleep(d),
        _ => {}
    }
    let mut headers: Vec<&str> = head
        .trim_end()
        .lines()
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .collect();
    headers.push("Connection: close");
    let Ok(mut up) = std::net::TcpStream::connect(upstream) else {
        return;
    };
    let _ = up.write_all(format!("{}\r\n\r\n", headers.join("\r\n")).as_bytes());
    let _ = up.write_all(&body);
    let mut answer = Vec::new();
    let _ = up.read_to_end(&mut answer);
    match fault {
        Some(Fault::DropResponseBody(after)) => {
            let cut = body_start(&answer).map_or(answer.len(), |b| (b + after).min(answer.len()));
            let _ = client.write_all(&answer[..cut]);
            let _ = client.shutdown(std::net::Shutdown::Both);
        }
        Some(Fault::UploadsInitiatedAt(millis)) => {
            let when = pgdrive::timeutil::rfc3339_millis(millis);
            let text = String::from_utf8_lossy(&answer).into_owned();
            let mut out = String::with_capacity(text.len());
            let mut rest = text.as_str();
            while let Some(at) = rest.find("<Initiated>") {
                let (before, after) = rest.split_at(at + "<Initiated>".len());
                let end = after.find("</Initiated>").unwrap_or(0);
                // same length (both millisecond RFC 3339): the Content-Length stays true
                assert_eq!(
                    end,
                    when.len(),
                    "an <Initiated> of another shape: {}",
                    &after[..end]
                );
                out.push_str(before);
                out.push_str(&when);
                rest = &after[end..];
            }
            out.push_str(rest);
            let _ = client.write_all(out.as_bytes());
        }
        _ => {
            let _ = client.write_all(&answer);
        }
    }
}
