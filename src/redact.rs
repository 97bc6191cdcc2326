//! Keeping secrets out of output. Two layers:
//!
//! * a process-wide registry of secret VALUES (database passwords however they were given, the
//!   SMTP password, API keys, webhook and ping URLs, OAuth tokens, private key material): every
//!   registered value is replaced by `***` wherever it appears, in each encoding an output could
//!   carry it in (raw, percent-encoded, JSON-, HTML-, Slack-, SQL- and conninfo-escaped, Rust
//!   `{:?}`-escaped);
//! * a structural scrub for secrets pgdrive was never told about (a URL's userinfo, a
//!   `password = …` pair, bearer and Google access tokens in a server's message).
//!
//! [`scrub`] applies both and is what every log line, error, catalog row, status page and
//! notification passes through; [`values`] applies only the registry, for texts whose syntax a
//! structural rewrite could break (JSON bodies, email parts).

use std::sync::RwLock;

/// Secrets shorter than this are not redacted by value: replacing every "ab" in every output
/// would make the output useless without protecting anything worth the name.
pub const MIN_SECRET_LEN: usize = 4;

/// Every registered secret in every encoding, longest first (so that a secret that contains
/// another is replaced whole).
static REGISTRY: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Registers a secret value: from now on no output of this process shows it.
pub fn register(secret: &str) {
    if secret.chars().count() < MIN_SECRET_LEN {
        return;
    }
    let mut forms = Vec::new();
    for base in encodings(secret) {
        forms.push(json_escaped(&base));
        forms.push(base);
    }
    let mut registry = REGISTRY.write().unwrap_or_else(|e| e.into_inner());
    for form in forms {
        if form.len() >= MIN_SECRET_LEN && !registry.contains(&form) {
            registry.push(form);
        }
    }
    registry.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
}

/// Registers a URL that carries a token (webhook, ping): the whole URL and its path and query.
pub fn register_url(url: &str) {
    register(url);
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        if let Some(path_start) = rest.find(['/', '?', '#']) {
            let path = &rest[path_start..];
            // a bare "/" or "/hook" is not a token; a path with some length to it is
            if path.len() >= 8 {
                register(path);
            }
        }
    }
}

/// Registers private key material: the whole text and each line of it long enough to matter,
/// so that a quoted fragment of a PEM block is redacted too.
pub fn register_key_material(text: &str) {
    register(text);
    for line in text.lines().map(str::trim) {
        if line.len() >= 16 && !line.starts_with("-----") {
            register(line);
        }
    }
}

/// The spellings of a secret that outputs produce: raw, percent-encoded (upper- and lower-case
/// hex, and with `+` for spaces), HTML-escaped, Slack-escaped, SQL-quoted, conninfo-quoted and
/// Rust-debug-escaped.
fn encodings(secret: &str) -> Vec<String> {
    let percent_upper = percent_encode(secret, false);
    let percent_lower = percent_encode(secret, true);
    vec![
        secret.to_string(),
        percent_upper.replace("%20", "+"),
        percent_upper,
        percent_lower,
        html_escaped(secret),
        secret
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;"),
        secret.replace('\'', "''"),
        secret.replace('\\', "\\\\").replace('\'', "\\'"),
        format!("{secret:?}").trim_matches('"').to_string(),
    ]
}

/// Percent-encodes every byte outside RFC 3986's unreserved set.
pub fn percent_encode(s: &str, lower_hex: bool) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else if lower_hex {
            out.push_str(&format!("%{b:02x}"));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn html_escaped(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn json_escaped(s: &str) -> String {
    let quoted = serde_json::Value::String(s.to_string()).to_string();
    quoted[1..quoted.len() - 1].to_string()
}

/// Replaces every registered secret, in every registered encoding, with `***`.
pub fn values(text: &str) -> String {
    let registry = REGISTRY.read().unwrap_or_else(|e| e.into_inner());
    let mut out = text.to_string();
    for secret in registry.iter() {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), "***");
        }
    }
    out
}

