//! Row counts read off the dump itself while it streams (custom archives: see `archive`, which
//! feeds its table data blocks through the same counter): in pg_dump's plain format every table's
//! data is a `COPY <table> (...) FROM stdin;` line, one line per row (COPY's text format escapes
//! newlines inside values), and a `\.` line. Counting those lines costs a newline scan next to
//! gzip, and gives exactly what the backup holds, which is what a restore test must get back.
//!
//! Memory stays bounded whatever the row sizes: of each line only a short prefix is kept.

use std::collections::BTreeMap;

/// How much of a line outside COPY data is kept to recognise a `COPY ... FROM stdin;` header
/// (a table with many long column names makes a long header).
const HEADER_CAP: usize = 256 << 10;

#[derive(Default)]
pub struct RowCounter {
    /// The table whose data is streaming, and its rows so far.
    in_copy: Option<(String, u64)>,
    prefix: Vec<u8>,
    line_len: usize,
    counts: BTreeMap<String, u64>,
}

impl RowCounter {
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.in_copy.is_some() && self.line_len == 0 && !data.starts_with(b"\\.") {
                data = self.rows_fast(data);
                continue;
            }
            match memchr::memchr(b'\n', data) {
                Some(pos) => {
                    self.push_partial(&data[..pos]);
                    self.end_line();
                    data = &data[pos + 1..];
                }
                None => {
                    self.push_partial(data);
                    return;
                }
            }
        }
    }

    /// Inside COPY data at the start of a line that is not the end marker: counts whole rows up
    /// to the next line that may be `\.` without looking at each line (no per-row work but the
    /// newline count). Returns the rest, which starts at that line or is the unfinished last one.
    fn rows_fast<'d>(&mut self, data: &'d [u8]) -> &'d [u8] {
        let (rows, rest) = match memchr::memmem::find(data, b"\n\\.") {
            // every line before the candidate marker's is a row
            Some(pos) => (
                memchr::memchr_iter(b'\n', &data[..=pos]).count(),
                &data[pos + 1..],
            ),
            None => match memchr::memrchr(b'\n', data) {
                Some(last) => (
                    memchr::memchr_iter(b'\n', &data[..=last]).count(),
                    &data[last + 1..],
                ),
                None => (0, data),
            },
        };
        if let Some((_, n)) = &mut self.in_copy {
            *n += rows as u64;
        }
        if rows == 0 {
            // no newline before the end: an unfinished line, kept as a prefix
            self.push_partial(rest);
            return &[];
        }
        rest
    }

    fn push_partial(&mut self, bytes: &[u8]) {
        let cap = if self.in_copy.is_some() {
            3
        } else {
            HEADER_CAP
        };
        let room = cap.saturating_sub(self.prefix.len());
        self.prefix
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
        self.line_len += bytes.len();
    }

    fn end_line(&mut self) {
        match &mut self.in_copy {
            Some((_, rows)) => {
                if self.line_len == 2 && self.prefix == b"\\." {
                    let (table, rows) = self.in_copy.take().unwrap();
                    *self.counts.entry(table).or_default() += rows;
                } else {
                    *rows += 1;
                }
            }
            None => {
                if self.line_len == self.prefix.len() {
                    if let Some(table) = copy_table(&self.prefix) {
                        self.in_copy = Some((table, 0));
                    }
                }
            }
        }
        self.prefix.clear();
        self.line_len = 0;
    }

    /// Ends the current table's data where no `\.` line does (a custom archive's data block
    /// ends with the block); a last line without its newline is a row.
    pub fn end_copy(&mut self) {
        if self.line_len > 0 {
            self.end_line();
        }
        if let Some((table, rows)) = self.in_copy.take() {
            *self.counts.entry(table).or_default() += rows;
        }
    }

    /// Rows per table (as named in the dump, e.g. `public."Order Items"`).
    pub fn finish(self) -> BTreeMap<String, u64> {
        self.counts
    }
}

/// The row counter for a dump's format: COPY blocks of a plain dump, or the data blocks of a
/// custom archive (see `archive`).
pub enum DumpRows {
    Plain(RowCounter),
    Archive(Box<crate::archive::ArchiveRowCounter>),
}

