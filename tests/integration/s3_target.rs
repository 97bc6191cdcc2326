//! The S3-compatible target against two real servers on loopback, moto and s3s-fs (see
//! `common::s3`): the conformance suite, a multipart backup restored into an identical database,
//! wrong credentials (78 with a hint), and retention that deletes only pgdrive's own backups of
//! that database and job.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use crate::common::s3::{Flavour, S3Server, ACCESS_KEY, SECRET_KEY};
use crate::common::*;
use pgdrive::storage::conformance::{self, Harness};
use pgdrive::storage::Target;

struct S3 {
    server: S3Server,
    page_size: u32,
}

impl Harness for S3 {
    fn target(&mut self) -> Box<dyn Target> {
        Box::new(self.server.target("conf/", self.page_size))
    }
    fn page_size(&self) -> usize {
        self.page_size as usize
    }
    fn leftovers(&mut self) -> Vec<String> {
        let mut t = self.server.target("conf/", self.page_size);
        let mut v = t.keys().unwrap();
        v.extend(self.server.pending_uploads());
        v.sort();
        v
    }
    fn fail_next_upload(&mut self, _after_bytes: u64) -> bool {
        false
    }
    fn clear_faults(&mut self) {}
}

#[test]
fn s3_on_moto_conforms() {
    conformance::run(&mut S3 {
        server: S3Server::start(Flavour::Moto),
        page_size: 3,
    });
}

#[test]
fn s3_on_s3s_fs_conforms() {
    conformance::run(&mut S3 {
        server: S3Server::start(Flavour::S3sFs),
        page_size: 3,
    });
}

fn with_s3(config: &Path, database_url: &str) -> std::process::Command {
    let mut cmd = pgdrive();
    cmd.env("PGDRIVE_CONFIG", config)
        .env("DATABASE_URL", database_url)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN");
    cmd
}

/// A database whose gzip dump is over two 5 MiB parts (random bytes do not compress).
fn incompressible(db: &TestDb) {
    seed_shop(db);
    db.exec(
        "CREATE TABLE noise (id int PRIMARY KEY, b bytea);
         INSERT INTO noise SELECT g, decode(md5(random()::text) || md5(random()::text) || md5(random()::text) || md5(random()::text), 'hex') FROM generate_series(1, 110000) g;",
    );
}

fn fingerprint(db: &TestDb) -> String {
    psql(
        &db.url(),
        "SELECT md5(string_agg(md5(b), '' ORDER BY id)) FROM noise; SELECT count(*) FROM orders;",
    )
}

fn round_trip(flavour: Flavour) {
    let server = S3Server::start(flavour);
    let db = TestDb::new("s3_rt");
    incompressible(&db);
    let dir = TempDir::new("s3_rt");
    let config = server.config_file(dir.path(), "pg/", 0);
    let r = run(with_s3(&config, &db.url()).args(["backup", "--job", "nightly"]));
    assert_eq!(r.status, 0, "{r:?}");
    let mut t = server.target("pg/", 1000);
    let keys = crate::common::without_globals(t.keys().unwrap());
    assert_eq!(keys.len(), 2, "the backup and its manifest: {keys:?}");
    assert_eq!(
        server.pending_uploads(),
        Vec::<String>::new(),
        "a multipart upload was left open"
    );
    let mut listed = t.list(&BTreeMap::new()).unwrap();
    listed.retain(|l| l.prop("pgdrive_kind") != Some("globals"));
    assert_eq!(listed.len(), 1);
    assert!(
        listed[0].size.unwrap() > 6 << 20,
        "not a multipart-sized dump: {:?}",
        listed[0].size
    );
    let into = TestDb::new("s3_rt_into");
    let r = run(with_s3(&config, &db.url()).args([
        "restore",
        "latest",
        "--target",
        "s3",
        "--database",
        &db.name,
        "--target-url",
        &into.url(),
    ]));
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(fingerprint(&into), fingerprint(&db));
}

#[test]
fn a_multipart_backup_to_moto_restores_an_identical_database() {
    round_trip(Flavour::Moto);
}

#[test]
fn a_multipart_backup_to_s3s_fs_restores_an_identical_database() {
    round_trip(Flavour::S3sFs);
}

