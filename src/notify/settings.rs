//! Notification settings, read through [`config::Settings`] (so the env-file works) and validated
//! before anything is attempted: a half-configured channel is a configuration error (exit 78),
//! not a silent gap discovered on the day a backup fails.

use std::time::Duration;

use anyhow::Result;

use crate::cli::NotifyPolicy;
use crate::config::Settings;
use crate::error::config_error_hint;
use crate::kind::Kind;
use crate::notify::ping::Pinger;
use crate::notify::retry::RetrySchedule;
use crate::notify::sendgrid::SendGrid;
use crate::notify::smtp::{Smtp, SmtpSettings, SmtpTls};
use crate::notify::webhook::{Style, Webhook};
use crate::notify::{Channel, Notifier};

pub const DEFAULT_SENDGRID_URL: &str = "https://api.sendgrid.com/";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The policy when neither the flag nor the environment sets one: every failure is reported;
/// successes of the hourly job are not, so that it does not flood inboxes.
pub fn default_policy(kind: Kind) -> NotifyPolicy {
    match kind {
        Kind::Hourly => NotifyPolicy::OnFailure,
        Kind::Daily | Kind::Schema => NotifyPolicy::Always,
    }
}

fn per_kind(prefix: &str, kind: Kind) -> String {
    format!("{prefix}_{}", kind.as_str().to_uppercase())
}

/// `--notify` > `PGDRIVE_NOTIFY_<KIND>` > `PGDRIVE_NOTIFY` > the kind's default.
pub fn policy(settings: &Settings, kind: Kind, flag: Option<NotifyPolicy>) -> Result<NotifyPolicy> {
    if let Some(p) = flag {
        return Ok(p);
    }
    for key in [
        per_kind("PGDRIVE_NOTIFY", kind),
        "PGDRIVE_NOTIFY".to_string(),
    ] {
        if let Some(v) = settings.get(&key) {
            return match v.trim() {
                "on-failure" => Ok(NotifyPolicy::OnFailure),
                "always" => Ok(NotifyPolicy::Always),
                "never" => Ok(NotifyPolicy::Never),
                _ => Err(config_error_hint(
                    format!("{key}={v:?} is not a valid value"),
                    "use on-failure, always or never",
                )),
            };
        }
    }
    Ok(default_policy(kind))
}

/// The heartbeat URL for a kind: `PGDRIVE_PING_URL_<KIND>`, else `PGDRIVE_PING_URL`.
pub fn ping_url(settings: &Settings, kind: Kind) -> Result<Option<String>> {
    let key = per_kind("PGDRIVE_PING_URL", kind);
    let (key, url) = match settings.get(&key) {
        Some(u) => (key, Some(u)),
        None => (
            "PGDRIVE_PING_URL".to_string(),
            settings.get("PGDRIVE_PING_URL"),
        ),
    };
    url.map(|u| http_url(&key, &u)).transpose()
}

/// Everything `pgdrive backup --kind KIND` notifies through.
pub fn load(settings: &Settings, kind: Kind, flag: Option<NotifyPolicy>) -> Result<Notifier> {
    let policy = policy(settings, kind, flag)?;
    let channels = channels(settings)?;
    let ping = ping_url(settings, kind)?.map(Pinger::new);
    Ok(Notifier {
        policy,
        channels,
        ping,
        job: None,
    })
}

