//! The notification channels' part in `check` and `status`: `check` validates each channel's
//! configuration with the channels' own loader and proves each endpoint accepts a TCP connection
//! (nothing is sent: `pgdrive notify-test` sends); `status` reports stale or failed kinds through
//! the same channels a failed backup uses.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{bail, Result};

use super::{Alert, Finding};
use crate::cli::NotifyPolicy;
use crate::config::Settings;
use crate::host::host_name;
use crate::kind::Kind;
use crate::notify::{self, ping::Pinger, Report, Status};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// `check`'s notification lines: each configured channel, its endpoint reachable.
pub fn checks(settings: &Settings) -> Vec<Finding> {
    let mut out = Vec::new();
    match notify::settings::channels(settings) {
        Ok(channels) => {
            for c in &channels {
                out.push(Finding::ok(
                    format!("notify {}", c.name()),
                    format!(
                        "configured: {} (`pgdrive notify-test` sends a test message)",
                        c.describe()
                    ),
                ));
            }
        }
        Err(e) => out.push(Finding::from_error("notify", &e)),
    }
    for kind in [Kind::Daily, Kind::Hourly, Kind::Schema] {
        match notify::settings::ping_url(settings, kind) {
            Ok(Some(url)) => out.push(Finding::ok(
                format!("ping {kind}"),
                format!("configured: {}", Pinger::new(url).describe()),
            )),
            Ok(None) => {}
            Err(e) => out.push(Finding::from_error(format!("ping {kind}"), &e)),
        }
    }
    // Reachability: a TCP connection to each endpoint, closed at once. Only scheme, host and
    // port are ever shown: the paths of webhook and ping URLs are secrets.
    let mut endpoints: Vec<(String, String)> = Vec::new();
    if settings.get("SENDGRID_API_KEY").is_some() {
        let base = settings
            .get("PGDRIVE_SENDGRID_URL")
            .unwrap_or_else(|| "https://api.sendgrid.com/".into());
        endpoints.push(("sendgrid".into(), base));
    }
    if let Some(host) = settings.get("PGDRIVE_SMTP_HOST") {
        let port = settings.get("PGDRIVE_SMTP_PORT").unwrap_or_else(|| {
            match settings.get("PGDRIVE_SMTP_TLS").as_deref().map(str::trim) {
                Some("tls") => "465",
                Some("none") => "25",
                _ => "587",
            }
            .into()
        });
        endpoints.push((
            "smtp".into(),
            format!("smtp://{}:{}", host.trim(), port.trim()),
        ));
    }
    for (name, key) in [
        ("slack", "PGDRIVE_SLACK_WEBHOOK_URL"),
        ("webhook", "PGDRIVE_WEBHOOK_URL"),
    ] {
        if let Some(url) = settings.get(key) {
            endpoints.push((name.into(), url));
        }
    }
    for kind in [Kind::Daily, Kind::Hourly, Kind::Schema] {
        if let Ok(Some(url)) = notify::settings::ping_url(settings, kind) {
            endpoints.push((format!("ping {kind}"), url));
        }
    }
    let mut tried: Vec<String> = Vec::new();
    for (name, url) in endpoints {
        let Some((host, port)) = host_port(&url) else {
            continue;
        };
        let shown = format!("{host}:{port}");
        if tried.contains(&shown) {
            continue;
        }
        tried.push(shown.clone());
        match connect(&host, port) {
            Ok(()) => out.push(Finding::ok(
                format!("notify {name}"),
                format!("{shown} accepts connections"),
            )),
            Err(e) => out.push(Finding::fail(
                format!("notify {name}"),
                format!("{shown} cannot be reached: {e:#}"),
                Some("check the host name, the port and this host's outbound firewall".into()),
            )),
        }
    }
    if out.is_empty() {
        out.push(Finding::ok(
            "notify",
            "no channel configured: failures show only in exit statuses, logs and `pgdrive status`",
        ));
    }
    out
}

/// Host and port of an http(s) or smtp URL (userinfo, path and query dropped).
fn host_port(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.trim().split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority
        .rsplit_once('@')
        .map(|(_, a)| a)
        .unwrap_or(authority);
    let default = match scheme {
        "https" => 443,
        "http" => 80,
        "smtp" => 587,
        _ => return None,
    };
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => match p.parse() {
            Ok(port) => Some((h.trim_matches(['[', ']']).to_string(), port)),
            Err(_) => Some((authority.trim_matches(['[', ']']).to_string(), default)),
        },
        _ => Some((authority.trim_matches(['[', ']']).to_string(), default)),
    }
}

fn connect(host: &str, port: u16) -> Result<()> {
    let mut last = None;
    for addr in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    match last {
        Some(e) => Err(e.into()),
        None => bail!("the name resolves to no address"),
    }
}

/// `status`'s alert: one failure report per unhealthy kind, through every message channel
/// (email, Slack, webhook), unless that kind's notification policy is `never`.
pub fn alert(settings: &Settings, alert: &Alert) -> Result<()> {
    let channels = notify::settings::channels(settings)?;
    if channels.is_empty() {
        return Ok(());
    }
    let host = host_name();
    let now = crate::timeutil::now_millis();
    let mut failed = Vec::new();
    for (kind, problems) in &alert.kinds {
        if notify::settings::policy(settings, *kind, None)? == NotifyPolicy::Never {
            continue;
        }
        let mut report = Report::new(Status::Failure, *kind, &alert.database, &host, now);
        report.finished_ms = now;
        report.step = Some("status".into());
        report.error = Some(problems.join("; "));
        failed.extend(
            notify::fan_out(&channels, &report)
                .into_iter()
                .map(|f| format!("{}: {}", f.channel, crate::error::render(&f.error))),
        );
    }
    if !failed.is_empty() {
        bail!(
            "the alert could not be delivered through {}",
            failed.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_never_keep_their_paths() {
        assert_eq!(
            host_port("https://hooks.slack.com/services/T0/B0/secret"),
            Some(("hooks.slack.com".into(), 443))
        );
        assert_eq!(
            host_port("http://127.0.0.1:8080/ping/uuid?x=1"),
            Some(("127.0.0.1".into(), 8080))
        );
        assert_eq!(
            host_port("https://user:pw@hc.example:8443"),
            Some(("hc.example".into(), 8443))
        );
        assert_eq!(
            host_port("smtp://mail.example:25"),
            Some(("mail.example".into(), 25))
        );
        assert_eq!(host_port("http://[::1]:9/x"), Some(("::1".into(), 9)));
        assert_eq!(host_port("ftp://x"), None);
    }
}
