//! Retention rules end to end on a local directory, with backups planted in the past the way an
//! attacker (or a restore from an old disk) would: a real backup's file copied under new names,
//! its sidecar manifest edited (started_at, created_time, job). GFS across 400 days keeps exactly
//! the expected calendar, the circuit breaker holds a rule that would delete 95%, a dry run
//! changes nothing, and a pinned backup survives `keep = 1`.

use std::path::{Path, PathBuf};

use crate::common::*;

const DAY_MS: i64 = 86_400_000;
/// 2026-01-01T02:00:00Z
const START_MS: i64 = 1_767_232_800_000;

fn rfc3339(ms: i64) -> String {
    pgdrive::timeutil::rfc3339_millis(ms)
}

/// Copies the backup `real` (and its sidecar) as job `nightly`'s backup `n` days after
/// 2026-01-01T02:00Z; returns the new name.
fn plant(dir: &Path, real: &Path, n: i64) -> String {
    let at = START_MS + n * DAY_MS;
    let name = format!("shop-daily-planted-{n:03}.sql.gz");
    std::fs::copy(real, dir.join(&name)).unwrap();
    let sidecar = format!("{}.pgdrive.json", real.display());
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sidecar).unwrap()).unwrap();
    m["id"] = name.clone().into();
    m["name"] = name.clone().into();
    m["started_at"] = rfc3339(at).into();
    m["created_time"] = rfc3339(at + 60_000).into();
    m["job"] = "nightly".into();
    m["properties"]["pgdrive_started_at"] = rfc3339(at).into();
    m["properties"]["pgdrive_job"] = "nightly".into();
    std::fs::write(
        dir.join(format!("{name}.pgdrive.json")),
        serde_json::to_string_pretty(&m).unwrap(),
    )
    .unwrap();
    name
}

