//! The packaging: the systemd units of `packaging/systemd` checked by systemd's own tools
//! (`systemd-analyze verify` and `security --offline`), their commands against the CLI and their
//! timers against crontab.example's schedule, and the Debian package `cargo deb` builds from the
//! binary these tests run, as dpkg sees it and as it would be installed.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use clap::FromArgMatches;
use pgdrive::cli::Cli;

use crate::common::*;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const UNIT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/systemd");
/// The drop-in systemd applies to every `pgdrive-*.service`: user, settings, exit statuses,
/// timeouts and sandbox.
const SHARED_DROP_IN: &str = "pgdrive-.service.d/pgdrive.conf";

/// Every unit an installation enables or starts: each timer, the service instances they start,
/// and a named job.
const INSTANCES: &[&str] = &[
    "pgdrive-backup@daily.timer",
    "pgdrive-backup@hourly.timer",
    "pgdrive-backup@schema.timer",
    "pgdrive-verify@daily.timer",
    "pgdrive-backup@daily.service",
    "pgdrive-backup@hourly.service",
    "pgdrive-backup@schema.service",
    "pgdrive-verify@daily.service",
    "pgdrive-job@nightly.service",
];

fn systemd_analyze() -> Option<PathBuf> {
    installed_tool("systemd-analyze", "apt-get install -y systemd")
}

/// A filesystem root for systemd-analyze's `--root`: the host's own units (the targets ours
/// order against) in /usr/lib/systemd/system, the binary these tests run as /usr/bin/pgdrive,
/// and the repository's units copied to `units_at` (e.g. `etc/systemd/system`), then changed by
/// `edit` (a test's attack on them).
fn unit_root(units_at: &str, edit: impl FnOnce(&Path)) -> TempDir {
    let root = TempDir::new("unit_root");
    copy_tree(
        Path::new("/usr/lib/systemd/system"),
        &root.path().join("usr/lib/systemd/system"),
    );
    let units = root.path().join(units_at);
    copy_tree(Path::new(UNIT_DIR), &units);
    fs::create_dir_all(root.path().join("usr/bin")).unwrap();
    link_or_copy(
        Path::new(env!("CARGO_BIN_EXE_pgdrive")),
        &root.path().join("usr/bin/pgdrive"),
    );
    edit(&units);
    root
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            copy_tree(&entry.path(), &target);
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(entry.path()).unwrap(), &target).unwrap();
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A hard link where possible (the debug binary is over 100 MB), else a copy.
fn link_or_copy(from: &Path, to: &Path) {
    if fs::hard_link(from, to).is_err() {
        fs::copy(from, to).unwrap();
    }
}

/// `systemd-analyze verify` of `units` in `root`: Err with what it said when it failed or said
/// anything at all, since it reports unknown keys and unparsable values ("…, ignoring") with exit
/// status 0, and a unit that silently lost a setting is broken too.
fn verify_units(tool: &Path, root: &Path, units: &[&str]) -> Result<(), String> {
    let out = Command::new(tool)
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg("--man=no") // man:pgdrive(1) is in the package, not on this host
        .args(units)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(format!("exit {:?}: {said}", out.status.code()))
    }
}

#[test]
fn the_systemd_units_pass_systemd_analyze_verify() {
    let Some(tool) = systemd_analyze() else {
        return;
    };
    let root = unit_root("etc/systemd/system", |_| {});
    verify_units(&tool, root.path(), INSTANCES).unwrap();
}

