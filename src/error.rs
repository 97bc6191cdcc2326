//! Exit statuses and error classification: the one place where an error becomes a process exit
//! status and, where one helps, a `hint:` line, and the one table of documented statuses
//! ([`EXIT_STATUSES`]) that `--help`, the man page and the README are generated from.
//!
//! Domain code returns `anyhow::Error` with context. Errors that decide the exit status carry a
//! [`Classified`] somewhere in their chain; typed protocol errors ([`DriveError`],
//! [`TokenError`], `postgres::Error`, `ureq::Error`, `std::io::Error`) carry the facts the status
//! and the hint are computed from. Nothing else in the program maps errors to numbers or prints
//! them.

use std::fmt;

use crate::drive::auth::TokenError;
use crate::drive::DriveError;

/// The documented exit statuses; each is described once, in [`EXIT_STATUSES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// The backup was stored and verified, and every follow-up step succeeded.
    Ok = 0,
    /// The backup (or the command) failed; nothing new is stored.
    Failed = 1,
    /// The command line could not be parsed.
    Usage = 2,
    /// The backup is stored and verified, but recording its metadata, pruning, the catalog write
    /// or a notification failed.
    FollowUpFailed = 3,
    /// A job with several targets: the backup is stored and verified on at least one target but
    /// not on all of them (each target's outcome is in the log, the notification and the
    /// catalog's `backup_copies`).
    PartiallyStored = 4,
    /// restore/verify: the backup is corrupt (size, checksum, gzip stream or dump trailer wrong);
    /// nothing was restored. Distinct from 1 because it needs a person, not a retry: a stored
    /// backup is bad. (65 is sysexits' EX_DATAERR, like 75 and 78.)
    Corrupt = 65,
    /// A transient failure: storage (or the database server) could not be reached, or kept
    /// answering "try later", after every retry; nothing new is stored. Schedulers may retry
    /// this one; a 1 means a broken backup or setup that needs a person. (sysexits' EX_UNAVAILABLE.)
    Unavailable = 69,
    /// Skipped: another run holds this job's advisory lock.
    Locked = 75,
    /// The configuration is invalid; nothing was attempted.
    Config = 78,
}

impl ExitStatus {
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Nothing (or not everything) that was asked for is stored.
    pub fn is_failure(self) -> bool {
        !matches!(
            self,
            ExitStatus::Ok | ExitStatus::FollowUpFailed | ExitStatus::Locked
        )
    }

    /// The status of several runs (a job's databases): the one that most needs a person.
    pub fn worst(statuses: &[ExitStatus]) -> ExitStatus {
        // most severe first
        const ORDER: [ExitStatus; 9] = [
            ExitStatus::Config,
            ExitStatus::Usage,
            ExitStatus::Corrupt,
            ExitStatus::Failed,
            ExitStatus::Unavailable,
            ExitStatus::PartiallyStored,
            ExitStatus::FollowUpFailed,
            ExitStatus::Locked,
            ExitStatus::Ok,
        ];
        ORDER
            .into_iter()
            .find(|s| statuses.contains(s))
            .unwrap_or(ExitStatus::Ok)
    }
}

/// Prints a failed command's error as `pgdrive: error: …` plus its `hint:` line (a JSON log
/// line with `--log-format json`); returns its exit status. The one place errors are printed.
pub fn print(err: &anyhow::Error) -> ExitStatus {
    let status = classify(err);
    let message = render(err);
    let hint = hint(err).map(|h| crate::redact::scrub(&h));
    if crate::log::is_json() {
        let mut fields = vec![("exit_status", status.code().to_string())];
        fields.extend(hint.map(|h| ("hint", h)));
        crate::log::error(&format!("pgdrive: error: {message}"), &fields);
    } else {
        eprintln!("pgdrive: error: {message}");
        if let Some(hint) = hint {
            eprintln!("hint: {hint}");
        }
    }
    status
}

