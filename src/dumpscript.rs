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
//!
//! With `no_owner` (restore `--no-owner` of a plain dump, the counterpart of pg_restore's
//! `--no-owner --no-privileges`) the ownership and privilege statements are commented out too.
//! They are recognised by pg_dump's own section headers rather than by the statements' text
//! alone, so a COPY row or a function body that reads like one is never touched: every statement
//! line of a section headed `Type: ACL` or `Type: DEFAULT ACL` (which hold only GRANT, REVOKE and
//! ALTER DEFAULT PRIVILEGES), an `ALTER … OWNER TO o;` line whose `o` is the section header's
//! owner (pg_dump writes it right after the object it owns), and `SET`/`RESET SESSION
//! AUTHORIZATION` lines.

use std::io;

/// Lines outside COPY data are held until their end to be recognised; longer ones pass through
/// unrecognised (the same limit as the row counter's COPY headers).
const LINE_CAP: usize = 256 << 10;

const BLOBS_HEADER: &str = "-- Data for Name: ";
const BLOBS_TYPE: &str = "; Type: BLOBS; Schema: -; Owner: ";

/// Rewrites a plain dump's own large-object transaction (and, with `no_owner`, its ownership and
/// privilege statements) into comments while it streams.
#[derive(Default)]
pub struct OwnTransactionsOut {
    /// Leave out ownership and privileges (restore `--no-owner`).
    no_owner: bool,
    in_copy: bool,
    in_blobs: bool,
    /// The current section is an ACL or DEFAULT ACL entry.
    in_acl: bool,
    /// The current section header's owner (`-` when it has none).
    owner: Vec<u8>,
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
    /// `no_owner`: also leave out ownership and privilege statements.
    pub fn new(no_owner: bool) -> OwnTransactionsOut {
        OwnTransactionsOut {
            no_owner,
            ..Default::default()
        }
    }

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
            self.in_acl = [
                &b"; Type: ACL; Schema: "[..],
                b"; Type: DEFAULT ACL; Schema: ",
            ]
            .iter()
            .any(|t| memchr::memmem::find(text, t).is_some());
            self.owner = memchr::memmem::rfind(text, b"; Owner: ")
                .map(|i| text[i + 9..].to_vec())
                .unwrap_or_default();
        } else if self.in_blobs && (text == b"BEGIN;" || text == b"COMMIT;") {
            self.comment_out(text, "the whole restore is one transaction");
            return;
        } else if self.no_owner && self.is_ownership(text) {
            self.comment_out(text, "--no-owner");
            return;
        }
        self.out.extend_from_slice(&line);
        self.line = line;
        self.line.clear();
    }

    fn comment_out(&mut self, text: &[u8], why: &str) {
        self.out.extend_from_slice(b"-- ");
        self.out.extend_from_slice(text);
        self.out
            .extend_from_slice(format!(" (left out by pgdrive: {why})\n").as_bytes());
    }

    /// An ownership or privilege statement of pg_dump's (see the module's comment).
    fn is_ownership(&self, text: &[u8]) -> bool {
        if text.is_empty() || text.starts_with(b"--") {
            return false;
        }
        if self.in_acl
            || text.starts_with(b"SET SESSION AUTHORIZATION ")
            || text == b"RESET SESSION AUTHORIZATION;"
        {
            return true;
        }
        if !text.starts_with(b"ALTER ") || self.owner.is_empty() || self.owner == b"-" {
            return false;
        }
        let owner = String::from_utf8_lossy(&self.owner);
        let quoted = format!("\"{}\"", owner.replace('"', "\"\""));
        [owner.as_ref(), quoted.as_str()]
            .iter()
            .any(|o| text.ends_with(format!(" OWNER TO {o};").as_bytes()))
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
    fn no_owner_leaves_out_ownership_and_privileges_but_not_data_or_bodies() {
        let dump = "--\n-- Name: t; Type: TABLE; Schema: public; Owner: app\n--\n\n\
CREATE TABLE public.t (a text);\n\nALTER TABLE public.t OWNER TO app;\n\n\
--\n-- Name: f(); Type: FUNCTION; Schema: public; Owner: Big Boss\n--\n\n\
CREATE FUNCTION public.f() RETURNS int LANGUAGE sql AS $$\nALTER TABLE public.t OWNER TO app;\nSELECT 1 $$;\n\n\
ALTER FUNCTION public.f() OWNER TO \"Big Boss\";\n\n\
--\n-- Data for Name: t; Type: TABLE DATA; Schema: public; Owner: app\n--\n\n\
COPY public.t (a) FROM stdin;\nALTER TABLE public.t OWNER TO app;\nGRANT ALL ON TABLE public.t TO app;\n\\.\n\n\
--\n-- Name: TABLE t; Type: ACL; Schema: public; Owner: app\n--\n\n\
GRANT SELECT ON TABLE public.t TO reader;\n\n\
--\n-- Name: DEFAULT PRIVILEGES FOR TABLES; Type: DEFAULT ACL; Schema: public; Owner: app\n--\n\n\
ALTER DEFAULT PRIVILEGES FOR ROLE app IN SCHEMA public GRANT SELECT ON TABLES TO reader;\n";
        let mut f = OwnTransactionsOut::new(true);
        let mut out = Vec::new();
        for chunk in dump.as_bytes().chunks(7) {
            f.feed(chunk, &mut |b| {
                out.extend_from_slice(b);
                Ok(())
            })
            .unwrap();
        }
        let out = String::from_utf8(out).unwrap();
        let left_out = |stmt: &str| format!("-- {stmt} (left out by pgdrive: --no-owner)\n");
        let expected = dump
            .replacen("\nALTER TABLE public.t OWNER TO app;\n\n", &format!("\n{}\n", left_out("ALTER TABLE public.t OWNER TO app;")), 1)
            .replacen("ALTER FUNCTION public.f() OWNER TO \"Big Boss\";\n", &left_out("ALTER FUNCTION public.f() OWNER TO \"Big Boss\";"), 1)
            .replacen("GRANT SELECT ON TABLE public.t TO reader;\n", &left_out("GRANT SELECT ON TABLE public.t TO reader;"), 1)
            .replacen("ALTER DEFAULT PRIVILEGES FOR ROLE app IN SCHEMA public GRANT SELECT ON TABLES TO reader;\n", &left_out("ALTER DEFAULT PRIVILEGES FOR ROLE app IN SCHEMA public GRANT SELECT ON TABLES TO reader;"), 1);
        assert_eq!(out, expected);
        // the function body (owner Big Boss, not app) and the COPY rows are untouched
        assert!(out.contains("$$\nALTER TABLE public.t OWNER TO app;\nSELECT 1 $$"));
        assert!(out.contains("stdin;\nALTER TABLE public.t OWNER TO app;\nGRANT ALL"));
        // without no_owner nothing of it changes
        assert_eq!(rewrite(dump, 7), dump);
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
