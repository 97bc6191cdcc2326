//! `pgdrive notify-test`: sends a test message through every configured channel and every
//! configured heartbeat URL (`/log`), and prints one line per channel. Exit 0 when all succeeded,
//! 1 when any failed, 78 when nothing is configured.

use anyhow::Result;

use crate::config::Settings;
use crate::error::{config_error_hint, ExitStatus};
use crate::host::host_name;
use crate::kind::Kind;
use crate::notify::{self, ping::Pinger, Report, Status};
use crate::timeutil;

pub fn run(settings: Settings) -> Result<ExitStatus> {
    for w in &settings.warnings {
        crate::log::warn(w, &[]);
    }
    let channels = notify::settings::channels(&settings)?;
    // the same URL may serve several kinds; ping it once
    let mut ping_urls: Vec<(String, Vec<Kind>)> = Vec::new();
    for kind in [Kind::Daily, Kind::Hourly, Kind::Schema] {
        if let Some(url) = notify::settings::ping_url(&settings, kind)? {
            match ping_urls.iter_mut().find(|(u, _)| *u == url) {
                Some((_, kinds)) => kinds.push(kind),
                None => ping_urls.push((url, vec![kind])),
            }
        }
    }
    if channels.is_empty() && ping_urls.is_empty() {
        return Err(config_error_hint(
            "no notification channel is configured",
            "set SENDGRID_API_KEY, PGDRIVE_SMTP_HOST, PGDRIVE_SLACK_WEBHOOK_URL, PGDRIVE_WEBHOOK_URL or PGDRIVE_PING_URL; see README \"Notifications\"",
        ));
    }

    let host = host_name();
    let report = Report::new(
        Status::Test,
        Kind::Daily,
        "(none: test message)",
        &host,
        timeutil::now_millis(),
    );
    let mut failures = notify::fan_out(&channels, &report);
    let mut results: Vec<(String, String, Option<anyhow::Error>)> = Vec::new();
    for c in &channels {
        // channel names are unique, so each failure belongs to exactly one channel
        let error = failures
            .iter()
            .position(|f| f.channel == c.name())
            .map(|i| failures.remove(i).error);
        results.push((c.name().to_string(), c.describe(), error));
    }
    for (url, kinds) in ping_urls {
        let pinger = Pinger::new(url);
        let kinds: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
        results.push((
            format!("ping ({})", kinds.join(",")),
            pinger.describe(),
            pinger.log().err(),
        ));
    }

    let mut all_ok = true;
    for (name, target, error) in &results {
        match error {
            None => println!("{name}: ok ({target})"),
            Some(e) => {
                all_ok = false;
                println!("{name}: FAILED ({target}): {}", crate::error::render(e));
                if let Some(h) = crate::error::hint(e) {
                    println!("  hint: {}", crate::redact::scrub(&h));
                }
            }
        }
    }
    Ok(if all_ok {
        ExitStatus::Ok
    } else {
        ExitStatus::Failed
    })
}
