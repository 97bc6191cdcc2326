//! The shared vocabulary of `pgdrive check` and `pgdrive status`: one finding per line (ok, warn
//! or FAIL, with a hint), which kinds count as configured, and the seams through which other
//! modules (the notification channels, [`notifications`]) add their own checks and receive status
//! alerts.

use std::fmt;

use crate::config::Settings;
use crate::kind::Kind;

pub mod notifications;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

impl Level {
    pub fn label(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        }
    }
}

/// One finding: what was checked, what was found, and what to do about it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Finding {
    pub level: Level,
    pub subject: String,
    pub detail: String,
    pub hint: Option<String>,
}

impl Finding {
    pub fn ok(subject: impl Into<String>, detail: impl Into<String>) -> Finding {
        Finding {
            level: Level::Ok,
            subject: subject.into(),
            detail: detail.into(),
            hint: None,
        }
    }

    pub fn warn(
        subject: impl Into<String>,
        detail: impl Into<String>,
        hint: Option<String>,
    ) -> Finding {
        Finding {
            level: Level::Warn,
            subject: subject.into(),
            detail: detail.into(),
            hint,
        }
    }

    pub fn fail(
        subject: impl Into<String>,
        detail: impl Into<String>,
        hint: Option<String>,
    ) -> Finding {
        Finding {
            level: Level::Fail,
            subject: subject.into(),
            detail: detail.into(),
            hint,
        }
    }

    /// A failure described by an error chain, with the hint the error carries (the same hint a
    /// backup would print).
    pub fn from_error(subject: impl Into<String>, err: &anyhow::Error) -> Finding {
        Finding::fail(subject, crate::error::render(err), crate::error::hint(err))
    }
}

impl fmt::Display for Finding {
    /// `ok   subject: detail`, and an indented `hint:` line; secrets scrubbed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut line = format!(
            "{:<4} {}: {}",
            self.level.label(),
            self.subject,
            self.detail
        );
        if let Some(h) = &self.hint {
            line.push_str(&format!("\n     hint: {h}"));
        }
        f.write_str(&crate::redact::scrub(&line))
    }
}

/// A check another module contributes to `pgdrive check` (e.g. a notification channel: its
/// configuration is complete, its endpoint resolves). It must not send anything.
pub type Contributor = fn(&Settings) -> Vec<Finding>;

/// Every contributed check, run after pgdrive's own, in order. Modules add theirs here.
pub const CONTRIBUTED_CHECKS: &[Contributor] = &[notifications::checks];

/// What `pgdrive status` found wrong, for an alert.
#[derive(Clone, Debug)]
pub struct Alert {
    pub database: String,
    /// Each unhealthy kind with its problems, one line each, e.g. `daily: newest backup is 1d 6h
    /// old (max age 1d 2h)`.
    pub kinds: Vec<(Kind, Vec<String>)>,
}

/// Something that delivers a status alert (a notification channel). Returns an error when the
/// delivery failed; `status` reports it and still exits non-zero for the staleness itself.
pub type AlertSink = fn(&Settings, &Alert) -> anyhow::Result<()>;

/// Every alert sink. Modules add theirs here. Without any configured channel, `status` alerts
/// only through its exit status and output (cron mails the output of a failing job).
pub const ALERT_SINKS: &[AlertSink] = &[notifications::alert];

/// The kinds `check` and `status` look at: the one asked for, else daily (always expected) plus
/// hourly when HOURLY_DRIVE_FOLDER_ID or PGDRIVE_CRITICAL_TABLES is set, plus schema when
/// SCHEMA_DRIVE_FOLDER_ID is set. A local directory alone does not enable hourly or schema:
/// they are opt-in jobs, and a check should not fail for a job nobody scheduled.
pub fn configured_kinds(settings: &Settings, only: Option<Kind>) -> Vec<Kind> {
    if let Some(k) = only {
        return vec![k];
    }
    let mut kinds = vec![Kind::Daily];
    if settings.get("HOURLY_DRIVE_FOLDER_ID").is_some()
        || settings.get("PGDRIVE_CRITICAL_TABLES").is_some()
    {
        kinds.push(Kind::Hourly);
    }
    if settings.get("SCHEMA_DRIVE_FOLDER_ID").is_some() {
        kinds.push(Kind::Schema);
    }
    kinds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_read_well_and_hide_secrets() {
        let f = Finding::fail(
            "database",
            "cannot connect to postgres://u:hunter2@db/x",
            Some("check it".into()),
        );
        let s = f.to_string();
        assert!(s.starts_with("FAIL database: cannot connect"), "{s}");
        assert!(!s.contains("hunter2"), "{s}");
        assert!(s.ends_with("\n     hint: check it"), "{s}");
        assert_eq!(Finding::ok("a", "b").to_string(), "ok   a: b");
    }
}
