//! The facts `pgdrive status` reports, gathered once and rendered four ways: text for a terminal
//! or cron mail, JSON, the node_exporter textfile format, and a self-contained HTML page.
//!
//! Facts come from the catalog (`backups` table). When the catalog cannot be read, each kind's
//! Drive folder is listed instead (backups carry their own properties), which still answers
//! "how old is the newest backup" though not "did the last run fail".

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::cli::Kind;
use crate::commands::backup::human_bytes;
use crate::drive::StorageQuota;
use crate::timeutil;

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
    /// Things `status` could not find out (catalog or Drive unreachable).
    pub warnings: Vec<String>,
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

fn first_line(s: &str, max: usize) -> String {
    let line = s.lines().next().unwrap_or("");
    if line.chars().count() > max {
        format!("{}…", line.chars().take(max).collect::<String>())
    } else {
        line.to_string()
    }
}

// ------------------------------------------------------------------ reading the catalog

const SELECT_MS: &str = "(extract(epoch FROM created_at) * 1000)::int8";

/// The size of the newest successful backup of a kind (for `check`'s quota estimate).
pub fn last_success_size(
    client: &mut postgres::Client,
    kind: Kind,
    database: &str,
) -> Result<Option<u64>> {
    let row = client.query_opt(
        "SELECT size_bytes FROM backups WHERE type = $1 AND status = 'SUCCESS' AND COALESCE(database_name, $2) = $2
          ORDER BY created_at DESC, id DESC LIMIT 1",
        &[&kind.as_str(), &database],
    )?;
    Ok(row
        .and_then(|r| r.get::<_, Option<i64>>(0))
        .map(|s| s.max(0) as u64))
}

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

// ------------------------------------------------------------------ text

/// `3h 12m`, `2d 4h`, `45s`.
pub fn human_duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

fn stamp(ms: i64) -> String {
    let s = timeutil::rfc3339_millis(ms);
    format!("{} {} UTC", &s[..10], &s[11..16])
}

/// A sparkline of the values: Unicode blocks on a terminal, ASCII elsewhere (cron mail).
pub fn sparkline(values: &[u64], unicode: bool) -> String {
    const BLOCKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    const ASCII: [char; 8] = ['_', '.', '-', '~', '=', '+', '*', '#'];
    let levels = if unicode { &BLOCKS } else { &ASCII };
    let (Some(min), Some(max)) = (values.iter().min(), values.iter().max()) else {
        return String::new();
    };
    values
        .iter()
        .map(|v| {
            if max == min {
                levels[3]
            } else {
                levels[((v - min) * 7 / (max - min)) as usize]
            }
        })
        .collect()
}

