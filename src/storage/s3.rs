//! The S3-compatible target (AWS S3, R2, B2, Wasabi, MinIO, Ceph RGW, Hetzner): a bucket and a
//! key prefix, spoken to with hand-written SigV4 requests over the project's `ureq` agent (HMAC
//! from `ring`, already a dependency; no SDK, no async runtime).
//!
//! An upload buffers one part. While the dump is smaller than one part nothing is sent, and a
//! small dump is stored with one PutObject at `finish`; as soon as more than one part's worth has
//! arrived a multipart upload is created and every full part is sent (each with its
//! `Content-MD5`, each retried on its own: a failed part never restarts the upload). The part
//! size is fixed for the whole upload, chosen at `begin` by [`choose_part_size`] from the
//! configured floor and the largest earlier backup of the job and database (R2 refuses unequal
//! parts, and 10,000 parts of the floor may be too few for a multi-TB dump). Memory per upload
//! is bounded by about two parts: the buffer (one part plus one incoming chunk) and the copy of
//! the part being sent. `finish`
//! completes the upload only once the whole stream is known good (pgdrive calls it after pg_dump
//! exited 0 and the dump trailer was seen), checks the stored size with a HEAD, then writes the
//! backup's [`super::manifest`] as `<backup>.manifest.json` beside it. Every failure path, and
//! dropping an unfinished upload (SIGTERM ends in `abort`), sends AbortMultipartUpload.
//!
//! S3 metadata can only be given when an object is created, and the checksums are known only at
//! the end: the manifest object is the record. Listings read the manifests under the prefix
//! (a backup without one, or a foreign object, is never listed, so never pruned).

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::manifest;
use super::{
    Backend, Capabilities, Completion, Found, Hasher, Listed, PartSize, StoredObject, Target,
    Upload,
};
use crate::drive::retry::{Attempts, Next, RetryPolicy};
use crate::error::config_error_hint;

/// S3's smallest part (all but the last).
pub const MIN_PART: usize = 5 << 20;
/// S3's largest part number.
pub const MAX_PARTS: u64 = 10_000;
/// S3's largest part.
pub const MAX_PART: u64 = 5 << 30;
/// How many times the largest earlier backup a new one's part size must leave room for: a
/// database may grow a lot between two backups, and the part size cannot change mid-upload.
pub const SIZE_HEADROOM: u64 = 4;

/// The part size of one upload, chosen before the first byte (R2 refuses parts of unequal size
/// within an upload, so it cannot grow on the way): `floor` (the target's `part_size` or
/// `chunk_size`), grown so that [`SIZE_HEADROOM`] times `largest_earlier` (the largest earlier
/// backup of the job and database on the target) fits in [`MAX_PARTS`] parts, rounded up to
/// whole MiB, and clamped to S3's [5 MiB, 5 GiB].
pub fn choose_part_size(floor: u64, largest_earlier: Option<u64>) -> u64 {
    const MIB: u64 = 1 << 20;
    let needed = largest_earlier
        .unwrap_or(0)
        .saturating_mul(SIZE_HEADROOM)
        .div_ceil(MAX_PARTS)
        .div_ceil(MIB)
        .saturating_mul(MIB);
    floor.max(needed).clamp(MIN_PART as u64, MAX_PART)
}

/// No server MD5 of a whole (multipart) object, metadata only at creation, no property filter in
/// listings, ranged GETs; parts of 5 MiB or more, at most 10,000 of them.
pub const CAPABILITIES: Capabilities = Capabilities {
    server_md5: false,
    metadata_after_upload: false,
    max_property_bytes: None,
    part_size: PartSize {
        min: MIN_PART,
        align: 1,
        max_parts: Some(MAX_PARTS),
    },
    list_by_property: false,
    ranged_reads: true,
};

/// Access keys, from the environment or the shared credentials file; never printed.
#[derive(Clone)]
pub struct AwsCredentials {
    pub access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
    /// Where they came from, for messages.
    pub source: String,
}

impl std::fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AwsCredentials({})", self.source)
    }
}

const CREDENTIALS_HINT: &str = "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary credentials), or AWS_PROFILE with a profile in ~/.aws/credentials (AWS_SHARED_CREDENTIALS_FILE)";

impl AwsCredentials {
    /// Credentials given directly (tests; every other caller uses [`Self::from_environment`]).
    pub fn new(
        access_key_id: &str,
        secret_access_key: &str,
        session_token: Option<&str>,
    ) -> AwsCredentials {
        crate::redact::register(secret_access_key);
        AwsCredentials {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            session_token: session_token.map(Into::into),
            source: "given".into(),
        }
    }

    /// The standard places: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`, else
    /// `AWS_PROFILE` (default `default`) in `AWS_SHARED_CREDENTIALS_FILE` (default
    /// `~/.aws/credentials`). Every secret is registered for redaction.
    pub fn from_environment() -> Result<AwsCredentials> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let creds = match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
            (Some(id), Some(secret)) => AwsCredentials {
                access_key_id: id,
                secret_access_key: secret,
                session_token: var("AWS_SESSION_TOKEN"),
                source: "AWS_ACCESS_KEY_ID".into(),
            },
            (Some(_), None) | (None, Some(_)) => {
                return Err(config_error_hint(
                    "only one of AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY is set",
                    CREDENTIALS_HINT,
                ))
            }
            (None, None) => {
                let profile = var("AWS_PROFILE").unwrap_or_else(|| "default".into());
                let path = var("AWS_SHARED_CREDENTIALS_FILE")
                    .map(std::path::PathBuf::from)
                    .or_else(|| {
                        var("HOME").map(|h| std::path::Path::new(&h).join(".aws/credentials"))
                    })
                    .ok_or_else(|| {
                        config_error_hint("no S3 credentials are configured", CREDENTIALS_HINT)
                    })?;
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    config_error_hint(
                        format!("no S3 credentials: AWS_ACCESS_KEY_ID is not set and {} cannot be read ({e})", path.display()),
                        CREDENTIALS_HINT,
                    )
                })?;
                let section = profile_section(&text, &profile);
                let (Some(id), Some(secret)) = (
                    section.get("aws_access_key_id"),
                    section.get("aws_secret_access_key"),
                ) else {
                    return Err(config_error_hint(
                        format!("the profile [{profile}] of {} has no aws_access_key_id and aws_secret_access_key", path.display()),
                        CREDENTIALS_HINT,
                    ));
                };
                AwsCredentials {
                    access_key_id: id.clone(),
                    secret_access_key: secret.clone(),
                    session_token: section.get("aws_session_token").cloned(),
                    source: format!("profile {profile} of {}", path.display()),
                }
            }
        };
        crate::redact::register(&creds.secret_access_key);
        if let Some(t) = &creds.session_token {
            crate::redact::register(t);
        }
        Ok(creds)
    }
}