/// Removes credentials from free text: every registered secret, then passwords in URLs'
/// userinfo, `password=` pairs, bearer tokens and Google access tokens.
pub fn scrub(text: &str) -> String {
    let text = values(text);
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        // As libpq reads a URI: the userinfo ends at the first '@' before any '/'. '?' and '#'
        // do not end it (a password may hold them); whitespace ends the URL in free text.
        let end = tail
            .find(|c: char| c == '/' || c == '@' || c.is_whitespace())
            .unwrap_or(tail.len());
        if tail[end..].starts_with('@') {
            let userinfo = &tail[..end];
            match userinfo.find(':') {
                Some(colon) => {
                    out.push_str(&userinfo[..colon]);
                    out.push_str(":***");
                }
                None => out.push_str(userinfo),
            }
            rest = &tail[end..];
        } else {
            rest = tail;
        }
    }
    out.push_str(rest);
    let out = scrub_password_pairs(&out);
    let out = scrub_token_like(&out, "Bearer ");
    scrub_token_like(&out, "ya29.")
}

/// Replaces every occurrence of each secret (an API key, a webhook URL or its path) and every
/// registered secret with `***`.
pub fn without(text: &str, secrets: &[&str]) -> String {
    let mut out = values(text);
    for s in secrets.iter().filter(|s| s.len() >= MIN_SECRET_LEN) {
        out = out.replace(*s, "***");
    }
    out
}

/// `https://hooks.slack.com/services/T0/B0/secret` → `https://hooks.slack.com/…`: the part of a
/// URL that can be shown (webhook and ping URLs carry their token in the path).
pub fn url_origin(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return "…".into();
    };
    let rest = &url[scheme_end + 3..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let host = &rest[..end];
    let host = host.rsplit_once('@').map(|(_, h)| h).unwrap_or(host);
    format!("{}://{host}/…", &url[..scheme_end])
}

/// libpq's idea of blank space (C `isspace`): a password may hold any other character.
pub fn is_conninfo_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

/// `password=x`, `password = 'x y'`, `password='it\'s'` (any case): the value as libpq would
/// read it, quotes and backslash escapes included, becomes `***`.
fn scrub_password_pairs(text: &str) -> String {
    const KEY: &str = "password";
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut done = 0;
    let mut search = 0;
    while let Some(found) = lower[search..].find(KEY) {
        let key_end = search + found + KEY.len();
        search = key_end;
        let after_key = text[key_end..].trim_start_matches(is_conninfo_space);
        let Some(value) = after_key.strip_prefix('=') else {
            continue;
        };
        let value = value.trim_start_matches(is_conninfo_space);
        let value_start = text.len() - value.len();
        let value_len = conninfo_value_len(value);
        out.push_str(&text[done..value_start]);
        out.push_str("***");
        done = value_start + value_len;
        search = done;
    }
    out.push_str(&text[done..]);
    out
}

/// The length of a conninfo value at the start of `s`: a quoted value up to its closing quote
/// (backslash escapes skipped), or up to blank space or `&` (a URI's next parameter).
fn conninfo_value_len(s: &str) -> usize {
    let mut chars = s.char_indices();
    if s.starts_with('\'') {
        chars.next();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    chars.next();
                }
                '\'' => return i + 1,
                _ => {}
            }
        }
        return s.len();
    }
    while let Some((i, c)) = chars.next() {
        if is_conninfo_space(c) || c == '&' {
            return i;
        }
        if c == '\\' {
            chars.next();
        }
    }
    s.len()
}

