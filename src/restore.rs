//! The checked restore stream, shared by `pgdrive restore` and `pgdrive verify`:
//!
//! storage reader → SHA-256 + MD5 + byte count → gunzip (every member) → row counts and the
//! "dump complete" trailer → a sink (psql's stdin, or nothing for a checksum-only verify).
//!
//! A checksum can only be confirmed at the end of the stream, so the restore is arranged so that
//! nothing can commit before then: psql runs the whole script as one transaction
//! (`--single-transaction`), which it commits only when its input ends. pgdrive closes psql's
//! input only after the size, MD5 and SHA-256 of everything downloaded matched what the backup
//! recorded, the gzip stream decoded to its end (CRC and length checked by the decoder) and the
//! dump ended with pg_dump's completion trailer. On any mismatch psql is SIGKILLed while its input
//! is still open: the server sees the connection drop inside the transaction and rolls it back.

use std::collections::BTreeMap;
use std::io::{self, Read};

use anyhow::{anyhow, Context, Result};
use md5::Digest as _;

use crate::error::corrupt;
use crate::pipeline::hex;
use crate::psql::RunningPsql;
use crate::storage::Digest;

const DUMP_COMPLETE_MARKER: &[u8] = b"-- PostgreSQL database dump complete";
const RAW_TAIL_KEEP: usize = 256;

/// What a fully read, fully checked backup stream held.
#[derive(Debug, Clone)]
pub struct Checked {
    pub digest: Digest,
    /// Bytes of SQL after decompression.
    pub raw_bytes: u64,
    /// Rows per table, read off the COPY blocks of the decompressed dump.
    pub row_counts: BTreeMap<String, u64>,
}

/// Hashes everything read through it.
struct Hashing<R> {
    inner: R,
    sha256: sha2::Sha256,
    md5: md5::Md5,
    size: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha256.update(&buf[..n]);
        self.md5.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

/// Why the sink refused data (psql stopped): kept apart from stream errors so the caller can
/// quote psql rather than blame the download.
#[derive(Debug)]
pub struct SinkFailed(pub io::Error);

impl std::fmt::Display for SinkFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the restore target stopped reading: {}", self.0)
    }
}

impl std::error::Error for SinkFailed {}

/// Reads `input` to its end, checking it against `expected`, and hands the decompressed SQL to
/// `sink` as it goes. Returns only when every check passed; a mismatch is a [`corrupt`] error.
pub fn check_stream(
    input: &mut dyn Read,
    expected: &Digest,
    sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> Result<Checked> {
    let hashing = Hashing {
        inner: input,
        sha256: sha2::Sha256::new(),
        md5: md5::Md5::new(),
        size: 0,
    };
    let mut decoder = flate2::read::MultiGzDecoder::new(hashing);
    let mut buf = vec![0u8; 256 << 10];
    let mut raw_bytes = 0u64;
    let mut raw_tail: Vec<u8> = Vec::with_capacity(2 * RAW_TAIL_KEEP);
    let mut rows = crate::rowcount::RowCounter::default();
    let mut decode_error: Option<io::Error> = None;
    let mut sink_error: Option<io::Error> = None;
    loop {
        crate::signals::check()?;
        let n = match decoder.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // A transport failure (retries exhausted) is not corruption: report it as it is.
                // (flate2 reports bad data as InvalidInput/InvalidData, a cut-off stream as UnexpectedEof)
                if !matches!(
                    e.kind(),
                    io::ErrorKind::InvalidInput
                        | io::ErrorKind::InvalidData
                        | io::ErrorKind::UnexpectedEof
                ) {
                    return Err(anyhow::Error::new(e).context("downloading the backup"));
                }
                decode_error = Some(e);
                break;
            }
        };
        raw_bytes += n as u64;
        raw_tail.extend_from_slice(&buf[n.saturating_sub(RAW_TAIL_KEEP)..n]);
        if raw_tail.len() > RAW_TAIL_KEEP {
            raw_tail.drain(..raw_tail.len() - RAW_TAIL_KEEP);
        }
        rows.feed(&buf[..n]);
        if let Err(e) = sink(&buf[..n]) {
            // psql stopped. Bad bytes may be why, so read the rest anyway: a checksum mismatch
            // is the diagnosis that matters; only if the file is intact is psql's error the cause.
            sink_error = Some(e);
            break;
        }
    }
    // Hash whatever the decoder did not need (trailing garbage, or the rest after a decode error)
    // so the checksums describe the whole file.
    let mut hashing = decoder.into_inner();
    loop {
        crate::signals::check()?;
        match hashing.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(anyhow::Error::new(e).context("downloading the backup")),
        }
    }
    let digest = Digest {
        size: hashing.size,
        sha256: hex(&hashing.sha256.finalize()),
        md5: hex(&hashing.md5.finalize()),
    };
    compare(&digest, expected)?;
    if let Some(e) = sink_error {
        return Err(anyhow::Error::new(SinkFailed(e)));
    }
    if let Some(e) = decode_error {
        return Err(corrupt(format!(
            "the file matches its recorded checksums but is not a valid gzip stream ({e}): the backup was damaged before it was stored"
        )));
    }
    if !raw_tail
        .windows(DUMP_COMPLETE_MARKER.len())
        .any(|w| w == DUMP_COMPLETE_MARKER)
    {
        return Err(corrupt(
            "the dump does not end with \"PostgreSQL database dump complete\": it is truncated",
        ));
    }
    Ok(Checked {
        digest,
        raw_bytes,
        row_counts: rows.finish(),
    })
}

