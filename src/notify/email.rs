//! The email a report becomes: a subject that sorts well in an inbox, a plain-text body and an
//! HTML alternative with inline styles (mail clients ignore style sheets). Every interpolated
//! value is HTML-escaped; error texts and pg_dump output are untrusted.

use crate::notify::{one_line, Report, Status};
use crate::timeutil;

/// A rendered message.
#[derive(Clone, Debug, PartialEq)]
pub struct Email {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// `<`, `>`, `&`, `"` and `'` as entities: safe in element content and in quoted attributes.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `4.2 s`, `3 min 12 s`, `1 h 02 min`.
pub fn duration_text(ms: i64) -> String {
    let s = ms / 1000;
    if s < 60 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else if s < 3600 {
        format!("{} min {} s", s / 60, s % 60)
    } else {
        format!("{} h {:02} min", s / 3600, (s % 3600) / 60)
    }
}

/// `2026-11-30 03:00:12 UTC`
fn time_text(ms: i64) -> String {
    let t = timeutil::rfc3339_millis(ms);
    format!("{} {} UTC", &t[..10], &t[11..19])
}

/// One line of the summary table; `link` makes the value a link.
struct Row {
    label: &'static str,
    value: String,
    link: Option<String>,
}

fn row(label: &'static str, value: impl Into<String>) -> Row {
    Row {
        label,
        value: value.into(),
        link: None,
    }
}

fn rows(r: &Report) -> Vec<Row> {
    let mut rows = vec![row("Database", &r.database), row("Kind", r.kind.as_str())];
    if let Some(job) = &r.job {
        rows.push(row("Job", job));
    }
    match r.status {
        Status::Success => {
            if let Some(f) = &r.file {
                rows.push(Row {
                    label: "File",
                    value: f.clone(),
                    link: r.drive_link(),
                });
            }
            if let Some(n) = r.size_bytes {
                rows.push(row(
                    "Size",
                    format!("{:.1} MB ({n} bytes)", n as f64 / 1_000_000.0),
                ));
            }
            rows.push(row("Duration", duration_text(r.duration_ms())));
            rows.push(row("Finished", time_text(r.finished_ms)));
            if let Some(link) = r.drive_link() {
                rows.push(Row {
                    label: "Google Drive",
                    value: link.clone(),
                    link: Some(link),
                });
            }
            if let Some(p) = &r.local_path {
                rows.push(row("Local copy", p));
            }
            if let Some(k) = r.kept {
                rows.push(row("Backups kept", format!("{k} {} backups", r.kind)));
            }
        }
        Status::Failure => {
            rows.push(row(
                "Failed step",
                r.step.clone().unwrap_or_else(|| "unknown".into()),
            ));
            rows.push(row("Started", time_text(r.started_ms)));
            rows.push(row("Failed after", duration_text(r.duration_ms())));
        }
        Status::Test => rows.push(row("Sent", time_text(r.finished_ms))),
    }
    rows.push(row("Host", &r.host));
    rows
}

/// What the body says before the table.
fn lead(r: &Report) -> String {
    match r.status {
        Status::Success if r.follow_up_errors.is_empty() => {
            format!(
                "The {} backup of {} is stored and verified.",
                r.kind, r.database
            )
        }
        Status::Success => format!(
            "The {} backup of {} is stored and verified, but a follow-up step failed.",
            r.kind, r.database
        ),
        Status::Failure => format!(
            "The {} backup of {} failed. Nothing new was stored.",
            r.kind, r.database
        ),
        Status::Test => {
            "This is a test message from pgdrive notify-test: this channel works.".to_string()
        }
    }
}

/// Subject, text and HTML for a report.
pub fn render(r: &Report) -> Email {
    let subject = format!("[pgdrive] {}", r.headline());
    let rows = rows(r);
    let lead = lead(r);

    let width = rows.iter().map(|r| r.label.len()).max().unwrap_or(0);
    let mut text = format!("{lead}\n\n");
    for row in &rows {
        text.push_str(&format!("{:<width$}  {}\n", row.label, row.value));
    }
    let mut sections: Vec<(&str, String)> = Vec::new();
    if let Some(e) = &r.error {
        sections.push(("Error", e.clone()));
    }
    if let Some(t) = &r.dump_stderr {
        sections.push(("pg_dump stderr (last lines)", t.clone()));
    }
    if !r.follow_up_errors.is_empty() {
        sections.push(("Follow-up failures", r.follow_up_errors.join("\n")));
    }
    for (title, body) in &sections {
        text.push_str(&format!("\n{title}:\n{body}\n"));
    }
    text.push_str(&format!(
        "\n-- \npgdrive {} on {}\n",
        env!("CARGO_PKG_VERSION"),
        one_line(&r.host)
    ));

    let accent = match r.status {
        Status::Success if r.follow_up_errors.is_empty() => "#1a7f37",
        Status::Success => "#9a6700",
        Status::Failure => "#cf222e",
        Status::Test => "#0969da",
    };
    let mut html = String::new();
    html.push_str("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">");
    html.push_str(&format!(
        "<title>{}</title></head>\n",
        escape_html(&subject)
    ));
    html.push_str("<body style=\"margin:0;padding:24px;background:#f6f8fa;font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;color:#1f2328\">\n");
    html.push_str(&format!(
        "<div style=\"max-width:640px;margin:0 auto;background:#ffffff;border:1px solid #d0d7de;border-top:4px solid {accent};border-radius:6px;padding:20px 24px\">\n"
    ));
    html.push_str(&format!(
        "<h1 style=\"font-size:20px;margin:0 0 12px 0;color:{accent}\">{}</h1>\n",
        escape_html(&r.headline())
    ));
    html.push_str(&format!(
        "<p style=\"margin:0 0 16px 0;font-size:15px\">{}</p>\n",
        escape_html(&lead)
    ));
    html.push_str("<table role=\"presentation\" style=\"border-collapse:collapse;width:100%;font-size:14px\">\n");
    for row in &rows {
        let value = match &row.link {
            Some(link) => format!(
                "<a href=\"{}\" style=\"color:#0969da\">{}</a>",
                escape_html(link),
                escape_html(&row.value)
            ),
            None => escape_html(&row.value),
        };
        html.push_str(&format!(
            "<tr><th style=\"text-align:left;padding:6px 12px 6px 0;color:#59636e;font-weight:600;white-space:nowrap;vertical-align:top;border-bottom:1px solid #eaeef2\">{}</th><td style=\"padding:6px 0;border-bottom:1px solid #eaeef2;word-break:break-all\">{value}</td></tr>\n",
            escape_html(row.label)
        ));
    }
    html.push_str("</table>\n");
    for (title, body) in &sections {
        html.push_str(&format!(
            "<h2 style=\"font-size:15px;margin:20px 0 8px 0\">{}</h2>\n<pre style=\"margin:0;padding:12px;background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;font-size:12px;white-space:pre-wrap;word-break:break-word\">{}</pre>\n",
            escape_html(title),
            escape_html(body)
        ));
    }
    html.push_str(&format!(
        "<p style=\"margin:20px 0 0 0;font-size:12px;color:#59636e\">pgdrive {} on {}</p>\n</div>\n</body></html>\n",
        env!("CARGO_PKG_VERSION"),
        escape_html(&r.host)
    ));
    Email {
        subject,
        text,
        html,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind::Kind;

    fn success() -> Report {
        let mut r = Report::new(
            Status::Success,
            Kind::Daily,
            "shop",
            "db1",
            1_764_471_600_000,
        );
        r.finished_ms = r.started_ms + 192_400;
        r.file = Some("shop-daily-20251130T030000Z.sql.gz".into());
        r.drive_file_id = Some("1AbC".into());
        r.size_bytes = Some(1_234_567_890);
        r.kept = Some(14);
        r
    }

    #[test]
    fn success_email_has_the_facts_and_the_link() {
        let e = render(&success());
        assert_eq!(e.subject, "[pgdrive] ✅ daily backup of shop: 1.2 GB");
        for needle in [
            "shop-daily-20251130T030000Z.sql.gz",
            "1234.6 MB",
            "3 min 12 s",
            "2025-11-30 03:03:12 UTC",
            "14 daily backups",
            "db1",
        ] {
            assert!(e.text.contains(needle), "text lacks {needle}:\n{}", e.text);
            assert!(e.html.contains(needle), "html lacks {needle}");
        }
        assert!(
            e.html
                .contains("href=\"https://drive.google.com/file/d/1AbC/view\""),
            "{}",
            e.html
        );
        assert!(e.text.contains("https://drive.google.com/file/d/1AbC/view"));
    }

    #[test]
    fn everything_interpolated_into_html_is_escaped() {
        let mut r = Report::new(Status::Failure, Kind::Hourly, "shop<b>", "host&co", 0);
        r.step = Some("dump".into());
        r.error = Some("pg_dump failed: <script>alert('x')</script> & more".into());
        r.dump_stderr = Some("pg_dump: error: relation \"<img src=x>\" & co".into());
        let e = render(&r);
        assert_eq!(e.subject, "[pgdrive] ❌ hourly backup of shop<b> failed");
        assert!(!e.html.contains("<script>"), "{}", e.html);
        assert!(!e.html.contains("<img"), "{}", e.html);
        assert!(!e.html.contains("<b>"), "{}", e.html);
        assert!(
            e.html
                .contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; more"),
            "{}",
            e.html
        );
        assert!(e.html.contains("host&amp;co"));
        assert!(
            !e.html.contains(" & "),
            "a raw ampersand is left: {}",
            e.html
        );
        // the plain-text part shows the text as it is
        assert!(e.text.contains("<script>alert('x')</script> & more"));
        assert!(e.text.contains("Failed step") && e.text.contains("dump"));
    }

    #[test]
    fn follow_up_failures_are_shown() {
        let mut r = success();
        r.follow_up_errors
            .push("pruning failed: listing backups: HTTP 500".into());
        let e = render(&r);
        assert!(
            e.subject.starts_with("[pgdrive] ⚠️ daily backup of shop"),
            "{}",
            e.subject
        );
        assert!(e.text.contains("pruning failed"));
    }

    #[test]
    fn durations() {
        assert_eq!(duration_text(4_200), "4.2 s");
        assert_eq!(duration_text(192_400), "3 min 12 s");
        assert_eq!(duration_text(3_723_000), "1 h 02 min");
    }
}
