//! PostgreSQL connection strings: parses `DATABASE_URL` (URI or keyword/value form, as libpq
//! accepts them), resolves the defaults libpq would use (PG* variables, ~/.pgpass), and turns the
//! result into (a) a `postgres::Config` for pgdrive's own connections and (b) the environment of
//! `pg_dump`, so the password never appears on any command line.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::error::config_error_hint;
use crate::redact::is_conninfo_space;

/// Connection parameters by libpq keyword (`host`, `port`, `user`, `password`, `dbname`, ...).
#[derive(Clone)]
pub struct ConnInfo {
    params: BTreeMap<String, String>,
    original: String,
    /// Where the password values are in `original`, to mask exactly them.
    password_spans: Vec<Range<usize>>,
    /// The setting or flag the string came from, for messages.
    setting: String,
}

impl std::fmt::Debug for ConnInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// libpq keywords and the environment variable pg_dump reads each one from.
const KEYWORD_ENV: &[(&str, &str)] = &[
    ("host", "PGHOST"),
    ("hostaddr", "PGHOSTADDR"),
    ("port", "PGPORT"),
    ("dbname", "PGDATABASE"),
    ("user", "PGUSER"),
    ("password", "PGPASSWORD"),
    ("passfile", "PGPASSFILE"),
    ("options", "PGOPTIONS"),
    ("application_name", "PGAPPNAME"),
    ("sslmode", "PGSSLMODE"),
    ("sslrootcert", "PGSSLROOTCERT"),
    ("sslcert", "PGSSLCERT"),
    ("sslkey", "PGSSLKEY"),
    ("sslcrl", "PGSSLCRL"),
    ("sslcompression", "PGSSLCOMPRESSION"),
    ("requiressl", "PGREQUIRESSL"),
    ("connect_timeout", "PGCONNECT_TIMEOUT"),
    ("target_session_attrs", "PGTARGETSESSIONATTRS"),
    ("gssencmode", "PGGSSENCMODE"),
    ("krbsrvname", "PGKRBSRVNAME"),
    ("service", "PGSERVICE"),
    ("channel_binding", "PGCHANNELBINDING"),
    ("client_encoding", "PGCLIENTENCODING"),
    ("ssl_min_protocol_version", "PGSSLMINPROTOCOLVERSION"),
    ("load_balance_hosts", "PGLOADBALANCEHOSTS"),
];

/// The variables libpq (and so pgdrive, resolving a connection string) reads: the PG* ones, and
/// `USER` and `HOME` for the default user and password file.
pub fn libpq_variables() -> impl Iterator<Item = &'static str> {
    KEYWORD_ENV
        .iter()
        .map(|(_, env)| *env)
        .chain(["USER", "HOME"])
}

impl ConnInfo {
    /// Parses a connection URI (`postgres://...`, `postgresql://...`) or a keyword/value string
    /// exactly as libpq does. Errors never quote the input (it may hold a password). The
    /// password is registered with [`crate::redact`] at once.
    pub fn parse(s: &str) -> Result<ConnInfo> {
        let s = s.trim_matches(is_conninfo_space);
        let uri_prefix = ["postgresql://", "postgres://"]
            .into_iter()
            .find(|p| s.starts_with(p));
        let parsed = if let Some(prefix) = uri_prefix {
            parse_uri(s, prefix.len())?
        } else if s.contains('=') {
            parse_keyword_value(s)?
        } else {
            bail!("not a PostgreSQL connection string (expected postgres://user@host/dbname or host=... dbname=...)");
        };
        if let Some(pw) = parsed.params.get("password") {
            crate::redact::register(pw);
        }
        if let Some(ports) = parsed.params.get("port") {
            let list: Vec<&str> = ports.split(',').collect();
            for (i, port) in list.iter().enumerate() {
                if !port.is_empty() && port.parse::<u16>().is_err() {
                    // not quoted: an unencoded '/' or '?' in a password ends up here
                    bail!("port {} of {} is not a port number", i + 1, list.len());
                }
            }
        }
        Ok(ConnInfo {
            params: parsed.params,
            original: s.to_string(),
            password_spans: parsed.password_spans,
            setting: "the connection string".into(),
        })
    }

