//! The command-line contract: the definitions are consistent, the committed man page is what
//! the code generates, and every pgdrive line in crontab.example parses.

use clap::{CommandFactory, Parser};
use pgdrive::cli::Cli;

#[test]
fn the_clap_definitions_are_consistent() {
    Cli::command().debug_assert();
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
        Cli::try_parse_from(&command).unwrap_or_else(|e| panic!("{line}\n{e}"));
        lines += 1;
    }
    assert!(
        lines >= 3,
        "crontab.example should schedule daily, hourly and schema"
    );
}

#[test]
fn the_exit_status_table_is_in_the_help_and_the_readme() {
    let help = Cli::command().render_long_help().to_string();
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for code in ["75", "78"] {
        assert!(
            help.contains(&format!("  {code}  ")),
            "--help lacks exit status {code}"
        );
        assert!(
            readme.contains(&format!("| {code} |")),
            "README lacks exit status {code}"
        );
    }
}
