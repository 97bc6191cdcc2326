//! Chat and machine receivers: a Slack incoming webhook (`{"text": …}` in Slack's mrkdwn) and a
//! generic webhook that receives the report as JSON. The generic payload is a superset of
//! `{status, timestamp, database, message}`, which receivers written for the Node.js version read.
//! Both retry network errors, 429 and 5xx on the schedule. Webhook URLs are secrets (the token is
//! in the path): only their origin is ever shown.

use std::time::Duration;

use anyhow::Result;
use serde_json::{json, Value};

use crate::notify::email::duration_text;
use crate::notify::retry::{with_retries, AttemptError, RetrySchedule};
use crate::notify::{http_call, is_transient_status, one_line, Channel, Report, Status};
use crate::timeutil;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    Slack,
    Generic,
}

pub struct Webhook {
    style: Style,
    url: String,
    schedule: RetrySchedule,
    timeout: Duration,
}

impl Webhook {
    pub fn new(style: Style, url: String, schedule: RetrySchedule, timeout: Duration) -> Webhook {
        Webhook {
            style,
            url,
            schedule,
            timeout,
        }
    }

    pub fn deliver(&self, payload: &Value, sleep: &mut dyn FnMut(Duration)) -> Result<()> {
        let (_, path) = self
            .url
            .split_at(self.url.find("://").map(|i| i + 3).unwrap_or(0));
        let secrets = [self.url.as_str(), path];
        let what = self.name();
        with_retries(&self.schedule, what, sleep, || {
            let answer =
                http_call(&self.url, &[], Some(payload), self.timeout, &secrets).map_err(|e| {
                    AttemptError::Transient(e.context(format!(
                        "{what} receiver {} could not be reached",
                        self.describe()
                    )))
                })?;
            let text: String = answer.body.chars().take(200).collect();
            match answer.status {
                200..=299 => Ok(()),
                s if is_transient_status(s) => Err(AttemptError::Transient(anyhow::anyhow!("{} answered HTTP {s}: {text}", self.describe()))),
                s => Err(AttemptError::Permanent(crate::error::failure_hint(
                    format!("{} refused the message: HTTP {s}: {text}", self.describe()),
                    match self.style {
                        Style::Slack => "check PGDRIVE_SLACK_WEBHOOK_URL: the webhook may have been revoked or its channel archived",
                        Style::Generic => "check PGDRIVE_WEBHOOK_URL and the receiver's logs",
                    },
                ))),
            }
        })
    }
}

impl Channel for Webhook {
    fn name(&self) -> &'static str {
        match self.style {
            Style::Slack => "slack",
            Style::Generic => "webhook",
        }
    }

    fn describe(&self) -> String {
        crate::redact::url_origin(&self.url)
    }

    fn send(&self, report: &Report) -> Result<()> {
        let payload = match self.style {
            Style::Slack => slack_payload(report),
            Style::Generic => generic_payload(report),
        };
        self.deliver(&payload, &mut std::thread::sleep)
    }
}

/// The JSON a generic receiver gets.
pub fn generic_payload(r: &Report) -> Value {
    json!({
        "status": r.status.as_str(),
        "kind": r.kind.as_str(),
        "job": r.job,
        "database": r.database,
        "file": r.file,
        "file_id": r.drive_file_id,
        "size_bytes": r.size_bytes,
        "duration_ms": r.duration_ms(),
        "started_at": timeutil::rfc3339_millis(r.started_ms),
        "finished_at": timeutil::rfc3339_millis(r.finished_ms),
        "host": r.host,
        "error": r.error,
        // the fields receivers of the Node.js version read
        "timestamp": timeutil::rfc3339_millis(r.finished_ms),
        "message": r.headline(),
        "step": r.step,
        "kept": r.kept,
        "link": r.drive_link(),
        "drill": r.drill,
    })
}

/// Slack's control characters in text: `&`, `<` and `>` must be escaped.
pub fn escape_slack(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A Slack message: the headline, the facts, and the error in a code block.
pub fn slack_payload(r: &Report) -> Value {
    let mut lines = vec![format!("*{}*", escape_slack(&r.headline()))];
    match r.status {
        Status::Success => {
            let file = escape_slack(&one_line(r.file.as_deref().unwrap_or("?")));
            match r.drive_link() {
                Some(link) => lines.push(format!("File: <{link}|{file}>")),
                None => lines.push(format!("File: `{file}`")),
            }
            lines.push(format!("Duration: {}", duration_text(r.duration_ms())));
            if let Some(k) = r.kept {
                lines.push(format!("Kept: {k} {} backups", r.kind));
            }
        }
        Status::Failure => lines.push(format!(
            "Step: `{}`",
            escape_slack(r.step.as_deref().unwrap_or("unknown"))
        )),
        Status::Test => {}
    }
    lines.push(format!("Host: `{}`", escape_slack(&one_line(&r.host))));
    if let Some(e) = &r.error {
        lines.push(format!("```{}```", escape_slack(e)));
    }
    if let Some(t) = &r.dump_stderr {
        lines.push(format!("pg_dump stderr:\n```{}```", escape_slack(t)));
    }
    for f in &r.follow_up_errors {
        lines.push(format!("Follow-up failed: {}", escape_slack(f)));
    }
    json!({ "text": lines.join("\n") })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind::Kind;

    #[test]
    fn generic_payload_is_a_superset_of_the_old_shape() {
        let mut r = Report::new(Status::Success, Kind::Daily, "shop", "db1", 1_000);
        r.finished_ms = 3_500;
        r.file = Some("f.sql.gz".into());
        r.drive_file_id = Some("ID".into());
        r.size_bytes = Some(42);
        let p = generic_payload(&r);
        for key in [
            "status",
            "kind",
            "database",
            "file",
            "file_id",
            "size_bytes",
            "duration_ms",
            "started_at",
            "finished_at",
            "host",
            "error",
            "timestamp",
            "message",
        ] {
            assert!(p.get(key).is_some(), "{key} missing: {p}");
        }
        assert_eq!(p["status"], "success");
        assert_eq!(p["duration_ms"], 2_500);
        assert_eq!(p["error"], Value::Null);
        assert_eq!(p["finished_at"], "1970-01-01T00:00:03.500Z");
    }

    #[test]
    fn slack_text_is_escaped() {
        let mut r = Report::new(Status::Failure, Kind::Hourly, "shop", "db1", 0);
        r.error = Some("<!channel> & <script>".into());
        let text = slack_payload(&r)["text"].as_str().unwrap().to_string();
        assert!(
            text.contains("&lt;!channel&gt; &amp; &lt;script&gt;"),
            "{text}"
        );
        assert!(!text.contains("<!channel>"));
    }
}
