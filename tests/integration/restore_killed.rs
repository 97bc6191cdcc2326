//! A restore commits only when pgdrive says so: pgdrive is killed (SIGKILL, two SIGTERMs in a
//! row) at several points of a restore of a ~50 MB database, with psql and with pg_restore, for
//! `restore` and `verify --restore-test`, and the target must hold nothing afterwards.
//!
//! The stored backup is replaced by a FIFO the test writes, so each kill lands at a known point:
//! in the middle of the big table's COPY, or with everything but the file's last bytes given
//! (the dump's large-object section, which carries its own COMMIT, and all but pgdrive's held-back
//! tail already run by psql). Two more tests pin the mechanism: the client dies with pgdrive even
//! when its input is held open, and psql is sent exactly one `COMMIT;`, pgdrive's, at the end.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::*;

const BIG_ROWS: i64 = 700_000;
const LARGE_OBJECTS: i64 = 3;

/// A database of ~50 MB raw, generated server-side: a big table (64-character rows, as in the
/// partial commit once seen), large objects, and after them in the dump a post-data statement
/// (a `NOT VALID` check, ~100 KB) longer than pgdrive's held-back tail, so psql has run the large-object section when the tail
/// is all that is missing.
fn seed(db: &TestDb) {
    db.exec(&format!(
        "CREATE TABLE big (id int PRIMARY KEY, payload text NOT NULL);
         INSERT INTO big SELECT g, md5(g::text) || md5((-g)::text) FROM generate_series(1, {BIG_ROWS}) g;
         CREATE TABLE small (a text);
         INSERT INTO small SELECT md5(g::text) FROM generate_series(1, 10) g;
         SELECT lo_from_bytea(0, decode(repeat(md5(g::text), 2000), 'hex')) FROM generate_series(1, {LARGE_OBJECTS}) g;
         DO $$ BEGIN
             EXECUTE format('ALTER TABLE small ADD CONSTRAINT small_long CHECK (a <> ALL (%L::text[])) NOT VALID',
                            (SELECT array_agg(md5((-g)::text)) FROM generate_series(1, 3000) g));
         END $$;"
    ));
}

/// Backs `db` up into a new directory (uncompressed, so the FIFO's bytes are the dump's);
/// returns the directory and the stored file's path and bytes.
fn backup(db: &TestDb, format: &str) -> (TempDir, PathBuf, Vec<u8>) {
    let dir = TempDir::new(&format!("killed_{format}"));
    let path = local_backup(
        db,
        dir.path(),
        &[("PGDRIVE_FORMAT", format), ("PGDRIVE_COMPRESS", "none")],
    );
    let bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() > 40 << 20, "{} bytes", bytes.len());
    (dir, path, bytes)
}

/// Where pgdrive is when it is killed.
#[derive(Debug, Clone, Copy)]
enum Point {
    /// The big table's COPY is streaming.
    MidCopy,
    /// Everything but the file's last bytes was given; the client has run all it could.
    AllButTheTail,
}

#[derive(Debug, Clone, Copy)]
enum Attack {
    Sigkill,
    TwoSigterms,
}

