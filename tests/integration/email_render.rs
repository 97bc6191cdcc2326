//! The notification emails as people see them: sample success and failure emails rendered by a
//! headless Chromium, to PNG screenshots in target/email-samples/ (look at them after changing
//! `notify::email`) and to the parsed DOM, which must show hostile error text as text.
//!
//! Needs `chromium` (Debian: `apt-get install -y chromium`). Without it the test is skipped with
//! a message, except when CI=true, where a missing browser fails the test.

use std::path::{Path, PathBuf};
use std::process::Command;

use pgdrive::kind::Kind;
use pgdrive::notify::email::render;
use pgdrive::notify::{Report, Status};

fn chromium() -> Option<PathBuf> {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Ok(out) = Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
        {
            let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out.status.success() && !path.is_empty() {
                return Some(PathBuf::from(path));
            }
        }
    }
    None
}

fn headless(browser: &Path, profile: &Path) -> Command {
    let mut cmd = Command::new(browser);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    cmd
}

fn samples() -> Vec<(&'static str, Report)> {
    let started = 1_764_471_600_000; // 2025-11-30 03:00 UTC
    let mut ok = Report::new(Status::Success, Kind::Daily, "shop", "db-backup-1", started);
    ok.finished_ms = started + 192_400;
    ok.file = Some("shop-daily-20251130T030000Z.sql.gz".into());
    ok.drive_file_id = Some("1a2B3c4D5e6F7g8H9i0J".into());
    ok.size_bytes = Some(1_234_567_890);
    ok.kept = Some(14);

    let mut failed = Report::new(
        Status::Failure,
        Kind::Hourly,
        "shop",
        "db-backup-1",
        started,
    );
    failed.finished_ms = started + 4_200;
    failed.step = Some("dump".into());
    failed.error = Some("pg_dump exited with status 1: pg_dump: error: query failed: <script>alert(\"x\")</script> & more".into());
    failed.dump_stderr = Some("pg_dump: error: query failed: ERROR:  permission denied for table <orders> & co\npg_dump: detail: Query was: LOCK TABLE public.orders IN ACCESS SHARE MODE".into());
    vec![("success", ok), ("failure", failed)]
}

#[test]
fn sample_emails_render_in_a_browser_and_show_hostile_text_as_text() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but chromium is not installed (apt-get install -y chromium)"
        );
        eprintln!("skipped: chromium is not installed (apt-get install -y chromium)");
        return;
    };
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../email-samples");
    std::fs::create_dir_all(&out).unwrap();
    let profile = out.join("chromium-profile");
    for (name, report) in samples() {
        let email = render(&report);
        let html = out.join(format!("{name}.html"));
        std::fs::write(&html, &email.html).unwrap();
        std::fs::write(
            out.join(format!("{name}.txt")),
            format!("Subject: {}\n\n{}", email.subject, email.text),
        )
        .unwrap();

        let png = out.join(format!("{name}.png"));
        let _ = std::fs::remove_file(&png);
        let shot = headless(&browser, &profile)
            .arg(format!("--screenshot={}", png.display()))
            .arg("--window-size=800,900")
            .arg(format!("file://{}", html.display()))
            .output()
            .unwrap();
        assert!(
            shot.status.success(),
            "chromium failed: {}",
            String::from_utf8_lossy(&shot.stderr)
        );
        let bytes = std::fs::read(&png)
            .unwrap_or_else(|e| panic!("no screenshot at {}: {e}", png.display()));
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let (w, h) = (
            u32::from_be_bytes(bytes[16..20].try_into().unwrap()),
            u32::from_be_bytes(bytes[20..24].try_into().unwrap()),
        );
        assert_eq!((w, h), (800, 900));
        // a blank page compresses to almost nothing; text and a table do not
        assert!(
            bytes.len() > 20_000,
            "{name}.png is only {} bytes: is it blank?",
            bytes.len()
        );

        // the DOM the browser built: the table and links exist, hostile text stayed text
        let dom = headless(&browser, &profile)
            .arg("--dump-dom")
            .arg(format!("file://{}", html.display()))
            .output()
            .unwrap();
        let dom = String::from_utf8_lossy(&dom.stdout);
        assert!(dom.contains("<table") && dom.contains("<th"), "{dom}");
        assert!(
            !dom.contains("<script"),
            "a script element was parsed from the email: {dom}"
        );
        assert!(!dom.contains("<orders"), "{dom}");
        if name == "success" {
            assert!(
                dom.contains("href=\"https://drive.google.com/file/d/1a2B3c4D5e6F7g8H9i0J/view\""),
                "{dom}"
            );
        } else {
            assert!(
                dom.contains("&lt;script&gt;alert(\"x\")&lt;/script&gt; &amp; more"),
                "{dom}"
            );
            assert!(dom.contains("&lt;orders&gt; &amp; co"), "{dom}");
        }
        eprintln!("rendered {}", png.display());
    }
}
