//! Drive's resumable upload protocol for a stream of unknown length, written by hand because no
//! crate does it right (google-drive3 needs a seekable input and misreads `Range: bytes=0-N`).
//!
//! The session is opened before pg_dump starts. Data is sent in chunks that are multiples of
//! 256 KiB as `Content-Range: bytes a-b/*`; the server answers 308 with `Range: bytes=0-N`, and
//! whatever it did not acknowledge stays in memory and is sent again. After a network error, a 5xx,
//! a 429 or a rate-limit 403 the session is asked how much it holds (`bytes */*`) and the upload
//! continues from there: it never restarts from byte zero. A 404/410 (session expired) or any other
//! 4xx is final. The last chunk, carrying the total, is only sent by [`ResumableUpload::finish`],
//! which the pipeline calls only after pg_dump exited 0 and the gzip trailer was written; until then
//! no file exists in the folder, and [`ResumableUpload::abort`] cancels the session.

use anyhow::{bail, Context, Result};

use super::retry::{classify_transport, random_unit, Verdict};
use super::{DriveClient, DriveError, Reply};

/// An open upload session.
pub struct ResumableUpload<'a> {
    client: &'a mut DriveClient,
    /// The session URI. It works as a credential of its own, so it is never logged.
    session: String,
    /// Bytes the server has acknowledged.
    acked: u64,
    /// Bytes after `acked` not yet acknowledged.
    pending: Vec<u8>,
    chunk_size: usize,
    pub requests: u64,
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
                .header("Authorization", auth)
                .header("Content-Type", "application/json; charset=UTF-8")
                .header("X-Upload-Content-Type", content_type)
                .query("uploadType", "resumable")
                .query("supportsAllDrives", "true")
                .query("fields", super::FILE_FIELDS)
                .send(body.as_bytes())
        })?;
        let session = reply
            .location
            .context("Drive opened an upload session without a Location header")?;
        Ok(ResumableUpload {
            client,
            session,
            acked: 0,
            pending: Vec::with_capacity(chunk_size),
            chunk_size,
            requests: 0,
        })
    }

    /// Queues bytes; full chunks are sent as they fill.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        self.pending.extend_from_slice(data);
        while self.pending.len() >= self.chunk_size {
            if let Some(_resource) = self.send(self.chunk_size, None)? {
                bail!("Drive completed the upload before the last chunk was sent");
            }
        }
        Ok(())
    }

    /// Sends what remains as the final chunk, declaring the total, and returns the file resource
    /// together with the client, which the caller needs to verify and label the new file.
    pub fn finish(mut self) -> Result<(serde_json::Value, &'a mut DriveClient)> {
        let total = self.acked + self.pending.len() as u64;
        loop {
            if let Some(resource) = self.send(self.pending.len(), Some(total))? {
                return Ok((resource, self.client));
            }
        }
    }

    /// Cancels the session (best effort): Drive never creates the file.
    pub fn abort(self) {
        let agent = self.client.agent().clone();
        let outcome = agent.delete(&self.session).call();
        let status = outcome
            .map(|r| r.status().as_u16().to_string())
            .unwrap_or_else(|e| e.to_string());
        crate::log::debug("cancelled the upload session", &[("answer", status)]);
    }

    pub fn acknowledged(&self) -> u64 {
        self.acked
    }

    /// One PUT of `len` pending bytes (all retries included). Returns the file resource when this
    /// completed the upload, or `None` after a 308 (with `pending` trimmed to what is still unacknowledged).
    fn send(&mut self, len: usize, total: Option<u64>) -> Result<Option<serde_json::Value>> {
        let mut attempt = 0u32;
        let mut refreshed = false;
        loop {
            crate::signals::check()?;
            let content_range = match (len, total) {
                (0, Some(t)) => format!("bytes */{t}"),
                (n, t) => format!(
                    "bytes {}-{}/{}",
                    self.acked,
                    self.acked + n as u64 - 1,
                    t.map(|t| t.to_string()).unwrap_or_else(|| "*".into())
                ),
            };
            let token = self.client.token()?;
            self.requests += 1;
            let outcome = self
                .client
                .agent()
                .put(&self.session)
                .header("Authorization", format!("Bearer {token}"))
                .header("Content-Range", &content_range)
                .send(&self.pending[..len])
                .and_then(Reply::from_response);
            let (verdict, failure, retry_after) = match outcome {
                Ok(reply) => match reply.status {
                    200 | 201 => return self.completed(reply, total).map(Some),
                    308 => {
                        self.acknowledge(stored_bytes(reply.range.as_deref())?)?;
                        return Ok(None);
                    }
                    404 | 410 => {
                        return Err(anyhow::Error::new(DriveError::from_response(reply.status, &reply.body, None)))
                            .context("the upload session expired or was cancelled; the backup must be run again");
                    }
                    status => {
                        let err = DriveError::from_response(status, &reply.body, reply.retry_after);
                        (
                            err.verdict(),
                            anyhow::Error::new(err.clone()),
                            err.retry_after,
                        )
                    }
                },
                Err(e) => (classify_transport(&e), anyhow::Error::new(e), None),
            };
            match verdict {
                Verdict::RefreshToken if !refreshed => {
                    crate::log::debug("access token refused mid-upload; fetching a new one", &[]);
                    self.client.invalidate_token();
                    refreshed = true;
                    continue;
                }
                Verdict::Retry if attempt < self.client.retry.max_retries => {
                    let delay = self.client.retry.delay(attempt, retry_after, random_unit());
                    crate::log::info(
                        "upload chunk failed; resuming after backoff",
                        &[
                            ("offset", self.acked.to_string()),
                            ("error", format!("{failure:#}")),
                            ("delay_ms", delay.as_millis().to_string()),
                        ],
                    );
                    crate::signals::sleep(delay)?;
                    attempt += 1;
                    // Ask the session how much it holds, and continue from there.
                    match self.query_status(total)? {
                        Some(resource) => {
                            return self.completed_resource(resource, total).map(Some)
                        }
                        None if self.pending.len() < len => {
                            // the server already holds part of this chunk: send only the rest
                            return Ok(None);
                        }
                        None => {}
                    }
                }
                Verdict::Retry => {
                    return Err(failure.context(format!(
                        "uploading at offset {} (gave up after {} retries)",
                        self.acked, self.client.retry.max_retries
                    )))
                }
                _ => return Err(failure.context(format!("uploading at offset {}", self.acked))),
            }
        }
    }

    /// The status query: an empty PUT with `Content-Range: bytes */*` (or `*/TOTAL` when the
    /// total is known). Updates `acked`; returns the resource if the upload turns out complete.
    fn query_status(&mut self, total: Option<u64>) -> Result<Option<serde_json::Value>> {
        let mut attempt = 0u32;
        loop {
            crate::signals::check()?;
            let token = self.client.token()?;
            self.requests += 1;
            let range = format!(
                "bytes */{}",
                total.map(|t| t.to_string()).unwrap_or_else(|| "*".into())
            );
            let outcome = self
                .client
                .agent()
                .put(&self.session)
                .header("Authorization", format!("Bearer {token}"))
                .header("Content-Range", &range)
                .send_empty()
                .and_then(Reply::from_response);
            let failure = match outcome {
                Ok(reply) => match reply.status {
                    200 | 201 => return Ok(Some(reply.json()?)),
                    308 => {
                        self.acknowledge(stored_bytes(reply.range.as_deref())?)?;
                        return Ok(None);
                    }
                    404 | 410 => {
                        return Err(anyhow::Error::new(DriveError::from_response(
                            reply.status,
                            &reply.body,
                            None,
                        )))
                        .context("the upload session expired; the backup must be run again")
                    }
                    401 => {
                        self.client.invalidate_token();
                        anyhow::Error::new(DriveError::from_response(401, &reply.body, None))
                    }
                    status => {
                        let err = DriveError::from_response(status, &reply.body, reply.retry_after);
                        if err.verdict() == Verdict::Fatal {
                            return Err(anyhow::Error::new(err)
                                .context("asking the upload session how much it holds"));
                        }
                        anyhow::Error::new(err)
                    }
                },
                Err(e) if classify_transport(&e) == Verdict::Retry => anyhow::Error::new(e),
                Err(e) => {
                    return Err(anyhow::Error::new(e)
                        .context("asking the upload session how much it holds"))
                }
            };
            if attempt >= self.client.retry.max_retries {
                return Err(
                    failure.context("asking the upload session how much it holds (gave up)")
                );
            }
            crate::signals::sleep(self.client.retry.delay(attempt, None, random_unit()))?;
            attempt += 1;
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
        self.pending.drain(..consumed);
        self.acked = stored;
        Ok(())
    }

    fn completed(&mut self, reply: Reply, total: Option<u64>) -> Result<serde_json::Value> {
        let resource = reply.json()?;
        self.completed_resource(resource, total)
    }

    fn completed_resource(
        &mut self,
        resource: serde_json::Value,
        total: Option<u64>,
    ) -> Result<serde_json::Value> {
        if total.is_none() {
            // Drive only completes an upload when told the total; anything else is a protocol
            // violation and the stored file would be truncated.
            let id = resource["id"].as_str().unwrap_or("").to_string();
            bail!("Drive completed the upload (file {id}) before the last chunk was sent");
        }
        self.acked = total.unwrap_or(self.acked);
        self.pending.clear();
        Ok(resource)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
