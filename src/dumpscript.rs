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
//! With [`Owners::LeaveOut`] (restore `--no-owner` of a plain dump, the counterpart of pg_restore's
//! `--no-owner --no-privileges`) the ownership and privilege statements are commented out too.
//! They are recognised by pg_dump's own section headers rather than by the statements' text
//! alone, so a COPY row or a function body that reads like one is never touched: every statement
//! line of a section headed `Type: ACL` or `Type: DEFAULT ACL` (which hold only GRANT, REVOKE and
//! ALTER DEFAULT PRIVILEGES), an `ALTER … OWNER TO o;` line whose `o` is the section header's
//! owner (pg_dump writes it right after the object it owns), and `SET`/`RESET SESSION
//! AUTHORIZATION` lines.
//!
//! With a role map (restore `--role-map OLD=NEW`) the same statements are rewritten instead:
//! the owner in those `ALTER … OWNER TO` lines and in `SET SESSION AUTHORIZATION`, and the roles
//! a privilege statement names (after `TO`, `FROM`, `FOR ROLE` and `GRANTED BY` in ACL and
//! DEFAULT ACL sections), a policy's `TO` roles (before its `USING`/`WITH CHECK`) and a user
//! mapping's role. The statement is read as SQL tokens, so a schema or table whose quoted name
//! reads like a keyword or a role is never taken for one; roles the map does not name stay.

use std::io;

use crate::dr::rolemap::Owners;

/// Lines outside COPY data are held until their end to be recognised; longer ones pass through
/// unrecognised (the same limit as the row counter's COPY headers).
const LINE_CAP: usize = 256 << 10;

const BLOBS_HEADER: &str = "-- Data for Name: ";
const BLOBS_TYPE: &str = "; Type: BLOBS; Schema: -; Owner: ";

/// Rewrites a plain dump's own large-object transaction into comments while it streams (and,
/// per [`Owners`], its ownership and privilege statements: left out, or their roles renamed).
#[derive(Default)]
pub struct OwnTransactionsOut {
    owners: Owners,
    in_copy: bool,
    in_blobs: bool,
    /// The current section's kind, where it holds statements that name roles.
    section: Section,
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
    /// `owners`: what to do with ownership and privilege statements.
    pub fn new(owners: Owners) -> OwnTransactionsOut {
        OwnTransactionsOut {
            owners,
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
            self.section = Section::of_header(text);
            self.owner = memchr::memmem::rfind(text, b"; Owner: ")
                .map(|i| text[i + 9..].to_vec())
                .unwrap_or_default();
        } else if self.in_blobs && (text == b"BEGIN;" || text == b"COMMIT;") {
            self.comment_out(text, "the whole restore is one transaction");
            return;
        } else if self.owners.leave_out() && self.is_ownership(text) {
            self.comment_out(text, "--no-owner");
            return;
        } else if let Some(mapped) = self.with_roles_mapped(text) {
            self.out.extend_from_slice(&mapped);
            self.out.push(b'\n');
            self.line = line;
            self.line.clear();
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
        if matches!(self.section, Section::Acl)
            || text.starts_with(b"SET SESSION AUTHORIZATION ")
            || text == b"RESET SESSION AUTHORIZATION;"
        {
            return true;
        }
        self.owner_to_suffix(text).is_some()
    }

    /// The length of the ` OWNER TO o;` that ends an `ALTER` statement giving the object to its
    /// section's owner `o` (bare or quoted, as pg_dump writes it).
    fn owner_to_suffix(&self, text: &[u8]) -> Option<usize> {
        if !text.starts_with(b"ALTER ") || self.owner.is_empty() || self.owner == b"-" {
            return None;
        }
        let owner = String::from_utf8_lossy(&self.owner);
        let quoted = crate::commands::source::quote_ident(&owner);
        [owner.as_ref(), quoted.as_str()]
            .iter()
            .map(|o| format!(" OWNER TO {o};"))
            .find(|suffix| text.ends_with(suffix.as_bytes()))
            .map(|suffix| suffix.len())
    }

    /// The statement line with the role map applied, if it names a mapped role where a role
    /// belongs (see the module's comment); `None` when nothing changes.
    fn with_roles_mapped(&self, text: &[u8]) -> Option<Vec<u8>> {
        let map = self.owners.map()?;
        if text.is_empty() || text.starts_with(b"--") {
            return None;
        }
        if let Some(len) = self.owner_to_suffix(text) {
            let owner = String::from_utf8_lossy(&self.owner);
            let new = map.get(&owner)?;
            let mut out = text[..text.len() - len].to_vec();
            out.extend_from_slice(b" OWNER TO ");
            out.extend_from_slice(crate::commands::source::quote_ident(new).as_bytes());
            out.push(b';');
            return Some(out);
        }
        if let Some(literal) = text
            .strip_prefix(b"SET SESSION AUTHORIZATION ")
            .and_then(|t| t.strip_suffix(b";"))
        {
            let name = sql_literal(literal)?;
            let new = map.get(&name)?;
            let mut out = b"SET SESSION AUTHORIZATION ".to_vec();
            out.extend_from_slice(crate::dblocale::quote_literal(new).as_bytes());
            out.push(b';');
            return Some(out);
        }
        let spans = role_positions(text, self.section);
        let mut out = text.to_vec();
        let mut changed = false;
        // from the end, so earlier spans keep their offsets
        for (range, name) in spans.into_iter().rev() {
            if let Some(new) = map.get(&name) {
                out.splice(
                    range,
                    crate::commands::source::quote_ident(new).into_bytes(),
                );
                changed = true;
            }
        }
        changed.then_some(out)
    }
}

/// The kind of a dump section, where it matters for the roles its statements name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Section {
    #[default]
    Other,
    /// `Type: ACL` or `Type: DEFAULT ACL`: GRANT, REVOKE, ALTER DEFAULT PRIVILEGES only.
    Acl,
    /// `Type: POLICY`: `CREATE POLICY … TO roles USING (…)`.
    Policy,
    /// `Type: USER MAPPING`: `CREATE USER MAPPING FOR role SERVER …`.
    UserMapping,
}

