//! Notifications end to end through a real `pgdrive backup` (local target) and `pgdrive
//! notify-test`: SendGrid emulated by tests/emulator/google_emulator.py, Slack, webhook and
//! heartbeat receivers emulated by a small recording HTTP server in this file, and a real SMTP
//! server process (aiosmtpd).

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{json, Value};

const SENDGRID_KEY: &str = "SG.test-key-0123456789";

// ------------------------------------------------------------------ a recording HTTP receiver

#[derive(Clone, Debug)]
struct Recorded {
    method: String,
    path: String,
    body: String,
}

/// How the receiver answers one request.
#[derive(Clone, Copy)]
enum Reply {
    Status(u16),
    Hang(Duration),
}

/// Answers every request (one per connection) with the next reply scripted for its path, else
/// 200, and records it. Also used by the disaster_recovery module (drill notifications).
pub(crate) struct Receiver {
    base: String,
    log: Arc<Mutex<Vec<Recorded>>>,
    script: Arc<Mutex<VecDeque<(String, Reply)>>>,
}

impl Receiver {
    pub(crate) fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}/", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Mutex<VecDeque<(String, Reply)>>> = Arc::new(Mutex::new(VecDeque::new()));
        let (l, s) = (log.clone(), script.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let (l, s) = (l.clone(), s.clone());
                std::thread::spawn(move || {
                    let Some(req) = read_request(&mut conn) else {
                        return;
                    };
                    let reply = {
                        let mut script = s.lock().unwrap();
                        let next = script
                            .iter()
                            .position(|(prefix, _)| req.path.starts_with(prefix.as_str()));
                        next.and_then(|i| script.remove(i))
                            .map(|(_, r)| r)
                            .unwrap_or(Reply::Status(200))
                    };
                    l.lock().unwrap().push(req);
                    let status = match reply {
                        Reply::Status(code) => code,
                        Reply::Hang(d) => {
                            std::thread::sleep(d);
                            200
                        }
                    };
                    let body = if status < 300 { "ok" } else { "no_service" };
                    let _ = write!(conn, "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                });
            }
        });
        Receiver { base, log, script }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The next request whose path starts with `prefix` gets `reply`.
    fn then(&self, prefix: &str, reply: Reply) -> &Receiver {
        self.script
            .lock()
            .unwrap()
            .push_back((prefix.to_string(), reply));
        self
    }

    fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().clone()
    }

    fn paths(&self) -> Vec<String> {
        self.requests()
            .iter()
            .map(|r| format!("{} /{}", r.method, r.path.trim_start_matches('/')))
            .collect()
    }

    pub(crate) fn json_posted_to(&self, path: &str) -> Vec<Value> {
        self.requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path == path)
            .map(|r| serde_json::from_str(&r.body).unwrap())
            .collect()
    }
}

fn read_request(conn: &mut std::net::TcpStream) -> Option<Recorded> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        let len = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse::<usize>().unwrap())
            })
            .unwrap_or(0);
        if buf.len() < end + 4 + len {
            continue;
        }
        let mut first = head.lines().next()?.split(' ');
        let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
        return Some(Recorded {
            method,
            path,
            body: String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned(),
        });
    }
}

// ------------------------------------------------------------------ a real SMTP server

/// `python3 -m aiosmtpd` storing what it accepts in a maildir.
struct SmtpServer {
    child: Child,
    port: u16,
    maildir: TempDir,
}

impl SmtpServer {
    fn start() -> SmtpServer {
        SmtpServer::start_with(&[])
    }

    /// With STARTTLS offered, using a self-signed certificate made with openssl.
    fn start_with_self_signed_starttls() -> (SmtpServer, TempDir) {
        let certs = TempDir::new("smtpcert");
        let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
        let st = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(Stdio::null())
            .status()
            .expect("openssl");
        assert!(st.success());
        let args = [
            "--tlscert".into(),
            cert.display().to_string(),
            "--tlskey".into(),
            key.display().to_string(),
        ];
        (SmtpServer::start_with(&args), certs)
    }

    fn start_with(extra: &[String]) -> SmtpServer {
        let maildir = TempDir::new("maildir");
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
            .args(extra)
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(maildir.path().join("mail"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 with aiosmtpd (pip install -r tests/emulator/requirements.txt)");
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "aiosmtpd did not start (is it installed? pip install -r tests/emulator/requirements.txt)");
            std::thread::sleep(Duration::from_millis(50));
        }
        SmtpServer {
            child,
            port,
            maildir,
        }
    }

