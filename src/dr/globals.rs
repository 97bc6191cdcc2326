//! The server's globals: roles, role memberships, role-level settings and tablespaces, as
//! `pg_dumpall --globals-only` writes them. Dumped once per run of a job that backs up whole
//! databases (`backup --job`, kinds daily and schema), stored as an object of its own (kind
//! `globals`, its own retention group) on every target of the job, and named in the manifest of
//! each database backup of that run.
//!
//! Without superuser rights `pg_authid` cannot be read: the fallback is `--no-role-passwords`,
//! and the log, the manifest and `check` say that the roles come back without passwords.
//! Role password hashes are secrets (a SCRAM verifier can be attacked offline): the object is
//! passed through [`seal_for_storage`], the hook where encryption plugs in.
//!
//! Restoring them ([`restore`]) never touches what the target server already has: a role that
//! exists keeps its password, attributes, settings and comment unless `update_roles`;
//! memberships are added; a tablespace that exists is left alone. Every statement runs in one
//! transaction on pgdrive's own connection, so the globals come back entirely or not at all,
//! and no statement (they hold password hashes) ever reaches a log or an error message.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};

use crate::commands::source::quote_ident;
use crate::pgconn::ConnInfo;

/// The manifest section (of the globals object and of every database backup of its run).
pub const MANIFEST_KEY: &str = "globals";

/// `pg_dumpall --globals-only`'s output, and whether it holds the role passwords.
pub struct Dumped {
    pub sql: Vec<u8>,
    pub passwords: bool,
    pub version: String,
}

/// Whether the connected role is a superuser (only one can read role passwords).
pub fn is_superuser(client: &mut postgres::Client) -> Result<bool> {
    Ok(client
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )?
        .get(0))
}

/// What a non-superuser's globals leave out, as `check` and the log say it.
pub const LEFT_OUT: &str = "the backup role is not a superuser: the globals are dumped with --no-role-passwords, so restored roles have no passwords (set them again after a restore)";

/// `pg_dumpall` beside the chosen `pg_dump` (the same version), else on PATH.
pub fn locate_pg_dumpall(pg_dump: &Path) -> PathBuf {
    let beside = pg_dump.with_file_name("pg_dumpall");
    if beside.is_file() {
        beside
    } else {
        PathBuf::from("pg_dumpall")
    }
}

/// Runs `pg_dumpall --globals-only` against `info`'s server (connecting to its database);
/// without `superuser` with `--no-role-passwords`. The password reaches it in the environment.
pub fn dump(pg_dumpall: &Path, info: &ConnInfo, superuser: bool) -> Result<Dumped> {
    let version = std::process::Command::new(pg_dumpall)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", pg_dumpall.display()))?;
    let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    let mut cmd = std::process::Command::new(pg_dumpall);
    cmd.args(["--globals-only", "--no-password", "--quote-all-identifiers"]);
    if !superuser {
        cmd.arg("--no-role-passwords");
    }
    cmd.arg("-l").arg(info.dbname());
    cmd.env_remove("PGDATABASE");
    cmd.envs(info.child_env());
    cmd.stdin(std::process::Stdio::null());
    cmd.stdout(std::process::Stdio::piped());
    cmd.stderr(std::process::Stdio::piped());
    crate::child::dies_with_pgdrive(&mut cmd);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", pg_dumpall.display()))?;
    let mut tail = crate::child::drain_stderr(child.stderr.take().expect("piped"), "pg_dumpall")?;
    let mut sql = Vec::new();
    child
        .stdout
        .take()
        .expect("piped")
        .read_to_end(&mut sql)
        .context("reading pg_dumpall's output")?;
    let status = child.wait()?;
    let stderr = tail.collect();
    if !status.success() {
        return Err(anyhow!(
            "pg_dumpall --globals-only {}: {}",
            crate::child::describe_exit(&status),
            stderr.trim().replace('\n', " | ")
        ));
    }
    if !String::from_utf8_lossy(&sql).contains("-- PostgreSQL database cluster dump complete") {
        return Err(anyhow!(
            "pg_dumpall exited 0 but its output does not end with its completion trailer: the globals are truncated"
        ));
    }
    Ok(Dumped {
        sql,
        passwords: superuser,
        version,
    })
}