impl Section {
    fn of_header(text: &[u8]) -> Section {
        let has = |t: &[u8]| memchr::memmem::find(text, t).is_some();
        if has(b"; Type: ACL; Schema: ") || has(b"; Type: DEFAULT ACL; Schema: ") {
            Section::Acl
        } else if has(b"; Type: POLICY; Schema: ") {
            Section::Policy
        } else if has(b"; Type: USER MAPPING; Schema: ") {
            Section::UserMapping
        } else {
            Section::Other
        }
    }
}

/// One SQL token of a statement line.
#[derive(Debug, PartialEq, Eq)]
enum Token {
    /// A bare word: a keyword (pg_dump writes them in capitals) or an identifier (lower case).
    Word,
    /// A double-quoted identifier, unescaped.
    Quoted(String),
    /// A string literal, `(`, `)`, `,`, `;` or any other character.
    Other(u8),
}

/// The tokens of `text` with their byte ranges (a quoted identifier or literal left open at the
/// end of the line ends the list).
fn tokens(text: &[u8]) -> Vec<(std::ops::Range<usize>, Token)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < text.len() {
        let c = text[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b'"' || c == b'\'' {
            // to the closing quote; a doubled one is part of the text
            let mut value = Vec::new();
            i += 1;
            loop {
                match text.get(i) {
                    None => return out,
                    Some(&q) if q == c && text.get(i + 1) == Some(&c) => {
                        value.push(c);
                        i += 2;
                    }
                    Some(&q) if q == c => {
                        i += 1;
                        break;
                    }
                    Some(&b) => {
                        value.push(b);
                        i += 1;
                    }
                }
            }
            let token = if c == b'"' {
                Token::Quoted(String::from_utf8_lossy(&value).into_owned())
            } else {
                Token::Other(c)
            };
            out.push((start..i, token));
        } else if c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80 {
            while i < text.len()
                && (text[i].is_ascii_alphanumeric()
                    || text[i] == b'_'
                    || text[i] == b'$'
                    || text[i] >= 0x80)
            {
                i += 1;
            }
            out.push((start..i, Token::Word));
        } else {
            i += 1;
            out.push((start..i, Token::Other(c)));
        }
    }
    out
}

/// The identifiers of `text` that stand where a role belongs in a statement of a `section`,
/// with the role names they spell (a bare identifier folds to lower case, as the server does).
fn role_positions(text: &[u8], section: Section) -> Vec<(std::ops::Range<usize>, String)> {
    if section == Section::Other {
        return Vec::new();
    }
    let toks = tokens(text);
    let word = |k: usize| match toks.get(k) {
        Some((r, Token::Word)) => Some(&text[r.clone()]),
        _ => None,
    };
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut k = 0;
    while k < toks.len() {
        match &toks[k].1 {
            Token::Other(b'(') => depth += 1,
            Token::Other(b')') => depth -= 1,
            Token::Word if depth == 0 => {
                let w = word(k).unwrap_or_default();
                let after = |prev: &[u8]| k > 0 && word(k - 1) == Some(prev);
                if section == Section::Policy && (w == b"USING" || w == b"WITH") {
                    break;
                }
                let opens_roles = match section {
                    Section::Acl => {
                        w == b"TO"
                            || w == b"FROM"
                            || (w == b"ROLE" && after(b"FOR"))
                            || (w == b"BY" && after(b"GRANTED"))
                    }
                    Section::Policy => w == b"TO",
                    Section::UserMapping => w == b"FOR" && after(b"MAPPING"),
                    Section::Other => false,
                };
                if opens_roles {
                    // a comma-separated list of role names
                    k += 1;
                    while let Some((range, tok)) = toks.get(k) {
                        let name = match tok {
                            Token::Quoted(name) => name.clone(),
                            Token::Word => {
                                String::from_utf8_lossy(&text[range.clone()]).to_lowercase()
                            }
                            _ => break,
                        };
                        out.push((range.clone(), name));
                        if !matches!(toks.get(k + 1), Some((_, Token::Other(b',')))) {
                            break;
                        }
                        k += 2;
                    }
                }
            }
            _ => {}
        }
        k += 1;
    }
    out
}

