//! The config file (`--config`, TOML) against the real binary, PostgreSQL and pg_dump: a backup
//! configured by the file alone, the layering flag > environment > file > env-file, misspelt
//! keys (in the file and in the env-file) reported with the key they meant, and secrets never
//! echoed, also when the file is broken or readable by others.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::common::*;

/// Backup files (not sidecars, not partials) in a directory.
fn backups_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.retain(|n| n.ends_with(".sql.gz"));
    v.sort();
    v
}

fn write(path: PathBuf, text: &str, mode: u32) -> PathBuf {
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// The test database's URL with a password in it (trust auth accepts any).
fn url_with_password(db: &TestDb, password: &str) -> String {
    db.url().replacen(
        "postgres://postgres@",
        &format!("postgres://postgres:{password}@"),
        1,
    )
}

#[test]
fn a_config_file_alone_configures_a_backup_into_a_local_directory() {
    let db = TestDb::new("cfg_alone");
    db.exec("CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 100)");
    let dir = TempDir::new("cfg_alone");
    let store = dir.path().join("store");
    let config = write(
        dir.path().join("pgdrive.toml"),
        &format!(
            "database_url = \"{}\"\nformat = \"plain\"\n\n[local]\ndir = \"{}\"\n\n[keep]\ndaily = 1\n",
            db.url(),
            store.display()
        ),
        0o600,
    );
    let backup = || {
        run(pgdrive()
            .arg("--config")
            .arg(&config)
            .args(["backup", "--kind", "daily"]))
    };
    let first = backup();
    assert_eq!(first.status, 0, "{first:?}");
    assert!(first.stderr.contains("keep=1"), "{first:?}");
    assert!(
        first
            .stderr
            .contains(&format!("config={}", config.display())),
        "the first log line names the config file: {first:?}"
    );
    let files = backups_in(&store);
    assert_eq!(files.len(), 1, "{files:?}");
    // a second run prunes the first: `[keep] daily = 1` is honoured
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = backup();
    assert_eq!(second.status, 0, "{second:?}");
    let after = backups_in(&store);
    assert_eq!(after.len(), 1, "{after:?}");
    assert_ne!(after, files);
    let bytes = std::fs::read(store.join(&after[0])).unwrap();
    assert!(gunzip(&bytes).contains("CREATE TABLE public.t"));
    let ok = db.query_i64("SELECT count(*) FROM backups WHERE status = 'SUCCESS'");
    assert_eq!(ok, 2);
}

/// One setting (the local directory) set in all four layers at once; each run removes the top
/// layer, and the backup must land where the highest remaining layer says.
#[test]
fn flags_beat_the_environment_which_beats_the_file_which_beats_the_env_file() {
    let db = TestDb::new("cfg_layers");
    db.exec("CREATE TABLE t (id int)");
    let dir = TempDir::new("cfg_layers");
    let [by_flag, by_env, by_file, by_env_file] =
        ["flag", "env", "file", "env-file"].map(|n| dir.path().join(n));
    let env_file = write(
        dir.path().join("pgdrive.env"),
        &format!(
            "DATABASE_URL={}\nPGDRIVE_LOCAL_DIR={}\n",
            db.url(),
            by_env_file.display()
        ),
        0o600,
    );
    let config = write(
        dir.path().join("pgdrive.toml"),
        &format!("[local]\ndir = \"{}\"\n", by_file.display()),
        0o600,
    );
    let layers = |flag: bool, env: bool, file: bool| {
        let mut cmd = pgdrive();
        cmd.arg("--env-file").arg(&env_file);
        if file {
            cmd.arg("--config").arg(&config);
        }
        if env {
            cmd.env("PGDRIVE_LOCAL_DIR", &by_env);
        }
        cmd.args(["backup", "--kind", "schema"]);
        if flag {
            cmd.arg("--to").arg(&by_flag);
        }
        let r = run(&mut cmd);
        assert_eq!(r.status, 0, "{r:?}");
    };
    let counts = || [&by_flag, &by_env, &by_file, &by_env_file].map(|d| backups_in(d).len());
    layers(true, true, true);
    assert_eq!(counts(), [1, 0, 0, 0], "the flag wins");
    layers(false, true, true);
    assert_eq!(counts(), [1, 1, 0, 0], "then the environment");
    layers(false, false, true);
    assert_eq!(counts(), [1, 1, 1, 0], "then the config file");
    layers(false, false, false);
    assert_eq!(counts(), [1, 1, 1, 1], "then the env-file");
    // an empty environment variable counts as unset: the file below it still applies
    let mut cmd = pgdrive();
    cmd.arg("--env-file")
        .arg(&env_file)
        .arg("--config")
        .arg(&config)
        .env("PGDRIVE_LOCAL_DIR", "")
        .args(["backup", "--kind", "schema"]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let r = run(&mut cmd);
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(counts(), [1, 1, 2, 1]);
}

#[test]
fn a_misspelt_key_is_reported_with_the_key_it_meant_and_never_its_value() {
    let db = TestDb::new("cfg_typo");
    let dir = TempDir::new("cfg_typo");
    let store = dir.path().join("store");
    // in the config file: a configuration error before anything is attempted
    let config = write(
        dir.path().join("pgdrive.toml"),
        &format!(
            "database_url = \"{}\"\n[local]\ndir = \"{}\"\n[keep]\ndialy = 30\n[sendgrid]\napi_kye = \"SG.typo-secret-value\"\n",
            db.url(),
            store.display()
        ),
        0o600,
    );
    let r = run(pgdrive()
        .arg("--config")
        .arg(&config)
        .args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 78, "{r:?}");
    assert!(
        r.stderr
            .contains("`keep.dialy` (did you mean `keep.daily`?)")
            && r.stderr
                .contains("`sendgrid.api_kye` (did you mean `sendgrid.api_key`?)"),
        "{r:?}"
    );
    assert!(!r.stderr.contains("typo-secret"), "{r:?}");
    assert!(backups_in(&store).is_empty(), "nothing was attempted");
    assert_eq!(
        db.query_i64("SELECT count(*) FROM pg_tables WHERE tablename = 'backups'"),
        0,
        "not even the catalog was touched"
    );

    // an invalid value names the key and the file it came from
    let config = write(
        dir.path().join("threads.toml"),
        &format!(
            "database_url = \"{}\"\nthreads = \"many\"\n[local]\ndir = \"{}\"\n",
            db.url(),
            store.display()
        ),
        0o600,
    );
    let r = run(pgdrive()
        .arg("--config")
        .arg(&config)
        .args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 78, "{r:?}");
    assert!(
        r.stderr.contains(&format!(
            "PGDRIVE_THREADS (`threads` in {})",
            config.display()
        )),
        "{r:?}"
    );

    // in the env-file: a warning, and the run goes on
    let env_file = write(
        dir.path().join("pgdrive.env"),
        &format!(
            "DATABASE_URL={}\nPGDRIVE_LOCAL_DIR={}\nPGDRIVE_KEEP_DALY=30\nSENDGRID_API_KY=SG.typo-secret-value\n",
            db.url(),
            store.display()
        ),
        0o600,
    );
    let r = run(pgdrive()
        .arg("--env-file")
        .arg(&env_file)
        .args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 0, "{r:?}");
    for (typo, meant) in [
        ("PGDRIVE_KEEP_DALY", "PGDRIVE_KEEP_DAILY"),
        ("SENDGRID_API_KY", "SENDGRID_API_KEY"),
    ] {
        assert!(
            r.stderr.lines().any(|l| l.contains("WARN")
                && l.contains(&format!(
                    "{typo} is not a pgdrive setting (did you mean {meant}?)"
                ))),
            "{typo}: {r:?}"
        );
    }
    assert!(!r.stderr.contains("typo-secret"), "{r:?}");
    assert_eq!(backups_in(&store).len(), 1);
    // `check` reports the same
    let r = run(pgdrive()
        .arg("--env-file")
        .arg(&env_file)
        .args(["check", "--kind", "daily"]));
    assert!(
        r.stdout
            .contains("PGDRIVE_KEEP_DALY is not a pgdrive setting"),
        "{r:?}"
    );
    assert!(
        !r.stdout.contains("typo-secret") && !r.stderr.contains("typo-secret"),
        "{r:?}"
    );
}

#[test]
fn secrets_in_the_config_file_are_never_echoed() {
    let db = TestDb::new("cfg_secret");
    db.exec("CREATE TABLE t (id int)");
    let dir = TempDir::new("cfg_secret");
    let store = dir.path().join("store");
    let password = "Cfg-Secret-pw-4711";
    let smtp_password = "smtp-Secret-0815";
    let good = format!(
        "database_url = \"{}\"\n[local]\ndir = \"{}\"\n",
        url_with_password(&db, password),
        store.display()
    );
    // a run that works shows the connection string with its password masked
    let config = write(dir.path().join("good.toml"), &good, 0o600);
    let r = run(pgdrive().arg("--config").arg(&config).args([
        "--verbose",
        "backup",
        "--kind",
        "schema",
    ]));
    assert_eq!(r.status, 0, "{r:?}");
    assert!(r.stderr.contains("postgres:***@"), "{r:?}");
    assert!(
        !r.stderr.contains(password) && !r.stdout.contains(password),
        "{r:?}"
    );

    // broken files: a parse error, a wrong type, an unknown key, a duplicate, a reserved table
    for (name, broken) in [
        (
            "unterminated",
            format!("{good}[smtp]\npassword = \"{smtp_password}\nhost = \"x\"\n"),
        ),
        (
            "unquoted",
            format!("{good}[smtp]\npassword = {smtp_password}\n"),
        ),
        (
            "type",
            format!("{good}[smtp]\npassword = [\"{smtp_password}\", 1.5]\n"),
        ),
        (
            "unknown",
            format!("{good}[smtp]\npasword = \"{smtp_password}\"\n"),
        ),
        (
            "duplicate",
            format!("{good}[smtp]\npassword = \"a\"\npassword = \"{smtp_password}\"\n"),
        ),
        (
            "reserved",
            format!("{good}[jobs.nightly]\npassword = \"{smtp_password}\"\n"),
        ),
    ] {
        let config = write(dir.path().join(format!("{name}.toml")), &broken, 0o600);
        let r = run(pgdrive()
            .arg("--config")
            .arg(&config)
            .args(["backup", "--kind", "schema"]));
        assert_eq!(r.status, 78, "{name}: {r:?}");
        assert!(r.stderr.contains("config file"), "{name}: {r:?}");
        for secret in [password, smtp_password, "Secret"] {
            assert!(
                !r.stderr.contains(secret) && !r.stdout.contains(secret),
                "{name}: {r:?}"
            );
        }
    }
}

#[test]
fn a_config_file_holding_a_secret_and_readable_by_others_is_warned_about() {
    let db = TestDb::new("cfg_mode");
    let dir = TempDir::new("cfg_mode");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let password = "Mode-Secret-pw-42";
    let list = |config: &Path| {
        let r = run(pgdrive()
            .arg("--config")
            .arg(config)
            .arg("list")
            .arg("--from")
            .arg(&empty));
        assert_eq!(r.status, 0, "{r:?}");
        assert!(!r.stderr.contains(password), "{r:?}");
        r.stderr
    };
    let with_secret = format!("database_url = \"{}\"\n", url_with_password(&db, password));
    let open = write(dir.path().join("open.toml"), &with_secret, 0o644);
    let stderr = list(&open);
    assert!(
        stderr.contains("is readable by group or others (mode 644) and holds secrets (database_url): chmod 600 it"),
        "{stderr}"
    );
    // `check` shows it among its findings
    let r = run(pgdrive()
        .arg("--config")
        .arg(&open)
        .args(["check", "--kind", "daily"]));
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with("warn") && l.contains("config-file") && l.contains("chmod 600")),
        "{r:?}"
    );
    assert!(
        !r.stdout.contains(password) && !r.stderr.contains(password),
        "{r:?}"
    );
    let closed = write(dir.path().join("closed.toml"), &with_secret, 0o600);
    assert!(!list(&closed).contains("readable by group"));
    let r = run(pgdrive()
        .arg("--config")
        .arg(&closed)
        .args(["check", "--kind", "daily"]));
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with("ok") && l.contains("config-file")),
        "{r:?}"
    );
    // readable, but nothing secret in it: no warning
    let harmless = write(
        dir.path().join("harmless.toml"),
        &format!("database_url = \"{}\"\n", db.url()),
        0o644,
    );
    assert!(!list(&harmless).contains("readable by group"));
    // a token URL is a secret too
    let token = write(
        dir.path().join("token.toml"),
        "[notify]\nping_url = \"https://hc-ping.example/Token-Path-Secret\"\n",
        0o640,
    );
    let stderr = list(&token);
    assert!(
        stderr.contains("holds secrets (notify.ping_url)"),
        "{stderr}"
    );
    assert!(!stderr.contains("Token-Path-Secret"), "{stderr}");
}