/// The encryption hook: what is stored of the globals (they hold role password hashes), and the
/// ids of the keys it was encrypted to. Today the bytes unchanged and no key: the README says the
/// globals object must be protected like the server's own `pg_authid`. Encryption (branch `age`)
/// replaces the body; [`open_from_storage`] is its counterpart.
pub fn seal_for_storage(
    sql: Vec<u8>,
    encryption: Option<&crate::encrypt::Encryption>,
) -> Result<(Vec<u8>, Option<String>)> {
    let Some(encryption) = encryption else {
        return Ok((sql, None));
    };
    use std::io::Write as _;
    let mut sealed = encryption.wrap(Vec::new())?;
    sealed.write_all(&sql)?;
    let (bytes, plain_sha256) = sealed.finish()?;
    Ok((bytes, Some(plain_sha256)))
}

/// The globals object's manifest section: `section` with the role names and memberships, in
/// clear without encryption and otherwise sealed like the SQL (`roles_age`: role names leak
/// who uses the server). Nothing reads them back to restore: the script itself is the source.
pub fn manifest_section(
    mut section: serde_json::Value,
    roles: &[String],
    memberships: &[(String, String)],
    encryption: Option<&crate::encrypt::Encryption>,
) -> Result<serde_json::Value> {
    let clear = serde_json::json!({ "roles": roles, "memberships": memberships });
    let Some(o) = section.as_object_mut() else {
        return Ok(section);
    };
    match encryption {
        None => {
            o.insert("roles".into(), clear["roles"].clone());
            o.insert("memberships".into(), clear["memberships"].clone());
        }
        Some(e) => {
            let sealed = e
                .seal_to_base64(clear.to_string().as_bytes())
                .context("encrypting the globals' role names")?;
            o.insert("roles_age".into(), sealed.into());
        }
    }
    Ok(section)
}

/// The counterpart of [`seal_for_storage`]: the SQL from what was stored as `found`,
/// decrypted with this process's identities when it was encrypted, its plaintext checksum
/// checked.
pub fn open_from_storage(stored: Vec<u8>, found: &crate::storage::Found) -> Result<Vec<u8>> {
    let Some(enc) = crate::restore::Layout::of_found(found)?.encryption else {
        return Ok(stored);
    };
    let mut sql = Vec::new();
    std::io::Read::read_to_end(
        &mut crate::restore::decrypting(&stored[..], &enc)?,
        &mut sql,
    )
    .map_err(|e| crate::error::corrupt(format!("the globals do not decrypt: {e}")))?;
    let mut h = crate::storage::Hasher::default();
    h.update(&sql);
    if enc
        .plain_sha256
        .as_deref()
        .is_some_and(|want| want != h.finish().sha256)
    {
        return Err(crate::error::corrupt(
            "the decrypted globals do not match the SHA-256 recorded at backup time",
        ));
    }
    Ok(sql)
}

/// One statement of the globals script, and what it is about.
#[derive(Debug, PartialEq, Eq)]
pub enum Item {
    /// `CREATE ROLE name;`
    CreateRole(String),
    /// `ALTER ROLE name …` (attributes, password, settings) or `COMMENT ON ROLE name …`.
    AlterRole(String),
    /// `CREATE TABLESPACE name …` and statements on one.
    Tablespace(String),
    /// `GRANT role TO role …`, `SET …` and anything else: always run.
    Other,
}

/// Splits a script into statements (outside quotes and comments, at `;`), without their
/// comments. Literals (`'…'`, `E'…'`), quoted identifiers and dollar quotes are kept whole.
pub fn statements(script: &str) -> Vec<String> {
    let b = script.as_bytes();
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            // a psql meta-command (pg_dumpall's `\restrict KEY` / `\unrestrict KEY`): a line
            // of its own, between statements; there is no psql here to obey it
            b'\\' if cur.trim().is_empty() => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'\'' | b'"' => {
                let escapes = c == b'\''
                    && i > 0
                    && (b[i - 1] == b'E' || b[i - 1] == b'e')
                    && (i < 2 || !b[i - 2].is_ascii_alphanumeric());
                let start = i;
                i += 1;
                while i < b.len() {
                    if escapes && b[i] == b'\\' {
                        i += 2;
                        continue;
                    }
                    if b[i] == c {
                        if b.get(i + 1) == Some(&c) {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i = (i + 1).min(b.len());
                cur.push_str(&script[start..i]);
                continue;
            }
            b'$' => {
                // $tag$ … $tag$
                if let Some(end) = script[i + 1..].find('$') {
                    let tag = &script[i..i + end + 2];
                    if tag[1..tag.len() - 1]
                        .bytes()
                        .all(|x| x.is_ascii_alphanumeric() || x == b'_')
                    {
                        if let Some(close) = script[i + tag.len()..].find(tag) {
                            let stop = i + tag.len() + close + tag.len();
                            cur.push_str(&script[i..stop]);
                            i = stop;
                            continue;
                        }
                    }
                }
            }
            b';' => {
                let s = cur.trim();
                if !s.is_empty() {
                    out.push(format!("{s};"));
                }
                cur.clear();
                i += 1;
                continue;
            }
            _ => {}
        }
        let ch_len = script[i..].chars().next().map_or(1, char::len_utf8);
        cur.push_str(&script[i..i + ch_len]);
        i += ch_len;
    }
    out
}

/// Reads an identifier at the start of `s` (quoted or not); returns it and the rest.
fn ident(s: &str) -> Option<(String, &str)> {
    let s = s.trim_start();
    if let Some(rest) = s.strip_prefix('"') {
        let mut name = String::new();
        let mut chars = rest.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c == '"' {
                if matches!(chars.peek(), Some((_, '"'))) {
                    chars.next();
                    name.push('"');
                    continue;
                }
                return Some((name, &rest[i + 1..]));
            }
            name.push(c);
        }
        return None;
    }
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
        .unwrap_or(s.len());
    (end > 0).then(|| (s[..end].to_lowercase(), &s[end..]))
}