    /// Parses the value of a setting or flag (`DATABASE_URL`, `--target-url`): a string that
    /// cannot be parsed is a configuration error naming the setting, with [`SYNTAX_HINT`].
    pub fn parse_setting(setting: &str, s: &str) -> Result<ConnInfo> {
        let mut info = ConnInfo::parse(s).map_err(|e| {
            // its password cannot be told apart: the whole string is the secret
            crate::redact::register(s.trim_matches(is_conninfo_space));
            config_error_hint(format!("{setting} is invalid: {e:#}"), SYNTAX_HINT)
        })?;
        info.setting = setting.to_string();
        Ok(info)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.params.get(key).map(String::as_str)
    }

    /// The connection string with its password masked: exactly the spans the parser read the
    /// password from, then whatever [`crate::redact::scrub`] finds.
    pub fn redacted(&self) -> String {
        let mut out = self.original.clone();
        let mut spans = self.password_spans.clone();
        spans.sort_by_key(|r| std::cmp::Reverse(r.start));
        for span in spans {
            out.replace_range(span, "***");
        }
        crate::redact::scrub(&out)
    }

    /// Fills in what libpq would take from PG* variables and its defaults, and the password
    /// from the password file when none is given, so pgdrive's own connection and pg_dump's reach
    /// the same server as the same user.
    pub fn resolve(mut self, env: &dyn Fn(&str) -> Option<String>) -> ConnInfo {
        if let Some(pw) = env("PGPASSWORD") {
            crate::redact::register(&pw);
        }
        for (key, var) in KEYWORD_ENV {
            if !self.params.contains_key(*key) {
                if let Some(v) = env(var).filter(|v| !v.is_empty()) {
                    self.params.insert((*key).to_string(), v);
                }
            }
        }
        if !self.params.contains_key("host") && !self.params.contains_key("hostaddr") {
            let socket_dir = "/var/run/postgresql";
            let host = if Path::new(socket_dir).is_dir() {
                socket_dir
            } else {
                "localhost"
            };
            self.params.insert("host".into(), host.into());
        }
        self.params
            .entry("port".into())
            .or_insert_with(|| "5432".into());
        if !self.params.contains_key("user") {
            if let Some(u) = env("USER").or_else(os_user_name) {
                self.params.insert("user".into(), u);
            }
        }
        if !self.params.contains_key("dbname") {
            if let Some(u) = self.params.get("user").cloned() {
                self.params.insert("dbname".into(), u);
            }
        }
        if !self.params.contains_key("password") {
            let passfile = self
                .params
                .get("passfile")
                .cloned()
                .or_else(|| env("HOME").map(|h| format!("{h}/.pgpass")));
            if let Some(pw) = passfile.and_then(|f| self.password_from_passfile(Path::new(&f))) {
                crate::redact::register(&pw);
                self.params.insert("password".into(), pw);
            }
        }
        self
    }

    /// A copy with one parameter replaced (e.g. another database on the same server). The
    /// redacted rendering follows: it is rebuilt from the parameters, password masked.
    pub fn with_param(&self, key: &str, value: &str) -> ConnInfo {
        let mut params = self.params.clone();
        params.insert(key.to_string(), value.to_string());
        let (original, password_spans) = render_keyword_value(&params);
        ConnInfo {
            params,
            original,
            password_spans,
            setting: self.setting.clone(),
        }
    }

    pub fn dbname(&self) -> &str {
        self.get("dbname").unwrap_or("postgres")
    }

    pub fn user(&self) -> &str {
        self.get("user").unwrap_or("")
    }

    fn password_from_passfile(&self, file: &Path) -> Option<String> {
        let text = std::fs::read_to_string(file).ok()?;
        let host = self.get("host").unwrap_or("localhost");
        let host = if host.starts_with('/') {
            "localhost"
        } else {
            host.split(',').next().unwrap_or(host)
        };
        let wanted = [
            host,
            self.get("port").unwrap_or("5432"),
            self.dbname(),
            self.user(),
        ];
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .find_map(|line| {
                let fields = split_passfile_line(line);
                if fields.len() != 5 {
                    return None;
                }
                let matches = fields[..4]
                    .iter()
                    .zip(wanted.iter())
                    .all(|(f, w)| f == "*" || f == w);
                matches.then(|| fields[4].clone())
            })
    }

