//! Restores and verifies that stop making progress, or are stopped: a Drive download that hangs,
//! a local FIFO whose writer stops, a restore client blocked on a lock. Each must fail within
//! seconds — as "stalled" under the watchdog, or "interrupted by SIGTERM" — with nothing
//! committed in the target. And a client whose server is merely busy is not stalled.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::json;

/// A database whose dump is a few MB (incompressible enough that half of the stored file is far
/// more than pgdrive's held-back tail), so a restore cut in the middle has run rows in psql.
fn seed(db: &TestDb) {
    db.exec(
        "CREATE TABLE big (id int PRIMARY KEY, payload text NOT NULL);
         INSERT INTO big SELECT g, md5(g::text) || md5((g * 7)::text) FROM generate_series(1, 60000) g;",
    );
}

fn user_tables(db: &str) -> Vec<String> {
    let mut c = postgres::Client::connect(&admin_url(db), postgres::NoTls).unwrap();
    c.query(
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S') AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

fn sigterm(child: &Child) {
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
}

/// A Drive backup whose download delivers half the file, then hangs on every further request.
fn drive_backup_that_hangs(prefix: &str) -> (Google, TestDb) {
    let g = Google::shared_drive();
    let db = TestDb::new(prefix);
    seed(&db);
    let r = run(g.pgdrive(&db).args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 0, "{r:?}");
    backup_download_hangs(&g);
    (g, db)
}

/// The next run's download of the backup delivers half the file, then hangs (its first download
/// is the backup's manifest, which arrives).
fn backup_download_hangs(g: &Google) {
    g.emu.clear_faults();
    g.emu.fault(json!([
        {"op": "get_media", "nth": 2, "action": {"drop": "mid_body"}},
        {"op": "get_media", "nth": 3, "times": 100, "action": {"hang_ms": 60000}},
    ]));
}

fn second_download_started(g: &Google) {
    assert!(
        g.emu.wait_for_request(
            |r| r["op"] == "get_media" && r["range"] != "bytes=0-",
            Duration::from_secs(20)
        ),
        "the download was never resumed"
    );
}

#[test]
fn a_download_that_hangs_fails_as_stalled_and_commits_nothing() {
    let (g, db) = drive_backup_that_hangs("stall_dl");
    let target = TestDb::new("stall_dl_target");
    let child = g
        .pgdrive(&db)
        .env("PGDRIVE_STALL_TIMEOUT_MS", "1500")
        .args(["restore", "latest", "--target-url", &target.url()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (stderr, _) = fails_within(child, Duration::from_secs(20));
    assert!(
        stderr.contains("stalled: no bytes of the backup arrived for 1.5 s"),
        "{stderr}"
    );
    assert!(stderr.contains("PGDRIVE_STALL_TIMEOUT_MS"), "{stderr}");
    assert_eq!(user_tables(&target.name), Vec::<String>::new());

    // verify: the same stall, recorded as such
    backup_download_hangs(&g);
    let child = g
        .pgdrive(&db)
        .env("PGDRIVE_STALL_TIMEOUT_MS", "1500")
        .args(["verify", "latest"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (stderr, _) = fails_within(child, Duration::from_secs(20));
    assert!(
        stderr.contains("stalled: no bytes of the backup arrived"),
        "{stderr}"
    );
    let result: String = db
        .client()
        .query_one("SELECT verify_result FROM backups", &[])
        .unwrap()
        .get(0);
    assert!(result.starts_with("FAILED: stalled"), "{result}");
}

#[test]
fn sigterm_during_a_hanging_download_exits_within_seconds_and_commits_nothing() {
    let (g, db) = drive_backup_that_hangs("stall_sig");
    let target = TestDb::new("stall_sig_target");
    let child = g
        .pgdrive(&db)
        .args(["restore", "latest", "--target-url", &target.url()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    second_download_started(&g);
    std::thread::sleep(Duration::from_millis(300));
    sigterm(&child);
    let (stderr, took) = fails_within(child, Duration::from_secs(10));
    assert!(stderr.contains("interrupted by SIGTERM"), "{stderr}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(user_tables(&target.name), Vec::<String>::new());
}

/// A local backup of `db`, its file replaced by a FIFO; returns the directory, the FIFO's path
/// and the file's bytes.
fn local_backup_as_fifo(db: &TestDb, prefix: &str) -> (TempDir, PathBuf, Vec<u8>) {
    let dir = TempDir::new(prefix);
    let r = run(pgdrive()
        .env("DATABASE_URL", db.url())
        .args(["backup", "--kind", "daily", "--to"])
        .arg(dir.path()));
    assert_eq!(r.status, 0, "{r:?}");
    let path = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let c_path = std::ffi::CString::new(path.to_string_lossy().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    (dir, path, bytes)
}

/// A restore fed by a FIFO that delivers half the file, then nothing (kept open). Returns the
/// running pgdrive and the writer, which must stay alive until pgdrive has exited.
fn restore_from_stopping_fifo(
    db: &TestDb,
    target: &TestDb,
    prefix: &str,
    stall_ms: &str,
) -> (Child, std::fs::File, TempDir) {
    let (dir, path, bytes) = local_backup_as_fifo(db, prefix);
    let mut child = pgdrive()
        .env("PGDRIVE_LOCAL_DIR", dir.path())
        .env("PGDRIVE_STALL_TIMEOUT_MS", stall_ms)
        .args([
            "restore",
            "latest",
            "--database",
            &db.name,
            "--target-url",
            &target.url(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut fifo = open_fifo_writer(&path, &mut child);
    fifo.write_all(&bytes[..bytes.len() / 2]).unwrap();
    (child, fifo, dir)
}

#[test]
fn sigterm_while_reading_a_fifo_that_stopped_exits_within_seconds() {
    let db = TestDb::new("stall_fifo_sig");
    seed(&db);
    let target = TestDb::new("stall_fifo_sig_target");
    let (child, fifo, _dir) = restore_from_stopping_fifo(&db, &target, "stall_fifo_sig", "0");
    // psql has had rows, and pgdrive now waits for bytes that never come
    std::thread::sleep(Duration::from_millis(1500));
    sigterm(&child);
    let (stderr, took) = fails_within(child, Duration::from_secs(10));
    drop(fifo);
    assert!(stderr.contains("interrupted by SIGTERM"), "{stderr}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(user_tables(&target.name), Vec::<String>::new());
}

#[test]
fn a_fifo_that_stops_fails_as_stalled() {
    let db = TestDb::new("stall_fifo");
    seed(&db);
    let target = TestDb::new("stall_fifo_target");
    let (child, fifo, _dir) = restore_from_stopping_fifo(&db, &target, "stall_fifo", "1500");
    let (stderr, _) = fails_within(child, Duration::from_secs(15));
    drop(fifo);
    assert!(
        stderr.contains("stalled: no bytes of the backup arrived for 1.5 s"),
        "{stderr}"
    );
    assert_eq!(user_tables(&target.name), Vec::<String>::new());
}

/// psql blocked on a lock stops reading; its session waits on the lock, which is not work: the
/// restore fails as stalled, psql is killed inside its transaction and the target keeps what it
/// had.
#[test]
fn a_client_blocked_on_a_lock_fails_as_stalled_and_rolls_back() {
    let db = TestDb::new("stall_lock");
    seed(&db);
    let dir = TempDir::new("stall_lock");
    let r = run(pgdrive()
        .env("DATABASE_URL", db.url())
        .args(["backup", "--kind", "daily", "--to"])
        .arg(dir.path()));
    assert_eq!(r.status, 0, "{r:?}");
    let target = TestDb::new("stall_lock_target");
    target.exec("CREATE TABLE keep_me (id int); INSERT INTO keep_me VALUES (1);");
    let mut holder = target.client();
    let mut lock = holder.transaction().unwrap();
    lock.batch_execute("LOCK TABLE keep_me IN ACCESS SHARE MODE")
        .unwrap();
    let child = pgdrive()
        .env("PGDRIVE_LOCAL_DIR", dir.path())
        .env("PGDRIVE_STALL_TIMEOUT_MS", "1500")
        .args([
            "restore",
            "latest",
            "--database",
            &db.name,
            "--clean",
            "--target-url",
            &target.url(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (stderr, _) = fails_within(child, Duration::from_secs(15));
    assert!(
        stderr.contains("stalled: psql accepted no input and its session did no work for 1.5 s"),
        "{stderr}"
    );
    lock.rollback().unwrap();
    assert_eq!(
        user_tables(&target.name),
        vec!["public.keep_me".to_string()]
    );
    assert_eq!(target.query_i64("SELECT count(*) FROM keep_me"), 1);
}

/// A restore whose server works for longer than the stall timeout (a row check that sleeps 4 s)
/// reads nothing meanwhile, yet is not stalled: its session is seen working.
#[test]
fn a_busy_server_is_not_a_stall() {
    let db = TestDb::new("stall_busy");
    db.exec(
        "CREATE FUNCTION slow_ok(id int) RETURNS boolean LANGUAGE sql IMMUTABLE
             AS $$ SELECT pg_sleep(CASE WHEN id = 1 THEN 4 ELSE 0 END) IS NOT NULL $$;
         CREATE TABLE checked (id int CHECK (public.slow_ok(id)));
         INSERT INTO checked VALUES (2), (3);",
    );
    db.exec("INSERT INTO checked VALUES (1);");
    let dir = TempDir::new("stall_busy");
    let r = run(pgdrive()
        .env("DATABASE_URL", db.url())
        .args(["backup", "--kind", "daily", "--to"])
        .arg(dir.path()));
    assert_eq!(r.status, 0, "{r:?}");
    let target = TestDb::new("stall_busy_target");
    let started = Instant::now();
    let r = run(pgdrive()
        .env("PGDRIVE_LOCAL_DIR", dir.path())
        .env("PGDRIVE_STALL_TIMEOUT_MS", "1000")
        .args([
            "restore",
            "latest",
            "--database",
            &db.name,
            "--target-url",
            &target.url(),
        ]));
    assert_eq!(r.status, 0, "{r:?}");
    assert!(started.elapsed() >= Duration::from_secs(4));
    assert_eq!(target.query_i64("SELECT count(*) FROM checked"), 3);
}
