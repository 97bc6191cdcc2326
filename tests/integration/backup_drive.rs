//! `pgdrive backup` into Google Drive, against the emulator (tests/emulator/google_emulator.py):
//! the resumable protocol under faults, tokens, retention, verification and Google's errors.

use std::time::Duration;

use crate::common::*;
use serde_json::{json, Value};

fn chunk_requests(emu: &Emulator) -> Vec<Value> {
    emu.requests()
        .into_iter()
        .filter(|r| r["op"] == "upload_chunk")
        .collect()
}

/// A restart would send byte 0 again after later bytes went out; a resent chunk (after a 401 or a
/// 5xx) repeats its own offset, which is fine.
fn assert_never_restarted(chunks: &[Value]) {
    let offsets: Vec<u64> = chunks.iter().filter_map(range_start).collect();
    assert!(
        offsets.windows(2).all(|w| w[0] <= w[1]),
        "the upload went backwards (restarted): {offsets:?}"
    );
    assert!(offsets.iter().any(|o| *o > 0), "{offsets:?}");
}

fn range_start(r: &Value) -> Option<u64> {
    r["content_range"]
        .as_str()?
        .strip_prefix("bytes ")?
        .split('-')
        .next()?
        .parse()
        .ok()
}

/// The one backup in the folder, after checking it is complete and labelled.
fn the_backup(g: &Google, folder: &str, db: &TestDb, kind: &str) -> (Value, Vec<u8>) {
    let files = g.emu.backups_in(folder);
    assert_eq!(files.len(), 1, "{files:#?}");
    let f = files[0].clone();
    let content = g.emu.content(f["id"].as_str().unwrap());
    let props = &f["appProperties"];
    assert_eq!(props["pgdrive"], "1");
    assert_eq!(props["pgdrive_kind"], kind);
    assert_eq!(props["pgdrive_database"], db.name.as_str());
    use sha2::Digest;
    assert_eq!(
        props["pgdrive_sha256"],
        pgdrive::storage::hex(&sha2::Sha256::digest(&content)).as_str()
    );
    assert_eq!(f["mimeType"], "application/gzip");
    assert_eq!(f["size"], content.len().to_string().as_str());
    (f, content)
}

