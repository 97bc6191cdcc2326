//! The checked restore stream, shared by `pgdrive restore` and `pgdrive verify`:
//!
//! storage reader → SHA-256 + MD5 + byte count → the backup's codec (gzip, every member; zstd;
//! none) → row counts (plain dumps and archives) and a plain dump's "dump complete" trailer → a sink (psql's or
//! pg_restore's stdin, or nothing for a checksum-only verify).
//!
//! A checksum can only be confirmed at the end of the stream, so the restore is arranged so that
//! nothing can commit before then, nor ever without pgdrive's consent. The client runs everything
//! as one transaction: psql inside the `BEGIN;` pgdrive sends first, committed only by the
//! `COMMIT;` pgdrive sends after every check passed (the dump's own large-object transaction is
//! taken out of it, see `crate::dumpscript`); pg_restore (`--single-transaction`) commits once it
//! has read the archive's last data block, which is at the very end of the stream. So the last
//! [`HOLD_BACK`] bytes of decompressed data are held back, and they — and psql's `COMMIT;` — are
//! given to the client only after the size, MD5 and SHA-256 of everything downloaded matched what
//! the backup recorded, the codec decoded to its end (gzip: CRC and length) and a plain dump ended
//! with pg_dump's completion trailer. On any mismatch the client is SIGKILLed while its input is
//! still open: the server sees the connection drop inside the transaction and rolls it back. If
//! pgdrive itself dies instead (SIGKILL, the OOM killer, a second signal), the client sees its
//! input end without that consent — psql inside an open transaction, pg_restore inside an
//! archive — and is SIGKILLed by the kernel as well (`crate::psql`): nothing commits.
//!
//! The stream is watched like a backup (`crate::signals`): bytes arriving from storage and bytes
//! the client accepts are progress; a signal or a stall kills the client and ends the stream with
//! that error, and nothing commits.

use std::collections::BTreeMap;
use std::io::{self, Read};

use anyhow::{anyhow, Context, Result};

use crate::codec::Codec;
use crate::error::corrupt;
use crate::pgdump::DumpFormat;
use crate::psql::RunningClient;
use crate::storage::Digest;
use crate::storage::{props, Listed};

const DUMP_COMPLETE_MARKER: &[u8] = b"-- PostgreSQL database dump complete";
const RAW_TAIL_KEEP: usize = 256;

/// Decompressed bytes held back from the restore client until every check passed (see above).
pub const HOLD_BACK: usize = 64 << 10;

/// How a backup is encoded, from its properties. Backups written before these properties
/// existed are gzip'd plain dumps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub codec: Codec,
    pub format: DumpFormat,
    /// The stored bytes are age-encrypted (compressed first): what the backup recorded.
    pub encryption: Option<Encrypted>,
    /// The rows per table the stream must hold (the manifest's, unsealed when encrypted);
    /// `None` when nothing to compare was recorded. Checked before the client may commit.
    pub expected_rows: Option<BTreeMap<String, u64>>,
}

/// What an age-encrypted backup recorded about its encryption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encrypted {
    /// The recipients' fingerprints, comma-separated.
    pub recipients: String,
    /// The SHA-256 of the plaintext (the compressed stream), checked after decryption.
    pub plain_sha256: Option<String>,
}

impl Layout {
    pub fn of(listed: &Listed) -> Result<Layout> {
        let codec = match listed.prop(props::COMPRESSION) {
            None => crate::codec::DEFAULT,
            Some(label) => Codec::from_label(label)
                .ok_or_else(|| anyhow!("{} has an unknown compression {label:?}", listed.name))?,
        };
        let format = match listed.prop(props::FORMAT) {
            None => DumpFormat::Plain,
            Some(f) => DumpFormat::parse(f)
                .ok_or_else(|| anyhow!("{} has an unknown dump format {f:?}", listed.name))?,
        };
        let encryption = match listed.prop(props::ENCRYPTION) {
            None => None,
            Some(crate::encrypt::SCHEME) => Some(Encrypted {
                recipients: listed.prop(props::RECIPIENTS).unwrap_or("?").to_string(),
                plain_sha256: listed.prop(props::PLAIN_SHA256).map(str::to_string),
            }),
            Some(other) => {
                return Err(anyhow!(
                    "{} is encrypted with an unknown scheme {other:?}",
                    listed.name
                ))
            }
        };
        Ok(Layout {
            codec,
            format,
            encryption,
            expected_rows: None,
        })
    }