/// The environment-only setup is unchanged: every line of crontab.example runs as written, with
/// only its env-file path pointing at a test env-file (the variables of the Node.js job), and
/// does what its comment says.
#[test]
fn the_crontab_example_lines_still_run_from_the_env_file_alone() {
    let db = TestDb::new("cfg_cron");
    seed_shop(&db);
    let dir = TempDir::new("cfg_cron");
    let store = dir.path().join("store");
    let env_file = write(
        dir.path().join("pgdrive.env"),
        &format!(
            "DATABASE_URL={}\nPGDRIVE_LOCAL_DIR={}\nPGDRIVE_CRITICAL_TABLES=orders,public.customers\n",
            db.url(),
            store.display()
        ),
        0o600,
    );
    let crontab =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/crontab.example")).unwrap();
    let mut kinds_run = Vec::new();
    for line in crontab
        .lines()
        // the drill's line reads a config file's job (globals are stored with jobs only); the
        // disaster_recovery module runs the drill
        .filter(|l| !l.starts_with('#') && l.contains("/pgdrive ") && !l.contains(" --config "))
    {
        let args: Vec<String> = line
            .split_whitespace()
            .skip(6) // five schedule fields and the binary
            .take_while(|a| !a.starts_with(">>") && !a.starts_with("2>"))
            .map(|a| {
                if a == "/etc/pgdrive/pgdrive.env" {
                    env_file.display().to_string()
                } else {
                    a.to_string()
                }
            })
            .collect();
        assert!(args.contains(&env_file.display().to_string()), "{line}");
        let r = run(pgdrive().args(&args));
        assert_eq!(r.status, 0, "{line}\n{r:?}");
        if let Some(kind) = args
            .iter()
            .position(|a| a == "--kind")
            .map(|i| &args[i + 1])
        {
            if args.iter().any(|a| a == "backup") {
                kinds_run.push(kind.clone());
                let files = backups_in(&store);
                assert!(
                    files.iter().any(|f| f.contains(&format!("-{kind}-"))),
                    "{line}: {files:?}"
                );
            } else {
                assert!(args.iter().any(|a| a == "verify"), "{line}");
                assert!(
                    r.stderr.contains("counts equal the backup's"),
                    "{line}\n{r:?}"
                );
            }
        }
    }
    assert_eq!(kinds_run, ["daily", "hourly", "schema"]);
    // the hourly backup holds the critical tables only
    let hourly = backups_in(&store)
        .into_iter()
        .find(|f| f.contains("-hourly-"))
        .unwrap();
    let sql = gunzip(&std::fs::read(store.join(hourly)).unwrap());
    assert!(sql.contains("CREATE TABLE public.orders") && !sql.contains("audit_log"));
}