/// The message channels that are configured (email, Slack, webhook), validated.
pub fn channels(settings: &Settings) -> Result<Vec<Box<dyn Channel>>> {
    let schedule = match settings.get("PGDRIVE_NOTIFY_RETRY_DELAYS_MS") {
        None => RetrySchedule::default(),
        Some(v) => RetrySchedule::parse_millis(&v).ok_or_else(|| {
            config_error_hint(
                format!("PGDRIVE_NOTIFY_RETRY_DELAYS_MS={v:?} is not a valid value"),
                "use milliseconds, e.g. 1000,5000,15000",
            )
        })?,
    };
    let timeout = match settings.get("PGDRIVE_NOTIFY_TIMEOUT_MS") {
        None => DEFAULT_TIMEOUT,
        Some(v) => Duration::from_millis(v.trim().parse().map_err(|_| {
            config_error_hint(
                format!("PGDRIVE_NOTIFY_TIMEOUT_MS={v:?} is not a number of milliseconds"),
                "set PGDRIVE_NOTIFY_TIMEOUT_MS to a whole number of milliseconds, e.g. 30000",
            )
        })?),
    };
    let recipients = recipients(settings)?;
    let mut channels: Vec<Box<dyn Channel>> = Vec::new();

    if let Some(api_key) = settings.get("SENDGRID_API_KEY") {
        let from = settings.get("SENDGRID_FROM_EMAIL").ok_or_else(|| {
            config_error_hint(
                "SENDGRID_API_KEY is set but SENDGRID_FROM_EMAIL is not",
                "set SENDGRID_FROM_EMAIL to a sender verified in SendGrid",
            )
        })?;
        check_address("SENDGRID_FROM_EMAIL", &from)?;
        let to = required_recipients(&recipients, "SENDGRID_API_KEY")?;
        let base = settings
            .get("PGDRIVE_SENDGRID_URL")
            .unwrap_or_else(|| DEFAULT_SENDGRID_URL.into());
        let base = http_url("PGDRIVE_SENDGRID_URL", &base)?;
        let base = if base.ends_with('/') {
            base
        } else {
            format!("{base}/")
        };
        channels.push(Box::new(SendGrid::new(
            &base,
            api_key,
            from,
            to,
            schedule.clone(),
            timeout,
        )));
    }

    if let Some(host) = settings.get("PGDRIVE_SMTP_HOST") {
        let tls = match settings.get("PGDRIVE_SMTP_TLS").as_deref().map(str::trim) {
            None | Some("starttls") => SmtpTls::StartTls,
            Some("tls") => SmtpTls::Tls,
            Some("none") => SmtpTls::None,
            Some(v) => {
                return Err(config_error_hint(
                    format!("PGDRIVE_SMTP_TLS={v:?} is not a valid value"),
                    "use starttls (port 587), tls (port 465) or none",
                ))
            }
        };
        let port = match settings.get("PGDRIVE_SMTP_PORT") {
            None => tls.default_port(),
            Some(p) => p.trim().parse().map_err(|_| {
                config_error_hint(format!("PGDRIVE_SMTP_PORT={p:?} is not a port number"), "set PGDRIVE_SMTP_PORT to a number from 1 to 65535, or leave it unset for the default of PGDRIVE_SMTP_TLS")
            })?,
        };
        let credentials = match (
            settings.get("PGDRIVE_SMTP_USER"),
            settings.get("PGDRIVE_SMTP_PASSWORD"),
        ) {
            (Some(u), Some(p)) => Some((u, p)),
            (None, None) => None,
            _ => {
                return Err(config_error_hint(
                    "set both PGDRIVE_SMTP_USER and PGDRIVE_SMTP_PASSWORD, or neither", "the SMTP login needs the user and the password; leave both unset for a relay that needs no login"))
            }
        };
        if tls == SmtpTls::None && credentials.is_some() && !is_loopback(&host) {
            return Err(config_error_hint(
                "PGDRIVE_SMTP_TLS=none would send the SMTP password unencrypted to a host that is not this machine",
                "use PGDRIVE_SMTP_TLS=starttls (port 587) or tls (port 465); plain SMTP with a login is only for a relay on localhost, 127.0.0.1 or ::1",
            ));
        }
        let from = settings
            .get("PGDRIVE_SMTP_FROM")
            .or_else(|| settings.get("SENDGRID_FROM_EMAIL"))
            .ok_or_else(|| {
                config_error_hint(
                    "PGDRIVE_SMTP_HOST is set but no sender is",
                    "set PGDRIVE_SMTP_FROM (or SENDGRID_FROM_EMAIL, which it defaults to)",
                )
            })?;
        let to = required_recipients(&recipients, "PGDRIVE_SMTP_HOST")?;
        let smtp = SmtpSettings {
            host,
            port,
            tls,
            credentials,
            from,
            to,
            timeout,
        };
        channels.push(Box::new(Smtp::new(smtp, schedule.clone())?));
    }

    if !recipients.is_empty() && channels.is_empty() {
        return Err(config_error_hint(
            "PGDRIVE_NOTIFY_EMAIL is set but no way to send email is",
            "set SENDGRID_API_KEY and SENDGRID_FROM_EMAIL, or PGDRIVE_SMTP_HOST and PGDRIVE_SMTP_FROM",
        ));
    }
    if let Some(url) = settings.get("PGDRIVE_SLACK_WEBHOOK_URL") {
        let url = http_url("PGDRIVE_SLACK_WEBHOOK_URL", &url)?;
        channels.push(Box::new(Webhook::new(
            Style::Slack,
            url,
            schedule.clone(),
            timeout,
        )));
    }
    if let Some(url) = settings.get("PGDRIVE_WEBHOOK_URL") {
        let url = http_url("PGDRIVE_WEBHOOK_URL", &url)?;
        channels.push(Box::new(Webhook::new(
            Style::Generic,
            url,
            schedule,
            timeout,
        )));
    }
    Ok(channels)
}