    /// [`Layout::of`] the backup `found`, completed from its manifest: every recipient (the
    /// property index may hold only the first few) and the row counts to check.
    pub fn of_found(found: &crate::storage::Found) -> Result<Layout> {
        let mut layout = Layout::of(&found.listed)?;
        let document = found.manifest.as_ref().map(|m| &m.document);
        if let (Some(enc), Some(all)) = (
            layout.encryption.as_mut(),
            document.and_then(crate::storage::manifest::recipients),
        ) {
            enc.recipients = all.join(",");
        }
        layout.expected_rows = recorded_row_counts(found, layout.encryption.as_ref())?;
        Ok(layout)
    }
}

/// The row counts recorded at backup time: the manifest's clear ones, or, for an encrypted
/// backup, its sealed ones opened with this process's identities (a wrong or missing identity
/// is the restore's 78, naming the recipients). `None` when the backup recorded none.
pub fn recorded_row_counts(
    found: &crate::storage::Found,
    enc: Option<&Encrypted>,
) -> Result<Option<BTreeMap<String, u64>>> {
    if found.row_counts.is_some() {
        return Ok(found.row_counts.clone());
    }
    let (Some(enc), Some(sealed)) = (
        enc,
        found
            .manifest
            .as_ref()
            .and_then(|m| crate::storage::manifest::sealed_row_counts(&m.document)),
    ) else {
        return Ok(None);
    };
    open_sealed(sealed, enc, "row counts").map(Some)
}

/// A manifest's sealed record (base64 of age-encrypted JSON, see
/// `crate::encrypt::Encryption::seal_to_base64`) opened with this process's identities: a wrong
/// or missing identity is the restore's 78 naming the recipients; a record that does not open or
/// parse is corrupt.
pub fn open_sealed<T: serde::de::DeserializeOwned>(
    sealed: &str,
    enc: &Encrypted,
    what: &str,
) -> Result<T> {
    let damaged = |why: String| {
        corrupt(format!(
            "the manifest's sealed {what} cannot be read ({why}): the manifest was changed since it was stored"
        ))
    };
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(sealed)
        .map_err(|e| damaged(e.to_string()))?;
    let mut json = Vec::new();
    decrypting(&bytes[..], enc)?
        .read_to_end(&mut json)
        .map_err(|e| damaged(e.to_string()))?;
    serde_json::from_slice(&json).map_err(|e| damaged(e.to_string()))
}

/// What differs between the row counts `want` (recorded) and `got` (found), one table each.
pub fn row_count_diff(want: &BTreeMap<String, u64>, got: &BTreeMap<String, u64>) -> String {
    let show = |n: Option<&u64>| n.map_or_else(|| "none".to_string(), u64::to_string);
    let mut keys: Vec<&String> = want.keys().chain(got.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| want.get(*k) != got.get(*k))
        .map(|k| {
            format!(
                "{k}: recorded {}, found {}",
                show(want.get(k)),
                show(got.get(k))
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Opens the age stream of an encrypted backup with this process's identities; the errors are
/// the restore's: no identity or none matching is a configuration error (78) naming the
/// recipients the backup expects, a header that is not age is corruption (65).
pub fn decrypting<'a, R: Read + 'a>(input: R, enc: &Encrypted) -> Result<Box<dyn Read + 'a>> {
    let Some(ids) = crate::encrypt::identities() else {
        return Err(crate::error::config_error_hint(
            format!(
                "the backup is encrypted with age (recipients {}) and no identity was given",
                enc.recipients
            ),
            "pass the private key with --identity FILE (or PGDRIVE_IDENTITY_FILE), or set PGDRIVE_ENCRYPT_PASSPHRASE_FILE for a passphrase backup",
        ));
    };
    crate::encrypt::decrypt(input, ids).map_err(|e| match e {
        crate::encrypt::OpenError::NoMatch => crate::error::config_error_hint(
            format!(
                "no identity in {} matches the backup's recipients ({}): nothing was restored",
                ids.source, enc.recipients
            ),
            "pass the private key of one of those recipients with --identity (the backup's manifest names them under encryption.recipients)",
        ),
        crate::encrypt::OpenError::NotAge(e) => {
            corrupt(format!("the backup does not start with a valid age header: {e}"))
        }
        crate::encrypt::OpenError::Other(e) => crate::error::config_error_hint(
            format!("decrypting the backup failed: {e}"),
            "check the identity or passphrase file",
        ),
    })
}

/// Reads through, hashing what it reads (the decrypted plaintext).
struct PlainHashing<'a> {
    inner: Box<dyn Read + 'a>,
    sha: std::rc::Rc<std::cell::RefCell<sha2::Sha256>>,
}

impl Read for PlainHashing<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use sha2::Digest as _;
        let n = self.inner.read(buf)?;
        self.sha.borrow_mut().update(&buf[..n]);
        Ok(n)
    }
}