pub fn render_text(d: &Dashboard, unicode: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "pgdrive status for database {} at {}",
        d.database,
        stamp(d.generated_ms)
    );
    for w in &d.warnings {
        let _ = writeln!(out, "warn {}", crate::redact::scrub(w));
    }
    for k in &d.kinds {
        let verdict = if k.stale {
            "STALE"
        } else if k.last_run_success == Some(false) {
            "FAILED"
        } else {
            "ok"
        };
        let _ = writeln!(
            out,
            "\n{:<7}{verdict}{}",
            k.kind.as_str(),
            if k.source == Source::Drive {
                "  (from Drive; the catalog is unreachable)"
            } else {
                ""
            }
        );
        match &k.last_success {
            None => {
                let _ = writeln!(out, "  last success  none");
            }
            Some(s) => {
                let mut line = format!(
                    "  last success  {} ago ({})",
                    human_duration(k.age_seconds.unwrap_or(0)),
                    stamp(s.at_ms)
                );
                if let Some(b) = s.size_bytes {
                    line.push_str(&format!(", {}", human_bytes(b)));
                }
                if let Some(ms) = s.duration_ms {
                    line.push_str(&format!(
                        ", took {}",
                        if ms < 60_000 {
                            format!("{:.1}s", ms.max(0) as f64 / 1000.0)
                        } else {
                            human_duration((ms / 1000) as u64)
                        }
                    ));
                }
                line.push_str(&match (&s.verified_at_ms, &s.verify_result) {
                    (Some(at), r) => format!(
                        ", verified {} ({})",
                        stamp(*at),
                        r.as_deref().unwrap_or("?")
                    ),
                    (None, _) => ", not verified".into(),
                });
                let _ = writeln!(out, "{line}");
            }
        }
        if let Some(max) = k.max_age_seconds {
            let _ = writeln!(out, "  max age       {}", human_duration(max));
        }
        match &k.last_failure {
            Some(f) => {
                let _ = writeln!(
                    out,
                    "  last failure  {} at {}: {}",
                    stamp(f.at_ms),
                    f.step.as_deref().unwrap_or("?"),
                    crate::redact::scrub(&first_line(f.error.as_deref().unwrap_or(""), 160))
                );
            }
            None if k.source == Source::Catalog => {
                let _ = writeln!(out, "  last failure  none");
            }
            None => {}
        }
        if let Some(kept) = k.kept {
            let keep = if k.keep == 0 {
                "keep all".to_string()
            } else {
                format!("keep {}", k.keep)
            };
            let _ = writeln!(out, "  kept          {kept} ({keep})");
        }
        let sizes: Vec<u64> = k
            .history
            .iter()
            .filter(|r| r.success)
            .filter_map(|r| r.size_bytes)
            .collect();
        if sizes.len() >= 2 {
            let _ = writeln!(
                out,
                "  size trend    {} {} → {} (last {})",
                sparkline(&sizes, unicode),
                human_bytes(sizes[0]),
                human_bytes(*sizes.last().unwrap()),
                sizes.len()
            );
        }
    }
    if let Some(q) = &d.quota {
        let limit = q
            .limit_bytes
            .map(|l| {
                format!(
                    " of {} ({:.0}%)",
                    human_bytes(l),
                    q.used_bytes as f64 * 100.0 / l.max(1) as f64
                )
            })
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "\nDrive quota: {} used{limit}, {} in Trash",
            human_bytes(q.used_bytes),
            human_bytes(q.trash_bytes)
        );
    }
    let problems: Vec<&String> = d.kinds.iter().flat_map(|k| &k.problems).collect();
    if problems.is_empty() {
        let _ = writeln!(out, "\nall backups are fresh");
    } else {
        let _ = writeln!(out);
        for p in problems {
            let _ = writeln!(out, "PROBLEM {}", crate::redact::scrub(p));
        }
    }
    out
}

// ------------------------------------------------------------------ Prometheus

