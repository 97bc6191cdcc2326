//! A stored backup that is shorter than recorded is corrupt (65), said before anything is
//! downloaded, on Drive and in a local directory; and the backup's final log line reports the
//! backup's own duration, not the time its notifications took.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{json, Value};

fn assert_cut_short(r: &Run, what: &str) {
    assert_eq!(r.status, 65, "{what}: {r:?}");
    assert!(
        r.stderr.contains("100 bytes missing") && r.stderr.contains("cut short"),
        "{what}: one clear line naming the size difference: {r:?}"
    );
    assert!(!r.stderr.contains("416"), "{what}: {r:?}");
}

#[test]
fn a_drive_file_cut_short_is_corrupt_before_any_download() {
    let g = Google::shared_drive();
    let db = TestDb::new("cut_drive");
    seed_shop(&db);
    let r = run(g.pgdrive(&db).args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 0, "{r:?}");
    let file = g.emu.backups_in(&g.folder)[0].clone();
    let id = file["id"].as_str().unwrap().to_string();
    let size: u64 = file["size"].as_str().unwrap().parse().unwrap();
    let cut = g
        .emu
        .post(&format!("files/{id}/truncate"), json!({"size": size - 100}));
    assert_eq!(cut["size"], (size - 100).to_string(), "{cut}");

    let target = TestDb::new("cut_drive_target");
    let r = run(g
        .pgdrive(&db)
        .args(["restore", &id, "--target-url", &target.url()]));
    assert_cut_short(&r, "restore");
    let r = run(g.pgdrive(&db).args(["verify", "latest"]));
    assert_cut_short(&r, "verify");
    let downloads: Vec<Value> = g.emu.backup_downloads();
    assert!(
        downloads.is_empty(),
        "nothing is downloaded: {downloads:#?}"
    );
    let result = db.verify_result(&id).unwrap_or_default();
    assert!(
        result.starts_with("FAILED: the backup is corrupt"),
        "{result}"
    );
}

#[test]
fn a_local_file_cut_short_is_corrupt_before_it_is_read() {
    let db = TestDb::new("cut_local");
    seed_shop(&db);
    let dir = TempDir::new("cut_local");
    let path = local_backup(&db, dir.path(), &[("PGDRIVE_FORMAT", "custom")]);
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(f.metadata().unwrap().len() - 100).unwrap();
    drop(f);

    // a pg_restore that records being started: nothing may reach a client
    let bin = TempDir::new("cut_local_bin");
    let started = bin.path().join("started");
    let pg_restore = script(
        bin.path(),
        "pg_restore",
        &format!("touch '{}'\nexec cat >/dev/null", started.display()),
    );
    let target = TestDb::new("cut_local_target");
    let r = run(pgdrive()
        .env("PGDRIVE_LOCAL_DIR", dir.path())
        .env("PGDRIVE_PG_RESTORE", &pg_restore)
        .args(["restore", &name, "--target-url", &target.url()]));
    assert_cut_short(&r, "restore");
    let r = run(pgdrive()
        .env("DATABASE_URL", db.url())
        .env("PGDRIVE_PG_RESTORE", &pg_restore)
        .args(["verify", "latest", "--from"])
        .arg(dir.path()));
    assert_cut_short(&r, "verify");
    assert!(!started.exists(), "no restore client was started");
}

/// An HTTP receiver that answers every request 200 after `delay`.
fn slow_receiver(delay: Duration) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                }
                std::thread::sleep(delay);
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
            });
        }
    });
    url
}

#[test]
fn the_final_log_line_reports_the_backups_own_duration() {
    let db = TestDb::new("own_duration");
    let dir = TempDir::new("own_duration");
    let hook = slow_receiver(Duration::from_millis(1500));
    let began = Instant::now();
    let r = run(pgdrive()
        .env("DATABASE_URL", db.url())
        .env("PGDRIVE_LOCAL_DIR", dir.path())
        .env("PGDRIVE_WEBHOOK_URL", &hook)
        .env("PGDRIVE_PING_URL", &hook)
        .args(["--log-format", "json", "backup", "--kind", "daily"]));
    let wall = began.elapsed().as_secs_f64();
    assert_eq!(r.status, 0, "{r:?}");
    assert!(
        wall >= 4.5,
        "the start ping, the webhook and the ping were slow: {wall}"
    );
    let last: Value = serde_json::from_str(r.stderr.lines().last().unwrap()).unwrap();
    assert_eq!(last["msg"], "backup finished", "{r:?}");
    let duration: f64 = last["duration_s"].as_str().unwrap().parse().unwrap();
    assert!(
        duration < 1.4,
        "{duration} s reported for a run of {wall:.1} s, of which 4.5 s were notifications"
    );
}