/// What a backup must read back as: the size and checksums recorded when it was stored, once
/// the storage's own size for the file agrees. A file whose stored size differs (cut short, or
/// grown) is corrupt, and is reported as such before a byte is downloaded: reading it would only
/// end in a short read mistaken for a dropped connection.
pub fn expected_digest(backup: &Listed) -> Result<Digest> {
    let expected = backup
        .recorded_digest()
        .ok_or_else(|| anyhow!("{} has no recorded checksums", backup.name))?;
    match backup.size {
        Some(stored) if stored != expected.size => Err(corrupt(format!(
            "{} is {stored} bytes in storage, but {} bytes were stored and recorded ({}): it was cut short or changed since",
            backup.name,
            expected.size,
            if stored < expected.size {
                format!("{} bytes missing", expected.size - stored)
            } else {
                format!("{} bytes too many", stored - expected.size)
            }
        ))),
        _ => Ok(expected),
    }
}

/// The restore client programs, found when first needed: psql for plain dumps, pg_restore for
/// custom archives (explicit paths from flags or PGDRIVE_PSQL / PGDRIVE_PG_RESTORE).
pub struct Clients {
    pub psql: Option<std::path::PathBuf>,
    pub pg_restore: Option<std::path::PathBuf>,
    /// Ownership and privileges as the backup has them, left out (pg_restore `--no-owner
    /// --no-privileges`, or the plain script's statements commented out), or renamed.
    pub owners: crate::dr::rolemap::Owners,
}

impl Clients {
    /// A client restoring into `db` in one transaction. `clean`: for archives, pg_restore's own
    /// `--clean --if-exists`; for plain dumps the caller sends its statements as the prelude.
    /// An archive restored with a role map is given to psql as pg_restore's script
    /// ([`Clients::archive_to_script`]), so the client is psql then.
    pub fn restore_into(
        &self,
        format: DumpFormat,
        db: &crate::pgconn::ConnInfo,
        clean: bool,
    ) -> Result<RunningClient> {
        let client = match format {
            DumpFormat::Custom if self.owners.map().is_none() => {
                RunningClient::spawn_pg_restore_with(
                    &self.pg_restore_bin()?,
                    db.dbname(),
                    clean,
                    self.owners.leave_out(),
                    &db.child_env(),
                )?
            }
            _ => {
                RunningClient::spawn(&crate::psql::locate(self.psql.as_deref())?, &db.child_env())?
            }
        };
        client.watch_session(db);
        Ok(client)
    }

    /// For an archive restored with a role map: pg_restore turning it into its SQL script, which
    /// pgdrive rewrites on its way to the psql of [`Clients::restore_into`] (`clean`: the
    /// script drops the archive's objects first). `None` otherwise.
    pub fn archive_to_script(&self, format: DumpFormat, clean: bool) -> Result<Option<Script>> {
        if format != DumpFormat::Custom || self.owners.map().is_none() {
            return Ok(None);
        }
        let (converter, output) =
            RunningClient::spawn_pg_restore_script(&self.pg_restore_bin()?, clean)?;
        Ok(Some(Script { converter, output }))
    }

    fn pg_restore_bin(&self) -> Result<std::path::PathBuf> {
        crate::psql::locate_tool(
            "pg_restore",
            "PGDRIVE_PG_RESTORE",
            self.pg_restore.as_deref(),
        )
    }

    /// For archives, pg_restore reading the whole archive into nothing (a structural check
    /// without a database); plain dumps need no client to be checked.
    pub fn checker(&self, format: DumpFormat) -> Result<Option<RunningClient>> {
        match format {
            DumpFormat::Plain => Ok(None),
            DumpFormat::Custom => {
                RunningClient::spawn_pg_restore_check(&self.pg_restore_bin()?).map(Some)
            }
        }
    }
}

/// What a fully read, fully checked backup stream held.
#[derive(Debug, Clone)]
pub struct Checked {
    pub digest: Digest,
    /// Bytes after decompression.
    pub raw_bytes: u64,
    /// Rows per table, read off the COPY blocks of a plain dump or an archive's data blocks.
    pub row_counts: BTreeMap<String, u64>,
}

