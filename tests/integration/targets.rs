//! Storage targets: the one conformance suite (`pgdrive::storage::conformance`) run against every
//! real target (a local directory, and Drive through the emulator; the in-memory target runs it
//! in the unit tests), and the commands that read a target by name (`--target`), including
//! `restore latest` falling back to the local copy when Drive cannot be reached.

use std::time::Duration;

use crate::common::*;
use pgdrive::drive::auth::Credentials;
use pgdrive::drive::retry::RetryPolicy;
use pgdrive::storage::config::{DriveConfig, TargetConfig, TargetKind};
use pgdrive::storage::conformance::{self, Harness};
use pgdrive::storage::{self, Target};
use serde_json::json;

fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        max_retries: 1,
        initial: Duration::from_millis(10),
        max: Duration::from_millis(50),
        ..RetryPolicy::default()
    }
}

struct Local(TempDir);

impl Harness for Local {
    fn target(&mut self) -> Box<dyn Target> {
        storage::open(TargetConfig {
            name: "local".into(),
            kind: TargetKind::Local {
                dir: self.0.path().to_path_buf(),
            },
        })
    }
    fn page_size(&self) -> usize {
        2 // a directory has no pages: this only sizes the listing check
    }
    fn leftovers(&mut self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.0.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
    fn fail_next_upload(&mut self, _after_bytes: u64) -> bool {
        false // a full disk is attacked in tests/integration/local_target.rs
    }
    fn clear_faults(&mut self) {}
}

#[test]
fn a_local_directory_conforms() {
    conformance::run(&mut Local(TempDir::new("conformance")));
}

struct Drive {
    google: Google,
    page_size: u32,
}

impl Harness for Drive {
    fn target(&mut self) -> Box<dyn Target> {
        let key = std::fs::read_to_string(&self.google.key_file).unwrap();
        let mut t = storage::open(TargetConfig {
            name: "drive".into(),
            kind: TargetKind::Drive(Box::new(DriveConfig {
                folder_id: self.google.folder.clone(),
                base_url: self.google.emu.base.clone(),
                credentials: Credentials::parse(&key, "test key", None).unwrap(),
                retry: quick_retries(),
                page_size: self.page_size,
            })),
        });
        t.check_readable().unwrap();
        t
    }
    fn page_size(&self) -> usize {
        self.page_size as usize
    }
    fn leftovers(&mut self) -> Vec<String> {
        let mut v: Vec<String> = self
            .google
            .emu
            .files_in(&self.google.folder)
            .iter()
            .map(|f| f["name"].as_str().unwrap().to_string())
            .collect();
        let open = self
            .google
            .emu
            .sessions()
            .iter()
            .filter(|s| s["state"] == "open")
            .count();
        v.extend((0..open).map(|i| format!("<open upload session {i}>")));
        v.sort();
        v
    }
    fn fail_next_upload(&mut self, _after_bytes: u64) -> bool {
        // the second chunk is refused for good (400 is not retried); the rule fires once
        self.google.emu.fault(json!([
            {"op": "upload_chunk", "nth": 2, "action": {"status": 400}},
        ]));
        true
    }
    fn clear_faults(&mut self) {}
}

#[test]
fn drive_through_the_emulator_conforms() {
    let mut h = Drive {
        google: Google::shared_drive(),
        page_size: 2,
    };
    conformance::run(&mut h);
    // the listings really were paged
    let pages = h
        .google
        .emu
        .requests()
        .iter()
        .filter(|r| r["op"] == "list" && r["query"]["pageToken"].is_string())
        .count();
    assert!(pages >= 2, "no listing used a second page");
}

// ------------------------------------------------------------- reading a target by name

/// A daily backup of `db` stored in Drive and in a local directory.
fn backed_up_twice(db: &TestDb, g: &Google, dir: &TempDir) {
    seed_shop(db);
    let r = run(g
        .pgdrive(db)
        .env("PGDRIVE_LOCAL_DIR", dir.path())
        .args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 0, "{r:?}");
}

fn listed_storage(r: &Run) -> Vec<String> {
    let rows: Vec<serde_json::Value> = serde_json::from_str(&r.stdout).expect("list --json");
    rows.iter()
        .map(|row| row["storage"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn list_reads_the_target_it_is_told_and_refuses_an_unknown_name() {
    let g = Google::shared_drive();
    let db = TestDb::new("targets_list");
    let dir = TempDir::new("targets_list");
    backed_up_twice(&db, &g, &dir);
    let list = |target: Option<&str>| {
        let mut cmd = g.pgdrive(&db);
        cmd.env("PGDRIVE_LOCAL_DIR", dir.path())
            .args(["list", "--json"]);
        if let Some(t) = target {
            cmd.args(["--target", t]);
        }
        run(&mut cmd)
    };
    let default = list(None);
    assert_eq!(default.status, 0, "{default:?}");
    assert_eq!(
        listed_storage(&default),
        vec!["drive".to_string()],
        "Drive by default"
    );
    let drive_id =
        serde_json::from_str::<serde_json::Value>(&default.stdout).unwrap()[0]["id"].clone();
    let local = list(Some("local"));
    assert_eq!(local.status, 0, "{local:?}");
    assert_eq!(listed_storage(&local), vec!["local".to_string()]);
    let local_id =
        serde_json::from_str::<serde_json::Value>(&local.stdout).unwrap()[0]["id"].clone();
    assert_ne!(drive_id, local_id, "the two listings read the same storage");
    let unknown = list(Some("s3"));
    assert_eq!(unknown.status, 78, "{unknown:?}");
    assert!(
        unknown.stderr.contains("no target named \"s3\"")
            && unknown.stderr.contains("drive, local"),
        "{}",
        unknown.stderr
    );
}

#[test]
fn restore_latest_falls_back_to_the_local_copy_when_drive_is_unreachable() {
    let g = Google::shared_drive();
    let db = TestDb::new("targets_fallback");
    let dir = TempDir::new("targets_fallback");
    backed_up_twice(&db, &g, &dir);
    let into = TestDb::new("targets_fallback_into");
    // Drive answers nothing: every request of any kind is refused as unavailable
    g.emu.fault(json!([
        {"op": "any", "times": 1000, "action": {"status": 503}},
    ]));
    let restore = |target: Option<&str>| {
        let mut cmd = g.pgdrive(&db);
        cmd.env("PGDRIVE_LOCAL_DIR", dir.path())
            .env("PGDRIVE_RETRY_MAX", "0")
            .args(["restore", "latest", "--target-url", &into.url()]);
        if let Some(t) = target {
            cmd.args(["--target", t]);
        }
        run(&mut cmd)
    };
    // told to use Drive alone, it fails as unavailable (and restores nothing)
    let only_drive = restore(Some("drive"));
    assert_eq!(only_drive.status, 69, "{only_drive:?}");
    // by default it falls back to the local copy, and says so
    let r = restore(None);
    assert_eq!(r.status, 0, "{r:?}");
    assert!(
        r.stderr
            .contains("target drive cannot provide the backup; trying target local"),
        "{}",
        r.stderr
    );
    assert_eq!(into.query_i64("SELECT count(*) FROM orders"), 5000);
}

#[test]
fn status_shows_what_the_named_target_holds() {
    let g = Google::shared_drive();
    let db = TestDb::new("targets_status");
    let dir = TempDir::new("targets_status");
    seed_shop(&db);
    // stored in the local directory only: the Drive folder stays empty
    let r = run(pgdrive()
        .env("DATABASE_URL", db.url())
        .env("PGDRIVE_LOCAL_DIR", dir.path())
        .args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 0, "{r:?}");
    let status = |target: &str| {
        run(g
            .pgdrive(&db)
            .env("PGDRIVE_LOCAL_DIR", dir.path())
            .args(["status", "--kind", "daily", "--json", "--target", target]))
    };
    let daily = |r: &Run| -> serde_json::Value {
        let dash: serde_json::Value = serde_json::from_str(&r.stdout).expect("status --json");
        assert_eq!(
            dash["catalog_ok"], false,
            "--target must read the storage, not the catalog"
        );
        dash["kinds"][0]["last_success"].clone()
    };
    let local = status("local");
    assert_eq!(local.status, 0, "{local:?}");
    assert!(
        daily(&local)["filename"]
            .as_str()
            .is_some_and(|f| f.contains("-daily-")),
        "{}",
        local.stdout
    );
    let drive = status("drive");
    assert_eq!(
        drive.status, 1,
        "an empty Drive folder has no recent backup: {drive:?}"
    );
    assert!(daily(&drive).is_null(), "{}", drive.stdout);
    let unknown = status("s3");
    assert_eq!(unknown.status, 78, "{unknown:?}");
}

#[test]
fn restore_does_not_guess_on_another_target_when_latest_is_ambiguous() {
    let g = Google::shared_drive();
    let a = TestDb::new("targets_ambig_a");
    let b = TestDb::new("targets_ambig_b");
    let dir = TempDir::new("targets_ambig");
    backed_up_twice(&a, &g, &dir); // Drive and the local directory
    seed_shop(&b);
    let r = run(g.pgdrive(&b).args(["backup", "--kind", "daily"])); // Drive only
    assert_eq!(r.status, 0, "{r:?}");
    let into = TestDb::new("targets_ambig_into");
    // no DATABASE_URL, no --database: Drive holds two databases' backups, the local copy one
    let r = run(g
        .pgdrive(&a)
        .env_remove("DATABASE_URL")
        .env("PGDRIVE_LOCAL_DIR", dir.path())
        .args(["restore", "latest", "--target-url", &into.url()]));
    assert_eq!(r.status, 78, "{r:?}");
    assert!(r.stderr.contains("which one is latest?"), "{}", r.stderr);
    assert!(!r.stderr.contains("trying target local"), "{}", r.stderr);
    assert_eq!(
        into.query_i64("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"),
        0
    );
}

#[test]
fn catalog_rebuild_recreates_dropped_rows_from_the_targets_once() {
    let g = Google::shared_drive();
    let db = TestDb::new("targets_rebuild");
    let dir = TempDir::new("targets_rebuild");
    backed_up_twice(&db, &g, &dir); // one backup, on Drive and in the directory
    let before: (String, String, String, String, String) = {
        let row = db
            .client()
            .query_one(
                "SELECT filename, drive_file_id, local_path, sha256, row_counts::text FROM backups",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4))
    };
    // pinned (in the manifests), so the rebuilt copy rows must say so too
    let r = run(g.pgdrive(&db).args(["pin", &before.1]));
    assert_eq!(r.status, 0, "{r:?}");
    db.exec("DROP TABLE backups CASCADE");
    let rebuild = || {
        run(g
            .pgdrive(&db)
            .env("PGDRIVE_LOCAL_DIR", dir.path())
            .args(["catalog", "rebuild"]))
    };
    let r = rebuild();
    assert_eq!(r.status, 0, "{r:?}");
    assert!(r.stdout.contains("added 1 row to the catalog"), "{r:?}");
    let row = db
        .client()
        .query_one(
            "SELECT filename, drive_file_id, local_path, sha256, row_counts::text, status, type, database_name
               FROM backups",
            &[],
        )
        .unwrap();
    let after: (String, String, String, String, String) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    assert_eq!(
        after, before,
        "the row is back, both copies' locations in it"
    );
    assert_eq!(row.get::<_, String>(5), "SUCCESS");
    assert_eq!(row.get::<_, String>(6), "daily");
    assert_eq!(row.get::<_, String>(7), db.name);
    assert_eq!(
        db.query_i64("SELECT count(*) FROM backup_copies WHERE pinned"),
        1,
        "the pin is mirrored again"
    );
    // a second run adds nothing
    let r = rebuild();
    assert_eq!(r.status, 0, "{r:?}");
    assert!(r.stdout.contains("added 0 rows"), "{r:?}");
    assert_eq!(db.query_i64("SELECT count(*) FROM backups"), 1);
}

// ------------------------------------------------------------- a slow Drive beside a local directory

/// The emulator reads Drive uploads this fast: a backup of the shop takes a few seconds.
const SLOW_DRIVE_BYTES_PER_S: u64 = 40 * 1024;

/// `backup --kind daily` of `db` to Drive (throttled to [`SLOW_DRIVE_BYTES_PER_S`]) and to `dir`.
fn backup_to_slow_drive_and(db: &TestDb, g: &Google, dir: &TempDir) -> std::process::Child {
    seed_shop(db);
    g.emu
        .config(json!({ "upload_bytes_per_second": SLOW_DRIVE_BYTES_PER_S }));
    g.pgdrive(db)
        .env("PGDRIVE_LOCAL_DIR", dir.path())
        .args(["backup", "--kind", "daily"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn a_backup_to_a_slow_drive_and_a_local_directory_stores_both_copies() {
    let g = Google::shared_drive();
    let db = TestDb::new("targets_slow_drive");
    let dir = TempDir::new("targets_slow_drive");
    let child = backup_to_slow_drive_and(&db, &g, &dir);
    let (out, took) = exit_within(child, Duration::from_secs(120));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let drive = g.emu.backups_in(&g.folder);
    assert_eq!(drive.len(), 1, "{drive:#?}");
    let local = backup_files(dir.path());
    assert_eq!(local.len(), 1, "{local:?}");
    let bytes = std::fs::read(&local[0]).unwrap();
    assert_eq!(g.emu.content(drive[0]["id"].as_str().unwrap()), bytes);
    // the throttle really held the upload back: the run lasted as long as the link needs
    let link_time = Duration::from_secs_f64(bytes.len() as f64 / SLOW_DRIVE_BYTES_PER_S as f64);
    assert!(
        took >= link_time,
        "{} bytes in {took:?} at {SLOW_DRIVE_BYTES_PER_S} B/s",
        bytes.len()
    );
    eprintln!("{} bytes; the run took {took:?}", bytes.len());
}

/// With the targets written side by side, a slow Drive does not hold the local copy back: the
/// local file is in place while Drive is still receiving the upload.
#[test]
fn a_slow_drive_does_not_hold_back_the_local_copy() {
    let g = Google::shared_drive();
    let db = TestDb::new("targets_slow_drive_order");
    let dir = TempDir::new("targets_slow_drive_order");
    let mut child = backup_to_slow_drive_and(&db, &g, &dir);
    let drive_done = || g.emu.sessions().iter().any(|s| s["state"] == "completed");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let local_first = loop {
        if !backup_files(dir.path()).is_empty() {
            break !drive_done();
        }
        if drive_done() {
            break false;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "pgdrive exited with neither copy stored"
        );
        assert!(std::time::Instant::now() < deadline, "no copy after 120 s");
        std::thread::sleep(Duration::from_millis(20));
    };
    let (out, _) = exit_within(child, Duration::from_secs(120));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        local_first,
        "the local file appeared only after Drive had the whole upload"
    );
}