/// One row of the exit-status table.
pub struct ExitDoc {
    pub status: ExitStatus,
    pub name: &'static str,
    /// What it means, in one paragraph.
    pub meaning: &'static str,
    /// The commands that exit with it.
    pub commands: &'static str,
}

/// Every exit status, documented once: `--help` ([`help_text`]), the man page's EXIT STATUS and
/// README's exit table ([`markdown_table`], `pgdrive generate-exit-table`) are made from this.
pub const EXIT_STATUSES: &[ExitDoc] = &[
    ExitDoc {
        status: ExitStatus::Ok,
        name: "ok",
        meaning: "The command did what was asked: the backup was stored and verified on every target and every follow-up step succeeded (check: no check failed; status: every kind is fresh).",
        commands: "all",
    },
    ExitDoc {
        status: ExitStatus::Failed,
        name: "failed",
        meaning: "It failed in a way a retry will not fix (a stall, a signal, pg_dump failing on an SQL error, Drive refusing for good); nothing new was stored, and a backup's ERROR row records why where the catalog could be reached. check: a check failed; status: a kind's newest backup is older than its max age, or its last run failed; notify-test: a channel failed.",
        commands: "all",
    },
    ExitDoc {
        status: ExitStatus::Usage,
        name: "usage",
        meaning: "The command line could not be parsed.",
        commands: "all",
    },
    ExitDoc {
        status: ExitStatus::FollowUpFailed,
        name: "follow-up failed",
        meaning: "The backup is stored and verified, but a follow-up step failed: recording its metadata (properties, manifest), the catalog write, pruning, the metrics file or a notification.",
        commands: "backup",
    },
    ExitDoc {
        status: ExitStatus::PartiallyStored,
        name: "partially stored",
        meaning: "A backup with several targets (Drive and a local directory, or a job's targets): it is stored and verified on at least one target but not on all. The catalog row is SUCCESS with a FAILED copy in backup_copies for each target that did not store it; the notification and the last log line (outcome=stored on 1 of 2 targets, failed_targets=...) name them and say why. Only the targets that stored it are pruned; when every target failed, the run fails instead.",
        commands: "backup",
    },
    ExitDoc {
        status: ExitStatus::Corrupt,
        name: "corrupt",
        meaning: "The backup is corrupt (stored size, MD5, SHA-256, compressed stream, dump trailer or, for verify --restore-test, the row counts wrong); nothing was restored. It needs a person, not a retry: restore an older backup.",
        commands: "restore, verify",
    },
    ExitDoc {
        status: ExitStatus::Unavailable,
        name: "unavailable",
        meaning: "A transient failure: the storage, Google's token endpoint or the database server could not be reached (connection refused, reset or timed out; the server starting up, shutting down or out of connection slots) or kept answering \"try later\" (HTTP 5xx, 429, rate limits) after every retry; nothing new was stored. A scheduler may retry it.",
        commands: "backup, restore, verify, list, status, migrate, catalog rebuild",
    },
    ExitDoc {
        status: ExitStatus::Locked,
        name: "locked",
        meaning: "Skipped: another run of the same job (kind and database) holds its advisory lock; a WARN line names the holder. Nothing was uploaded.",
        commands: "backup",
    },
    ExitDoc {
        status: ExitStatus::Config,
        name: "config",
        meaning: "The configuration is invalid (a missing or malformed setting, a bad key, an unknown folder or table, a missing or too old pg_dump, credentials refused for good, a service account without storage, the Drive API not enabled for the credentials' Cloud project, a token whose scopes do not cover Drive); nothing was attempted.",
        commands: "all",
    },
];