/// The text of a whole single-quoted SQL literal (`'…'`, doubled quotes inside).
fn sql_literal(text: &[u8]) -> Option<String> {
    match tokens(text).as_slice() {
        [(r, Token::Other(b'\''))] if r.len() == text.len() => {
            let inner = &text[1..text.len() - 1];
            Some(String::from_utf8_lossy(inner).replace("''", "'"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(text: &str, piece: usize) -> String {
        rewrite_with(Owners::Keep, text, piece)
    }

    /// `text` through the filter in pieces of `piece` bytes.
    fn rewrite_with(owners: Owners, text: &str, piece: usize) -> String {
        let mut f = OwnTransactionsOut::new(owners);
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
        let out = rewrite_with(Owners::LeaveOut, dump, 7);
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
    fn a_role_map_renames_owners_and_grantees_but_not_look_alike_names_data_or_bodies() {
        let dump = "--\n-- Name: t; Type: TABLE; Schema: public; Owner: app\n--\n\n\
CREATE TABLE public.t (app text);\n\nALTER TABLE public.t OWNER TO app;\n\n\
--\n-- Name: f(); Type: FUNCTION; Schema: public; Owner: Big Boss\n--\n\n\
CREATE FUNCTION public.f() RETURNS int LANGUAGE sql AS $$\nALTER TABLE public.t OWNER TO app;\nSELECT 1 $$;\n\n\
ALTER FUNCTION public.f() OWNER TO \"Big Boss\";\n\n\
--\n-- Data for Name: t; Type: TABLE DATA; Schema: public; Owner: app\n--\n\n\
COPY public.t (app) FROM stdin;\nGRANT ALL ON TABLE public.t TO app;\n\\.\n\n\
--\n-- Name: TABLE \"TO app\"; Type: ACL; Schema: public; Owner: app\n--\n\n\
GRANT SELECT(app) ON TABLE public.\"TO app\" TO reader, app WITH GRANT OPTION;\n\
SET SESSION AUTHORIZATION 'Big Boss';\nREVOKE ALL ON TABLE public.\"TO app\" FROM PUBLIC, \"Big Boss\";\nRESET SESSION AUTHORIZATION;\n\n\
--\n-- Name: DEFAULT PRIVILEGES FOR TABLES; Type: DEFAULT ACL; Schema: public; Owner: app\n--\n\n\
ALTER DEFAULT PRIVILEGES FOR ROLE app IN SCHEMA public GRANT SELECT ON TABLES TO reader;\n\n\
--\n-- Name: t p; Type: POLICY; Schema: public; Owner: app\n--\n\n\
CREATE POLICY p ON public.t FOR SELECT TO app USING ((app IS DISTINCT FROM 'x'));\n\n\
--\n-- Name: USER MAPPING app SERVER s; Type: USER MAPPING; Schema: -; Owner: -\n--\n\n\
CREATE USER MAPPING FOR app SERVER s;\n";
        let map = Owners::from_args(
            false,
            &["app=new app".to_string(), "Big Boss=boss".to_string()],
        )
        .unwrap();
        let out = rewrite_with(map, dump, 5);
        let expected = dump
            .replacen(
                "\nALTER TABLE public.t OWNER TO app;\n\n",
                "\nALTER TABLE public.t OWNER TO \"new app\";\n\n",
                1,
            )
            .replacen("OWNER TO \"Big Boss\";", "OWNER TO \"boss\";", 1)
            .replacen(" TO reader, app WITH", " TO reader, \"new app\" WITH", 1)
            .replacen("AUTHORIZATION 'Big Boss'", "AUTHORIZATION 'boss'", 1)
            .replacen("FROM PUBLIC, \"Big Boss\"", "FROM PUBLIC, \"boss\"", 1)
            .replacen("FOR ROLE app IN", "FOR ROLE \"new app\" IN", 1)
            .replacen(
                "SELECT TO app USING ((app IS DISTINCT FROM",
                "SELECT TO \"new app\" USING ((app IS DISTINCT FROM",
                1,
            )
            .replacen(
                "MAPPING FOR app SERVER",
                "MAPPING FOR \"new app\" SERVER",
                1,
            );
        assert_eq!(out, expected);
        // the function body, the COPY row, the column app and the table "TO app" stay
        assert!(out.contains("$$\nALTER TABLE public.t OWNER TO app;\nSELECT 1 $$"));
        assert!(out.contains("stdin;\nGRANT ALL ON TABLE public.t TO app;\n"));
        assert!(out.contains("GRANT SELECT(app) ON TABLE public.\"TO app\" TO reader"));
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
