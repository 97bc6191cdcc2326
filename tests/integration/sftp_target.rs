//! The SFTP target against a real OpenSSH sshd on loopback (`common::sshd`): the conformance
//! suite, a backup and restore round trip, host keys unknown or changed and a wrong user key
//! refused (78, with a hint, nothing uploaded), SIGTERM and a failing pg_dump leaving nothing,
//! a connection dropped mid-upload failing loudly, a dropped download resumed, and retention
//! that deletes only pgdrive's own backups of its job and database.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::sshd::{new_key, Proxy, Sshd};
use crate::common::*;
use pgdrive::storage::config::{TargetConfig, TargetKind};
use pgdrive::storage::conformance::{self, Harness};
use pgdrive::storage::{self, Target};

struct Sftp(Sshd);

impl Harness for Sftp {
    fn target(&mut self) -> Box<dyn Target> {
        storage::open(TargetConfig {
            name: "box".into(),
            kind: TargetKind::Sftp(self.0.config(self.0.port)),
        })
    }
    fn page_size(&self) -> usize {
        2
    }
    fn leftovers(&mut self) -> Vec<String> {
        self.0.files()
    }
    fn fail_next_upload(&mut self, _after_bytes: u64) -> bool {
        false // a dropped connection is attacked below, through the proxy
    }
    fn clear_faults(&mut self) {}
}

#[test]
fn an_sftp_server_conforms() {
    let Some(sshd) = Sshd::start() else { return };
    conformance::run(&mut Sftp(sshd));
}