    /// A `postgres::Config` for pgdrive's own (catalog and lock) connection.
    pub fn client_config(&self, application_name: &str) -> Result<postgres::Config> {
        let mut cfg = postgres::Config::new();
        let hosts = self.get("host").unwrap_or("localhost");
        let ports: Vec<&str> = self.get("port").unwrap_or("5432").split(',').collect();
        let host_count = hosts.split(',').count();
        for (i, host) in hosts.split(',').enumerate() {
            if host.starts_with('/') {
                cfg.host_path(host);
            } else {
                cfg.host(host);
            }
            let port = ports.get(i).or(ports.first()).copied().unwrap_or("5432");
            let port = if port.is_empty() { "5432" } else { port };
            // the port is not quoted: a '/' or '?' in an unencoded password ends up here
            let port: u16 = port.parse().map_err(|_| {
                config_error_hint(
                    format!(
                        "{} has an invalid port number (host {} of {host_count})",
                        self.setting,
                        i + 1
                    ),
                    SYNTAX_HINT,
                )
            })?;
            cfg.port(port);
        }
        // libpq connects to `hostaddr` when given (`host` then only names the server for TLS),
        // and so do pg_dump and psql, which get it as PGHOSTADDR: pgdrive's own connection must
        // reach that same server, or its checks (the source guard above all) would look at
        // another one than the restore writes to
        if let Some(addrs) = self.get("hostaddr") {
            let addrs: Vec<&str> = addrs.split(',').collect();
            for (i, addr) in addrs.iter().enumerate() {
                let ip: std::net::IpAddr = addr.trim().parse().map_err(|_| {
                    config_error_hint(
                        format!(
                            "hostaddr {} of {} in {} is not a numeric IP address",
                            i + 1,
                            addrs.len(),
                            self.setting
                        ),
                        "write hostaddr as numeric addresses (127.0.0.1, ::1), one per host, or leave it out and name the server in host",
                    )
                })?;
                cfg.hostaddr(ip);
            }
            if addrs.len() != host_count {
                return Err(config_error_hint(
                    format!(
                        "{} has {host_count} hosts but {} hostaddr values",
                        self.setting,
                        addrs.len()
                    ),
                    "give one hostaddr per host, in the same order, as libpq requires",
                ));
            }
        }
        if let Some(u) = self.get("user") {
            cfg.user(u);
        }
        if let Some(p) = self.get("password") {
            cfg.password(p);
        }
        cfg.dbname(self.dbname());
        if let Some(o) = self.get("options") {
            cfg.options(o);
        }
        cfg.application_name(application_name);
        if let Some(t) = self.get("connect_timeout") {
            let secs: u64 = t.trim().parse().map_err(|_| {
                config_error_hint(
                    format!(
                        "connect_timeout in {} is not a number of seconds",
                        self.setting
                    ),
                    "write connect_timeout=10 (0 waits forever)",
                )
            })?;
            if secs > 0 {
                cfg.connect_timeout(Duration::from_secs(secs));
            }
        } else {
            cfg.connect_timeout(Duration::from_secs(30));
        }
        // A backup holds the lock connection idle for as long as the dump runs: keepalives stop
        // NAT boxes and firewalls from silently dropping it.
        cfg.keepalives(true);
        cfg.keepalives_idle(Duration::from_secs(60));
        cfg.ssl_mode(match self.sslmode() {
            "disable" => postgres::config::SslMode::Disable,
            "allow" | "prefer" => postgres::config::SslMode::Prefer,
            "require" | "verify-ca" | "verify-full" => postgres::config::SslMode::Require,
            _ => {
                return Err(config_error_hint(
                    format!("sslmode in {} is not a known mode", self.setting),
                    "use sslmode=disable, allow, prefer, require, verify-ca or verify-full",
                ))
            }
        });
        Ok(cfg)
    }

    pub fn sslmode(&self) -> &str {
        self.get("sslmode").unwrap_or("prefer")
    }

    /// Opens a connection with libpq's TLS semantics for `sslmode` (see [`crate::pgtls`]).
    pub fn connect(&self, application_name: &str) -> Result<postgres::Client> {
        self.connect_with(self.client_config(application_name)?)
    }