/// The check above must fail on a broken unit: each of these mistakes is caught.
#[test]
fn a_broken_unit_fails_the_verification() {
    let Some(tool) = systemd_analyze() else {
        return;
    };
    let breakages: &[(&str, &str, &str, &str)] = &[
        (
            "a misspelt key",
            SHARED_DROP_IN,
            "ProtectSystem=strict",
            "ProtectSytem=strict",
        ),
        (
            "a bad value",
            SHARED_DROP_IN,
            "SuccessExitStatus=75",
            "SuccessExitStatus=seventy-five",
        ),
        (
            "a bad schedule",
            "pgdrive-backup@schema.timer",
            "OnCalendar=Sun",
            "OnCalendar=Sunn",
        ),
        (
            "a missing binary",
            "pgdrive-backup@.service",
            "ExecStart=pgdrive ",
            "ExecStart=pgdrve ",
        ),
        (
            "a misspelt section",
            "pgdrive-verify@.service",
            "[Service]",
            "[Servce]",
        ),
    ];
    for (what, file, from, to) in breakages {
        let root = unit_root("etc/systemd/system", |units| {
            let path = units.join(file);
            let text = fs::read_to_string(&path).unwrap();
            assert!(text.contains(from), "{file} lacks {from:?}");
            fs::write(&path, text.replacen(from, to, 1)).unwrap();
        });
        let verdict = verify_units(&tool, root.path(), INSTANCES);
        assert!(verdict.is_err(), "{what} ({file}: {to}) was not caught");
    }
}

/// `systemd-analyze security --offline` scores what each service may do as it would run: the
/// shared drop-in must reach every service (a dedicated user, the sandbox). Without it the same
/// services score as exposed, so the check is not vacuous.
#[test]
fn every_service_runs_sandboxed_as_a_dedicated_user() {
    let Some(tool) = systemd_analyze() else {
        return;
    };
    let services: Vec<&str> = INSTANCES
        .iter()
        .copied()
        .filter(|u| u.ends_with(".service"))
        .collect();
    let security = |root: &Path, unit: &str| {
        Command::new(&tool)
            .args(["security", "--offline=yes", "--threshold=20"])
            .arg(format!("--root={}", root.display()))
            .arg(unit)
            .output()
            .unwrap()
    };
    let root = unit_root("etc/systemd/system", |_| {});
    for unit in &services {
        let out = security(root.path(), unit);
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{unit} is more exposed than 2.0:\n{report}"
        );
        assert!(
            report.contains("✓ User=/DynamicUser="),
            "{unit} does not run as a non-root user:\n{report}"
        );
    }
    let bare = unit_root("etc/systemd/system", |units| {
        fs::remove_dir_all(units.join("pgdrive-.service.d")).unwrap()
    });
    for unit in &services {
        assert!(
            !security(bare.path(), unit).status.success(),
            "{unit} without the drop-in"
        );
    }
}

/// The drop-in's `SystemCallFilter=` admits every system call that a real backup (pgdrive, its
/// compression threads and pg_dump) and a verify of it make, traced with `strace -f`: a call
/// outside it would first show on a production host, as a run failing with EPERM.
#[test]
fn the_system_call_filter_admits_what_a_backup_and_a_verify_call() {
    let Some(tool) = systemd_analyze() else {
        return;
    };
    let Some(strace) = installed_tool("strace", "apt-get install -y strace") else {
        return;
    };
    let groups = syscall_groups(&tool);
    let (mut allowed, mut denied) = (BTreeSet::new(), BTreeSet::new());
    for filter in &unit_settings(SHARED_DROP_IN)["SystemCallFilter"] {
        let (set, names) = match filter.strip_prefix('~') {
            Some(names) => (&mut denied, names),
            None => (&mut allowed, filter.as_str()),
        };
        for name in names.split_whitespace() {
            set.extend(expand_syscall_group(&groups, name));
        }
    }
    assert!(
        allowed.contains("read") && denied.contains("setuid"),
        "{allowed:?} {denied:?}"
    );

    let db = TestDb::new("syscalls");
    seed_shop(&db);
    let dir = TempDir::new("syscalls");
    let backups = dir.path().join("backups");
    fs::create_dir(&backups).unwrap();
    let runs: [&[&str]; 2] = [
        &[
            "backup",
            "--kind",
            "daily",
            "--compress",
            "zstd:3",
            "--threads",
            "2",
            "--to",
        ],
        &["verify", "latest", "--kind", "daily", "--from"],
    ];
    let mut called = BTreeSet::new();
    for args in runs {
        let trace = dir.path().join("trace");
        let mut pgdrive = pgdrive();
        pgdrive
            .env("DATABASE_URL", db.url())
            .args(args)
            .arg(&backups);
        let r = run(&mut traced(&strace, &pgdrive, &trace));
        assert_eq!(r.status, 0, "{args:?}: {r:?}");
        called.extend(strace_summary_calls(&fs::read_to_string(&trace).unwrap()));
    }
    assert!(
        called.contains("execve") && called.contains("fsync"),
        "{called:?}"
    );
    let refused: Vec<&String> = called
        .iter()
        .filter(|c| !allowed.contains(*c) || denied.contains(*c))
        .collect();
    assert!(refused.is_empty(), "SystemCallFilter= refuses {refused:?}");
}

