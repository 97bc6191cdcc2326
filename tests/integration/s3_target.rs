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
            recipients: Vec::new(),
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

#[test]
fn an_encrypted_backup_to_s3_stores_no_plaintext_and_restores_only_with_the_identity() {
    // s3s-fs keeps every object, and its own metadata, as files: all of them are searched
    let server = S3Server::start(Flavour::S3sFs);
    let dir = TempDir::new("s3_enc");
    let config = server.config_file(dir.path(), "pg/", 0);
    crate::encryption::remote_round_trip(
        "s3_enc",
        &|db| with_s3(&config, &db.url()),
        server.root(),
        &["--target", "s3"],
    );
    let mut t = server.target("pg/", 1000);
    let keys = t.keys().unwrap();
    assert!(keys.iter().any(|k| k.ends_with(".sql.gz.age")), "{keys:?}");
    assert!(
        keys.iter()
            .any(|k| k.contains("-globals-") && k.ends_with(".sql.age")),
        "{keys:?}"
    );
}

/// Three backups of job `nightly`, the oldest pinned: the pin is in the manifest object (and
/// nothing else in it changed), a fresh target sees it, and `prune` with keep 1 and `--force`
/// deletes only the unpinned middle one; once unpinned, the next prune deletes it too.
fn a_pinned_backup_survives_keep_1(flavour: Flavour) {
    let server = S3Server::start(flavour);
    let db = TestDb::new("s3_pin");
    seed_shop(&db);
    let dir = TempDir::new("s3_pin");
    let config = server.config_file(dir.path(), "pg/", 0);
    for round in 0..3 {
        if round > 0 {
            std::thread::sleep(std::time::Duration::from_millis(1100)); // names are to the second
        }
        let r = run(with_s3(&config, &db.url()).args(["backup", "--job", "nightly"]));
        assert_eq!(r.status, 0, "{r:?}");
    }
    let backups = |t: &mut pgdrive::storage::s3::S3Target| {
        let mut v = t.list(&BTreeMap::new()).unwrap();
        v.retain(|l| l.prop("pgdrive_kind") == Some("daily"));
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    };
    let manifest = |t: &mut pgdrive::storage::s3::S3Target, id: &str| {
        t.get(id).unwrap().manifest.unwrap().document
    };
    let mut t = server.target("pg/", 1000);
    let names: Vec<String> = backups(&mut t).into_iter().map(|l| l.name).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    let before = manifest(&mut t, &names[0]);

    let r = run(with_s3(&config, &db.url()).args(["pin", &names[0]]));
    assert_eq!(r.status, 0, "{r:?}");
    // what a new host sees: a target with nothing cached
    let mut fresh = server.target("pg/", 1000);
    let listed = backups(&mut fresh);
    assert_eq!(listed[0].prop("pgdrive_pinned"), Some("1"), "{listed:?}");
    assert!(listed[1..]
        .iter()
        .all(|l| l.prop("pgdrive_pinned").is_none()));
    let mut after = manifest(&mut fresh, &names[0]);
    after["properties"]
        .as_object_mut()
        .unwrap()
        .remove("pgdrive_pinned");
    assert_eq!(after, before, "the rewrite changed more than the pin");

    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("keep = 0", "keep = 1");
    std::fs::write(&config, text).unwrap();
    let r = run(with_s3(&config, &db.url()).args(["prune", "--job", "nightly", "--force"]));
    assert_eq!(r.status, 0, "{r:?}");
    let left: Vec<String> = backups(&mut server.target("pg/", 1000))
        .into_iter()
        .map(|l| l.name)
        .collect();
    assert_eq!(
        left,
        [names[0].clone(), names[2].clone()],
        "the pinned oldest and the newest"
    );

    let r = run(with_s3(&config, &db.url()).args(["unpin", &names[0]]));
    assert_eq!(r.status, 0, "{r:?}");
    let r = run(with_s3(&config, &db.url()).args(["prune", "--job", "nightly", "--force"]));
    assert_eq!(r.status, 0, "{r:?}");
    let left: Vec<String> = backups(&mut server.target("pg/", 1000))
        .into_iter()
        .map(|l| l.name)
        .collect();
    assert_eq!(left, [names[2].clone()]);
}

#[test]
fn a_pinned_backup_on_moto_survives_keep_1() {
    a_pinned_backup_survives_keep_1(Flavour::Moto);
}

#[test]
fn a_pinned_backup_on_s3s_fs_survives_keep_1() {
    a_pinned_backup_survives_keep_1(Flavour::S3sFs);
}