/// The running digest of everything read from storage, shared between the reader the decoder
/// owns and the drain that reads what the decoder left.
struct Tally {
    hasher: HashThread,
    /// Reading from storage failed (as opposed to the data failing to decode).
    source_failed: bool,
}

impl Tally {
    fn start() -> Result<std::rc::Rc<std::cell::RefCell<Tally>>> {
        Ok(std::rc::Rc::new(std::cell::RefCell::new(Tally {
            hasher: HashThread::start()?,
            source_failed: false,
        })))
    }

    fn finish(tally: &std::rc::Rc<std::cell::RefCell<Tally>>) -> Result<Digest> {
        tally.borrow_mut().hasher.finish()
    }
}

/// Copies of the stream's buffers on their way to a worker thread, at most `depth` at a time;
/// the worker hands each back ([`CopyWork::each`]), so the copies reuse their allocations.
struct CopyQueue {
    queue: std::sync::mpsc::SyncSender<Vec<u8>>,
    free: std::sync::mpsc::Receiver<Vec<u8>>,
}

/// The worker's end of a [`CopyQueue`].
struct CopyWork {
    work: std::sync::mpsc::Receiver<Vec<u8>>,
    give_back: std::sync::mpsc::Sender<Vec<u8>>,
}

fn copy_queue(depth: usize) -> (CopyQueue, CopyWork) {
    let (queue, work) = std::sync::mpsc::sync_channel(depth);
    let (give_back, free) = std::sync::mpsc::channel();
    (CopyQueue { queue, free }, CopyWork { work, give_back })
}

impl CopyQueue {
    /// Queues a copy of `data`; fails only when the worker has stopped.
    fn send(&self, data: &[u8]) -> Result<(), ()> {
        let mut buf = self.free.try_recv().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(data);
        self.queue.send(buf).map_err(|_| ())
    }
}

impl CopyWork {
    /// Runs `each` on every queued piece, in order, until the queue is dropped or `each` fails.
    fn each(self, mut each: impl FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        for data in self.work {
            each(&data)?;
            let _ = self.give_back.send(data);
        }
        Ok(())
    }
}

/// Pieces of the stream queued for a worker thread (the checksums, the spool writer).
const COPY_QUEUE: usize = 8;

/// Size, MD5 and SHA-256 of everything read, computed on a thread of its own: hashing (about
/// 0.5 CPU-s per 200 MB stored) then overlaps decompression, the stream's slowest stage, instead
/// of adding to it.
struct HashThread {
    queue: Option<CopyQueue>,
    thread: Option<std::thread::JoinHandle<crate::storage::Hasher>>,
}

impl HashThread {
    fn start() -> Result<HashThread> {
        let (queue, work) = copy_queue(COPY_QUEUE);
        let thread = std::thread::Builder::new()
            .name("restore-hash".into())
            .spawn(move || {
                let mut hasher = crate::storage::Hasher::default();
                let _ = work.each(|data| {
                    hasher.update(data);
                    Ok(())
                });
                hasher
            })
            .context("starting the checksum thread")?;
        Ok(HashThread {
            queue: Some(queue),
            thread: Some(thread),
        })
    }

    fn update(&mut self, data: &[u8]) {
        if let (Some(queue), false) = (&self.queue, data.is_empty()) {
            // fails only if the thread panicked; finish reports that
            let _ = queue.send(data);
        }
    }

    /// The digest of everything given to [`HashThread::update`]; once.
    fn finish(&mut self) -> Result<Digest> {
        drop(self.queue.take());
        self.thread
            .take()
            .ok_or_else(|| anyhow!("the checksums were taken twice"))?
            .join()
            .map(crate::storage::Hasher::finish)
            .map_err(|_| anyhow!("the checksum thread failed"))
    }
}

/// Hashes everything read through it into a shared [`Tally`].
struct Hashing<'a, 'b> {
    inner: &'a mut (dyn Read + 'b),
    tally: std::rc::Rc<std::cell::RefCell<Tally>>,
}

impl Read for Hashing<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        crate::signals::waiting_on("no bytes of the backup arrived");
        let n = self
            .inner
            .read(buf)
            .inspect_err(|_| self.tally.borrow_mut().source_failed = true)?;
        if n > 0 {
            crate::signals::progress();
        }
        let mut t = self.tally.borrow_mut();
        t.hasher.update(&buf[..n]);
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