/// `cmd` (a pgdrive Command with its environment) run under `strace -f -c`, the summary to
/// `out`.
fn traced(strace: &Path, cmd: &Command, out: &Path) -> Command {
    let mut traced = Command::new(strace);
    traced
        .args(["-f", "-qq", "-c", "-o"])
        .arg(out)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => traced.env(key, value),
            None => traced.env_remove(key),
        };
    }
    traced
}

/// The system calls of a `strace -c` summary: rows "% time  seconds  usecs/call  calls
/// [errors]  syscall", then a "total" row.
fn strace_summary_calls(summary: &str) -> BTreeSet<String> {
    summary
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|w| w.parse::<f64>().is_ok())
        })
        .filter_map(|l| l.split_whitespace().last())
        .filter(|name| *name != "total")
        .map(String::from)
        .collect()
}

/// systemd's system-call groups (`systemd-analyze syscall-filter`): "@group" lines, each
/// followed by indented members (calls or other groups) and "# comment" lines.
fn syscall_groups(tool: &Path) -> BTreeMap<String, Vec<String>> {
    let out = Command::new(tool).arg("syscall-filter").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if line.starts_with('@') {
            current = Some(line.trim().to_string());
        } else if let (Some(group), Some(member)) = (&current, line.strip_prefix("    ")) {
            if !member.starts_with('#') && !member.trim().is_empty() {
                groups
                    .entry(group.clone())
                    .or_default()
                    .push(member.trim().into());
            }
        }
    }
    groups
}

fn expand_syscall_group(groups: &BTreeMap<String, Vec<String>>, name: &str) -> BTreeSet<String> {
    match groups.get(name) {
        Some(members) => members
            .iter()
            .flat_map(|m| expand_syscall_group(groups, m))
            .collect(),
        None => {
            assert!(!name.starts_with('@'), "unknown system-call group {name}");
            BTreeSet::from([name.to_string()])
        }
    }
}

/// `key=value` settings of a unit file, in order, by key (a key may repeat).
fn unit_settings(file: &str) -> BTreeMap<String, Vec<String>> {
    let text = fs::read_to_string(Path::new(UNIT_DIR).join(file)).unwrap();
    let mut settings: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if let Some((key, value)) = line.split_once('=').filter(|_| !line.starts_with('#')) {
            settings.entry(key.into()).or_default().push(value.into());
        }
    }
    settings
}

fn setting(settings: &BTreeMap<String, Vec<String>>, key: &str) -> String {
    settings
        .get(key)
        .unwrap_or_else(|| panic!("no {key}="))
        .join(" ")
}

/// The exit statuses and timeouts of README "Exit status" and "Scheduling": 75 (skipped) is the
/// only non-zero success (3 and 4 stored something but need a person), the stop timeout outlasts
/// pgdrive's own exit deadline after SIGTERM, and the env-file is optional.
#[test]
fn the_services_share_exit_statuses_timeouts_user_and_settings() {
    let shared = unit_settings(SHARED_DROP_IN);
    assert_eq!(setting(&shared, "SuccessExitStatus"), "75");
    assert_eq!(setting(&shared, "User"), "pgdrive");
    assert_eq!(
        setting(&shared, "EnvironmentFile"),
        "-/etc/pgdrive/pgdrive.env"
    );
    assert_eq!(setting(&shared, "Type"), "oneshot");
    assert_eq!(setting(&shared, "KillMode"), "mixed");
    let stop: u64 = setting(&shared, "TimeoutStopSec").parse().unwrap();
    assert!(
        stop > pgdrive::signals::GRACE.as_secs() * 2,
        "TimeoutStopSec={stop} must leave pgdrive's {:?} grace room",
        pgdrive::signals::GRACE
    );
    for (key, wanted) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "read-only"),
        ("PrivateTmp", "yes"),
    ] {
        assert_eq!(setting(&shared, key), wanted, "{key}");
    }
    let writable = setting(&shared, "ReadWritePaths");
    assert!(writable.contains("/var/backups/pgdrive"), "{writable}");
    assert!(
        writable.contains("/var/lib/node_exporter/textfile"),
        "{writable}"
    );
}

