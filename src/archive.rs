//! Row counts read off a custom-format archive as it streams, so that custom backups carry the
//! same manifest as plain ones and a restore test can check it.
//!
//! pgdrive runs `pg_dump -Fc --compress=0` into a pipe, so the archive is: a header, the table of
//! contents (TOC), then one data block per TOC entry that has data, in order, and nothing after.
//! No offsets are filled in (the output cannot be seeked), and the data is not compressed: a
//! table's block holds its rows in COPY text format, one line per row, as in a plain dump. So the
//! counting itself is [`crate::rowcount::RowCounter`]'s, fed with the entry's own
//! `COPY … FROM stdin;` statement and then the block's bytes; tables get the same names as in a
//! plain dump of the same database.
//!
//! The layout (pg_dump's `pg_backup_archiver.c` and `pg_backup_custom.c`):
//! - integers: a sign byte (non-zero = negative), then `intSize` bytes of magnitude, least
//!   significant first; strings: an integer length (-1 = NULL), then the bytes;
//! - header: `PGDMP`, version major/minor/revision, `intSize`, `offSize`, format (1 = custom),
//!   compression (an integer before 1.15, one byte from 1.15), the creation time (7 integers),
//!   then the database name, the server's and pg_dump's version strings;
//! - TOC: the entry count, then per entry: dump id, had-data flag, table oid, oid, tag, desc,
//!   section, definition, drop statement, COPY statement, namespace, tablespace, table access
//!   method (1.14+), relkind (an integer, 1.16+), owner, `"false"`, the dependency ids (strings
//!   ending with a NULL one), and the data's position (a flag byte and `offSize` bytes);
//! - data: a block type byte (1 = data, 3 = large objects) and the dump id, then chunks (an
//!   integer length, the bytes) ending with length 0; a large-object block is a series of
//!   (oid, chunks) ending with oid 0.
//!
//! Memory stays small: only the TOC entry being read is buffered (at most [`MAX_ITEM`]: a
//! length that a damaged archive gets wrong must not make the counter buffer the rest of the
//! stream), never a data chunk.

use std::collections::{BTreeMap, HashMap};

use crate::rowcount::RowCounter;

/// Oldest archive version read (PostgreSQL 9.0's pg_dump) and the newest known.
const VERSION_MIN: (u8, u8) = (1, 10);
const VERSION_MAX: (u8, u8) = (1, 16);
const BLOCK_DATA: u8 = 1;
const BLOCK_LARGE_OBJECTS: u8 = 3;
/// The largest header or TOC entry read: far above any real one (a definition of several MB is
/// rare), far below what would strain memory.
const MAX_ITEM: usize = 64 << 20;

#[derive(Debug)]
enum State {
    Header,
    Toc {
        left: u64,
    },
    /// Between data blocks (the archive may end here).
    Block,
    /// Expecting a chunk length (or 0: end of the object).
    ChunkLen {
        objects: bool,
    },
    /// Inside a chunk's bytes.
    Payload {
        left: u64,
        objects: bool,
    },
    /// In a large-object block, expecting the next oid (0: end of the block).
    ObjectOid,
    Failed(String),
}

/// The archive's integer and string encodings, and the version-dependent TOC fields.
#[derive(Clone, Copy, Debug, Default)]
struct Format {
    int_size: usize,
    off_size: usize,
    version: (u8, u8),
}

/// Reads integers and strings from a buffer; `None` when more bytes are needed.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    format: Format,
}

impl<'a> Cursor<'a> {
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let out = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(out)
    }

    fn byte(&mut self) -> Option<u8> {
        Some(self.bytes(1)?[0])
    }

    fn int(&mut self) -> Option<i64> {
        let negative = self.byte()? != 0;
        let size = self.format.int_size;
        let mut value: i64 = 0;
        for (i, b) in self.bytes(size)?.iter().enumerate() {
            if i < 8 {
                value |= (*b as i64) << (8 * i);
            }
        }
        // a damaged archive may hold any bytes here: never overflow
        Some(if negative {
            value.wrapping_neg()
        } else {
            value
        })
    }

    /// `Some(None)` is a NULL string.
    fn string(&mut self) -> Option<Option<&'a [u8]>> {
        let len = self.int()?;
        if len < 0 {
            return Some(None);
        }
        Some(Some(self.bytes(usize::try_from(len).ok()?)?))
    }
}