/// `server`'s config file for `pg/`, with the endpoint replaced by `proxy`'s.
fn config_through(
    server: &S3Server,
    dir: &Path,
    proxy: &crate::common::s3::FaultProxy,
) -> std::path::PathBuf {
    let config = server.config_file(dir, "pg/", 0);
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(&server.endpoint, &proxy.endpoint);
    std::fs::write(&config, text).unwrap();
    config
}

fn restore_into(config: &Path, db: &TestDb, into: &TestDb) -> Run {
    run(with_s3(config, &db.url()).args([
        "restore",
        "latest",
        "--target",
        "s3",
        "--database",
        &db.name,
        "--target-url",
        &into.url(),
    ]))
}

#[test]
fn a_connection_dropped_mid_part_resends_that_part_alone_and_the_backup_restores() {
    use crate::common::s3::{Fault, FaultProxy};
    for flavour in [Flavour::Moto, Flavour::S3sFs] {
        let server = S3Server::start(flavour);
        // part 2's body breaks off after 1 MiB, twice
        let proxy = FaultProxy::start_with(
            &server.endpoint,
            &["partNumber=2&"],
            2,
            Fault::DropRequestBody(1 << 20),
        );
        let db = TestDb::new("s3_droppart");
        incompressible(&db);
        let dir = TempDir::new("s3_droppart");
        let config = config_through(&server, dir.path(), &proxy);
        let r = run(with_s3(&config, &db.url()).args(["backup", "--job", "nightly"]));
        assert_eq!(r.status, 0, "{flavour:?}: {r:?}");
        let log = proxy.requests();
        let count = |needle: &str| {
            log.iter()
                .filter(|l| l.contains(needle) && !l.contains("-globals-"))
                .count()
        };
        assert_eq!(count("POST "), 2, "{flavour:?}: restarted: {log:#?}"); // create, complete
        assert_eq!(count("partNumber=1&"), 1, "{flavour:?}: {log:#?}");
        assert_eq!(count("partNumber=2&"), 3, "{flavour:?}: {log:#?}");
        assert_eq!(
            server.pending_uploads(),
            Vec::<String>::new(),
            "{flavour:?}"
        );
        let into = TestDb::new("s3_droppart_into");
        let direct = server.config_file(dir.path(), "pg/", 0);
        let r = restore_into(&direct, &db, &into);
        assert_eq!(r.status, 0, "{flavour:?}: {r:?}");
        assert_eq!(fingerprint(&into), fingerprint(&db), "{flavour:?}");
    }
}

#[test]
fn a_restore_download_dropped_mid_body_resumes_with_a_ranged_get() {
    use crate::common::s3::{Fault, FaultProxy};
    for flavour in [Flavour::Moto, Flavour::S3sFs] {
        let server = S3Server::start(flavour);
        let db = TestDb::new("s3_dropget");
        incompressible(&db);
        let dir = TempDir::new("s3_dropget");
        let config = server.config_file(dir.path(), "pg/", 0);
        let r = run(with_s3(&config, &db.url()).args(["backup", "--job", "nightly"]));
        assert_eq!(r.status, 0, "{flavour:?}: {r:?}");
        // the dump's GET (not its manifest's, nor a listing's) breaks off 3 MiB into the body, once
        let proxy = FaultProxy::start_with(
            &server.endpoint,
            &["GET ", "/pg/", ".sql.gz HTTP/1.1"],
            1,
            Fault::DropResponseBody(3 << 20),
        );
        let config = config_through(&server, dir.path(), &proxy);
        let into = TestDb::new("s3_dropget_into");
        let r = restore_into(&config, &db, &into);
        assert_eq!(r.status, 0, "{flavour:?}: {r:?}");
        assert_eq!(fingerprint(&into), fingerprint(&db), "{flavour:?}");
        let resumed: Vec<String> = proxy
            .heads()
            .into_iter()
            .filter(|h| h.starts_with("GET ") && h.contains(".sql.gz HTTP/1.1"))
            .filter_map(|h| {
                h.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("range")
                        .then(|| v.trim().to_string())
                })
            })
            .filter(|r| r != "bytes=0-")
            .collect();
        assert!(
            !resumed.is_empty(),
            "{flavour:?}: no ranged GET resumed the download: {:#?}",
            proxy.heads()
        );
        let from: u64 = resumed[0]
            .strip_prefix("bytes=")
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|n| n.parse().ok())
            .unwrap();
        assert!(
            from > 0 && from <= 3 << 20,
            "{flavour:?}: resumed from {from}, not where the drop was"
        );
    }
}