/// Compares what was read with what the backup recorded; size first (the most telling).
fn compare(got: &Digest, expected: &Digest) -> Result<()> {
    if got.size != expected.size {
        return Err(corrupt(format!(
            "size mismatch: read {} bytes, the backup recorded {}",
            got.size, expected.size
        )));
    }
    if got.sha256 != expected.sha256 {
        return Err(corrupt(format!(
            "SHA-256 mismatch: read {}, the backup recorded {}",
            got.sha256, expected.sha256
        )));
    }
    if got.md5 != expected.md5 {
        return Err(corrupt(format!(
            "MD5 mismatch: read {}, the backup recorded {}",
            got.md5, expected.md5
        )));
    }
    Ok(())
}

/// Streams a backup into a running psql (after `prelude`, e.g. the `--clean` statements, which
/// run in the same transaction) and lets psql commit only if every check passed.
pub fn into_psql(
    input: &mut dyn Read,
    expected: &Digest,
    mut psql: RunningPsql,
    prelude: &str,
) -> Result<Checked> {
    let fed = (|| {
        psql.write(prelude.as_bytes())
            .map_err(|e| anyhow::Error::new(SinkFailed(e)))?;
        check_stream(input, expected, &mut |data| psql.write(data))
    })();
    match fed {
        Ok(checked) => {
            let outcome = psql.finish()?;
            if !outcome.success {
                return Err(anyhow!(
                    "psql {}: {}",
                    outcome.description,
                    quote(&outcome.stderr_tail)
                ))
                .context("the restore failed and was rolled back");
            }
            Ok(checked)
        }
        Err(e) => {
            let outcome = psql.abort()?;
            if e.is::<SinkFailed>() || e.chain().any(|c| c.is::<SinkFailed>()) {
                // psql stopped first (ON_ERROR_STOP): its words are the error.
                return Err(anyhow!("psql stopped: {}", quote(&outcome.stderr_tail)))
                    .context("the restore failed and was rolled back");
            }
            Err(e.context(
                "nothing was committed: psql was stopped before the end of its transaction",
            ))
        }
    }
}

fn quote(tail: &str) -> String {
    if tail.is_empty() {
        "(no message)".into()
    } else {
        tail.replace('\n', " | ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(parts: &[&[u8]]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        for p in parts {
            e.write_all(p).unwrap();
        }
        e.finish().unwrap()
    }

    fn digest(bytes: &[u8]) -> Digest {
        Digest {
            size: bytes.len() as u64,
            sha256: hex(&sha2::Sha256::digest(bytes)),
            md5: hex(&md5::Md5::digest(bytes)),
        }
    }

    const DUMP: &[u8] =
        b"COPY public.t (a) FROM stdin;\n1\n2\n\\.\n--\n-- PostgreSQL database dump complete\n--\n";

    #[test]
    fn a_good_stream_passes_and_is_counted() {
        let file = gz(&[DUMP]);
        let mut out = Vec::new();
        let c = check_stream(&mut &file[..], &digest(&file), &mut |d| {
            out.extend_from_slice(d);
            Ok(())
        })
        .unwrap();
        assert_eq!(out, DUMP);
        assert_eq!(c.row_counts.get("public.t"), Some(&2));
        assert_eq!(c.raw_bytes, DUMP.len() as u64);
    }

    #[test]
    fn a_flipped_byte_is_a_checksum_error() {
        let file = gz(&[DUMP]);
        let expected = digest(&file);
        let mut bad = file.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0xff;
        let err = check_stream(&mut &bad[..], &expected, &mut |_| Ok(())).unwrap_err();
        assert_eq!(
            crate::error::classify(&err),
            crate::error::ExitStatus::Corrupt,
            "{err:#}"
        );
        assert!(format!("{err:#}").contains("SHA-256 mismatch"), "{err:#}");
    }

    #[test]
    fn a_truncated_dump_is_refused_even_with_matching_checksums() {
        let file = gz(&[b"COPY public.t (a) FROM stdin;\n1\n"]);
        let err = check_stream(&mut &file[..], &digest(&file), &mut |_| Ok(())).unwrap_err();
        assert!(format!("{err:#}").contains("truncated"), "{err:#}");
    }

    #[test]
    fn garbage_with_matching_checksums_is_not_gzip() {
        let file = b"this is not gzip at all".to_vec();
        let err = check_stream(&mut &file[..], &digest(&file), &mut |_| Ok(())).unwrap_err();
        assert!(
            format!("{err:#}").contains("not a valid gzip stream"),
            "{err:#}"
        );
    }
}