/// The command a service instance runs, as argv (`%i` replaced by the instance).
fn exec_start(unit_instance: &str) -> Vec<String> {
    let (template, rest) = unit_instance.split_once('@').unwrap();
    let (instance, _) = rest.split_once('.').unwrap();
    let settings = unit_settings(&format!("{template}@.service"));
    setting(&settings, "ExecStart")
        .split_whitespace()
        .map(|w| w.replace("%i", instance))
        .collect()
}

fn cli_accepts(argv: &[String]) -> Result<(), String> {
    pgdrive::cli::command()
        .try_get_matches_from(argv)
        .and_then(|m| Cli::from_arg_matches(&m))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[test]
fn every_service_runs_a_command_the_cli_accepts() {
    let backup_has_job = pgdrive::cli::command()
        .find_subcommand("backup")
        .unwrap()
        .get_arguments()
        .any(|a| a.get_long() == Some("job"));
    for unit in INSTANCES.iter().filter(|u| u.ends_with(".service")) {
        let argv = exec_start(unit);
        assert_eq!(
            argv[0], "pgdrive",
            "{unit}: found on systemd's fixed search path"
        );
        // pgdrive-job@ runs `backup --job NAME`, the named jobs' command: checked once the CLI
        // has it.
        if unit.starts_with("pgdrive-job@") && !backup_has_job {
            eprintln!("NOT CHECKED: {unit} runs `backup --job`, which this CLI does not have yet");
            continue;
        }
        cli_accepts(&argv).unwrap_or_else(|e| panic!("{unit}: {argv:?}\n{e}"));
    }
}

/// Each timer fires exactly when crontab.example's line for the same command does: the next
/// runs systemd computes (`systemd-analyze calendar`) equal the minutes the cron line matches.
#[test]
fn the_timers_keep_the_crontab_example_schedule() {
    let Some(tool) = systemd_analyze() else {
        return;
    };
    let crontab = fs::read_to_string(Path::new(REPO).join("crontab.example")).unwrap();
    const BASE: &str = "2026-11-30 00:00:00 UTC"; // a Monday
    const BASE_MILLIS: i64 = 1_795_996_800_000;
    assert!(pgdrive::timeutil::rfc3339_millis(BASE_MILLIS).starts_with("2026-11-30T00:00:00"));
    const RUNS: usize = 8;
    for timer in INSTANCES.iter().filter(|u| u.ends_with(".timer")) {
        let service = timer.replace(".timer", ".service");
        let command = exec_start(&service)[1..].join(" "); // e.g. "backup --kind daily"
        let line = crontab
            .lines()
            .find(|l| !l.starts_with('#') && l.contains("pgdrive ") && runs_command(l, &command))
            .unwrap_or_else(|| panic!("crontab.example has no line running `{command}` ({timer})"));
        let fields: Vec<&str> = line.split_whitespace().take(5).collect();
        let cron_times = cron_next_runs(&fields, BASE_MILLIS, RUNS);

        let calendar = setting(&unit_settings(timer), "OnCalendar");
        let out = Command::new(&tool)
            .args([
                "calendar",
                &format!("--iterations={RUNS}"),
                &format!("--base-time={BASE}"),
            ])
            .arg(&calendar)
            .output()
            .unwrap();
        assert!(out.status.success(), "{timer}: {calendar}: {out:?}");
        let systemd_times: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("Next elapse:") || l.contains("Iter. #"))
            .map(|l| {
                // "    Next elapse: Sun 2026-12-06 02:30:00 UTC"
                let words: Vec<&str> = l.split_whitespace().collect();
                format!("{} {}", words[words.len() - 3], words[words.len() - 2])
            })
            .collect();
        assert_eq!(
            systemd_times, cron_times,
            "{timer} ({calendar}) vs crontab.example: {line}"
        );
        assert_eq!(
            setting(&unit_settings(timer), "Persistent"),
            "true",
            "{timer}"
        );
    }
}

