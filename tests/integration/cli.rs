//! The command-line contract: the definitions are consistent, the committed man page and the
//! README's settings tables are what the code generates from the settings registry, every
//! pgdrive line in crontab.example parses, and pgdrive.toml.example reads against the registry.

use clap::{CommandFactory, FromArgMatches};
use pgdrive::cli::Cli;
use pgdrive::registry::{Group, Layer, SETTINGS};

#[test]
fn the_clap_definitions_are_consistent() {
    Cli::command().debug_assert();
    pgdrive::cli::command().debug_assert();
}

/// Each flag's help names the settings the registry says it sets; the flags clap reads from the
/// environment itself use the registry's names.
#[test]
fn flag_help_shows_the_registry_settings() {
    let mut cmd = pgdrive::cli::command();
    cmd.build();
    for s in SETTINGS {
        for flag in s.flags {
            match (s.layer, flag.split_once(" --")) {
                (Layer::Settings, Some((sub, long))) => {
                    let arg = cmd
                        .find_subcommand(sub)
                        .and_then(|sc| sc.get_arguments().find(|a| a.get_long() == Some(long)))
                        .unwrap_or_else(|| panic!("{flag} does not exist"));
                    let help = arg.get_help().unwrap().to_string();
                    assert!(
                        help.contains("[env: ") && help.contains(s.env),
                        "{flag}: {help}"
                    );
                    if let Some(key) = s.key {
                        assert!(help.contains(&format!("config {key}")), "{flag}: {help}");
                    }
                }
                (Layer::Process, None) => {
                    let long = flag.trim_start_matches("--");
                    let arg = cmd
                        .get_arguments()
                        .find(|a| a.get_long() == Some(long))
                        .unwrap_or_else(|| panic!("{flag} does not exist"));
                    assert_eq!(
                        arg.get_env().and_then(|e| e.to_str()),
                        Some(s.env),
                        "{flag}"
                    );
                }
                other => panic!("{}: {flag}: {other:?}", s.env),
            }
        }
    }
}

#[test]
fn the_readme_settings_tables_are_the_registry() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for group in [Group::General, Group::Notify] {
        let name = group.name();
        let start = format!("<!-- settings:{name} (generated from src/registry.rs: `pgdrive generate-settings-table {name}`) -->\n");
        let end = format!("<!-- /settings:{name} -->");
        let committed = readme
            .split_once(&start)
            .and_then(|(_, rest)| rest.split_once(&end))
            .map(|(table, _)| table)
            .unwrap_or_else(|| panic!("README lacks the {name} settings table markers"));
        assert!(
            committed == pgdrive::registry::markdown_table(group),
            "README's {name} settings table is stale: replace it with the output of `cargo run -q -- generate-settings-table {name}`"
        );
    }
    let start = "<!-- settings:jobs (generated from src/jobs.rs: `pgdrive generate-settings-table jobs`) -->\n";
    let committed = readme
        .split_once(start)
        .and_then(|(_, rest)| rest.split_once("<!-- /settings:jobs -->"))
        .map(|(table, _)| table)
        .expect("README lacks the jobs table markers");
    assert!(
        committed == pgdrive::jobs::markdown_tables(),
        "README's jobs and targets tables are stale: replace them with the output of `cargo run -q -- generate-settings-table jobs`"
    );
    // and every setting is in one of them
    for s in SETTINGS {
        assert!(readme.contains(&format!("| `{}` |", s.env)), "{}", s.env);
    }
}

