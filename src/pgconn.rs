//! PostgreSQL connection strings: parses `DATABASE_URL` (URI or keyword/value form, as libpq
//! accepts them), resolves the defaults libpq would use (PG* variables, ~/.pgpass), and turns the
//! result into (a) a `postgres::Config` for pgdrive's own connections and (b) the environment of
//! `pg_dump`, so the password never appears on any command line.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// Connection parameters by libpq keyword (`host`, `port`, `user`, `password`, `dbname`, ...).
#[derive(Clone)]
pub struct ConnInfo {
    params: BTreeMap<String, String>,
    original: String,
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

fn percent_decode(s: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .context("truncated %-escape in connection URI")?;
            out.push(u8::from_str_radix(hex, 16).context("invalid %-escape in connection URI")?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).context("connection URI is not valid UTF-8 after %-decoding")
}

impl ConnInfo {
    /// Parses a connection URI (`postgres://...`, `postgresql://...`) or a keyword/value string.
    /// Errors never quote the input (it may hold a password).
    pub fn parse(s: &str) -> Result<ConnInfo> {
        let s = s.trim();
        let params = if let Some(rest) = s
            .strip_prefix("postgresql://")
            .or_else(|| s.strip_prefix("postgres://"))
        {
            parse_uri(rest)?
        } else if s.contains('=') {
            parse_keyword_value(s)?
        } else {
            bail!("not a PostgreSQL connection string (expected postgres://user@host/dbname or host=... dbname=...)");
        };
        for key in params.keys() {
            if !KEYWORD_ENV.iter().any(|(k, _)| k == key)
                && key != "keepalives"
                && !key.starts_with("keepalives_")
            {
                bail!("unknown connection parameter {key:?}");
            }
        }
        Ok(ConnInfo {
            params,
            original: s.to_string(),
        })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.params.get(key).map(String::as_str)
    }

    /// The connection string with its password masked.
    pub fn redacted(&self) -> String {
        crate::redact::connection_string(&self.original)
    }

    /// Fills in what libpq would take from PG* variables and its defaults, and the password
    /// from the password file when none is given, so pgdrive's own connection and pg_dump's reach
    /// the same server as the same user.
    pub fn resolve(mut self, env: &dyn Fn(&str) -> Option<String>) -> ConnInfo {
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
        let original = params
            .iter()
            .map(|(k, v)| format!("{k}='{}'", v.replace('\\', "\\\\").replace('\'', "\\'")))
            .collect::<Vec<_>>()
            .join(" ");
        ConnInfo { params, original }
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
        for (i, host) in hosts.split(',').enumerate() {
            if host.starts_with('/') {
                cfg.host_path(host);
            } else {
                cfg.host(host);
            }
            let port = ports.get(i).or(ports.first()).copied().unwrap_or("5432");
            cfg.port(port.parse().map_err(|_| {
                crate::error::config_error_hint(
                    format!("invalid port {port:?} in DATABASE_URL"),
                    "the port must be a number from 1 to 65535 (percent-encode a password that holds / ? # or @)",
                )
            })?);
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
            let secs: u64 = t.parse().map_err(|_| {
                crate::error::config_error_hint(
                    "invalid connect_timeout in DATABASE_URL: not a whole number of seconds",
                    "set connect_timeout to a number of seconds, e.g. connect_timeout=10 (0 waits indefinitely)",
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
            other => {
                return Err(crate::error::config_error_hint(
                    format!("unknown sslmode={other:?} in DATABASE_URL"),
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
        let cfg = self.client_config(application_name)?;
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

fn parse_uri(rest: &str) -> Result<BTreeMap<String, String>> {
    let mut params = BTreeMap::new();
    let (main, query) = match rest.split_once('?') {
        Some((m, q)) => (m, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match main.find('/') {
        Some(i) => (&main[..i], Some(&main[i + 1..])),
        None => (main, None),
    };
    let hostlist = match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            match userinfo.split_once(':') {
                Some((u, p)) => {
                    if !u.is_empty() {
                        params.insert("user".into(), percent_decode(u)?);
                    }
                    params.insert("password".into(), percent_decode(p)?);
                }
                None if !userinfo.is_empty() => {
                    params.insert("user".into(), percent_decode(userinfo)?);
                }
                None => {}
            }
            &authority[at + 1..]
        }
        None => authority,
    };
    if !hostlist.is_empty() {
        let mut hosts = Vec::new();
        let mut ports = Vec::new();
        for spec in hostlist.split(',') {
            let (host, port) = if let Some(v6) = spec.strip_prefix('[') {
                let end = v6
                    .find(']')
                    .context("unterminated [IPv6] host in connection URI")?;
                let port = v6[end + 1..].strip_prefix(':');
                (&v6[..end], port)
            } else {
                match spec.rsplit_once(':') {
                    Some((h, p)) => (h, Some(p)),
                    None => (spec, None),
                }
            };
            hosts.push(percent_decode(host)?);
            ports.push(port.unwrap_or("").to_string());
        }
        if hosts.iter().any(|h| !h.is_empty()) {
            params.insert("host".into(), hosts.join(","));
        }
        if ports.iter().any(|p| !p.is_empty()) {
            for p in &ports {
                if !p.is_empty() && p.parse::<u16>().is_err() {
                    bail!("invalid port {p:?} in connection URI");
                }
            }
            params.insert("port".into(), ports.join(","));
        }
    }
    if let Some(db) = path.filter(|p| !p.is_empty()) {
        params.insert("dbname".into(), percent_decode(db)?);
    }
    if let Some(q) = query {
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .context("connection URI parameter without '='")?;
            let k = percent_decode(k)?;
            let k = if k == "ssl" && v == "true" {
                params.insert("sslmode".into(), "require".into());
                continue;
            } else {
                k
            };
            params.insert(k, percent_decode(v)?);
        }
    }
    Ok(params)
}

fn parse_keyword_value(s: &str) -> Result<BTreeMap<String, String>> {
    let mut params = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            bail!("missing '=' after {key:?} in connection string");
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => bail!("unterminated quoted value in connection string"),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        params.insert(key, value);
    }
    Ok(params)
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
}