/// Reads `input` to its end, checking it against `expected`, and hands the decompressed data to
/// `sink` as it goes, except the last [`HOLD_BACK`] bytes, which are handed over only once every
/// check passed. Returns only then; a mismatch is a [`corrupt`] error.
pub fn check_stream(
    input: &mut dyn Read,
    expected: &Digest,
    layout: Layout,
    sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> Result<Checked> {
    let tally = Tally::start()?;
    let plain_sha = std::rc::Rc::new(std::cell::RefCell::new(
        <sha2::Sha256 as sha2::Digest>::new(),
    ));
    let plain = layout.format == DumpFormat::Plain;
    let mut buf = vec![0u8; 256 << 10];
    let mut raw_bytes = 0u64;
    let mut raw_tail: Vec<u8> = Vec::with_capacity(2 * RAW_TAIL_KEEP);
    let mut rows = crate::rowcount::DumpRows::new(plain);
    let mut held: Vec<u8> = Vec::with_capacity(HOLD_BACK + buf.len());
    let mut decode_error: Option<io::Error> = None;
    let mut sink_error: Option<io::Error> = None;
    {
        let hashing = Hashing {
            inner: &mut *input,
            tally: tally.clone(),
        };
        let source: Box<dyn Read + '_> = match &layout.encryption {
            None => Box::new(hashing),
            Some(enc) => Box::new(PlainHashing {
                inner: decrypting(hashing, enc).map_err(|e| {
                    if tally.borrow().source_failed {
                        e.context("downloading the backup")
                    } else {
                        e
                    }
                })?,
                sha: plain_sha.clone(),
            }),
        };
        let mut decoder = match layout.codec.decoder(source) {
            Ok(d) => d,
            Err(e) => return Err(check_source(e, &tally)),
        };
        loop {
            crate::signals::check_run()?;
            let n = match decoder.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // stopped (a signal, a stall): that is the error, not what it broke
                    crate::signals::check_run()?;
                    // A failed download (retries exhausted) is not corruption: report it as it is.
                    if tally.borrow().source_failed {
                        return Err(anyhow::Error::new(e).context("downloading the backup"));
                    }
                    decode_error = Some(e);
                    break;
                }
            };
            raw_bytes += n as u64;
            if plain {
                raw_tail.extend_from_slice(&buf[n.saturating_sub(RAW_TAIL_KEEP)..n]);
                if raw_tail.len() > RAW_TAIL_KEEP {
                    raw_tail.drain(..raw_tail.len() - RAW_TAIL_KEEP);
                }
            }
            rows.feed(&buf[..n]);
            held.extend_from_slice(&buf[..n]);
            if held.len() > HOLD_BACK {
                let release = held.len() - HOLD_BACK;
                if let Err(e) = sink(&held[..release]) {
                    // The client stopped. Bad bytes may be why, so read the rest anyway: a
                    // checksum mismatch is the diagnosis that matters; only if the file is intact
                    // is the client's error the cause.
                    sink_error = Some(e);
                    break;
                }
                held.drain(..release);
            }
        }
    }
    // Hash whatever the decoder did not need (trailing garbage, or the rest after an error) so
    // the checksums describe the whole file.
    let mut rest = Hashing {
        inner: input,
        tally: tally.clone(),
    };
    drain(&mut rest, &mut buf, |_| {})?;
    let digest = Tally::finish(&tally)?;
    compare(&digest, expected)?;
    if let Some(e) = sink_error {
        return Err(anyhow::Error::new(SinkFailed(e)));
    }
    if let Some(e) = decode_error {
        return Err(corrupt(format!(
            "the file matches its recorded checksums but is not a valid {}{} stream ({e}): the backup was damaged before it was stored",
            layout.codec.label(),
            if layout.encryption.is_some() { " + age" } else { "" }
        )));
    }
    if let Some(want) = layout
        .encryption
        .as_ref()
        .and_then(|e| e.plain_sha256.as_ref())
    {
        let got = crate::storage::hex(&sha2::Digest::finalize(plain_sha.take()));
        if &got != want {
            return Err(corrupt(format!(
                "the decrypted stream's SHA-256 is {got}, the backup recorded {want}"
            )));
        }
    }
    if plain
        && !raw_tail
            .windows(DUMP_COMPLETE_MARKER.len())
            .any(|w| w == DUMP_COMPLETE_MARKER)
    {
        return Err(corrupt(
            "the dump does not end with \"PostgreSQL database dump complete\": it is truncated",
        ));
    }
    let row_counts = rows.finish();
    // earlier builds recorded no counts for archives: an empty manifest of an archive means
    // "not recorded" (an archive of a database without tables has nothing to compare anyway)
    if let Some(want) = layout
        .expected_rows
        .as_ref()
        .filter(|m| plain || !m.is_empty())
    {
        if want != &row_counts {
            return Err(corrupt(format!(
                "the dump's row counts differ from the manifest recorded at backup time: {}",
                row_count_diff(want, &row_counts)
            )));
        }
    }
    // every check passed: the client may have the end
    sink(&held).map_err(|e| anyhow::Error::new(SinkFailed(e)))?;
    Ok(Checked {
        digest,
        raw_bytes,
        row_counts,
    })
}

