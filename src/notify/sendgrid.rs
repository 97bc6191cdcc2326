//! Email through SendGrid's v3 mail-send API (`POST {base}v3/mail/send`, 202 on acceptance).
//! Network errors, 429 and 5xx are retried on the schedule; any other answer (401/403 for a bad
//! key, 400 for a rejected sender or address) is final and reported with a hint. The API key is
//! never part of an error.

use std::time::Duration;

use anyhow::Result;
use serde_json::{json, Value};

use crate::error::failure_hint;
use crate::notify::email::{self, Email};
use crate::notify::retry::{with_retries, AttemptError, RetrySchedule};
use crate::notify::{http_call, is_transient_status, Channel, Report};

pub struct SendGrid {
    endpoint: String,
    api_key: String,
    from: String,
    to: Vec<String>,
    schedule: RetrySchedule,
    timeout: Duration,
}

impl SendGrid {
    /// `base` ends with '/'.
    pub fn new(
        base: &str,
        api_key: String,
        from: String,
        to: Vec<String>,
        schedule: RetrySchedule,
        timeout: Duration,
    ) -> SendGrid {
        SendGrid {
            endpoint: format!("{base}v3/mail/send"),
            api_key,
            from,
            to,
            schedule,
            timeout,
        }
    }

    /// Sends one message, sleeping through `sleep` between attempts.
    pub fn deliver(&self, message: &Email, sleep: &mut dyn FnMut(Duration)) -> Result<()> {
        let body = request_body(message, &self.from, &self.to);
        let auth = format!("Bearer {}", self.api_key);
        let secrets = [self.api_key.as_str()];
        with_retries(&self.schedule, "sendgrid", sleep, || {
            let answer = http_call(
                &self.endpoint,
                &[("Authorization", &auth)],
                Some(&body),
                self.timeout,
                &secrets,
            )
            .map_err(|e| AttemptError::Transient(e.context("SendGrid could not be reached")))?;
            match answer.status {
                200..=299 => Ok(()),
                s if is_transient_status(s) => Err(AttemptError::Transient(anyhow::anyhow!(
                    "SendGrid answered HTTP {s}: {}",
                    error_text(&answer.body)
                ))),
                s => Err(AttemptError::Permanent(rejected(s, &answer.body))),
            }
        })
    }
}

impl Channel for SendGrid {
    fn name(&self) -> &'static str {
        "sendgrid"
    }

    fn describe(&self) -> String {
        format!(
            "{} via {}",
            self.to.join(", "),
            crate::redact::url_origin(&self.endpoint)
        )
    }

    fn send(&self, report: &Report) -> Result<()> {
        self.deliver(&email::render(report), &mut std::thread::sleep)
    }
}

/// The mail-send request: one personalization with every recipient, text before HTML (the order
/// SendGrid requires).
pub fn request_body(message: &Email, from: &str, to: &[String]) -> Value {
    json!({
        "personalizations": [{ "to": to.iter().map(|a| json!({ "email": a })).collect::<Vec<_>>() }],
        "from": { "email": from, "name": "pgdrive" },
        "subject": message.subject,
        "content": [
            { "type": "text/plain", "value": message.text },
            { "type": "text/html", "value": message.html },
        ],
    })
}