    /// Opens a connection from a (possibly adjusted) [`ConnInfo::client_config`], with the same
    /// TLS semantics as [`ConnInfo::connect`]: every pgdrive connection goes through here.
    pub fn connect_with(&self, cfg: postgres::Config) -> Result<postgres::Client> {
        if self.get("sslcert").is_some() {
            crate::log::warn("client certificates (sslcert/sslkey) are passed to pg_dump but not used by pgdrive's own connection", &[]);
        }
        let connected = if self.sslmode() == "disable" {
            cfg.connect(postgres::NoTls)
        } else {
            let rootcert = self.get("sslrootcert");
            cfg.connect(crate::pgtls::connector(
                crate::pgtls::verification(self.sslmode(), rootcert.is_some()),
                rootcert,
            )?)
        };
        Ok(connected?)
    }

    /// The PG* environment for `pg_dump`: every resolved parameter, the password included, so the
    /// child's command line carries none of them.
    pub fn child_env(&self) -> Vec<(&'static str, String)> {
        KEYWORD_ENV
            .iter()
            .filter_map(|(key, var)| self.get(key).map(|v| (*var, v.to_string())))
            .filter(|(var, _)| *var != "PGAPPNAME")
            .chain(std::iter::once(("PGAPPNAME", "pgdrive".to_string())))
            .collect()
    }
}

fn os_user_name() -> Option<String> {
    // SAFETY: getpwuid returns a pointer into static storage or null; we copy the name out at once.
    unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        if pw.is_null() {
            return None;
        }
        let name = std::ffi::CStr::from_ptr((*pw).pw_name);
        Some(name.to_string_lossy().into_owned())
    }
}

fn split_passfile_line(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    fields.last_mut().unwrap().push(n);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut().unwrap().push(c),
        }
    }
    fields
}

/// What a connection string that cannot be parsed should be told: how to write it, quoting none
/// of it (it may hold a password).
pub const SYNTAX_HINT: &str = "in a postgres:// URL, percent-encode special characters of the user name and password (@ as %40, / as %2F, : as %3A, % as %25, a space as %20), or use the keyword form (host=... dbname=..., the password value in single quotes with ' and \\ written as \\' and \\\\)";

/// The parameters of a connection string as libpq reads it, and where in the string the
/// password values are (so the string can be shown with exactly those masked).
#[derive(Default)]
struct Parsed {
    params: BTreeMap<String, String>,
    password_spans: Vec<Range<usize>>,
    count: usize,
}