/// Reads `reader` to its end (hashed by it), handing each piece to `each`; stops on a signal or
/// the stall watchdog, and reports a read failure as the download's.
fn drain(reader: &mut Hashing<'_, '_>, buf: &mut [u8], mut each: impl FnMut(&[u8])) -> Result<()> {
    loop {
        crate::signals::check_run()?;
        match reader.read(buf) {
            Ok(0) => return Ok(()),
            Ok(n) => each(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                crate::signals::check_run()?;
                return Err(anyhow::Error::new(e).context("downloading the backup"));
            }
        }
    }
}

/// Checks an encrypted backup without an identity: the size and checksums of the stored
/// (encrypted) bytes, and that they start with a well-formed age header. The content is not
/// checked (it cannot be read).
pub fn check_sealed(input: &mut dyn Read, expected: &Digest) -> Result<Digest> {
    let tally = Tally::start()?;
    let mut reader = Hashing {
        inner: input,
        tally: tally.clone(),
    };
    let mut buf = vec![0u8; 256 << 10];
    let mut head: Vec<u8> = Vec::new();
    drain(&mut reader, &mut buf, |data| {
        if head.len() < HOLD_BACK {
            head.extend_from_slice(&data[..data.len().min(HOLD_BACK - head.len())]);
        }
    })?;
    let digest = Tally::finish(&tally)?;
    compare(&digest, expected)?;
    crate::encrypt::check_header(&head[..]).map_err(|e| {
        corrupt(format!(
            "the file matches its recorded checksums but does not start with a valid age header ({e})"
        ))
    })?;
    Ok(digest)
}

/// An error opening the decoder: a download failure, or a stream that is not in its codec.
fn check_source(e: io::Error, tally: &std::rc::Rc<std::cell::RefCell<Tally>>) -> anyhow::Error {
    if tally.borrow().source_failed {
        anyhow::Error::new(e).context("downloading the backup")
    } else {
        corrupt(format!("the stream cannot be decoded: {e}"))
    }
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
    // hex digits; Drive's md5Checksum is lowercase today, but its case is not documented
    if !got.md5.eq_ignore_ascii_case(&expected.md5) {
        return Err(corrupt(format!(
            "MD5 mismatch: read {}, the backup recorded {}",
            got.md5, expected.md5
        )));
    }
    Ok(())
}

/// Streams a backup into a running restore client (after `prelude`, e.g. psql's `--clean`
/// statements, which run in the same transaction) and lets it commit only if every check passed.
pub fn into_client(
    input: &mut dyn Read,
    expected: &Digest,
    layout: Layout,
    psql: RunningClient,
    prelude: &str,
) -> Result<Checked> {
    into_client_with(
        input,
        expected,
        layout,
        psql,
        None,
        prelude,
        &Default::default(),
    )
}

/// An archive on its way to psql as SQL: pg_restore reading it on stdin (`converter`) and
/// writing the script to `output` (see [`Clients::archive_to_script`]).
pub struct Script {
    converter: RunningClient,
    output: std::process::ChildStdout,
}

/// Writes to `client`, waiting on it for the stall watchdog; bytes it takes are progress.
fn write_watched(client: &mut RunningClient, waiting: &str, data: &[u8]) -> io::Result<()> {
    crate::signals::waiting_on(waiting);
    client.write(data).inspect(|_| crate::signals::progress())
}

