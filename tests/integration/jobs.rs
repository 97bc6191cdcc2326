//! Named jobs and targets from the config file: several databases and several destinations per
//! job, each with its own retention; per-database runs that fail alone; typos reported before
//! anything runs; reading a named target back.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::*;

/// Writes `text` as a config file in `dir` (mode 0600) and returns its path.
fn config_file(dir: &Path, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("pgdrive.toml");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// pgdrive with only `--config FILE` and `DATABASE_URL` set.
fn with_config(config: &Path, database_url: &str) -> std::process::Command {
    let mut cmd = pgdrive();
    cmd.env("PGDRIVE_CONFIG", config)
        .env("DATABASE_URL", database_url);
    cmd
}

/// Backup files of `database` in a local directory (not manifests, not partials).
fn local_backups_of(dir: &Path, database: &str) -> Vec<String> {
    let mut names: Vec<String> = backup_files(dir)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("{database}-")))
        .collect();
    names.sort();
    names
}

#[test]
fn a_job_backs_up_two_databases_to_drive_and_a_directory_each_with_its_own_retention() {
    let g = Google::shared_drive();
    let catalog = TestDb::new("job_catalog");
    let shop = TestDb::new("job_shop");
    let crm = TestDb::new("job_crm");
    seed_shop(&shop);
    crm.exec("CREATE TABLE contacts (id int PRIMARY KEY, name text); INSERT INTO contacts SELECT g, 'c' || g FROM generate_series(1, 300) g;");
    let nas = TempDir::new("job_nas");
    // a backup of the built-in kind in the same directory: no job's retention may touch it
    let built_in = local_backup(&shop, nas.path(), &[]);

    let conf = TempDir::new("job_conf");
    let config = config_file(
        conf.path(),
        &format!(
            r#"
google.service_account_json = "{key}"
drive.url = "{url}"

[targets.offsite]
type = "drive"
folder_id = "{folder}"
keep = 2

[targets.nas]
type = "local"
dir = "{nas}"
keep = 1
chunk_size = "512KiB"

[jobs.nightly]
kind = "daily"
databases = ["{shop}", "{crm}"]
targets = ["offsite", "nas"]
compress = "zstd:3"
"#,
            key = g.key_file.display(),
            url = g.emu.base,
            folder = g.folder,
            nas = nas.path().display(),
            shop = shop.name,
            crm = crm.name,
        ),
    );
    for round in 0..3 {
        if round > 0 {
            // backup names are to the second
            std::thread::sleep(Duration::from_millis(1100));
        }
        let r = run(with_config(&config, &catalog.url()).args(["backup", "--job", "nightly"]));
        assert_eq!(r.status, 0, "round {round}: {r:?}");
    }

    // Drive keeps 2 of each database, the directory 1 of each, and the built-in one stays
    let on_drive: Vec<String> = g
        .emu
        .backups_in(&g.folder)
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect();
    for db in [&shop.name, &crm.name] {
        let n = on_drive
            .iter()
            .filter(|n| n.starts_with(&format!("{db}-daily-")))
            .count();
        assert_eq!(n, 2, "{db}: {on_drive:?}");
    }
    // beside them, the job's globals (one object per run, kept like the backups: issue 13)
    assert!(
        on_drive
            .iter()
            .all(|n| n.ends_with(".sql.zst") || n.starts_with("nightly-globals-")),
        "{on_drive:?}"
    );
    assert_eq!(
        on_drive
            .iter()
            .filter(|n| n.starts_with("nightly-globals-"))
            .count(),
        2,
        "{on_drive:?}"
    );
    let shop_local = local_backups_of(nas.path(), &shop.name);
    assert_eq!(shop_local.len(), 2, "{shop_local:?}");
    assert!(
        built_in.exists(),
        "the built-in kind's backup was pruned by a job"
    );
    assert_eq!(local_backups_of(nas.path(), &crm.name).len(), 1);

    // one catalog (DATABASE_URL's), a row per database and run, a copy row per target
    assert_eq!(
        catalog
            .query_i64("SELECT count(*) FROM backups WHERE job = 'nightly' AND status = 'SUCCESS'"),
        6
    );
    assert_eq!(
        catalog.query_i64(&format!(
            "SELECT count(DISTINCT database_name) FROM backups WHERE job = 'nightly' AND database_name IN ('{}', '{}')",
            shop.name, crm.name
        )),
        2
    );
    assert_eq!(
        catalog.query_i64(
            "SELECT count(*) FROM backup_copies c JOIN backups b ON b.id = c.backup_id
              WHERE b.job = 'nightly' AND c.status = 'STORED'"
        ),
        12
    );
    // pruned: 1 of 3 per database on Drive, 2 of 3 per database in the directory
    for (target, pruned) in [("offsite", 2), ("nas", 4)] {
        assert_eq!(
            catalog.query_i64(&format!(
                "SELECT count(*) FROM backup_copies WHERE target = '{target}' AND pruned_at IS NOT NULL"
            )),
            pruned,
            "{target}"
        );
    }
    // a run is pruned once no copy is left: the oldest run of each database
    assert_eq!(
        catalog.query_i64(
            "SELECT count(*) FROM backups WHERE job = 'nightly' AND pruned_at IS NOT NULL"
        ),
        2
    );
    // the backed-up databases got no catalog of their own
    assert_eq!(
        crm.query_i64("SELECT count(*) FROM pg_tables WHERE tablename = 'backups'"),
        0
    );

    // each named target can be read back by name
    let listed = run(with_config(&config, &catalog.url()).args([
        "list",
        "--target",
        "nas",
        "--database",
        &crm.name,
    ]));
    assert_eq!(listed.status, 0, "{listed:?}");
    assert!(
        listed.stdout.contains(&format!("{}-daily-", crm.name)),
        "{listed:?}"
    );
    let into = TestDb::new("job_into");
    let restored = run(with_config(&config, &catalog.url()).args([
        "restore",
        "latest",
        "--target",
        "offsite",
        "--database",
        &crm.name,
        "--target-url",
        &into.url(),
    ]));
    assert_eq!(restored.status, 0, "{restored:?}");
    assert_eq!(into.query_i64("SELECT count(*) FROM contacts"), 300);
}

