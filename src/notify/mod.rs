//! Notifications about a run's outcome: the [`Report`] that describes it, the [`Channel`]s that
//! deliver it (SendGrid and SMTP email, Slack, a generic JSON webhook) and the heartbeat pings.
//!
//! Every channel is independent: each is tried, failures are collected and logged with the
//! channel's name, and nothing here panics into the caller or changes the backup's own outcome;
//! the caller decides what a failed notification means for the exit status (3 after a stored
//! backup, nothing after a failed one). Secrets (keys, passwords, webhook and ping URLs, which
//! carry tokens in their paths) never appear in what is logged or returned.

pub mod email;
pub mod ping;
pub mod retry;
pub mod sendgrid;
pub mod settings;
pub mod smtp;
pub mod webhook;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use anyhow::Result;

use crate::cli::NotifyPolicy;
use crate::kind::Kind;
use crate::log;
use crate::timeutil;
use crate::units::human_bytes;

pub use settings::load;

/// What happened, from the point of view of someone reading a notification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Success,
    Failure,
    /// `pgdrive notify-test`: no backup ran.
    Test,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Failure => "failure",
            Status::Test => "test",
        }
    }
}

/// The outcome of one run, as told to people and receivers. Error texts are already redacted.
#[derive(Clone, Debug)]
pub struct Report {
    pub status: Status,
    pub kind: Kind,
    pub database: String,
    pub host: String,
    pub started_ms: i64,
    pub finished_ms: i64,
    pub file: Option<String>,
    pub drive_file_id: Option<String>,
    /// Where the file is when it is not in Drive (a local path).
    pub local_path: Option<String>,
    pub size_bytes: Option<u64>,
    /// How many backups of this kind the targets keep now, the new one included.
    pub kept: Option<usize>,
    /// The step that failed (`connect`, `preflight`, `dump`, `upload`, …).
    pub step: Option<String>,
    pub error: Option<String>,
    /// The last lines pg_dump wrote to stderr, when it failed.
    pub dump_stderr: Option<String>,
    /// Follow-up steps that failed after the backup was stored (pruning, the catalog write).
    pub follow_up_errors: Vec<String>,
    /// The config file's job the run belongs to (`backup --job NAME`).
    pub job: Option<String>,
    /// A disaster-recovery drill's outcome (`pgdrive drill`): set, RTO, RPO or what failed.
    pub drill: Option<String>,
}

impl Report {
    /// A report with the facts every run has; the rest is filled in by the caller.
    pub fn new(status: Status, kind: Kind, database: &str, host: &str, started_ms: i64) -> Report {
        Report {
            status,
            kind,
            database: database.to_string(),
            host: host.to_string(),
            started_ms,
            finished_ms: timeutil::now_millis(),
            file: None,
            drive_file_id: None,
            local_path: None,
            size_bytes: None,
            kept: None,
            step: None,
            error: None,
            dump_stderr: None,
            job: None,
            drill: None,
            follow_up_errors: Vec::new(),
        }
    }

    /// A failure report for `error` at `step`; the pg_dump stderr tail is taken from the error
    /// chain when pg_dump is what failed.
    pub fn failure(
        kind: Kind,
        database: &str,
        host: &str,
        started_ms: i64,
        step: &str,
        error: &anyhow::Error,
    ) -> Report {
        let mut r = Report::new(Status::Failure, kind, database, host, started_ms);
        r.step = Some(step.to_string());
        r.error = Some(crate::error::render(error));
        r.dump_stderr = error
            .chain()
            .find_map(|c| c.downcast_ref::<crate::pgdump::DumpFailed>())
            .map(|d| crate::redact::scrub(&d.stderr_tail))
            .filter(|t| !t.is_empty());
        r
    }

    pub fn drive_link(&self) -> Option<String> {
        self.drive_file_id
            .as_ref()
            .map(|id| format!("https://drive.google.com/file/d/{id}/view"))
    }

    pub fn duration_ms(&self) -> i64 {
        (self.finished_ms - self.started_ms).max(0)
    }

    /// One line for chat and webhook receivers (also the email subject without its prefix).
    pub fn headline(&self) -> String {
        let what = match &self.job {
            Some(job) => format!(
                "{} backup of {} (job {})",
                self.kind,
                one_line(&self.database),
                one_line(job)
            ),
            None => format!("{} backup of {}", self.kind, one_line(&self.database)),
        };
        if let Some(drill) = &self.drill {
            let of = match &self.job {
                Some(job) => format!("job {}", one_line(job)),
                None => one_line(&self.database),
            };
            return match self.status {
                Status::Failure => {
                    format!(
                        "❌ disaster-recovery drill of {of} FAILED: {}",
                        one_line(drill)
                    )
                }
                _ => format!(
                    "✅ disaster-recovery drill of {of} passed: {}",
                    one_line(drill)
                ),
            };
        }
        match self.status {
            Status::Success if !self.follow_up_errors.is_empty() => {
                format!(
                    "⚠️ {what}: {} stored, but a follow-up step failed",
                    self.size_text()
                )
            }
            Status::Success => format!("✅ {what}: {}", self.size_text()),
            Status::Failure => format!("❌ {what} failed"),
            Status::Test => format!("🔔 test notification from {}", one_line(&self.host)),
        }
    }