#[test]
fn wrong_s3_credentials_are_a_configuration_error_with_a_hint() {
    let server = S3Server::start(Flavour::S3sFs);
    let db = TestDb::new("s3_creds");
    seed_shop(&db);
    let dir = TempDir::new("s3_creds");
    let config = server.config_file(dir.path(), "pg/", 0);
    let wrong_secret = "this-is-not-the-secret-key-42";
    let r = run(with_s3(&config, &db.url())
        .env("AWS_SECRET_ACCESS_KEY", wrong_secret)
        .args(["backup", "--job", "nightly"]));
    assert_eq!(r.status, 78, "{r:?}");
    assert!(r.stderr.contains("SignatureDoesNotMatch"), "{}", r.stderr);
    assert!(
        r.stderr.contains("AWS_ACCESS_KEY_ID"),
        "no hint: {}",
        r.stderr
    );
    assert!(!r.stderr.contains(wrong_secret) && !r.stdout.contains(wrong_secret));
    // nothing at all: the globals are stored after the databases, only when one was stored
    assert!(server.target("pg/", 1000).keys().unwrap().is_empty());
}

#[test]
fn s3_retention_deletes_only_pgdrives_own_backups_of_that_database_and_job() {
    let server = S3Server::start(Flavour::Moto);
    let db = TestDb::new("s3_keep");
    seed_shop(&db);
    let dir = TempDir::new("s3_keep");
    let config = server.config_file(dir.path(), "pg/", 1);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[jobs.other]\nkind = \"daily\"\ntargets = [\"s3\"]\n");
    std::fs::write(&config, text).unwrap();
    // a foreign object under the prefix, named like a backup, and one like a manifest
    let mut t = server.target("pg/", 1000);
    let foreign = [
        format!("pg/{}-daily-20200101T000000Z.sql.gz", db.name),
        "pg/notes.txt".to_string(),
    ];
    for key in &foreign {
        t.put_raw(key, b"not pgdrive's").unwrap();
    }
    let r = run(with_s3(&config, &db.url()).args(["backup", "--job", "other"]));
    assert_eq!(r.status, 0, "{r:?}");
    for _ in 0..3 {
        std::thread::sleep(std::time::Duration::from_millis(1100)); // names are to the second
        let r = run(with_s3(&config, &db.url()).args(["backup", "--job", "nightly"]));
        assert_eq!(r.status, 0, "{r:?}");
    }
    let mut listed = t.list(&BTreeMap::new()).unwrap();
    listed.retain(|l| l.prop("pgdrive_kind") != Some("globals"));
    let jobs: Vec<Option<&str>> = listed.iter().map(|l| l.prop("pgdrive_job")).collect();
    assert_eq!(
        jobs.iter().filter(|j| **j == Some("nightly")).count(),
        1,
        "{listed:?}"
    );
    assert_eq!(
        jobs.iter().filter(|j| **j == Some("other")).count(),
        1,
        "another job's backup was pruned: {listed:?}"
    );
    let keys = crate::common::without_globals(t.keys().unwrap());
    for key in &foreign {
        assert!(keys.contains(key), "{key} was deleted: {keys:?}");
    }
    assert_eq!(keys.len(), 2 + 2 * 2, "{keys:?}");
}

