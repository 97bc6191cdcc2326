//! `pgdrive backup` to Drive and a local directory at once, where one of them fails mid-stream:
//! the other stores the backup (exit 4), the catalog has a SUCCESS row with one STORED and one
//! FAILED copy, and the log and the notification name the target that failed. When both fail,
//! the run fails with a FAILED copy for each.

use std::os::unix::process::CommandExt;
use std::process::Command;

use crate::common::*;
use serde_json::{json, Value};

const SENDGRID_KEY: &str = "SG.fanout-test-key";

/// Both targets, 256 KiB chunks (the bulky dump takes several), email through the emulator.
fn both_targets(g: &Google, db: &TestDb, dir: &TempDir) -> Command {
    g.emu.post("sendgrid_keys", json!({ "key": SENDGRID_KEY }));
    let mut cmd = g.pgdrive(db);
    cmd.env("PGDRIVE_LOCAL_DIR", dir.path())
        .env("PGDRIVE_CHUNK_SIZE", "256KiB")
        .env("SENDGRID_API_KEY", SENDGRID_KEY)
        .env("SENDGRID_FROM_EMAIL", "backups@example.com")
        .env("PGDRIVE_NOTIFY_EMAIL", "ops@example.com")
        .env("PGDRIVE_SENDGRID_URL", &g.emu.base)
        .args(["--log-format", "json", "backup", "--kind", "daily"]);
    cmd
}

/// Every chunk PUT answers 503: the Drive upload gives up after its retries.
fn drive_refuses_every_chunk(g: &Google) {
    g.emu.fault(
        json!([{"op": "upload_chunk", "nth": 1, "times": 100000, "action": {"status": 503}}]),
    );
}