#[test]
fn every_connectable_database_of_the_server_is_backed_up_and_one_failing_does_not_stop_the_rest() {
    let cluster = Cluster::start();
    for db in ["alpha", "beta", "gamma"] {
        cluster.exec("postgres", &format!("CREATE DATABASE {db}"));
        cluster.exec(
            db,
            &format!(
                "CREATE TABLE t (id int); INSERT INTO t VALUES (1); COMMENT ON TABLE t IS '{db}'"
            ),
        );
    }
    // not connectable, and a template: neither is a backup's business
    cluster.exec("postgres", "CREATE DATABASE closed");
    cluster.exec("postgres", "ALTER DATABASE closed ALLOW_CONNECTIONS false");
    cluster.exec("postgres", "CREATE DATABASE tmpl IS_TEMPLATE true");
    // one database whose dump fails: pg_dump cannot read a table the role may not see
    cluster.exec("postgres", "CREATE ROLE backup LOGIN");
    for db in ["postgres", "alpha", "beta", "gamma"] {
        cluster.exec(db, "GRANT SELECT ON ALL TABLES IN SCHEMA public TO backup");
    }
    cluster.exec(
        "beta",
        "CREATE TABLE secret (x int); REVOKE ALL ON secret FROM backup",
    );
    cluster.exec("postgres", "GRANT CREATE ON SCHEMA public TO backup");

    let dir = TempDir::new("job_all");
    let conf = TempDir::new("job_all_conf");
    let config = config_file(
        conf.path(),
        &format!(
            "local.dir = \"{}\"\n[jobs.everything]\nkind = \"daily\"\ndatabases = \"all\"\n",
            dir.path().display()
        ),
    );
    let r = run(
        with_config(&config, &cluster.url("backup", "postgres")).args([
            "backup",
            "--job",
            "everything",
        ]),
    );
    // beta failed: the job fails, and says so; the others are stored
    assert_eq!(r.status, 1, "{r:?}");
    assert!(r.stderr.contains("permission denied"), "{r:?}");
    for db in ["alpha", "gamma", "postgres"] {
        assert_eq!(local_backups_of(dir.path(), db).len(), 1, "{db}: {r:?}");
    }
    for db in ["beta", "closed", "tmpl", "template0", "template1"] {
        assert!(local_backups_of(dir.path(), db).is_empty(), "{db}");
    }
    let mut catalog =
        postgres::Client::connect(&cluster.url("postgres", "postgres"), postgres::NoTls).unwrap();
    let rows: Vec<(String, String)> = catalog
        .query(
            "SELECT database_name, status FROM backups WHERE job = 'everything' ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let expected: Vec<(String, String)> = [
        ("alpha", "SUCCESS"),
        ("beta", "ERROR"),
        ("gamma", "SUCCESS"),
        ("postgres", "SUCCESS"),
    ]
    .iter()
    .map(|(d, s)| (d.to_string(), s.to_string()))
    .collect();
    assert_eq!(rows, expected);
}