/// Whether a crontab line runs `command` (e.g. `backup --kind daily`), whatever global options
/// stand before it and options follow it.
fn runs_command(line: &str, command: &str) -> bool {
    let words: Vec<&str> = line.split_whitespace().collect();
    let wanted: Vec<&str> = command.split_whitespace().collect();
    words.windows(wanted.len()).any(|w| w == wanted.as_slice())
}

/// The next `count` minutes after `from` (UTC) that a cron schedule (five fields: minute, hour,
/// day of month, month, day of week) matches, as "YYYY-MM-DD HH:MM:SS".
fn cron_next_runs(fields: &[&str], from: i64, count: usize) -> Vec<String> {
    assert!(
        fields[2] == "*" || fields[4] == "*",
        "day of month and day of week both restricted: cron ORs them, not handled here"
    );
    let mut runs = Vec::new();
    let mut minute = from;
    while runs.len() < count {
        let stamp = pgdrive::timeutil::rfc3339_millis(minute);
        let part = |range: std::ops::Range<usize>| stamp[range].parse::<u32>().unwrap();
        let weekday = ((minute / 86_400_000 + 4) % 7) as u32; // 1970-01-01 was a Thursday
        let values = [part(14..16), part(11..13), part(8..10), part(5..7), weekday];
        let firsts = [0, 0, 1, 1, 0];
        if (0..5).all(|i| cron_field_matches(fields[i], values[i], firsts[i])) {
            runs.push(stamp[..19].replace('T', " "));
        }
        minute += 60_000;
        assert!(
            minute - from < 400 * 86_400_000,
            "{fields:?} does not run {count} times in 400 days"
        );
    }
    runs
}

/// One cron field: `*`, `N`, `A-B`, each optionally `/STEP`, comma-separated.
fn cron_field_matches(field: &str, value: u32, first: u32) -> bool {
    field.split(',').any(|part| {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => (range, step.parse::<u32>().unwrap()),
            None => (part, 1),
        };
        let (low, high) = match range {
            "*" => (first, u32::MAX),
            _ => match range.split_once('-') {
                Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
                None => {
                    let a: u32 = range.parse().unwrap();
                    (a, if step > 1 { u32::MAX } else { a })
                }
            },
        };
        (low..=high).contains(&value) && (value - low) % step == 0
    })
}

