//! Drive's resumable upload protocol for a stream of unknown length, written by hand because no
//! crate does it right (google-drive3 needs a seekable input and misreads `Range: bytes=0-N`).
//!
//! The session is opened before pg_dump starts. Data is sent in chunks that are multiples of
//! 256 KiB as `Content-Range: bytes a-b/*`; the server answers 308 with `Range: bytes=0-N`, and
//! whatever it did not acknowledge stays in memory and is sent again. After a network error, a 5xx,
//! a 429 or a rate-limit 403 the session is asked how much it holds (`bytes */*`) and the upload
//! continues from there: it never restarts from byte zero. A 308 that acknowledges none of the
//! bytes just sent counts as a failed attempt, so such resends back off and are bounded by the
//! retry policy. A 404/410 (session expired) or any other 4xx is final. Each PUT's timeouts scale
//! with its size ([`super::chunk_timeouts`]); acknowledged bytes are the upload's progress for
//! the stall watchdog ([`crate::signals::watch`]). The last chunk, carrying the total, is only
//! sent by [`ResumableUpload::finish`], which the pipeline calls only after pg_dump exited 0 and
//! the gzip trailer was written; until then no file exists in the folder, and
//! [`ResumableUpload::abort`] cancels the session (as a failed last chunk does).

use anyhow::{bail, Context, Result};
use bytes::{Bytes, BytesMut};

use super::retry::{Attempts, Next, Verdict};
use super::{Authorization, Authorize, DriveClient, DriveError, Failure, Reply};

/// An open upload session.
pub struct ResumableUpload<'a> {
    client: &'a mut DriveClient,
    /// The session URI. It works as a credential of its own, so it is never logged.
    session: String,
    /// Bytes the server has acknowledged.
    acked: u64,
    /// Bytes after `acked` not yet acknowledged: the chunk as it arrived while chunks come whole
    /// and are acknowledged whole (shared with the other targets, never copied), a slice of it
    /// after a partial acknowledgement, a copy only when chunks must be regrouped.
    pending: Bytes,
    chunk_size: usize,
}

/// Parses a 308's `Range: bytes=0-N` into the number of bytes stored (N+1); no header means 0.
pub fn stored_bytes(range: Option<&str>) -> Result<u64> {
    let Some(r) = range else { return Ok(0) };
    let last = r
        .trim()
        .strip_prefix("bytes=")
        .and_then(|r| r.split_once('-'))
        .filter(|(first, _)| first.trim() == "0")
        .and_then(|(_, last)| last.trim().parse::<u64>().ok())
        .with_context(|| format!("Drive answered with an unexpected Range header {r:?}"))?;
    Ok(last + 1)
}

impl<'a> ResumableUpload<'a> {
    /// Opens a session for a new file with `metadata` (name, parents, appProperties, ...).
    pub fn start(
        client: &'a mut DriveClient,
        metadata: &serde_json::Value,
        content_type: &str,
        chunk_size: usize,
    ) -> Result<Self> {
        let url = client.upload_endpoint();
        let body = metadata.to_string();
        let reply = client.execute("opening the Drive upload session", &|agent, auth| {
            agent
                .post(&url)
                .authorized(auth)
                .header("Content-Type", "application/json; charset=UTF-8")
                .header("X-Upload-Content-Type", content_type)
                .query("uploadType", "resumable")
                .query("supportsAllDrives", "true")
                .query("fields", super::FILE_FIELDS)
                .send(body.as_bytes())
        })?;
        let location = reply
            .location
            .context("Drive opened an upload session without a Location header")?;
        let session = absolute_url(&url, &location);
        Ok(ResumableUpload {
            client,
            session,
            acked: 0,
            pending: Bytes::new(),
            chunk_size,
        })
    }

    /// Queues bytes; full chunks are sent as they fill.
    pub fn write(&mut self, data: Bytes) -> Result<()> {
        // Chunks normally arrive exactly chunk-sized and are acknowledged whole, so `pending` is
        // usually empty here and the chunk is kept without a copy. Bytes are copied only to
        // regroup: smaller pieces than this session's chunk size (another target of the same
        // backup wants smaller parts), or what a partial acknowledgement left over.
        if self.pending.is_empty() {
            self.pending = data;
        } else if !data.is_empty() {
            // the regrouping buffer is this session's own: extended in place, each byte copied once
            let mut joined = match std::mem::take(&mut self.pending).try_into_mut() {
                Ok(own) => own,
                Err(shared) => {
                    let mut own =
                        BytesMut::with_capacity(self.chunk_size.max(shared.len() + data.len()));
                    own.extend_from_slice(&shared);
                    own
                }
            };
            joined.extend_from_slice(&data);
            self.pending = joined.freeze();
        }
        while self.pending.len() >= self.chunk_size {
            if let Some(_resource) = self.send(self.chunk_size, None)? {
                bail!("Drive completed the upload before the last chunk was sent");
            }
        }
        Ok(())
    }