fn label_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The node_exporter textfile-collector format (Prometheus text exposition 0.0.4).
pub fn render_prometheus(d: &Dashboard) -> String {
    let mut out = String::new();
    let db = label_value(&d.database);
    let mut metric = |name: &str, help: &str, samples: Vec<(String, String)>| {
        if samples.is_empty() {
            return;
        }
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let per_kind = |f: &dyn Fn(&KindStatus) -> Option<String>| -> Vec<(String, String)> {
        d.kinds
            .iter()
            .filter_map(|k| {
                f(k).map(|v| {
                    (
                        format!("{{kind=\"{}\",database=\"{db}\"}}", k.kind.as_str()),
                        v,
                    )
                })
            })
            .collect()
    };
    let secs = |ms: i64| format!("{:.3}", ms as f64 / 1000.0);
    metric(
        "pgdrive_last_success_timestamp_seconds",
        "Start time of the newest successful backup, Unix seconds.",
        per_kind(&|k| k.last_success.as_ref().map(|s| secs(s.at_ms))),
    );
    metric(
        "pgdrive_last_backup_size_bytes",
        "Compressed size of the newest successful backup.",
        per_kind(&|k| {
            k.last_success
                .as_ref()
                .and_then(|s| s.size_bytes)
                .map(|b| b.to_string())
        }),
    );
    metric(
        "pgdrive_last_backup_duration_seconds",
        "Duration of the newest successful backup.",
        per_kind(&|k| {
            k.last_success
                .as_ref()
                .and_then(|s| s.duration_ms)
                .map(secs)
        }),
    );
    metric(
        "pgdrive_last_run_success",
        "1 if the newest run of this kind succeeded, 0 if it failed.",
        per_kind(&|k| {
            k.last_run_success
                .map(|s| if s { "1".into() } else { "0".into() })
        }),
    );
    metric(
        "pgdrive_backups_kept",
        "Backups of this kind currently kept.",
        per_kind(&|k| k.kept.map(|n| n.to_string())),
    );
    metric(
        "pgdrive_backups_keep_setting",
        "Retention setting: backups to keep (0 keeps all).",
        per_kind(&|k| Some(k.keep.to_string())),
    );
    metric(
        "pgdrive_max_age_seconds",
        "Maximum age allowed for the newest backup.",
        per_kind(&|k| k.max_age_seconds.map(|s| s.to_string())),
    );
    metric(
        "pgdrive_backup_stale",
        "1 if the newest successful backup is older than its max age (or missing).",
        per_kind(&|k| {
            k.max_age_seconds
                .map(|_| if k.stale { "1".into() } else { "0".into() })
        }),
    );
    let one = |v: String| vec![(format!("{{database=\"{db}\"}}"), v)];
    metric(
        "pgdrive_catalog_up",
        "1 if the backups catalog could be read.",
        one(if d.catalog_ok { "1".into() } else { "0".into() }),
    );
    if let Some(q) = &d.quota {
        metric(
            "pgdrive_drive_quota_used_bytes",
            "Drive storage used by the account pgdrive acts as.",
            one(q.used_bytes.to_string()),
        );
        if let Some(l) = q.limit_bytes {
            metric(
                "pgdrive_drive_quota_limit_bytes",
                "Drive storage limit of the account pgdrive acts as.",
                one(l.to_string()),
            );
        }
    }
    metric(
        "pgdrive_status_timestamp_seconds",
        "When these metrics were computed, Unix seconds.",
        one(secs(d.generated_ms)),
    );
    out
}

// ------------------------------------------------------------------ HTML

pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// An inline SVG timeline: bars for compressed sizes (failed runs as red ticks), a line for
/// durations, time on the x axis. Tooltips are SVG `<title>`s, so no script is needed.
fn timeline_svg(k: &KindStatus) -> String {
    const W: f64 = 1000.0;
    const H: f64 = 240.0;
    const L: f64 = 70.0; // left margin (size axis)
    const R: f64 = 70.0; // right margin (duration axis)
    const T: f64 = 20.0;
    const B: f64 = 40.0;
    let runs = &k.history;
    let mut s = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {H}\" width=\"100%\" role=\"img\" aria-label=\"{} backups: sizes and durations\">", k.kind);
    s.push_str(&format!("<rect x=\"{L}\" y=\"{T}\" width=\"{}\" height=\"{}\" fill=\"#fafbfc\" stroke=\"#d0d7de\"/>", W - L - R, H - T - B));
    if runs.is_empty() {
        s.push_str(&format!("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#57606a\">no runs recorded</text></svg>", W / 2.0, H / 2.0));
        return s;
    }
    let t0 = runs.first().unwrap().at_ms as f64;
    let t1 = runs.last().unwrap().at_ms as f64;
    let span = (t1 - t0).max(1.0);
    let n = runs.len() as f64;
    let plot_w = W - L - R;
    let plot_h = H - T - B;
    // Evenly spaced when all runs share one instant; by time otherwise.
    let x = |i: usize, at: i64| {
        if t1 > t0 {
            L + 16.0 + (at as f64 - t0) / span * (plot_w - 32.0)
        } else {
            L + (i as f64 + 0.5) * plot_w / n
        }
    };
    let max_size = runs
        .iter()
        .filter_map(|r| r.size_bytes)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let max_dur = runs
        .iter()
        .filter_map(|r| r.duration_ms)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let bar_w = (plot_w / n * 0.6).clamp(2.0, 24.0);
    for (i, r) in runs.iter().enumerate() {
        let cx = x(i, r.at_ms);
        if !r.success {
            s.push_str(&format!(
                "<rect x=\"{:.1}\" y=\"{}\" width=\"{:.1}\" height=\"8\" fill=\"#cf222e\"><title>{} failed</title></rect>",
                cx - bar_w / 2.0,
                H - B - 8.0,
                bar_w,
                html_escape(&stamp(r.at_ms))
            ));
            continue;
        }
        let size = r.size_bytes.unwrap_or(0) as f64;
        let h = (size / max_size * (plot_h - 10.0)).max(1.0);
        s.push_str(&format!(
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#54aeff\"><title>{}: {}{}</title></rect>",
            cx - bar_w / 2.0,
            H - B - h,
            bar_w,
            h,
            html_escape(&stamp(r.at_ms)),
            human_bytes(size as u64),
            r.duration_ms.map(|d| format!(", {:.1} s", d as f64 / 1000.0)).unwrap_or_default()
        ));
    }
    let points: Vec<String> = runs
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            r.duration_ms.filter(|_| r.success).map(|d| {
                format!(
                    "{:.1},{:.1}",
                    x(i, r.at_ms),
                    H - B - d as f64 / max_dur * (plot_h - 10.0)
                )
            })
        })
        .collect();
    if !points.is_empty() {
        s.push_str(&format!(
            "<polyline points=\"{}\" fill=\"none\" stroke=\"#bf8700\" stroke-width=\"2\"/>",
            points.join(" ")
        ));
        for p in &points {
            let (px, py) = p.split_once(',').unwrap();
            s.push_str(&format!(
                "<circle cx=\"{px}\" cy=\"{py}\" r=\"3\" fill=\"#bf8700\"/>"
            ));
        }
    }
    let text = |x: f64, y: f64, anchor: &str, color: &str, body: &str| {
        format!("<text x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"{anchor}\" fill=\"{color}\" font-size=\"12\">{}</text>", html_escape(body))
    };
    s.push_str(&text(
        L - 6.0,
        T + 12.0,
        "end",
        "#0969da",
        &human_bytes(max_size as u64),
    ));
    s.push_str(&text(L - 6.0, H - B, "end", "#0969da", "0"));
    s.push_str(&text(
        W - R + 6.0,
        T + 12.0,
        "start",
        "#9a6700",
        &format!("{:.1} s", max_dur / 1000.0),
    ));
    s.push_str(&text(W - R + 6.0, H - B, "start", "#9a6700", "0 s"));
    s.push_str(&text(
        L,
        H - B + 18.0,
        "start",
        "#57606a",
        &stamp(runs.first().unwrap().at_ms),
    ));
    s.push_str(&text(
        W - R,
        H - B + 18.0,
        "end",
        "#57606a",
        &stamp(runs.last().unwrap().at_ms),
    ));
    s.push_str(&text(
        W / 2.0,
        H - 6.0,
        "middle",
        "#57606a",
        "bars: compressed size · line: duration · red: failed run",
    ));
    s.push_str("</svg>");
    s
}