/// The exit-status table as `--help` shows it (after the options), wrapped for a terminal.
pub fn help_text() -> String {
    const WIDTH: usize = 96;
    const INDENT: &str = "      ";
    let mut out = String::from("Exit status:\n");
    for doc in EXIT_STATUSES {
        let text = format!("{} ({}): {}", doc.name, doc.commands, doc.meaning);
        let mut line = format!("  {:<4}", doc.status.code());
        let mut empty = true;
        for word in text.split_whitespace() {
            if !empty && line.len() + 1 + word.len() > WIDTH {
                out.push_str(&line);
                out.push('\n');
                line = INDENT.to_string();
                empty = true;
            }
            if !empty {
                line.push(' ');
            }
            line.push_str(word);
            empty = false;
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// The exit-status table in Markdown, as README carries it between `<!-- exit-status -->`
/// markers.
pub fn markdown_table() -> String {
    let mut out = String::from("| Status | Name | Meaning | Commands |\n|---|---|---|---|\n");
    for doc in EXIT_STATUSES {
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            doc.status.code(),
            doc.name,
            doc.meaning,
            doc.commands
        ));
    }
    out
}

/// An error that decides the exit status, optionally with a hint for the operator.
#[derive(Debug)]
pub struct Classified {
    pub status: ExitStatus,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for Classified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Classified {}

/// A configuration error (exit 78), reported before anything is attempted. There is no form
/// without a hint: whoever meets a 78 must be told what to change.
pub fn config_error_hint(message: impl Into<String>, hint: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Classified {
        status: ExitStatus::Config,
        message: message.into(),
        hint: Some(hint.into()),
    })
}

/// A failure (exit 1) with a hint.
pub fn failure_hint(message: impl Into<String>, hint: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Classified {
        status: ExitStatus::Failed,
        message: message.into(),
        hint: Some(hint.into()),
    })
}

/// A failure with a hint whose exit status is the one its `cause` maps to ([`classify`]: 69 for a
/// transient cause, else 1), for a message that replaces the cause's own.
pub fn failure_from(
    cause: &anyhow::Error,
    message: impl Into<String>,
    hint: impl Into<String>,
) -> anyhow::Error {
    let status = match classify(cause) {
        ExitStatus::Unavailable => ExitStatus::Unavailable,
        _ => ExitStatus::Failed,
    };
    anyhow::Error::new(Classified {
        status,
        message: message.into(),
        hint: Some(hint.into()),
    })
}

/// A corrupt backup (exit 65): checksums, gzip stream or dump trailer do not match.
pub fn corrupt(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Classified {
        status: ExitStatus::Corrupt,
        message: format!("the backup is corrupt: {}", message.into()),
        hint: Some("restore an older backup (`pgdrive list`), and run `pgdrive verify --all` to find out which backups are intact".into()),
    })
}

/// The exit status an error maps to: the outermost [`Classified`] in its chain decides; typed
/// errors that mean "the setup is wrong" map to 78, those that mean "try later" (see
/// [`is_transient`]) to 69; everything else is a failure (1).
pub fn classify(err: &anyhow::Error) -> ExitStatus {
    for cause in err.chain() {
        if let Some(c) = cause.downcast_ref::<Classified>() {
            return c.status;
        }
        if let Some(t) = cause.downcast_ref::<TokenError>() {
            if t.is_configuration_problem() {
                return ExitStatus::Config;
            }
        }
        if let Some(d) = cause.downcast_ref::<DriveError>() {
            if d.is_configuration_problem() {
                return ExitStatus::Config;
            }
        }
        if is_transient(cause) {
            // a run stopped by a signal or the stall watchdog failed for that reason, whatever
            // the request it cut reported
            return if crate::signals::stopping() {
                ExitStatus::Failed
            } else {
                ExitStatus::Unavailable
            };
        }
    }
    ExitStatus::Failed
}