/// The `key = value` lines of `[profile]` in an INI-style credentials file.
fn profile_section(text: &str, profile: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut inside = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim();
            inside =
                name == profile || name.strip_prefix("profile ").map(str::trim) == Some(profile);
            continue;
        }
        if inside {
            if let Some((k, v)) = line.split_once('=') {
                out.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
    }
    out
}

/// Where an S3 target stores, from its `[targets.NAME]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Place {
    pub bucket: String,
    /// Key prefix; empty, or ending in `/`.
    pub prefix: String,
    pub region: String,
    /// `scheme://host[:port]`; `None`: AWS (`https://s3.REGION.amazonaws.com`).
    pub endpoint: Option<String>,
    pub path_style: Option<bool>,
    pub storage_class: Option<String>,
    /// `AES256` (SSE-S3) or `aws:kms` (SSE-KMS).
    pub sse: Option<String>,
    pub sse_kms_key_id: Option<String>,
    /// The smallest part of an upload (`part_size`); `None`: the target's `chunk_size`.
    pub part_size: Option<u64>,
}

impl S3Place {
    /// The server-side encryption headers every object pgdrive stores carries, manifests and
    /// probes included (a bucket policy may refuse any PUT without them).
    fn encryption_headers(&self) -> BTreeMap<String, String> {
        let mut headers = BTreeMap::new();
        if let Some(s) = &self.sse {
            headers.insert("x-amz-server-side-encryption".into(), s.clone());
        }
        if let Some(k) = &self.sse_kms_key_id {
            headers.insert(
                "x-amz-server-side-encryption-aws-kms-key-id".into(),
                k.clone(),
            );
        }
        headers
    }

    /// The prefix as stored: no leading `/`, a trailing `/` unless empty.
    pub fn normalized_prefix(prefix: &str) -> String {
        let p = prefix.trim_matches('/');
        if p.is_empty() {
            String::new()
        } else {
            format!("{p}/")
        }
    }
}

#[derive(Debug)]
pub struct S3Config {
    pub place: S3Place,
    pub credentials: AwsCredentials,
    pub retry: RetryPolicy,
    /// Keys per listing request (S3 allows up to 1000).
    pub page_size: u32,
}

// ------------------------------------------------------------------ SigV4

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    ring::hmac::sign(&k, data).as_ref().to_vec()
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    super::hex(&sha2::Sha256::digest(data))
}

/// RFC 3986 unreserved characters stay; everything else is `%XX` (upper case), `/` kept when
/// `keep_slash` (object keys in paths).
fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `Authorization` for one request (all `headers` are signed; names lower case).
#[allow(clippy::too_many_arguments)] // the SigV4 inputs, each one named
fn authorization(
    creds: &AwsCredentials,
    region: &str,
    method: &str,
    path: &str,
    query: &[(String, String)],
    headers: &BTreeMap<String, String>,
    amz_date: &str,
    payload_hash: &str,
) -> String {
    let mut q: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
        .collect();
    q.sort();
    let canonical_query = q
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let canonical_headers: String = headers
        .iter()
        .map(|(k, v)| format!("{k}:{}\n", v.trim()))
        .collect();
    let signed: Vec<&str> = headers.keys().map(String::as_str).collect();
    let signed = signed.join(";");
    let canonical = format!(
        "{method}\n{}\n{canonical_query}\n{canonical_headers}\n{signed}\n{payload_hash}",
        uri_encode(path, true)
    );
    let date = &amz_date[..8];
    let scope = format!("{date}/{region}/s3/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical.as_bytes())
    );
    let k = hmac(
        format!("AWS4{}", creds.secret_access_key).as_bytes(),
        date.as_bytes(),
    );
    let k = hmac(&k, region.as_bytes());
    let k = hmac(&k, b"s3");
    let k = hmac(&k, b"aws4_request");
    let signature = super::hex(&hmac(&k, to_sign.as_bytes()));
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
        creds.access_key_id
    )
}

/// `YYYYMMDDTHHMMSSZ` now.
fn amz_date() -> String {
    let stamp = crate::timeutil::rfc3339_millis(crate::timeutil::now_millis());
    // 2026-12-02T18:20:01.123Z -> 20261202T182001Z
    let digits: String = stamp
        .chars()
        .filter(|c| c.is_ascii_digit())
        .take(14)
        .collect();
    format!("{}T{}Z", &digits[..8], &digits[8..14])
}

// ------------------------------------------------------------------ tiny XML reading

/// The text of every `<tag>…</tag>` in `xml`, unescaped.
fn xml_all(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        out.push(xml_unescape(&after[..end]));
        rest = &after[end + close.len()..];
    }
    out
}

fn xml_first(xml: &str, tag: &str) -> Option<String> {
    xml_all(xml, tag).into_iter().next()
}

fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&#34;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

// ------------------------------------------------------------------ the client

/// An S3 error answer: status, `<Code>` and `<Message>`.
#[derive(Debug)]
pub struct S3Error {
    pub status: u16,
    pub code: String,
    pub message: String,
    pub what: String,
}