#[test]
fn mistakes_in_jobs_and_targets_are_reported_before_anything_runs() {
    let db = TestDb::new("job_typo");
    let dir = TempDir::new("job_typo");
    let conf = TempDir::new("job_typo_conf");
    let cases = [
        (
            format!("[targets.nas]\ntype = \"local\"\ndir = \"{}\"\nkepe = 3\n[jobs.nightly]\nkind = \"daily\"\ntargets = [\"nas\"]\n", dir.path().display()),
            "`kepe` (did you mean `keep`?)",
        ),
        (
            "[jobs.nightly]\nkind = \"daily\"\ntargets = [\"offsite\"]\n".to_string(),
            "names the target `offsite`, which is not declared",
        ),
        (
            format!("[targets.nas]\ntype = \"local\"\ndir = \"{}\"\n[jobs.nightly]\nkind = \"daily\"\ntargets = [\"nas\", \"drive\"]\n", dir.path().display()),
            "writes to `drive`, but no Drive folder is set",
        ),
        (
            format!("[targets.nas]\ntype = \"local\"\ndir = \"{}\"\nchunk_size = \"100KiB\"\n[jobs.nightly]\nkind = \"daily\"\ntargets = [\"nas\"]\n", dir.path().display()),
            "[targets.nas] chunk_size",
        ),
    ];
    for (text, expected) in cases {
        let config = config_file(conf.path(), &text);
        let r = run(with_config(&config, &db.url()).args(["backup", "--job", "nightly"]));
        assert_eq!(r.status, 78, "{text}: {r:?}");
        assert!(r.stderr.contains(expected), "{text}: {r:?}");
        assert!(r.stderr.contains("hint:"), "{r:?}");
        assert!(backup_files(dir.path()).is_empty(), "{text}");
    }
    // a job that is not declared names the ones that are
    let config = config_file(
        conf.path(),
        &format!("local.dir = \"{}\"\n[jobs.nightly]\nkind = \"daily\"\n[jobs.hourly_orders]\nkind = \"schema\"\n", dir.path().display()),
    );
    let r = run(with_config(&config, &db.url()).args(["backup", "--job", "nighty"]));
    assert_eq!(r.status, 78, "{r:?}");
    assert!(r.stderr.contains("no job named \"nighty\""), "{r:?}");
    assert!(
        r.stderr.contains("hourly_orders, nightly") || r.stderr.contains("nightly, hourly_orders"),
        "{r:?}"
    );
    // --job and --kind together are a usage error
    let r = run(
        with_config(&config, &db.url()).args(["backup", "--job", "nightly", "--kind", "daily"])
    );
    assert_eq!(r.status, 2, "{r:?}");
    // the job with no targets writes where `--kind` would: PGDRIVE_LOCAL_DIR (local_dir)
    let r = run(with_config(&config, &db.url()).args(["backup", "--job", "nightly"]));
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(local_backups_of(dir.path(), &db.name).len(), 1);
}

#[test]
fn check_judges_every_job_and_probes_its_named_targets() {
    let g = Google::shared_drive();
    let db = TestDb::new("job_check");
    let nas = TempDir::new("job_check_nas");
    let conf = TempDir::new("job_check_conf");
    let config = config_file(
        conf.path(),
        &format!(
            r#"
google.service_account_json = "{key}"
drive.url = "{url}"

[targets.offsite]
type = "drive"
folder_id = "{folder}"

[targets.nas]
type = "local"
dir = "{nas}"

[targets.gone]
type = "local"
dir = "{nas}/a-file/below-it"

[jobs.nightly]
kind = "daily"
targets = ["offsite", "nas"]

[jobs.broken]
kind = "daily"
targets = ["gone"]

[jobs.needs_folder]
kind = "schema"
targets = ["drive"]
"#,
            key = g.key_file.display(),
            url = g.emu.base,
            folder = g.folder,
            nas = nas.path().display(),
        ),
    );
    std::fs::write(nas.path().join("a-file"), "not a directory").unwrap();
    let r = run(with_config(&config, &db.url())
        .env("PGDRIVE_LOCAL_DIR", nas.path())
        .arg("check"));
    assert_eq!(r.status, 1, "{r:?}");
    let line = |label: &str| {
        r.stdout
            .lines()
            .find(|l| l.contains(label))
            .unwrap_or_else(|| panic!("no {label:?} line: {r:?}"))
            .to_string()
    };
    assert!(line("config job nightly").contains("complete"), "{r:?}");
    assert!(line("config job nightly").contains("offsite, nas"), "{r:?}");
    assert!(
        line("config job needs_folder").contains("no Drive folder is set for schema backups"),
        "{r:?}"
    );
    // the directory that cannot exist is found before a scheduled run fails on it
    assert!(
        r.stdout
            .lines()
            .any(|l| l.contains("a-file/below-it") && l.contains("FAIL")),
        "{r:?}"
    );
    // nothing was written by the probes
    let left = backup_files(nas.path());
    assert_eq!(left, [nas.path().join("a-file")]);
}
