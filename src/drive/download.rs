//! Ranged, resumable downloads of a file's content (`alt=media`), as a plain [`Read`].
//!
//! Every request asks for `Range: bytes=N-` where N is the number of bytes already delivered to
//! the caller, so after a dropped connection, a body timeout or a retryable status (5xx, 429,
//! rate-limit 403) the download continues where it stopped and no byte is ever delivered twice.
//! The answer must be a 206 whose `Content-Range` starts at N (or a 200 when N is 0). The retry
//! policy and classifier are the client's ([`super::retry`]); the attempt counter is reset
//! whenever bytes arrive, so a long download over a flaky link keeps going as long as it makes
//! progress, and a connection that broke after delivering bytes is re-requested at once (no
//! backoff): that is also how a download outlives the agent's total body timeout. A 401 fetches a
//! new token once per failure. A file Drive flagged as malware or spam
//! (`cannotDownloadAbusiveFile`) is requested again with `acknowledgeAbuse=true`, with a warning.

use std::io::{self, Read};

use anyhow::{anyhow, Result};

use super::retry::{classify_transport, random_unit, Verdict};
use super::{urlencode_path, Authorize, DriveClient, DriveError, Reply};

/// Drive's reason for refusing to serve a file it flagged as malware or spam.
pub const ABUSIVE_FILE: &str = "cannotDownloadAbusiveFile";

/// A resumable reader over one Drive file's bytes.
pub struct RangedReader<'a> {
    client: &'a mut DriveClient,
    file_id: String,
    url: String,
    /// Bytes delivered to the caller so far.
    offset: u64,
    /// The expected total, when known: reaching it ends the download without another request.
    total: Option<u64>,
    body: Option<ureq::BodyReader<'static>>,
    /// `offset` when the current body was opened: progress since then means the link works.
    opened_at: u64,
    attempt: u32,
    /// Drive flagged the file as malware or spam; requests acknowledge the risk from then on.
    acknowledge_abuse: bool,
    /// Requests made (for logs and tests).
    pub requests: u32,
}

impl<'a> RangedReader<'a> {
    pub fn new(client: &'a mut DriveClient, file_id: &str, total: Option<u64>) -> RangedReader<'a> {
        let url = client.api(&format!("files/{}", urlencode_path(file_id)));
        RangedReader {
            client,
            file_id: file_id.to_string(),
            url,
            offset: 0,
            total,
            body: None,
            opened_at: 0,
            attempt: 0,
            acknowledge_abuse: false,
            requests: 0,
        }
    }

    /// Starts the download at byte `offset` instead of the beginning (a ranged read).
    pub fn starting_at(mut self, offset: u64) -> RangedReader<'a> {
        self.offset = offset;
        self.opened_at = offset;
        self
    }

