//! The man page, generated from the clap definitions (so `--help`, `man pgdrive` and the README
//! cannot drift apart): the main page plus one OPTIONS section per subcommand, and the
//! ENVIRONMENT and EXIT STATUS sections. `man/pgdrive.1` is this output, checked by a test.

use anyhow::Result;
use clap::CommandFactory;

use crate::cli::Cli;

const ENVIRONMENT: &[(&str, &str)] = &[
    ("DATABASE_URL", "The database to back up (postgres://user@host:5432/db or key=value form). The password may be in it or in ~/.pgpass; it is passed to pg_dump through its environment, never its command line."),
    ("PGDRIVE_CATALOG_URL", "Where the advisory lock and the backups table live, when not in the backed-up database."),
    ("GOOGLE_SERVICE_ACCOUNT_JSON", "A service account key: the JSON itself or the path of the key file."),
    ("GOOGLE_APPLICATION_CREDENTIALS", "Path of a service account key or of OAuth user credentials (type authorized_user)."),
    ("GOOGLE_IMPERSONATE_USER", "With a service account key: the user to act as through domain-wide delegation."),
    ("GOOGLE_DRIVE_FOLDER_ID", "Drive folder for daily backups."),
    ("HOURLY_DRIVE_FOLDER_ID", "Drive folder for hourly backups."),
    ("SCHEMA_DRIVE_FOLDER_ID", "Drive folder for schema backups."),
    ("PGDRIVE_CRITICAL_TABLES", "Comma-separated tables for the hourly backup; schema-qualified and quoted names allowed."),
    ("PGDRIVE_KEEP_DAILY, PGDRIVE_KEEP_HOURLY, PGDRIVE_KEEP_SCHEMA", "How many backups of each kind to keep (14, 48, 0); 0 keeps everything."),
    ("PGDRIVE_LOCAL_DIR", "A local directory to store backups in (as --to)."),
    ("PGDRIVE_COMPRESS", "gzip[:1-9], zstd[:1-19] or none (default gzip:6)."),
    ("PGDRIVE_THREADS", "Compression threads (default: the cores available minus one, at least 1)."),
    ("PGDRIVE_FORMAT", "plain (an SQL script, default) or custom (pg_dump -Fc for pg_restore)."),
    ("PGDRIVE_CHUNK_SIZE", "Upload chunk size, a multiple of 256KiB (default 8MiB)."),
    ("PGDRIVE_PG_DUMP", "The pg_dump binary to use."),
    ("PGDRIVE_PSQL", "The psql binary restore and verify --restore-test run for plain dumps."),
    ("PGDRIVE_PG_RESTORE", "The pg_restore binary restore and verify run for custom archives."),
    ("PGDRIVE_DRIVE_URL", "Drive API base URL (default https://www.googleapis.com/)."),
    ("PGDRIVE_RETRY_MAX, PGDRIVE_RETRY_INITIAL_MS, PGDRIVE_RETRY_MAX_MS", "Retry policy for Google calls: retries (8), first backoff (1000 ms), longest backoff (64000 ms)."),
    ("PGDRIVE_STALL_TIMEOUT_MS", "A backup with no bytes from pg_dump and none accepted by a target for this long fails as stalled, exit 1; so does a restore or verify that receives no byte of the backup while its client accepts none and its session does no work (default 300000; 0: never)."),
    ("PGDRIVE_NOTIFY, PGDRIVE_NOTIFY_DAILY, PGDRIVE_NOTIFY_HOURLY, PGDRIVE_NOTIFY_SCHEMA", "When to send email, Slack and webhook messages: on-failure, always or never (as --notify; the per-kind setting wins; default always for daily and schema, on-failure for hourly)."),
    ("PGDRIVE_NOTIFY_EMAIL", "Comma-separated recipients of the report emails (SendGrid and SMTP)."),
    ("SENDGRID_API_KEY, SENDGRID_FROM_EMAIL", "Email through SendGrid's v3 API: a key with the Mail Send permission and a verified sender."),
    ("PGDRIVE_SENDGRID_URL", "SendGrid API base URL (default https://api.sendgrid.com/)."),
    ("PGDRIVE_SMTP_HOST, PGDRIVE_SMTP_PORT, PGDRIVE_SMTP_TLS", "Email through an SMTP server; TLS is starttls (default, port 587), tls (465) or none (25)."),
    ("PGDRIVE_SMTP_USER, PGDRIVE_SMTP_PASSWORD", "SMTP login (both or neither)."),
    ("PGDRIVE_SMTP_FROM", "The SMTP sender (default SENDGRID_FROM_EMAIL)."),
    ("PGDRIVE_SLACK_WEBHOOK_URL", "A Slack incoming webhook."),
    ("PGDRIVE_WEBHOOK_URL", "A URL that receives each report as JSON (POST)."),
    ("PGDRIVE_PING_URL, PGDRIVE_PING_URL_DAILY, PGDRIVE_PING_URL_HOURLY, PGDRIVE_PING_URL_SCHEMA", "Heartbeat URL (healthchecks.io style): <url>/start when a run begins, <url> after a verified success, <url>/fail after a failure."),
    ("PGDRIVE_NOTIFY_RETRY_DELAYS_MS, PGDRIVE_NOTIFY_TIMEOUT_MS", "Waits before the retries of a notification (1000,5000,15000) and each attempt's timeout (30000)."),
    ("PGDRIVE_MAX_AGE", "status: maximum age per kind, as --max-age (default daily=26h,hourly=5h,schema=off)."),
    ("PGDRIVE_PROMETHEUS_FILE", "backup refreshes this node_exporter textfile (as status --prometheus) at the end of every run."),
    ("PGDRIVE_ENV_FILE, PGDRIVE_LOG_FORMAT", "As --env-file and --log-format."),
];

