//! The facts `pgdrive status` reports, gathered once and rendered four ways: text for a terminal
//! or cron mail, JSON, the node_exporter textfile format, and a self-contained HTML page.
//!
//! Facts come from the catalog (`backups` table). When the catalog cannot be read, each kind's
//! Drive folder is listed instead (backups carry their own properties), which still answers
//! "how old is the newest backup" though not "did the last run fail".
//!
//! Renderings: [`text`] (terminal and cron mail, with a sparkline), [`prometheus`] (node_exporter
//! textfile), [`html`] (a self-contained page with an SVG timeline).

use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::drive::StorageQuota;
use crate::kind::Kind;
use crate::timeutil;

pub mod html;
pub mod prometheus;
pub mod retention;
pub mod text;

pub use html::{html_escape, render_html};
pub use prometheus::render_prometheus;
pub use text::{render_text, sparkline};

/// One run as the dashboard shows it.
#[derive(Clone, Debug, Serialize)]
pub struct RunPoint {
    /// When the run started (the moment the data is from), Unix milliseconds.
    pub at_ms: i64,
    pub success: bool,
    pub size_bytes: Option<u64>,
    pub duration_ms: Option<i64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct LastSuccess {
    pub at_ms: i64,
    pub filename: Option<String>,
    pub size_bytes: Option<u64>,
    pub duration_ms: Option<i64>,
    pub verified_at_ms: Option<i64>,
    pub verify_result: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct LastFailure {
    pub at_ms: i64,
    pub step: Option<String>,
    pub error: Option<String>,
}

/// Where a kind's facts came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Catalog,
    Drive,
    None,
}

#[derive(Clone, Debug, Serialize)]
pub struct KindStatus {
    pub kind: Kind,
    pub source: Source,
    pub last_success: Option<LastSuccess>,
    pub last_failure: Option<LastFailure>,
    /// Whether the newest run succeeded; unknown without the catalog.
    pub last_run_success: Option<bool>,
    pub kept: Option<u64>,
    /// The retention setting; 0 keeps everything.
    pub keep: u32,
    /// Recent runs, oldest first.
    pub history: Vec<RunPoint>,
    pub max_age_seconds: Option<u64>,
    pub age_seconds: Option<u64>,
    pub stale: bool,
    /// What is wrong, one line each; empty when the kind is healthy.
    pub problems: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Dashboard {
    pub generated_ms: i64,
    pub database: String,
    pub catalog_ok: bool,
    pub kinds: Vec<KindStatus>,
    pub quota: Option<QuotaView>,
    /// Per target, job and database: what each retention rule holds (see [`retention`]).
    pub retention: Vec<retention::RetentionView>,
    /// The newest disaster-recovery drill the catalog recorded (`pgdrive drill`).
    pub last_drill: Option<LastDrill>,
    /// Things `status` could not find out (catalog or Drive unreachable).
    pub warnings: Vec<String>,
}

/// A drill as the catalog recorded it: when, and its result line (passed/FAILED, RTO, RPO).
#[derive(Clone, Debug, Serialize)]
pub struct LastDrill {
    pub at_ms: i64,
    pub ok: bool,
    pub result: String,
}

impl LastDrill {
    pub fn from_catalog(at_ms: i64, result: String) -> LastDrill {
        LastDrill {
            at_ms,
            ok: result.starts_with(crate::catalog::DRILL_PASSED),
            result,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct QuotaView {
    pub used_bytes: u64,
    pub limit_bytes: Option<u64>,
    pub trash_bytes: u64,
}

impl From<StorageQuota> for QuotaView {
    fn from(q: StorageQuota) -> Self {
        QuotaView {
            used_bytes: q.usage,
            limit_bytes: q.limit,
            trash_bytes: q.usage_in_drive_trash,
        }
    }
}

impl Dashboard {
    pub fn healthy(&self) -> bool {
        self.kinds.iter().all(|k| k.problems.is_empty())
    }
}

// ------------------------------------------------------------------ max age

/// Default maximum ages: a daily backup may be a little late, an hourly one a few hours; schema
/// backups run when the schema changes, so they never go stale.
pub fn default_max_age(kind: Kind) -> Option<Duration> {
    match kind {
        Kind::Daily => Some(Duration::from_secs(26 * 3600)),
        Kind::Hourly => Some(Duration::from_secs(5 * 3600)),
        Kind::Schema => None,
    }
}

/// Parses `daily=26h,hourly=5h,schema=off` over the defaults; kinds not named keep theirs.
pub fn parse_max_age(spec: Option<&str>) -> Result<[(Kind, Option<Duration>); 3]> {
    let mut out = [Kind::Daily, Kind::Hourly, Kind::Schema].map(|k| (k, default_max_age(k)));
    for item in spec
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let Some((k, v)) = item.split_once('=') else {
            bail!("max age {item:?} is not KIND=AGE (e.g. daily=26h)")
        };
        let kind = Kind::parse(k.trim())
            .with_context(|| format!("unknown backup kind {k:?} in max age"))?;
        let value = v.trim();
        let age = if value == "off" {
            None
        } else {
            Some(parse_duration(value).with_context(|| {
                format!("max age {value:?} is not a duration like 26h, 90m or 2d")
            })?)
        };
        out.iter_mut()
            .find(|(k, _)| *k == kind)
            .expect("every kind is listed")
            .1 = age;
    }
    Ok(out)
}

fn parse_duration(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    (n > 0).then(|| Duration::from_secs(n * secs))
}

/// Fills in age, staleness and the problem lines from the facts.
pub fn judge(k: &mut KindStatus, max_age: Option<Duration>, now_ms: i64) {
    k.max_age_seconds = max_age.map(|d| d.as_secs());
    k.age_seconds = k
        .last_success
        .as_ref()
        .map(|s| ((now_ms - s.at_ms).max(0) / 1000) as u64);
    k.problems.clear();
    k.stale = false;
    if let Some(max) = max_age {
        match k.age_seconds {
            None => {
                k.stale = true;
                k.problems.push(format!(
                    "{}: no successful backup found (max age {})",
                    k.kind,
                    human_duration(max.as_secs())
                ));
            }
            Some(age) if age > max.as_secs() => {
                k.stale = true;
                k.problems.push(format!(
                    "{}: newest backup is {} old (max age {})",
                    k.kind,
                    human_duration(age),
                    human_duration(max.as_secs())
                ));
            }
            Some(_) => k.stale = false,
        }
    }
    if k.last_run_success == Some(false) {
        let f = k.last_failure.as_ref();
        let step = f.and_then(|f| f.step.clone()).unwrap_or_else(|| "?".into());
        let error = f.and_then(|f| f.error.clone()).unwrap_or_default();
        k.problems.push(format!(
            "{}: the last run failed at {step}: {}",
            k.kind,
            first_line(&error, 200)
        ));
    }
}

pub(crate) fn first_line(s: &str, max: usize) -> String {
    let line = s.lines().next().unwrap_or("");
    if line.chars().count() > max {
        format!("{}…", line.chars().take(max).collect::<String>())
    } else {
        line.to_string()
    }
}

// ------------------------------------------------------------------ reading the catalog

const SELECT_MS: &str = "(extract(epoch FROM created_at) * 1000)::int8";

/// A kind's facts from the catalog. Rows of other databases are ignored; rows written by the
/// Node.js implementation (no database_name) count for any database.
pub fn from_catalog(
    client: &mut postgres::Client,
    kind: Kind,
    database: &str,
    keep: u32,
    history: u32,
) -> Result<KindStatus> {
    let k = kind.as_str();
    let filter = "type = $1 AND COALESCE(database_name, $2) = $2";
    let success = client
        .query_opt(
            &format!(
                "SELECT {SELECT_MS}, filename, size_bytes, duration_ms, (extract(epoch FROM verified_at) * 1000)::int8, verify_result
                   FROM backups WHERE {filter} AND status = 'SUCCESS' ORDER BY created_at DESC, id DESC LIMIT 1"
            ),
            &[&k, &database],
        )
        .context("reading the newest successful backup")?
        .map(|r| LastSuccess {
            at_ms: r.get(0),
            filename: r.get(1),
            size_bytes: r.get::<_, Option<i64>>(2).map(|s| s.max(0) as u64),
            duration_ms: r.get(3),
            verified_at_ms: r.get(4),
            verify_result: r.get(5),
        });
    let failure = client
        .query_opt(
            &format!("SELECT {SELECT_MS}, step, error FROM backups WHERE {filter} AND status = 'ERROR' ORDER BY created_at DESC, id DESC LIMIT 1"),
            &[&k, &database],
        )
        .context("reading the last failure")?
        .map(|r| LastFailure { at_ms: r.get(0), step: r.get(1), error: r.get(2) });
    let last_status: Option<String> = client
        .query_opt(&format!("SELECT status FROM backups WHERE {filter} ORDER BY created_at DESC, id DESC LIMIT 1"), &[&k, &database])?
        .map(|r| r.get(0));
    let kept: i64 = client
        .query_one(
            &format!("SELECT count(*) FROM backups WHERE {filter} AND status = 'SUCCESS' AND pruned_at IS NULL AND (drive_file_id IS NOT NULL OR local_path IS NOT NULL)"),
            &[&k, &database],
        )?
        .get(0);
    let mut points: Vec<RunPoint> = client
        .query(
            &format!("SELECT {SELECT_MS}, status = 'SUCCESS', size_bytes, duration_ms FROM backups WHERE {filter} ORDER BY created_at DESC, id DESC LIMIT $3"),
            &[&k, &database, &(history.max(1) as i64)],
        )?
        .iter()
        .map(|r| RunPoint { at_ms: r.get(0), success: r.get(1), size_bytes: r.get::<_, Option<i64>>(2).map(|s| s.max(0) as u64), duration_ms: r.get(3) })
        .collect();
    points.reverse();
    Ok(KindStatus {
        kind,
        source: Source::Catalog,
        last_success: success,
        last_failure: failure,
        last_run_success: last_status.map(|s| s == "SUCCESS"),
        kept: Some(kept.max(0) as u64),
        keep,
        history: points,
        max_age_seconds: None,
        age_seconds: None,
        stale: false,
        problems: Vec::new(),
    })
}

/// A kind's facts from a storage listing alone (the catalog is unreachable): the backups that
/// exist, newest first; failures are unknown.
pub fn from_listing(
    kind: Kind,
    listed: &[crate::storage::Listed],
    keep: u32,
    history: u32,
) -> KindStatus {
    use crate::storage::props;
    let mut runs: Vec<RunPoint> = listed
        .iter()
        .filter_map(|l| {
            let at = l
                .properties
                .get(props::STARTED_AT)
                .and_then(|s| timeutil::parse_rfc3339(s))
                .or(l.created_ms)?;
            let size = l
                .properties
                .get(props::SIZE)
                .and_then(|s| s.parse().ok())
                .or(l.size);
            Some(RunPoint {
                at_ms: at,
                success: true,
                size_bytes: size,
                duration_ms: None,
            })
        })
        .collect();
    runs.sort_by_key(|r| r.at_ms);
    let newest = listed
        .iter()
        .filter_map(|l| {
            Some((
                l.properties
                    .get(props::STARTED_AT)
                    .and_then(|s| timeutil::parse_rfc3339(s))
                    .or(l.created_ms)?,
                l,
            ))
        })
        .max_by_key(|(at, _)| *at)
        .map(|(at, l)| LastSuccess {
            at_ms: at,
            filename: Some(l.name.clone()),
            size_bytes: l
                .properties
                .get(props::SIZE)
                .and_then(|s| s.parse().ok())
                .or(l.size),
            duration_ms: None,
            verified_at_ms: None,
            verify_result: None,
        });
    let skip = runs.len().saturating_sub(history.max(1) as usize);
    KindStatus {
        kind,
        source: Source::Drive,
        last_success: newest,
        last_failure: None,
        last_run_success: None,
        kept: Some(listed.len() as u64),
        keep,
        history: runs.split_off(skip),
        max_age_seconds: None,
        age_seconds: None,
        stale: false,
        problems: Vec::new(),
    }
}

// ------------------------------------------------------------------ shared formatting

/// `3h 12m`, `2d 4h`, `45s`.
pub fn human_duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

pub(crate) fn stamp(ms: i64) -> String {
    let s = timeutil::rfc3339_millis(ms);
    format!("{} {} UTC", &s[..10], &s[11..16])
}

#[cfg(test)]
pub(crate) fn sample_kind(history: Vec<RunPoint>) -> KindStatus {
    KindStatus {
        kind: Kind::Daily,
        source: Source::Catalog,
        last_success: None,
        last_failure: None,
        last_run_success: None,
        kept: None,
        keep: 14,
        history,
        max_age_seconds: None,
        age_seconds: None,
        stale: false,
        problems: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(history: Vec<RunPoint>) -> KindStatus {
        sample_kind(history)
    }

    #[test]
    fn max_age_specs() {
        let m = parse_max_age(Some("hourly=90m, schema=2d")).unwrap();
        assert_eq!(m[0].1, Some(Duration::from_secs(26 * 3600)));
        assert_eq!(m[1].1, Some(Duration::from_secs(90 * 60)));
        assert_eq!(m[2].1, Some(Duration::from_secs(2 * 86_400)));
        assert_eq!(parse_max_age(Some("daily=off")).unwrap()[0].1, None);
        assert!(parse_max_age(Some("weekly=1d")).is_err());
        assert!(parse_max_age(Some("daily=soon")).is_err());
        assert!(parse_max_age(Some("daily")).is_err());
    }

    #[test]
    fn staleness_and_failures_are_problems() {
        let now = 100_000_000;
        let mut k = kind(vec![]);
        judge(&mut k, Some(Duration::from_secs(3600)), now);
        assert!(k.stale && k.problems[0].contains("no successful backup"));
        k.last_success = Some(LastSuccess {
            at_ms: now - 7_200_000,
            filename: None,
            size_bytes: None,
            duration_ms: None,
            verified_at_ms: None,
            verify_result: None,
        });
        judge(&mut k, Some(Duration::from_secs(3600)), now);
        assert!(
            k.stale && k.problems[0].contains("2h 0m old"),
            "{:?}",
            k.problems
        );
        judge(&mut k, None, now);
        assert!(!k.stale && k.problems.is_empty());
        k.last_run_success = Some(false);
        judge(&mut k, None, now);
        assert_eq!(k.problems.len(), 1);
    }
}