fn after_words<'a>(s: &'a str, words: &[&str]) -> Option<&'a str> {
    let mut rest = s;
    for w in words {
        let t = rest.trim_start();
        if t.len() < w.len() || !t[..w.len()].eq_ignore_ascii_case(w) {
            return None;
        }
        rest = &t[w.len()..];
        if !rest.starts_with(|c: char| c.is_whitespace()) {
            return None;
        }
    }
    Some(rest)
}

/// What a statement of the globals script is about.
pub fn classify(statement: &str) -> Item {
    let named = |words: &[&str]| {
        after_words(statement, words)
            .and_then(ident)
            .map(|(n, _)| n)
    };
    if let Some(n) = named(&["CREATE", "ROLE"]) {
        return Item::CreateRole(n);
    }
    if let Some(n) = named(&["ALTER", "ROLE"]).or_else(|| named(&["COMMENT", "ON", "ROLE"])) {
        return Item::AlterRole(n);
    }
    if let Some(n) = named(&["CREATE", "TABLESPACE"])
        .or_else(|| named(&["ALTER", "TABLESPACE"]))
        .or_else(|| named(&["COMMENT", "ON", "TABLESPACE"]))
    {
        return Item::Tablespace(n);
    }
    if statement.to_ascii_uppercase().contains(" ON TABLESPACE ") {
        // GRANT … ON TABLESPACE name TO …
        let upper = statement.to_ascii_uppercase();
        let at = upper.find(" ON TABLESPACE ").unwrap() + " ON TABLESPACE ".len();
        if let Some((n, _)) = ident(&statement[at..]) {
            return Item::Tablespace(n);
        }
    }
    Item::Other
}

