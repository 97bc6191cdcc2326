//! Google Drive v3, the small part pgdrive uses: folder lookup, the resumable upload session,
//! listing by `appProperties`, metadata updates, permanent deletion and ranged downloads. One HTTP stack (ureq,
//! blocking, redirects off so Drive's "308 Resume Incomplete" is seen as what it is) and one retry
//! classifier ([`retry`]) serve every call.
//!
//! google-drive3 is not used: its uploads need a seekable input of known size and its resume path
//! mis-parses Drive's `Range: bytes=0-N`; for the four JSON calls left it would add a second, async
//! HTTP stack and about 40 s to a clean release build. Base URLs are configuration
//! (`PGDRIVE_DRIVE_URL`), never hard-coded into paths, so an emulator can stand in for Google.

pub mod auth;
pub mod download;
pub mod retry;
pub mod upload;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};

use auth::TokenSource;
use retry::{
    classify_status, classify_transport, parse_retry_after, Attempts, Next, RetryPolicy, Verdict,
};

pub const FOLDER_MIME: &str = "application/vnd.google-apps.folder";

/// The HTTP agent every outbound call uses. Status codes are not errors (Google's JSON error
/// bodies are read), and redirects are never followed (a 308 is Drive's "resume incomplete").
///
/// One agent serves the whole process, registered with [`crate::signals::cut_on_stop`] so that a
/// signal or a stall cuts whatever request is in flight. Once the run is stopping, each call gets
/// a fresh agent whose requests are bounded by [`crate::signals::CLEANUP_TIMEOUT`] (cancelling the
/// upload session, notifications), so the cleanup cannot hang either.
pub fn http_agent() -> ureq::Agent {
    static SHARED: std::sync::OnceLock<ureq::Agent> = std::sync::OnceLock::new();
    if crate::signals::stopping() {
        return agent_config()
            .timeout_global(Some(crate::signals::CLEANUP_TIMEOUT))
            .build()
            .new_agent();
    }
    SHARED
        .get_or_init(|| {
            let agent = agent_config().build().new_agent();
            crate::signals::cut_on_stop(agent.clone());
            agent
        })
        .clone()
}

/// The timeouts of JSON calls (small bodies). Upload chunks set their own, scaled to the chunk
/// ([`chunk_timeouts`]); downloads re-request a body that outlives `timeout_recv_body`.
fn agent_config() -> ureq::config::ConfigBuilder<ureq::typestate::AgentScope> {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent(concat!("pgdrive/", env!("CARGO_PKG_VERSION")))
        .timeout_connect(Some(Duration::from_secs(15)))
        .timeout_recv_response(Some(Duration::from_secs(120)))
        .timeout_recv_body(Some(Duration::from_secs(300)))
        .timeout_send_body(Some(Duration::from_secs(60)))
}

/// The slowest link an upload chunk is given time for, and the fixed allowance on top.
const MIN_UPLOAD_BYTES_PER_S: u64 = 64 << 10;
const CHUNK_TIMEOUT_FLOOR: Duration = Duration::from_secs(20);

/// Send-body and response timeouts for a chunk of `len` bytes: a floor plus the time the chunk
/// takes at [`MIN_UPLOAD_BYTES_PER_S`] (8 MiB: 148 s), and a minute for Drive's answer.
pub fn chunk_timeouts(len: usize) -> (Duration, Duration) {
    let send = CHUNK_TIMEOUT_FLOOR + Duration::from_secs(len as u64 / MIN_UPLOAD_BYTES_PER_S);
    (send, Duration::from_secs(60))
}

/// An error answer from Drive, with Google's reason code.
#[derive(Debug, Clone)]
pub struct DriveError {
    pub status: u16,
    pub reason: Option<String>,
    pub message: String,
    pub retry_after: Option<Duration>,
}