const EXIT_STATUS: &[(&str, &str)] = &[
    ("0", "The backup was stored and verified (other commands: success)."),
    ("1", "The backup failed; nothing new was stored. check: at least one check failed. status: a kind's newest backup is older than its max age, or its last run failed."),
    ("2", "Usage error: the command line could not be parsed."),
    ("3", "The backup is stored and verified, but a follow-up step failed: pruning, the catalog write or a notification."),
    ("65", "restore, verify: the backup is corrupt (size, MD5, SHA-256, gzip stream or dump trailer wrong); nothing was restored."),
    ("75", "Skipped: another run holds this job's advisory lock."),
    ("78", "The configuration is invalid; nothing was attempted."),
];

const SIGNALS: &[(&str, &str)] = &[
    ("SIGINT, SIGTERM, SIGHUP", "The run stops within seconds: the request in flight is cut, pg_dump killed, the upload session cancelled, the ERROR row written and the notification sent (each bounded to 3 s); exit 1. Should that cleanup hang, pgdrive exits 8 s after the signal anyway. A second signal exits at once."),
];

fn section(out: &mut Vec<u8>, title: &str, items: &[(&str, &str)]) {
    out.extend_from_slice(format!(".SH \"{title}\"\n").as_bytes());
    for (name, text) in items {
        out.extend_from_slice(
            format!(
                ".TP\n\\fB{}\\fR\n{}\n",
                roff_escape(name),
                roff_escape(text)
            )
            .as_bytes(),
        );
    }
}

fn roff_escape(s: &str) -> String {
    let s = s.replace('\\', "\\\\").replace('-', "\\-");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

pub fn render() -> Result<String> {
    let mut cmd = Cli::command();
    cmd.build();
    let man = clap_mangen::Man::new(cmd.clone());
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    let visible: Vec<&clap::Command> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        .collect();
    out.extend_from_slice(b".SH COMMANDS\n");
    for sub in &visible {
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        out.extend_from_slice(
            format!(
                ".TP\n\\fBpgdrive {}\\fR\n{}\n",
                sub.get_name(),
                roff_escape(&about)
            )
            .as_bytes(),
        );
    }
    for sub in visible {
        out.extend_from_slice(
            format!(".SH \"COMMAND: {}\"\n", sub.get_name().to_uppercase()).as_bytes(),
        );
        let sub_man =
            clap_mangen::Man::new(sub.clone().bin_name(format!("pgdrive {}", sub.get_name())));
        let mut body = Vec::new();
        sub_man.render_synopsis_section(&mut body)?;
        sub_man.render_description_section(&mut body)?;
        sub_man.render_options_section(&mut body)?;
        // demote the subcommand's sections to subsections of this one
        let body = String::from_utf8_lossy(&body).replace(".SH ", ".SS ");
        out.extend_from_slice(body.as_bytes());
    }
    section(&mut out, "ENVIRONMENT", ENVIRONMENT);
    section(&mut out, "EXIT STATUS", EXIT_STATUS);
    section(&mut out, "SIGNALS", SIGNALS);
    man.render_version_section(&mut out)?;
    Ok(String::from_utf8(out)?)
}