#[test]
fn daily_backup_lands_in_the_shared_drive_and_restores() {
    let g = Google::shared_drive();
    let db = TestDb::new("drive_daily");
    seed_shop(&db);
    let r = run(g.pgdrive(&db).args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 0, "{r:?}");
    let (file, content) = the_backup(&g, &g.folder, &db, "daily");
    assert!(file["name"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{}-daily-", db.name)));
    assert!(file["appProperties"]["pgdrive_server_version"]
        .as_str()
        .unwrap()
        .starts_with("15"));
    assert!(!file["appProperties"]["pgdrive_pg_dump_version"]
        .as_str()
        .unwrap()
        .is_empty());
    assert!(
        file["description"].is_null(),
        "row counts are in the manifest"
    );
    let manifests = g.emu.manifests_in(&g.folder);
    assert_eq!(manifests.len(), 1, "{manifests:#?}");
    assert_eq!(
        manifests[0]["name"],
        format!("{}.manifest.json", file["name"].as_str().unwrap()).as_str()
    );
    let manifest: Value =
        serde_json::from_slice(&g.emu.content(manifests[0]["id"].as_str().unwrap())).unwrap();
    assert_eq!(manifest["pgdrive_manifest"], 2);
    assert_eq!(manifest["id"], file["id"]);
    assert_eq!(manifest["database"], db.name.as_str());
    assert_eq!(manifest["row_counts"]["public.orders"], 5000);
    assert_eq!(manifest["sha256"], file["appProperties"]["pgdrive_sha256"]);
    let target = TestDb::new("drive_daily_dst");
    restore_gz(&content, &target.url());
    assert_eq!(target.query_i64("SELECT count(*) FROM orders"), 5000);
    // every call carried supportsAllDrives; listings also includeItemsFromAllDrives
    for req in g.emu.requests() {
        let op = req["op"].as_str().unwrap_or("");
        if ["list", "get", "delete", "update", "upload_initiate"].contains(&op) {
            assert_eq!(req["query"]["supportsAllDrives"], "true", "{req}");
        }
        if op == "list" {
            assert_eq!(req["query"]["includeItemsFromAllDrives"], "true", "{req}");
        }
    }
    let rows = db.catalog();
    assert_eq!(rows[0].0, "SUCCESS");
    assert_eq!(rows[0].4.as_deref(), file["id"].as_str());
}

#[test]
fn hourly_and_schema_backups_go_to_their_own_folders() {
    let g = Google::shared_drive();
    let hourly = g.new_folder("hourly");
    let schema = g.new_folder("schema");
    let db = TestDb::new("drive_kinds");
    seed_shop(&db);
    let r = run(g
        .pgdrive(&db)
        .env("HOURLY_DRIVE_FOLDER_ID", &hourly)
        .env("PGDRIVE_CRITICAL_TABLES", "orders")
        .args(["backup", "--kind", "hourly"]));
    assert_eq!(r.status, 0, "{r:?}");
    let r = run(g
        .pgdrive(&db)
        .env("SCHEMA_DRIVE_FOLDER_ID", &schema)
        .args(["backup", "--kind", "schema"]));
    assert_eq!(r.status, 0, "{r:?}");
    let (_, hourly_content) = the_backup(&g, &hourly, &db, "hourly");
    let (_, schema_content) = the_backup(&g, &schema, &db, "schema");
    assert!(g.emu.files_in(&g.folder).is_empty());
    let sql = gunzip(&hourly_content);
    assert!(sql.contains("COPY public.orders") && !sql.contains("customers ("));
    assert!(!gunzip(&schema_content).contains("COPY "));
}

#[test]
fn a_503_and_a_dropped_connection_mid_upload_are_resumed_without_restarting() {
    let g = Google::shared_drive();
    let db = TestDb::new("drive_resume");
    bulky(&db);
    g.emu.fault(json!([
        {"op": "upload_chunk", "nth": 2, "action": {"status": 503}},
        {"op": "upload_chunk", "nth": 4, "action": {"drop": "after"}},
        {"op": "upload_chunk", "nth": 6, "action": {"drop": "before"}},
    ]));
    let r = run(g
        .pgdrive(&db)
        .env("PGDRIVE_CHUNK_SIZE", "256KiB")
        .args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 0, "{r:?}");
    let (_, content) = the_backup(&g, &g.folder, &db, "daily");
    let chunks = chunk_requests(&g.emu);
    assert!(
        chunks.len() >= 7,
        "expected several chunks: {}",
        chunks.len()
    );
    assert_never_restarted(&chunks);
    // after each fault the client asked the session how much it held
    let status_queries = g
        .emu
        .requests()
        .iter()
        .filter(|r| r["op"] == "upload_status")
        .count();
    assert!(status_queries >= 3, "status queries: {status_queries}");
    // the bytes Drive holds are exactly the dump
    let target = TestDb::new("drive_resume_dst");
    restore_gz(&content, &target.url());
    assert_eq!(target.query_i64("SELECT count(*) FROM blobs"), 40000);
    assert_eq!(g.emu.sessions().len(), 1);
}

#[test]
fn a_partially_persisted_chunk_is_resent_from_memory() {
    let g = Google::shared_drive();
    let db = TestDb::new("drive_partial");
    bulky(&db);
    g.emu
        .fault(json!([{"op": "upload_chunk", "nth": 1, "action": {"persist_partial": 262144}}]));
    let r = run(g
        .pgdrive(&db)
        .env("PGDRIVE_CHUNK_SIZE", "512KiB")
        .args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 0, "{r:?}");
    the_backup(&g, &g.folder, &db, "daily");
    let chunks = chunk_requests(&g.emu);
    assert_eq!(
        range_start(&chunks[1]),
        Some(262144),
        "the unacknowledged half is sent again: {:#?}",
        &chunks[..2]
    );
}

#[test]
fn rate_limits_back_off_and_retry() {
    let g = Google::shared_drive();
    let db = TestDb::new("drive_429");
    seed_shop(&db);
    g.emu.fault(json!([
        {"op": "upload_initiate", "nth": 1, "times": 2, "action": {"status": 429, "retry_after": 1}},
        {"op": "list", "nth": 1, "action": {"status": 403, "reason": "userRateLimitExceeded"}},
        {"op": "upload_chunk", "nth": 1, "action": {"status": 500}},
    ]));
    let started = std::time::Instant::now();
    let r = run(g.pgdrive(&db).args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 0, "{r:?}");
    // Retry-After: 1 was honoured (twice), even though the test's backoff is 20 ms
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let reqs = g.emu.requests();
    assert_eq!(
        reqs.iter().filter(|r| r["op"] == "upload_initiate").count(),
        3
    );
    assert!(reqs.iter().filter(|r| r["op"] == "list").count() >= 2);
    the_backup(&g, &g.folder, &db, "daily");
}

#[test]
fn a_token_that_expires_mid_upload_is_refreshed_without_restarting() {
    let g = Google::shared_drive();
    g.emu.post("config", json!({"token_lifetime_seconds": 2}));
    let db = TestDb::new("drive_token");
    bulky(&db);
    g.emu.fault(json!([
        {"op": "upload_chunk", "nth": 1, "times": 6, "action": {"delay_ms": 600}},
        {"op": "upload_chunk", "nth": 8, "action": {"expire_tokens": true}},
    ]));
    let r = run(g.pgdrive(&db).env("PGDRIVE_CHUNK_SIZE", "256KiB").args([
        "--verbose",
        "backup",
        "--kind",
        "daily",
    ]));
    assert_eq!(r.status, 0, "{r:?}");
    the_backup(&g, &g.folder, &db, "daily");
    let reqs = g.emu.requests();
    let tokens = reqs.iter().filter(|r| r["op"] == "token").count();
    assert!(
        tokens >= 3,
        "the token was refreshed before expiry and after the 401: {tokens} token requests"
    );
    assert!(
        reqs.iter()
            .any(|r| r["op"] == "upload_chunk" && r["status"] == 401),
        "the revoked token was seen"
    );
    assert_never_restarted(&chunk_requests(&g.emu));
    assert_eq!(g.emu.sessions().len(), 1);
}

#[test]
fn pg_dump_failing_mid_upload_leaves_no_file_in_drive() {
    let g = Google::shared_drive();
    let db = TestDb::new("drive_dump_fails");
    let bin = TempDir::new("drive_dump_fails_bin");
    let fake = script(
        bin.path(),
        "pg_dump",
        &format!("if [ \"$1\" = --version ]; then exec {} --version; fi\nhead -c 2000000 /dev/urandom | base64\necho 'pg_dump: error: Dumping the contents of table \"orders\" failed' >&2\nexit 1", real_pg_dump()),
    );
    let r = run(g
        .pgdrive(&db)
        .env("PGDRIVE_PG_DUMP", &fake)
        .env("PGDRIVE_CHUNK_SIZE", "256KiB")
        .args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 1, "{r:?}");
    assert!(r.stderr.contains("Dumping the contents of table"), "{r:?}");
    assert!(
        !chunk_requests(&g.emu).is_empty(),
        "the test should fail mid-upload"
    );
    assert!(
        g.emu.files_in(&g.folder).is_empty(),
        "a partial file was left: {:#?}",
        g.emu.files_in(&g.folder)
    );
    assert!(g.emu.sessions().iter().all(|s| s["state"] != "completed"));
    assert!(
        g.emu.requests().iter().any(|r| r["op"] == "upload_cancel"),
        "the session was not cancelled"
    );
    let rows = db.catalog();
    assert_eq!((rows.len(), rows[0].0.as_str()), (1, "ERROR"));
}

#[test]
fn sigterm_mid_upload_leaves_no_file_and_records_the_interruption() {
    let g = Google::shared_drive();
    let db = TestDb::new("drive_sigterm");
    bulky(&db);
    g.emu.fault(
        json!([{"op": "upload_chunk", "nth": 1, "times": 1000, "action": {"delay_ms": 300}}]),
    );
    let child = start_daily(g.pgdrive(&db).env("PGDRIVE_CHUNK_SIZE", "256KiB"));
    assert!(
        g.emu
            .wait_for_request(|r| r["op"] == "upload_chunk", Duration::from_secs(20)),
        "no upload started"
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("interrupted by SIGTERM"), "{stderr}");
    assert!(g.emu.files_in(&g.folder).is_empty());
    let rows = db.catalog();
    assert_eq!(rows[0].0, "ERROR");
    assert!(rows[0].3.as_deref().unwrap().contains("SIGTERM"));
    // pg_dump is gone too
    let ps = std::process::Command::new("pgrep")
        .args(["-f", &format!("pg_dump.*{}", db.name)])
        .output()
        .unwrap();
    assert!(ps.stdout.is_empty(), "pg_dump still running");
}

#[test]
fn a_held_lock_uploads_nothing() {
    let g = Google::shared_drive();
    let db = TestDb::new("drive_locked");
    let mut holder = db.client();
    holder
        .execute("SELECT pg_advisory_lock(1265025683::bigint)", &[])
        .unwrap();
    let r = run(g
        .pgdrive(&db)
        .env("HOURLY_DRIVE_FOLDER_ID", &g.folder)
        .env("PGDRIVE_CRITICAL_TABLES", "x")
        .args(["backup", "--kind", "hourly"]));
    assert_eq!(r.status, 75, "{r:?}");
    assert!(g
        .emu
        .requests()
        .iter()
        .all(|r| !r["op"].as_str().unwrap_or("").starts_with("upload")));
    assert!(g.emu.files_in(&g.folder).is_empty());
}

#[test]
fn retention_keeps_the_newest_own_files_and_never_touches_foreign_ones() {
    let g = Google::shared_drive();
    let db = TestDb::new("drive_keep");
    // 19 earlier backups of this database and kind, 3 foreign files, 2 of another kind/database
    for day in 1..=19 {
        g.emu.post("files", json!({
            "name": format!("{}-daily-202610{day:02}T030000Z.sql.gz", db.name),
            "parents": [g.folder],
            "content_b64": "H4sIAAAAAAAAAwMAAAAAAAAAAAA=",
            "createdTime": format!("2026-10-{day:02}T03:00:00.000Z"),
            "appProperties": {"pgdrive": "1", "pgdrive_kind": "daily", "pgdrive_database": db.name,
                              "pgdrive_size": "20", "pgdrive_sha256": "ab", "pgdrive_md5": "cd"},
        }));
    }
    // 2 uploads that were never labelled complete (checksums unrecorded, no manifest): they must
    // not take places among the 14, and, being days old, they are deleted as leftovers
    for day in [20, 21] {
        g.emu.post("files", json!({
            "name": format!("{}-daily-202610{day:02}T030000Z.sql.gz", db.name),
            "parents": [g.folder],
            "content_b64": "H4sIAAAAAAAAAwMAAAAAAAAAAAA=",
            "createdTime": format!("2026-10-{day:02}T03:00:00.000Z"),
            "appProperties": {"pgdrive": "1", "pgdrive_kind": "daily", "pgdrive_database": db.name},
        }));
    }
    for i in 1..=3 {
        g.emu.post("files", json!({"name": format!("{}-daily-2020010{i}T030000Z.sql.gz", db.name), "parents": [g.folder], "createdTime": format!("2020-01-0{i}T00:00:00.000Z")}));
    }
    g.emu.post(
        "files",
        json!({"name": "x", "parents": [g.folder], "createdTime": "2020-01-01T00:00:00.000Z",
        "appProperties": {"pgdrive": "1", "pgdrive_kind": "hourly", "pgdrive_database": db.name}}),
    );
    g.emu.post(
        "files",
        json!({"name": "y", "parents": [g.folder], "createdTime": "2020-01-01T00:00:00.000Z",
        "appProperties": {"pgdrive": "1", "pgdrive_kind": "daily", "pgdrive_database": "otherdb"}}),
    );
    let r = run(g.pgdrive(&db).args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 0, "{r:?}");
    let files = g.emu.backups_in(&g.folder);
    let own: Vec<&Value> = files
        .iter()
        .filter(|f| {
            f["appProperties"]["pgdrive_kind"] == "daily"
                && f["appProperties"]["pgdrive_database"] == db.name.as_str()
        })
        .collect();
    assert_eq!(own.len(), 14, "{own:#?}");
    assert_eq!(files.len(), 14 + 3 + 2);
    // the 6 oldest of the 20 went: day 1 to day 6
    let mut names: Vec<&str> = own.iter().map(|f| f["name"].as_str().unwrap()).collect();
    names.sort();
    assert!(names[0].contains("20261007T"), "{names:?}");
    assert!(
        g.emu
            .requests()
            .iter()
            .filter(|r| r["op"] == "delete")
            .count()
            == 6 + 2
    );
    assert!(
        !names
            .iter()
            .any(|n| n.contains("20261020T") || n.contains("20261021T")),
        "{names:?}"
    );
    assert!(r.stderr.contains("deleted an unfinished upload"), "{r:?}");
    // permanently deleted, not trashed
    assert!(g.emu.files().iter().all(|f| f["trashed"] != true));
}

#[test]
fn a_checksum_mismatch_fails_and_the_bad_file_is_deleted() {
    let g = Google::shared_drive();
    let db = TestDb::new("drive_md5");
    seed_shop(&db);
    g.emu
        .fault(json!([{"op": "upload_chunk", "nth": 1, "action": {"corrupt_md5": true}}]));
    let r = run(g.pgdrive(&db).args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 1, "{r:?}");
    assert!(r.stderr.contains("MD5"), "{r:?}");
    assert!(
        g.emu.files_in(&g.folder).is_empty(),
        "{:#?}",
        g.emu.files_in(&g.folder)
    );
    assert_eq!(db.catalog()[0].0, "ERROR");
}

#[test]
fn a_service_account_writing_into_a_my_drive_folder_gets_the_quota_hint() {
    let g = Google::shared_drive();
    let mine = g.emu.post("folders", json!({"name": "personal", "owner": "alice@example.com", "permissions": {g.sa_email.clone(): "writer"}}));
    let db = TestDb::new("drive_quota");
    let r = run(g
        .pgdrive(&db)
        .env("GOOGLE_DRIVE_FOLDER_ID", mine["id"].as_str().unwrap())
        .args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 78, "{r:?}");
    assert!(r.stderr.contains("storageQuotaExceeded"), "{r:?}");
    let hint = r
        .stderr
        .lines()
        .find(|l| l.starts_with("hint:"))
        .unwrap_or_default();
    assert!(
        hint.contains("shared drive")
            && hint.contains("GOOGLE_IMPERSONATE_USER")
            && hint.contains("authorized_user"),
        "{r:?}"
    );
    assert!(
        g.emu.requests().iter().all(|r| r["op"] != "upload_chunk"),
        "nothing should have been dumped or sent"
    );

    // domain-wide delegation: the same folder works when acting as its owner
    let r = run(g
        .pgdrive(&db)
        .env("GOOGLE_DRIVE_FOLDER_ID", mine["id"].as_str().unwrap())
        .env("GOOGLE_IMPERSONATE_USER", "alice@example.com")
        .args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(g.emu.backups_in(mine["id"].as_str().unwrap()).len(), 1);
}

#[test]
fn oauth_user_credentials_work_and_a_revoked_refresh_token_gets_a_hint() {
    let g = Google::shared_drive();
    g.emu.post("authorized_users", json!({"client_id": "123.apps.googleusercontent.com", "client_secret": "cs", "refresh_token": "good-refresh", "email": "bob@gmail.com"}));
    let mine = g.emu.post(
        "folders",
        json!({"name": "bob's", "owner": "bob@gmail.com"}),
    );
    let folder = mine["id"].as_str().unwrap();
    let creds = g.dir.path().join("user.json");
    let write = |token: &str| {
        std::fs::write(&creds, json!({"type": "authorized_user", "client_id": "123.apps.googleusercontent.com", "client_secret": "cs", "refresh_token": token, "token_uri": g.emu.token_uri()}).to_string()).unwrap();
    };
    let db = TestDb::new("drive_oauth");
    write("good-refresh");
    let mut cmd = pgdrive();
    cmd.env("DATABASE_URL", db.url())
        .env("GOOGLE_APPLICATION_CREDENTIALS", &creds)
        .env("GOOGLE_DRIVE_FOLDER_ID", folder)
        .env("PGDRIVE_DRIVE_URL", &g.emu.base);
    let r = run(cmd.args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(g.emu.backups_in(folder).len(), 1);
    write("revoked-refresh");
    let r = run(&mut cmd);
    assert_eq!(r.status, 78, "{r:?}");
    assert!(
        r.stderr.contains("invalid_grant")
            && r.stderr.contains("hint:")
            && r.stderr.contains("7 days"),
        "{r:?}"
    );
    assert!(
        !r.stderr.contains("revoked-refresh"),
        "the refresh token leaked: {r:?}"
    );
}

#[test]
fn bad_keys_and_unknown_folders_are_configuration_errors() {
    let g = Google::shared_drive();
    let db = TestDb::new("drive_bad");
    let r = run(g.pgdrive(&db).env("GOOGLE_SERVICE_ACCOUNT_JSON", serde_json::json!({"type": "service_account", "private_key": format!("-----BEGIN {0}-----\nnot a key\n-----END {0}-----\n", "PRIVATE KEY"), "client_email": "x@y"}).to_string()).args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 78, "{r:?}");
    assert!(
        r.stderr.contains("not a usable RSA key") && !r.stderr.contains("not a key"),
        "{r:?}"
    );
    let r = run(g
        .pgdrive(&db)
        .env("GOOGLE_SERVICE_ACCOUNT_JSON", "{ this is not json")
        .args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 78, "{r:?}");
    assert!(r.stderr.contains("not valid JSON"), "{r:?}");
    let r = run(g
        .pgdrive(&db)
        .env("GOOGLE_DRIVE_FOLDER_ID", "0AbCdEfNoSuchFolder")
        .args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 78, "{r:?}");
    assert!(
        r.stderr.contains("0AbCdEfNoSuchFolder") && r.stderr.contains("not found"),
        "{r:?}"
    );
    // a file id where a folder id belongs
    let file = g
        .emu
        .post("files", json!({"name": "notes.txt", "parents": [g.folder]}));
    let r = run(g
        .pgdrive(&db)
        .env("GOOGLE_DRIVE_FOLDER_ID", file["id"].as_str().unwrap())
        .args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 78, "{r:?}");
    assert!(r.stderr.contains("not a folder"), "{r:?}");
    let r = run(g
        .pgdrive(&db)
        .env("PGDRIVE_DRIVE_URL", "ftp://example")
        .args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 78, "{r:?}");
    assert!(
        g.emu.backups_in(&g.folder).len() == 1,
        "only the notes file"
    );
}

#[test]
fn drive_and_local_copies_are_written_together() {
    let g = Google::shared_drive();
    let db = TestDb::new("drive_both");
    seed_shop(&db);
    let dir = TempDir::new("drive_both");
    let r = run(g.pgdrive(&db).args([
        "backup",
        "--kind",
        "daily",
        "--to",
        dir.path().to_str().unwrap(),
    ]));
    assert_eq!(r.status, 0, "{r:?}");
    let (file, content) = the_backup(&g, &g.folder, &db, "daily");
    let local = dir.path().join(file["name"].as_str().unwrap());
    assert_eq!(std::fs::read(local).unwrap(), content);
}

#[test]
fn an_expired_upload_session_fails_the_backup_clearly() {
    let g = Google::shared_drive();
    g.emu.post("config", json!({"session_lifetime_seconds": 1}));
    let db = TestDb::new("drive_expired");
    bulky(&db);
    g.emu
        .fault(json!([{"op": "upload_chunk", "nth": 2, "action": {"status": 503}}]));
    // the backoff after the 503 outlasts the session
    let r = run(g
        .pgdrive(&db)
        .env("PGDRIVE_CHUNK_SIZE", "256KiB")
        .env("PGDRIVE_RETRY_INITIAL_MS", "3000")
        .env("PGDRIVE_RETRY_MAX_MS", "3000")
        .args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 1, "{r:?}");
    assert!(r.stderr.contains("upload session expired"), "{r:?}");
    assert!(g.emu.files_in(&g.folder).is_empty());
    assert_eq!(db.catalog()[0].0, "ERROR");
}

#[test]
fn a_content_manager_cannot_prune_so_the_run_exits_3_with_the_fix() {
    let g = Google::shared_drive();
    // a second shared drive where the service account is only a Content manager
    let drive = g.emu.post(
        "shared_drives",
        json!({"name": "Limited", "members": {g.sa_email.clone(): "fileOrganizer"}}),
    );
    let folder = g
        .emu
        .post("folders", json!({"name": "db", "drive_id": drive["id"]}))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let db = TestDb::new("drive_prune_forbidden");
    for day in 1..=2 {
        g.emu.post("files", json!({
            "name": format!("old-{day}"), "parents": [folder], "createdTime": format!("2026-10-0{day}T03:00:00.000Z"),
            "appProperties": {"pgdrive": "1", "pgdrive_kind": "daily", "pgdrive_database": db.name},
        }));
    }
    let r = run(g
        .pgdrive(&db)
        .env("GOOGLE_DRIVE_FOLDER_ID", &folder)
        .args(["backup", "--kind", "daily", "--keep", "1"]));
    assert_eq!(r.status, 3, "{r:?}");
    assert!(
        r.stderr.contains("pruning old backups in") && r.stderr.contains("Manager"),
        "{r:?}"
    );
    assert_eq!(
        g.emu.backups_in(&folder).len(),
        3,
        "the new backup is stored, nothing was deleted"
    );
    let rows = db.catalog();
    assert_eq!(rows[0].0, "SUCCESS");
}

/// Starts `pgdrive backup --kind daily` from `cmd` (the test's settings), stderr captured.
fn start_daily(cmd: &mut std::process::Command) -> std::process::Child {
    cmd.args(["backup", "--kind", "daily"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until the emulator holds a faulted `op` request (one its fault rule keeps hanging).
fn wait_until_held(g: &Google, op: &str) {
    assert!(
        g.emu.wait_for_request(
            |r| r["op"] == op && !r["fault"].is_null(),
            Duration::from_secs(30)
        ),
        "the run never reached the held {op} request"
    );
}

/// Sends the run SIGTERM; it must exit 1 within 10 s. Returns its stderr and how long it took.
fn sigterm(child: std::process::Child) -> (String, Duration) {
    // SAFETY: signals the child we spawned and have not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    fails_within(child, Duration::from_secs(10))
}

/// The failure left nothing behind: no file, the session cancelled, one ERROR row whose error
/// contains `error_part`.
fn assert_failed_cleanly(g: &Google, db: &TestDb, error_part: &str) {
    assert!(
        g.emu.files_in(&g.folder).is_empty(),
        "{:#?}",
        g.emu.files_in(&g.folder)
    );
    assert!(
        g.emu.requests().iter().any(|r| r["op"] == "upload_cancel"),
        "the session was not cancelled"
    );
    let rows = db.catalog();
    assert_eq!((rows.len(), rows[0].0.as_str()), (1, "ERROR"), "{rows:?}");
    let error = rows[0].3.as_deref().unwrap_or_default();
    assert!(error.contains(error_part), "{error}");
}

#[test]
fn sigterm_during_a_stalled_upload_exits_within_seconds_with_an_error_row() {
    let g = Google::shared_drive();
    let db = TestDb::new("drive_sigterm_hang");
    bulky(&db);
    // Drive reads the second chunk and then says nothing for two minutes; cancelling the
    // session hangs as well, so the cleanup has to be bounded too
    g.emu.fault(json!([
        {"op": "upload_chunk", "nth": 2, "action": {"hang_ms": 120000}},
        {"op": "upload_cancel", "action": {"hang_ms": 120000}},
    ]));
    let child = start_daily(g.pgdrive(&db).env("PGDRIVE_CHUNK_SIZE", "256KiB"));
    wait_until_held(&g, "upload_chunk");
    std::thread::sleep(Duration::from_millis(500)); // well inside the hanging request
    let (stderr, _) = sigterm(child);
    assert!(stderr.contains("interrupted by SIGTERM"), "{stderr}");
    assert_failed_cleanly(&g, &db, "SIGTERM");
}

#[test]
fn a_pg_dump_that_stops_producing_output_fails_as_stalled() {
    let g = Google::shared_drive();
    let db = TestDb::new("drive_stall_dump");
    let bin = TempDir::new("drive_stall_dump_bin");
    let fake = script(
        bin.path(),
        "pg_dump",
        &format!(
            "if [ \"$1\" = --version ]; then exec {} --version; fi\necho 'SET statement_timeout = 0;'\nexec sleep 60",
            real_pg_dump()
        ),
    );
    let child = start_daily(
        g.pgdrive(&db)
            .env("PGDRIVE_PG_DUMP", &fake)
            .env("PGDRIVE_STALL_TIMEOUT_MS", "1500"),
    );
    let (stderr, _) = fails_within(child, Duration::from_secs(15));
    assert!(
        stderr.contains("stalled: pg_dump produced no output for 1.5 s"),
        "{stderr}"
    );
    assert!(stderr.contains("hint: "), "{stderr}");
    assert_failed_cleanly(&g, &db, "stalled: pg_dump produced no output");
}

#[test]
fn a_drive_that_accepts_no_bytes_fails_as_stalled() {
    let g = Google::shared_drive();
    let db = TestDb::new("drive_stall_target");
    bulky(&db);
    g.emu.fault(
        json!([{"op": "upload_chunk", "nth": 1, "times": 100, "action": {"hang_ms": 60000}}]),
    );
    let child = start_daily(
        g.pgdrive(&db)
            .env("PGDRIVE_CHUNK_SIZE", "256KiB")
            .env("PGDRIVE_STALL_TIMEOUT_MS", "1500"),
    );
    let (stderr, _) = fails_within(child, Duration::from_secs(15));
    let wanted = format!(
        "stalled: Google Drive folder {} accepted no bytes for 1.5 s",
        g.folder
    );
    assert!(stderr.contains(&wanted), "{stderr}");
    assert_failed_cleanly(&g, &db, &wanted);
}

#[test]
fn a_308_that_acknowledges_nothing_is_resent_only_a_bounded_number_of_times() {
    let g = Google::shared_drive();
    let db = TestDb::new("drive_308_none");
    seed_shop(&db);
    // every chunk is answered 308 with nothing stored
    g.emu.fault(
        json!([{"op": "upload_chunk", "nth": 1, "times": 1000, "action": {"persist_partial": 0}}]),
    );
    let child = start_daily(g.pgdrive(&db).env("PGDRIVE_RETRY_MAX", "3"));
    let (out, _) = exit_within(child, Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("acknowledged none of the") && stderr.contains("gave up after 3 retries"),
        "{stderr}"
    );
    assert_eq!(
        chunk_requests(&g.emu).len(),
        4,
        "the first send and 3 resends"
    );
    assert_failed_cleanly(&g, &db, "acknowledged none of the");
}

#[test]
fn a_locked_catalog_does_not_hold_the_exit_after_sigterm() {
    let g = Google::shared_drive();
    let db = TestDb::new("drive_sigterm_catalog");
    seed_shop(&db);
    g.emu
        .fault(json!([{"op": "upload_chunk", "action": {"hang_ms": 120000}}]));
    let child = start_daily(&mut g.pgdrive(&db));
    wait_until_held(&g, "upload_chunk");
    // the catalog stops answering: nobody can write to the backups table
    let mut blocker = db.client();
    let mut tx = blocker.transaction().unwrap();
    tx.batch_execute("LOCK TABLE backups IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let (stderr, took) = sigterm(child);
    tx.rollback().unwrap();
    assert!(
        stderr.contains("could not record the failure in the catalog")
            && stderr.contains("statement timeout")
            && stderr.contains("interrupted by SIGTERM"),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(g.emu.files_in(&g.folder).is_empty());
}

/// A TCP relay to the test server that can be frozen: once frozen it forwards nothing more in
/// either direction, like a network that went silent (the connections stay open).
struct FreezableRelay {
    port: u16,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl FreezableRelay {
    fn start() -> FreezableRelay {
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = std::sync::Arc::new(AtomicBool::new(false));
        let flag = frozen.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let server = std::net::TcpStream::connect("127.0.0.1:5432").unwrap();
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let flag = flag.clone();
                    std::thread::spawn(move || {
                        use std::io::{Read, Write};
                        let mut buf = [0u8; 16 << 10];
                        while let Ok(n) = from.read(&mut buf) {
                            while flag.load(Ordering::SeqCst) {
                                std::thread::sleep(Duration::from_millis(50));
                            }
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    });
                }
            }
        });
        FreezableRelay { port, frozen }
    }

    fn url(&self, db: &TestDb) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{}", self.port, db.name)
    }

    fn freeze(&self) {
        self.frozen.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn a_silent_catalog_does_not_hold_the_exit_after_sigterm() {
    let g = Google::shared_drive();
    let db = TestDb::new("drive_sigterm_silent");
    seed_shop(&db);
    let relay = FreezableRelay::start();
    g.emu
        .fault(json!([{"op": "upload_chunk", "action": {"hang_ms": 120000}}]));
    let child = start_daily(g.pgdrive(&db).env("DATABASE_URL", relay.url(&db)));
    wait_until_held(&g, "upload_chunk");
    relay.freeze(); // the catalog's network goes silent: the ERROR row cannot be written
    let (stderr, _) = sigterm(child);
    assert!(
        stderr.contains("interrupted by SIGTERM, and the cleanup did not finish within 8 s"),
        "{stderr}"
    );
    assert!(g.emu.files_in(&g.folder).is_empty());
}

#[test]
fn sigterm_while_the_new_file_is_labelled_takes_the_file_back() {
    let g = Google::shared_drive();
    let db = TestDb::new("drive_sigterm_label");
    seed_shop(&db);
    // the upload completes, then recording the checksums on the file hangs
    g.emu
        .fault(json!([{"op": "update", "action": {"hang_ms": 120000}}]));
    let child = start_daily(&mut g.pgdrive(&db));
    wait_until_held(&g, "update"); // the run is labelling the new file
    sigterm(child);
    assert!(
        g.emu.files_in(&g.folder).is_empty(),
        "an unverified file was left: {:#?}",
        g.emu.files_in(&g.folder)
    );
    let rows = db.catalog();
    assert_eq!(rows[0].0, "ERROR", "{rows:?}");
    assert!(
        rows[0].3.as_deref().unwrap().contains("SIGTERM"),
        "{rows:?}"
    );
}

#[test]
fn a_folder_lookup_that_never_answers_fails_as_stalled() {
    let g = Google::shared_drive();
    let db = TestDb::new("drive_stall_preflight");
    seed_shop(&db);
    g.emu
        .fault(json!([{"op": "get", "times": 100, "action": {"hang_ms": 60000}}]));
    let child = start_daily(g.pgdrive(&db).env("PGDRIVE_STALL_TIMEOUT_MS", "1500"));
    let (stderr, _) = fails_within(child, Duration::from_secs(15));
    let wanted = format!(
        "stalled: Google Drive folder {} did not answer the preflight for 1.5 s",
        g.folder
    );
    assert!(stderr.contains(&wanted), "{stderr}");
    let rows = db.catalog();
    assert_eq!(rows[0].0, "ERROR", "{rows:?}");
    assert!(rows[0].3.as_deref().unwrap().contains(&wanted), "{rows:?}");
}

#[test]
fn a_metadata_update_refused_after_a_verified_upload_keeps_the_backup_and_exits_3() {
    let g = Google::shared_drive();
    let db = TestDb::new("drive_update_refused");
    seed_shop(&db);
    // the upload completes and verifies; recording the checksums on the file is refused for good
    g.emu
        .fault(json!([{"op": "update", "nth": 1, "action": {"status": 400}}]));
    let r = run(g.pgdrive(&db).args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 3, "{r:?}");
    assert!(r.stderr.contains("recording its metadata failed"), "{r:?}");
    let files = g.emu.backups_in(&g.folder);
    assert_eq!(files.len(), 1, "the verified backup is kept: {files:#?}");
    assert!(files[0]["appProperties"]["pgdrive_sha256"].is_null());
    assert_eq!(g.emu.manifests_in(&g.folder).len(), 1);
    assert_eq!(db.catalog()[0].0, "SUCCESS");
    // found (through its manifest) and restorable
    let r = run(g.pgdrive(&db).args(["list", "--json"]));
    assert_eq!(r.status, 0, "{r:?}");
    let list: Vec<Value> = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(list.len(), 1, "{list:#?}");
    assert_eq!(list[0]["id"], files[0]["id"]);
    let target = TestDb::new("drive_update_refused_dst");
    let r = run(g
        .pgdrive(&db)
        .args(["restore", "latest", "--target-url", &target.url()]));
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(target.query_i64("SELECT count(*) FROM orders"), 5000);
}

#[test]
fn a_manifest_refused_after_a_verified_upload_keeps_the_indexed_backup_and_exits_3() {
    let g = Google::shared_drive();
    let db = TestDb::new("drive_manifest_refused");
    seed_shop(&db);
    g.emu
        .fault(json!([{"op": "create", "nth": 1, "action": {"status": 400}}]));
    let r = run(g.pgdrive(&db).args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 3, "{r:?}");
    assert!(
        r.stderr.contains("recording its metadata failed") && r.stderr.contains("manifest"),
        "{r:?}"
    );
    assert!(g.emu.manifests_in(&g.folder).is_empty());
    let (file, _) = the_backup(&g, &g.folder, &db, "daily"); // complete, by its appProperties
    let r = run(g.pgdrive(&db).args(["verify", "latest"]));
    assert_eq!(r.status, 0, "{r:?}");
    assert!(r.stderr.contains(file["id"].as_str().unwrap()), "{r:?}");
}

/// The IDs of the backups (not manifests) in the folder.
fn backup_ids(g: &Google) -> Vec<String> {
    let mut ids: Vec<String> = g
        .emu
        .backups_in(&g.folder)
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

/// A daily backup of `db` with the credentials in `key` and `--keep keep`, which must succeed;
/// returns the new backup's ID.
fn backup_as(g: &Google, db: &TestDb, key: &std::path::Path, keep: &str) -> String {
    let before = backup_ids(g);
    // a new name each time (the time stamp has seconds): manifests are found by name
    std::thread::sleep(Duration::from_millis(1100));
    let r = run(g
        .pgdrive_with_key(db, key)
        .args(["backup", "--kind", "daily", "--keep", keep]));
    assert_eq!(r.status, 0, "{r:?}");
    let new: Vec<String> = backup_ids(g)
        .into_iter()
        .filter(|i| !before.contains(i))
        .collect();
    assert_eq!(new.len(), 1, "{new:?}");
    new[0].clone()
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

/// Two Cloud projects back up the same database into one folder; neither sees the other's
/// appProperties. Each one's pruning counts the other's backups through their manifests, keeps
/// the newest whoever wrote them, and deletes an old one with its manifest.
#[test]
fn pruning_counts_another_projects_backups_through_their_manifests() {
    let g = Google::shared_drive();
    let other = g.other_project_key("pgdrive-elsewhere");
    let db = TestDb::new("drive_prune_manifests");
    seed_shop(&db);
    let a1 = backup_as(&g, &db, &g.key_file, "0");
    let a2 = backup_as(&g, &db, &g.key_file, "0");
    assert!(
        g.indexed_backups(&other).is_empty(),
        "the projects' indexes are apart"
    );
    // the other project keeps its new backup and the newest of the first's; the oldest goes
    let b1 = backup_as(&g, &db, &other, "2");
    assert_eq!(
        backup_ids(&g),
        sorted(vec![a2.clone(), b1.clone()]),
        "{a1} was the one to prune"
    );
    assert_eq!(
        g.emu.manifests_in(&g.folder).len(),
        2,
        "its manifest went with it"
    );
    // and the first project, seeing the other's backup only through its manifest, likewise
    let a3 = backup_as(&g, &db, &g.key_file, "2");
    assert_eq!(
        backup_ids(&g),
        sorted(vec![a3, b1]),
        "{a2} was the one to prune"
    );
    assert_eq!(g.emu.manifests_in(&g.folder).len(), 2);
}

/// A backup whose manifest Drive refused is known only by appProperties its own project can
/// read: another project cannot tell what it is, so its pruning leaves it alone.
#[test]
fn another_projects_pruning_leaves_a_backup_it_cannot_identify() {
    let g = Google::shared_drive();
    let other = g.other_project_key("pgdrive-elsewhere");
    let db = TestDb::new("drive_prune_unidentified");
    seed_shop(&db);
    g.emu
        .fault(json!([{"op": "create", "nth": 1, "action": {"status": 400}}]));
    let r = run(g.pgdrive(&db).args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 3, "stored without its manifest: {r:?}");
    let unidentified = backup_ids(&g);
    assert!(g.emu.manifests_in(&g.folder).is_empty());
    backup_as(&g, &db, &other, "1");
    let b2 = backup_as(&g, &db, &other, "1");
    assert_eq!(
        backup_ids(&g),
        sorted([unidentified, vec![b2]].concat()),
        "only the other project's own older backup was pruned"
    );
}

/// An account that was shared one folder inside a shared drive, without being a member of the
/// drive: Drive answers its drive-scoped listings 404 "Shared drive not found", so pgdrive must
/// list the folder by parent across all drives, or pruning, `list`, `verify` and `check` all fail.
#[test]
fn a_folder_shared_out_of_a_shared_drive_to_a_non_member_is_listed() {
    let g = Google::shared_drive();
    let folder = g.emu.post(
        "folders",
        json!({"name": "shared-only", "drive_id": g.shared_drive,
               "permissions": {g.sa_email.clone(): "fileOrganizer"}}),
    )["id"]
        .as_str()
        .unwrap()
        .to_string();
    g.emu.post(
        &format!("shared_drives/{}/members", g.shared_drive),
        json!({g.sa_email.clone(): null}),
    );
    let db = TestDb::new("drive_nonmember");
    seed_shop(&db);
    let pgdrive = || {
        let mut cmd = g.pgdrive(&db);
        cmd.env("GOOGLE_DRIVE_FOLDER_ID", &folder);
        cmd
    };
    // the backup's retention step lists the folder; nothing is old enough to delete yet
    let r = run(pgdrive().args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 0, "{r:?}");
    let lists: Vec<Value> = g.emu.requests_of("list");
    assert!(
        lists
            .iter()
            .any(|q| q["query"]["corpora"] == "drive" && q["status"] == 404),
        "the emulator did not refuse the drive-scoped listing: {lists:#?}"
    );
    assert!(
        lists
            .iter()
            .any(|q| q["query"]["corpora"] == "allDrives" && q["status"] == 200),
        "{lists:#?}"
    );
    let files = g.emu.backups_in(&folder);
    assert_eq!(files.len(), 1, "{files:#?}");
    let id = files[0]["id"].as_str().unwrap();

    let r = run(pgdrive().arg("list"));
    assert_eq!(r.status, 0, "{r:?}");
    assert!(r.stdout.contains(id), "{r:?}");
    let r = run(pgdrive().args(["verify", "latest"]));
    assert_eq!(r.status, 0, "{r:?}");
    // `check` lists too, and says what a Content manager cannot do (delete permanently)
    let r = run(pgdrive().arg("check"));
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with("ok   drive daily") && l.contains("its files can be listed")),
        "{r:?}"
    );
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with("FAIL drive daily") && l.contains("cannot delete permanently")),
        "{r:?}"
    );
}

/// Plants `n` earlier daily backups of `db` in the folder, oldest first (October 2026).
fn plant_daily_backups(g: &Google, db: &TestDb, n: u32) {
    for day in 1..=n {
        g.emu.post("files", json!({
            "name": format!("{}-daily-202610{day:02}T030000Z.sql.gz", db.name),
            "parents": [g.folder],
            "content_b64": "H4sIAAAAAAAAAwMAAAAAAAAAAAA=",
            "createdTime": format!("2026-10-{day:02}T03:00:00.000Z"),
            "appProperties": {"pgdrive": "1", "pgdrive_kind": "daily", "pgdrive_database": db.name, "pgdrive_size": "20", "pgdrive_sha256": "ab", "pgdrive_md5": "cd"},
        }));
    }
}

/// Drive deletes the file, then the connection drops before its answer: the retried DELETE is
/// answered 404, and that is the deletion pgdrive asked for, not a failed prune.
#[test]
fn a_retried_delete_answered_404_counts_as_deleted() {
    let g = Google::shared_drive();
    let db = TestDb::new("drive_del404");
    seed_shop(&db);
    plant_daily_backups(&g, &db, 15); // with the new one, two over the default keep of 14
    g.emu
        .fault(json!([{"op": "delete", "nth": 1, "action": {"drop": "after"}}]));
    let r = run(g
        .pgdrive(&db)
        .env("PGDRIVE_RETRY_INITIAL_MS", "10")
        .args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 0, "{r:?}");
    let deletes: Vec<Value> = g.emu.requests_of("delete");
    assert!(
        deletes.iter().any(|q| q["status"].is_null()) && deletes.iter().any(|q| q["status"] == 404),
        "the fault did not fire as planned: {deletes:#?}"
    );
    assert_eq!(g.emu.backups_in(&g.folder).len(), 14);
}

/// Drive's `md5Checksum` in capitals (its case is not documented) is the same checksum.
#[test]
fn an_uppercase_md5_from_drive_matches() {
    let g = Google::shared_drive();
    g.emu.post("config", json!({"md5_uppercase": true}));
    let db = TestDb::new("drive_md5case");
    seed_shop(&db);
    let r = run(g.pgdrive(&db).args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 0, "{r:?}");
    let md5 = g.emu.backups_in(&g.folder)[0]["md5Checksum"].clone();
    assert!(
        md5.as_str()
            .unwrap()
            .chars()
            .any(|c| c.is_ascii_uppercase()),
        "{md5}"
    );
    let r = run(g.pgdrive(&db).args(["verify", "latest"]));
    assert_eq!(r.status, 0, "{r:?}");
}

/// Google refuses a JWT issued in its future; a host clock a few seconds ahead must not cost the
/// backup its token (pgdrive back-dates `iat`, and `exp` stays within the hour after it).
#[test]
fn a_host_clock_a_few_seconds_ahead_of_google_still_gets_a_token() {
    let g = Google::shared_drive();
    g.emu.post(
        "config",
        json!({"clock_offset_seconds": -5, "jwt_iat_leeway_seconds": 0}),
    );
    let db = TestDb::new("drive_skew");
    seed_shop(&db);
    let r = run(g.pgdrive(&db).args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 0, "{r:?}");
    let tokens: Vec<Value> = g.emu.requests_of("token");
    assert!(
        !tokens.is_empty() && tokens.iter().all(|q| q["status"] == 200),
        "{tokens:#?}"
    );
}

/// Drive flagged a backup as malware or spam: the download is asked for again acknowledging the
/// abuse (with a warning), as only an owner or Manager may; anyone else is told why it failed.
#[test]
fn a_backup_flagged_as_abusive_is_still_verified_by_a_manager() {
    let g = Google::shared_drive();
    let db = TestDb::new("drive_abuse");
    seed_shop(&db);
    let r = run(g.pgdrive(&db).args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 0, "{r:?}");
    let id = g.emu.backups_in(&g.folder)[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    g.emu.post(&format!("files/{id}/abusive"), json!({}));
    let r = run(g.pgdrive(&db).args(["verify", "latest"]));
    assert_eq!(r.status, 0, "{r:?}");
    assert!(r.stderr.contains("malware or spam"), "{r:?}");
    let media: Vec<Value> = g.emu.requests_of("get_media");
    assert!(
        media.iter().any(|q| q["status"] == 403)
            && media
                .iter()
                .any(|q| q["query"]["acknowledgeAbuse"] == "true" && q["status"] == 206),
        "{media:#?}"
    );

    // a Content manager may not acknowledge the abuse: one line and the fix, no retry loop
    g.emu.post(
        &format!("shared_drives/{}/members", g.shared_drive),
        json!({g.sa_email.clone(): "fileOrganizer"}),
    );
    let r = run(g.pgdrive(&db).args(["verify", "latest"]));
    assert_eq!(r.status, 1, "{r:?}");
    assert!(
        r.stderr.contains("cannotDownloadAbusiveFile") && r.stderr.contains("hint:"),
        "{r:?}"
    );
}

/// Google's setup and limit refusals each end the run with their documented exit status and a
/// `hint:` line that names the fix.
#[test]
fn drive_refusals_exit_with_their_status_and_the_fix() {
    let g = Google::shared_drive();
    let db = TestDb::new("drive_refusals");
    seed_shop(&db);
    let r = run(g.pgdrive(&db).args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 0, "{r:?}");
    let cases = [
        (
            "backup",
            "get",
            "accessNotConfigured",
            78,
            "Google Drive API",
        ),
        ("backup", "get", "insufficientPermissions", 78, "auth/drive"),
        (
            "backup",
            "upload_initiate",
            "teamDriveFileLimitExceeded",
            1,
            "400,000",
        ),
        ("verify", "get_media", "downloadQuotaExceeded", 1, "per day"),
    ];
    for (command, op, reason, status, fix) in cases {
        // a verify's first download is the backup's manifest
        let nth = if op == "get_media" { 2 } else { 1 };
        g.emu
            .fault(json!([{"op": op, "nth": nth, "action": {"status": 403, "reason": reason}}]));
        let args: &[&str] = if command == "backup" {
            &["backup", "--kind", "daily"]
        } else {
            &["verify", "latest"]
        };
        let r = run(g.pgdrive(&db).args(args));
        assert_eq!(r.status, status, "{reason}: {r:?}");
        let hint = r.stderr.lines().find(|l| l.contains("hint:"));
        assert!(hint.is_some_and(|h| h.contains(fix)), "{reason}: {r:?}");
        g.emu.post("faults", json!({"rules": []}));
    }
}

/// User credentials made by `gcloud auth application-default login` bill to gcloud's project,
/// where the Drive API is disabled, unless they name a quota project: pgdrive sends their
/// `quota_project_id` as `x-goog-user-project`, and without one says how to set it.
#[test]
fn user_credentials_bill_their_quota_project() {
    let g = Google::shared_drive();
    g.emu.post("authorized_users", json!({"client_id": "gcloud.apps.googleusercontent.com", "client_secret": "cs", "refresh_token": "rt", "email": "carol@gmail.com", "client_project_disabled": true}));
    let folder = g.emu.post(
        "folders",
        json!({"name": "carol's", "owner": "carol@gmail.com"}),
    )["id"]
        .as_str()
        .unwrap()
        .to_string();
    let creds = g.dir.path().join("adc.json");
    let write = |quota_project: Option<&str>| {
        let mut c = json!({"type": "authorized_user", "client_id": "gcloud.apps.googleusercontent.com", "client_secret": "cs", "refresh_token": "rt", "token_uri": g.emu.token_uri()});
        if let Some(p) = quota_project {
            c["quota_project_id"] = p.into();
        }
        std::fs::write(&creds, c.to_string()).unwrap();
    };
    let db = TestDb::new("drive_quota_project");
    seed_shop(&db);
    let mut cmd = pgdrive();
    cmd.env("DATABASE_URL", db.url())
        .env("GOOGLE_APPLICATION_CREDENTIALS", &creds)
        .env("GOOGLE_DRIVE_FOLDER_ID", &folder)
        .env("PGDRIVE_DRIVE_URL", &g.emu.base)
        .args(["backup", "--kind", "daily"]);
    write(None);
    let r = run(&mut cmd);
    assert_eq!(r.status, 78, "{r:?}");
    assert!(
        r.stderr.contains("accessNotConfigured") && r.stderr.contains("set-quota-project"),
        "{r:?}"
    );
    write(Some("my-backups-project"));
    let r = run(&mut cmd);
    assert_eq!(r.status, 0, "{r:?}");
    // the emulator refuses any authenticated call without the header: every one named it
    assert_eq!(g.emu.backups_in(&folder).len(), 1);
}