impl std::fmt::Display for S3Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: S3 answered {} {}",
            self.what, self.status, self.code
        )?;
        if !self.message.is_empty() {
            write!(f, " ({})", self.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for S3Error {}

impl S3Error {
    fn retryable(&self) -> bool {
        // 501: the server lacks the operation (s3s-fs has no ListMultipartUploads)
        matches!(self.status, 408 | 429 | 500 | 502..=599)
            || matches!(
                self.code.as_str(),
                "SlowDown"
                    | "RequestTimeout"
                    | "InternalError"
                    | "BadDigest"
                    | "ServiceUnavailable"
            )
    }

    /// Wrong credentials or permissions, a missing bucket: exit 78 with a hint.
    fn configuration_hint(&self) -> Option<&'static str> {
        match (self.status, self.code.as_str()) {
            (_, "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "InvalidToken" | "ExpiredToken") => {
                Some(CREDENTIALS_HINT)
            }
            (_, "InvalidStorageClass") => Some("set `storage_class` to one the provider offers, or remove it"),
            (_, "NoSuchBucket") => Some("create the bucket, or correct `bucket` (and `region`, `endpoint`) in the target's table"),
            (403, _) | (_, "AccessDenied") => Some("grant the credentials s3:ListBucket, s3:GetObject, s3:PutObject, s3:DeleteObject, s3:AbortMultipartUpload and s3:ListBucketMultipartUploads on the bucket and prefix (README \"S3-compatible storage\")"),
            (301, _) | (_, "PermanentRedirect" | "AuthorizationHeaderMalformed") => Some("set `region` to the bucket's region (and `endpoint` for a provider other than AWS)"),
            _ => None,
        }
    }
}

/// What one request answered.
struct Reply {
    status: u16,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

#[derive(Clone)]
struct Client {
    place: Arc<S3Place>,
    creds: Arc<AwsCredentials>,
    retry: RetryPolicy,
    endpoint: String,
    path_style: bool,
    /// Requests that clean up (aborting an upload, deleting an unverified object) go out also
    /// when the run is stopping, with short waits between their few tries.
    cleanup: bool,
}

enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
}

impl Client {
    fn new(cfg: &S3Config) -> Client {
        let place = cfg.place.clone();
        let endpoint = place
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("https://s3.{}.amazonaws.com", place.region))
            .trim_end_matches('/')
            .to_string();
        let path_style = place.path_style.unwrap_or(place.endpoint.is_some());
        Client {
            place: Arc::new(place),
            creds: Arc::new(cfg.credentials.clone()),
            retry: cfg.retry.clone(),
            endpoint,
            path_style,
            cleanup: false,
        }
    }

    /// Host (for signing) and URL path of `key` (`""`: the bucket).
    fn locate(&self, key: &str) -> (String, String, String) {
        let (scheme, host) = self
            .endpoint
            .split_once("://")
            .unwrap_or(("https", self.endpoint.as_str()));
        if self.path_style {
            (
                format!("{scheme}://{host}"),
                host.to_string(),
                format!("/{}/{key}", self.place.bucket),
            )
        } else {
            let host = format!("{}.{host}", self.place.bucket);
            (format!("{scheme}://{host}"), host, format!("/{key}"))
        }
    }

    /// One signed request, no retries.
    fn once(
        &self,
        method: &str,
        key: &str,
        query: &[(String, String)],
        extra: &BTreeMap<String, String>,
        body: &Body,
        timeouts: Option<(Duration, Duration)>,
    ) -> std::result::Result<Reply, ureq::Error> {
        let (base, host, path) = self.locate(key);
        let bytes: &[u8] = match body {
            Body::Empty => &[],
            Body::Bytes(b) => b,
        };
        let payload_hash = sha256_hex(bytes);
        let date = amz_date();
        let mut headers = extra.clone();
        headers.insert("host".into(), host);
        headers.insert("x-amz-date".into(), date.clone());
        headers.insert("x-amz-content-sha256".into(), payload_hash.clone());
        if let Some(t) = &self.creds.session_token {
            headers.insert("x-amz-security-token".into(), t.clone());
        }
        let auth = authorization(
            &self.creds,
            &self.place.region,
            method,
            &path,
            query,
            &headers,
            &date,
            &payload_hash,
        );
        let mut url = format!("{base}{}", uri_encode(&path, true));
        if !query.is_empty() {
            url.push('?');
            url.push_str(
                &query
                    .iter()
                    .map(|(k, v)| {
                        if v.is_empty() && k == "uploads" {
                            k.clone()
                        } else {
                            format!("{}={}", uri_encode(k, false), uri_encode(v, false))
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("&"),
            );
        }
        let agent = crate::drive::http_agent();
        let mut req = ureq::http::Request::builder().method(method).uri(&url);
        for (k, v) in &headers {
            if k != "host" {
                req = req.header(k.as_str(), v.as_str());
            }
        }
        req = req.header("authorization", auth);
        let request = req.body(bytes.to_vec()).map_err(ureq::Error::Http)?;
        let mut config = agent.configure_request(request);
        if let Some((send, answer)) = timeouts {
            config = config
                .timeout_send_body(Some(send))
                .timeout_recv_response(Some(answer));
        }
        let mut response = agent.run(config.build())?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .filter_map(|(k, v)| {
                Some((
                    k.as_str().to_ascii_lowercase(),
                    v.to_str().ok()?.to_string(),
                ))
            })
            .collect();
        let body = if method == "HEAD" {
            Vec::new()
        } else {
            response
                .body_mut()
                .with_config()
                .limit(manifest::MAX_BYTES)
                .read_to_vec()?
        };
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    /// A request with the project's retry policy: transport failures, 5xx, 429, SlowDown,
    /// RequestTimeout are retried with backoff; any other answer is returned (the caller decides
    /// what 404 means) unless it is an error (>= 300, not `accept`ed).
    #[allow(clippy::too_many_arguments)]
    fn call(
        &self,
        what: &str,
        method: &str,
        key: &str,
        query: &[(String, String)],
        extra: &BTreeMap<String, String>,
        body: Body,
        accept: &[u16],
    ) -> Result<Reply> {
        let mut attempts = Attempts::new(&self.retry);
        let len = match &body {
            Body::Empty => 0,
            Body::Bytes(b) => b.len(),
        };
        let timeouts = (len > 0).then(|| crate::drive::chunk_timeouts(len));
        loop {
            if !self.cleanup {
                crate::signals::check_run()?;
            }
            let failure: anyhow::Error = match self.once(method, key, query, extra, &body, timeouts)
            {
                Ok(reply) if reply.status < 300 || accept.contains(&reply.status) => {
                    // CompleteMultipartUpload may answer 200 with an error document
                    if reply.status == 200
                        && method == "POST"
                        && reply.body.starts_with(b"<?xml")
                        && xml_first(&String::from_utf8_lossy(&reply.body), "Error").is_some()
                    {
                        let e = self.error(what, &reply);
                        if !e.retryable() {
                            return Err(e.into());
                        }
                        e.into()
                    } else {
                        return Ok(reply);
                    }
                }
                Ok(reply) => {
                    let e = self.error(what, &reply);
                    if !e.retryable() {
                        return Err(match e.configuration_hint() {
                            Some(h) => config_error_hint(e.to_string(), h),
                            None => e.into(),
                        });
                    }
                    e.into()
                }
                Err(e) => {
                    if crate::drive::retry::classify_transport(&e)
                        != crate::drive::retry::Verdict::Retry
                    {
                        return Err(anyhow::Error::new(e).context(what.to_string()));
                    }
                    anyhow::Error::new(e).context(what.to_string())
                }
            };
            match attempts.after(crate::drive::retry::Verdict::Retry, None) {
                Next::Backoff(delay) => {
                    crate::log::warn(
                        "S3 request failed; retrying",
                        &[
                            ("what", what.to_string()),
                            ("error", crate::error::render(&failure)),
                            ("retry_in_ms", delay.as_millis().to_string()),
                        ],
                    );
                    if self.cleanup {
                        std::thread::sleep(delay.min(Duration::from_millis(500)));
                    } else {
                        crate::signals::sleep(delay)?;
                    }
                }
                _ => {
                    return Err(
                        failure.context(format!("gave up after {} retries", attempts.retries()))
                    )
                }
            }
        }
    }

    fn error(&self, what: &str, reply: &Reply) -> S3Error {
        let text = String::from_utf8_lossy(&reply.body);
        S3Error {
            status: reply.status,
            code: xml_first(&text, "Code").unwrap_or_else(|| match reply.status {
                404 => "NotFound".into(),
                403 => "AccessDenied".into(),
                s => format!("HTTP{s}"),
            }),
            message: xml_first(&text, "Message").unwrap_or_default(),
            what: what.to_string(),
        }
    }

    /// Every key (with size and time) under `prefix`, all pages.
    fn list_keys(&self, prefix: &str, page_size: u32) -> Result<Vec<(String, u64, Option<i64>)>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut q = vec![
                ("list-type".to_string(), "2".to_string()),
                ("max-keys".to_string(), page_size.to_string()),
                ("prefix".to_string(), prefix.to_string()),
            ];
            if let Some(t) = &token {
                q.push(("continuation-token".into(), t.clone()));
            }
            let text =
                self.bucket_page(&format!("listing s3://{}/{prefix}", self.place.bucket), &q)?;
            for entry in xml_all(&text, "Contents") {
                let Some(key) = xml_first(&entry, "Key") else {
                    continue;
                };
                let size = xml_first(&entry, "Size")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let time = xml_first(&entry, "LastModified")
                    .and_then(|t| crate::timeutil::parse_rfc3339(&t));
                out.push((key, size, time));
            }
            token = xml_first(&text, "NextContinuationToken");
            if xml_first(&text, "IsTruncated").as_deref() != Some("true") || token.is_none() {
                return Ok(out);
            }
        }
    }

    /// This client for cleanup requests (see [`Client::cleanup`]): at most two retries.
    fn for_cleanup(&self) -> Client {
        let mut quick = self.clone();
        quick.retry.max_retries = quick.retry.max_retries.min(2);
        quick.cleanup = true;
        quick
    }

    /// One page of a bucket-level listing (objects, or unfinished uploads), as XML text.
    fn bucket_page(&self, what: &str, query: &[(String, String)]) -> Result<String> {
        let reply = self.call(what, "GET", "", query, &BTreeMap::new(), Body::Empty, &[])?;
        Ok(String::from_utf8_lossy(&reply.body).into_owned())
    }

    fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let reply = self.call(
            &format!("reading s3://{}/{key}", self.place.bucket),
            "GET",
            key,
            &[],
            &BTreeMap::new(),
            Body::Empty,
            &[404],
        )?;
        Ok((reply.status != 404).then_some(reply.body))
    }

    /// The object's size, `None` when there is none.
    fn head(&self, key: &str) -> Result<Option<u64>> {
        let reply = self.call(
            &format!("looking up s3://{}/{key}", self.place.bucket),
            "HEAD",
            key,
            &[],
            &BTreeMap::new(),
            Body::Empty,
            &[404],
        )?;
        if reply.status == 404 {
            return Ok(None);
        }
        Ok(Some(
            reply
                .headers
                .get("content-length")
                .and_then(|l| l.parse().ok())
                .context("S3's HEAD answer has no Content-Length")?,
        ))
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.call(
            &format!("deleting s3://{}/{key}", self.place.bucket),
            "DELETE",
            key,
            &[],
            &BTreeMap::new(),
            Body::Empty,
            &[404],
        )
        .map(|_| ())
    }

    fn put(&self, key: &str, data: &[u8], mut headers: BTreeMap<String, String>) -> Result<()> {
        headers.insert("content-md5".into(), content_md5(data));
        self.call(
            &format!("storing s3://{}/{key}", self.place.bucket),
            "PUT",
            key,
            &[],
            &headers,
            Body::Bytes(data),
            &[],
        )
        .map(|_| ())
    }

    /// Aborts a multipart upload (a few tries: parts still in flight may outlive one abort).
    fn abort_upload(&self, key: &str, upload_id: &str) -> Result<()> {
        self.for_cleanup()
            .call(
                &format!(
                    "aborting the multipart upload of s3://{}/{key}",
                    self.place.bucket
                ),
                "DELETE",
                key,
                &[("uploadId".into(), upload_id.into())],
                &BTreeMap::new(),
                Body::Empty,
                &[404],
            )
            .map(|_| ())
    }

    /// Unfinished multipart uploads under `prefix`: key, upload id, initiated.
    fn pending_uploads(&self, prefix: &str) -> Result<Vec<PendingUpload>> {
        let mut out = Vec::new();
        let mut markers: Option<(String, String)> = None;
        loop {
            let mut q = vec![
                ("uploads".to_string(), String::new()),
                ("prefix".to_string(), prefix.to_string()),
            ];
            if let Some((k, u)) = &markers {
                q.push(("key-marker".into(), k.clone()));
                q.push(("upload-id-marker".into(), u.clone()));
            }
            let text = self.bucket_page(
                &format!(
                    "listing unfinished uploads in s3://{}/{prefix}",
                    self.place.bucket
                ),
                &q,
            )?;
            for u in xml_all(&text, "Upload") {
                if let (Some(key), Some(upload_id)) =
                    (xml_first(&u, "Key"), xml_first(&u, "UploadId"))
                {
                    out.push(PendingUpload {
                        key,
                        upload_id,
                        initiated_ms: xml_first(&u, "Initiated")
                            .and_then(|t| crate::timeutil::parse_rfc3339(&t)),
                    });
                }
            }
            if xml_first(&text, "IsTruncated").as_deref() != Some("true") {
                return Ok(out);
            }
            match (
                xml_first(&text, "NextKeyMarker"),
                xml_first(&text, "NextUploadIdMarker"),
            ) {
                (Some(k), Some(u)) => markers = Some((k, u)),
                _ => return Ok(out),
            }
        }
    }
}

fn content_md5(data: &[u8]) -> String {
    use base64::Engine as _;
    use md5::Digest as _;
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(data))
}