/// Counts rows per table in a custom-format archive fed in pieces of any size.
pub struct ArchiveRowCounter {
    state: State,
    format: Format,
    /// Bytes received but not yet parsed: `pending[start..]`. Consuming only moves `start`, so
    /// the many small items of a data block (each row is often its own chunk) cost no copying.
    pending: Vec<u8>,
    start: usize,
    /// Dump id → the entry's `COPY … FROM stdin;` line, for entries with table data.
    copy_lines: HashMap<i64, Vec<u8>>,
    /// Whether the current data block is a table's (its payload goes to `rows`).
    in_table: bool,
    rows: RowCounter,
}

impl Default for ArchiveRowCounter {
    fn default() -> Self {
        ArchiveRowCounter {
            state: State::Header,
            format: Format::default(),
            pending: Vec::new(),
            start: 0,
            copy_lines: HashMap::new(),
            in_table: false,
            rows: RowCounter::default(),
        }
    }
}

/// What parsing one item found.
enum Step {
    /// Consumed this many bytes of `pending`.
    Took(usize),
    /// More bytes are needed.
    More,
}

impl ArchiveRowCounter {
    pub fn feed(&mut self, mut data: &[u8]) {
        loop {
            // payload bytes go straight through, unbuffered
            if let State::Payload { left, objects } = self.state {
                let buffered = self.pending.len() - self.start;
                if buffered > 0 {
                    // bytes buffered before the payload began belong to it first
                    let take = (left as usize).min(buffered);
                    let pending = std::mem::take(&mut self.pending);
                    self.payload(&pending[self.start..self.start + take], left, objects);
                    self.pending = pending;
                    self.consume(take);
                    continue;
                }
                let take = (left as usize).min(data.len());
                self.payload(&data[..take], left, objects);
                data = &data[take..];
                if data.is_empty() {
                    return;
                }
                continue;
            }
            if matches!(self.state, State::Failed(_)) {
                return;
            }
            match self.step() {
                Step::Took(n) => self.consume(n),
                Step::More => {
                    if data.is_empty() {
                        return;
                    }
                    self.pending.drain(..self.start);
                    self.start = 0;
                    if self.pending.len() > MAX_ITEM {
                        self.fail(format!(
                            "an item of the archive's header or table of contents is larger than {} MiB: the archive is damaged",
                            MAX_ITEM >> 20
                        ));
                        return;
                    }
                    // buffer only about what the next item may need, so that a payload after it
                    // streams unbuffered; doubling keeps re-reading a large TOC entry linear
                    let take = data.len().min(self.pending.len().max(64 << 10));
                    self.pending.extend_from_slice(&data[..take]);
                    data = &data[take..];
                }
            }
        }
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.pending.len() {
            self.pending.clear();
            self.start = 0;
        }
    }

    fn payload(&mut self, bytes: &[u8], left: u64, objects: bool) {
        if self.in_table && !objects {
            self.rows.feed(bytes);
        }
        let left = left - bytes.len() as u64;
        self.state = if left == 0 {
            State::ChunkLen { objects }
        } else {
            State::Payload { left, objects }
        };
    }

    fn fail(&mut self, why: String) -> Step {
        self.state = State::Failed(why);
        self.pending = Vec::new();
        self.start = 0;
        Step::Took(0)
    }