#[test]
fn check_lists_unfinished_uploads_and_a_backup_aborts_only_pgdrives_stale_ones() {
    use crate::common::s3::{Fault, FaultProxy};
    // moto: s3s-fs implements no ListMultipartUploads
    let server = S3Server::start(Flavour::Moto);
    let db = TestDb::new("s3_stale");
    seed_shop(&db);
    let dir = TempDir::new("s3_stale");
    let own = format!("pg/{}-daily-20200101T000000Z.sql.gz", db.name);
    let foreign = [
        "pg/other-tool-export.tar".to_string(),
        "pg/tools/dump-20200101T000000Z.sql.gz".to_string(),
    ];
    for key in std::iter::once(&own).chain(&foreign) {
        server.start_raw_upload(key);
    }
    // the proxy tells how old the uploads are (moto says 2010 for all): an hour, then 25 hours
    let now = pgdrive::timeutil::now_millis();
    let hour = 3_600_000;
    let fresh = FaultProxy::start_with(
        &server.endpoint,
        &["GET ", "?uploads"],
        u32::MAX,
        Fault::UploadsInitiatedAt(now - hour),
    );
    let config = config_through(&server, dir.path(), &fresh);
    let r = run(with_s3(&config, &db.url()).arg("check"));
    let out = format!("{}{}", r.stdout, r.stderr);
    assert!(out.contains("3 unfinished multipart upload(s)"), "{out}");
    assert!(out.contains(&format!("pgdrive's: {own}")), "{out}");
    assert!(
        out.contains(&format!("not pgdrive's: {}, {}", foreign[0], foreign[1])),
        "{out}"
    );
    // an hour old: maybe a backup still running elsewhere; a backup aborts nothing
    let r = run(with_s3(&config, &db.url()).args(["backup", "--job", "nightly"]));
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(
        server.pending_uploads().len(),
        3,
        "a fresh upload was aborted"
    );
    // a day old: pgdrive's own is aborted, the others stay
    let old = FaultProxy::start_with(
        &server.endpoint,
        &["GET ", "?uploads"],
        u32::MAX,
        Fault::UploadsInitiatedAt(now - 25 * hour),
    );
    let config = config_through(&server, dir.path(), &old);
    std::thread::sleep(std::time::Duration::from_millis(1100)); // names are to the second
    let r = run(with_s3(&config, &db.url()).args(["backup", "--job", "nightly"]));
    assert_eq!(r.status, 0, "{r:?}");
    let mut left = server.pending_uploads();
    left.sort();
    let mut want: Vec<String> = foreign
        .iter()
        .map(|k| format!("<unfinished upload of {k}>"))
        .collect();
    want.sort();
    assert_eq!(left, want, "{:#?}", old.requests());
    let aborts: Vec<String> = old
        .requests()
        .into_iter()
        .filter(|l| l.starts_with("DELETE") && l.contains("uploadId="))
        .collect();
    assert_eq!(aborts.len(), 1, "{aborts:#?}");
}