/// A multipart upload nobody completed or aborted.
#[derive(Clone, Debug)]
pub struct PendingUpload {
    pub key: String,
    pub upload_id: String,
    pub initiated_ms: Option<i64>,
}

// ------------------------------------------------------------------ the target

pub struct S3Target {
    name: String,
    client: Client,
    page_size: u32,
}

/// How long an unfinished multipart upload of pgdrive's must have been left before a backup run
/// aborts it (a run that is still going is never that old: the stall watchdog ends it first).
pub const STALE_UPLOAD_AFTER: Duration = Duration::from_secs(24 * 3600);

impl S3Target {
    /// Built by [`super::open`].
    pub fn from_config(name: String, cfg: S3Config) -> S3Target {
        S3Target {
            name,
            client: Client::new(&cfg),
            page_size: cfg.page_size.clamp(1, 1000),
        }
    }

    fn prefix(&self) -> &str {
        &self.client.place.prefix
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix())
    }

    /// Every unfinished multipart upload under the prefix, pgdrive's or not.
    pub fn unfinished_uploads(&mut self) -> Result<Vec<PendingUpload>> {
        let prefix = self.prefix().to_string();
        self.client.pending_uploads(&prefix)
    }

    /// Whether the upload of `key` is one of pgdrive's backups (see [`is_pgdrives_upload`]).
    fn owns_upload(&self, key: &str) -> bool {
        key.strip_prefix(self.prefix())
            .is_some_and(is_pgdrives_upload)
    }

    /// Unfinished multipart uploads under the prefix that are pgdrive's (see
    /// [`is_pgdrives_upload`]) and older than `older_than`; aborted when `abort`.
    pub fn stale_uploads(
        &mut self,
        older_than: Duration,
        abort: bool,
    ) -> Result<Vec<PendingUpload>> {
        let now = crate::timeutil::now_millis();
        let mut stale = Vec::new();
        for u in self.unfinished_uploads()? {
            let own = self.owns_upload(&u.key);
            let old = u
                .initiated_ms
                .is_some_and(|t| now - t >= older_than.as_millis() as i64);
            if !own || !old {
                continue;
            }
            if abort {
                self.client.abort_upload(&u.key, &u.upload_id)?;
                crate::log::info(
                    "aborted an unfinished multipart upload an interrupted backup left",
                    &[("key", u.key.clone())],
                );
            }
            stale.push(u);
        }
        Ok(stale)
    }

    /// `check`: credentials and bucket (a listing), a write and delete probe, and the unfinished
    /// multipart uploads under the prefix (listed, never aborted here).
    pub fn check(&mut self, subject: &str) -> Vec<crate::health::Finding> {
        use crate::health::Finding;
        let mut out = Vec::new();
        if let Err(e) = self.check_readable() {
            out.push(Finding::from_error(subject, &e));
            return out;
        }
        let probe = self.key(&format!(
            ".pgdrive-check-probe-{}-{}",
            crate::host::host_name(),
            std::process::id()
        ));
        let probed = self
            .client
            .put(
                &probe,
                b"pgdrive check probe\n",
                self.client.place.encryption_headers(),
            )
            .context("writing a probe object")
            .and_then(|()| {
                self.client
                    .delete(&probe)
                    .context("deleting the probe object")
            });
        out.push(match probed {
            Ok(()) => Finding::ok(
                subject,
                format!("{} can be listed, written and deleted", self.describe()),
            ),
            Err(e) => Finding::from_error(subject, &e),
        });
        match self.unfinished_uploads() {
            Ok(all) if all.is_empty() => {}
            Ok(all) => {
                let (own, foreign): (Vec<_>, Vec<_>) =
                    all.iter().partition(|u| self.owns_upload(&u.key));
                let keys = |v: &[&PendingUpload]| {
                    v.iter()
                        .map(|u| u.key.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let mut detail = format!(
                    "{} unfinished multipart upload(s) under {} (their parts are billed)",
                    all.len(),
                    self.describe()
                );
                if !own.is_empty() {
                    detail.push_str(&format!("; pgdrive's: {}", keys(&own)));
                }
                if !foreign.is_empty() {
                    detail.push_str(&format!("; not pgdrive's: {}", keys(&foreign)));
                }
                out.push(Finding::warn(
                    subject,
                    detail,
                    Some("a backup run aborts pgdrive's own once they are a day old, never another tool's; add an AbortIncompleteMultipartUpload lifecycle rule to the bucket as well".into()),
                ));
            }
            Err(e) => out.push(Finding::from_error(subject, &e)),
        }
        out
    }

    /// Stores `data` at `key` (relative to the bucket) as another tool would: no manifest, no
    /// metadata (tests plant foreign objects with it).
    pub fn put_raw(&mut self, key: &str, data: &[u8]) -> Result<()> {
        self.client.put(key, data, BTreeMap::new())
    }

    /// Every key under the prefix (for tests and `check`).
    pub fn keys(&mut self) -> Result<Vec<String>> {
        Ok(self
            .client
            .list_keys(self.prefix(), self.page_size)?
            .into_iter()
            .map(|(k, _, _)| k)
            .collect())
    }

    /// The size of the largest backup on this target of the same job (or kind) and database as
    /// `properties` describe: the hint [`choose_part_size`] grows the part size from. A listing
    /// that fails costs only the hint.
    fn largest_earlier(&mut self, properties: &BTreeMap<String, String>) -> Option<u64> {
        use super::props;
        let selector: BTreeMap<String, String> = [props::JOB, props::KIND, props::DATABASE]
            .iter()
            .filter_map(|k| Some((k.to_string(), properties.get(*k)?.clone())))
            .collect();
        match self.list(&selector) {
            Ok(listed) => listed.iter().filter_map(|l| l.size).max(),
            Err(e) => {
                crate::log::warn(
                    "could not list earlier backups to size the upload's parts; using the configured part size",
                    &[("error", crate::error::render(&e))],
                );
                None
            }
        }
    }

    fn read_manifest(&self, name: &str) -> Result<Option<manifest::Manifest>> {
        let Some(bytes) = self
            .client
            .get_bytes(&self.key(&format!("{name}{}", manifest::SUFFIX)))?
        else {
            return Ok(None);
        };
        Ok(serde_json::from_slice(&bytes)
            .ok()
            .and_then(|v| manifest::parse(&v))
            .filter(|m| m.id == name && m.name == name))
    }
}

/// A name pgdrive gives a backup: one path segment, not hidden, not a manifest.
fn is_backup_name(name: &str) -> bool {
    !name.is_empty()
        && !name.contains('/')
        && !name.starts_with('.')
        && !name.ends_with(manifest::SUFFIX)
}

/// Whether an unfinished upload's name (below the prefix) is one pgdrive starts: a backup's name
/// with the `-YYYYMMDDTHHMMSSZ.` stamp every backup and globals name carries. ListMultipartUploads
/// tells no metadata, so the name is all there is to tell pgdrive's from another tool's.
fn is_pgdrives_upload(name: &str) -> bool {
    is_backup_name(name)
        && name.as_bytes().windows(18).any(|w| {
            w[0] == b'-'
                && w[1..9].iter().all(u8::is_ascii_digit)
                && w[9] == b'T'
                && w[10..16].iter().all(u8::is_ascii_digit)
                && w[16] == b'Z'
                && w[17] == b'.'
        })
}

fn refuse_id(id: &str) -> Result<()> {
    if !is_backup_name(id) {
        bail!("{id:?} is not the name of a backup");
    }
    Ok(())
}

impl Target for S3Target {
    fn name(&self) -> &str {
        &self.name
    }

    fn backend(&self) -> Backend {
        Backend::S3
    }

    fn capabilities(&self) -> Capabilities {
        CAPABILITIES
    }

    fn describe(&self) -> String {
        format!(
            "S3 bucket s3://{}/{}",
            self.client.place.bucket,
            self.prefix()
        )
    }

    fn preflight(&mut self) -> Result<()> {
        // credentials, bucket, and the right to list
        self.client
            .list_keys(self.prefix(), 1)
            .map(|_| ())
            .with_context(|| format!("reading {}", self.describe()))?;
        if let Err(e) = self.stale_uploads(STALE_UPLOAD_AFTER, true) {
            // a leftover that cannot be aborted must not cost the backup
            crate::log::warn(
                "could not abort the multipart uploads interrupted backups left",
                &[("error", crate::error::render(&e))],
            );
        }
        Ok(())
    }

    fn begin<'s>(
        &'s mut self,
        name: &str,
        mime_type: &str,
        properties: &BTreeMap<String, String>,
        chunk_size: usize,
    ) -> Result<Box<dyn Upload + Send + 's>> {
        refuse_id(name)?;
        let key = self.key(name);
        if self.client.head(&key)?.is_some() {
            bail!(
                "s3://{}/{key} already exists; refusing to overwrite it",
                self.client.place.bucket
            );
        }
        let place = &self.client.place;
        let mut headers = place.encryption_headers();
        headers.insert("content-type".into(), mime_type.to_string());
        if let Some(c) = &place.storage_class {
            headers.insert("x-amz-storage-class".into(), c.clone());
        }
        // metadata is set once, at creation: the initial properties only (the manifest holds all)
        for (k, v) in properties {
            headers.insert(
                format!("x-amz-meta-{}", k.replace('_', "-")),
                crate::redact::percent_encode(v, false),
            );
        }
        let floor = place.part_size.unwrap_or(chunk_size as u64);
        let largest = self.largest_earlier(properties);
        let part_size = usize::try_from(choose_part_size(floor, largest)).unwrap_or(usize::MAX);
        crate::log::info(
            "S3 part size chosen",
            &[
                ("key", key.clone()),
                ("part_size", part_size.to_string()),
                (
                    "largest_earlier",
                    largest.map_or("none".into(), |l| l.to_string()),
                ),
                (
                    "ceiling",
                    crate::units::human_bytes(part_size as u64 * MAX_PARTS),
                ),
            ],
        );
        Ok(Box::new(S3Upload {
            client: self.client.clone(),
            target: self.name.clone(),
            name: name.to_string(),
            key,
            headers,
            part_size,
            buf: Vec::new(),
            upload_id: None,
            parts: Vec::new(),
            hasher: Hasher::default(),
            properties: properties.clone(),
        }))
    }

    fn list(&mut self, selector: &BTreeMap<String, String>) -> Result<Vec<Listed>> {
        let prefix = self.prefix().to_string();
        let keys = self.client.list_keys(&prefix, self.page_size)?;
        let objects: BTreeMap<String, (u64, Option<i64>)> = keys
            .iter()
            .filter_map(|(k, size, t)| Some((k.strip_prefix(&prefix)?.to_string(), (*size, *t))))
            .collect();
        let mut out = Vec::new();
        for name in objects.keys() {
            let Some(backup) = name.strip_suffix(manifest::SUFFIX) else {
                continue;
            };
            if !is_backup_name(backup) {
                continue;
            }
            let Some(&(size, time)) = objects.get(backup) else {
                continue; // a manifest whose backup is gone
            };
            let Some(m) = self.read_manifest(backup)? else {
                continue;
            };
            if !selector.iter().all(|(k, v)| m.properties.get(k) == Some(v)) {
                continue;
            }
            out.push(Listed {
                id: backup.to_string(),
                name: backup.to_string(),
                created_ms: m.created_ms.or(time),
                size: Some(size),
                properties: m.properties,
            });
        }
        Ok(out)
    }

    fn delete(&mut self, id: &str) -> Result<()> {
        refuse_id(id)?;
        // the backup first: a manifest left behind names nothing and is never listed
        self.client.delete(&self.key(id))?;
        if let Err(e) = self
            .client
            .delete(&self.key(&format!("{id}{}", manifest::SUFFIX)))
        {
            crate::log::warn(
                "could not delete the manifest of a deleted backup",
                &[
                    ("backup", id.to_string()),
                    ("error", crate::error::render(&e)),
                ],
            );
        }
        Ok(())
    }

    fn check_readable(&mut self) -> Result<()> {
        self.client
            .list_keys(self.prefix(), 1)
            .map(|_| ())
            .with_context(|| format!("reading {}", self.describe()))
    }

    fn get(&mut self, id: &str) -> Result<Found> {
        refuse_id(id)?;
        let not_found = || {
            config_error_hint(
                format!("no backup {id} (with its manifest) in {}", self.describe()),
                "take the name from `pgdrive list --target NAME`",
            )
        };
        let size = self.client.head(&self.key(id))?.ok_or_else(not_found)?;
        let m = self.read_manifest(id)?.ok_or_else(not_found)?;
        Ok(Found {
            listed: Listed {
                id: id.to_string(),
                name: id.to_string(),
                created_ms: m.created_ms,
                size: Some(size),
                properties: m.properties.clone(),
            },
            row_counts: m.row_counts.clone(),
            manifest: Some(m),
        })
    }

    /// The manifest object is the record (metadata cannot change after creation): it is
    /// replaced whole by one PutObject, which S3 makes visible atomically (a reader sees the old
    /// document or the new one), checked by its Content-MD5, then read back to confirm the pin.
    fn set_pinned(&mut self, id: &str, pinned: bool) -> Result<()> {
        let found = self.get(id)?;
        let mut document = found
            .manifest
            .context("the backup has no manifest")?
            .document;
        manifest::set_pinned(&mut document, pinned)?;
        self.client
            .put(
                &self.key(&format!("{id}{}", manifest::SUFFIX)),
                serde_json::to_string_pretty(&document)?.as_bytes(),
                BTreeMap::from([("content-type".to_string(), manifest::MIME_TYPE.to_string())]),
            )
            .context("rewriting the manifest")?;
        let seen = self
            .read_manifest(id)?
            .is_some_and(|m| crate::retention::is_pinned_in(&m.properties) == pinned);
        if !seen {
            bail!("the rewritten manifest of {id} does not read back as written");
        }
        Ok(())
    }

    fn location(&self, id: &str) -> String {
        format!("s3://{}/{}", self.client.place.bucket, self.key(id))
    }

    fn open_at<'s>(
        &'s mut self,
        id: &str,
        offset: u64,
        size: Option<u64>,
    ) -> Result<Box<dyn Read + 's>> {
        refuse_id(id)?;
        let size = match size {
            Some(s) => s,
            None => self
                .client
                .head(&self.key(id))?
                .with_context(|| format!("{} has no object {id}", self.describe()))?,
        };
        Ok(Box::new(RangedGet {
            client: self.client.clone(),
            key: self.key(id),
            offset,
            size,
            body: None,
            drops: 0,
        }))
    }
}