    /// The raw messages received.
    fn messages(&self) -> Vec<String> {
        let dir = self.maildir.path().join("mail/new");
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------------------ set-up

struct Setup {
    db: TestDb,
    dir: TempDir,
    emu: Emulator,
    hooks: Receiver,
}

impl Setup {
    fn new() -> Setup {
        let db = TestDb::new("notify");
        db.exec("CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 100);");
        let emu = Emulator::start();
        emu.post("sendgrid_keys", json!({ "key": SENDGRID_KEY }));
        Setup {
            db,
            dir: TempDir::new("notify"),
            emu,
            hooks: Receiver::start(),
        }
    }

    /// A local-target backup with SendGrid, Slack, the webhook and a heartbeat configured.
    fn pgdrive(&self) -> Command {
        let mut cmd = pgdrive();
        cmd.env("DATABASE_URL", self.db.url())
            .env("PGDRIVE_LOCAL_DIR", self.dir.path())
            .env("SENDGRID_API_KEY", SENDGRID_KEY)
            .env("SENDGRID_FROM_EMAIL", "backups@example.com")
            .env("PGDRIVE_NOTIFY_EMAIL", "ops@example.com, dba@example.com")
            .env("PGDRIVE_SENDGRID_URL", &self.emu.base)
            .env(
                "PGDRIVE_SLACK_WEBHOOK_URL",
                self.hooks.url("services/T000/B000/slack-secret-token"),
            )
            .env(
                "PGDRIVE_WEBHOOK_URL",
                self.hooks.url("hook/webhook-secret-token"),
            )
            .env("PGDRIVE_PING_URL", self.hooks.url("ping/ping-secret-uuid"))
            .env("PGDRIVE_NOTIFY_RETRY_DELAYS_MS", "10,10,10");
        cmd
    }

    fn mail(&self) -> Vec<Value> {
        self.emu.get("mail")["messages"].as_array().unwrap().clone()
    }

    fn mail_send_requests(&self) -> usize {
        self.emu
            .requests()
            .iter()
            .filter(|r| r.to_string().contains("/v3/mail/send"))
            .count()
    }
}

fn assert_no_secrets(r: &Run) {
    for secret in [
        SENDGRID_KEY,
        "slack-secret-token",
        "webhook-secret-token",
        "ping-secret-uuid",
        "smtp-pass-123",
    ] {
        assert!(
            !r.stderr.contains(secret) && !r.stdout.contains(secret),
            "{secret} leaked: {r:?}"
        );
    }
}

fn html_of(mail: &Value) -> String {
    mail["content"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "text/html")
        .unwrap()["value"]
        .as_str()
        .unwrap()
        .to_string()
}

fn text_of(mail: &Value) -> String {
    mail["content"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "text/plain")
        .unwrap()["value"]
        .as_str()
        .unwrap()
        .to_string()
}

fn stored_files(dir: &TempDir) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sql.gz"))
        .collect();
    v.sort();
    v
}

// ------------------------------------------------------------------ backup runs

#[test]
fn a_successful_backup_is_reported_by_email_slack_webhook_and_heartbeat() {
    let s = Setup::new();
    let r = run(s
        .pgdrive()
        .args(["backup", "--kind", "daily", "--keep", "3"]));
    assert_eq!(r.status, 0, "{r:?}");
    assert_no_secrets(&r);
    let files = stored_files(&s.dir);
    assert_eq!(files.len(), 1);
    let size = std::fs::metadata(s.dir.path().join(&files[0]))
        .unwrap()
        .len();

    let mail = s.mail();
    assert_eq!(mail.len(), 1, "{mail:?}");
    let m = &mail[0];
    let subject = m["subject"].as_str().unwrap();
    assert!(
        subject.starts_with(&format!("[pgdrive] ✅ daily backup of {}: ", s.db.name)),
        "{subject}"
    );
    assert_eq!(
        m["personalizations"][0]["to"],
        json!([{ "email": "ops@example.com" }, { "email": "dba@example.com" }])
    );
    assert_eq!(m["from"]["email"], "backups@example.com");
    let (html, text) = (html_of(m), text_of(m));
    for body in [&html, &text] {
        assert!(body.contains(&files[0]), "{body}");
        assert!(body.contains(&format!("({size} bytes)")), "{body}");
        assert!(body.contains("1 daily backups"), "the kept count: {body}");
        assert!(body.contains(" UTC"), "{body}");
    }

    // the heartbeat brackets the run; messages go out in between
    let paths = s.hooks.paths();
    assert_eq!(
        paths.first().map(String::as_str),
        Some("GET /ping/ping-secret-uuid/start"),
        "{paths:?}"
    );
    assert!(
        paths.contains(&"GET /ping/ping-secret-uuid".to_string()),
        "{paths:?}"
    );
    assert!(!paths.iter().any(|p| p.ends_with("/fail")), "{paths:?}");

    let hook = s.hooks.json_posted_to("/hook/webhook-secret-token");
    assert_eq!(hook.len(), 1);
    let h = &hook[0];
    assert_eq!(h["status"], "success");
    assert_eq!(h["kind"], "daily");
    assert_eq!(h["database"], s.db.name.as_str());
    assert_eq!(h["file"], files[0].as_str());
    assert_eq!(h["size_bytes"], size);
    assert_eq!(h["error"], Value::Null);
    assert!(
        h["duration_ms"].as_i64().unwrap() >= 0 && h["started_at"].as_str().unwrap().ends_with('Z')
    );
    assert!(
        h["timestamp"].is_string() && h["message"].as_str().unwrap().contains("daily backup of")
    );

    let slack = s
        .hooks
        .json_posted_to("/services/T000/B000/slack-secret-token");
    assert_eq!(slack.len(), 1);
    assert!(
        slack[0]["text"].as_str().unwrap().contains(&files[0]),
        "{slack:?}"
    );
}

#[test]
fn a_failed_backup_is_reported_with_step_escaped_error_and_pg_dump_stderr_and_stays_a_failure() {
    let s = Setup::new();
    let bin = TempDir::new("bin");
    let fake = script(
        bin.path(),
        "pg_dump",
        &format!(
            "if [ \"$1\" = --version ]; then exec {} --version; fi\necho 'pg_dump: error: relation \"<script>alert(1)</script>\" & friends is broken' >&2\nexit 1",
            real_pg_dump()
        ),
    );
    let r = run(s
        .pgdrive()
        .env("PGDRIVE_PG_DUMP", &fake)
        .args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 1, "a failure stays a failure: {r:?}");
    assert_no_secrets(&r);
    assert!(stored_files(&s.dir).is_empty());

    let mail = s.mail();
    assert_eq!(mail.len(), 1, "{mail:?}");
    assert_eq!(
        mail[0]["subject"],
        format!("[pgdrive] ❌ daily backup of {} failed", s.db.name)
    );
    let html = html_of(&mail[0]);
    assert!(
        !html.contains("<script>"),
        "unescaped error text in HTML: {html}"
    );
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot; &amp; friends"),
        "{html}"
    );
    assert!(html.contains("pg_dump stderr"), "{html}");
    let text = text_of(&mail[0]);
    assert!(
        text.contains("Failed step") && text.contains("dump"),
        "{text}"
    );
    assert!(
        text.contains("<script>alert(1)</script>\" & friends"),
        "{text}"
    );

