//! A plain dump as psql is given it inside pgdrive's own transaction (see `crate::restore`).
//!
//! pg_dump wraps the large-object data of a plain dump in a transaction of its own: a section
//! headed `-- Data for Name: BLOBS; Type: BLOBS; …` holds `BEGIN;`, one `lo_open`/`lowrite`/
//! `lo_close` call per line, and `COMMIT;` (pg_backup_archiver.c, StartRestoreLOs/EndRestoreLOs).
//! Inside pgdrive's transaction that `COMMIT;` would commit everything restored so far, long before
//! the checksums are known. [`OwnTransactionsOut`] turns exactly those two lines into comments: a
//! line is touched only if it is exactly `BEGIN;` or `COMMIT;`, outside COPY data, in a section
//! whose pg_dump header says `Type: BLOBS` (where pg_dump writes nothing else on its own line).
//! Everything else — COPY data, function bodies, other sections — passes through byte for byte.

use std::io;

/// Lines outside COPY data are held until their end to be recognised; longer ones pass through
/// unrecognised (the same limit as the row counter's COPY headers).
const LINE_CAP: usize = 256 << 10;

const BLOBS_HEADER: &str = "-- Data for Name: ";
const BLOBS_TYPE: &str = "; Type: BLOBS; Schema: -; Owner: ";

/// Rewrites a plain dump's own large-object transaction into comments while it streams.
#[derive(Default)]
pub struct OwnTransactionsOut {
    in_copy: bool,
    in_blobs: bool,
    /// The current line outside COPY data (up to [`LINE_CAP`]), or the first bytes of a COPY
    /// data line (enough to see the `\.` end marker).
    line: Vec<u8>,
    /// The current line was longer than [`LINE_CAP`] and has been passed on already.
    overlong: bool,
    /// Bytes of the current COPY data line so far.
    copy_line_len: usize,
    out: Vec<u8>,
}

impl OwnTransactionsOut {
    /// Takes the next piece of the dump and hands `sink` what psql may run of it so far.
    pub fn feed(
        &mut self,
        mut data: &[u8],
        sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        self.out.clear();
        while !data.is_empty() {
            let (piece, complete) = match memchr::memchr(b'\n', data) {
                Some(pos) => (&data[..=pos], true),
                None => (data, false),
            };
            data = &data[piece.len()..];
            if self.in_copy {
                self.out.extend_from_slice(piece);
                let room = 3usize.saturating_sub(self.line.len());
                self.line.extend_from_slice(&piece[..piece.len().min(room)]);
                self.copy_line_len += piece.len();
                if complete {
                    if self.copy_line_len == 3 && self.line == b"\\.\n" {
                        self.in_copy = false;
                    }
                    self.line.clear();
                    self.copy_line_len = 0;
                }
                continue;
            }
            if self.overlong {
                self.out.extend_from_slice(piece);
            } else {
                self.line.extend_from_slice(piece);
                if self.line.len() > LINE_CAP {
                    self.out.append(&mut self.line);
                    self.overlong = true;
                }
            }
            if complete {
                self.end_sql_line();
            }
        }
        if self.out.is_empty() {
            return Ok(());
        }
        sink(&self.out)
    }

    /// Whatever is still held (a last line without a newline), unchanged.
    pub fn finish(&mut self, sink: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        if self.in_copy || self.line.is_empty() {
            return Ok(());
        }
        let rest = std::mem::take(&mut self.line);
        sink(&rest)
    }

    fn end_sql_line(&mut self) {
        if std::mem::take(&mut self.overlong) {
            return;
        }
        let line = std::mem::take(&mut self.line);
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        if crate::rowcount::copy_table(text).is_some() {
            self.in_copy = true;
        } else if text.starts_with(b"-- Name: ") || text.starts_with(BLOBS_HEADER.as_bytes()) {
            // a new section: the large-object data section or another
            self.in_blobs = text.starts_with(BLOBS_HEADER.as_bytes())
                && memchr::memmem::find(text, BLOBS_TYPE.as_bytes()).is_some();
        } else if self.in_blobs && (text == b"BEGIN;" || text == b"COMMIT;") {
            self.out.extend_from_slice(b"-- ");
            self.out.extend_from_slice(text);
            self.out.extend_from_slice(
                b" (left out by pgdrive: the whole restore is one transaction)\n",
            );
            return;
        }
        self.out.extend_from_slice(&line);
        self.line = line;
        self.line.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(text: &str, piece: usize) -> String {
        let mut f = OwnTransactionsOut::default();
        let mut out = Vec::new();
        for chunk in text.as_bytes().chunks(piece) {
            f.feed(chunk, &mut |b| {
                out.extend_from_slice(b);
                Ok(())
            })
            .unwrap();
        }
        f.finish(&mut |b| {
            out.extend_from_slice(b);
            Ok(())
        })
        .unwrap();
        String::from_utf8(out).unwrap()
    }

    /// The shape pg_dump 15 writes, with a COPY row and a function body that look like the
    /// statements, which must stay.
    const DUMP: &str = "SET x = 1;\n\
--\n-- Name: f(); Type: PROCEDURE; Schema: public; Owner: postgres\n--\n\n\
CREATE PROCEDURE public.f() LANGUAGE plpgsql AS $$\nBEGIN\nCOMMIT;\nEND $$;\n\n\
--\n-- Data for Name: t; Type: TABLE DATA; Schema: public; Owner: postgres\n--\n\n\
COPY public.t (a) FROM stdin;\nCOMMIT;\nBEGIN;\n\\.\n\n\
--\n-- Data for Name: BLOBS; Type: BLOBS; Schema: -; Owner: -\n--\n\n\
BEGIN;\n\nSELECT pg_catalog.lo_open('16400', 131072);\nSELECT pg_catalog.lowrite(0, '\\x6162');\n\
SELECT pg_catalog.lo_close(0);\n\nCOMMIT;\n\n\
--\n-- Name: t_a; Type: INDEX; Schema: public; Owner: postgres\n--\n\n\
CREATE INDEX t_a ON public.t (a);\nCOMMIT;\n\n--\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict k";

    #[test]
    fn only_the_large_object_sections_transaction_is_taken_out_whatever_the_chunking() {
        let expected = DUMP
            .replacen(
                "\nBEGIN;\n\nSELECT",
                "\n-- BEGIN; (left out by pgdrive: the whole restore is one transaction)\n\nSELECT",
                1,
            )
            .replacen(
                "lo_close(0);\n\nCOMMIT;\n",
                "lo_close(0);\n\n-- COMMIT; (left out by pgdrive: the whole restore is one transaction)\n",
                1,
            );
        assert_ne!(expected, DUMP);
        for piece in [1, 2, 3, 5, 17, 64, 4096] {
            assert_eq!(rewrite(DUMP, piece), expected, "piece {piece}");
        }
    }

    #[test]
    fn a_table_named_like_the_header_does_not_open_a_large_object_section() {
        let dump = "--\n-- Data for Name: x; Type: BLOBS; Schema: -; Owner: -; Type: TABLE DATA; Schema: public; Owner: postgres\n--\n\n\
COPY public.\"x; Type: BLOBS; Schema: -; Owner: -\" (a) FROM stdin;\nBEGIN;\n\\.\n";
        assert_eq!(rewrite(dump, 7), dump);
    }

    #[test]
    fn long_lines_pass_through_unchanged() {
        let long = format!(
            "SELECT '{}';\nCOPY t (a) FROM stdin;\n{}\n\\.\n",
            "x".repeat(LINE_CAP + 10),
            "y".repeat(1 << 20)
        );
        assert_eq!(rewrite(&long, 100_000), long);
    }
}