/// `cargo deb` packages the binary these tests built (no release build: it is linked in as the
/// `target/release/pgdrive` that cargo-deb expects, under a target directory of its own), and
/// the package holds what README "Installing" promises, byte for byte, installs units that pass
/// `systemd-analyze verify` where dpkg would put them, and depends on the PostgreSQL client.
#[test]
fn cargo_deb_packages_the_binary_man_page_units_and_examples() {
    let Some(_) = installed_tool("cargo-deb", "cargo install cargo-deb --locked") else {
        return;
    };
    let bin = Path::new(env!("CARGO_BIN_EXE_pgdrive"));
    // beside the real target directory, so that the hard link works (same filesystem)
    let scratch = TempDir::new_in(bin.parent().unwrap().parent().unwrap(), "deb_test");
    fs::create_dir_all(scratch.path().join("release")).unwrap();
    link_or_copy(bin, &scratch.path().join("release/pgdrive"));
    let deb = scratch.path().join("pgdrive.deb");

    let started = Instant::now();
    let r = run(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["deb", "--no-build", "--strip", "--fast", "--manifest-path"])
            .arg(Path::new(REPO).join("Cargo.toml"))
            .arg("--output")
            .arg(&deb)
            .env("CARGO_TARGET_DIR", scratch.path()),
    );
    assert_eq!(r.status, 0, "cargo deb: {r:?}");
    eprintln!("cargo deb took {:?}", started.elapsed());

    let info = dpkg_deb(&["-f"], &deb, &["Package", "Depends"]);
    assert!(info.contains("Package: pgdrive"), "{info}");
    let depends = info.lines().find(|l| l.starts_with("Depends:")).unwrap();
    for needed in ["postgresql-client", "adduser", "libc6"] {
        assert!(depends.contains(needed), "{depends}");
    }

    // what dpkg lists, with modes: "-rwxr-xr-x root/root 123 2026-12-02 00:00 ./usr/bin/pgdrive"
    let listing = dpkg_deb(&["-c"], &deb, &[]);
    let mode_of = |path: &str| {
        listing
            .lines()
            .find(|l| l.ends_with(&format!(" .{path}")))
            .map(|l| l.split_whitespace().next().unwrap().to_string())
            .unwrap_or_else(|| panic!("the package lacks {path}:\n{listing}"))
    };
    assert_eq!(mode_of("/usr/bin/pgdrive"), "-rwxr-xr-x");
    let mut shipped: Vec<(String, PathBuf)> = vec![
        (
            "/usr/share/doc/pgdrive/examples/pgdrive.toml.example".into(),
            "pgdrive.toml.example".into(),
        ),
        (
            "/usr/share/doc/pgdrive/examples/crontab.example".into(),
            "crontab.example".into(),
        ),
        (
            "/usr/share/doc/pgdrive/README.md".into(),
            "README.md".into(),
        ),
        (
            format!("/lib/systemd/system/{SHARED_DROP_IN}"),
            format!("packaging/systemd/{SHARED_DROP_IN}").into(),
        ),
    ];
    for entry in fs::read_dir(UNIT_DIR).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".service") || name.ends_with(".timer") {
            shipped.push((
                format!("/lib/systemd/system/{name}"),
                format!("packaging/systemd/{name}").into(),
            ));
        }
    }
    for (path, _) in &shipped {
        assert_eq!(mode_of(path), "-rw-r--r--", "{path}");
    }
    assert_eq!(mode_of("/usr/share/man/man1/pgdrive.1.gz"), "-rw-r--r--");

    // installed as dpkg would: the same bytes as the repository's files
    let installed = scratch.path().join("root");
    dpkg_deb(&["-x"], &deb, &[installed.to_str().unwrap()]);
    for (path, source) in &shipped {
        assert_eq!(
            fs::read(installed.join(&path[1..])).unwrap(),
            fs::read(Path::new(REPO).join(source)).unwrap(),
            "{path} differs from {}",
            source.display()
        );
    }
    let man = fs::read(installed.join("usr/share/man/man1/pgdrive.1.gz")).unwrap();
    assert_eq!(
        gunzip(&man),
        fs::read_to_string(Path::new(REPO).join("man/pgdrive.1")).unwrap()
    );
    let version = run(Command::new(installed.join("usr/bin/pgdrive")).arg("--version"));
    assert_eq!(
        version.stdout.trim(),
        format!("pgdrive {}", env!("CARGO_PKG_VERSION")),
        "{version:?}"
    );

    // the maintainer script that creates the user the units run as
    dpkg_deb(
        &["-e"],
        &deb,
        &[scratch.path().join("control").to_str().unwrap()],
    );
    let postinst = scratch.path().join("control/postinst");
    assert_eq!(
        fs::metadata(&postinst).unwrap().permissions().mode() & 0o777,
        0o755
    );
    assert!(fs::read_to_string(&postinst)
        .unwrap()
        .contains("adduser --system --group --home /var/lib/pgdrive"));
    let syntax = run(Command::new("sh").arg("-n").arg(&postinst));
    assert_eq!(syntax.status, 0, "postinst: {syntax:?}");

    // the units where the package puts them pass systemd's check against the packaged binary
    if let Some(tool) = systemd_analyze() {
        copy_tree(
            Path::new("/usr/lib/systemd/system"),
            &installed.join("usr/lib/systemd/system"),
        );
        verify_units(&tool, &installed, INSTANCES).unwrap();
    }
}

/// `dpkg-deb OPTION deb ARGS...`, which must succeed; its stdout.
fn dpkg_deb(option: &[&str], deb: &Path, args: &[&str]) -> String {
    let r = run(Command::new("dpkg-deb").args(option).arg(deb).args(args));
    assert_eq!(r.status, 0, "dpkg-deb {option:?}: {r:?}");
    r.stdout
}