/// SendGrid's `{"errors": [{"message": …}]}` as one line.
fn error_text(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let messages: Vec<String> = parsed
        .as_ref()
        .and_then(|v| v["errors"].as_array())
        .map(|errs| {
            errs.iter()
                .filter_map(|e| {
                    let m = e["message"].as_str()?;
                    Some(match e["field"].as_str() {
                        Some(f) => format!("{f}: {m}"),
                        None => m.to_string(),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    if messages.is_empty() {
        body.chars().take(200).collect()
    } else {
        messages.join("; ")
    }
}

fn rejected(status: u16, body: &str) -> anyhow::Error {
    let hint = match status {
        401 | 403 => "check SENDGRID_API_KEY: it must be a valid key with the Mail Send permission",
        400 => "check SENDGRID_FROM_EMAIL (a sender verified in SendGrid) and PGDRIVE_NOTIFY_EMAIL",
        _ => "see SendGrid's answer above; this is not retried",
    };
    failure_hint(
        format!(
            "SendGrid refused the message: HTTP {status}: {}",
            error_text(body)
        ),
        hint,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sendgrid_errors_read_well_and_carry_a_hint() {
        let body = r#"{"errors":[{"message":"The provided authorization grant is invalid, expired, or revoked","field":null,"help":null}]}"#;
        let err = rejected(401, body);
        assert_eq!(err.to_string(), "SendGrid refused the message: HTTP 401: The provided authorization grant is invalid, expired, or revoked");
        assert!(crate::error::hint(&err)
            .unwrap()
            .contains("SENDGRID_API_KEY"));
        let body = r#"{"errors":[{"message":"Does not contain a valid address.","field":"personalizations.0.to.0.email"}]}"#;
        assert_eq!(
            error_text(body),
            "personalizations.0.to.0.email: Does not contain a valid address."
        );
    }

    #[test]
    fn the_request_lists_every_recipient_and_both_parts() {
        let e = Email {
            subject: "s".into(),
            text: "t".into(),
            html: "<p>h</p>".into(),
        };
        let body = request_body(
            &e,
            "backups@example.com",
            &["a@example.com".into(), "b@example.com".into()],
        );
        assert_eq!(
            body["personalizations"][0]["to"][1]["email"],
            "b@example.com"
        );
        assert_eq!(body["content"][0]["type"], "text/plain");
        assert_eq!(body["content"][1]["value"], "<p>h</p>");
    }

    /// A one-connection-per-answer HTTP server that answers with `statuses` in turn.
    fn server(statuses: Vec<u16>) -> (String, std::thread::JoinHandle<usize>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}/", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let mut served = 0;
            for status in statuses {
                let (mut s, _) = listener.accept().unwrap();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 65536];
                // read the head, then the body by Content-Length
                loop {
                    let n = s.read(&mut chunk).unwrap();
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap())
                            })
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len || n == 0 {
                            break;
                        }
                    }
                }
                let body = if status == 202 {
                    ""
                } else {
                    r#"{"errors":[{"message":"busy"}]}"#
                };
                write!(
                    s,
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
                served += 1;
            }
            served
        });
        (base, handle)
    }

    fn client(base: &str) -> SendGrid {
        SendGrid::new(
            base,
            "SG.secret-key".into(),
            "b@example.com".into(),
            vec!["ops@example.com".into()],
            RetrySchedule::default(),
            Duration::from_secs(5),
        )
    }

    #[test]
    fn retries_429_and_5xx_after_1_5_and_15_seconds() {
        let (base, server) = server(vec![429, 500, 503, 202]);
        let mut slept = Vec::new();
        let e = Email {
            subject: "s".into(),
            text: "t".into(),
            html: "h".into(),
        };
        client(&base).deliver(&e, &mut |d| slept.push(d)).unwrap();
        assert_eq!(server.join().unwrap(), 4);
        assert_eq!(
            slept,
            vec![
                Duration::from_secs(1),
                Duration::from_secs(5),
                Duration::from_secs(15)
            ]
        );
    }

    #[test]
    fn gives_up_after_three_retries_and_never_retries_401() {
        let (base, busy) = server(vec![500, 500, 500, 500]);
        let e = Email {
            subject: "s".into(),
            text: "t".into(),
            html: "h".into(),
        };
        let err = client(&base).deliver(&e, &mut |_| {}).unwrap_err();
        assert_eq!(busy.join().unwrap(), 4);
        assert!(
            format!("{err:#}").contains("gave up after 4 attempts"),
            "{err:#}"
        );

        let (base, refusing) = server(vec![401]);
        let mut slept = Vec::new();
        let err = client(&base)
            .deliver(&e, &mut |d| slept.push(d))
            .unwrap_err();
        assert_eq!(refusing.join().unwrap(), 1);
        assert!(slept.is_empty());
        assert!(!format!("{err:#}").contains("secret-key"));
    }
}