impl std::fmt::Display for DriveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Drive answered HTTP {}", self.status)?;
        if let Some(r) = &self.reason {
            write!(f, " {r}")?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for DriveError {}

impl DriveError {
    /// Parses Google's error body `{"error": {"code", "message", "errors": [{"reason"}]}}`.
    pub fn from_response(status: u16, body: &[u8], retry_after: Option<Duration>) -> DriveError {
        let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let err = &json["error"];
        let reason = err["errors"][0]["reason"]
            .as_str()
            .or_else(|| err["status"].as_str())
            .map(str::to_string);
        let message = err["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| {
                String::from_utf8_lossy(&body[..body.len().min(200)])
                    .trim()
                    .to_string()
            });
        DriveError {
            status,
            reason,
            message,
            retry_after,
        }
    }

    pub fn verdict(&self) -> Verdict {
        classify_status(self.status, self.reason.as_deref())
    }

    /// Whether Drive said "try later" (5xx, 429, a rate limit, `backendError`): retried, and
    /// after the last retry a transient failure (exit 69), not a broken backup. The daily API
    /// quota (`dailyLimitExceeded`) is not retried within a run, but it too passes.
    pub fn is_transient(&self) -> bool {
        self.verdict() == Verdict::Retry || self.reason.as_deref() == Some("dailyLimitExceeded")
    }

    /// Since April 2025 service accounts own no Drive storage: this is their error.
    pub fn is_service_account_quota(&self) -> bool {
        self.reason.as_deref() == Some("storageQuotaExceeded")
            && self.message.contains("Service Accounts")
    }

    /// Whether the fix is in the setup (exit 78), not a retry: no Drive storage for a service
    /// account, the Drive API disabled (or no quota project for user credentials), or a token
    /// whose scopes do not cover Drive.
    pub fn is_configuration_problem(&self) -> bool {
        self.is_service_account_quota()
            || matches!(
                self.reason.as_deref(),
                Some("accessNotConfigured" | "insufficientPermissions")
            )
    }

    pub fn hint(&self) -> Option<String> {
        let hint = match self.reason.as_deref() {
            _ if self.is_service_account_quota() => {
                "a service account has no Drive storage of its own. Fix it one of three ways: \
                 (1) put the folder in a shared drive and add the service account as Manager; \
                 (2) use domain-wide delegation and set GOOGLE_IMPERSONATE_USER=person@yourdomain; \
                 (3) use OAuth user credentials (an authorized_user JSON in GOOGLE_APPLICATION_CREDENTIALS)"
            }
            Some("storageQuotaExceeded" | "quotaExceeded") => {
                "the Drive is full: free space (files in Trash still count), lower the keep counts, or buy storage"
            }
            Some("notFound") => {
                "check the ID, and that the folder is shared with the account pgdrive authenticates as \
                 (directly, or as a member of its shared drive)"
            }
            Some("insufficientFilePermissions") => {
                "the account lacks permission: in a shared drive it must be a Manager to delete permanently \
                 (Content managers can only move to Trash) and at least a Contributor to upload"
            }
            Some("accessNotConfigured") => {
                "the Drive API is not enabled for the Cloud project these credentials bill to: enable it \
                 (console.cloud.google.com → APIs & Services → Library → Google Drive API); for user \
                 credentials made by `gcloud auth application-default login`, name your own project with \
                 `gcloud auth application-default set-quota-project PROJECT` (pgdrive sends its \
                 quota_project_id)"
            }
            Some("insufficientPermissions") => {
                "the access token's scopes do not include Drive: grant https://www.googleapis.com/auth/drive \
                 (for domain-wide delegation, in the Admin console's API controls; for user credentials, \
                 log in again with that scope)"
            }
            Some("teamDriveFileLimitExceeded") => {
                "the shared drive holds the most items Google allows (400,000): point the folder \
                 variable at a folder in another shared drive, or delete items from this one"
            }
            Some("downloadQuotaExceeded") => {
                "Google limits how often one file is downloaded per day: try again in a few hours, \
                 or restore from another target or an older backup"
            }
            Some(download::ABUSIVE_FILE) => {
                "Drive flagged the file as malware or spam and serves it only to its owner or a Manager of its shared drive: \
                 make the account a Manager of the shared drive, or download the file in the Drive web page as its owner"
            }
            Some("appNotAuthorizedToFile") => "the credentials' scope does not cover this file; pgdrive needs the full drive scope",
            Some("authError") => "the access token was refused: check the credentials and this host's clock",
            Some("dailyLimitExceeded" | "userRateLimitExceeded" | "rateLimitExceeded") => {
                "Drive's API quota is exhausted for now: the next scheduled run will retry"
            }
            _ => return None,
        };
        Some(hint.to_string())
    }
}

