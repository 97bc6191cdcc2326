//! The man page, generated from the clap definitions and the settings registry (so `--help`, `man pgdrive` and the README
//! cannot drift apart): the main page plus one OPTIONS section per subcommand, and the
//! ENVIRONMENT and EXIT STATUS sections. `man/pgdrive.1` is this output, checked by a test.

use anyhow::Result;

const EXIT_STATUS: &[(&str, &str)] = &[
    ("0", "The backup was stored and verified (other commands: success)."),
    ("1", "The backup failed; nothing new was stored. check: at least one check failed. status: a kind's newest backup is older than its max age, or its last run failed."),
    ("2", "Usage error: the command line could not be parsed."),
    ("3", "The backup is stored and verified, but a follow-up step failed: recording its metadata (properties, manifest), pruning, the catalog write or a notification."),
    ("4", "The backup is stored and verified on some of its targets but not all (Drive and a local directory: one of them failed); the log, the notification and the catalog's backup_copies say which failed and why."),
    ("65", "restore, verify: the backup is corrupt (size, MD5, SHA-256, gzip stream or dump trailer wrong); nothing was restored."),
    ("75", "Skipped: another run holds this job's advisory lock."),
    ("78", "The configuration is invalid; nothing was attempted."),
];

const FILES: &[(&str, &str)] = &[
    ("/etc/pgdrive/pgdrive.toml", "The config file read when no --config (PGDRIVE_CONFIG) names one and it exists: TOML, each key one setting of ENVIRONMENT (see pgdrive.toml.example). An unknown key is a configuration error (78) naming the nearest known key."),
    ("/etc/pgdrive/pgdrive.env", "The env-file of the examples (--env-file): KEY=VALUE lines, mode 0600. An unknown name is a warning naming the nearest known one."),
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
    let mut cmd = crate::cli::command();
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
    let environment = crate::registry::man_environment();
    let environment: Vec<(&str, &str)> = environment
        .iter()
        .map(|(name, text)| (name.as_str(), text.as_str()))
        .collect();
    section(&mut out, "ENVIRONMENT", &environment);
    section(&mut out, "FILES", FILES);
    section(&mut out, "EXIT STATUS", EXIT_STATUS);
    section(&mut out, "SIGNALS", SIGNALS);
    man.render_version_section(&mut out)?;
    Ok(String::from_utf8(out)?)
}