    pub fn size_text(&self) -> String {
        self.size_bytes
            .map(human_bytes)
            .unwrap_or_else(|| "size unknown".into())
    }
}

/// Control characters (a newline in a database name) would break subjects and chat lines.
pub fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A way of telling people: email, chat, a webhook.
pub trait Channel {
    /// A short name for logs: `sendgrid`, `smtp`, `slack`, `webhook`.
    fn name(&self) -> &'static str;
    /// Where it goes, without secrets (for logs and `notify-test`).
    fn describe(&self) -> String;
    fn send(&self, report: &Report) -> Result<()>;
}

/// A channel that failed, with why.
#[derive(Debug)]
pub struct ChannelFailure {
    pub channel: &'static str,
    pub error: anyhow::Error,
}

/// Sends `report` through every channel, each independently; returns the failures.
pub fn fan_out(channels: &[Box<dyn Channel>], report: &Report) -> Vec<ChannelFailure> {
    let mut failures = Vec::new();
    for c in channels {
        // a bug in one channel must not cost the others (or the run's exit status)
        let result = catch_unwind(AssertUnwindSafe(|| c.send(report)))
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the {} channel panicked", c.name())));
        if let Err(error) = result {
            failures.push(ChannelFailure {
                channel: c.name(),
                error,
            });
        }
    }
    failures
}

/// The notification side of one `pgdrive backup` run: the policy, the message channels and the
/// heartbeat pinger for its kind.
pub struct Notifier {
    pub policy: NotifyPolicy,
    pub channels: Vec<Box<dyn Channel>>,
    pub ping: Option<ping::Pinger>,
    /// Stamped on every report (`backup --job NAME`).
    pub job: Option<String>,
}

impl Notifier {
    /// Whether a report with this status is sent to the message channels.
    pub fn wants(&self, status: Status) -> bool {
        match self.policy {
            NotifyPolicy::Never => false,
            NotifyPolicy::OnFailure => status != Status::Success,
            NotifyPolicy::Always => true,
        }
    }

    /// The heartbeat's `/start`. A failure is only a warning: the finishing ping decides.
    pub fn run_started(&self) {
        if let Some(p) = &self.ping {
            if let Err(e) = p.start() {
                log::warn(
                    "the start ping failed",
                    &[
                        ("channel", "ping".into()),
                        ("error", crate::error::render(&e)),
                    ],
                );
            }
        }
    }

    /// Pings (success or `/fail`) and, as the policy says, notifies every channel. Returns the
    /// names of the channels that failed; each failure is logged here.
    pub fn run_finished(&self, report: &Report) -> Vec<&'static str> {
        let stamped;
        let report = match &self.job {
            Some(job) if report.job.is_none() => {
                stamped = Report {
                    job: Some(job.clone()),
                    ..report.clone()
                };
                &stamped
            }
            _ => report,
        };
        let mut failed = Vec::new();
        if let Some(p) = &self.ping {
            let result = match report.status {
                Status::Success => p.success(),
                _ => p.fail(),
            };
            match result {
                Ok(()) => log::debug(
                    "ping sent",
                    &[("channel", "ping".into()), ("to", p.describe())],
                ),
                Err(e) => {
                    log_failure("ping", &e);
                    failed.push("ping");
                }
            }
        }
        if !self.wants(report.status) {
            return failed;
        }
        let failures = fan_out(&self.channels, report);
        for c in &self.channels {
            if let Some(f) = failures.iter().find(|f| f.channel == c.name()) {
                log_failure(f.channel, &f.error);
                failed.push(f.channel);
            } else {
                log::info(
                    "notification sent",
                    &[("channel", c.name().into()), ("to", c.describe())],
                );
            }
        }
        failed
    }
}

fn log_failure(channel: &str, e: &anyhow::Error) {
    let mut fields = vec![
        ("channel", channel.to_string()),
        ("error", crate::error::render(e)),
    ];
    if let Some(h) = crate::error::hint(e) {
        fields.push(("hint", h));
    }
    log::error("notification failed", &fields);
}