    let paths = s.hooks.paths();
    assert!(
        paths.contains(&"GET /ping/ping-secret-uuid/start".to_string())
            && paths.contains(&"GET /ping/ping-secret-uuid/fail".to_string()),
        "{paths:?}"
    );
    assert!(
        !paths.contains(&"GET /ping/ping-secret-uuid".to_string()),
        "only a verified success sends the success ping: {paths:?}"
    );
    let h = &s.hooks.json_posted_to("/hook/webhook-secret-token")[0];
    assert_eq!(h["status"], "failure");
    assert_eq!(h["step"], "dump");
    assert!(
        h["error"].as_str().unwrap().contains("friends is broken"),
        "{h}"
    );
}

#[test]
fn a_stored_backup_whose_email_is_refused_exits_3_and_the_other_channels_still_run() {
    let s = Setup::new();
    let r = run(s
        .pgdrive()
        .env("SENDGRID_API_KEY", "SG.revoked-key-xyz")
        .args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 3, "{r:?}");
    assert!(!r.stderr.contains("SG.revoked-key-xyz"), "{r:?}");
    assert!(
        r.stderr.contains("notification failed") && r.stderr.contains("channel=sendgrid"),
        "{r:?}"
    );
    assert!(
        r.stderr.contains("HTTP 401") && r.stderr.contains("SENDGRID_API_KEY"),
        "the hint: {r:?}"
    );
    assert_eq!(s.mail_send_requests(), 1, "a 401 is not retried");
    assert_eq!(stored_files(&s.dir).len(), 1, "the backup itself is stored");
    assert_eq!(
        s.hooks.json_posted_to("/hook/webhook-secret-token").len(),
        1
    );
    assert_eq!(
        s.hooks
            .json_posted_to("/services/T000/B000/slack-secret-token")
            .len(),
        1
    );
    assert!(s
        .hooks
        .paths()
        .contains(&"GET /ping/ping-secret-uuid".to_string()));
}

