//! A backup killed outright leaves its `.partial` file behind; the next backup removes it, and
//! `check` reports it. Attacked with what must survive: a partial another live process holds
//! locked (as a running upload does), one written a moment ago, and files that only look like
//! pgdrive's (other names, a symlink, a directory).

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn partials(dir: &Path) -> Vec<String> {
    entries(dir)
        .into_iter()
        .filter(|n| n.ends_with(".partial"))
        .collect()
}

/// Whether some process holds a `flock` on `path` (the lock util-linux's flock(1) takes).
fn locked(path: &Path) -> bool {
    !Command::new("flock")
        .args(["--nonblock", "--exclusive"])
        .arg(path)
        .arg("true")
        .status()
        .unwrap()
        .success()
}

/// Sets the modification time two hours back (`-h`: a symlink itself).
fn age(path: &Path) {
    let ok = Command::new("touch")
        .args(["-h", "-d", "2 hours ago"])
        .arg(path)
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child leading its own process group, killed with it (flock(1) and its `sleep`).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        // SAFETY: signals the process group of a child this test started and has not reaped.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

#[test]
fn a_killed_backups_partial_is_removed_and_nothing_else() {
    let db = TestDb::new("stale_partial");
    seed_shop(&db);
    let (dir, bin, outside) = (
        TempDir::new("stale_partial"),
        TempDir::new("stale_partial_bin"),
        TempDir::new("stale_partial_outside"),
    );
    let local = |cmd: &mut Command| {
        cmd.env("DATABASE_URL", db.url())
            .env("PGDRIVE_LOCAL_DIR", dir.path());
    };

    // a backup SIGKILLed while its upload is open: its partial stays, locked while it lived
    let slow = script(
        bin.path(),
        "pg_dump",
        &format!(
            "if [ \"$1\" = --version ]; then exec {} --version; fi\nexec sleep 30",
            real_pg_dump()
        ),
    );
    let mut cmd = pgdrive();
    local(&mut cmd);
    let mut child = cmd
        .env("PGDRIVE_PG_DUMP", &slow)
        .env("PGDRIVE_STALL_TIMEOUT_MS", "0")
        .args(["backup", "--kind", "daily"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let killed = wait_for("the upload's partial file", || partials(dir.path()).pop());
    let killed_path = dir.path().join(&killed);
    assert!(locked(&killed_path), "a running upload locks its partial");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !locked(&killed_path),
        "the lock died with the process (pg_dump does not inherit it)"
    );
    age(&killed_path);

    // a live upload's partial (old, but locked by another process), and one written just now
    let live = dir
        .path()
        .join(format!(".{}-daily-live.sql.gz.{TOKEN}.partial", db.name));
    std::fs::write(&live, "being written").unwrap();
    age(&live);
    let _holder = Killed(
        Command::new("flock")
            .arg("--exclusive")
            .arg(&live)
            .args(["sleep", "60"])
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("the holder's lock", || locked(&live).then_some(()));
    let fresh = dir.path().join(format!(
        ".{}-daily-fresh.sql.gz.fedcba9876543210fedcba9876543210.partial",
        db.name
    ));
    std::fs::write(&fresh, "just started").unwrap();

    // lookalikes that are not pgdrive's partials
    let victim = outside.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    let foreign = [
        format!("notes.{TOKEN}.partial"),
        format!(".x.{}.partial", &TOKEN[1..]),
        format!(".x.{}.partial", TOKEN.to_uppercase()),
        format!(".x.{TOKEN}.partial.bak"),
    ];
    for name in &foreign {
        let p = dir.path().join(name);
        std::fs::write(&p, "someone else's").unwrap();
        age(&p);
    }
    let link = dir.path().join(format!(".evil.{TOKEN}.partial"));
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    age(&link);
    let subdir = dir.path().join(format!(".adir.{TOKEN}.partial"));
    std::fs::create_dir(&subdir).unwrap();
    age(&subdir);

    // check reports the stale one only, and changes nothing
    let before = entries(dir.path());
    let mut cmd = pgdrive();
    local(&mut cmd);
    let r = run(cmd.arg("check"));
    let line = r
        .stdout
        .lines()
        .find(|l| l.contains("partial file(s) of interrupted backups"))
        .unwrap_or_else(|| panic!("check does not report the stale partial: {r:?}"));
    assert!(
        line.contains("1 partial file(s)") && line.contains(&killed),
        "{line}"
    );
    assert_eq!(entries(dir.path()), before, "check removes nothing");

    // the next backup removes it, and only it
    let mut cmd = pgdrive();
    local(&mut cmd);
    let r = run(cmd.args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 0, "{r:?}");
    assert!(
        r.stderr
            .contains("removed a partial file an interrupted backup left")
            && r.stderr.contains(&killed),
        "{r:?}"
    );
    let after = entries(dir.path());
    assert!(!after.contains(&killed), "{after:?}");
    let mut kept = before.clone();
    kept.retain(|n| n != &killed);
    for name in &kept {
        assert!(after.contains(name), "{name} was removed: {after:?}");
    }
    assert_eq!(
        after.len(),
        kept.len() + 2,
        "plus the new backup and its sidecar: {after:?}"
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert_eq!(std::fs::read_to_string(&live).unwrap(), "being written");
}