    /// Parses the next item from `pending`.
    fn step(&mut self) -> Step {
        let format = self.format;
        let mut c = Cursor {
            buf: &self.pending[self.start..],
            pos: 0,
            format,
        };
        match self.state {
            State::Header => match read_header(&mut c) {
                None => Step::More,
                Some(Err(why)) => self.fail(why),
                Some(Ok((format, toc_count))) => {
                    let took = c.pos;
                    self.format = format;
                    self.state = State::Toc { left: toc_count };
                    Step::Took(took)
                }
            },
            State::Toc { left: 0 } => {
                self.state = State::Block;
                Step::Took(0)
            }
            State::Toc { left } => match read_toc_entry(&mut c) {
                None => Step::More,
                Some(Err(why)) => self.fail(why),
                Some(Ok((id, copy))) => {
                    let took = c.pos;
                    if let Some(line) = copy {
                        self.copy_lines.insert(id, line);
                    }
                    self.state = State::Toc { left: left - 1 };
                    Step::Took(took)
                }
            },
            State::Block => {
                let (Some(kind), Some(id)) = (c.byte(), c.int()) else {
                    return Step::More;
                };
                let took = c.pos;
                match kind {
                    BLOCK_DATA => {
                        self.in_table = match self.copy_lines.get(&id) {
                            Some(line) => {
                                let line = line.clone();
                                self.rows.feed(&line);
                                true
                            }
                            None => false,
                        };
                        self.state = State::ChunkLen { objects: false };
                    }
                    BLOCK_LARGE_OBJECTS => {
                        self.in_table = false;
                        self.state = State::ObjectOid;
                    }
                    other => return self.fail(format!("unknown data block type {other}")),
                }
                Step::Took(took)
            }
            State::ObjectOid => {
                let Some(oid) = c.int() else {
                    return Step::More;
                };
                self.state = if oid == 0 {
                    State::Block
                } else {
                    State::ChunkLen { objects: true }
                };
                Step::Took(c.pos)
            }
            State::ChunkLen { objects } => {
                let Some(len) = c.int() else {
                    return Step::More;
                };
                let took = c.pos;
                match len {
                    0 if objects => self.state = State::ObjectOid,
                    0 => {
                        if self.in_table {
                            self.rows.end_copy();
                            self.in_table = false;
                        }
                        self.state = State::Block;
                    }
                    n if n < 0 => return self.fail(format!("a negative chunk length {n}")),
                    n => {
                        self.state = State::Payload {
                            left: n as u64,
                            objects,
                        }
                    }
                }
                Step::Took(took)
            }
            State::Payload { .. } | State::Failed(_) => Step::Took(0),
        }
    }

    /// Rows per table, named as in a plain dump; an error when the stream was not an archive
    /// this reader understands, or ended inside an item.
    pub fn finish(self) -> Result<BTreeMap<String, u64>, String> {
        match self.state {
            State::Failed(why) => Err(why),
            State::Block if self.start == self.pending.len() => Ok(self.rows.finish()),
            State::Header => {
                Err("the stream is not a complete custom-format archive header".into())
            }
            _ => Err("the archive ends inside an item: it is truncated".into()),
        }
    }
}

/// The header: the format, and the TOC's entry count that follows it.
fn read_header(c: &mut Cursor) -> Option<Result<(Format, u64), String>> {
    let magic = c.bytes(5)?;
    if magic != b"PGDMP" {
        return Some(Err("the stream does not start with PGDMP".into()));
    }
    let (major, minor, _revision) = (c.byte()?, c.byte()?, c.byte()?);
    let version = (major, minor);
    if !(VERSION_MIN..=VERSION_MAX).contains(&version) {
        return Some(Err(format!(
            "archive version {major}.{minor} is not one pgdrive reads ({}.{} to {}.{})",
            VERSION_MIN.0, VERSION_MIN.1, VERSION_MAX.0, VERSION_MAX.1
        )));
    }
    let int_size = c.byte()? as usize;
    let off_size = c.byte()? as usize;
    if !(1..=16).contains(&int_size) || !(1..=16).contains(&off_size) {
        return Some(Err(format!(
            "implausible integer sizes {int_size}/{off_size}"
        )));
    }
    c.format = Format {
        int_size,
        off_size,
        version,
    };
    let format = c.byte()?;
    if format != 1 {
        return Some(Err(format!("archive format {format} is not custom (1)")));
    }
    let compression = if version >= (1, 15) {
        c.byte()? as i64
    } else {
        c.int()?
    };
    if compression != 0 {
        return Some(Err(format!(
            "the archive's data is compressed by pg_dump ({compression})"
        )));
    }
    for _ in 0..7 {
        c.int()?; // creation time
    }
    for _ in 0..3 {
        c.string()?; // database name, server version, pg_dump version
    }
    let count = c.int()?;
    match u64::try_from(count) {
        Ok(n) => Some(Ok((c.format, n))),
        Err(_) => Some(Err(format!("a negative TOC entry count {count}"))),
    }
}

/// A TOC entry's dump id and, for table data, its `COPY … FROM stdin;` line.
type TocEntry = (i64, Option<Vec<u8>>);