/// The roles a globals script creates, and its memberships (group, member).
pub fn roles_and_memberships(script: &str) -> (Vec<String>, Vec<(String, String)>) {
    let mut roles = Vec::new();
    let mut members = Vec::new();
    for s in statements(script) {
        match classify(&s) {
            Item::CreateRole(r) => roles.push(r),
            Item::Other => {
                if let Some(rest) = after_words(&s, &["GRANT"]) {
                    if let Some((group, rest)) = ident(rest) {
                        if let Some(rest) = after_words(rest, &["TO"]) {
                            if let Some((member, _)) = ident(rest) {
                                members.push((group, member));
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    (roles, members)
}

/// How [`restore`] treats what the target server has.
#[derive(Clone, Copy, Debug, Default)]
pub struct RestoreOptions {
    /// Also run the attributes, password, settings and comment of roles that already exist.
    pub update_roles: bool,
    /// Leave tablespaces out (a drill's throwaway cluster cannot use the source's paths).
    pub skip_tablespaces: bool,
}

/// What [`restore`] did, counted.
#[derive(Debug, Default)]
pub struct Restored {
    pub created_roles: Vec<String>,
    pub kept_roles: Vec<String>,
    pub skipped_tablespaces: Vec<String>,
    pub statements: usize,
}

/// Applies a globals script to the server `admin` is connected to, in one transaction.
pub fn restore(
    admin: &mut postgres::Client,
    script: &str,
    options: RestoreOptions,
) -> Result<Restored> {
    let roles: Vec<String> = admin
        .query("SELECT rolname::text FROM pg_roles", &[])?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let tablespaces: Vec<String> = admin
        .query("SELECT spcname::text FROM pg_tablespace", &[])?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut done = Restored::default();
    let mut tx = admin
        .transaction()
        .context("starting the globals' transaction")?;
    for (n, s) in statements(script).iter().enumerate() {
        let run = match classify(s) {
            Item::CreateRole(r) if roles.contains(&r) => {
                done.kept_roles.push(r);
                false
            }
            Item::CreateRole(r) => {
                done.created_roles.push(r);
                true
            }
            Item::AlterRole(r) => !roles.contains(&r) || options.update_roles,
            Item::Tablespace(t) if options.skip_tablespaces => {
                if !done.skipped_tablespaces.contains(&t) {
                    done.skipped_tablespaces.push(t);
                }
                false
            }
            Item::Tablespace(t) => !tablespaces.contains(&t),
            Item::Other => true,
        };
        if !run {
            continue;
        }
        // the statement itself may hold a password hash: the error names its position only
        tx.batch_execute(s).map_err(|e| {
            let reason = e
                .as_db_error()
                .map(|d| d.message().to_string())
                .unwrap_or_else(|| e.to_string());
            anyhow!(
                "statement {} of the globals ({}) failed: {reason}; nothing of the globals was applied",
                n + 1,
                summary(s)
            )
        })?;
        done.statements += 1;
    }
    tx.commit().context("committing the globals")?;
    Ok(done)
}

/// The first words of a statement, up to its first literal: never a password.
fn summary(s: &str) -> String {
    let head: String = s.chars().take_while(|c| *c != '\'').take(80).collect();
    head.trim().to_string()
}

/// Quotes a role name the way the script does (for tests and messages).
pub fn quoted(role: &str) -> String {
    quote_ident(role)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRIPT: &str = r#"\restrict AbC123
--
-- PostgreSQL database cluster dump
--

SET default_transaction_read_only = off;

--
-- Roles
--

CREATE ROLE "app";
ALTER ROLE "app" WITH NOSUPERUSER INHERIT LOGIN PASSWORD 'SCRAM-SHA-256$4096:x;y';
CREATE ROLE "Odd ""One"" ü";
COMMENT ON ROLE "Odd ""One"" ü" IS 'a;b
-- not a comment';
ALTER ROLE "app" SET "search_path" TO 'app', 'public';
CREATE TABLESPACE "ts" OWNER "app" LOCATION '/srv/ts';

--
-- Role memberships
--

GRANT "app" TO "Odd ""One"" ü" WITH INHERIT TRUE GRANTED BY "postgres";

--
-- PostgreSQL database cluster dump complete
--

\unrestrict AbC123
"#;

    #[test]
    fn statements_are_split_outside_literals_and_identifiers() {
        let s = statements(SCRIPT);
        assert_eq!(s.len(), 8, "{s:#?}");
        assert_eq!(s[0], "SET default_transaction_read_only = off;");
        assert!(s[2].ends_with("'SCRAM-SHA-256$4096:x;y';"), "{}", s[2]);
        assert!(s[4].contains("'a;b\n-- not a comment'"), "{}", s[4]);
        assert_eq!(statements("SELECT E'a\\'; b'; SELECT $x$;$x$;").len(), 2);
    }

    #[test]
    fn statements_are_classified_by_the_role_or_tablespace_they_touch() {
        let items: Vec<Item> = statements(SCRIPT).iter().map(|s| classify(s)).collect();
        assert_eq!(
            items,
            [
                Item::Other,
                Item::CreateRole("app".into()),
                Item::AlterRole("app".into()),
                Item::CreateRole("Odd \"One\" ü".into()),
                Item::AlterRole("Odd \"One\" ü".into()),
                Item::AlterRole("app".into()),
                Item::Tablespace("ts".into()),
                Item::Other,
            ]
        );
        assert_eq!(
            classify("GRANT CREATE ON TABLESPACE \"ts\" TO app;"),
            Item::Tablespace("ts".into())
        );
        assert_eq!(
            classify("CREATE ROLE Plain;"),
            Item::CreateRole("plain".into())
        );
    }

    #[test]
    fn roles_and_memberships_are_read_off_the_script() {
        let (roles, members) = roles_and_memberships(SCRIPT);
        assert_eq!(roles, ["app", "Odd \"One\" ü"]);
        assert_eq!(members, [("app".to_string(), "Odd \"One\" ü".to_string())]);
    }

    #[test]
    fn summaries_never_show_a_literal() {
        assert_eq!(
            summary("ALTER ROLE \"app\" WITH LOGIN PASSWORD 'SCRAM-secret';"),
            "ALTER ROLE \"app\" WITH LOGIN PASSWORD"
        );
    }
}