/// `PGDRIVE_NOTIFY_EMAIL`: comma-separated addresses.
fn recipients(settings: &Settings) -> Result<Vec<String>> {
    let list: Vec<String> = settings
        .get("PGDRIVE_NOTIFY_EMAIL")
        .unwrap_or_default()
        .split(',')
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty())
        .collect();
    for a in &list {
        check_address("PGDRIVE_NOTIFY_EMAIL", a)?;
    }
    Ok(list)
}

fn required_recipients(list: &[String], because: &str) -> Result<Vec<String>> {
    if list.is_empty() {
        return Err(config_error_hint(
            format!("{because} is set but PGDRIVE_NOTIFY_EMAIL is not"),
            "set PGDRIVE_NOTIFY_EMAIL to the comma-separated addresses that should receive backup reports",
        ));
    }
    Ok(list.to_vec())
}

/// A plain `local@domain` check; the provider does the real validation.
fn check_address(key: &str, address: &str) -> Result<()> {
    let ok = address.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty() && domain.contains('.') && !domain.ends_with('.')
    }) && !address
        .contains(|c: char| c.is_whitespace() || c == '<' || c == '>' || c == ',');
    if !ok {
        return Err(config_error_hint(
            format!("{key}: {address:?} is not an email address"),
            "write each address as name@example.com",
        ));
    }
    Ok(())
}

/// Whether a host names this machine without asking DNS: `localhost` or a loopback address.
fn is_loopback(host: &str) -> bool {
    let host = host.trim().trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

/// Checks an http(s) URL without ever quoting it: webhook and ping URLs carry tokens.
fn http_url(key: &str, url: &str) -> Result<String> {
    let url = url.trim();
    if !(url.starts_with("https://") || url.starts_with("http://"))
        || url.contains(char::is_whitespace)
    {
        return Err(config_error_hint(
            format!("{key} is not an http(s) URL"),
            "use the full URL, starting with https://",
        ));
    }
    Ok(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert!(check_address("K", "ops@example.com").is_ok());
        for bad in [
            "ops",
            "@example.com",
            "ops@localhost",
            "a b@example.com",
            "ops@example.",
        ] {
            assert!(check_address("K", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_urls_are_not_quoted() {
        let err = http_url("PGDRIVE_WEBHOOK_URL", "hooks.example.com/secret-token")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("secret-token"), "{err}");
    }

    #[test]
    fn hourly_successes_are_quiet_by_default() {
        assert_eq!(default_policy(Kind::Hourly), NotifyPolicy::OnFailure);
        assert_eq!(default_policy(Kind::Daily), NotifyPolicy::Always);
    }

    #[test]
    fn only_loopback_hosts_count_as_this_machine() {
        for host in [
            "localhost",
            "LOCALHOST",
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "[::1]",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in [
            "smtp.example.com",
            "10.0.0.1",
            "localhost.example.com",
            "127.0.0.1.nip.io",
            "0.0.0.0",
        ] {
            assert!(!is_loopback(host), "{host}");
        }
    }
}