/// README's exit table, the man page's EXIT STATUS and `--help` are the one table in src/error.rs.
#[test]
fn the_exit_status_tables_are_the_one_in_error_rs() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start =
        "<!-- exit-status (generated from src/error.rs: `pgdrive generate-exit-table`) -->\n";
    let committed = readme
        .split_once(start)
        .and_then(|(_, rest)| rest.split_once("<!-- /exit-status -->"))
        .map(|(table, _)| table)
        .expect("README lacks the exit-status table markers");
    assert!(
        committed == pgdrive::error::markdown_table(),
        "README's exit table is stale: replace it with the output of `cargo run -q -- generate-exit-table`"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgdrive"))
        .arg("generate-exit-table")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), committed);

    let help = pgdrive::cli::command().render_long_help().to_string();
    let man = pgdrive::manpage::render().unwrap();
    let man_exit = man
        .split_once(".SH \"EXIT STATUS\"")
        .and_then(|(_, rest)| rest.split_once(".SH "))
        .map(|(section, _)| section)
        .expect("the man page has an EXIT STATUS section");
    for doc in pgdrive::error::EXIT_STATUSES {
        let code = doc.status.code();
        assert!(
            help.contains(&format!("\n  {code:<4}{} ({}):", doc.name, doc.commands)),
            "--help lacks exit status {code}:\n{help}"
        );
        assert!(
            man_exit.contains(&format!(
                "\\fB{code} ({})\\fR",
                doc.name.replace('-', "\\-")
            )),
            "the man page lacks exit status {code}"
        );
        assert!(
            committed.contains(&format!("\n| {code} | {} |", doc.name)),
            "{code}"
        );
    }
    // and the table has every status the code has, each once
    let codes: Vec<u8> = pgdrive::error::EXIT_STATUSES
        .iter()
        .map(|d| d.status.code())
        .collect();
    assert_eq!(codes, [0, 1, 2, 3, 4, 65, 69, 75, 78]);
}

#[test]
fn the_example_config_file_reads_against_the_registry() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/pgdrive.toml.example"))
            .unwrap();
    let contents = pgdrive::config_file::parse(&text).unwrap_or_else(|e| panic!("{e:?}"));
    assert!(contents.values.contains_key("DATABASE_URL"));
    // every key of [targets.*] and [jobs.*] is shown in use
    for (table, keys) in [
        ("targets", pgdrive::jobs::TARGET_KEYS),
        ("jobs", pgdrive::jobs::JOB_KEYS),
    ] {
        for key in keys {
            let shown = text.lines().any(|l| {
                l.trim_start_matches("# ")
                    .starts_with(&format!("{} = ", key.name))
            });
            assert!(
                shown,
                "pgdrive.toml.example shows no {table} key {:?}",
                key.name
            );
        }
    }
    assert_eq!(contents.declared.jobs.len(), 3);
    assert_eq!(contents.declared.targets.len(), 4);
    // the commented-out lines are valid keys too, and together they show every setting
    let uncommented: String = text
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest)
                if rest
                    .split_once(" = ")
                    .is_some_and(|(k, _)| !k.contains(' ')) =>
            {
                rest
            }
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let all = pgdrive::config_file::parse(&uncommented)
        .unwrap_or_else(|e| panic!("{e:?}"))
        .values;
    for s in SETTINGS.iter().filter(|s| s.layer == Layer::Settings) {
        assert!(
            all.contains_key(s.env),
            "pgdrive.toml.example lacks {:?}",
            s.key
        );
    }
}

#[test]
fn the_man_page_is_fresh() {
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/man/pgdrive.1")).unwrap();
    let generated = pgdrive::manpage::render().unwrap();
    assert!(
        committed == generated,
        "man/pgdrive.1 is stale: regenerate it with `cargo run -q -- generate-man > man/pgdrive.1`"
    );
    for section in ["EXIT STATUS", "ENVIRONMENT", "COMMAND: BACKUP"] {
        assert!(generated.contains(section), "{section}");
    }
}

#[test]
fn every_crontab_example_line_parses() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/crontab.example")).unwrap();
    let mut lines = 0;
    for line in text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && l.contains("pgdrive "))
    {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let command: Vec<&str> = fields[5..]
            .iter()
            .take_while(|w| !w.starts_with(">>") && !w.starts_with("2>"))
            .copied()
            .collect();
        assert!(command[0].ends_with("/pgdrive"), "{line}");
        pgdrive::cli::command()
            .try_get_matches_from(&command)
            .and_then(|m| Cli::from_arg_matches(&m))
            .unwrap_or_else(|e| panic!("{line}\n{e}"));
        lines += 1;
    }
    assert!(
        lines >= 3,
        "crontab.example should schedule daily, hourly and schema"
    );
}