fn scrub_token_like(text: &str, prefix: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(pos) = rest.find(prefix) {
        out.push_str(&rest[..pos + prefix.len()]);
        let tail = &rest[pos + prefix.len()..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || "-_.~+/=".contains(c)))
            .unwrap_or(tail.len());
        out.push_str("***");
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[doc(hidden)]
/// A table of passwords that together hold every printable ASCII character and some non-ASCII
/// ones, for the tests here, in pgconn and end to end.
pub fn test_password_table() -> Vec<String> {
    let printable: Vec<char> = (0x21u8..0x7f).map(char::from).collect();
    let mut table: Vec<String> = printable
        .chunks(12)
        .map(|chunk| format!("pw{}x", chunk.iter().collect::<String>()))
        .collect();
    table.push("with space and 'quote' \\ back".into());
    table.push("ünïcødé€ 🔑 пароль".into());
    table.push("#hash?query/slash@at:colon".into());
    table.push("tab\there%25%41".into());
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_are_removed() {
        assert_eq!(
            scrub("postgres://app:s3cr%40t@db.example:5432/shop?sslmode=require"),
            "postgres://app:***@db.example:5432/shop?sslmode=require"
        );
        assert_eq!(
            scrub("postgresql://app@db/shop"),
            "postgresql://app@db/shop"
        );
        assert_eq!(scrub("postgres:///shop"), "postgres:///shop");
    }

    #[test]
    fn conninfo_passwords_are_removed() {
        assert_eq!(
            scrub("host=db password=hunter2 dbname=x"),
            "host=db password=*** dbname=x"
        );
        assert_eq!(
            scrub("host=db password='a b' dbname=x"),
            "host=db password=*** dbname=x"
        );
    }

    #[test]
    fn named_secrets_and_url_paths_are_removed() {
        assert_eq!(
            without("key SG.abc123 refused", &["SG.abc123"]),
            "key *** refused"
        );
        assert_eq!(
            url_origin("https://hooks.slack.com/services/T0/B0/xyz"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(
            url_origin("http://u:p@127.0.0.1:9/ping/uuid?x=1"),
            "http://127.0.0.1:9/…"
        );
    }

    #[test]
    fn tokens_are_removed() {
        assert_eq!(
            scrub("Authorization: Bearer ya29.abc-DEF_1 rest"),
            "Authorization: Bearer *** rest"
        );
        assert_eq!(scrub("token ya29.a0AfB_xyz"), "token ya29.***");
    }

    #[test]
    fn registered_secrets_are_removed_in_every_encoding() {
        for pw in test_password_table() {
            register(&pw);
            let outputs = [
                pw.clone(),
                percent_encode(&pw, false),
                percent_encode(&pw, true),
                html_escaped(&pw),
                json_escaped(&pw),
                json_escaped(&html_escaped(&pw)),
                pw.replace('\'', "''"),
                format!("{pw:?}"),
                serde_json::json!({ "error": format!("failed: {pw}") }).to_string(),
            ];
            for out in outputs {
                let text = format!("before {out} after");
                for redacted in [scrub(&text), values(&text)] {
                    assert!(!redacted.contains(&pw), "{pw:?} leaked from {redacted:?}");
                    assert!(redacted.contains("***"), "{redacted:?}");
                }
            }
        }
    }

    #[test]
    fn password_pairs_in_every_spelling_are_removed() {
        for (text, want) in [
            (
                "host=db password = 'x y' dbname=z",
                "host=db password = *** dbname=z",
            ),
            (r"password='it\'s x' dbname=z", "password=*** dbname=z"),
            ("PASSWORD=a#b c", "PASSWORD=*** c"),
            (
                "postgres://h/d?password=s3cr&sslmode=require",
                "postgres://h/d?password=***&sslmode=require",
            ),
        ] {
            assert_eq!(scrub(text), want);
        }
    }

    #[test]
    fn url_userinfo_with_hash_and_question_mark_is_removed() {
        assert_eq!(
            scrub("connecting to postgres://app:pa#ss?w@db:5432/shop failed"),
            "connecting to postgres://app:***@db:5432/shop failed"
        );
    }

    #[test]
    fn short_values_are_not_registered() {
        register("ab");
        assert_eq!(values("ab cab"), "ab cab");
    }
}