/// Whether this one error (not its causes) says "unreachable, or busy: try later": Drive or the
/// token endpoint answering 5xx, 429 or a rate limit; a connection refused, reset or timed out
/// (ureq's transport errors, `std::io` error kinds); a database server that does not accept
/// connections now (SQLSTATE 57P03 cannot_connect_now, 53300 too_many_connections).
fn is_transient(cause: &(dyn std::error::Error + 'static)) -> bool {
    use postgres::error::SqlState;
    use std::io::ErrorKind;
    if let Some(d) = cause.downcast_ref::<DriveError>() {
        return d.is_transient();
    }
    if let Some(t) = cause.downcast_ref::<TokenError>() {
        return t.is_transient();
    }
    if let Some(u) = cause.downcast_ref::<ureq::Error>() {
        return crate::drive::retry::classify_transport(u) == crate::drive::retry::Verdict::Retry;
    }
    if let Some(pg) = cause.downcast_ref::<postgres::Error>() {
        return pg.code().is_some_and(|c| {
            *c == SqlState::CANNOT_CONNECT_NOW || *c == SqlState::TOO_MANY_CONNECTIONS
        });
    }
    if let Some(io) = cause.downcast_ref::<std::io::Error>() {
        // an io::Error made from another error hides that one from the chain (its `source` is
        // the inner error's source)
        return matches!(
            io.kind(),
            ErrorKind::ConnectionRefused
                | ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::NotConnected
                | ErrorKind::TimedOut
                | ErrorKind::HostUnreachable
                | ErrorKind::NetworkUnreachable
                | ErrorKind::NetworkDown
        ) || io.get_ref().is_some_and(|inner| is_transient(inner));
    }
    false
}

/// The hint for an error, if any part of its chain has one; a transient failure (69) always has
/// one.
pub fn hint(err: &anyhow::Error) -> Option<String> {
    cause_hint(err).or_else(|| {
        (classify(err) == ExitStatus::Unavailable).then(|| {
            "a transient failure (exit 69): the next scheduled run may well succeed; if it keeps \
             happening, check the network to the storage and the database, and Google's status \
             page (www.google.com/appsstatus)"
                .to_string()
        })
    })
}

/// The hint a part of the error's chain carries, without [`hint`]'s fallback for transient
/// failures (for callers with a better one).
pub fn cause_hint(err: &anyhow::Error) -> Option<String> {
    err.chain().find_map(|cause| {
        if let Some(c) = cause.downcast_ref::<Classified>() {
            return c.hint.clone();
        }
        if let Some(t) = cause.downcast_ref::<TokenError>() {
            return t.hint();
        }
        if let Some(d) = cause.downcast_ref::<DriveError>() {
            return d.hint();
        }
        if let Some(pg) = cause.downcast_ref::<postgres::Error>() {
            return postgres_hint(pg);
        }
        None
    })
}

pub fn postgres_hint(err: &postgres::Error) -> Option<String> {
    use postgres::error::SqlState;
    let code = err.code()?;
    let hint = if *code == SqlState::INVALID_PASSWORD
        || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
    {
        "check the user and password in DATABASE_URL (or the PGPASSFILE it relies on)"
    } else if *code == SqlState::INVALID_CATALOG_NAME {
        "the database in DATABASE_URL does not exist on that server; check its name"
    } else if *code == SqlState::INSUFFICIENT_PRIVILEGE {
        "the database user lacks a privilege pgdrive needs; see README \"Database permissions\""
    } else if *code == SqlState::CANNOT_CONNECT_NOW {
        "the server is starting up, shutting down or in recovery: the next run will retry (exit 69)"
    } else if *code == SqlState::TOO_MANY_CONNECTIONS {
        "the server has no free connection slot: the next run will retry (exit 69); if it keeps \
         happening, raise max_connections or find what holds the connections (pg_stat_activity)"
    } else {
        return None;
    };
    Some(hint.to_string())
}

/// The one-line rendering of an error chain (as `{:#}`, causes joined by ": "), with a
/// PostgreSQL error in the server's own words (see [`postgres_message`]) and any secret-looking
/// URL credentials removed as a last line of defence.
pub fn render(err: &anyhow::Error) -> String {
    let mut parts = Vec::new();
    let mut chain = err.chain();
    while let Some(cause) = chain.next() {
        match cause.downcast_ref::<postgres::Error>() {
            Some(pg) if pg.as_db_error().is_some() => {
                parts.push(postgres_message(pg));
                chain.next(); // its source: the server's error, just rendered
            }
            _ => parts.push(cause.to_string()),
        }
    }
    crate::redact::scrub(&parts.join(": ").replace('\n', " "))
}

/// A PostgreSQL error as the server put it, on one line: `ERROR: permission denied for table t
/// (SQLSTATE 42501; detail: …; server hint: …)`. The postgres crate's own Display says only
/// "db error".
pub fn postgres_message(err: &postgres::Error) -> String {
    let Some(db) = err.as_db_error() else {
        return err.to_string();
    };
    let mut facts = vec![format!("SQLSTATE {}", db.code().code())];
    facts.extend(db.detail().map(|d| format!("detail: {d}")));
    facts.extend(db.hint().map(|h| format!("server hint: {h}")));
    format!(
        "{}: {} ({})",
        db.severity(),
        db.message(),
        facts.join("; ").replace('\n', " ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_map_to_78_even_under_context() {
        let err = config_error_hint("bad", "fix it").context("loading configuration");
        assert_eq!(classify(&err), ExitStatus::Config);
    }

    #[test]
    fn unclassified_errors_are_failures() {
        let err = anyhow::anyhow!("boom").context("uploading");
        assert_eq!(classify(&err), ExitStatus::Failed);
        assert_eq!(hint(&err), None);
    }

    #[test]
    fn hints_are_found_anywhere_in_the_chain() {
        let err = config_error_hint("no folder", "set GOOGLE_DRIVE_FOLDER_ID").context("checking");
        assert_eq!(hint(&err).as_deref(), Some("set GOOGLE_DRIVE_FOLDER_ID"));
    }

    #[test]
    fn every_token_refusal_that_exits_78_has_a_hint() {
        let codes = [
            "invalid_grant",
            "unauthorized_client",
            "invalid_client",
            "invalid_scope",
            "access_denied",
            "invalid_request",
            "temporarily_unavailable",
            "server_error",
        ];
        for code in codes {
            for (user_credentials, impersonating) in [(false, false), (true, false), (false, true)]
            {
                let err = anyhow::Error::new(TokenError {
                    status: 400,
                    error: code.into(),
                    description: String::new(),
                    user_credentials,
                    impersonating,
                })
                .context("getting an access token");
                if classify(&err) == ExitStatus::Config {
                    assert!(hint(&err).is_some(), "{code} exits 78 without a hint");
                }
            }
        }
    }

    #[test]
    fn drive_reasons_map_to_their_exit_status_with_a_hint() {
        let cases = [
            ("accessNotConfigured", ExitStatus::Config),
            ("insufficientPermissions", ExitStatus::Config),
            ("teamDriveFileLimitExceeded", ExitStatus::Failed),
            ("downloadQuotaExceeded", ExitStatus::Failed),
            ("cannotDownloadAbusiveFile", ExitStatus::Failed),
        ];
        for (reason, status) in cases {
            let err = anyhow::Error::new(DriveError {
                status: 403,
                reason: Some(reason.into()),
                message: String::new(),
                retry_after: None,
            })
            .context("calling Drive");
            assert_eq!(classify(&err), status, "{reason}");
            assert!(hint(&err).is_some(), "{reason} has no hint");
        }
    }

    /// Every variant is in the table, once, in order. A new variant fails to compile in the
    /// match below until it is listed in `all`, and then this test until it is documented.
    #[test]
    fn every_exit_status_is_documented_once() {
        use ExitStatus::*;
        let all = [
            Ok,
            Failed,
            Usage,
            FollowUpFailed,
            PartiallyStored,
            Corrupt,
            Unavailable,
            Locked,
            Config,
        ];
        for s in all {
            match s {
                Ok | Failed | Usage | FollowUpFailed | PartiallyStored | Corrupt | Unavailable
                | Locked | Config => {}
            }
        }
        let documented: Vec<ExitStatus> = EXIT_STATUSES.iter().map(|d| d.status).collect();
        assert_eq!(documented, all);
        let codes: Vec<u8> = all.iter().map(|s| s.code()).collect();
        assert_eq!(codes, vec![0, 1, 2, 3, 4, 65, 69, 75, 78]);
        for doc in EXIT_STATUSES {
            assert!(!doc.meaning.contains('\n') && !doc.meaning.contains('|'));
            assert!(!doc.name.is_empty() && !doc.commands.is_empty());
        }
    }

    fn drive_error(status: u16, reason: Option<&str>) -> anyhow::Error {
        anyhow::Error::new(DriveError {
            status,
            reason: reason.map(str::to_string),
            message: "m".into(),
            retry_after: None,
        })
        .context("uploading at offset 262144 (gave up after 8 retries)")
        .context("starting the upload to Drive folder f")
    }

    #[test]
    fn drive_answers_that_mean_try_later_exit_69_and_the_rest_do_not() {
        let cases = [
            (503, Some("backendError"), ExitStatus::Unavailable),
            (500, None, ExitStatus::Unavailable),
            (502, None, ExitStatus::Unavailable),
            (429, Some("rateLimitExceeded"), ExitStatus::Unavailable),
            (403, Some("rateLimitExceeded"), ExitStatus::Unavailable),
            (403, Some("userRateLimitExceeded"), ExitStatus::Unavailable),
            (403, Some("backendError"), ExitStatus::Unavailable),
            (403, Some("dailyLimitExceeded"), ExitStatus::Unavailable),
            (403, Some("storageQuotaExceeded"), ExitStatus::Failed),
            (403, Some("insufficientFilePermissions"), ExitStatus::Failed),
            (403, Some("insufficientPermissions"), ExitStatus::Config),
            (403, Some("accessNotConfigured"), ExitStatus::Config),
            (401, Some("authError"), ExitStatus::Failed),
            (400, Some("badRequest"), ExitStatus::Failed),
            (404, Some("notFound"), ExitStatus::Failed),
        ];
        for (status, reason, want) in cases {
            let err = drive_error(status, reason);
            assert_eq!(classify(&err), want, "{status} {reason:?}");
            if want == ExitStatus::Unavailable {
                assert!(hint(&err).is_some(), "{status} {reason:?} has no hint");
            }
        }
    }

    #[test]
    fn a_token_endpoint_that_is_down_exits_69_a_refusal_78() {
        let token = |status: u16, error: &str| {
            anyhow::Error::new(TokenError {
                status,
                error: error.into(),
                description: String::new(),
                user_credentials: false,
                impersonating: false,
            })
            .context("obtaining a Google access token")
        };
        assert_eq!(
            classify(&token(503, "unknown_error")),
            ExitStatus::Unavailable
        );
        assert_eq!(classify(&token(429, "rate_limit")), ExitStatus::Unavailable);
        assert_eq!(
            classify(&token(400, "temporarily_unavailable")),
            ExitStatus::Unavailable
        );
        assert_eq!(classify(&token(400, "invalid_grant")), ExitStatus::Config);
        assert_eq!(classify(&token(400, "unknown_error")), ExitStatus::Failed);
    }

    /// A port on this host where nothing listens: bound, then released.
    fn closed_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }

    #[test]
    fn a_refused_http_connection_exits_69_as_ureq_reports_it() {
        let port = closed_port();
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(std::time::Duration::from_secs(5)))
            .build()
            .new_agent();
        let e = agent
            .get(&format!("http://127.0.0.1:{port}/drive/v3/files"))
            .call()
            .unwrap_err();
        let err = anyhow::Error::new(e).context("listing Drive folder f (gave up after 8 retries)");
        assert_eq!(classify(&err), ExitStatus::Unavailable, "{err:#}");
        assert!(hint(&err).is_some());
    }

    #[test]
    fn an_http_server_that_never_answers_exits_69_as_a_timeout() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(std::time::Duration::from_millis(200)))
            .build()
            .new_agent();
        let e = agent
            .get(&format!("http://127.0.0.1:{port}/"))
            .call()
            .unwrap_err();
        assert!(matches!(e, ureq::Error::Timeout(_)), "{e:?}");
        assert_eq!(
            classify(&anyhow::Error::new(e).context("calling Drive")),
            ExitStatus::Unavailable
        );
        drop(listener);
    }

    #[test]
    fn a_database_port_where_nothing_listens_exits_69_under_the_connect_message() {
        let port = closed_port();
        let e = postgres::Config::new()
            .host("127.0.0.1")
            .port(port)
            .user("postgres")
            .dbname("postgres")
            .connect(postgres::NoTls)
            .err()
            .expect("nothing listens there");
        let err = anyhow::Error::new(e);
        assert_eq!(classify(&err), ExitStatus::Unavailable, "{err:#}");
        let info = crate::pgconn::ConnInfo::parse(&format!(
            "postgres://postgres@127.0.0.1:{port}/postgres"
        ))
        .unwrap();
        let reported = crate::server::connect_failure(&info, "the database", err);
        assert_eq!(classify(&reported), ExitStatus::Unavailable);
        assert!(
            hint(&reported)
                .unwrap()
                .starts_with("check that the server is running"),
            "{:?}",
            hint(&reported)
        );
        assert!(render(&reported).starts_with("cannot connect to the database at"));
    }

    #[test]
    fn io_errors_of_the_network_exit_69_others_1() {
        let refused = std::net::TcpStream::connect(("127.0.0.1", closed_port())).unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
        let err = anyhow::Error::new(refused).context("reading the download");
        assert_eq!(classify(&err), ExitStatus::Unavailable);
        let missing = std::fs::File::open("/nonexistent/pgdrive").unwrap_err();
        assert_eq!(
            classify(&anyhow::Error::new(missing).context("opening")),
            ExitStatus::Failed
        );
        let pipe = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "psql stopped reading");
        assert_eq!(classify(&anyhow::Error::new(pipe)), ExitStatus::Failed);
    }

    /// A download gives up inside `Read::read`, so the Drive error travels in an io::Error (whose
    /// `source` skips the error it wraps); it is still found.
    #[test]
    fn a_transient_error_inside_an_io_error_is_found() {
        let gave_up = drive_error(503, Some("backendError"));
        let err =
            anyhow::Error::new(std::io::Error::other(gave_up)).context("downloading the backup");
        assert_eq!(classify(&err), ExitStatus::Unavailable, "{err:#}");
        let refused = std::net::TcpStream::connect(("127.0.0.1", closed_port())).unwrap_err();
        let err = anyhow::Error::new(std::io::Error::other(refused));
        assert_eq!(classify(&err), ExitStatus::Unavailable);
    }

    #[test]
    fn stalls_corruption_and_sql_errors_are_not_transient() {
        // what `signals::check_run` returns after a stall cut a request (see `classify` for a cut
        // request whose own error surfaces)
        let stalled = failure_hint("stalled: no bytes for 300 s", "h").context("uploading");
        assert_eq!(classify(&stalled), ExitStatus::Failed);
        assert_eq!(
            classify(&corrupt("SHA-256 mismatch").context("verifying")),
            ExitStatus::Corrupt
        );
        let sql = anyhow::anyhow!(
            "pg_dump exited with status 1: pg_dump: error: query failed: ERROR: permission denied for table t"
        );
        assert_eq!(classify(&sql), ExitStatus::Failed);
    }
}