/// A GET from `offset` to the end, re-requested from where it broke off after a dropped
/// connection (a few times in a row at most).
struct RangedGet {
    client: Client,
    key: String,
    offset: u64,
    size: u64,
    body: Option<Box<dyn Read + Send>>,
    drops: u32,
}

impl RangedGet {
    fn request(&mut self) -> Result<Box<dyn Read + Send>> {
        let (base, host, path) = self.client.locate(&self.key);
        let date = amz_date();
        let payload_hash = sha256_hex(b"");
        let mut headers = BTreeMap::from([
            ("host".to_string(), host),
            ("x-amz-date".to_string(), date.clone()),
            ("x-amz-content-sha256".to_string(), payload_hash.clone()),
            ("range".to_string(), format!("bytes={}-", self.offset)),
        ]);
        if let Some(t) = &self.client.creds.session_token {
            headers.insert("x-amz-security-token".into(), t.clone());
        }
        let auth = authorization(
            &self.client.creds,
            &self.client.place.region,
            "GET",
            &path,
            &[],
            &headers,
            &date,
            &payload_hash,
        );
        let mut req = crate::drive::http_agent().get(format!("{base}{}", uri_encode(&path, true)));
        for (k, v) in &headers {
            if k != "host" {
                req = req.header(k.as_str(), v.as_str());
            }
        }
        let response = req.header("authorization", auth).call()?;
        let status = response.status().as_u16();
        if status != 206 && status != 200 {
            let mut body = Vec::new();
            let _ = response
                .into_body()
                .into_reader()
                .take(64 << 10)
                .read_to_end(&mut body);
            let reply = Reply {
                status,
                headers: BTreeMap::new(),
                body,
            };
            return Err(self
                .client
                .error(
                    &format!("reading s3://{}/{}", self.client.place.bucket, self.key),
                    &reply,
                )
                .into());
        }
        if status == 200 && self.offset > 0 {
            bail!("the server ignored the byte range of a resumed download");
        }
        Ok(Box::new(response.into_body().into_reader()))
    }
}