/// [`into_client`] with the restore's treatment of `owners` (a plain dump's ownership and
/// privilege statements left out or renamed by `crate::dumpscript`; an archive's by pg_restore's
/// `--no-owner --no-privileges`, or, with a role map, through its `script`).
pub fn into_client_with(
    input: &mut dyn Read,
    expected: &Digest,
    layout: Layout,
    mut psql: RunningClient,
    script: Option<Script>,
    prelude: &str,
    owners: &crate::dr::rolemap::Owners,
) -> Result<Checked> {
    let waiting = format!(
        "{} accepted no input and its session did no work",
        psql.program()
    );
    let fed = (|| {
        write_watched(&mut psql, &waiting, prelude.as_bytes())
            .map_err(|e| anyhow::Error::new(SinkFailed(e)))?;
        if let Some(script) = script {
            return through_script(input, expected, layout, &mut psql, script, &waiting, owners);
        }
        if layout.format != DumpFormat::Plain {
            return check_stream(input, expected, layout, &mut |data| {
                write_watched(&mut psql, &waiting, data)
            });
        }
        let mut rewrite = crate::dumpscript::OwnTransactionsOut::new(owners.clone());
        let mut write = |data: &[u8]| write_watched(&mut psql, &waiting, data);
        let checked = check_stream(input, expected, layout, &mut |data| {
            rewrite.feed(data, &mut write)
        })?;
        rewrite
            .finish(&mut write)
            .map_err(|e| anyhow::Error::new(SinkFailed(e)))?;
        Ok(checked)
    })();
    match fed {
        Ok(checked) => {
            crate::signals::waiting_on(format!(
                "{} did not finish its transaction",
                psql.program()
            ));
            let outcome = psql.finish()?;
            if !outcome.success {
                // killed because the run stopped (a signal, a stall): say that
                crate::signals::check_run()
                    .context("the restore client was killed before it confirmed its COMMIT")?;
                return Err(anyhow!(
                    "{} {}: {}{}",
                    outcome.program,
                    outcome.description,
                    quote(&outcome.stderr_tail),
                    missing_role_hint(&outcome.stderr_tail)
                ))
                .context("the restore failed and was rolled back");
            }
            Ok(checked)
        }
        Err(e) => {
            let outcome = psql.abort()?;
            // a client killed because the run stopped fails its writes too: the stop is the cause
            let e = match crate::signals::check_run() {
                Err(stop) => stop,
                Ok(()) => e,
            };
            if e.is::<SinkFailed>() || e.chain().any(|c| c.is::<SinkFailed>()) {
                // the client stopped first (ON_ERROR_STOP / --exit-on-error): its words are the error
                return Err(anyhow!(
                    "{} stopped: {}{}",
                    outcome.program,
                    quote(&outcome.stderr_tail),
                    missing_role_hint(&outcome.stderr_tail)
                ))
                .context("the restore failed and was rolled back");
            }
            Err(e.context(
                "nothing was committed: the restore client was stopped before the end of its transaction",
            ))
        }
    }
}

/// The checked archive into pg_restore (the script's converter), its script from a thread of
/// its own through `crate::dumpscript` into psql. The thread drains pg_restore's output to its
/// end even after psql stopped, so pg_restore never blocks on it while pgdrive writes its input.
/// A psql that stopped is a [`SinkFailed`] (psql's words are the error); a pg_restore that
/// stopped is an error of its own.
fn through_script(
    input: &mut dyn Read,
    expected: &Digest,
    layout: Layout,
    psql: &mut RunningClient,
    script: Script,
    waiting: &str,
    owners: &crate::dr::rolemap::Owners,
) -> Result<Checked> {
    let Script {
        mut converter,
        mut output,
    } = script;
    std::thread::scope(|scope| {
        let relay = std::thread::Builder::new()
            .name("restore-script".into())
            .spawn_scoped(scope, || -> io::Result<()> {
                let mut rewrite = crate::dumpscript::OwnTransactionsOut::new(owners.clone());
                let mut write = |data: &[u8]| write_watched(psql, waiting, data);
                let mut buf = vec![0u8; 256 << 10];
                let mut failed: Option<io::Error> = None;
                loop {
                    let n = match output.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(failed.unwrap_or(e)),
                    };
                    if failed.is_none() {
                        failed = rewrite.feed(&buf[..n], &mut write).err();
                    }
                }
                match failed {
                    Some(e) => Err(e),
                    None => rewrite.finish(&mut write),
                }
            })
            .context("starting the restore's script thread")?;
        let converting = "pg_restore accepted none of the archive";
        let checked = check_stream(input, expected, layout, &mut |data| {
            write_watched(&mut converter, converting, data)
        });
        let converted = match &checked {
            Ok(_) => converter.finish(),
            Err(_) => converter.abort(),
        };
        let relayed = relay
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the restore's script thread panicked")));
        let converted = converted?;
        match checked {
            // a damaged backup (or a stop) is the diagnosis that matters, whoever stopped
            Err(e) if !e.is::<SinkFailed>() => Err(e),
            _ if relayed.is_err() => Err(anyhow::Error::new(SinkFailed(
                relayed.expect_err("checked above"),
            ))),
            _ if !converted.success => Err(anyhow!(
                "pg_restore, turning the archive into SQL, {}: {}",
                converted.description,
                quote(&converted.stderr_tail)
            )),
            other => other,
        }
    })
}

