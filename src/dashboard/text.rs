//! The dashboard as text: for a terminal (a sparkline of Unicode blocks) or a cron mail (ASCII).

use std::fmt::Write as _;

use super::{first_line, human_duration, stamp, Dashboard, Source};
use crate::units::human_bytes;

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
    if let Some(drill) = &d.last_drill {
        let _ = writeln!(
            out,
            "last drill {}: {}",
            stamp(drill.at_ms),
            crate::redact::scrub(&drill.result)
        );
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
    if !d.retention.is_empty() {
        let _ = writeln!(out, "\nretention");
    }
    for v in &d.retention {
        let _ = writeln!(out, "{}", retention_line(v));
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

/// One retention group: `  nas  nightly/daily/shop  19 backups (catalog), oldest restorable
/// 2026-03-31 02:00 UTC; held by daily 7, ...; next prune deletes 0 [rules: ...]`.
pub fn retention_line(v: &super::retention::RetentionView) -> String {
    if !v.reachable {
        return format!(
            "  {:<10} {:<28} UNREACHABLE: {}",
            v.target,
            v.group_label(),
            crate::redact::scrub(&first_line(v.error.as_deref().unwrap_or(""), 160))
        );
    }
    let oldest = v
        .oldest_restorable_ms
        .map(stamp)
        .unwrap_or_else(|| "none".into());
    let held_back = if v.held_by_breaker > 0 {
        format!(" ({} held back by the circuit breaker)", v.held_by_breaker)
    } else {
        String::new()
    };
    format!(
        "  {:<10} {:<28} {} backups ({}), oldest restorable {oldest}; held by {}; next prune deletes {}{held_back} [rules: {}]",
        v.target,
        v.group_label(),
        v.backups,
        v.source,
        v.held_summary(),
        v.would_delete,
        v.rules
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparklines() {
        assert_eq!(sparkline(&[1, 2, 3, 4, 5, 6, 7, 8], true), "▁▂▃▄▅▆▇█");
        assert_eq!(sparkline(&[5, 5], false), "~~");
        assert_eq!(sparkline(&[], true), "");
    }
}
