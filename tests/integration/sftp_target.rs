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
