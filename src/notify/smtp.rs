//! Email through an SMTP server with lettre (synchronous transport, rustls): STARTTLS on 587, TLS
//! on 465, or plain SMTP for a relay on the same host. Transient failures (connection errors, SMTP
//! 4xx) are retried on the schedule; permanent ones (5xx: bad credentials, a refused address) are
//! not. The password is never part of an error.

use std::time::Duration;

use anyhow::{Context, Result};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{Message, SmtpTransport, Transport};

use crate::error::{config_error_hint, failure_hint};
use crate::notify::email::{self, Email};
use crate::notify::retry::{with_retries, AttemptError, RetrySchedule};
use crate::notify::{one_line, Channel, Report};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS (required, never skipped).
    StartTls,
    /// TLS from the first byte ("SMTPS").
    Tls,
    /// No encryption: only for a relay on the same host or network.
    None,
}

impl SmtpTls {
    pub fn default_port(self) -> u16 {
        match self {
            SmtpTls::StartTls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            SmtpTls::StartTls => "starttls",
            SmtpTls::Tls => "tls",
            SmtpTls::None => "none",
        }
    }
}

pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    /// User and password.
    pub credentials: Option<(String, String)>,
    pub from: String,
    pub to: Vec<String>,
    pub timeout: Duration,
}

pub struct Smtp {
    transport: SmtpTransport,
    from: Mailbox,
    to: Vec<Mailbox>,
    server: String,
    password: Option<String>,
    schedule: RetrySchedule,
}

impl Smtp {
    /// Validates the addresses and builds the transport; no connection is made yet.
    pub fn new(s: SmtpSettings, schedule: RetrySchedule) -> Result<Smtp> {
        let from: Mailbox = s.from.parse().map_err(|e| {
            config_error_hint(format!(
                "the SMTP sender {:?} is not an address: {e}",
                s.from
            ), "set PGDRIVE_SMTP_FROM (or SENDGRID_FROM_EMAIL) to an address such as backups@example.com")
        })?;
        let to =
            s.to.iter()
                .map(|a| {
                    a.parse::<Mailbox>().map_err(|e| {
                        config_error_hint(format!(
                            "PGDRIVE_NOTIFY_EMAIL: {a:?} is not an address: {e}"
                        ), "list the recipients as addresses separated by commas: ops@example.com, dba@example.com")
                    })
                })
                .collect::<Result<Vec<_>>>()?;
        let builder = match s.tls {
            SmtpTls::StartTls => SmtpTransport::starttls_relay(&s.host),
            SmtpTls::Tls => SmtpTransport::relay(&s.host),
            SmtpTls::None => Ok(SmtpTransport::builder_dangerous(&s.host)),
        }
        .map_err(|e| config_error_hint(format!("PGDRIVE_SMTP_HOST {:?}: {e}", s.host), "set PGDRIVE_SMTP_HOST to the relay's host name or address alone (no scheme, no port: the port is PGDRIVE_SMTP_PORT)"))?;
        let mut builder = builder.port(s.port).timeout(Some(s.timeout));
        if let Some((user, password)) = &s.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(Smtp {
            transport: builder.build(),
            from,
            to,
            server: format!("{}:{} ({})", s.host, s.port, s.tls.as_str()),
            password: s.credentials.map(|(_, p)| p),
            schedule,
        })
    }

    pub fn deliver(&self, message: &Email, sleep: &mut dyn FnMut(Duration)) -> Result<()> {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(one_line(&message.subject));
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        let mail = builder
            .multipart(MultiPart::alternative_plain_html(
                message.text.clone(),
                message.html.clone(),
            ))
            .context("building the email")?;
        let secrets: Vec<&str> = self.password.iter().map(String::as_str).collect();
        with_retries(&self.schedule, "smtp", sleep, || {
            match self.transport.send(&mail) {
                Ok(_) => Ok(()),
                Err(e) => {
                    let message = format!(
                        "SMTP server {}: {}",
                        self.server,
                        crate::redact::without(&e.to_string(), &secrets)
                    );
                    // 4xx answers and network trouble may pass; the rest will not
                    if e.is_transient()
                        || !(e.is_permanent() || e.is_client() || e.is_tls() || e.is_response())
                    {
                        Err(AttemptError::Transient(anyhow::anyhow!(message)))
                    } else {
                        Err(AttemptError::Permanent(failure_hint(message, hint(&e))))
                    }
                }
            }
        })
    }
}

/// What to check after a final SMTP failure.
fn hint(e: &lettre::transport::smtp::Error) -> &'static str {
    let code = e.status().map(|c| c.to_string());
    if code.as_deref() == Some("535") || code.as_deref() == Some("534") {
        "check PGDRIVE_SMTP_USER and PGDRIVE_SMTP_PASSWORD"
    } else if e.is_permanent() {
        "the server refused the message: check PGDRIVE_SMTP_FROM (a sender the server accepts) and PGDRIVE_NOTIFY_EMAIL"
    } else {
        "check PGDRIVE_SMTP_TLS and PGDRIVE_SMTP_PORT (starttls: 587, tls: 465, none: a local relay) and whether the server offers a login on that connection"
    }
}

impl Channel for Smtp {
    fn name(&self) -> &'static str {
        "smtp"
    }

    fn describe(&self) -> String {
        let to: Vec<String> = self.to.iter().map(|m| m.email.to_string()).collect();
        format!("{} via {}", to.join(", "), self.server)
    }

    fn send(&self, report: &Report) -> Result<()> {
        self.deliver(&email::render(report), &mut std::thread::sleep)
    }
}