    /// Sends what remains as the final chunk, declaring the total, and returns the file resource
    /// together with the client, which the caller needs to verify and label the new file. When
    /// that fails the session is cancelled.
    pub fn finish(mut self) -> Result<(serde_json::Value, &'a mut DriveClient)> {
        let total = self.acked + self.pending.len() as u64;
        loop {
            match self.send(self.pending.len(), Some(total)) {
                Ok(Some(resource)) => return Ok((resource, self.client)),
                Ok(None) => {}
                Err(e) => {
                    self.abort();
                    return Err(e);
                }
            }
        }
    }

    /// Cancels the session (best effort): Drive never creates the file. Uses a fresh agent: after
    /// a signal or a stall the client's own has been shut down, and this one is bounded in time.
    pub fn abort(self) {
        let outcome = super::http_agent().delete(&self.session).call();
        let status = outcome
            .map(|r| r.status().as_u16().to_string())
            .unwrap_or_else(|e| e.to_string());
        crate::log::debug("cancelled the upload session", &[("answer", status)]);
    }

    /// One PUT of `len` pending bytes (all retries included). Returns the file resource when this
    /// completed the upload, or `None` after a 308 (with `pending` trimmed to what is still unacknowledged).
    fn send(&mut self, len: usize, total: Option<u64>) -> Result<Option<serde_json::Value>> {
        let policy = self.client.retry.clone();
        let mut attempts = Attempts::new(&policy);
        loop {
            crate::signals::check_run()?;
            let total_text = total.map(|t| t.to_string()).unwrap_or_else(|| "*".into());
            let content_range = match len {
                0 => format!("bytes */{total_text}"),
                n => format!(
                    "bytes {}-{}/{total_text}",
                    self.acked,
                    self.acked + n as u64 - 1
                ),
            };
            let auth = self.client.authorization()?;
            let outcome = self.put(&auth, &content_range, len);
            let acked_before = self.acked;
            let failure = match self.answer(outcome)? {
                Answer::Complete(resource) => return self.completed(resource, total).map(Some),
                Answer::Incomplete if len == 0 || self.acked > acked_before => return Ok(None),
                Answer::Incomplete => Failure {
                    verdict: Verdict::Retry,
                    error: anyhow::anyhow!(
                        "Drive answered 308 but acknowledged none of the {len} bytes sent (it holds {})",
                        self.acked
                    ),
                    retry_after: None,
                },
                Answer::Failed(failure) => failure,
            };
            crate::signals::check_run()?;
            match attempts.after(failure.verdict, failure.retry_after) {
                Next::RefreshToken => {
                    crate::log::debug("access token refused mid-upload; fetching a new one", &[]);
                    self.client.invalidate_token();
                }
                Next::Backoff(delay) => {
                    crate::log::info(
                        "upload chunk failed; resuming after backoff",
                        &[
                            ("offset", self.acked.to_string()),
                            ("error", format!("{:#}", failure.error)),
                            ("delay_ms", delay.as_millis().to_string()),
                        ],
                    );
                    crate::signals::sleep(delay)?;
                    // Ask the session how much it holds, and continue from there.
                    match self.query_status(total)? {
                        Some(resource) => return self.completed(resource, total).map(Some),
                        // the server already holds part of this chunk: send only the rest
                        None if self.pending.len() < len => return Ok(None),
                        None => {}
                    }
                }
                Next::GiveUp { exhausted } => {
                    let gave_up = if exhausted {
                        format!(" (gave up after {} retries)", attempts.retries())
                    } else {
                        String::new()
                    };
                    return Err(failure
                        .error
                        .context(format!("uploading at offset {}{gave_up}", self.acked)));
                }
            }
        }
    }

    /// One request on the session URI: the first `len` pending bytes (none for a status query).
    fn put(
        &mut self,
        auth: &Authorization,
        content_range: &str,
        len: usize,
    ) -> std::result::Result<Reply, ureq::Error> {
        let (send_timeout, answer_timeout) = super::chunk_timeouts(len);
        let request = self
            .client
            .agent()
            .put(&self.session)
            .config()
            .timeout_send_body(Some(send_timeout))
            .timeout_recv_response(Some(answer_timeout))
            .build()
            .authorized(auth)
            .header("Content-Range", content_range);
        let response = if len == 0 {
            request.send_empty()
        } else {
            request.send(&self.pending[..len])
        };
        response.and_then(Reply::from_response)
    }