/// Runs `args` (a restore or restore test reading the backup at `path` through a FIFO), kills
/// pgdrive at `point`, and returns its pid and exit status once the target's connections are gone.
fn killed(
    dir: &Path,
    path: &Path,
    bytes: &[u8],
    args: &[&str],
    target_db: impl Fn(u32) -> Option<String>,
    point: Point,
    attack: Attack,
) -> (u32, std::process::ExitStatus, String) {
    let _ = std::fs::remove_file(path);
    let c_path = std::ffi::CString::new(path.to_string_lossy().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let mut child = pgdrive()
        .env("PGDRIVE_LOCAL_DIR", dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let fifo = open_fifo_writer(path, &mut child);
    let given = match point {
        Point::MidCopy => bytes.len() * 2 / 5,
        Point::AllButTheTail => bytes.len() - 16,
    };
    let prefix = bytes[..given].to_vec();
    let writer = std::thread::spawn(move || {
        let mut fifo = fifo;
        let _ = fifo.write_all(&prefix);
        fifo // kept open: pgdrive waits for the rest
    });
    let db = wait_for(
        Duration::from_secs(30),
        "the restore to reach its target",
        || target_db(pid),
    );
    let mut admin = admin();
    match point {
        Point::MidCopy => wait_for(Duration::from_secs(30), "the big COPY", || {
            let n: i64 = admin
                .query_one(
                    "SELECT coalesce(max(p.tuples_processed), 0) FROM pg_stat_progress_copy p
                       JOIN pg_database d ON d.oid = p.datid WHERE d.datname = $1",
                    &[&db],
                )
                .unwrap()
                .get(0);
            (n > 1000).then_some(())
        }),
        Point::AllButTheTail => {
            while !writer.is_finished() {
                std::thread::sleep(Duration::from_millis(20));
            }
            // the client has run everything it was given: idle, waiting for input
            let mut idle_since = None;
            wait_for(Duration::from_secs(30), "the client to go idle", || {
                let idle: bool = admin
                    .query_one(
                        "SELECT coalesce(bool_and(state LIKE 'idle%'), false) FROM pg_stat_activity
                          WHERE datname = $1 AND backend_type = 'client backend'",
                        &[&db],
                    )
                    .unwrap()
                    .get(0);
                match (idle, idle_since) {
                    (false, _) => idle_since = None,
                    (true, None) => idle_since = Some(Instant::now()),
                    (true, Some(t)) if t.elapsed() > Duration::from_millis(500) => return Some(()),
                    _ => {}
                }
                None
            })
        }
    }
    let signalled = pid as i32;
    match attack {
        // SAFETY: signalling our own child.
        Attack::Sigkill => assert_eq!(unsafe { libc::kill(signalled, libc::SIGKILL) }, 0),
        Attack::TwoSigterms => {
            assert_eq!(unsafe { libc::kill(signalled, libc::SIGTERM) }, 0);
            std::thread::sleep(Duration::from_millis(20));
            assert_eq!(unsafe { libc::kill(signalled, libc::SIGTERM) }, 0);
        }
    }
    let out = child.wait_with_output().unwrap();
    drop(writer.join());
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    wait_for(
        Duration::from_secs(10),
        "the client's connection to end",
        || {
            let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend'",
                &[&db],
            )
            .unwrap()
            .get(0);
            (n == 0).then_some(())
        },
    );
    assert_nothing_committed(&db, &format!("{point:?} {attack:?}: {stderr}"));
    let _ = std::fs::remove_file(path);
    (pid, out.status, db)
}

fn wait_for<T>(timeout: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_nothing_committed(db: &str, context: &str) {
    let mut c = postgres::Client::connect(&admin_url(db), postgres::NoTls).unwrap();
    let tables: Vec<String> = c
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'i')
                AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let large_objects: i64 = c
        .query_one("SELECT count(*) FROM pg_largeobject_metadata", &[])
        .unwrap()
        .get(0);
    assert!(
        tables.is_empty() && large_objects == 0,
        "committed without pgdrive's consent: relations {tables:?}, {large_objects} large objects ({context})"
    );
}

fn restore_args<'a>(source: &'a TestDb, target: &'a str) -> Vec<&'a str> {
    vec![
        "restore",
        "latest",
        "--database",
        &source.name,
        "--target-url",
        target,
    ]
}

/// Restores `bytes` (put back as a regular file) into a new database: the backup the attacks
/// used is whole, and a restore that is let finish commits all of it, large objects included.
fn completes(dir: &Path, path: &Path, bytes: &[u8], source: &TestDb) {
    std::fs::write(path, bytes).unwrap();
    let target = TestDb::new("killed_complete");
    let url = target.url();
    let r = run(pgdrive()
        .env("PGDRIVE_LOCAL_DIR", dir)
        .args(restore_args(source, &url)));
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(target.query_i64("SELECT count(*) FROM big"), BIG_ROWS);
    assert_eq!(
        target.query_i64("SELECT count(*) FROM pg_largeobject_metadata"),
        LARGE_OBJECTS
    );
}

#[test]
fn a_plain_restore_killed_anywhere_commits_nothing() {
    let source = TestDb::new("killed_plain");
    seed(&source);
    let (dir, path, bytes) = backup(&source, "plain");
    for (point, attack) in [
        (Point::MidCopy, Attack::Sigkill),
        (Point::AllButTheTail, Attack::Sigkill),
        (Point::MidCopy, Attack::TwoSigterms),
        (Point::AllButTheTail, Attack::TwoSigterms),
    ] {
        let target = TestDb::new("killed_plain_target");
        let (url, name) = (target.url(), target.name.clone());
        let (_, status, _) = killed(
            dir.path(),
            &path,
            &bytes,
            &restore_args(&source, &url),
            |_| Some(name.clone()),
            point,
            attack,
        );
        match attack {
            Attack::Sigkill => assert_eq!(
                std::os::unix::process::ExitStatusExt::signal(&status),
                Some(libc::SIGKILL)
            ),
            // the documented "second signal exits at once"
            Attack::TwoSigterms => assert_ne!(status.code(), Some(0), "{status}"),
        }
    }
    // verify --restore-test: its scratch database keeps nothing either
    let server = admin_url("postgres");
    let verify = [
        "verify",
        "latest",
        "--database",
        &source.name,
        "--restore-test",
        &server,
    ];
    for point in [Point::MidCopy, Point::AllButTheTail] {
        let (_, _, scratch) = killed(
            dir.path(),
            &path,
            &bytes,
            &verify,
            scratch_of,
            point,
            Attack::Sigkill,
        );
        drop(TestDb { name: scratch });
    }
    completes(dir.path(), &path, &bytes, &source);
}

#[test]
fn a_pg_restore_killed_anywhere_commits_nothing() {
    let source = TestDb::new("killed_custom");
    seed(&source);
    let (dir, path, bytes) = backup(&source, "custom");
    for (point, attack) in [
        (Point::MidCopy, Attack::Sigkill),
        (Point::AllButTheTail, Attack::Sigkill),
        (Point::MidCopy, Attack::TwoSigterms),
    ] {
        let target = TestDb::new("killed_custom_target");
        let (url, name) = (target.url(), target.name.clone());
        killed(
            dir.path(),
            &path,
            &bytes,
            &restore_args(&source, &url),
            |_| Some(name.clone()),
            point,
            attack,
        );
    }
    completes(dir.path(), &path, &bytes, &source);
}

/// The scratch database `verify --restore-test` run `pid` created, once it exists.
fn scratch_of(pid: u32) -> Option<String> {
    admin()
        .query_opt(
            "SELECT datname FROM pg_database WHERE datname LIKE '%\\_pgdrive\\_verify\\_%\\_' || $1",
            &[&pid.to_string()],
        )
        .unwrap()
        .map(|r| r.get(0))
}

/// The restore client of the running pgdrive `pid`, once it has been started.
fn client_of(pid: u32) -> Option<u32> {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    children.split_whitespace().next()?.parse().ok()
}

/// `(state, process group)` of a process, from /proc/PID/stat; `None` once it is gone.
fn state_and_group(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // after the parenthesised command name: state, ppid, pgrp
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    Some((state, fields.next()?.parse().ok()?))
}

/// Opens, for writing, the pipe that is the client's stdin, through pgdrive's own end of it: with
/// that end held open elsewhere the client never sees its input end.
fn hold_input_open(pgdrive: u32, client: u32) -> std::fs::File {
    let pipe = std::fs::read_link(format!("/proc/{client}/fd/0")).unwrap();
    let end = std::fs::read_dir(format!("/proc/{pgdrive}/fd"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|fd| std::fs::read_link(fd).is_ok_and(|l| l == pipe))
        .expect("pgdrive holds the client's stdin");
    std::fs::OpenOptions::new().write(true).open(end).unwrap()
}

/// Kills a process left behind by a failed assertion.
struct Reap(u32);

impl Drop for Reap {
    fn drop(&mut self) {
        // SAFETY: a process this test made (or an id that is gone: ESRCH).
        unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
    }
}

/// The client cannot outlive pgdrive even when it cannot see its input end (the test holds the
/// pipe open): when pgdrive is SIGKILLed, the kernel kills psql and pg_restore too. They run in
/// a process group of their own (a terminal's Ctrl-C reaches pgdrive alone).
#[test]
fn a_client_dies_with_pgdrive_even_when_its_input_stays_open() {
    let source = TestDb::new("orphan");
    seed_shop(&source);
    for format in ["plain", "custom"] {
        let dir = TempDir::new(&format!("orphan_{format}"));
        let path = local_backup(&source, dir.path(), &[("PGDRIVE_FORMAT", format)]);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let c_path = std::ffi::CString::new(path.to_string_lossy().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let target = TestDb::new("orphan_target");
        let url = target.url();
        let mut child = pgdrive()
            .env("PGDRIVE_LOCAL_DIR", dir.path())
            .args(restore_args(&source, &url))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut fifo = open_fifo_writer(&path, &mut child);
        fifo.write_all(&bytes[..bytes.len() / 2]).unwrap();
        let client = wait_for(Duration::from_secs(10), "the restore client", || {
            client_of(pid)
        });
        let _reap = Reap(client);
        let (_, group) = state_and_group(client).expect("the client is running");
        assert_eq!(
            group, client,
            "{format}: the client leads its own process group"
        );
        let held = hold_input_open(pid, client);
        // SAFETY: signalling our own child.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
        child.wait().unwrap();
        drop(fifo);
        wait_for(Duration::from_secs(5), "the client to be killed", || {
            // gone, or a zombie waiting for a reaper that is not its parent
            match state_and_group(client) {
                None | Some(('Z', _)) => Some(()),
                Some(_) => None,
            }
        });
        drop(held);
        assert_nothing_committed(&target.name, format);
    }
}

/// What psql is told, byte for byte, through a stand-in psql that records its input: pgdrive's
/// `BEGIN;` first, the dump unchanged except its own large-object `BEGIN;`/`COMMIT;` turned into
/// comments, and pgdrive's `COMMIT;` last — and for a corrupt backup no `COMMIT;` at all.
#[test]
fn psql_is_sent_commit_once_and_only_after_every_check() {
    let source = TestDb::new("consent");
    seed_shop(&source);
    source.exec("SELECT lo_from_bytea(0, 'a large object')");
    let dir = TempDir::new("consent");
    let path = local_backup(&source, dir.path(), &[("PGDRIVE_COMPRESS", "none")]);
    let dump = String::from_utf8(std::fs::read(&path).unwrap()).unwrap();
    let tools = TempDir::new("consent_psql");
    let record = tools.path().join("script.sql");
    let fake_psql = script(
        tools.path(),
        "psql",
        &format!("cat > '{}'", record.display()),
    );
    let restore = |target: &TestDb| {
        run(pgdrive()
            .env("PGDRIVE_LOCAL_DIR", dir.path())
            .env("PGDRIVE_PSQL", &fake_psql)
            .args(restore_args(&source, &target.url())))
    };

    let target = TestDb::new("consent_target");
    let r = restore(&target);
    assert_eq!(r.status, 0, "{r:?}");
    let sent = std::fs::read_to_string(&record).unwrap();
    let lo_section = "-- Data for Name: BLOBS; Type: BLOBS; Schema: -; Owner: -\n--\n\nBEGIN;\n";
    assert!(dump.contains(lo_section), "no large-object section");
    let expected = format!(
        "BEGIN;\n{}\nCOMMIT;\n",
        dump.replacen(
            lo_section,
            &lo_section.replace(
                "\nBEGIN;\n",
                "\n-- BEGIN; (left out by pgdrive: the whole restore is one transaction)\n"
            ),
            1
        )
        .replacen(
            "lo_close(0);\n\nCOMMIT;\n",
            "lo_close(0);\n\n-- COMMIT; (left out by pgdrive: the whole restore is one transaction)\n",
            1
        )
    );
    assert!(sent == expected, "psql was sent something else");
    assert_eq!(sent.lines().filter(|l| *l == "COMMIT;").count(), 1);

    let mut bytes = dump.into_bytes();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    std::fs::remove_file(&record).unwrap();
    let r = restore(&target);
    assert_eq!(r.status, 65, "{r:?}");
    let sent = std::fs::read_to_string(&record).unwrap_or_default();
    assert!(
        sent.starts_with("BEGIN;\n"),
        "{}",
        &sent[..sent.len().min(200)]
    );
    assert!(
        !sent.lines().any(|l| l.trim() == "COMMIT;"),
        "a corrupt backup was sent a COMMIT"
    );
}