impl Parsed {
    /// Stores one parameter; `span` is where its raw value is in the string.
    fn store(&mut self, key: String, value: String, span: Range<usize>) -> Result<()> {
        self.count += 1;
        if !is_known_keyword(&key) {
            // the key is not quoted: with a mistyped quote it may be a piece of the password
            bail!(
                "parameter {} is not a connection parameter libpq knows (known: {})",
                self.count,
                KEYWORD_ENV
                    .iter()
                    .map(|(k, _)| *k)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if key == "password" {
            self.password_spans.push(span);
        }
        self.params.insert(key, value);
        Ok(())
    }
}

fn is_known_keyword(key: &str) -> bool {
    KEYWORD_ENV.iter().any(|(k, _)| *k == key)
        || key == "keepalives"
        || key.starts_with("keepalives_")
}

/// libpq's `conninfo_uri_decode`: `%XX` escapes anywhere, `%00` refused, `+` left alone.
fn percent_decode(s: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let byte = s
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .context("a %-escape is not followed by two hex digits (write % itself as %25)")?;
            if byte == 0 {
                bail!("%00 is not allowed in a connection URI");
            }
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).context("the connection URI is not valid UTF-8 after %-decoding")
}

/// A connection URI as libpq's `conninfo_uri_parse_options` reads it: the userinfo ends at the
/// first `@` before any `/` (so `#`, `?` and `:` may appear in a password, `@` and `/` must be
/// percent-encoded), hosts and ports are comma-separated lists, the database runs up to `?`,
/// parameters are `&`-separated `key=value` pairs; every part is percent-decoded.
fn parse_uri(s: &str, prefix_len: usize) -> Result<Parsed> {
    let b = s.as_bytes();
    let n = b.len();
    let at = |i: usize| b.get(i).copied();
    let mut parsed = Parsed::default();
    let mut p = prefix_len;

    let mut look = p;
    while look < n && b[look] != b'@' && b[look] != b'/' {
        look += 1;
    }
    if at(look) == Some(b'@') {
        let mut user_end = p;
        while b[user_end] != b':' && b[user_end] != b'@' {
            user_end += 1;
        }
        if user_end > p {
            parsed.store("user".into(), percent_decode(&s[p..user_end])?, p..user_end)?;
        }
        if b[user_end] == b':' && look > user_end + 1 {
            let span = user_end + 1..look;
            parsed.store("password".into(), percent_decode(&s[span.clone()])?, span)?;
        }
        p = look + 1;
    }

    let (mut hosts, mut ports) = (String::new(), String::new());
    let hosts_start = p;
    let mut hosts_end;
    let mut terminator;
    loop {
        if at(p) == Some(b'[') {
            p += 1;
            let start = p;
            while p < n && b[p] != b']' {
                p += 1;
            }
            if p == n {
                bail!("an IPv6 address in the connection URI lacks its closing ']'");
            }
            if p == start {
                bail!("an IPv6 address in the connection URI is empty");
            }
            hosts.push_str(&s[start..p]);
            p += 1;
            if !matches!(at(p), None | Some(b':' | b'/' | b'?' | b',')) {
                bail!("an IPv6 address in the connection URI is followed by something other than ':' or '/'");
            }
        } else {
            let start = p;
            while p < n && !matches!(b[p], b':' | b'/' | b'?' | b',') {
                p += 1;
            }
            hosts.push_str(&s[start..p]);
        }
        terminator = at(p);
        if terminator == Some(b':') {
            p += 1;
            let start = p;
            while p < n && !matches!(b[p], b'/' | b'?' | b',') {
                p += 1;
            }
            ports.push_str(&s[start..p]);
            terminator = at(p);
        }
        hosts_end = p;
        if terminator != Some(b',') {
            break;
        }
        p += 1;
        hosts.push(',');
        ports.push(',');
    }
    // Stricter than libpq, which would take these as a host or a database name: an '@' there
    // is the rest of a password whose '@' or '/' was not encoded, and must not be shown.
    if hosts.contains('@') {
        bail!("an '@' follows the host in the connection URI (is an '@' in the password not percent-encoded?)");
    }
    if !hosts.is_empty() {
        parsed.store(
            "host".into(),
            percent_decode(&hosts)?,
            hosts_start..hosts_end,
        )?;
    }
    if !ports.is_empty() {
        parsed.store(
            "port".into(),
            percent_decode(&ports)?,
            hosts_start..hosts_end,
        )?;
    }

    if terminator.is_some_and(|c| c != b'?') {
        p += 1;
        let start = p;
        while p < n && b[p] != b'?' {
            p += 1;
        }
        if s[start..p].contains('@') {
            bail!("the database name in the connection URI holds an '@' (is a '/' in the password not percent-encoded?)");
        }
        if p > start {
            parsed.store("dbname".into(), percent_decode(&s[start..p])?, start..p)?;
        }
        terminator = at(p);
    }

    if terminator.is_some() {
        p += 1;
        while p < n {
            let key_start = p;
            let mut value_start = None;
            while p < n && b[p] != b'&' {
                if b[p] == b'=' {
                    if value_start.is_some() {
                        bail!("a parameter of the connection URI has a second '=' (percent-encode it as %3D)");
                    }
                    value_start = Some(p + 1);
                }
                p += 1;
            }
            let Some(value_start) = value_start else {
                bail!("a parameter of the connection URI has no '='");
            };
            let key = percent_decode(&s[key_start..value_start - 1])?;
            let value = percent_decode(&s[value_start..p])?;
            // libpq's JDBC compatibility: ssl=true means sslmode=require
            if key == "ssl" && value == "true" {
                parsed.store("sslmode".into(), "require".into(), value_start..p)?;
            } else {
                parsed.store(key, value, value_start..p)?;
            }
            if p < n {
                p += 1;
            }
        }
    }
    Ok(parsed)
}

/// A keyword/value string as libpq's `conninfo_parse` reads it: blank space (C `isspace`)
/// separates pairs and may surround `=`; a value is either single-quoted or runs to the next
/// blank; inside both, a backslash takes the next character literally.
fn parse_keyword_value(s: &str) -> Result<Parsed> {
    let mut parsed = Parsed::default();
    let mut chars = s.char_indices().peekable();
    let mut word = 0;
    let skip_space = |chars: &mut std::iter::Peekable<std::str::CharIndices>| {
        while chars.next_if(|(_, c)| is_conninfo_space(*c)).is_some() {}
    };
    loop {
        skip_space(&mut chars);
        let Some(&(key_start, _)) = chars.peek() else {
            break;
        };
        word += 1;
        let mut key_end = s.len();
        while let Some(&(i, c)) = chars.peek() {
            if c == '=' || is_conninfo_space(c) {
                key_end = i;
                break;
            }
            chars.next();
        }
        skip_space(&mut chars);
        if chars.next().map(|(_, c)| c) != Some('=') {
            // not quoted: a word without '=' is usually the rest of an unquoted password
            bail!("word {word} of the connection string is not followed by '=' (quote values holding spaces: password='...')");
        }
        skip_space(&mut chars);
        let value_start = chars.peek().map(|&(i, _)| i).unwrap_or(s.len());
        let mut value = String::new();
        let value_end;
        if chars.next_if(|(_, c)| *c == '\'').is_some() {
            loop {
                match chars.next() {
                    Some((_, '\\')) => value.extend(chars.next().map(|(_, c)| c)),
                    Some((i, '\'')) => {
                        value_end = i + 1;
                        break;
                    }
                    Some((_, c)) => value.push(c),
                    None => bail!("a quoted value in the connection string has no closing quote"),
                }
            }
        } else {
            loop {
                match chars.peek().copied() {
                    None => {
                        value_end = s.len();
                        break;
                    }
                    Some((i, c)) if is_conninfo_space(c) => {
                        value_end = i;
                        break;
                    }
                    Some((_, '\\')) => {
                        chars.next();
                        value.extend(chars.next().map(|(_, c)| c));
                    }
                    Some((_, c)) => {
                        chars.next();
                        value.push(c);
                    }
                }
            }
        }
        parsed.store(
            s[key_start..key_end].to_string(),
            value,
            value_start..value_end,
        )?;
    }
    Ok(parsed)
}

/// The keyword/value rendering of parameters (values quoted and escaped as libpq reads them),
/// with where the password value is in it.
fn render_keyword_value(params: &BTreeMap<String, String>) -> (String, Vec<Range<usize>>) {
    let mut out = String::new();
    let mut spans = Vec::new();
    for (k, v) in params {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(k);
        out.push('=');
        let start = out.len();
        out.push('\'');
        out.push_str(&v.replace('\\', "\\\\").replace('\'', "\\'"));
        out.push('\'');
        if k == "password" {
            spans.push(start..out.len());
        }
    }
    (out, spans)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn parses_uris() {
        let c = ConnInfo::parse(
            "postgresql://app:p%40ss@db.example:6432/shop?sslmode=disable&connect_timeout=5",
        )
        .unwrap();
        assert_eq!(c.get("user"), Some("app"));
        assert_eq!(c.get("password"), Some("p@ss"));
        assert_eq!(c.get("host"), Some("db.example"));
        assert_eq!(c.get("port"), Some("6432"));
        assert_eq!(c.get("dbname"), Some("shop"));
        assert_eq!(c.get("sslmode"), Some("disable"));
        assert_eq!(
            c.redacted(),
            "postgresql://app:***@db.example:6432/shop?sslmode=disable&connect_timeout=5"
        );
    }

    #[test]
    fn parses_socket_and_multi_host_uris() {
        let c = ConnInfo::parse("postgres://%2Fvar%2Frun%2Fpostgresql/shop").unwrap();
        assert_eq!(c.get("host"), Some("/var/run/postgresql"));
        let c = ConnInfo::parse("postgres:///shop?host=/tmp").unwrap();
        assert_eq!(c.get("host"), Some("/tmp"));
        let c = ConnInfo::parse("postgres://u@a:1,[::1]:2/d").unwrap();
        assert_eq!(c.get("host"), Some("a,::1"));
        assert_eq!(c.get("port"), Some("1,2"));
    }

    #[test]
    fn hostaddr_is_where_pgdrive_connects_as_libpq_does() {
        let c = ConnInfo::parse("host=db.example hostaddr=127.0.0.1 dbname=shop").unwrap();
        let cfg = c.client_config("t").unwrap();
        assert_eq!(
            cfg.get_hostaddrs(),
            &["127.0.0.1".parse::<std::net::IpAddr>().unwrap()]
        );
        let c = ConnInfo::parse("host=a,b hostaddr=127.0.0.1 dbname=shop").unwrap();
        let err = c.client_config("t").unwrap_err();
        assert_eq!(
            crate::error::classify(&err),
            crate::error::ExitStatus::Config
        );
        let c = ConnInfo::parse("host=a hostaddr=db.example dbname=shop").unwrap();
        let err = format!("{:#}", c.client_config("t").unwrap_err());
        assert!(
            err.contains("not a numeric IP address") && !err.contains("db.example"),
            "{err}"
        );
    }

    #[test]
    fn parses_keyword_value() {
        let c = ConnInfo::parse("host=localhost dbname = 'my db' password='it\\'s'").unwrap();
        assert_eq!(c.get("dbname"), Some("my db"));
        assert_eq!(c.get("password"), Some("it's"));
    }

    #[test]
    fn rejects_garbage_without_echoing_it() {
        let err = ConnInfo::parse("hunter2").unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
        let err = ConnInfo::parse("postgres://u:hunter2@h:notaport/d")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(ConnInfo::parse("host=x bogus=1").is_err());
    }

    #[test]
    fn child_env_carries_the_password_out_of_argv() {
        let c = ConnInfo::parse("postgres://app:pw@h:5433/shop")
            .unwrap()
            .resolve(&no_env);
        let env: BTreeMap<_, _> = c.child_env().into_iter().collect();
        assert_eq!(env["PGPASSWORD"], "pw");
        assert_eq!(env["PGHOST"], "h");
        assert_eq!(env["PGPORT"], "5433");
        assert_eq!(env["PGDATABASE"], "shop");
        assert_eq!(env["PGAPPNAME"], "pgdrive");
    }

    #[test]
    fn resolve_uses_pg_variables_for_what_the_url_leaves_out() {
        let env = |k: &str| match k {
            "PGUSER" => Some("alice".to_string()),
            "PGPORT" => Some("6000".to_string()),
            _ => None,
        };
        let c = ConnInfo::parse("postgres://db.example")
            .unwrap()
            .resolve(&env);
        assert_eq!(c.user(), "alice");
        assert_eq!(c.get("port"), Some("6000"));
        assert_eq!(c.dbname(), "alice");
    }

    #[test]
    fn passfile_lines_with_escapes() {
        assert_eq!(
            split_passfile_line(r"h:5432:*:u:pa\:ss"),
            vec!["h", "5432", "*", "u", "pa:ss"]
        );
    }

    #[test]
    fn every_password_of_the_table_parses_and_is_masked_in_both_forms() {
        for pw in crate::redact::test_password_table() {
            let encoded = crate::redact::percent_encode(&pw, false);
            let quoted = pw.replace('\\', "\\\\").replace('\'', "\\'");
            for s in [
                format!("postgres://app:{encoded}@db.example:5433/shop?sslmode=disable"),
                format!("postgresql://app@db.example/shop?password={encoded}&connect_timeout=3"),
                format!("host=db.example password='{quoted}' dbname=shop"),
                format!("host=db.example password = '{quoted}'dbname=shop"),
            ] {
                let c = ConnInfo::parse(&s).unwrap_or_else(|e| panic!("{pw:?}: {e}"));
                assert_eq!(c.get("password"), Some(pw.as_str()), "{s}");
                assert_eq!(c.dbname(), "shop", "{s}");
                let shown = c.redacted();
                assert!(!shown.contains(&pw) && !shown.contains(&encoded), "{shown}");
                assert!(shown.contains("***"), "{shown}");
                let copy = c.with_param("dbname", "other").redacted();
                assert!(!copy.contains(&pw) && copy.contains("***"), "{copy}");
            }
        }
    }

    #[test]
    fn uris_are_read_as_libpq_reads_them() {
        // '#', '?' and ':' may stand in a password; the userinfo ends at the first '@'
        let c =
            ConnInfo::parse("postgres://u:pa#ss?w:x@h:5433/d%2Fb?application_name=a%20b").unwrap();
        assert_eq!(c.get("password"), Some("pa#ss?w:x"));
        assert_eq!(c.get("host"), Some("h"));
        assert_eq!(c.get("port"), Some("5433"));
        assert_eq!(c.dbname(), "d/b");
        assert_eq!(c.get("application_name"), Some("a b"));
        assert_eq!(
            c.redacted(),
            "postgres://u:***@h:5433/d%2Fb?application_name=a%20b"
        );
        let c = ConnInfo::parse("postgres://h1:1,h2,[::1]:3/d?ssl=true").unwrap();
        assert_eq!(c.get("host"), Some("h1,h2,::1"));
        assert_eq!(c.get("port"), Some("1,,3"));
        assert_eq!(c.sslmode(), "require");
        let c = ConnInfo::parse("postgres://u@h/d?").unwrap();
        assert_eq!(c.dbname(), "d");
        assert!(ConnInfo::parse("postgres://u:a%00b@h/d").is_err());
        assert!(ConnInfo::parse("postgres://h/d?sslmode").is_err());
        assert!(ConnInfo::parse("postgres://h/d?a=b=c").is_err());
        assert!(ConnInfo::parse("postgres://[::1/d").is_err());
    }

    #[test]
    fn keyword_values_are_read_as_libpq_reads_them() {
        let c =
            ConnInfo::parse("host = db\tport=5432 password=a\\ b\\'c user='it\\\\\\'s'").unwrap();
        assert_eq!(c.get("password"), Some("a b'c"));
        assert_eq!(c.get("user"), Some("it\\'s"));
        // non-ASCII blank space is part of a value, as in libpq
        let c = ConnInfo::parse("password=x\u{a0}y host=h").unwrap();
        assert_eq!(c.get("password"), Some("x\u{a0}y"));
    }

    #[test]
    fn strings_that_cannot_be_parsed_are_never_quoted() {
        for (s, secret) in [
            ("postgres://app:se/cret77@db/shop", "cret77"),
            ("postgres://app:se?cret77/x@db/shop", "cret77"),
            ("host=db password=secret77 more99", "more99"),
            ("host=db password='secret77 dbname=x", "secret77"),
            ("host=db password=se'cret77 bogus99=1", "bogus99"),
            ("postgres://app:secret77%zz@db/shop", "secret77"),
            ("postgres://app:p@ssword77@db/shop", "ssword77"),
            ("postgres://app:1234/567877@db/shop", "567877"),
        ] {
            let err = ConnInfo::parse_setting("DATABASE_URL", s)
                .and_then(|c| c.client_config("t").map(|_| ()))
                .unwrap_err();
            let text = format!("{err:#} {}", crate::error::hint(&err).unwrap_or_default());
            assert!(!text.contains(secret), "{s}: {text}");
            assert!(text.contains("DATABASE_URL"), "{s}: {text}");
            assert!(text.contains("percent-encode"), "{s}: {text}");
            assert_eq!(
                crate::error::classify(&err),
                crate::error::ExitStatus::Config
            );
        }
    }

    #[test]
    fn a_password_from_the_password_file_is_registered_as_a_secret() {
        let dir = std::env::temp_dir().join(format!("pgconn_pgpass_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let passfile = dir.join("pgpass");
        std::fs::write(
            &passfile,
            "db.example:5432:shop:app:from\\:the-passfile 42\n",
        )
        .unwrap();
        let env = |k: &str| match k {
            "PGPASSFILE" => Some(passfile.display().to_string()),
            _ => None,
        };
        let c = ConnInfo::parse("postgres://app@db.example/shop")
            .unwrap()
            .resolve(&env);
        assert_eq!(c.get("password"), Some("from:the-passfile 42"));
        let shown = crate::redact::scrub("server said: password from:the-passfile 42 is wrong");
        assert_eq!(shown, "server said: password *** is wrong");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
