//! The dashboard as a self-contained HTML page: inline CSS and an inline SVG timeline per kind
//! (bars for sizes, a line for durations, red marks for failed runs), SVG `<title>` tooltips, no
//! scripts and no external assets; every value escaped.

use std::fmt::Write as _;

use super::{first_line, human_duration, stamp, Dashboard, KindStatus, Source};
use crate::units::human_bytes;

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
         .retention th{text-align:left;padding:2px 12px 2px 0;font-weight:600}.problems{background:#fff8c5;border-color:#d4a72c}.warn{color:#9a6700}code{font-size:13px}</style></head><body>",
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
    if let Some(drill) = &d.last_drill {
        let _ = write!(
            h,
            "<p class=\"drill {}\">last disaster-recovery drill {}: {}</p>",
            if drill.ok { "ok" } else { "failed" },
            e(&stamp(drill.at_ms)),
            e(&crate::redact::scrub(&drill.result))
        );
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
    if !d.retention.is_empty() {
        h.push_str(&retention_table(&d.retention));
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

/// Retention per target, job and database: one row each, a column per rule.
fn retention_table(views: &[super::retention::RetentionView]) -> String {
    let e = html_escape;
    let mut h = String::from("<section><h2>Retention</h2><table class=\"retention\"><tr><th>target</th><th>job/kind/database</th><th>backups</th>");
    for r in crate::retention::RULES {
        let _ = write!(h, "<th>{}</th>", e(r));
    }
    h.push_str("<th>next prune deletes</th><th>oldest restorable</th><th>rules</th></tr>");
    for v in views {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td>",
            e(&v.target),
            e(&v.group_label())
        );
        if !v.reachable {
            let _ = write!(
                h,
                "<td colspan=\"{}\" class=\"warn\">unreachable: {}</td></tr>",
                crate::retention::RULES.len() + 4,
                e(&crate::redact::scrub(v.error.as_deref().unwrap_or("")))
            );
            continue;
        }
        let _ = write!(h, "<td>{} ({})</td>", v.backups, e(v.source));
        for r in crate::retention::RULES {
            let _ = write!(h, "<td>{}</td>", v.held_by.get(r).copied().unwrap_or(0));
        }
        let held_back = if v.held_by_breaker > 0 {
            format!(" ({} held back by the circuit breaker)", v.held_by_breaker)
        } else {
            String::new()
        };
        let _ = write!(
            h,
            "<td>{}{}</td><td>{}</td><td>{}</td></tr>",
            v.would_delete,
            e(&held_back),
            e(&v.oldest_restorable_ms
                .map(stamp)
                .unwrap_or_else(|| "none".into())),
            e(&v.rules)
        );
    }
    h.push_str("</table></section>");
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dashboard::sample_kind as kind;

    #[test]
    fn html_values_are_escaped() {
        assert_eq!(
            html_escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        let d = Dashboard {
            generated_ms: 0,
            database: "<script>".into(),
            catalog_ok: true,
            kinds: vec![kind(vec![])],
            quota: None,
            retention: vec![],
            last_drill: None,
            warnings: vec![],
        };
        let html = render_html(&d);
        assert!(!html.contains("<script>") && html.contains("&lt;script&gt;"));
    }
}