    /// Opens the body from `self.offset`, retrying under the client's policy.
    fn open(&mut self) -> Result<()> {
        let mut refreshed = false;
        loop {
            crate::signals::check_run()?;
            let auth = self.client.authorization()?;
            self.requests += 1;
            let mut request = self
                .client
                .agent()
                .get(&self.url)
                .authorized(&auth)
                .header("Range", format!("bytes={}-", self.offset))
                .query("alt", "media")
                .query("supportsAllDrives", "true");
            if self.acknowledge_abuse {
                request = request.query("acknowledgeAbuse", "true");
            }
            let outcome = request.call();
            let (verdict, failure, retry_after) = match outcome {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    if status == 206 || (status == 200 && self.offset == 0) {
                        if status == 206 {
                            let range = resp
                                .headers()
                                .get("content-range")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("");
                            let start = content_range_start(range);
                            if start != Some(self.offset) {
                                return Err(anyhow!(
                                    "Drive answered a request for bytes from {} with Content-Range {range:?}",
                                    self.offset
                                ));
                            }
                        }
                        self.opened_at = self.offset;
                        self.body =
                            Some(resp.into_body().into_with_config().limit(u64::MAX).reader());
                        return Ok(());
                    }
                    if status == 416 && self.total.is_some_and(|t| t == self.offset) {
                        // everything was delivered already
                        return Ok(());
                    }
                    let reply = Reply::from_response(resp).map_err(anyhow::Error::new)?;
                    let err =
                        DriveError::from_response(reply.status, &reply.body, reply.retry_after);
                    if err.reason.as_deref() == Some(ABUSIVE_FILE) && !self.acknowledge_abuse {
                        // pgdrive's own backup, checked against its SHA-256 after the download
                        crate::log::warn(
                            "Drive flagged this backup as malware or spam; downloading it anyway (acknowledgeAbuse), its checksums are still verified",
                            &[("file_id", self.file_id.clone())],
                        );
                        self.acknowledge_abuse = true;
                        continue;
                    }
                    (
                        err.verdict(),
                        anyhow::Error::new(err.clone()),
                        err.retry_after,
                    )
                }
                Err(e) => (classify_transport(&e), anyhow::Error::new(e), None),
            };
            crate::signals::check_run()?;
            match verdict {
                Verdict::RefreshToken if !refreshed => {
                    self.client.invalidate_token();
                    refreshed = true;
                }
                Verdict::Retry => self.back_off(failure, retry_after)?,
                _ => {
                    return Err(failure.context(format!("downloading Drive file {}", self.file_id)))
                }
            }
        }
    }

    /// Sleeps before the next attempt, or gives up when the retries are spent.
    fn back_off(
        &mut self,
        failure: anyhow::Error,
        retry_after: Option<std::time::Duration>,
    ) -> Result<()> {
        if self.attempt >= self.client.retry.max_retries {
            return Err(failure.context(format!(
                "downloading Drive file {} at byte {} (gave up after {} retries)",
                self.file_id, self.offset, self.client.retry.max_retries
            )));
        }
        let delay = self
            .client
            .retry
            .delay(self.attempt, retry_after, random_unit());
        crate::log::debug(
            "download interrupted; resuming",
            &[
                ("file_id", self.file_id.clone()),
                ("offset", self.offset.to_string()),
                ("error", format!("{failure:#}")),
            ],
        );
        crate::signals::sleep(delay)?;
        self.attempt += 1;
        Ok(())
    }
}

impl RangedReader<'_> {
    /// After a broken body: re-request at once if it delivered bytes, else back off first.
    fn resume(&mut self, failure: anyhow::Error) -> io::Result<()> {
        if self.offset > self.opened_at {
            crate::log::debug(
                "download connection broke; resuming",
                &[
                    ("file_id", self.file_id.clone()),
                    ("offset", self.offset.to_string()),
                    ("error", format!("{failure:#}")),
                ],
            );
            return Ok(());
        }
        self.back_off(failure, None).map_err(io::Error::other)
    }
}

/// `bytes 100-199/1000` → 100.
fn content_range_start(value: &str) -> Option<u64> {
    value
        .trim()
        .strip_prefix("bytes ")?
        .split('-')
        .next()?
        .trim()
        .parse()
        .ok()
}

impl Read for RangedReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.total.is_some_and(|t| self.offset >= t) {
                return Ok(0);
            }
            if self.body.is_none() {
                self.open().map_err(io::Error::other)?;
                if self.body.is_none() {
                    return Ok(0);
                }
            }
            let body = self.body.as_mut().expect("opened above");
            match body.read(buf) {
                Ok(0) => {
                    self.body = None;
                    match self.total {
                        // the connection ended early (a clean close looks like EOF): resume
                        Some(t) if self.offset < t => {
                            let e = anyhow!("the connection closed at byte {} of {t}", self.offset);
                            self.resume(e)?;
                        }
                        _ => return Ok(0),
                    }
                }
                Ok(n) => {
                    self.offset += n as u64;
                    self.attempt = 0;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.body = None;
                    let e = anyhow::Error::new(e).context("reading the download");
                    self.resume(e)?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(content_range_start("bytes 100-199/1000"), Some(100));
        assert_eq!(content_range_start("bytes 0-0/1"), Some(0));
        assert_eq!(content_range_start("bytes */1000"), None);
    }
}
