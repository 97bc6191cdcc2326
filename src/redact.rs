//! Keeping secrets out of output: redacted renderings of connection strings and a last-line scrub
//! applied to every error message before it is printed, logged, stored or sent.

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`; key/value conninfo strings
/// get `password=***`. Anything else is returned unchanged.
pub fn connection_string(url: &str) -> String {
    scrub(url)
}

/// Removes credentials that may have leaked into free text: passwords in URLs' userinfo,
/// `password=` pairs, bearer tokens and Google access tokens.
pub fn scrub(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        // userinfo ends at the first '@' before any '/', whitespace or end of the URL
        let end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || c == '?' || c == '#')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        if let Some(at) = authority.rfind('@') {
            let userinfo = &authority[..at];
            match userinfo.find(':') {
                Some(colon) => {
                    out.push_str(&userinfo[..colon]);
                    out.push_str(":***");
                }
                None => out.push_str(userinfo),
            }
            out.push_str(&authority[at..]);
        } else {
            out.push_str(authority);
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    let out = scrub_pairs(&out, "password=");
    let out = scrub_token_like(&out, "Bearer ");
    scrub_token_like(&out, "ya29.")
}

/// Replaces every occurrence of each secret (an API key, a webhook URL or its path) with `***`.
/// For texts that may quote a secret the generic [`scrub`] cannot recognise.
pub fn without(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| s.len() >= 4) {
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

fn scrub_pairs(text: &str, key: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(pos) = rest.find(key) {
        out.push_str(&rest[..pos + key.len()]);
        let tail = &rest[pos + key.len()..];
        let end = if let Some(stripped) = tail.strip_prefix('\'') {
            stripped.find('\'').map(|i| i + 2).unwrap_or(tail.len())
        } else {
            tail.find(|c: char| c.is_whitespace() || c == '&')
                .unwrap_or(tail.len())
        };
        out.push_str("***");
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_are_removed() {
        assert_eq!(
            connection_string("postgres://app:s3cr%40t@db.example:5432/shop?sslmode=require"),
            "postgres://app:***@db.example:5432/shop?sslmode=require"
        );
        assert_eq!(
            connection_string("postgresql://app@db/shop"),
            "postgresql://app@db/shop"
        );
        assert_eq!(connection_string("postgres:///shop"), "postgres:///shop");
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
}