#[test]
fn sendgrid_429_and_5xx_are_retried_until_accepted() {
    let s = Setup::new();
    s.emu.fault(json!([
        { "op": "mail_send", "nth": 1, "action": { "status": 429 } },
        { "op": "mail_send", "nth": 2, "action": { "status": 500 } },
        { "op": "mail_send", "nth": 3, "action": { "drop": "before" } },
    ]));
    let r = run(s.pgdrive().args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(s.mail_send_requests(), 4);
    assert_eq!(s.mail().len(), 1);
}

#[test]
fn a_hanging_sendgrid_times_out_gives_up_and_exits_3() {
    let s = Setup::new();
    s.emu
        .fault(json!([{ "op": "mail_send", "times": 10, "action": { "hang_ms": 5000 } }]));
    // the webhook hangs once, then answers 503 once: retried, then delivered
    s.hooks
        .then("/hook/", Reply::Hang(Duration::from_secs(3)))
        .then("/hook/", Reply::Status(503));
    let started = Instant::now();
    let r = run(s
        .pgdrive()
        .env("PGDRIVE_NOTIFY_TIMEOUT_MS", "300")
        .args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 3, "{r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        r.stderr.contains("channel=sendgrid") && r.stderr.contains("gave up after 4 attempts"),
        "{r:?}"
    );
    assert_eq!(s.mail_send_requests(), 4);
    assert_eq!(
        s.hooks.json_posted_to("/hook/webhook-secret-token").len(),
        3,
        "{:?}",
        s.hooks.paths()
    );
    assert!(!r.stderr.contains("channel=webhook error"), "{r:?}");
    assert_no_secrets(&r);
}

#[test]
fn on_failure_policy_sends_no_success_message_but_the_heartbeat_still_runs() {
    let s = Setup::new();
    let r = run(s
        .pgdrive()
        .args(["backup", "--kind", "daily", "--notify", "on-failure"]));
    assert_eq!(r.status, 0, "{r:?}");
    assert!(s.mail().is_empty());
    assert!(s
        .hooks
        .json_posted_to("/hook/webhook-secret-token")
        .is_empty());
    assert_eq!(
        s.hooks.paths(),
        vec![
            "GET /ping/ping-secret-uuid/start",
            "GET /ping/ping-secret-uuid"
        ]
    );

    // per-kind setting from the environment; the flag wins over it (fresh directories: file names
    // have a one-second resolution)
    let other = TempDir::new("notify2");
    let r = run(s
        .pgdrive()
        .env("PGDRIVE_NOTIFY_DAILY", "never")
        .env("PGDRIVE_LOCAL_DIR", other.path())
        .args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 0, "{r:?}");
    assert!(s.mail().is_empty());
    let third = TempDir::new("notify3");
    let r = run(s
        .pgdrive()
        .env("PGDRIVE_NOTIFY_DAILY", "never")
        .env("PGDRIVE_LOCAL_DIR", third.path())
        .args(["backup", "--kind", "daily", "--notify", "always"]));
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(s.mail().len(), 1);
}

#[test]
fn a_run_skipped_by_the_lock_sends_no_ping_and_no_message() {
    let s = Setup::new();
    // the lock is held by a real run whose pg_dump takes a while
    let bin = TempDir::new("bin");
    let slow = script(
        bin.path(),
        "pg_dump",
        &format!(
            "if [ \"$1\" = --version ]; then exec {} --version; fi\nsleep 3\nexec {} \"$@\"",
            real_pg_dump(),
            real_pg_dump()
        ),
    );
    let mut first = s
        .pgdrive()
        .env("PGDRIVE_PG_DUMP", &slow)
        .args(["backup", "--kind", "daily"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_until(
        || s.hooks.paths().iter().any(|p| p.ends_with("/start")),
        Duration::from_secs(10)
    ));
    let r = run(s.pgdrive().args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 75, "{r:?}");
    assert!(first.wait().unwrap().success());
    let starts = s
        .hooks
        .paths()
        .iter()
        .filter(|p| p.ends_with("/start"))
        .count();
    assert_eq!(starts, 1, "{:?}", s.hooks.paths());
    assert_eq!(s.mail().len(), 1, "only the run that happened is reported");
}

fn wait_until(cond: impl Fn() -> bool, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn email_through_a_real_smtp_server() {
    let s = Setup::new();
    let smtp = SmtpServer::start();
    let r = run(s
        .pgdrive()
        .env_remove("SENDGRID_API_KEY")
        .env("PGDRIVE_SMTP_HOST", "127.0.0.1")
        .env("PGDRIVE_SMTP_PORT", smtp.port.to_string())
        .env("PGDRIVE_SMTP_TLS", "none")
        .env("PGDRIVE_SMTP_FROM", "pgdrive@example.com")
        .args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 0, "{r:?}");
    assert!(r.stderr.contains("channel=smtp"), "{r:?}");
    let messages = smtp.messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    let m = &messages[0];
    assert!(m.contains("From: pgdrive@example.com"), "{m}");
    assert!(
        m.contains("ops@example.com") && m.contains("dba@example.com"),
        "{m}"
    );
    assert!(
        m.contains("multipart/alternative") && m.contains("text/plain") && m.contains("text/html"),
        "{m}"
    );
    assert!(
        m.contains("Subject: [pgdrive] =?utf-8?b?4pyF?= daily backup of"),
        "the emoji (✅) is encoded: {m}"
    );
    assert!(s.mail().is_empty(), "SendGrid is not configured");
}

#[test]
fn smtp_failures_exit_3_without_revealing_the_password() {
    let s = Setup::new();
    let smtp = SmtpServer::start();
    // aiosmtpd offers no AUTH on a plain connection: the login cannot succeed
    let r = run(s
        .pgdrive()
        .env_remove("SENDGRID_API_KEY")
        .env("PGDRIVE_SMTP_HOST", "127.0.0.1")
        .env("PGDRIVE_SMTP_PORT", smtp.port.to_string())
        .env("PGDRIVE_SMTP_TLS", "none")
        .env("PGDRIVE_SMTP_USER", "pgdrive")
        .env("PGDRIVE_SMTP_PASSWORD", "smtp-pass-123")
        .env("PGDRIVE_SMTP_FROM", "pgdrive@example.com")
        .args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 3, "{r:?}");
    assert!(r.stderr.contains("channel=smtp"), "{r:?}");
    assert!(
        r.stderr.contains("No compatible authentication mechanism"),
        "{r:?}"
    );
    assert!(
        r.stderr.contains("hint=") && r.stderr.contains("PGDRIVE_SMTP_TLS"),
        "{r:?}"
    );
    assert!(
        !r.stderr.contains("gave up after"),
        "a client error is not retried: {r:?}"
    );
    assert_no_secrets(&r);
    assert!(smtp.messages().is_empty());
    assert_eq!(
        s.hooks.json_posted_to("/hook/webhook-secret-token").len(),
        1,
        "the other channels still run"
    );
}

#[test]
fn starttls_with_an_untrusted_certificate_fails_and_never_falls_back_to_plain_text() {
    let s = Setup::new();
    let (smtp, _certs) = SmtpServer::start_with_self_signed_starttls();
    let r = run(s
        .pgdrive()
        .env_remove("SENDGRID_API_KEY")
        .env("PGDRIVE_SMTP_HOST", "127.0.0.1")
        .env("PGDRIVE_SMTP_PORT", smtp.port.to_string())
        .env("PGDRIVE_SMTP_TLS", "starttls")
        .env("PGDRIVE_SMTP_USER", "pgdrive")
        .env("PGDRIVE_SMTP_PASSWORD", "smtp-pass-123")
        .env("PGDRIVE_SMTP_FROM", "pgdrive@example.com")
        .args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 3, "{r:?}");
    assert!(
        r.stderr.contains("channel=smtp") && r.stderr.to_lowercase().contains("certificate"),
        "{r:?}"
    );
    assert!(smtp.messages().is_empty());
    assert_no_secrets(&r);
}

#[test]
fn half_configured_email_is_a_configuration_error() {
    let s = Setup::new();
    let r = run(s
        .pgdrive()
        .env_remove("SENDGRID_FROM_EMAIL")
        .args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 78, "{r:?}");
    assert!(r.stderr.contains("SENDGRID_FROM_EMAIL"), "{r:?}");
    assert!(s.hooks.requests().is_empty(), "nothing is attempted");
    let r = run(s
        .pgdrive()
        .env("PGDRIVE_NOTIFY", "sometimes")
        .args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 78, "{r:?}");
}

// ------------------------------------------------------------------ notify-test

#[test]
fn notify_test_reports_each_channel() {
    let s = Setup::new();
    let r = run(s.pgdrive().arg("notify-test"));
    assert_eq!(r.status, 0, "{r:?}");
    assert_no_secrets(&r);
    for line in [
        "sendgrid: ok",
        "slack: ok",
        "webhook: ok",
        "ping (daily,hourly,schema): ok",
    ] {
        assert!(r.stdout.contains(line), "{line}: {r:?}");
    }
    let mail = s.mail();
    assert_eq!(mail.len(), 1);
    assert!(
        mail[0]["subject"]
            .as_str()
            .unwrap()
            .starts_with("[pgdrive] 🔔 test notification from "),
        "{mail:?}"
    );
    assert!(
        s.hooks
            .paths()
            .contains(&"GET /ping/ping-secret-uuid/log".to_string()),
        "a test must not change the check's state"
    );
    assert_eq!(
        s.hooks.json_posted_to("/hook/webhook-secret-token")[0]["status"],
        "test"
    );

    // one failing channel: reported, the others still tried, exit 1
    s.hooks.then("/services/", Reply::Status(404));
    let r = run(s
        .pgdrive()
        .env_remove("PGDRIVE_PING_URL")
        .env_remove("PGDRIVE_WEBHOOK_URL")
        .arg("notify-test"));
    assert_eq!(r.status, 1, "{r:?}");
    assert!(
        r.stdout.contains("slack: FAILED") && r.stdout.contains("HTTP 404"),
        "{r:?}"
    );
    assert!(r.stdout.contains("sendgrid: ok"), "{r:?}");
    assert_no_secrets(&r);
    assert_eq!(s.mail().len(), 2);
}

#[test]
fn notify_test_without_channels_is_a_configuration_error() {
    let r = run(pgdrive().arg("notify-test"));
    assert_eq!(r.status, 78, "{r:?}");
    assert!(
        r.stderr.contains("no notification channel is configured"),
        "{r:?}"
    );
}

#[test]
fn notification_settings_work_from_the_env_file() {
    let hooks = Receiver::start();
    let dir = TempDir::new("envfile");
    let file = dir.path().join("pgdrive.env");
    std::fs::write(
        &file,
        format!(
            "PGDRIVE_WEBHOOK_URL={}\nPGDRIVE_PING_URL_HOURLY={}\n",
            hooks.url("hook/from-file"),
            hooks.url("ping/hourly")
        ),
    )
    .unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let r = run(pgdrive().arg("--env-file").arg(&file).arg("notify-test"));
    assert_eq!(r.status, 0, "{r:?}");
    assert!(
        r.stdout.contains("webhook: ok") && r.stdout.contains("ping (hourly): ok"),
        "{r:?}"
    );
    assert_eq!(hooks.json_posted_to("/hook/from-file").len(), 1);
    assert!(
        hooks.paths().contains(&"GET /ping/hourly/log".to_string()),
        "{:?}",
        hooks.paths()
    );
}

#[test]
fn a_failure_before_the_lock_is_reported_and_pings_fail_without_start() {
    let s = Setup::new();
    let r = run(s
        .pgdrive()
        .env("DATABASE_URL", admin_url("no_such_database_pgdrive"))
        .args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 1, "{r:?}");
    assert_eq!(
        s.hooks
            .paths()
            .iter()
            .filter(|p| p.starts_with("GET"))
            .cloned()
            .collect::<Vec<_>>(),
        vec!["GET /ping/ping-secret-uuid/fail"]
    );
    let mail = s.mail();
    assert_eq!(mail.len(), 1, "{mail:?}");
    let text = text_of(&mail[0]);
    assert!(
        text.contains("Failed step")
            && text.contains("connect")
            && text.contains("no_such_database_pgdrive"),
        "{text}"
    );
}

/// Issue 9 point 7: a run that cannot reach its database fails with the documented status, a
/// hint, a failure notification and a failed ping; one whose separate catalog is reachable also
/// leaves its ERROR row there.
#[test]
fn unreachable_databases_and_bad_connection_settings_exit_as_documented_notify_and_ping_fail() {
    let s = Setup::new();
    let missing = admin_url("no_such_database_pgdrive");
    let cases: [(&str, String, Option<String>, i32); 5] = [
        (
            "unknown host",
            "postgres://postgres@no-such-host.invalid:5432/postgres".into(),
            None,
            1,
        ),
        // nothing listens there: a transient failure (69); the rest need a person
        (
            "wrong port",
            "postgres://postgres@127.0.0.1:1/postgres".into(),
            None,
            69,
        ),
        ("missing database", missing.clone(), None, 1),
        (
            "missing database, catalog elsewhere",
            missing,
            Some(s.db.url()),
            1,
        ),
        (
            "connect_timeout=abc",
            format!("{}?connect_timeout=abc", s.db.url()),
            None,
            78,
        ),
    ];
    let fail_pings = || {
        s.hooks
            .paths()
            .iter()
            .filter(|p| p.as_str() == "GET /ping/ping-secret-uuid/fail")
            .count()
    };
    for (i, (what, url, catalog, status)) in cases.into_iter().enumerate() {
        let mut cmd = s.pgdrive();
        cmd.env("DATABASE_URL", &url);
        if let Some(c) = &catalog {
            cmd.env("PGDRIVE_CATALOG_URL", c);
        }
        let r = run(cmd.args(["backup", "--kind", "daily"]));
        assert_eq!(r.status, status, "{what}: {r:?}");
        assert!(r.stderr.contains("\nhint: "), "{what}: {r:?}");
        let hooks = s.hooks.json_posted_to("/hook/webhook-secret-token");
        assert_eq!(hooks.len(), i + 1, "{what}: no failure notification");
        assert_eq!(hooks[i]["status"], "failure", "{what}");
        assert_eq!(hooks[i]["step"], "connect", "{what}: {}", hooks[i]);
        assert_eq!(fail_pings(), i + 1, "{what}: no failed ping");
    }
    // only the run whose catalog was reachable could record itself
    let recorded: Vec<(String, Option<String>, Option<String>)> =
        s.db.client()
            .query("SELECT status, step, error FROM backups", &[])
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0].0, "ERROR");
    assert_eq!(recorded[0].1.as_deref(), Some("connect"));
    assert!(
        recorded[0]
            .2
            .as_deref()
            .is_some_and(|e| e.contains("database \"no_such_database_pgdrive\" does not exist")),
        "the server's own message: {recorded:?}"
    );
}

/// Issue 9 point 7: a service-account key that does not parse is a failure of the job like a
/// missing folder: exit 78 with a hint, a failure notification and a failed ping, and never the
/// key's content.
#[test]
fn a_malformed_key_notifies_like_a_missing_folder() {
    let s = Setup::new();
    let secret = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC";
    let malformed = format!("{{\"type\": \"service_account\", \"private_key\": \"{secret}");
    let r = run(s
        .pgdrive()
        .env("GOOGLE_SERVICE_ACCOUNT_JSON", &malformed)
        .env("GOOGLE_DRIVE_FOLDER_ID", "some-folder")
        .args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 78, "{r:?}");
    assert!(r.stderr.contains("\nhint: "), "{r:?}");
    let hooks = s.hooks.json_posted_to("/hook/webhook-secret-token");
    assert_eq!(hooks.len(), 1, "{r:?}");
    assert_eq!(hooks[0]["status"], "failure");
    assert!(
        hooks[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("GOOGLE_SERVICE_ACCOUNT_JSON")),
        "{}",
        hooks[0]
    );
    assert!(s
        .hooks
        .paths()
        .contains(&"GET /ping/ping-secret-uuid/fail".to_string()));
    assert_eq!(s.mail().len(), 1);
    for body in s.hooks.requests().iter().map(|r| r.body.clone()) {
        assert!(!body.contains(secret), "the key leaked: {body}");
    }
    assert!(!r.stderr.contains(secret), "{r:?}");
}

// ------------------------------------------------------------------ passwords of every shape

/// Every printable ASCII character (space included) and some non-ASCII ones.
fn every_character() -> String {
    let ascii: String = (0x20u8..0x7f).map(char::from).collect();
    format!("{ascii}ünïcødé€🔑пароль")
}

fn percent_encoded(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The spellings an output could show a password in.
fn spellings(pw: &str) -> Vec<String> {
    let json = serde_json::to_string(pw).unwrap();
    let html = pw
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;");
    let mut out = vec![
        pw.to_string(),
        percent_encoded(pw),
        percent_encoded(pw).to_lowercase(),
        json[1..json.len() - 1].to_string(),
        html,
    ];
    // and any piece of it long enough to mean something
    let chars: Vec<char> = pw.chars().collect();
    out.extend(chars.windows(12).map(|w| w.iter().collect::<String>()));
    out
}

fn assert_hidden(pw: &str, text: &str, what: &str) {
    for s in spellings(pw) {
        assert!(
            !text.contains(&s),
            "{what} shows the password as {s:?}:\n{text}"
        );
    }
}

/// The text parts of a raw email, decoded (quoted-printable, base64) by Python's email module.
fn decoded_email(raw: &str) -> String {
    let mut child = Command::new("python3")
        .args(["-c", "import email,sys\nm=email.message_from_string(sys.stdin.read())\nprint(m['Subject'])\nfor p in m.walk():\n    if not p.is_multipart(): print(p.get_payload(decode=True).decode())"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(raw.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_password_of_any_shape_never_appears_in_any_output() {
    let s = Setup::new();
    let smtp = SmtpServer::start();
    let bin = TempDir::new("bin");
    // a pg_dump that quotes its password back in its error, as a careless wrapper might
    let leaky_pg_dump = script(
        bin.path(),
        "pg_dump",
        &format!(
            "if [ \"$1\" = --version ]; then exec {} --version; fi\nprintf 'pg_dump: error: connection to postgres://%s:%s@db/x failed: password=%s (%s)\\n' \"$PGUSER\" \"$PGPASSWORD\" \"$PGPASSWORD\" \"$PGPASSWORD\" >&2\nexit 1",
            real_pg_dump()
        ),
    );
    let all = every_character();
    // libpq takes every character but '@', '/' and '%' unencoded in a URI's password
    let unencoded: String = all.chars().filter(|c| !"@/%".contains(*c)).collect();
    let kv_quoted = all.replace('\\', "\\\\").replace('\'', "\\'");
    let kv_unquoted: String = all
        .chars()
        .flat_map(|c| {
            let escape = matches!(c, '\\' | '\'' | ' ');
            escape.then_some('\\').into_iter().chain(std::iter::once(c))
        })
        .collect();
    let db = &s.db.name;
    let shapes = [
        (
            all.clone(),
            format!(
                "postgres://postgres:{}@127.0.0.1:5432/{db}",
                percent_encoded(&all)
            ),
        ),
        (
            unencoded.clone(),
            format!("postgres://postgres:{unencoded}@127.0.0.1:5432/{db}"),
        ),
        (
            all.clone(),
            format!("host=127.0.0.1 port=5432 user=postgres dbname={db} password = '{kv_quoted}'"),
        ),
        (
            all.clone(),
            format!("password={kv_unquoted} host=127.0.0.1 port=5432 user=postgres dbname={db}"),
        ),
    ];
    let html = s.dir.path().join("status.html");
    let prom = s.dir.path().join("status.prom");
    for (i, (pw, url)) in shapes.iter().enumerate() {
        // file names have a resolution of a second: each run stores into its own directory
        let stored = s.dir.path().join(format!("shape{i}"));
        let with_smtp = |cmd: &mut Command| {
            cmd.env("DATABASE_URL", url)
                .env("PGDRIVE_LOCAL_DIR", &stored)
                .env("PGDRIVE_SMTP_HOST", "127.0.0.1")
                .env("PGDRIVE_SMTP_PORT", smtp.port.to_string())
                .env("PGDRIVE_SMTP_TLS", "none")
                .env("PGDRIVE_SMTP_FROM", "pgdrive@example.com")
                .env("PGDRIVE_NOTIFY", "always");
        };
        let scratch = url.replace(":5432/", ":1/").replace("port=5432", "port=1");
        let mut runs = Vec::new();
        for (args, leaky, want) in [
            (vec!["backup", "--kind", "daily"], false, 0),
            (vec!["backup", "--kind", "daily"], true, 1),
            (
                vec!["--log-format", "json", "backup", "--kind", "daily"],
                true,
                1,
            ),
            (vec!["check"], false, 0),
            // the scratch server (port 1) is unreachable: 69
            (
                vec!["verify", "latest", "--restore-test", &scratch],
                false,
                69,
            ),
            (
                vec!["restore", "latest", "--target-url", &scratch, "--yes"],
                false,
                69,
            ),
            (vec!["status"], false, 1),
            (
                vec![
                    "--log-format",
                    "json",
                    "status",
                    "--json",
                    "--html",
                    html.to_str().unwrap(),
                    "--prometheus",
                    prom.to_str().unwrap(),
                ],
                false,
                1,
            ),
        ] {
            let mut cmd = s.pgdrive();
            with_smtp(&mut cmd);
            if leaky {
                cmd.env("PGDRIVE_PG_DUMP", &leaky_pg_dump).env(
                    "PGDRIVE_LOCAL_DIR",
                    s.dir.path().join(format!("leaky{i}_{}", runs.len())),
                );
            }
            let r = run(cmd.args(&args));
            assert_eq!(r.status, want, "{args:?} with {url}: {r:?}");
            assert_hidden(
                pw,
                &format!("{}\n{}", r.stdout, r.stderr),
                &format!("{args:?}"),
            );
            runs.push(r);
        }
        // the outputs really carry what the password would have been in
        assert!(
            runs[0].stderr.contains("database=") && runs[0].stderr.contains("***"),
            "{:?}",
            runs[0]
        );
        assert!(
            runs[1]
                .stderr
                .contains("pg_dump: error: connection to postgres://postgres:***@db"),
            "{:?}",
            runs[1]
        );
        assert!(runs[4].stderr.contains("password=***"), "{:?}", runs[4]);
        let row: (String, String) = {
            let row = s.db.client().query_one(
                "SELECT string_agg(coalesce(error, ''), E'\\n'), string_agg(coalesce(verify_result, ''), E'\\n') FROM backups",
                &[],
            ).unwrap();
            (row.get(0), row.get(1))
        };
        assert!(row.0.contains("password=***"), "{row:?}");
        assert!(row.1.contains("FAILED"), "{row:?}");
        assert_hidden(pw, &format!("{}\n{}", row.0, row.1), "the catalog");
        for page in [&html, &prom] {
            assert_hidden(pw, &std::fs::read_to_string(page).unwrap(), "a status page");
        }
    }
    let mail = s.mail();
    assert!(mail.len() >= 8, "{mail:?}");
    let hooks: Vec<String> = s
        .hooks
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.path, r.body))
        .collect();
    assert!(
        hooks
            .iter()
            .any(|h| h.contains("/hook/") && h.contains("password=***")),
        "{hooks:?}"
    );
    let smtp_mail: Vec<String> = smtp.messages().iter().map(|m| decoded_email(m)).collect();
    assert!(
        smtp_mail.iter().any(|m| m.contains("password=***")),
        "{smtp_mail:?}"
    );
    for (pw, _) in &shapes {
        assert_hidden(pw, &serde_json::to_string(&mail).unwrap(), "SendGrid mail");
        assert_hidden(pw, &hooks.join("\n"), "Slack, webhook or ping requests");
        assert_hidden(pw, &smtp_mail.join("\n"), "SMTP mail");
    }
}