#[test]
fn storage_class_and_server_side_encryption_are_sent_with_every_new_object() {
    use crate::common::s3::FaultProxy;
    let kms = "arn:aws:kms:us-east-1:123456789012:key/pgdrive-test-key";
    for flavour in [Flavour::Moto, Flavour::S3sFs] {
        let server = S3Server::start(flavour);
        // s3s-fs knows the STANDARD class alone (InvalidStorageClass for any other)
        let infrequent = |class| {
            if flavour == Flavour::Moto {
                class
            } else {
                "STANDARD"
            }
        };
        for (sse, key_id, class) in [
            ("AES256", None, infrequent("STANDARD_IA")),
            ("aws:kms", Some(kms), infrequent("ONEZONE_IA")),
        ] {
            let proxy = FaultProxy::start(&server.endpoint, "-none-", 0);
            let mut cfg = server.config("sse/", 1000);
            cfg.place.endpoint = Some(proxy.endpoint.clone());
            cfg.place.sse = Some(sse.into());
            cfg.place.sse_kms_key_id = key_id.map(Into::into);
            cfg.place.storage_class = Some(class.into());
            let mut t = pgdrive::storage::s3::S3Target::from_config("s3".into(), cfg);
            // one small object (PutObject), one multipart
            for (name, len) in [("small-x.bin", 1000), ("large-x.bin", (5 << 20) + 1000)] {
                let name = format!("{}-{name}", sse.replace(':', "_"));
                let data: Vec<u8> = (0..len).map(|i: usize| (i * 7) as u8).collect();
                let mut h = pgdrive::storage::Hasher::default();
                h.update(&data);
                let mut up = t
                    .begin(&name, "application/octet-stream", &BTreeMap::new(), 5 << 20)
                    .unwrap();
                up.write(bytes::Bytes::from(data)).unwrap();
                up.finish(&pgdrive::storage::Completion {
                    digest: h.finish(),
                    properties: BTreeMap::new(),
                    row_counts: BTreeMap::new(),
                    sealed_row_counts: None,
                    manifest_extra: BTreeMap::new(),
                    recipients: Vec::new(),
                })
                .unwrap_or_else(|e| panic!("{flavour:?} {sse}: {e:#}"));
                let creating: Vec<String> = proxy
                    .heads()
                    .into_iter()
                    .filter(|h| {
                        let line = h.lines().next().unwrap_or("");
                        // PutObject, or CreateMultipartUpload
                        line.starts_with(&format!("PUT /{}/sse/{name} ", server.bucket))
                            || line.starts_with(&format!(
                                "POST /{}/sse/{name}?uploads ",
                                server.bucket
                            ))
                    })
                    .map(|h| h.to_ascii_lowercase())
                    .collect();
                assert_eq!(creating.len(), 1, "{flavour:?}: {creating:#?}");
                let head = &creating[0];
                let has = |h: &str, v: &str| head.contains(&format!("{h}: {}", v.to_lowercase()));
                assert!(has("x-amz-storage-class", class), "{head}");
                assert!(has("x-amz-server-side-encryption", sse), "{head}");
                if let Some(k) = key_id {
                    assert!(
                        has("x-amz-server-side-encryption-aws-kms-key-id", k),
                        "{head}"
                    );
                }
                // the manifest is encrypted as the backup is (a bucket policy may require it),
                // but keeps the standard class (listings read it)
                let manifest = proxy
                    .heads()
                    .into_iter()
                    .find(|h| {
                        h.starts_with(&format!("PUT /{}/sse/{name}.manifest.json ", server.bucket))
                    })
                    .unwrap()
                    .to_ascii_lowercase();
                assert!(
                    manifest.contains(&format!(
                        "x-amz-server-side-encryption: {}",
                        sse.to_lowercase()
                    )),
                    "{manifest}"
                );
                assert!(!manifest.contains("x-amz-storage-class"), "{manifest}");
                if flavour == Flavour::Moto {
                    // and the server kept them
                    let stored = server.head_headers(&format!("sse/{name}"));
                    assert_eq!(
                        stored.get("x-amz-storage-class").map(String::as_str),
                        Some(class),
                        "{stored:?}"
                    );
                    assert_eq!(
                        stored
                            .get("x-amz-server-side-encryption")
                            .map(String::as_str),
                        Some(sse),
                        "{stored:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn s3_credentials_come_from_aws_profile_in_the_shared_credentials_file() {
    let server = S3Server::start(Flavour::S3sFs); // s3s-fs checks every signature
    let db = TestDb::new("s3_profile");
    seed_shop(&db);
    let dir = TempDir::new("s3_profile");
    let config = server.config_file(dir.path(), "pg/", 0);
    let credentials = dir.path().join("credentials");
    let wrong = "not-the-secret-of-default-0000";
    std::fs::write(
        &credentials,
        format!(
            "[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {wrong}\n\n# the one that works\n[pgdrive-ci]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
        ),
    )
    .unwrap();
    let profile = |name: &str| {
        let mut cmd = with_s3(&config, &db.url());
        cmd.env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env("AWS_SHARED_CREDENTIALS_FILE", &credentials)
            .env("AWS_PROFILE", name)
            .args(["backup", "--job", "nightly"]);
        run(&mut cmd)
    };
    let r = profile("pgdrive-ci");
    assert_eq!(r.status, 0, "{r:?}");
    assert!(
        r.stderr.contains("S3 part size chosen") && r.stderr.contains("ceiling"),
        "{}",
        r.stderr
    );
    assert_eq!(
        crate::common::without_globals(server.target("pg/", 1000).keys().unwrap()).len(),
        2
    );
    assert!(!r.stderr.contains(SECRET_KEY) && !r.stdout.contains(SECRET_KEY));
    let r = profile("default");
    assert_eq!(r.status, 78, "{r:?}");
    assert!(r.stderr.contains("SignatureDoesNotMatch"), "{}", r.stderr);
    assert!(!r.stderr.contains(wrong) && !r.stdout.contains(wrong));
    let r = profile("missing");
    assert_eq!(r.status, 78, "{r:?}");
    assert!(r.stderr.contains("[missing]"), "{}", r.stderr);
}