/// A failed attempt: how to treat it, the error to report, and the server's `Retry-After`.
pub struct Failure {
    pub verdict: Verdict,
    pub error: anyhow::Error,
    pub retry_after: Option<Duration>,
}

impl Failure {
    /// Classifies a reply that is not a success, or a transport error.
    pub fn of(outcome: std::result::Result<Reply, ureq::Error>) -> Failure {
        match outcome {
            Ok(reply) => {
                let err = DriveError::from_response(reply.status, &reply.body, reply.retry_after);
                Failure {
                    verdict: err.verdict(),
                    retry_after: err.retry_after,
                    error: anyhow::Error::new(err),
                }
            }
            Err(e) => Failure {
                verdict: classify_transport(&e),
                error: anyhow::Error::new(e),
                retry_after: None,
            },
        }
    }
}

/// What authorizes a request: the bearer token, and for user credentials that name one, the
/// Cloud project billed for the call (`x-goog-user-project`, from `quota_project_id`). Without
/// it, Google bills user credentials made by gcloud to gcloud's own project, where the Drive API
/// is not enabled: every call fails with `accessNotConfigured`.
pub struct Authorization {
    bearer: String,
    user_project: Option<String>,
}

/// Adds an [`Authorization`] to a request.
pub trait Authorize {
    fn authorized(self, auth: &Authorization) -> Self;
}

impl<B> Authorize for ureq::RequestBuilder<B> {
    fn authorized(self, auth: &Authorization) -> Self {
        let req = self.header("Authorization", &auth.bearer);
        match &auth.user_project {
            Some(project) => req.header("x-goog-user-project", project),
            None => req,
        }
    }
}

/// A reply read fully into memory (JSON API calls and upload session answers are small).
pub struct Reply {
    pub status: u16,
    pub range: Option<String>,
    pub location: Option<String>,
    pub retry_after: Option<Duration>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body).context("Drive answered with a body that is not JSON")
    }

    pub(crate) fn from_response(
        mut resp: ureq::http::Response<ureq::Body>,
    ) -> std::result::Result<Reply, ureq::Error> {
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let status = resp.status().as_u16();
        let range = header("range");
        let location = header("location");
        let retry_after = parse_retry_after(header("retry-after").as_deref());
        let body = resp
            .body_mut()
            .with_config()
            .limit(16 << 20)
            .read_to_vec()?;
        Ok(Reply {
            status,
            range,
            location,
            retry_after,
            body,
        })
    }
}

/// A file as pgdrive sees it in a listing.
#[derive(Clone, Debug, PartialEq)]
pub struct RemoteFile {
    pub id: String,
    pub name: String,
    pub size: Option<u64>,
    pub md5: Option<String>,
    pub created_time: Option<String>,
    pub app_properties: BTreeMap<String, String>,
}