/// An HTTP answer: status and (truncated) body text.
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// POSTs JSON (or GETs, when `body` is `None`) with a whole-request timeout. Transport errors are
/// rendered without `secrets` (the URL's token, an API key), which some errors quote.
pub fn http_call(
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&serde_json::Value>,
    timeout: Duration,
    secrets: &[&str],
) -> std::result::Result<Answer, anyhow::Error> {
    let agent = crate::drive::http_agent();
    // after a signal or a stall the notification is part of a cleanup that must stay short
    let timeout = if crate::signals::stopping() {
        timeout.min(crate::signals::CLEANUP_TIMEOUT)
    } else {
        timeout
    };
    let result = match body {
        Some(json) => {
            let mut req = agent
                .post(url)
                .config()
                .timeout_global(Some(timeout))
                .build()
                .header("Content-Type", "application/json");
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            // the report's texts are scrubbed already; no registered secret leaves in any encoding
            req.send(crate::redact::values(&json.to_string()).as_bytes())
        }
        None => {
            let mut req = agent
                .get(url)
                .config()
                .timeout_global(Some(timeout))
                .build();
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            req.call()
        }
    };
    match result {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            let body = resp
                .body_mut()
                .with_config()
                .limit(64 << 10)
                .read_to_string()
                .unwrap_or_default();
            Ok(Answer {
                status,
                body: crate::redact::without(&body, secrets),
            })
        }
        Err(e) => Err(anyhow::anyhow!(
            "{}",
            crate::redact::without(&e.to_string(), secrets)
        )),
    }
}

/// Whether an HTTP status is worth retrying.
pub fn is_transient_status(status: u16) -> bool {
    status == 408 || status == 429 || (500..=599).contains(&status)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake {
        name: &'static str,
        outcome: fn() -> Result<()>,
        sent: std::cell::Cell<u32>,
    }

    impl Channel for Fake {
        fn name(&self) -> &'static str {
            self.name
        }
        fn describe(&self) -> String {
            self.name.into()
        }
        fn send(&self, _: &Report) -> Result<()> {
            self.sent.set(self.sent.get() + 1);
            (self.outcome)()
        }
    }

    fn report(status: Status) -> Report {
        Report::new(status, Kind::Daily, "shop", "db1", 0)
    }

    #[test]
    fn one_failing_or_panicking_channel_does_not_stop_the_others() {
        let channels: Vec<Box<dyn Channel>> = vec![
            Box::new(Fake {
                name: "a",
                outcome: || Err(anyhow::anyhow!("down")),
                sent: 0.into(),
            }),
            Box::new(Fake {
                name: "b",
                outcome: || panic!("bug"),
                sent: 0.into(),
            }),
            Box::new(Fake {
                name: "c",
                outcome: || Ok(()),
                sent: 0.into(),
            }),
        ];
        let failures = fan_out(&channels, &report(Status::Failure));
        let names: Vec<_> = failures.iter().map(|f| f.channel).collect();
        assert_eq!(names, vec!["a", "b"]);
        let notifier = Notifier {
            policy: NotifyPolicy::Always,
            channels,
            ping: None,
            job: None,
        };
        assert_eq!(
            notifier.run_finished(&report(Status::Success)),
            vec!["a", "b"]
        );
    }

    #[test]
    fn policies() {
        let n = |policy| Notifier {
            policy,
            channels: vec![],
            ping: None,
            job: None,
        };
        assert!(n(NotifyPolicy::OnFailure).wants(Status::Failure));
        assert!(!n(NotifyPolicy::OnFailure).wants(Status::Success));
        assert!(n(NotifyPolicy::Always).wants(Status::Success));
        assert!(!n(NotifyPolicy::Never).wants(Status::Failure));
    }

    #[test]
    fn the_policy_decides_whether_channels_are_tried() {
        let channels: Vec<Box<dyn Channel>> = vec![Box::new(Fake {
            name: "a",
            outcome: || Err(anyhow::anyhow!("down")),
            sent: 0.into(),
        })];
        let notifier = Notifier {
            policy: NotifyPolicy::OnFailure,
            channels,
            ping: None,
            job: None,
        };
        assert!(notifier.run_finished(&report(Status::Success)).is_empty());
        assert_eq!(notifier.run_finished(&report(Status::Failure)), vec!["a"]);
    }

    #[test]
    fn headlines_sort_and_read_well() {
        let mut r = report(Status::Success);
        r.size_bytes = Some(1_234_567_890);
        assert_eq!(r.headline(), "✅ daily backup of shop: 1.2 GB");
        r.kind = Kind::Hourly;
        r.status = Status::Failure;
        assert_eq!(r.headline(), "❌ hourly backup of shop failed");
        r.database = "a\nb".into();
        assert_eq!(r.headline(), "❌ hourly backup of a b failed");
        r.job = Some("nightly".into());
        assert_eq!(r.headline(), "❌ hourly backup of a b (job nightly) failed");
    }

    #[test]
    fn failure_reports_carry_the_pg_dump_stderr_tail() {
        let dump = crate::pgdump::DumpFailed {
            description: "exited with status 1".into(),
            stderr_tail: "pg_dump: error: permission denied".into(),
        };
        let err = anyhow::Error::new(dump).context("dumping");
        let r = Report::failure(Kind::Daily, "shop", "db1", 0, "dump", &err);
        assert_eq!(
            r.dump_stderr.as_deref(),
            Some("pg_dump: error: permission denied")
        );
        assert_eq!(r.step.as_deref(), Some("dump"));
        assert!(r.error.unwrap().contains("dumping"));
    }
}