fn config_file(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("pgdrive.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn job(target: &str, keep: u32) -> String {
    format!("[jobs.nightly]\nkind = \"daily\"\ntargets = [\"{target}\"]\nkeep = {keep}\n")
}

fn with_config(config: &Path, db: &TestDb) -> std::process::Command {
    let mut cmd = pgdrive();
    cmd.env("PGDRIVE_CONFIG", config)
        .env("DATABASE_URL", db.url());
    cmd
}

/// Backup files (not sidecars, not partials) on the server.
fn backups(sshd: &Sshd) -> Vec<String> {
    sshd.files()
        .into_iter()
        .filter(|n| !n.starts_with('.') && !n.ends_with(".pgdrive.json"))
        .collect()
}

#[test]
fn a_backup_to_sftp_restores_to_an_identical_database() {
    let Some(sshd) = Sshd::start() else { return };
    let db = TestDb::new("sftp_rt");
    seed_shop(&db);
    let conf = TempDir::new("sftp_rt_conf");
    let config = config_file(
        conf.path(),
        &format!(
            "{}{}",
            sshd.target_toml("box", sshd.port, ""),
            job("box", 3)
        ),
    );
    let r = run(with_config(&config, &db).args(["backup", "--job", "nightly"]));
    assert_eq!(r.status, 0, "{r:?}\n{}", sshd.log());
    let stored = backups(&sshd);
    assert_eq!(stored.len(), 1, "{:?}", sshd.files());
    assert_eq!(
        sshd.files().len(),
        2,
        "a backup and its sidecar: {:?}",
        sshd.files()
    );
    let into = TestDb::new("sftp_rt_into");
    let r = run(with_config(&config, &db).args([
        "restore",
        "latest",
        "--target",
        "box",
        "--target-url",
        &into.url(),
    ]));
    assert_eq!(r.status, 0, "{r:?}");
    for q in [
        "SELECT count(*) FROM orders",
        "SELECT sum(id)::bigint FROM orders",
    ] {
        assert_eq!(db.query_i64(q), into.query_i64(q), "{q}");
    }
    let r = run(with_config(&config, &db).args(["check"]));
    assert!(r.stdout.contains("can be written"), "{r:?}");
    assert!(r.stdout.contains("free"), "statvfs: {r:?}");
}

/// A backup that must be refused before anything is uploaded: 78, the hint, an empty server.
fn refused(sshd: &Sshd, toml: &str, expect: &[&str]) {
    let db = TestDb::new("sftp_refused");
    seed_shop(&db);
    let conf = TempDir::new("sftp_refused_conf");
    let config = config_file(conf.path(), &format!("{toml}{}", job("box", 3)));
    let r = run(with_config(&config, &db).args(["backup", "--job", "nightly"]));
    assert_eq!(r.status, 78, "{r:?}");
    for e in expect {
        assert!(r.stderr.contains(e), "{e}: {r:?}");
    }
    assert!(sshd.files().is_empty(), "{:?}", sshd.files());
}

#[test]
fn a_changed_or_unknown_host_key_is_refused_with_a_hint() {
    let Some(sshd) = Sshd::start() else { return };
    // changed: known_hosts holds another key for [127.0.0.1]:PORT
    let other = new_key(sshd.dir.path(), "other_host");
    let other_pub = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let changed = sshd.dir.path().join("known_hosts_changed");
    std::fs::write(&changed, format!("[127.0.0.1]:{} {other_pub}", sshd.port)).unwrap();
    let toml = sshd.target_toml("box", sshd.port, "").replace(
        &sshd.known_hosts.display().to_string(),
        &changed.display().to_string(),
    );
    refused(&sshd, &toml, &["has changed", "ssh-keygen -R", "SHA256:"]);
    // unknown: an empty known_hosts
    let empty = sshd.dir.path().join("known_hosts_empty");
    std::fs::write(&empty, "").unwrap();
    let toml = sshd.target_toml("box", sshd.port, "").replace(
        &sshd.known_hosts.display().to_string(),
        &empty.display().to_string(),
    );
    refused(&sshd, &toml, &["is not in", "ssh-keyscan -p"]);
    assert_eq!(
        std::fs::read_to_string(&empty).unwrap(),
        "",
        "the key was never added"
    );
}

#[test]
fn a_key_the_server_does_not_know_is_refused_with_a_hint() {
    let Some(sshd) = Sshd::start() else { return };
    let stranger = new_key(sshd.dir.path(), "stranger");
    let toml = sshd.target_toml("box", sshd.port, "").replace(
        &sshd.identity_file.display().to_string(),
        &stranger.display().to_string(),
    );
    refused(&sshd, &toml, &["refused the key", "authorized_keys"]);
    // a directory that does not exist is a configuration error too
    let toml = sshd
        .target_toml("box", sshd.port, "")
        .replace(&sshd.data.display().to_string(), "/nonexistent/pgdrive");
    refused(&sshd, &toml, &["does not exist"]);
}

#[test]
fn sigterm_mid_upload_and_a_failing_pg_dump_leave_nothing_on_the_server() {
    let Some(sshd) = Sshd::start() else { return };
    let db = TestDb::new("sftp_term");
    seed_shop(&db);
    let conf = TempDir::new("sftp_term_conf");
    let config = config_file(
        conf.path(),
        &format!(
            "{}{}",
            sshd.target_toml("box", sshd.port, ""),
            job("box", 3)
        ),
    );
    // pg_dump streams for a while and never finishes on its own
    let bin = TempDir::new("sftp_term_bin");
    let slow = fake_pg_dump(
        &bin,
        "for i in $(seq 1 600); do head -c 65536 /dev/urandom | base64; sleep 0.05; done",
    );
    let child = with_config(&config, &db)
        .env("PGDRIVE_PG_DUMP", &slow)
        .env("PGDRIVE_CHUNK_SIZE", "256KiB")
        .args(["backup", "--job", "nightly"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // wait until the temporary file on the server has data
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let partial = sshd.files().into_iter().find(|n| n.ends_with(".partial"));
        let size = partial
            .map(|p| std::fs::metadata(sshd.data.join(p)).map_or(0, |m| m.len()))
            .unwrap_or(0);
        if size > 300_000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no upload started: {:?}",
            sshd.files()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: signals the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let (out, took) = exit_within(child, Duration::from_secs(15));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("SIGTERM"), "{stderr}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(sshd.files().is_empty(), "left behind: {:?}", sshd.files());

    // a pg_dump that fails half-way stores nothing either
    let failing = fake_pg_dump(
        &bin,
        "head -c 2000000 /dev/urandom | base64\necho 'pg_dump: error: query failed' >&2\nexit 1",
    );
    let r = run(with_config(&config, &db)
        .env("PGDRIVE_PG_DUMP", &failing)
        .env("PGDRIVE_CHUNK_SIZE", "256KiB")
        .args(["backup", "--job", "nightly"]));
    assert_eq!(r.status, 1, "{r:?}");
    assert!(r.stderr.contains("query failed"), "{r:?}");
    assert!(sshd.files().is_empty(), "left behind: {:?}", sshd.files());
}

/// A server behind a cutting proxy, a bulky database, and a config file whose `nightly` job
/// writes to the server through the proxy.
fn behind_proxy(sshd: &Sshd, prefix: &str) -> (Proxy, TestDb, TempDir, PathBuf) {
    let proxy = Proxy::start(sshd.port);
    sshd.trust_port(proxy.port);
    let db = TestDb::new(prefix);
    bulky(&db);
    let conf = TempDir::new(&format!("{prefix}_conf"));
    let config = config_file(
        conf.path(),
        &format!(
            "{}{}",
            sshd.target_toml("box", proxy.port, ""),
            job("box", 3)
        ),
    );
    (proxy, db, conf, config)
}

#[test]
fn the_server_dropping_the_connection_mid_upload_fails_the_backup_loudly() {
    let Some(sshd) = Sshd::start() else { return };
    let (proxy, db, _conf, config) = behind_proxy(&sshd, "sftp_drop");
    // the preflight's connection goes through; the upload's is cut after 1 MB
    proxy.drop_after(1_000_000, true);
    let r = run(with_config(&config, &db)
        .env("PGDRIVE_CHUNK_SIZE", "256KiB")
        .env("PGDRIVE_COMPRESS", "none")
        .args(["backup", "--job", "nightly"]));
    assert!(proxy.cut_done(), "the proxy never cut: {r:?}");
    assert_eq!(r.status, 69, "{r:?}");
    assert!(r.stderr.contains("was lost"), "{r:?}");
    assert!(backups(&sshd).is_empty(), "{:?}", sshd.files());
    // the temporary file was removed over a new connection
    assert!(sshd.files().is_empty(), "left behind: {:?}", sshd.files());
}

#[test]
fn a_restore_resumes_after_the_download_connection_drops() {
    let Some(sshd) = Sshd::start() else { return };
    let (proxy, db, _conf, config) = behind_proxy(&sshd, "sftp_resume");
    let r = run(with_config(&config, &db)
        .env("PGDRIVE_COMPRESS", "none")
        .args(["backup", "--job", "nightly"]));
    assert_eq!(r.status, 0, "{r:?}");
    let size = std::fs::metadata(sshd.data.join(&backups(&sshd)[0]))
        .unwrap()
        .len();
    assert!(size > 3_000_000, "{size}");
    proxy.drop_after(size as i64 / 2, false);
    let into = TestDb::new("sftp_resume_into");
    let r = run(with_config(&config, &db).args([
        "restore",
        "latest",
        "--target",
        "box",
        "--target-url",
        &into.url(),
    ]));
    assert!(proxy.cut_done(), "the proxy never cut: {r:?}");
    assert_eq!(r.status, 0, "{r:?}");
    assert!(r.stderr.contains("resuming"), "{r:?}");
    let q = "SELECT count(*) FROM blobs";
    assert_eq!(db.query_i64(q), into.query_i64(q));
}

#[test]
fn retention_deletes_only_its_own_jobs_backups_of_the_database() {
    let Some(sshd) = Sshd::start() else { return };
    let db = TestDb::new("sftp_keep");
    seed_shop(&db);
    // a foreign file, and a file that looks like a backup but has no sidecar
    std::fs::write(sshd.data.join("notes.txt"), "mine").unwrap();
    std::fs::write(
        sshd.data
            .join(format!("{}-daily-20200101T000000Z.sql.gz", db.name)),
        "x",
    )
    .unwrap();
    let conf = TempDir::new("sftp_keep_conf");
    let text = format!(
        "{}{}[jobs.other]\nkind = \"daily\"\ntargets = [\"box\"]\nkeep = 5\n",
        sshd.target_toml("box", sshd.port, "keep = 1"),
        job("box", 1)
    );
    let config = config_file(conf.path(), &text);
    let r = run(with_config(&config, &db).args(["backup", "--job", "other"]));
    assert_eq!(r.status, 0, "{r:?}");
    let others = backups(&sshd);
    for round in 0..3 {
        std::thread::sleep(Duration::from_millis(1100)); // names are to the second
        let r = run(with_config(&config, &db).args(["backup", "--job", "nightly"]));
        assert_eq!(r.status, 0, "round {round}: {r:?}");
    }
    let now = backups(&sshd);
    // the foreign files and the other job's backup stay; nightly keeps 1
    for kept in others.iter().chain([&"notes.txt".to_string()]) {
        assert!(now.contains(kept), "{kept} was deleted: {now:?}");
    }
    assert_eq!(now.len(), others.len() + 1, "{now:?}");
    assert_eq!(
        sshd.files()
            .iter()
            .filter(|n| n.ends_with(".pgdrive.json"))
            .count(),
        2,
        "{:?}",
        sshd.files()
    );
}

#[test]
fn an_encrypted_backup_to_sftp_stores_no_plaintext_and_restores_only_with_the_identity() {
    let Some(sshd) = Sshd::start() else { return };
    let conf = TempDir::new("sftp_enc_conf");
    let config = config_file(
        conf.path(),
        &format!(
            "{}{}",
            sshd.target_toml("box", sshd.port, ""),
            job("box", 3)
        ),
    );
    crate::encryption::remote_round_trip(
        "sftp_enc",
        &|db| with_config(&config, db),
        &sshd.data,
        &["--target", "box"],
    );
    let stored = backups(&sshd);
    assert_eq!(stored.len(), 1, "{:?}", sshd.files());
    assert!(stored[0].ends_with(".sql.gz.age"), "{stored:?}");
}

#[test]
fn a_pinned_backup_on_sftp_survives_keep_1_and_its_sidecar_is_replaced_whole() {
    let Some(sshd) = Sshd::start() else { return };
    let db = TestDb::new("sftp_pin");
    seed_shop(&db);
    let conf = TempDir::new("sftp_pin_conf");
    let text = |keep: u32| {
        format!(
            "{}{}",
            sshd.target_toml("box", sshd.port, ""),
            job("box", keep)
        )
    };
    let config = config_file(conf.path(), &text(0));
    for round in 0..3 {
        if round > 0 {
            std::thread::sleep(Duration::from_millis(1100)); // names are to the second
        }
        let r = run(with_config(&config, &db).args(["backup", "--job", "nightly"]));
        assert_eq!(r.status, 0, "round {round}: {r:?}");
    }
    let names = backups(&sshd);
    assert_eq!(names.len(), 3, "{names:?}");
    let sidecar_path = sshd.data.join(format!("{}.pgdrive.json", names[0]));
    let sidecar = || -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(&sidecar_path).unwrap()).unwrap()
    };
    let before = sidecar();

    let r = run(with_config(&config, &db).args(["pin", &names[0]]));
    assert_eq!(r.status, 0, "{r:?}");
    let mut after = sidecar();
    assert_eq!(after["properties"]["pgdrive_pinned"], "1");
    after["properties"]
        .as_object_mut()
        .unwrap()
        .remove("pgdrive_pinned");
    assert_eq!(after, before, "the rewrite changed more than the pin");
    assert!(
        !sshd.files().iter().any(|n| n.ends_with(".partial")),
        "a temporary sidecar was left: {:?}",
        sshd.files()
    );
    // what a new host sees: a fresh connection's listing
    let mut fresh = storage::open(TargetConfig {
        name: "box".into(),
        kind: TargetKind::Sftp(sshd.config(sshd.port)),
    });
    let listed = fresh.list(&Default::default()).unwrap();
    let pinned: Vec<&str> = listed
        .iter()
        .filter(|l| l.prop("pgdrive_pinned") == Some("1"))
        .map(|l| l.name.as_str())
        .collect();
    assert_eq!(pinned, [names[0].as_str()]);

    std::fs::write(&config, text(1)).unwrap();
    let r = run(with_config(&config, &db).args(["prune", "--job", "nightly", "--force"]));
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(
        backups(&sshd),
        [names[0].clone(), names[2].clone()],
        "the pinned oldest and the newest"
    );

    let r = run(with_config(&config, &db).args(["unpin", &names[0]]));
    assert_eq!(r.status, 0, "{r:?}");
    let r = run(with_config(&config, &db).args(["prune", "--job", "nightly", "--force"]));
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(backups(&sshd), [names[2].clone()]);
}