/// One TOC entry; `None` when more bytes are needed.
fn read_toc_entry(c: &mut Cursor) -> Option<Result<TocEntry, String>> {
    let table_data: &[u8] = b"TABLE DATA";
    let id = c.int()?;
    let _had_data = c.int()?;
    let _table_oid = c.string()?;
    let _oid = c.string()?;
    let _tag = c.string()?;
    let desc = c.string()?;
    let _section = c.int()?;
    let _definition = c.string()?;
    let _drop = c.string()?;
    let copy = c.string()?;
    let _namespace = c.string()?;
    let _tablespace = c.string()?;
    if c.format.version >= (1, 14) {
        let _table_am = c.string()?;
    }
    if c.format.version >= (1, 16) {
        let _relkind = c.int()?;
    }
    let _owner = c.string()?;
    let _with_oids = c.string()?;
    while c.string()?.is_some() {} // dependencies, ending with NULL
    let _position_flag = c.byte()?;
    c.bytes(c.format.off_size)?;
    if id <= 0 {
        return Some(Err(format!("TOC entry id {id} out of range")));
    }
    let copy = copy.filter(|_| desc == Some(table_data)).and_then(|stmt| {
        // the statement is one line ending with a newline
        let end = memchr::memchr(b'\n', stmt).unwrap_or(stmt.len());
        let mut line = stmt[..end].to_vec();
        line.push(b'\n');
        line.starts_with(b"COPY ").then_some(line)
    });
    Some(Ok((id, copy)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer of the archive's encodings, to build test archives.
    struct W {
        out: Vec<u8>,
        version: (u8, u8),
    }

    impl W {
        fn int(&mut self, v: i64) {
            self.out.push((v < 0) as u8);
            self.out
                .extend_from_slice(&(v.unsigned_abs() as u32).to_le_bytes());
        }
        fn string(&mut self, s: Option<&str>) {
            match s {
                None => self.int(-1),
                Some(s) => {
                    self.int(s.len() as i64);
                    self.out.extend_from_slice(s.as_bytes());
                }
            }
        }
        fn header(&mut self, entries: i64) {
            self.out.extend_from_slice(b"PGDMP");
            self.out
                .extend_from_slice(&[self.version.0, self.version.1, 0, 4, 8, 1]);
            if self.version >= (1, 15) {
                self.out.push(0);
            } else {
                self.int(0);
            }
            for _ in 0..7 {
                self.int(1);
            }
            for s in ["db", "15.1", "15.1"] {
                self.string(Some(s));
            }
            self.int(entries);
        }
        fn entry(&mut self, id: i64, desc: &str, copy: Option<&str>) {
            self.int(id);
            self.int(copy.is_some() as i64);
            for s in [Some("0"), Some("0"), Some("t"), Some(desc)] {
                self.string(s);
            }
            self.int(3);
            for s in [Some(""), Some(""), copy, Some("public"), None] {
                self.string(s);
            }
            if self.version >= (1, 14) {
                self.string(Some("heap"));
            }
            if self.version >= (1, 16) {
                self.int(114);
            }
            self.string(Some("postgres"));
            self.string(Some("false"));
            self.string(Some("7"));
            self.string(None);
            self.out.push(1);
            self.out.extend_from_slice(&[0; 8]);
        }
        fn data(&mut self, id: i64, chunks: &[&str]) {
            self.out.push(BLOCK_DATA);
            self.int(id);
            for c in chunks {
                self.int(c.len() as i64);
                self.out.extend_from_slice(c.as_bytes());
            }
            self.int(0);
        }
        fn objects(&mut self, id: i64, objects: &[&[u8]]) {
            self.out.push(BLOCK_LARGE_OBJECTS);
            self.int(id);
            for (i, o) in objects.iter().enumerate() {
                self.int(1000 + i as i64);
                self.int(o.len() as i64);
                self.out.extend_from_slice(o);
                self.int(0);
            }
            self.int(0);
        }
    }

    fn archive(version: (u8, u8)) -> Vec<u8> {
        let mut w = W {
            out: Vec::new(),
            version,
        };
        w.header(5);
        w.entry(1, "TABLE", None);
        w.entry(2, "TABLE DATA", Some("COPY public.t (a, b) FROM stdin;\n"));
        w.entry(
            3,
            "TABLE DATA",
            Some("COPY public.\"Odd Name\" (a) FROM stdin;\n"),
        );
        w.entry(4, "BLOBS", None);
        w.entry(5, "TABLE DATA", Some("COPY public.empty (a) FROM stdin;\n"));
        w.data(2, &["1\tx\n", "2\ta\\nb\n", "3\t\\N\n", "\\.\n\n\n"]);
        // rows split across chunks, and no terminator (newer pg_dump may leave it out)
        w.data(3, &["1\n2", "\n3\n"]);
        w.objects(4, &[b"\n\n\n", &[0u8; 300]]);
        w.data(5, &["\\.\n\n\n"]);
        w.out
    }

    fn count(bytes: &[u8], piece: usize) -> Result<BTreeMap<String, u64>, String> {
        let mut c = ArchiveRowCounter::default();
        for chunk in bytes.chunks(piece) {
            c.feed(chunk);
        }
        c.finish()
    }

    #[test]
    fn counts_rows_of_every_version_whatever_the_chunking() {
        for version in [(1, 10), (1, 14), (1, 15), (1, 16)] {
            let bytes = archive(version);
            for piece in [1, 2, 5, 13, 64, 100_000] {
                let c = count(&bytes, piece).unwrap();
                let want = BTreeMap::from([
                    ("public.t".to_string(), 3u64),
                    ("public.\"Odd Name\"".to_string(), 3),
                    ("public.empty".to_string(), 0),
                ]);
                assert_eq!(c, want, "version {version:?}, piece {piece}");
            }
        }
    }

    #[test]
    fn a_cut_archive_or_another_stream_is_an_error() {
        let bytes = archive((1, 14));
        for cut in [3, 40, 200, bytes.len() - 1] {
            assert!(count(&bytes[..cut], 7).is_err(), "cut at {cut}");
        }
        assert!(count(b"-- PostgreSQL database dump\n", 4).is_err());
        let mut future = archive((1, 14));
        future[6] = 99;
        assert!(count(&future, 4096).unwrap_err().contains("1.99"));
    }

    #[test]
    fn many_small_chunks_are_counted_in_linear_time() {
        let mut w = W {
            out: Vec::new(),
            version: (1, 14),
        };
        w.header(1);
        w.entry(1, "TABLE DATA", Some("COPY t (a) FROM stdin;\n"));
        let row = format!("{}\n", "y".repeat(60));
        let rows: Vec<&str> = (0..200_000).map(|_| row.as_str()).collect();
        w.data(1, &rows);
        let started = std::time::Instant::now();
        let c = count(&w.out, 256 << 10).unwrap();
        assert_eq!(c.get("t"), Some(&200_000));
        // copying the buffer per chunk would take minutes here; linear work takes milliseconds
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_damaged_length_neither_panics_nor_buffers_the_rest_of_the_stream() {
        // an integer of the most negative magnitude (intSize 8) where the compression is read
        let mut header = b"PGDMP".to_vec();
        header.extend_from_slice(&[1, 14, 0, 8, 8, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0x80]);
        assert!(count(&header, 3).is_err());

        // a TOC entry whose tag claims a terabyte: the counter gives up at MAX_ITEM
        let mut w = W {
            out: Vec::new(),
            version: (1, 14),
        };
        w.header(1);
        w.int(1);
        w.int(1);
        w.string(Some("0"));
        w.string(Some("0"));
        w.int(0x7fff_ffff); // the tag's length: 2 GiB
        let mut c = ArchiveRowCounter::default();
        c.feed(&w.out);
        let filler = vec![b'x'; 1 << 20];
        for _ in 0..(MAX_ITEM >> 20) + 8 {
            c.feed(&filler);
            assert!(
                c.pending.len() <= MAX_ITEM + (1 << 20),
                "{}",
                c.pending.len()
            );
        }
        let why = c.finish().unwrap_err();
        assert!(why.contains("larger than 64 MiB"), "{why}");
    }

    #[test]
    fn a_large_chunk_is_not_buffered() {
        let mut w = W {
            out: Vec::new(),
            version: (1, 14),
        };
        w.header(1);
        w.entry(1, "TABLE DATA", Some("COPY t (a) FROM stdin;\n"));
        let row = format!("{}\n", "x".repeat(4 << 20));
        w.data(1, &[&row]);
        let mut c = ArchiveRowCounter::default();
        for chunk in w.out.chunks(1 << 20) {
            c.feed(chunk);
            assert!(c.pending.len() <= 128 << 10, "{}", c.pending.len());
        }
        assert_eq!(c.finish().unwrap().get("t"), Some(&1));
    }
}