impl RemoteFile {
    pub fn from_json(v: &serde_json::Value) -> RemoteFile {
        let s = |k: &str| v[k].as_str().map(str::to_string);
        RemoteFile {
            id: s("id").unwrap_or_default(),
            name: s("name").unwrap_or_default(),
            size: v["size"]
                .as_str()
                .and_then(|x| x.parse().ok())
                .or_else(|| v["size"].as_u64()),
            md5: s("md5Checksum"),
            created_time: s("createdTime"),
            app_properties: v["appProperties"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// Where a listing looks: the account's own files (a My Drive folder), one shared drive, or
/// every drive the account can see.
#[derive(Clone, Copy)]
enum Corpora<'a> {
    User,
    Drive(&'a str),
    AllDrives,
}

/// Whether Drive answered 404 somewhere in this error's chain.
fn is_not_found(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<DriveError>()
            .is_some_and(|d| d.status == 404)
    })
}

/// What pgdrive learns about the destination folder before uploading.
#[derive(Debug)]
pub struct FolderInfo {
    pub name: String,
    pub drive_id: Option<String>,
    pub can_add_children: Option<bool>,
    pub can_delete_children: Option<bool>,
}

pub const FILE_FIELDS: &str =
    "id,name,size,md5Checksum,sha256Checksum,createdTime,mimeType,parents,appProperties";

/// Escapes a string for a single-quoted value in a `files.list` query.
pub fn quote_query_value(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The Drive API client.
pub struct DriveClient {
    agent: ureq::Agent,
    base: String,
    tokens: TokenSource,
    pub retry: RetryPolicy,
    /// Files asked for per `files.list` request.
    page_size: u32,
    /// The shared drive answered 404 to a drive-scoped listing (the account is not a member).
    drive_listing_refused: bool,
}

impl DriveClient {
    pub fn new(base: &str, tokens: TokenSource, retry: RetryPolicy) -> DriveClient {
        DriveClient {
            agent: http_agent(),
            base: base.to_string(),
            tokens,
            retry,
            page_size: 1000,
            drive_listing_refused: false,
        }
    }

    /// Files per listing request, 1 to 1000 (small pages let tests exercise paging).
    pub fn set_page_size(&mut self, n: u32) {
        self.page_size = n.clamp(1, 1000);
    }

    pub fn credentials(&self) -> &auth::Credentials {
        self.tokens.credentials()
    }

    pub(crate) fn api(&self, path: &str) -> String {
        format!("{}drive/v3/{path}", self.base)
    }

    pub fn upload_endpoint(&self) -> String {
        format!("{}upload/drive/v3/files", self.base)
    }

    /// A current access token (fetching or refreshing one as needed).
    pub fn token(&mut self) -> Result<String> {
        self.tokens.token(&self.agent, &self.retry)
    }

    /// A request's authorization with a current access token.
    pub fn authorization(&mut self) -> Result<Authorization> {
        Ok(Authorization {
            bearer: format!("Bearer {}", self.token()?),
            user_project: self.credentials().quota_project().map(str::to_string),
        })
    }

    pub fn invalidate_token(&mut self) {
        self.tokens.invalidate();
    }

    pub fn agent(&self) -> &ureq::Agent {
        &self.agent
    }

    /// Sends one request (built by `send` with the current bearer token) under the retry policy:
    /// transport errors, 5xx, 429 and rate-limit 403s are retried with backoff, a 401 fetches a
    /// new token, anything else is returned as a [`DriveError`].
    pub fn execute(
        &mut self,
        what: &str,
        send: &dyn Fn(
            &ureq::Agent,
            &Authorization,
        )
            -> std::result::Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Reply> {
        let policy = self.retry.clone();
        let mut attempts = Attempts::new(&policy);
        loop {
            crate::signals::check_run()?;
            let auth = self.authorization()?;
            let failure = match send(&self.agent, &auth).and_then(Reply::from_response) {
                Ok(reply) if (200..300).contains(&reply.status) || reply.status == 308 => {
                    return Ok(reply)
                }
                outcome => Failure::of(outcome),
            };
            // a request cut by a signal or the stall watchdog fails: report why, not how
            crate::signals::check_run()?;
            match attempts.after(failure.verdict, failure.retry_after) {
                Next::RefreshToken => {
                    crate::log::debug(
                        "access token refused; fetching a new one",
                        &[("call", what.to_string())],
                    );
                    self.tokens.invalidate();
                }
                Next::Backoff(delay) => {
                    crate::log::debug(
                        "Drive call failed; retrying",
                        &[
                            ("call", what.to_string()),
                            ("error", format!("{:#}", failure.error)),
                            ("delay_ms", delay.as_millis().to_string()),
                        ],
                    );
                    crate::signals::sleep(delay)?;
                }
                Next::GiveUp { exhausted: true } => {
                    return Err(failure.error.context(format!(
                        "{what} (gave up after {} retries)",
                        attempts.retries()
                    )))
                }
                Next::GiveUp { exhausted: false } => {
                    return Err(failure.error.context(what.to_string()))
                }
            }
        }
    }

    /// Looks up the destination folder; a missing folder, or an ID that is not a folder, is a
    /// configuration error.
    pub fn folder(&mut self, id: &str) -> Result<FolderInfo> {
        let url = self.api(&format!("files/{}", urlencode_path(id)));
        let reply = self.execute(&format!("looking up Drive folder {id}"), &|agent, auth| {
            agent
                .get(&url)
                .authorized(auth)
                .query("supportsAllDrives", "true")
                .query("fields", "id,name,mimeType,driveId,trashed,capabilities(canAddChildren,canDeleteChildren,canDelete)")
                .call()
        });
        let reply = match reply {
            Ok(r) => r,
            Err(e) => {
                if let Some(d) = e.downcast_ref::<DriveError>() {
                    if d.status == 404 {
                        return Err(crate::error::config_error_hint(
                            format!(
                                "Drive folder {id} was not found (or is not shared with {})",
                                self.credentials().describe()
                            ),
                            d.hint().unwrap_or_default(),
                        ));
                    }
                }
                return Err(e);
            }
        };
        let v = reply.json()?;
        if v["mimeType"].as_str() != Some(FOLDER_MIME) {
            return Err(crate::error::config_error_hint(
                format!(
                    "Drive ID {id} is a file ({}), not a folder",
                    v["mimeType"].as_str().unwrap_or("unknown type")
                ),
                "copy the ID from the folder's URL: https://drive.google.com/drive/folders/<ID>",
            ));
        }
        if v["trashed"].as_bool() == Some(true) {
            return Err(crate::error::config_error_hint(format!(
                "Drive folder {id} is in the Trash"
            ), "restore the folder from the Drive Trash, or set the folder variable to another folder's ID"));
        }
        Ok(FolderInfo {
            name: v["name"].as_str().unwrap_or_default().to_string(),
            drive_id: v["driveId"].as_str().map(str::to_string),
            can_add_children: v["capabilities"]["canAddChildren"].as_bool(),
            can_delete_children: v["capabilities"]["canDeleteChildren"].as_bool(),
        })
    }

    /// Every file (all pages) in `folder` matching the extra query clauses.
    ///
    /// In a shared drive the listing is scoped to it (`corpora=drive`, Google's recommendation).
    /// An account that was shared only the folder, without being a member of the drive, gets 404
    /// "Shared drive not found" for that, although it can read and write the folder: then the
    /// folder is listed by parent across every drive the account sees (`corpora=allDrives`).
    pub fn list(
        &mut self,
        folder: &str,
        drive_id: Option<&str>,
        extra_query: &str,
    ) -> Result<Vec<RemoteFile>> {
        let Some(drive) = drive_id else {
            return self.list_in(folder, Corpora::User, extra_query);
        };
        if self.drive_listing_refused {
            return self.list_in(folder, Corpora::AllDrives, extra_query);
        }
        match self.list_in(folder, Corpora::Drive(drive), extra_query) {
            Err(e) if is_not_found(&e) => {
                crate::log::debug(
                    "the shared drive cannot be listed by this account (not a member); listing the folder across all drives",
                    &[("folder", folder.to_string()), ("shared_drive", drive.to_string())],
                );
                self.drive_listing_refused = true;
                self.list_in(folder, Corpora::AllDrives, extra_query)
            }
            other => other,
        }
    }

    fn list_in(
        &mut self,
        folder: &str,
        corpora: Corpora,
        extra_query: &str,
    ) -> Result<Vec<RemoteFile>> {
        let url = self.api("files");
        let mut q = format!(
            "{} in parents and trashed = false",
            quote_query_value(folder)
        );
        if !extra_query.is_empty() {
            q.push_str(" and ");
            q.push_str(extra_query);
        }
        let fields = format!("nextPageToken,incompleteSearch,files({FILE_FIELDS})");
        let page_size = self.page_size.to_string();
        let mut files = Vec::new();
        let mut page_token: Option<String> = None;
        loop {
            let reply =
                self.execute(&format!("listing Drive folder {folder}"), &|agent, auth| {
                    let mut req = agent
                        .get(&url)
                        .authorized(auth)
                        .query("q", &q)
                        .query("fields", &fields)
                        .query("pageSize", &page_size)
                        .query("supportsAllDrives", "true")
                        .query("includeItemsFromAllDrives", "true");
                    req = match corpora {
                        Corpora::Drive(d) => req.query("corpora", "drive").query("driveId", d),
                        Corpora::AllDrives => req.query("corpora", "allDrives"),
                        Corpora::User => req,
                    };
                    if let Some(t) = &page_token {
                        req = req.query("pageToken", t);
                    }
                    req.call()
                })?;
            let v = reply.json()?;
            if v["incompleteSearch"].as_bool() == Some(true) {
                crate::log::warn(
                    "Drive says this listing may be incomplete (incompleteSearch): older backups may be missing from it",
                    &[("folder", folder.to_string())],
                );
            }
            files.extend(
                v["files"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(RemoteFile::from_json),
            );
            match v["nextPageToken"].as_str() {
                Some(t) if !t.is_empty() => page_token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(files)
    }

    pub fn get(&mut self, id: &str) -> Result<RemoteFile> {
        let url = self.api(&format!("files/{}", urlencode_path(id)));
        let reply = self.execute(&format!("reading Drive file {id}"), &|agent, auth| {
            agent
                .get(&url)
                .authorized(auth)
                .query("supportsAllDrives", "true")
                .query("fields", FILE_FIELDS)
                .call()
        })?;
        Ok(RemoteFile::from_json(&reply.json()?))
    }

    /// A file's metadata with its description (where pgdrive keeps the row-count manifest).
    pub fn get_with_description(&mut self, id: &str) -> Result<(RemoteFile, Option<String>)> {
        let url = self.api(&format!("files/{}", urlencode_path(id)));
        let fields = format!("{FILE_FIELDS},description,trashed");
        let reply = self.execute(&format!("reading Drive file {id}"), &|agent, auth| {
            agent
                .get(&url)
                .authorized(auth)
                .query("supportsAllDrives", "true")
                .query("fields", &fields)
                .call()
        })?;
        let v = reply.json()?;
        Ok((
            RemoteFile::from_json(&v),
            v["description"].as_str().map(str::to_string),
        ))
    }

    /// Adds or replaces `appProperties` entries of a file and, when given, sets its description.
    pub fn update_metadata(
        &mut self,
        id: &str,
        props: &BTreeMap<String, String>,
        description: Option<&str>,
    ) -> Result<()> {
        let url = self.api(&format!("files/{}", urlencode_path(id)));
        let mut body = serde_json::json!({ "appProperties": props });
        if let Some(d) = description {
            body["description"] = d.into();
        }
        let body = body.to_string();
        self.execute(&format!("updating Drive file {id}"), &|agent, auth| {
            agent
                .patch(&url)
                .authorized(auth)
                .header("Content-Type", "application/json; charset=UTF-8")
                .query("supportsAllDrives", "true")
                .query("fields", "id")
                .send(body.as_bytes())
        })?;
        Ok(())
    }

    /// Creates a small file (metadata and content in one multipart request); returns its id.
    /// For files of a few kilobytes, such as a backup's manifest: a backup goes through
    /// [`upload::ResumableUpload`].
    pub fn create_small(
        &mut self,
        metadata: &serde_json::Value,
        mime_type: &str,
        content: &[u8],
    ) -> Result<String> {
        let url = self.upload_endpoint();
        let boundary = format!("pgdrive-{}", crate::fsutil::random_token()?);
        let mut body = format!(
            "--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{metadata}\r\n--{boundary}\r\nContent-Type: {mime_type}\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(content);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let content_type = format!("multipart/related; boundary={boundary}");
        let name = metadata["name"].as_str().unwrap_or_default().to_string();
        let reply = self.execute(&format!("creating Drive file {name}"), &|agent, auth| {
            agent
                .post(&url)
                .authorized(auth)
                .header("Content-Type", &content_type)
                .query("uploadType", "multipart")
                .query("supportsAllDrives", "true")
                .query("fields", "id")
                .send(&body[..])
        })?;
        Ok(reply.json()?["id"]
            .as_str()
            .context("Drive's answer has no file id")?
            .to_string())
    }

    /// Deletes a file permanently like [`Self::delete`], and also while the run is stopping: then
    /// with one attempt through the bounded cleanup agent (the client's own has been shut down).
    /// Takes back a completed upload that must not stay, such as one left unverified by a signal.
    pub fn delete_even_when_stopping(&mut self, id: &str) -> Result<()> {
        if !crate::signals::stopping() {
            return self.delete(id);
        }
        let auth = self.authorization()?; // normally the cached token
        let url = self.api(&format!("files/{}", urlencode_path(id)));
        let reply = http_agent()
            .delete(&url)
            .authorized(&auth)
            .query("supportsAllDrives", "true")
            .call()
            .and_then(Reply::from_response)
            .with_context(|| format!("deleting Drive file {id}"))?;
        if !(200..300).contains(&reply.status) {
            return Err(anyhow::Error::new(DriveError::from_response(
                reply.status,
                &reply.body,
                None,
            ))
            .context(format!("deleting Drive file {id}")));
        }
        Ok(())
    }

    /// Deletes a file permanently (Trash would still count against the quota). A retried delete
    /// that Drive answers 404 succeeded: an earlier attempt deleted the file before its answer
    /// was lost. A 404 to the first attempt stays an error (the file was not there).
    pub fn delete(&mut self, id: &str) -> Result<()> {
        let url = self.api(&format!("files/{}", urlencode_path(id)));
        let attempts = std::cell::Cell::new(0u32);
        let outcome = self.execute(&format!("deleting Drive file {id}"), &|agent, auth| {
            attempts.set(attempts.get() + 1);
            agent
                .delete(&url)
                .authorized(auth)
                .query("supportsAllDrives", "true")
                .call()
        });
        match outcome {
            Err(e) if attempts.get() > 1 && is_not_found(&e) => {
                crate::log::debug(
                    "a retried delete found the file gone: an earlier attempt deleted it",
                    &[("file_id", id.to_string())],
                );
                Ok(())
            }
            other => other.map(drop),
        }
    }
}

/// The account's storage figures from `about.get`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageQuota {
    /// `None` when the account's storage is unlimited (Google omits the field).
    pub limit: Option<u64>,
    /// Bytes used across Drive, Gmail and Photos; Trash counts.
    pub usage: u64,
    pub usage_in_drive_trash: u64,
}

impl StorageQuota {
    pub fn free(&self) -> Option<u64> {
        self.limit.map(|l| l.saturating_sub(self.usage))
    }
}

impl DriveClient {
    /// The storage quota of the account pgdrive acts as (`about.get`). It describes that
    /// account's own storage: files in a shared drive count against the organization's pool instead.
    pub fn about(&mut self) -> Result<StorageQuota> {
        let url = self.api("about");
        let reply = self.execute("reading the Drive storage quota", &|agent, auth| {
            agent
                .get(&url)
                .authorized(auth)
                .query("fields", "storageQuota")
                .call()
        })?;
        let v = reply.json()?;
        let q = &v["storageQuota"];
        // int64 fields arrive as JSON strings
        let n = |k: &str| {
            q[k].as_str()
                .and_then(|s| s.parse::<u64>().ok())
                .or_else(|| q[k].as_u64())
        };
        Ok(StorageQuota {
            limit: n("limit"),
            usage: n("usage").unwrap_or(0),
            usage_in_drive_trash: n("usageInDriveTrash").unwrap_or(0),
        })
    }
}

/// Percent-encodes a path segment (Drive IDs are URL-safe already; this guards odd input).
pub fn urlencode_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_error_bodies_are_parsed() {
        let body = br#"{"error":{"code":403,"message":"Service Accounts do not have storage quota. Leverage shared drives.","errors":[{"domain":"usageLimits","reason":"storageQuotaExceeded","message":"Service Accounts do not have storage quota."}]}}"#;
        let e = DriveError::from_response(403, body, None);
        assert_eq!(e.reason.as_deref(), Some("storageQuotaExceeded"));
        assert!(e.is_service_account_quota());
        let hint = e.hint().unwrap();
        assert!(
            hint.contains("shared drive")
                && hint.contains("GOOGLE_IMPERSONATE_USER")
                && hint.contains("authorized_user")
        );
        assert_eq!(e.verdict(), Verdict::Fatal);

        let e = DriveError::from_response(403, br#"{"error":{"code":403,"message":"Rate Limit Exceeded","errors":[{"reason":"rateLimitExceeded"}]}}"#, None);
        assert_eq!(e.verdict(), Verdict::Retry);

        let e = DriveError::from_response(502, b"<html>Bad Gateway</html>", None);
        assert_eq!(e.reason, None);
        assert_eq!(e.verdict(), Verdict::Retry);
        assert!(e.message.contains("Bad Gateway"));
    }

    #[test]
    fn chunk_timeouts_grow_with_the_chunk() {
        let (small, answer) = chunk_timeouts(256 << 10);
        assert_eq!(small, Duration::from_secs(24));
        assert_eq!(answer, Duration::from_secs(60));
        assert_eq!(chunk_timeouts(8 << 20).0, Duration::from_secs(148));
        assert_eq!(chunk_timeouts(0).0, Duration::from_secs(20));
    }

    #[test]
    fn query_values_are_escaped() {
        assert_eq!(quote_query_value("it's a \\ test"), r"'it\'s a \\ test'");
    }
}
