//! The man page, generated from the clap definitions and the settings registry (so `--help`, `man pgdrive` and the README
//! cannot drift apart): the main page plus one OPTIONS section per subcommand, and the
//! ENVIRONMENT (from the settings registry) and EXIT STATUS (from [`crate::error::EXIT_STATUSES`])
//! sections. `man/pgdrive.1` is this output, checked by a test.

use anyhow::Result;

const FILES: &[(&str, &str)] = &[
    ("/etc/pgdrive/pgdrive.toml", "The config file read when no --config (PGDRIVE_CONFIG) names one and it exists: TOML, each key one setting of ENVIRONMENT (see pgdrive.toml.example). An unknown key is a configuration error (78) naming the nearest known key."),
    ("/etc/pgdrive/pgdrive.env", "The env-file of the examples (--env-file): KEY=VALUE lines, mode 0600. An unknown name is a warning naming the nearest known one. The systemd units read it with EnvironmentFile= instead: its lines are then environment variables, above the config file."),
    ("/lib/systemd/system/pgdrive-backup@.service, pgdrive-job@.service, pgdrive-verify@.service", "The systemd services (Debian package; packaging/systemd in the source): pgdrive backup --kind KIND, backup --job NAME, verify latest --kind KIND, as user pgdrive. Exit 75 counts as success; every other non-zero status is a failure."),
    ("/lib/systemd/system/pgdrive-.service.d/pgdrive.conf", "What every pgdrive-*.service shares: user, env-file, exit statuses, timeouts, sandbox (writable: /var/backups/pgdrive and the node_exporter textfile directory only)."),
    ("/lib/systemd/system/pgdrive-backup@daily.timer, @hourly.timer, @schema.timer, pgdrive-verify@daily.timer", "The schedule of crontab.example; none is enabled by the package."),
    ("/var/backups/pgdrive", "The local backup directory the units may write (PGDRIVE_LOCAL_DIR)."),
    ("/usr/share/doc/pgdrive/examples/", "pgdrive.toml.example and crontab.example."),
];

const SIGNALS: &[(&str, &str)] = &[
    ("SIGINT, SIGTERM, SIGHUP", "The run stops within seconds: the request in flight is cut, pg_dump killed, the upload session cancelled, the ERROR row written and the notification sent (each bounded to 3 s); exit 1. Should that cleanup hang, pgdrive exits 8 s after the signal anyway. A second signal exits at once."),
];

fn section(out: &mut Vec<u8>, title: &str, items: &[(impl AsRef<str>, impl AsRef<str>)]) {
    out.extend_from_slice(format!(".SH \"{title}\"\n").as_bytes());
    for (name, text) in items {
        out.extend_from_slice(
            format!(
                ".TP\n\\fB{}\\fR\n{}\n",
                roff_escape(name.as_ref()),
                roff_escape(text.as_ref())
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
    section(&mut out, "ENVIRONMENT", &crate::registry::man_environment());
    for (title, keys) in [
        ("CONFIG FILE: [targets.NAME]", crate::jobs::TARGET_KEYS),
        ("CONFIG FILE: [jobs.NAME]", crate::jobs::JOB_KEYS),
    ] {
        let items: Vec<(String, String)> = keys
            .iter()
            .map(|k| (format!("{} = {}", k.name, k.shape), k.help.replace('`', "")))
            .collect();
        section(&mut out, title, &items);
    }
    section(&mut out, "FILES", FILES);
    let exit_statuses: Vec<(String, String)> = crate::error::EXIT_STATUSES
        .iter()
        .map(|doc| {
            (
                format!("{} ({})", doc.status.code(), doc.name),
                format!("{} Commands: {}.", doc.meaning, doc.commands),
            )
        })
        .collect();
    section(&mut out, "EXIT STATUS", &exit_statuses);
    section(&mut out, "SIGNALS", SIGNALS);
    man.render_version_section(&mut out)?;
    Ok(String::from_utf8(out)?)
}