/// Writes a backup's decompressed data to `file` (the spool of a parallel restore) through the
/// same checks as [`into_client`]. Returns only once every check passed and the file is flushed;
/// the caller must not use the file otherwise.
pub fn into_file(
    input: &mut dyn Read,
    expected: &Digest,
    layout: Layout,
    file: &mut std::fs::File,
) -> Result<Checked> {
    use std::io::Write;
    // the writes (about 0.5 CPU-s in the kernel per 800 MB) on a thread of their own, overlapping
    // decompression
    std::thread::scope(|scope| {
        let (queue, work) = copy_queue(COPY_QUEUE);
        let writer = std::thread::Builder::new()
            .name("restore-spool".into())
            .spawn_scoped(scope, move || -> io::Result<()> {
                work.each(|data| file.write_all(data))?;
                file.flush()
            })
            .context("starting the spool writer")?;
        let checked = check_stream(input, expected, layout, &mut |data| {
            queue
                .send(data)
                .map_err(|()| io::Error::other("the spool writer stopped"))
        });
        drop(queue);
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the spool writer failed")));
        match (checked, written) {
            // a damaged backup (or a stop) is the diagnosis that matters
            (Err(e), _) if !e.is::<SinkFailed>() => Err(e),
            (_, Err(e)) => Err(anyhow::Error::new(e).context("writing the spool file")),
            (Err(e), Ok(())) => Err(e.context("writing the spool file")),
            (Ok(checked), Ok(())) => Ok(checked),
        }
    })
}

/// Runs a parallel pg_restore on a spooled, already checked archive.
pub fn run_parallel(client: RunningClient) -> Result<()> {
    let outcome = client.wait_interruptible()?;
    if !outcome.success {
        return Err(anyhow!(
            "{} {}: {}{}",
            outcome.program,
            outcome.description,
            quote(&outcome.stderr_tail),
            missing_role_hint(&outcome.stderr_tail)
        ));
    }
    Ok(())
}

/// What to do when the client stopped because a role the backup names does not exist here.
fn missing_role_hint(stderr: &str) -> &'static str {
    if stderr.contains("role \"") && stderr.contains("does not exist") {
        " (a role the backup's objects belong to or are granted to is missing on this server: restore the globals first with restore --globals, rename it with --role-map OLD=NEW, or leave ownership out with --no-owner)"
    } else {
        ""
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
        let mut h = crate::storage::Hasher::default();
        h.update(bytes);
        h.finish()
    }

    const GZ_PLAIN: Layout = Layout {
        expected_rows: None,
        codec: Codec::Gzip(6),
        format: DumpFormat::Plain,
        encryption: None,
    };

    const DUMP: &[u8] =
        b"COPY public.t (a) FROM stdin;\n1\n2\n\\.\n--\n-- PostgreSQL database dump complete\n--\n";

    #[test]
    fn a_good_stream_passes_and_is_counted() {
        let file = gz(&[DUMP]);
        let mut out = Vec::new();
        let c = check_stream(&mut &file[..], &digest(&file), GZ_PLAIN.clone(), &mut |d| {
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
        let err =
            check_stream(&mut &bad[..], &expected, GZ_PLAIN.clone(), &mut |_| Ok(())).unwrap_err();
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
        let err = check_stream(
            &mut &file[..],
            &digest(&file),
            GZ_PLAIN.clone(),
            &mut |_| Ok(()),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("truncated"), "{err:#}");
    }

    #[test]
    fn garbage_with_matching_checksums_is_not_gzip() {
        let file = b"this is not gzip at all".to_vec();
        let err = check_stream(
            &mut &file[..],
            &digest(&file),
            GZ_PLAIN.clone(),
            &mut |_| Ok(()),
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("not a valid gzip:6 stream"),
            "{err:#}"
        );
    }
}