    /// What a session's answer means: complete (with the file resource), incomplete (the
    /// acknowledged point moved to its `Range`), or a failure to classify. A session Drive no
    /// longer knows is final.
    fn answer(&mut self, outcome: std::result::Result<Reply, ureq::Error>) -> Result<Answer> {
        match outcome {
            Ok(reply) => match reply.status {
                200 | 201 => Ok(Answer::Complete(reply.json()?)),
                308 => {
                    self.acknowledge(stored_bytes(reply.range.as_deref())?)?;
                    Ok(Answer::Incomplete)
                }
                404 | 410 => Err(session_gone(&reply)),
                _ => Ok(Answer::Failed(Failure::of(Ok(reply)))),
            },
            Err(e) => Ok(Answer::Failed(Failure::of(Err(e)))),
        }
    }

    /// The status query: an empty PUT with `Content-Range: bytes */*` (or `*/TOTAL` when the
    /// total is known). Updates `acked`; returns the resource if the upload turns out complete.
    fn query_status(&mut self, total: Option<u64>) -> Result<Option<serde_json::Value>> {
        let policy = self.client.retry.clone();
        let mut attempts = Attempts::new(&policy);
        let range = format!(
            "bytes */{}",
            total.map(|t| t.to_string()).unwrap_or_else(|| "*".into())
        );
        loop {
            crate::signals::check_run()?;
            let auth = self.client.authorization()?;
            let outcome = self.put(&auth, &range, 0);
            let failure = match self.answer(outcome)? {
                Answer::Complete(resource) => return Ok(Some(resource)),
                Answer::Incomplete => return Ok(None),
                Answer::Failed(failure) => failure,
            };
            crate::signals::check_run()?;
            match attempts.after(failure.verdict, failure.retry_after) {
                Next::RefreshToken => self.client.invalidate_token(),
                Next::Backoff(delay) => crate::signals::sleep(delay)?,
                Next::GiveUp { .. } => {
                    return Err(failure
                        .error
                        .context("asking the upload session how much it holds"))
                }
            }
        }
    }

    /// Moves the acknowledged point to `stored`, dropping those bytes from memory.
    fn acknowledge(&mut self, stored: u64) -> Result<()> {
        let end = self.acked + self.pending.len() as u64;
        if stored < self.acked || stored > end {
            bail!(
                "Drive reports {stored} bytes stored, outside the {}..={end} this upload can account for; the upload cannot continue safely",
                self.acked
            );
        }
        let consumed = (stored - self.acked) as usize;
        self.pending = self.pending.slice(consumed..);
        if stored > self.acked {
            crate::signals::progress();
        }
        self.acked = stored;
        Ok(())
    }

    fn completed(
        &mut self,
        resource: serde_json::Value,
        total: Option<u64>,
    ) -> Result<serde_json::Value> {
        let Some(total) = total else {
            // Drive only completes an upload when told the total; anything else is a protocol
            // violation and the stored file would be truncated.
            let id = resource["id"].as_str().unwrap_or("").to_string();
            bail!("Drive completed the upload (file {id}) before the last chunk was sent");
        };
        self.acked = total;
        self.pending = Bytes::new();
        crate::signals::progress();
        Ok(resource)
    }
}

/// Resolves a `Location` that is a path against the URL it answered (Google sends absolute URLs).
fn absolute_url(request_url: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_string();
    }
    let origin_end = request_url
        .find("://")
        .map(|i| i + 3)
        .and_then(|i| request_url[i..].find('/').map(|j| i + j))
        .unwrap_or(request_url.len());
    format!(
        "{}/{}",
        &request_url[..origin_end],
        location.trim_start_matches('/')
    )
}

enum Answer {
    Complete(serde_json::Value),
    Incomplete,
    Failed(Failure),
}

/// The error for a session Drive no longer knows (expired after a week idle, or cancelled).
fn session_gone(reply: &Reply) -> anyhow::Error {
    anyhow::Error::new(DriveError::from_response(reply.status, &reply.body, None))
        .context("the upload session expired or was cancelled; the backup must be run again")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_locations() {
        let req = "http://127.0.0.1:9/upload/drive/v3/files";
        assert_eq!(
            absolute_url(req, "https://www.googleapis.com/upload/x?upload_id=1"),
            "https://www.googleapis.com/upload/x?upload_id=1"
        );
        assert_eq!(
            absolute_url(req, "/upload/drive/v3/files?upload_id=1"),
            "http://127.0.0.1:9/upload/drive/v3/files?upload_id=1"
        );
    }

    #[test]
    fn range_headers() {
        assert_eq!(stored_bytes(None).unwrap(), 0);
        assert_eq!(stored_bytes(Some("bytes=0-42")).unwrap(), 43);
        assert_eq!(stored_bytes(Some("bytes=0-262143")).unwrap(), 262_144);
        assert!(stored_bytes(Some("bytes 0-42")).is_err());
        assert!(stored_bytes(Some("bytes=5-42")).is_err());
        assert!(stored_bytes(Some("bytes=0-x")).is_err());
    }
}