impl DumpRows {
    pub fn new(plain: bool) -> DumpRows {
        if plain {
            DumpRows::Plain(RowCounter::default())
        } else {
            DumpRows::Archive(Box::default())
        }
    }

    pub fn feed(&mut self, data: &[u8]) {
        match self {
            DumpRows::Plain(c) => c.feed(data),
            DumpRows::Archive(c) => c.feed(data),
        }
    }

    /// Rows per table. An archive this build cannot read gives no counts (logged): the backup
    /// is still good, only its manifest is empty, as it was for every archive before.
    pub fn finish(self) -> BTreeMap<String, u64> {
        match self {
            DumpRows::Plain(c) => c.finish(),
            DumpRows::Archive(c) => c.finish().unwrap_or_else(|why| {
                crate::log::warn("no row counts for this archive", &[("reason", why)]);
                BTreeMap::new()
            }),
        }
    }
}

/// The table of a `COPY <table> [(<columns>)] FROM stdin;` line.
pub(crate) fn copy_table(line: &[u8]) -> Option<String> {
    // the dump is in the database's encoding, which need not be UTF-8
    let line = String::from_utf8_lossy(line);
    let rest = line.strip_prefix("COPY ")?;
    if !rest.ends_with(" FROM stdin;") {
        return None;
    }
    // the name runs to the first space outside double quotes
    let mut quoted = false;
    let mut end = rest.len();
    for (i, c) in rest.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                end = i;
                break;
            }
            _ => {}
        }
    }
    Some(rest[..end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(text: &str, piece: usize) -> BTreeMap<String, u64> {
        let mut c = RowCounter::default();
        for chunk in text.as_bytes().chunks(piece) {
            c.feed(chunk);
        }
        c.finish()
    }

    const DUMP: &str = "SET x = 1;\nCOPY public.orders (id, total) FROM stdin;\n1\t2.00\n2\t\\N\n3\ta\\nb\n\\.\n\n\
COPY public.\"Order Items\" (id, \"we ird\") FROM stdin;\n1\tx\n\\.\nCOPY public.empty (id) FROM stdin;\n\\.\n\
CREATE FUNCTION f() RETURNS text AS $$ COPY t FROM stdin; $$ LANGUAGE sql;\n-- PostgreSQL database dump complete\n";

    #[test]
    fn counts_rows_whatever_the_chunking() {
        for piece in [1, 2, 3, 7, 64, 4096] {
            let c = count(DUMP, piece);
            assert_eq!(c.get("public.orders"), Some(&3), "piece {piece}");
            assert_eq!(c.get("public.\"Order Items\""), Some(&1), "piece {piece}");
            assert_eq!(c.get("public.empty"), Some(&0), "piece {piece}");
            assert_eq!(c.len(), 3, "piece {piece}: {c:?}");
        }
    }

    #[test]
    fn a_data_line_that_merely_starts_with_backslash_dot_is_a_row() {
        let c = count("COPY t (a) FROM stdin;\n\\.x\n\\\\.\n\\.\n", 5);
        assert_eq!(c.get("t"), Some(&2));
    }

    #[test]
    fn rows_split_anywhere_around_the_end_marker_count_the_same() {
        let text = "COPY t (a) FROM stdin;\nx\n\\.y\n\\\n.\n\\.\nCOPY u (b) FROM stdin;\n\\.\n";
        let want = count(text, 1 << 20);
        assert_eq!(want.get("t"), Some(&4));
        assert_eq!(want.get("u"), Some(&0));
        for a in 0..text.len() {
            for b in a..text.len() {
                let mut c = RowCounter::default();
                c.feed(&text.as_bytes()[..a]);
                c.feed(&text.as_bytes()[a..b]);
                c.feed(&text.as_bytes()[b..]);
                assert_eq!(c.finish(), want, "split at {a} and {b}");
            }
        }
    }

    #[test]
    fn long_rows_do_not_grow_memory() {
        let mut c = RowCounter::default();
        c.feed(b"COPY t (a) FROM stdin;\n");
        let big = vec![b'x'; 10 << 20];
        c.feed(&big);
        assert!(c.prefix.len() <= 3);
        c.feed(b"\n\\.\n");
        assert_eq!(c.finish().get("t"), Some(&1));
    }
}