/// A self-contained page (inline CSS and SVG, no scripts, no external assets).
pub fn render_html(d: &Dashboard) -> String {
    let e = html_escape;
    let mut h = String::new();
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    let _ = write!(h, "<title>pgdrive status: {}</title>", e(&d.database));
    h.push_str(
        "<style>body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:1100px;padding:0 16px;color:#1f2328;background:#fff}\
         h1{font-size:22px;margin:0 0 4px}.sub{color:#57606a;margin-bottom:18px}\
         section{border:1px solid #d0d7de;border-radius:8px;padding:14px 18px;margin:14px 0}\
         h2{font-size:18px;margin:0 0 8px;display:flex;gap:10px;align-items:center}\
         .badge{font-size:12px;font-weight:600;padding:2px 8px;border-radius:12px;color:#fff}\
         .ok{background:#1a7f37}.stale{background:#bf8700}.failed{background:#cf222e}\
         table{border-collapse:collapse;margin-bottom:8px}td{padding:2px 16px 2px 0;vertical-align:top}td:first-child{color:#57606a;white-space:nowrap}\
         .problems{background:#fff8c5;border-color:#d4a72c}.warn{color:#9a6700}code{font-size:13px}</style></head><body>",
    );
    let _ = write!(
        h,
        "<h1>pgdrive status: {}</h1><div class=\"sub\">generated {}</div>",
        e(&d.database),
        e(&stamp(d.generated_ms))
    );
    for w in &d.warnings {
        let _ = write!(h, "<p class=\"warn\">⚠ {}</p>", e(&crate::redact::scrub(w)));
    }
    let problems: Vec<&String> = d.kinds.iter().flat_map(|k| &k.problems).collect();
    if !problems.is_empty() {
        h.push_str("<section class=\"problems\"><h2>Problems</h2><ul>");
        for p in problems {
            let _ = write!(h, "<li>{}</li>", e(&crate::redact::scrub(p)));
        }
        h.push_str("</ul></section>");
    }
    for k in &d.kinds {
        let (class, label) = if k.stale {
            ("stale", "STALE")
        } else if k.last_run_success == Some(false) {
            ("failed", "LAST RUN FAILED")
        } else {
            ("ok", "OK")
        };
        let _ = write!(
            h,
            "<section><h2>{} <span class=\"badge {class}\">{label}</span></h2><table>",
            e(k.kind.as_str())
        );
        let mut row = |name: &str, value: String| {
            let _ = write!(h, "<tr><td>{}</td><td>{}</td></tr>", e(name), e(&value));
        };
        match &k.last_success {
            Some(s) => {
                row(
                    "last success",
                    format!(
                        "{} ago ({})",
                        human_duration(k.age_seconds.unwrap_or(0)),
                        stamp(s.at_ms)
                    ),
                );
                if let Some(f) = &s.filename {
                    row("file", f.clone());
                }
                row(
                    "size",
                    s.size_bytes
                        .map(human_bytes)
                        .unwrap_or_else(|| "unknown".into()),
                );
                row(
                    "duration",
                    s.duration_ms
                        .map(|d| format!("{:.1} s", d as f64 / 1000.0))
                        .unwrap_or_else(|| "unknown".into()),
                );
                row(
                    "verified",
                    match s.verified_at_ms {
                        Some(at) => format!(
                            "{} ({})",
                            stamp(at),
                            s.verify_result.as_deref().unwrap_or("?")
                        ),
                        None => "no".into(),
                    },
                );
            }
            None => row("last success", "none".into()),
        }
        row(
            "max age",
            k.max_age_seconds
                .map(human_duration)
                .unwrap_or_else(|| "off".into()),
        );
        if let Some(f) = &k.last_failure {
            row(
                "last failure",
                format!(
                    "{} at {}: {}",
                    stamp(f.at_ms),
                    f.step.as_deref().unwrap_or("?"),
                    crate::redact::scrub(&first_line(f.error.as_deref().unwrap_or(""), 300))
                ),
            );
        }
        if let Some(kept) = k.kept {
            row(
                "kept",
                format!(
                    "{kept} of {}",
                    if k.keep == 0 {
                        "all".into()
                    } else {
                        k.keep.to_string()
                    }
                ),
            );
        }
        row(
            "source",
            if k.source == Source::Catalog {
                "catalog".into()
            } else {
                "Drive listing (catalog unreachable)".into()
            },
        );
        h.push_str("</table>");
        h.push_str(&timeline_svg(k));
        h.push_str("</section>");
    }
    if let Some(q) = &d.quota {
        let limit = q
            .limit_bytes
            .map(|l| format!(" of {}", human_bytes(l)))
            .unwrap_or_default();
        let _ = write!(
            h,
            "<section><h2>Drive quota</h2>{} used{}, {} in Trash</section>",
            e(&human_bytes(q.used_bytes)),
            e(&limit),
            e(&human_bytes(q.trash_bytes))
        );
    }
    h.push_str("</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(history: Vec<RunPoint>) -> KindStatus {
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

    #[test]
    fn sparklines() {
        assert_eq!(sparkline(&[1, 2, 3, 4, 5, 6, 7, 8], true), "▁▂▃▄▅▆▇█");
        assert_eq!(sparkline(&[5, 5], false), "~~");
        assert_eq!(sparkline(&[], true), "");
    }

    #[test]
    fn html_and_labels_are_escaped() {
        assert_eq!(
            html_escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let d = Dashboard {
            generated_ms: 0,
            database: "<script>".into(),
            catalog_ok: true,
            kinds: vec![kind(vec![])],
            quota: None,
            warnings: vec![],
        };
        let html = render_html(&d);
        assert!(!html.contains("<script>") && html.contains("&lt;script&gt;"));
    }
}