impl Read for RangedGet {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if self.offset >= self.size || buf.is_empty() {
                return Ok(0);
            }
            if self.body.is_none() {
                crate::signals::check_run().map_err(std::io::Error::other)?;
                match self.request() {
                    Ok(b) => self.body = Some(b),
                    Err(e)
                        if self.drops < 5
                            && crate::error::classify(&e)
                                == crate::error::ExitStatus::Unavailable =>
                    {
                        self.drops += 1;
                        std::thread::sleep(Duration::from_millis(200 << self.drops));
                        continue;
                    }
                    Err(e) => return Err(std::io::Error::other(e)),
                }
            }
            let want = buf.len().min((self.size - self.offset) as usize);
            match self.body.as_mut().expect("opened").read(&mut buf[..want]) {
                Ok(0) | Err(_) if self.drops < 5 => {
                    // ended early, or broke: ask again from here
                    self.drops += 1;
                    self.body = None;
                }
                Ok(0) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!(
                            "s3://{} ended at byte {} of {}",
                            self.key, self.offset, self.size
                        ),
                    ))
                }
                Ok(n) => {
                    self.offset += n as u64;
                    self.drops = 0;
                    return Ok(n);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

struct S3Upload {
    client: Client,
    target: String,
    name: String,
    key: String,
    /// Content type, storage class, encryption, metadata: sent when the object is created.
    headers: BTreeMap<String, String>,
    part_size: usize,
    buf: Vec<u8>,
    upload_id: Option<String>,
    /// Part number and ETag of every part sent.
    parts: Vec<(u32, String)>,
    hasher: Hasher,
    properties: BTreeMap<String, String>,
}

impl S3Upload {
    fn what(&self) -> String {
        format!("s3://{}/{}", self.client.place.bucket, self.key)
    }

    fn create(&mut self) -> Result<String> {
        let reply = self.client.call(
            &format!("starting the multipart upload of {}", self.what()),
            "POST",
            &self.key,
            &[("uploads".into(), String::new())],
            &self.headers,
            Body::Empty,
            &[],
        )?;
        let id = xml_first(&String::from_utf8_lossy(&reply.body), "UploadId")
            .context("S3's CreateMultipartUpload answer has no UploadId")?;
        self.upload_id = Some(id.clone());
        Ok(id)
    }

    /// Sends the first `len` buffered bytes as the next part.
    fn send_part(&mut self, len: usize) -> Result<()> {
        let upload_id = match &self.upload_id {
            Some(id) => id.clone(),
            None => self.create()?,
        };
        let number = self.parts.len() as u32 + 1;
        if u64::from(number) > MAX_PARTS {
            return Err(config_error_hint(
                format!(
                    "{} needs more than {MAX_PARTS} parts of {} bytes (a ceiling of {})",
                    self.what(),
                    self.part_size,
                    crate::units::human_bytes(self.part_size as u64 * MAX_PARTS)
                ),
                "raise this target's part_size: an S3 object holds at most 10,000 parts, and pgdrive grows the part size only from the largest earlier backup of the job and database (×4)",
            ));
        }
        let part = &self.buf[..len];
        let headers = BTreeMap::from([("content-md5".to_string(), content_md5(part))]);
        let reply = self.client.call(
            &format!("uploading part {number} of {}", self.what()),
            "PUT",
            &self.key,
            &[
                ("partNumber".into(), number.to_string()),
                ("uploadId".into(), upload_id),
            ],
            &headers,
            Body::Bytes(part),
            &[],
        )?;
        let etag = reply
            .headers
            .get("etag")
            .cloned()
            .context("S3's UploadPart answer has no ETag")?;
        self.parts.push((number, etag));
        self.buf.drain(..len);
        crate::signals::progress();
        Ok(())
    }

    fn complete(&mut self, done: &Completion) -> Result<()> {
        let mine = self.hasher.clone().finish();
        if mine != done.digest {
            bail!(
                "pgdrive sent {} bytes with MD5 {} to {}, but the stream's digest says {} bytes with MD5 {}",
                mine.size, mine.md5, self.what(), done.digest.size, done.digest.md5
            );
        }
        if self.upload_id.is_none() {
            let data = std::mem::take(&mut self.buf);
            self.client.put(&self.key, &data, self.headers.clone())?;
        } else {
            if !self.buf.is_empty() || self.parts.is_empty() {
                self.send_part(self.buf.len())?;
            }
            let body = format!(
                "<CompleteMultipartUpload>{}</CompleteMultipartUpload>",
                self.parts
                    .iter()
                    .map(|(n, e)| format!(
                        "<Part><PartNumber>{n}</PartNumber><ETag>{}</ETag></Part>",
                        xml_escape(e)
                    ))
                    .collect::<String>()
            );
            let upload_id = self.upload_id.clone().expect("created");
            self.client.call(
                &format!("completing the multipart upload of {}", self.what()),
                "POST",
                &self.key,
                &[("uploadId".into(), upload_id)],
                &BTreeMap::from([("content-type".to_string(), "application/xml".to_string())]),
                Body::Bytes(body.as_bytes()),
                &[],
            )?;
            self.upload_id = None; // completed: nothing to abort any more
        }
        let stored = self.client.head(&self.key)?;
        if stored != Some(done.digest.size) {
            bail!(
                "{} holds {} bytes after the upload, but pgdrive sent {}",
                self.what(),
                stored.map_or("no".to_string(), |s| s.to_string()),
                done.digest.size
            );
        }
        let mut properties = self.properties.clone();
        properties.extend(done.properties.clone());
        let m = manifest::build_for(&self.name, &self.name, &properties, done);
        // encrypted as the backup, in the bucket's default class: listings read every manifest
        let mut headers = self.client.place.encryption_headers();
        headers.insert("content-type".into(), manifest::MIME_TYPE.to_string());
        self.client
            .put(
                &format!("{}{}", self.key, manifest::SUFFIX),
                serde_json::to_string_pretty(&m)?.as_bytes(),
                headers,
            )
            .context("storing the manifest")
    }

    /// Aborts the multipart upload, if one is open.
    fn cancel(&mut self) {
        if let Some(id) = self.upload_id.take() {
            if let Err(e) = self.client.abort_upload(&self.key, &id) {
                crate::log::warn(
                    "could not abort the multipart upload; `pgdrive check` lists it and a later backup aborts it",
                    &[("key", self.key.clone()), ("error", crate::error::render(&e))],
                );
            }
        }
    }
}

impl Upload for S3Upload {
    fn write(&mut self, data: bytes::Bytes) -> Result<()> {
        self.hasher.update(&data);
        self.buf.extend_from_slice(&data);
        // a part is sent once more follows it, so the last part is never empty
        while self.buf.len() > self.part_size {
            if let Err(e) = self.send_part(self.part_size) {
                self.cancel();
                return Err(e);
            }
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>, done: &Completion) -> Result<StoredObject> {
        if let Err(e) = self.complete(done) {
            self.cancel();
            // never leave an unverified object that looks like a backup
            if let Err(del) = self.client.for_cleanup().delete(&self.key) {
                return Err(e.context(format!(
                    "and deleting {} failed too ({del:#}): delete it by hand",
                    self.what()
                )));
            }
            return Err(e.context(format!("storing {}", self.what())));
        }
        Ok(StoredObject {
            target: self.target.clone(),
            backend: Backend::S3,
            id: self.name.clone(),
            name: self.name.clone(),
            location: self.what(),
            metadata_failure: None,
        })
    }

    fn abort(mut self: Box<Self>) {
        self.cancel();
    }
}

impl Drop for S3Upload {
    fn drop(&mut self) {
        self.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_the_aws_example_request() {
        // AWS SigV4 documentation example: GET /test.txt with a Range header, examplebucket
        let creds = AwsCredentials {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
            source: "test".into(),
        };
        let empty = sha256_hex(b"");
        let headers = BTreeMap::from([
            (
                "host".to_string(),
                "examplebucket.s3.amazonaws.com".to_string(),
            ),
            ("range".to_string(), "bytes=0-9".to_string()),
            ("x-amz-content-sha256".to_string(), empty.clone()),
            ("x-amz-date".to_string(), "20130524T000000Z".to_string()),
        ]);
        let auth = authorization(
            &creds,
            "us-east-1",
            "GET",
            "/test.txt",
            &[],
            &headers,
            "20130524T000000Z",
            &empty,
        );
        assert!(
            auth.ends_with(
                "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
            ),
            "{auth}"
        );
        assert!(auth.contains("SignedHeaders=host;range;x-amz-content-sha256;x-amz-date"));
    }

    #[test]
    fn part_size_grows_from_the_largest_earlier_backup_and_stays_within_s3s_limits() {
        const MIB: u64 = 1 << 20;
        const GIB: u64 = 1 << 30;
        // no history, or a small one: the floor, raised to S3's minimum
        assert_eq!(choose_part_size(8 * MIB, None), 8 * MIB);
        assert_eq!(choose_part_size(MIB, None), 5 * MIB);
        assert_eq!(choose_part_size(8 * MIB, Some(10 * GIB)), 8 * MIB);
        // 2 TiB last time: 4 × 2 TiB over 10,000 parts, rounded up to whole MiB
        let tib2 = 2 << 40;
        let p = choose_part_size(8 * MIB, Some(tib2));
        assert_eq!(p % MIB, 0);
        assert!(p * MAX_PARTS >= 4 * tib2, "{p}");
        assert!((p - MIB) * MAX_PARTS < 4 * tib2, "not the smallest: {p}");
        assert_eq!(p, 839 * MIB);
        // a larger floor wins over a smaller need
        assert_eq!(choose_part_size(GIB, Some(tib2)), GIB);
        // beyond what S3 allows: 5 GiB parts (a 48 TiB ceiling), no overflow
        assert_eq!(choose_part_size(8 * MIB, Some(100 << 40)), MAX_PART);
        assert_eq!(choose_part_size(u64::MAX, Some(u64::MAX)), MAX_PART);
    }

    #[test]
    fn reads_profiles_and_xml() {
        let text = "[default]\naws_access_key_id = A\n[profile ci]\naws_access_key_id=B\naws_secret_access_key = S\n";
        assert_eq!(
            profile_section(text, "ci")
                .get("aws_access_key_id")
                .map(String::as_str),
            Some("B")
        );
        assert_eq!(profile_section(text, "default").len(), 1);
        let xml = "<R><Contents><Key>a&amp;b</Key></Contents><Contents><Key>c</Key></Contents></R>";
        assert_eq!(xml_all(xml, "Key"), vec!["a&b", "c"]);
        assert_eq!(S3Place::normalized_prefix("/pg/db/"), "pg/db/");
        assert_eq!(S3Place::normalized_prefix(""), "");
        assert!(is_pgdrives_upload("shop-daily-20261202T030000Z.sql.gz"));
        assert!(is_pgdrives_upload(
            "nightly-globals-20261202T030000Z.sql.age"
        ));
        assert!(!is_pgdrives_upload("shop-daily-x.sql.gz"));
        assert!(!is_pgdrives_upload(
            "tools/shop-daily-20261202T030000Z.sql.gz"
        ));
        assert!(!is_pgdrives_upload("export-20261202T0300Z.tar"));
        assert!(
            is_backup_name("shop-daily-x.sql.gz")
                && !is_backup_name("a/b")
                && !is_backup_name("x.manifest.json")
        );
    }
}