fn config(conf: &TempDir, nas: &Path, rules: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = conf.path().join("pgdrive.toml");
    std::fs::write(
        &path,
        format!(
            "[targets.nas]\ntype = \"local\"\ndir = \"{}\"\n{rules}\n[jobs.nightly]\nkind = \"daily\"\ntargets = [\"nas\"]\n",
            nas.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn prune(db: &TestDb, config: &Path, flags: &[&str]) -> Run {
    run(pgdrive()
        .env("PGDRIVE_CONFIG", config)
        .env("DATABASE_URL", db.url())
        .args(["prune", "--job", "nightly"])
        .args(flags))
}

/// Every file in the directory with its bytes' length (what a dry run must not change).
fn snapshot(dir: &Path) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    v.sort();
    v
}

fn planted_left(dir: &Path) -> Vec<i64> {
    let mut v: Vec<i64> = backup_files(dir)
        .iter()
        .filter_map(|p| {
            let n = p.file_name()?.to_string_lossy().into_owned();
            n.strip_prefix("shop-daily-planted-")?
                .strip_suffix(".sql.gz")?
                .parse()
                .ok()
        })
        .collect();
    v.sort();
    v
}

#[test]
fn gfs_across_400_days_keeps_the_calendar_behind_a_circuit_breaker_and_a_dry_run() {
    let db = TestDb::new("rr_gfs");
    seed_shop(&db);
    let nas = TempDir::new("rr_gfs_nas");
    let real = local_backup(&db, nas.path(), &[("PGDRIVE_KEEP_DAILY", "0")]);
    for n in 0..400 {
        plant(nas.path(), &real, n);
    }
    let conf = TempDir::new("rr_gfs_conf");
    let config = config(
        &conf,
        nas.path(),
        "keep_daily = 7\nkeep_weekly = 4\nkeep_monthly = 12\nkeep_yearly = 3",
    );

    let before = snapshot(nas.path());
    let r = prune(&db, &config, &["--dry-run", "--json"]);
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(snapshot(nas.path()), before, "a dry run changes nothing");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(rows.len(), 400, "only the job's backups are its group");
    let held = rows.iter().filter(|r| r["decision"] == "held").count();
    assert_eq!(
        held, 381,
        "the default share holds the rules' 381 deletions"
    );
    let newest = rows
        .iter()
        .find(|r| r["name"] == "shop-daily-planted-399.sql.gz")
        .unwrap();
    assert_eq!(newest["decision"], "keep");
    assert!(newest["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r == "newest complete"));
    let table = prune(&db, &config, &["--dry-run"]);
    assert!(
        table.stdout.contains("daily 2027-02-04"),
        "{}",
        table.stdout
    );

    // without --force the breaker refuses loudly and deletes nothing
    let r = prune(&db, &config, &[]);
    assert_eq!(r.status, 1, "{r:?}");
    assert!(r.stderr.contains("would delete 381 of 400"), "{}", r.stderr);
    assert!(r.stderr.contains("--force"), "{}", r.stderr);
    assert_eq!(snapshot(nas.path()), before);

    let r = prune(&db, &config, &["--force"]);
    assert_eq!(r.status, 0, "{r:?}");
    // the last day of Mar 2026 .. Dec 2026 (monthly), Sundays Jan 17 and 24 2027 (weekly),
    // Jan 29 .. Feb 4 2027 (daily): as days after 2026-01-01
    let want: Vec<i64> = vec![
        89, 119, 150, 180, 211, 242, 272, 303, 333, 364, 381, 388, 393, 394, 395, 396, 397, 398,
        399,
    ];
    assert_eq!(planted_left(nas.path()), want);
    assert!(real.exists(), "the built-in kind's backup is another group");
    // every deleted backup took its sidecar along
    let sidecars = std::fs::read_dir(nas.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".pgdrive.json")
        })
        .count();
    assert_eq!(sidecars, want.len() + 1);
}

#[test]
fn a_pinned_backup_survives_keep_1_until_unpinned() {
    let db = TestDb::new("rr_pin");
    seed_shop(&db);
    let nas = TempDir::new("rr_pin_nas");
    let real = local_backup(&db, nas.path(), &[("PGDRIVE_KEEP_DAILY", "0")]);
    let names: Vec<String> = (0..4).map(|n| plant(nas.path(), &real, n)).collect();
    let conf = TempDir::new("rr_pin_conf");
    let config = config(&conf, nas.path(), "keep = 1\nmax_delete_share = 100");

    let pin = |verb: &str, id: &str| {
        run(pgdrive()
            .env("PGDRIVE_CONFIG", &config)
            .env("DATABASE_URL", db.url())
            .args([verb, id]))
    };
    let r = pin("pin", &names[0]);
    assert_eq!(r.status, 0, "{r:?}");
    let sidecar: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(nas.path().join(format!("{}.pgdrive.json", names[0]))).unwrap(),
    )
    .unwrap();
    assert_eq!(
        sidecar["properties"]["pgdrive_pinned"], "1",
        "the pin is in the manifest"
    );
    assert_eq!(pin("pin", "no-such-backup.sql.gz").status, 78);

    let r = prune(&db, &config, &[]);
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(
        planted_left(nas.path()),
        [0, 3],
        "the pinned oldest and the newest"
    );

    assert_eq!(pin("unpin", &names[0]).status, 0);
    let r = prune(&db, &config, &[]);
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(planted_left(nas.path()), [3]);
}

/// The application names of the sessions holding an advisory lock in `db`.
fn advisory_holders(db: &TestDb) -> Vec<String> {
    db.client()
        .query(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
              WHERE l.locktype = 'advisory' AND l.granted
                AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[test]
fn prune_waits_for_no_running_backup_it_skips_the_locked_job_with_75_and_names_the_holder() {
    let db = TestDb::new("rr_lock");
    seed_shop(&db);
    let nas = TempDir::new("rr_lock_nas");
    let real = local_backup(&db, nas.path(), &[("PGDRIVE_KEEP_DAILY", "0")]);
    for n in 0..4 {
        plant(nas.path(), &real, n);
    }
    let conf = TempDir::new("rr_lock_conf");
    let config = config(
        &conf,
        nas.path(),
        "keep = 1
max_delete_share = 100",
    );
    // a real `backup --job nightly` whose pg_dump hangs: it holds the job's lock meanwhile
    let bin = TempDir::new("rr_lock_bin");
    let hanging = fake_pg_dump(&bin, "sleep 60");
    std::thread::sleep(std::time::Duration::from_millis(1100)); // names are to the second
    let mut backup = pgdrive()
        .env("PGDRIVE_CONFIG", &config)
        .env("DATABASE_URL", db.url())
        .env("PGDRIVE_PG_DUMP", &hanging)
        .args(["backup", "--job", "nightly"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    // the database's upload has begun (its partial file), so its lock is taken (the job's
    // globals, stored before, took and released one of their own)
    let dumping = || {
        snapshot(nas.path())
            .iter()
            .any(|(n, _)| n.starts_with(&format!(".{}-daily-", db.name)))
    };
    while !(dumping()
        && advisory_holders(&db)
            .iter()
            .any(|a| a.starts_with("pgdrive daily")))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the backup never took its lock: {:?} {:?}",
            advisory_holders(&db),
            snapshot(nas.path())
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    // the running backup's own partial file comes and grows meanwhile
    let finished = |dir: &Path| {
        let mut v = snapshot(dir);
        v.retain(|(name, _)| !name.starts_with('.'));
        v
    };
    let before = finished(nas.path());
    let r = prune(&db, &config, &["--force"]);
    assert_eq!(r.status, 75, "{r:?}");
    assert!(r.stderr.contains("holds its lock"), "{}", r.stderr);
    assert!(
        r.stderr.contains("pgdrive daily on"),
        "the holder is named: {}",
        r.stderr
    );
    assert_eq!(
        finished(nas.path()),
        before,
        "nothing was pruned under a running backup"
    );
    // a dry run deletes nothing, so it needs no lock
    assert_eq!(prune(&db, &config, &["--dry-run"]).status, 0);
    // the built-in kind's group is another lock: its backup is not held up by the job's
    let r = run(pgdrive()
        .env("DATABASE_URL", db.url())
        .env("PGDRIVE_LOCAL_DIR", nas.path())
        .env("PGDRIVE_KEEP_DAILY", "1")
        .args(["prune", "--kind", "daily"]));
    assert_eq!(r.status, 0, "{r:?}");

    let _ = backup.kill();
    let _ = backup.wait();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !advisory_holders(&db).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the killed backup's lock stayed"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let r = prune(&db, &config, &["--force"]);
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(planted_left(nas.path()), [3]);
    assert!(
        advisory_holders(&db).is_empty(),
        "prune released the lock it took"
    );
}

/// One real `backup --kind daily` into the emulator's folder, keeping everything; its index.
fn drive_backup(g: &Google, db: &TestDb) -> pgdrive::drive::RemoteFile {
    let before: Vec<String> = g
        .indexed_backups(&g.key_file)
        .into_iter()
        .map(|f| f.id)
        .collect();
    let r = run(g
        .pgdrive(db)
        .env("PGDRIVE_KEEP_DAILY", "0")
        .args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 0, "{r:?}");
    let mut new: Vec<_> = g
        .indexed_backups(&g.key_file)
        .into_iter()
        .filter(|f| !before.contains(&f.id))
        .collect();
    assert_eq!(new.len(), 1);
    new.pop().unwrap()
}

#[test]
fn gfs_across_400_days_on_drive_keeps_the_calendar_and_the_breaker_holds_until_forced() {
    let g = Google::shared_drive();
    let db = TestDb::new("rr_drive_gfs");
    seed_shop(&db);
    let real = drive_backup(&g, &db);
    let bytes = g.emu.content(&real.id);
    // planted like an attacker with the folder's credentials would: the real backup's bytes and
    // index, with the start time moved into the past and the job's name
    let mut client = g.drive_client(&g.key_file);
    for n in 0..400i64 {
        let at = rfc3339(START_MS + n * DAY_MS);
        let mut props = real.app_properties.clone();
        props.insert("pgdrive_started_at".into(), at);
        props.insert("pgdrive_job".into(), "nightly".into());
        let meta = serde_json::json!({
            "name": format!("shop-daily-planted-{n:03}.sql.gz"),
            "parents": [g.folder],
            "appProperties": props,
        });
        client
            .create_small(&meta, "application/gzip", &bytes)
            .unwrap();
    }
    let conf = TempDir::new("rr_drive_conf");
    let config = conf.path().join("pgdrive.toml");
    std::fs::write(
        &config,
        format!(
            "google.service_account_json = \"{}\"\ndrive.url = \"{}\"\n[targets.offsite]\ntype = \"drive\"\nfolder_id = \"{}\"\nkeep_daily = 7\nkeep_weekly = 4\nkeep_monthly = 12\nkeep_yearly = 3\n[jobs.nightly]\nkind = \"daily\"\ntargets = [\"offsite\"]\n",
            g.key_file.display(),
            g.emu.base,
            g.folder
        ),
    )
    .unwrap();
    let planted = |g: &Google| -> Vec<i64> {
        let mut v: Vec<i64> = g
            .emu
            .backups_in(&g.folder)
            .iter()
            .filter_map(|f| {
                f["name"]
                    .as_str()?
                    .strip_prefix("shop-daily-planted-")?
                    .strip_suffix(".sql.gz")?
                    .parse()
                    .ok()
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(planted(&g).len(), 400);
    let deletes = g.emu.requests_of("delete").len();
    let r = prune(&db, &config, &["--dry-run"]);
    assert_eq!(r.status, 0, "{r:?}");
    assert!(
        r.stdout.contains("19 kept, 0 deleted, 381 held"),
        "{}",
        r.stdout
    );
    assert_eq!(planted(&g).len(), 400, "a dry run deletes nothing");
    assert_eq!(g.emu.requests_of("delete").len(), deletes);
    let r = prune(&db, &config, &[]);
    assert_eq!(r.status, 1, "{r:?}");
    assert_eq!(planted(&g).len(), 400, "the breaker held");
    let r = prune(&db, &config, &["--force"]);
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(
        planted(&g),
        [
            89, 119, 150, 180, 211, 242, 272, 303, 333, 364, 381, 388, 393, 394, 395, 396, 397,
            398, 399
        ]
    );
    assert!(g
        .emu
        .backups_in(&g.folder)
        .iter()
        .any(|f| f["id"] == real.id.as_str()));
}

#[test]
fn a_pin_on_drive_is_in_the_manifest_and_the_index_and_survives_keep_1() {
    let g = Google::shared_drive();
    let db = TestDb::new("rr_drive_pin");
    seed_shop(&db);
    let first = drive_backup(&g, &db);
    std::thread::sleep(std::time::Duration::from_millis(1100)); // names are to the second
    let _second = drive_backup(&g, &db);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let third = drive_backup(&g, &db);

    let r = run(g.pgdrive(&db).args(["pin", &first.id]));
    assert_eq!(r.status, 0, "{r:?}");
    let indexed = g.indexed_backups(&g.key_file);
    let pinned = indexed.iter().find(|f| f.id == first.id).unwrap();
    assert_eq!(
        pinned
            .app_properties
            .get("pgdrive_pinned")
            .map(String::as_str),
        Some("1")
    );
    let manifests = g.emu.manifests_in(&g.folder);
    let of_first: Vec<_> = manifests
        .iter()
        .filter(|m| m["name"] == format!("{}.manifest.json", first.name).as_str())
        .collect();
    assert_eq!(
        of_first.len(),
        1,
        "the manifest was replaced, not duplicated"
    );
    let m: serde_json::Value =
        serde_json::from_slice(&g.emu.content(of_first[0]["id"].as_str().unwrap())).unwrap();
    assert_eq!(m["properties"]["pgdrive_pinned"], "1");

    // keep 1: the newest and the pinned one stay (deleting 1 of 3 is within the breaker's share)
    let r = run(g
        .pgdrive(&db)
        .env("PGDRIVE_KEEP_DAILY", "1")
        .args(["prune", "--kind", "daily"]));
    assert_eq!(r.status, 0, "{r:?}");
    let mut left: Vec<String> = g
        .indexed_backups(&g.key_file)
        .into_iter()
        .map(|f| f.id)
        .collect();
    left.sort();
    let mut want = vec![first.id.clone(), third.id.clone()];
    want.sort();
    assert_eq!(left, want);

    assert_eq!(run(g.pgdrive(&db).args(["unpin", &first.id])).status, 0);
    let r = run(g
        .pgdrive(&db)
        .env("PGDRIVE_KEEP_DAILY", "1")
        .args(["prune", "--kind", "daily"]));
    assert_eq!(r.status, 0, "{r:?}");
    let left: Vec<String> = g
        .indexed_backups(&g.key_file)
        .into_iter()
        .map(|f| f.id)
        .collect();
    assert_eq!(left, [third.id.clone()]);
}

/// The view of job `nightly` on `target` in `status --json`'s retention section.
fn view<'a>(status: &'a serde_json::Value, target: &str) -> &'a serde_json::Value {
    status["retention"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["target"] == target && v["job"] == "nightly")
        .unwrap_or_else(|| panic!("no view of {target}: {status:#}"))
}

#[test]
fn status_counts_what_each_rule_holds_from_the_catalog_and_from_the_listing_alike() {
    let db = TestDb::new("rr_status");
    seed_shop(&db);
    let nas = TempDir::new("rr_status_nas");
    let conf = TempDir::new("rr_status_conf");
    let rules = "keep_daily = 7\nkeep_weekly = 4\nkeep_monthly = 12\nkeep_yearly = 3";
    let config = config(&conf, nas.path(), rules);
    let with = |cmd: &mut std::process::Command| {
        cmd.env("PGDRIVE_CONFIG", &config)
            .env("DATABASE_URL", db.url())
            .env_remove("PGDRIVE_LOCAL_DIR");
    };
    // one real job backup: its file, sidecar and catalog row are the pattern for 400 dailies
    // in the past, planted on the target and in the catalog alike; then it goes
    let mut backup = pgdrive();
    with(&mut backup);
    let r = run(backup.args(["backup", "--job", "nightly"]));
    assert_eq!(r.status, 0, "{r:?}");
    let real = backup_files(nas.path())
        .into_iter()
        .find(|p| p.to_string_lossy().contains("-daily-"))
        .unwrap();
    for n in 0..400 {
        plant(nas.path(), &real, n);
    }
    std::fs::remove_file(format!("{}.pgdrive.json", real.display())).unwrap();
    std::fs::remove_file(&real).unwrap();
    db.exec(
        "WITH real AS (SELECT * FROM backups WHERE job = 'nightly' AND type = 'daily' AND status = 'SUCCESS'),
              planted AS (
                INSERT INTO backups (created_at, filename, size_bytes, status, type, database_name, sha256, md5, job)
                SELECT timestamptz '2026-01-01 02:00Z' + n * interval '1 day',
                       format('shop-daily-planted-%s.sql.gz', lpad(n::text, 3, '0')),
                       r.size_bytes, 'SUCCESS', 'daily', r.database_name, r.sha256, r.md5, 'nightly'
                  FROM real r, generate_series(0, 399) n
                RETURNING id, filename)
         INSERT INTO backup_copies (backup_id, target, backend, status, object_id)
         SELECT id, 'nas', 'local', 'STORED', filename FROM planted;
         DELETE FROM backups WHERE job = 'nightly' AND type = 'daily' AND filename NOT LIKE 'shop-daily-planted-%';",
    );
    let mut pin = pgdrive();
    with(&mut pin);
    let r = run(pin.args(["pin", "shop-daily-planted-000.sql.gz"]));
    assert_eq!(r.status, 0, "{r:?}");

    let html = conf.path().join("status.html");
    let status = |catalog: Option<&str>, html_file: Option<&Path>| {
        let mut cmd = pgdrive();
        with(&mut cmd);
        if let Some(url) = catalog {
            cmd.env("PGDRIVE_CATALOG_URL", url);
        }
        cmd.args(["status", "--json"]);
        if let Some(f) = html_file {
            cmd.arg("--html").arg(f);
        }
        let r = run(&mut cmd);
        let v: serde_json::Value =
            serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {r:?}"));
        v
    };
    // daily: Jan 29 .. Feb 4 2027; weekly: the 4 newest ISO weeks (2 of them dailies); monthly:
    // Mar 2026 .. Feb 2027; yearly: 2026 and 2027 (only two years have backups)
    let want = serde_json::json!({
        "last": 0, "hourly": 0, "daily": 7, "weekly": 4, "monthly": 12, "yearly": 2,
        "within": 0, "pinned": 1, "newest": 1,
    });
    let check = |v: &serde_json::Value, source: &str| {
        assert_eq!(v["source"], source, "{v:#}");
        assert_eq!(v["database"], db.name.as_str());
        assert_eq!(v["backups"], 400, "{v:#}");
        assert_eq!(v["held_by"], want, "{v:#}");
        // 381 of 400 go by the rules, but the pinned one stays: 380, held back by the breaker
        assert_eq!(
            (v["would_delete"].as_u64(), v["held_by_breaker"].as_u64()),
            (Some(0), Some(380)),
            "{v:#}"
        );
        assert_eq!(v["oldest_restorable_ms"], START_MS, "{v:#}");
        assert_eq!(v["newest_ms"], START_MS + 399 * DAY_MS, "{v:#}");
    };
    let from_catalog = status(None, Some(&html));
    check(view(&from_catalog, "nas"), "catalog");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<h2>Retention</h2>"), "{page}");
    assert!(
        page.contains("380 held back by the circuit breaker"),
        "{page}"
    );
    assert!(page.contains("2026-01-01 02:00 UTC"), "{page}");

    // the catalog unreachable: the target's listing (the pin from the sidecar) says the same
    let dead = "postgresql://postgres@127.0.0.1:1/postgres?connect_timeout=2";
    let from_listing = status(Some(dead), None);
    check(view(&from_listing, "nas"), "target");

    // a target that cannot be listed (its directory lies under a plain file) is shown as
    // unreachable; status does not fail on it
    let blocker = conf.path().join("not-a-directory");
    std::fs::write(&blocker, "").unwrap();
    std::fs::write(
        &config,
        std::fs::read_to_string(&config).unwrap().replace(
            "targets = [\"nas\"]",
            &format!(
                "targets = [\"nas\", \"gone\"]\n[targets.gone]\ntype = \"local\"\ndir = \"{}/rr_status\"",
                blocker.display()
            ),
        ),
    )
    .unwrap();
    let from_listing = status(Some(dead), Some(&html));
    check(view(&from_listing, "nas"), "target");
    let gone = view(&from_listing, "gone");
    assert_eq!(gone["reachable"], false, "{gone:#}");
    assert!(
        gone["error"].as_str().unwrap().contains("rr_status"),
        "{gone:#}"
    );
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("unreachable:"), "{page}");
    // text: one line per group, the rules that hold something
    let mut cmd = pgdrive();
    with(&mut cmd);
    let text = run(cmd.env("PGDRIVE_CATALOG_URL", dead).arg("status")).stdout;
    assert!(
        text.contains("held by daily 7, weekly 4, monthly 12, yearly 2, pinned 1, newest 1"),
        "{text}"
    );
    assert!(text.contains("UNREACHABLE"), "{text}");
}