#[test]
fn a_part_failing_twice_with_500_is_retried_alone_without_restarting_the_upload() {
    use crate::common::s3::FaultProxy;
    for flavour in [Flavour::Moto, Flavour::S3sFs] {
        let server = S3Server::start(flavour);
        let proxy = FaultProxy::start(&server.endpoint, "partNumber=2&", 2);
        let mut cfg = server.config("faults/", 1000);
        cfg.place.endpoint = Some(proxy.endpoint.clone());
        let mut t = pgdrive::storage::s3::S3Target::from_config("s3".into(), cfg);
        let part = 5 << 20;
        let data: Vec<u8> = (0..part * 2 + 12345)
            .map(|i: usize| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let mut h = pgdrive::storage::Hasher::default();
        h.update(&data);
        let digest = h.finish();
        let mut up = t
            .begin(
                "faulty.bin",
                "application/octet-stream",
                &BTreeMap::new(),
                part,
            )
            .unwrap();
        for piece in data.chunks(1 << 20) {
            up.write(bytes::Bytes::copy_from_slice(piece)).unwrap();
        }
        up.finish(&pgdrive::storage::Completion {
            digest,
            properties: BTreeMap::new(),
            row_counts: BTreeMap::new(),
            sealed_row_counts: None,
            manifest_extra: BTreeMap::new(),
        })
        .unwrap();
        let log = proxy.requests();
        let count = |needle: &str| log.iter().filter(|r| r.contains(needle)).count();
        assert_eq!(
            count("?uploads"),
            1,
            "{flavour:?}: the upload was restarted: {log:#?}"
        );
        assert_eq!(
            count("partNumber=1&"),
            1,
            "{flavour:?}: part 1 was sent again: {log:#?}"
        );
        assert_eq!(count("partNumber=2&"), 3, "{flavour:?}: {log:#?}");
        assert_eq!(count("partNumber=3&"), 1, "{flavour:?}: {log:#?}");
        let mut back = Vec::new();
        t.open_at("faulty.bin", 0, Some(data.len() as u64))
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert!(back == data, "{flavour:?}: the stored bytes differ");
        assert!(server.pending_uploads().is_empty(), "{flavour:?}");
    }
}

#[test]
fn sigterm_mid_upload_leaves_no_object_and_no_unfinished_upload() {
    use crate::common::s3::FaultProxy;
    let server = S3Server::start(Flavour::Moto);
    // part 2 answers only after 20 s: the run is surely mid-upload when it is told to stop
    let proxy = FaultProxy::start_slow(
        &server.endpoint,
        "partNumber=2&",
        0,
        std::time::Duration::from_secs(20),
    );
    let db = TestDb::new("s3_term");
    incompressible(&db);
    let dir = TempDir::new("s3_term");
    let config = server.config_file(dir.path(), "pg/", 0);
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(&server.endpoint, &proxy.endpoint);
    std::fs::write(&config, text).unwrap();
    let child = with_s3(&config, &db.url())
        .args(["backup", "--job", "nightly"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !proxy.requests().iter().any(|r| r.contains("partNumber=2&")) {
        assert!(
            std::time::Instant::now() < deadline,
            "part 2 never sent: {:?}",
            proxy.requests()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let (out, took) = exit_within(child, std::time::Duration::from_secs(15));
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    assert!(took < std::time::Duration::from_secs(15));
    assert!(
        proxy
            .requests()
            .iter()
            .any(|r| r.starts_with("DELETE") && r.contains("uploadId=")),
        "no AbortMultipartUpload was sent: {:?}",
        proxy.requests()
    );
    assert_eq!(server.pending_uploads(), Vec::<String>::new());
    assert_eq!(
        // no globals either: they are stored after the databases, never after SIGTERM
        server.target("pg/", 1000).keys().unwrap(),
        Vec::<String>::new()
    );
}

#[test]
fn a_failing_pg_dump_leaves_nothing_in_the_bucket() {
    for flavour in [Flavour::Moto, Flavour::S3sFs] {
        let server = S3Server::start(flavour);
        let db = TestDb::new("s3_dumpfail");
        incompressible(&db);
        // over three parts: a part is sent only once more follows it
        db.exec("INSERT INTO noise SELECT g, decode(md5(random()::text) || md5(random()::text) || md5(random()::text) || md5(random()::text), 'hex') FROM generate_series(110001, 220000) g;");
        let dir = TempDir::new("s3_dumpfail");
        let proxy = crate::common::s3::FaultProxy::start(&server.endpoint, "-none-", 0);
        let config = server.config_file(dir.path(), "pg/", 0);
        let text = std::fs::read_to_string(&config)
            .unwrap()
            .replace(&server.endpoint, &proxy.endpoint);
        std::fs::write(&config, text).unwrap();
        // the whole dump is streamed (several parts sent), then pg_dump fails
        let fake = script(
            dir.path(),
            "pg_dump",
            &format!(
                "if [ \"$1\" = --version ]; then exec \"{0}\" --version; fi\n\"{0}\" \"$@\"\nexit 1",
                real_pg_dump()
            ),
        );
        let r = run(with_s3(&config, &db.url())
            .env("PGDRIVE_PG_DUMP", &fake)
            .args(["backup", "--job", "nightly"]));
        assert_eq!(r.status, 1, "{flavour:?}: {r:?}");
        let log = proxy.requests();
        assert!(
            log.iter().any(|l| l.contains("partNumber=1&")),
            "{flavour:?}: no part was sent before pg_dump failed: {log:#?} {}",
            r.stderr
        );
        assert!(
            log.iter()
                .any(|l| l.starts_with("DELETE") && l.contains("uploadId=")),
            "{flavour:?}: the multipart upload was not aborted: {log:#?}"
        );
        assert_eq!(
            // no globals either: a job that stored no database stores none
            server.target("pg/", 1000).keys().unwrap(),
            Vec::<String>::new(),
            "{flavour:?}"
        );
        assert_eq!(
            server.pending_uploads(),
            Vec::<String>::new(),
            "{flavour:?}"
        );
    }
}
