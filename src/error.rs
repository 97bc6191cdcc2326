//! Exit statuses and error classification: the one place where an error becomes a process exit
//! status and, where one helps, a `hint:` line.
//!
//! Domain code returns `anyhow::Error` with context. Errors that decide the exit status carry a
//! [`Classified`] somewhere in their chain; typed protocol errors ([`DriveError`],
//! [`TokenError`]) carry the facts a hint is computed from. Nothing else in the program maps
//! errors to numbers or prints them.

use std::fmt;

use crate::drive::auth::TokenError;
use crate::drive::DriveError;

/// The documented exit statuses (README "Exit status", man page EXIT STATUS).
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

/// A corrupt backup (exit 65): checksums, gzip stream or dump trailer do not match.
pub fn corrupt(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Classified {
        status: ExitStatus::Corrupt,
        message: format!("the backup is corrupt: {}", message.into()),
        hint: Some("restore an older backup (`pgdrive list`), and run `pgdrive verify --all` to find out which backups are intact".into()),
    })
}

/// The exit status an error maps to: the outermost [`Classified`] in its chain decides; typed
/// errors that mean "the setup is wrong" map to 78; everything else is a failure (1).
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
    }
    ExitStatus::Failed
}

/// The hint for an error, if any part of its chain has one.
pub fn hint(err: &anyhow::Error) -> Option<String> {
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

    #[test]
    fn documented_codes() {
        let codes: Vec<u8> = [
            ExitStatus::Ok,
            ExitStatus::Failed,
            ExitStatus::Usage,
            ExitStatus::FollowUpFailed,
            ExitStatus::Corrupt,
            ExitStatus::Locked,
            ExitStatus::Config,
        ]
        .iter()
        .map(|s| s.code())
        .collect();
        assert_eq!(codes, vec![0, 1, 2, 3, 65, 75, 78]);
    }
}