/// Files pgdrive writes may not grow past 64 KiB (RLIMIT_FSIZE; SIGXFSZ ignored, so the write
/// fails with EFBIG): the local target fails part-way through the dump, like a full disk.
fn local_files_limited_to_64kib(cmd: &mut Command) {
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: 64 << 10,
                rlim_max: 64 << 10,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// (target, backend, status, error) of every backup_copies row, in order.
fn copies(db: &TestDb) -> Vec<(String, String, String, Option<String>)> {
    db.client()
        .query(
            "SELECT target, backend, status, error FROM backup_copies ORDER BY backup_id, target",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

fn json_lines(r: &Run) -> Vec<Value> {
    r.stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The text of the one email sent.
fn the_mail(g: &Google) -> String {
    let mail = g.emu.get("mail")["messages"].as_array().unwrap().clone();
    assert_eq!(mail.len(), 1, "{mail:#?}");
    mail[0].to_string()
}

fn assert_partial_run(r: &Run, failed: &str) {
    assert_eq!(r.status, 4, "{r:?}");
    let lines = json_lines(r);
    let going_on = lines
        .iter()
        .find(|l| l["msg"] == "a target failed; the backup goes on to the others")
        .unwrap_or_else(|| panic!("the failure is logged when it happens: {r:?}"));
    assert_eq!(going_on["target"], failed, "{r:?}");
    let last = lines.last().unwrap();
    assert_eq!(last["msg"], "backup finished", "{r:?}");
    assert_eq!(last["outcome"], "stored on 1 of 2 targets", "{r:?}");
    assert_eq!(last["failed_targets"], failed, "{r:?}");
}

#[test]
fn drive_refusing_every_chunk_leaves_the_local_copy_and_exits_4() {
    let g = Google::shared_drive();
    let db = TestDb::new("fanout_drive_fails");
    bulky(&db);
    let dir = TempDir::new("fanout_drive_fails");
    drive_refuses_every_chunk(&g);
    let r = run(&mut both_targets(&g, &db, &dir));
    assert_partial_run(&r, "drive");

    // the local copy is complete and restores
    let files = backup_files(dir.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let target = TestDb::new("fanout_drive_fails_restored");
    restore_gz(&std::fs::read(&files[0]).unwrap(), &target.url());
    assert_eq!(target.query_i64("SELECT count(*) FROM blobs"), 40000);
    assert!(g.emu.backups_in(&g.folder).is_empty(), "nothing on Drive");

    let rows = db.catalog();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, "SUCCESS");
    let copies = copies(&db);
    assert_eq!(copies.len(), 2, "{copies:#?}");
    let (target, backend, status, error) = &copies[0];
    assert_eq!(
        (&**target, &**backend, &**status),
        ("drive", "drive", "FAILED")
    );
    let error = error.as_deref().unwrap();
    assert!(
        error.contains("Google Drive") && error.contains("503") && error.contains("gave up after"),
        "a clear error: {error}"
    );
    assert_eq!(
        (&*copies[1].0, &*copies[1].1, &*copies[1].2, &copies[1].3),
        ("local", "local", "STORED", &None)
    );

    let mail = the_mail(&g);
    assert!(mail.contains("not stored on target drive"), "{mail}");
}

#[test]
fn a_local_write_failing_mid_stream_leaves_the_drive_copy_and_exits_4() {
    let g = Google::shared_drive();
    let db = TestDb::new("fanout_local_fails");
    bulky(&db);
    let dir = TempDir::new("fanout_local_fails");
    let mut cmd = both_targets(&g, &db, &dir);
    local_files_limited_to_64kib(&mut cmd);
    let r = run(&mut cmd);
    assert_partial_run(&r, "local");

    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "the failed local upload left nothing behind"
    );
    let stored = g.emu.backups_in(&g.folder);
    assert_eq!(stored.len(), 1, "{stored:#?}");
    let content = g.emu.content(stored[0]["id"].as_str().unwrap());
    assert!(
        content.len() > 256 << 10,
        "several chunks: {}",
        content.len()
    );
    let target = TestDb::new("fanout_local_fails_restored");
    restore_gz(&content, &target.url());
    assert_eq!(target.query_i64("SELECT count(*) FROM blobs"), 40000);

    assert_eq!(db.catalog()[0].0, "SUCCESS");
    let copies = copies(&db);
    assert_eq!(
        copies.iter().map(|c| (&*c.0, &*c.2)).collect::<Vec<_>>(),
        [("drive", "STORED"), ("local", "FAILED")]
    );
    let error = copies[1].3.as_deref().unwrap();
    assert!(error.contains("File too large"), "a clear error: {error}");
    assert!(
        the_mail(&g).contains("not stored on target local"),
        "the notification names the failed target"
    );
}

#[test]
fn every_target_failing_fails_the_run_with_a_failed_copy_for_each() {
    let g = Google::shared_drive();
    let db = TestDb::new("fanout_all_fail");
    bulky(&db);
    let dir = TempDir::new("fanout_all_fail");
    drive_refuses_every_chunk(&g);
    let mut cmd = both_targets(&g, &db, &dir);
    local_files_limited_to_64kib(&mut cmd);
    let r = run(&mut cmd);
    // the first target's error decides: Drive unavailable after every retry is transient (69)
    assert_eq!(r.status, 69, "{r:?}");
    let last = json_lines(&r).pop().unwrap();
    let error = last["msg"].as_str().unwrap();
    assert!(
        error.contains("every target failed (local directory")
            && error.contains("File too large")
            && error.contains("): Google Drive folder"),
        "both failures are told, Drive's deciding the status: {r:?}"
    );
    assert!(g.emu.backups_in(&g.folder).is_empty());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    let rows = db.catalog();
    assert_eq!(rows.len(), 1);
    assert_eq!((&*rows[0].0, rows[0].2.is_some()), ("ERROR", true));
    let copies = copies(&db);
    assert_eq!(
        copies
            .iter()
            .map(|c| (&*c.0, &*c.2, c.3.is_some()))
            .collect::<Vec<_>>(),
        [("drive", "FAILED", true), ("local", "FAILED", true)]
    );
}

#[test]
fn a_stalled_drive_fails_alone_while_the_local_copy_is_stored() {
    let g = Google::shared_drive();
    let db = TestDb::new("fanout_drive_stalls");
    bulky(&db);
    let dir = TempDir::new("fanout_drive_stalls");
    // Drive takes the first chunk, then holds its answer to the second far past the stall
    // timeout: the run-wide watchdog would fail the whole run; the stalled target fails alone
    g.emu
        .fault(json!([{"op": "upload_chunk", "nth": 2, "times": 1, "action": {"delay_ms": 8000}}]));
    let mut cmd = both_targets(&g, &db, &dir);
    cmd.env("PGDRIVE_STALL_TIMEOUT_MS", "1500");
    let started = std::time::Instant::now();
    let r = run(&mut cmd);
    assert_partial_run(&r, "drive");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "not held up by Drive's retries: {:?}",
        started.elapsed()
    );

    let files = backup_files(dir.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let target = TestDb::new("fanout_drive_stalls_restored");
    restore_gz(&std::fs::read(&files[0]).unwrap(), &target.url());
    assert_eq!(target.query_i64("SELECT count(*) FROM blobs"), 40000);
    assert!(
        g.emu.backups_in(&g.folder).is_empty(),
        "the stalled upload was cancelled, not completed"
    );

    assert_eq!(db.catalog()[0].0, "SUCCESS");
    let copies = copies(&db);
    assert_eq!(
        copies.iter().map(|c| (&*c.0, &*c.2)).collect::<Vec<_>>(),
        [("drive", "FAILED"), ("local", "STORED")]
    );
    let error = copies[0].3.as_deref().unwrap();
    assert!(
        error.contains("stalled: Google Drive folder")
            && error.contains("accepted no bytes for 1.5 s")
            && error.contains("the other targets went on"),
        "a clear error: {error}"
    );
    assert!(
        the_mail(&g).contains("not stored on target drive"),
        "the notification names the stalled target"
    );
}
