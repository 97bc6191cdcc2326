//! Heartbeat pings in the healthchecks.io / Uptime Kuma style, so that a run that never happens
//! or never finishes is noticed: `GET <url>/start` when a run begins, `GET <url>` after a verified
//! success, `GET <url>/fail` after a failure, `GET <url>/log` from `notify-test`. One attempt each
//! with a short timeout: a monitor that is down must not hold up a backup. The URL's path is a
//! secret (the check's token); only its origin is shown.

use std::time::Duration;

use anyhow::{bail, Result};

use crate::notify::http_call;

const PING_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Pinger {
    url: String,
}

impl Pinger {
    pub fn new(url: String) -> Pinger {
        Pinger { url }
    }

    pub fn start(&self) -> Result<()> {
        self.get("/start")
    }

    pub fn success(&self) -> Result<()> {
        self.get("")
    }

    pub fn fail(&self) -> Result<()> {
        self.get("/fail")
    }

    /// An event that does not change the check's state (healthchecks.io's `/log`).
    pub fn log(&self) -> Result<()> {
        self.get("/log")
    }

    pub fn describe(&self) -> String {
        crate::redact::url_origin(&self.url)
    }

    fn get(&self, suffix: &str) -> Result<()> {
        let url = with_suffix(&self.url, suffix);
        let (_, path) = self
            .url
            .split_at(self.url.find("://").map(|i| i + 3).unwrap_or(0));
        let what = if suffix.is_empty() {
            "success"
        } else {
            &suffix[1..]
        };
        let answer = http_call(&url, &[], None, PING_TIMEOUT, &[&url, &self.url, path])
            .map_err(|e| e.context(format!("the {what} ping to {} failed", self.describe())))?;
        if !(200..300).contains(&answer.status) {
            bail!(
                "the {what} ping to {} failed: HTTP {}",
                self.describe(),
                answer.status
            );
        }
        Ok(())
    }
}

/// Appends `/start` (etc.) to the path, before any query string.
pub fn with_suffix(url: &str, suffix: &str) -> String {
    let (base, query) = match url.find('?') {
        Some(i) => url.split_at(i),
        None => (url, ""),
    };
    format!("{}{suffix}{query}", base.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_go_before_the_query() {
        assert_eq!(
            with_suffix("https://hc-ping.com/abc", "/start"),
            "https://hc-ping.com/abc/start"
        );
        assert_eq!(
            with_suffix("https://hc-ping.com/abc/", "/fail"),
            "https://hc-ping.com/abc/fail"
        );
        assert_eq!(
            with_suffix("https://hc-ping.com/abc/", ""),
            "https://hc-ping.com/abc"
        );
        assert_eq!(
            with_suffix("https://k.example/api/push/t?status=up", "/fail"),
            "https://k.example/api/push/t/fail?status=up"
        );
    }
}
