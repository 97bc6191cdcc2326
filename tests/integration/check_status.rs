//! `pgdrive check` and `pgdrive status`, against the machine's PostgreSQL and the Google emulator:
//! every check's failure mode produced for real, staleness, the Prometheus textfile (parsed by
//! the reference parser, replaced atomically) and the HTML page (rendered by headless Chromium).

use std::path::Path;
use std::process::Command;

use crate::common::*;
use serde_json::{json, Value};

fn lines_with<'a>(r: &'a Run, prefix: &str) -> Vec<&'a str> {
    r.stdout.lines().filter(|l| l.starts_with(prefix)).collect()
}

fn assert_line(r: &Run, prefix: &str, needle: &str) {
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with(prefix) && l.contains(needle)),
        "no line starting {prefix:?} containing {needle:?}:\n{r:?}"
    );
}

/// Files with the probe marker anywhere in the emulator.
fn probes(g: &Google) -> Vec<Value> {
    g.emu
        .files()
        .into_iter()
        .filter(|f| f["appProperties"]["pgdrive_probe"] == "1")
        .collect()
}

#[test]
fn check_passes_on_a_good_setup_and_leaves_nothing_behind() {
    let g = Google::shared_drive();
    let hourly = g.new_folder("hourly");
    let db = TestDb::new("check_ok");
    seed_shop(&db);
    let r = run(g
        .pgdrive(&db)
        .env("HOURLY_DRIVE_FOLDER_ID", &hourly)
        .env("PGDRIVE_CRITICAL_TABLES", "orders, public.customers")
        .env("PGDRIVE_ENCRYPT_RECIPIENTS", pgdrive::encrypt::keygen().1)
        .arg("check"));
    assert_eq!(r.status, 0, "{r:?}");
    assert!(
        lines_with(&r, "FAIL").is_empty() && lines_with(&r, "warn").is_empty(),
        "{r:?}"
    );
    for needle in [
        "config daily",
        "config hourly",
        "encrypt daily",
        "database:",
        "pg_dump:",
        "catalog:",
        "connection:",
        "lock daily",
        "lock hourly",
        "critical tables: all 2",
        "google credentials",
        "drive quota",
    ] {
        assert_line(&r, "ok", needle);
    }
    assert_line(&r, "ok   drive daily", "its files can be listed");
    assert_line(&r, "ok   drive daily", "can write and prune");
    assert_line(&r, "ok   drive hourly", "can write and prune");
    // the probes were uploaded through the resumable protocol and deleted permanently
    let reqs = g.emu.requests();
    assert_eq!(
        reqs.iter().filter(|q| q["op"] == "upload_initiate").count(),
        2
    );
    assert_eq!(
        reqs.iter()
            .filter(|q| q["op"] == "delete" && q["status"] == 204)
            .count(),
        2,
        "{reqs:#?}"
    );
    assert!(g.emu.files_in(&g.folder).is_empty() && g.emu.files_in(&hourly).is_empty());
    // nothing was created in the database, and the locks are free again
    assert_eq!(
        db.query_i64("SELECT count(*) FROM pg_class WHERE relname = 'backups'"),
        0
    );
    assert_eq!(
        db.query_i64("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"),
        0
    );
}

#[test]
fn an_older_pg_dump_fails_but_every_other_check_still_runs() {
    let dir = TempDir::new("old_pg_dump");
    script(dir.path(), "pg_dump", "echo 'pg_dump (PostgreSQL) 11.22'");
    let db = TestDb::new("check_old_dump");
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap()
    );
    let check = |c: &mut Command| {
        run(c
            .env("DATABASE_URL", db.url())
            .env("PGDRIVE_LOCAL_DIR", dir.path().join("bk"))
            .env("PATH", &path)
            .arg("check"))
    };
    // first on PATH but too old: the backup falls back to /usr/lib/postgresql/15/bin, so a warning
    let r = check(&mut pgdrive());
    assert_eq!(r.status, 0, "{r:?}");
    assert_line(&r, "warn pg_dump", "version 11.22, older than the server");
    assert_line(&r, "ok   pg_dump", "/usr/lib/postgresql/15/bin/pg_dump");
    // chosen explicitly: the backup would fail, so the check fails
    let r = check(pgdrive().env("PGDRIVE_PG_DUMP", dir.path().join("pg_dump")));
    assert_eq!(r.status, 1, "{r:?}");
    assert_line(
        &r,
        "FAIL pg_dump",
        "version 11.22, older than the server (major 15)",
    );
    assert!(
        r.stdout.contains("hint: install postgresql-client-15"),
        "{r:?}"
    );
    // a failure does not stop the rest
    assert_line(&r, "ok   database", "PostgreSQL 15");
    assert_line(&r, "ok   lock daily", "taken and released");
    assert_line(&r, "ok   local daily", "can be written");
    assert!(r.stdout.trim_end().ends_with("1 failed"), "{r:?}");
}

#[test]
fn missing_critical_tables_are_all_named() {
    let db = TestDb::new("check_tables");
    seed_shop(&db);
    let dir = TempDir::new("check_tables");
    let r = run(pgdrive()
        .env("DATABASE_URL", db.url())
        .env("PGDRIVE_LOCAL_DIR", dir.path())
        .env("PGDRIVE_CRITICAL_TABLES", "orders,invoices,\"Payments\"")
        .arg("check"));
    assert_eq!(r.status, 1, "{r:?}");
    let fails = lines_with(&r, "FAIL critical tables");
    assert_eq!(fails.len(), 2, "{r:?}");
    assert!(
        fails[0].contains("invoices") && fails[1].contains("\"Payments\""),
        "{fails:?}"
    );
}

#[test]
fn an_application_table_named_backups_fails_the_catalog_check() {
    let db = TestDb::new("check_foreign");
    db.exec("CREATE TABLE backups (id int PRIMARY KEY, customer text, restored boolean)");
    let dir = TempDir::new("check_foreign");
    let r = run(pgdrive()
        .env("DATABASE_URL", db.url())
        .env("PGDRIVE_LOCAL_DIR", dir.path())
        .arg("check"));
    assert_eq!(r.status, 1, "{r:?}");
    assert_line(&r, "FAIL catalog", "not a backup catalog");
    assert!(
        r.stdout
            .contains("hint: keep pgdrive's catalog in another database with PGDRIVE_CATALOG_URL"),
        "{r:?}"
    );
    // and the check changed nothing
    assert_eq!(
        db.query_i64(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'backups'"
        ),
        3
    );
}

#[test]
fn a_folder_id_that_is_a_file_fails() {
    let g = Google::shared_drive();
    let db = TestDb::new("check_file_id");
    let file = g.emu.post(
        "files",
        json!({"name": "notes.txt", "parents": [g.folder], "content_b64": "aGVsbG8="}),
    );
    let r = run(g
        .pgdrive(&db)
        .env("GOOGLE_DRIVE_FOLDER_ID", file["id"].as_str().unwrap())
        .arg("check"));
    assert_eq!(r.status, 1, "{r:?}");
    assert_line(&r, "FAIL drive daily", "is a file");
    assert!(
        r.stdout.contains("hint: copy the ID from the folder's URL"),
        "{r:?}"
    );
    assert_line(&r, "ok   google credentials", "token was obtained");
    assert!(probes(&g).is_empty());
}

#[test]
fn a_service_account_writing_into_a_my_drive_is_told_the_fix() {
    let g = Google::shared_drive();
    let db = TestDb::new("check_my_drive");
    let folder = g.emu.post("folders", json!({"name": "alice's backups", "owner": "alice@example.com", "permissions": {g.sa_email.clone(): "writer"}}));
    let r = run(g
        .pgdrive(&db)
        .env("GOOGLE_DRIVE_FOLDER_ID", folder["id"].as_str().unwrap())
        .arg("check"));
    assert_eq!(r.status, 1, "{r:?}");
    assert_line(
        &r,
        "ok   drive daily",
        "in a My Drive exists and is a folder",
    );
    assert_line(
        &r,
        "FAIL drive daily",
        "cannot write outside a shared drive without impersonation",
    );
    let hint = r
        .stdout
        .lines()
        .find(|l| l.contains("hint: a service account has no Drive storage"))
        .unwrap_or_else(|| panic!("{r:?}"));
    assert!(
        hint.contains("GOOGLE_IMPERSONATE_USER") && hint.contains("Manager"),
        "{hint}"
    );
    assert!(probes(&g).is_empty());
}

#[test]
fn a_folder_where_delete_is_forbidden_fails_the_prune_check() {
    let g = Google::shared_drive();
    let db = TestDb::new("check_no_delete");
    // Contributor ("writer") in the shared drive: may upload, may not delete
    g.emu.post(
        &format!("shared_drives/{}/members", g.shared_drive),
        json!({g.sa_email.clone(): "writer"}),
    );
    let r = run(g.pgdrive(&db).arg("check"));
    assert_eq!(r.status, 1, "{r:?}");
    assert_line(&r, "ok   drive daily", "files can be added");
    assert_line(
        &r,
        "FAIL drive daily",
        "cannot delete permanently in this shared drive",
    );
    assert!(r.stdout.contains("make the account a Manager"), "{r:?}");
    assert!(
        probes(&g).is_empty(),
        "no probe is uploaded when Drive already says it could not be deleted"
    );

    // When Drive's capabilities say yes but the delete is refused anyway, the probe proves it.
    g.emu.post(
        &format!("shared_drives/{}/members", g.shared_drive),
        json!({g.sa_email.clone(): "organizer"}),
    );
    g.emu.fault(json!([{"op": "delete", "action": {"status": 403, "reason": "insufficientFilePermissions", "message": "The user does not have sufficient permissions for this file."}}]));
    let r = run(g.pgdrive(&db).arg("check"));
    assert_eq!(r.status, 1, "{r:?}");
    let left = probes(&g);
    assert_eq!(left.len(), 1, "{left:#?}");
    assert_line(
        &r,
        "FAIL drive daily prune",
        left[0]["id"].as_str().unwrap(),
    );
    assert!(
        left[0]["appProperties"].get("pgdrive").is_none(),
        "a probe never looks like a backup"
    );
}

#[test]
fn a_bad_key_fails_the_credentials_check() {
    let g = Google::shared_drive();
    let db = TestDb::new("check_bad_key");
    // a well-formed key that Google does not know (e.g. deleted in the console)
    let other = TempDir::new("other_key");
    let (private, _) = rsa_keypair(other.path());
    let mut key: Value =
        serde_json::from_str(&std::fs::read_to_string(&g.key_file).unwrap()).unwrap();
    key["private_key"] = private.into();
    let key_file = other.path().join("key.json");
    std::fs::write(&key_file, key.to_string()).unwrap();
    let hourly = g.new_folder("hourly");
    let r = run(g
        .pgdrive(&db)
        .env("GOOGLE_SERVICE_ACCOUNT_JSON", &key_file)
        .env("HOURLY_DRIVE_FOLDER_ID", &hourly)
        .env("PGDRIVE_CRITICAL_TABLES", "pg_catalog.pg_class")
        .arg("check"));
    assert_eq!(r.status, 1, "{r:?}");
    assert_line(&r, "FAIL google credentials", "refused the credentials");
    assert_eq!(
        lines_with(&r, "FAIL").len(),
        1,
        "said once for both kinds: {r:?}"
    );
    assert!(!r.stdout.contains("PRIVATE KEY") && !r.stderr.contains("PRIVATE KEY"));
    // a key that is not even a key is a configuration failure, on the config line
    std::fs::write(
        &key_file,
        "{\"type\": \"service_account\", \"private_key\": \"garbage\", \"client_email\": \"x@y\"}",
    )
    .unwrap();
    let r = run(g
        .pgdrive(&db)
        .env("GOOGLE_SERVICE_ACCOUNT_JSON", &key_file)
        .arg("check"));
    assert_eq!(r.status, 1, "{r:?}");
    assert_line(&r, "FAIL config daily", "not a usable RSA key");
    assert_line(&r, "ok   database", "PostgreSQL 15");
}

#[test]
fn the_quota_check_estimates_the_next_backup_from_the_last() {
    let g = Google::shared_drive();
    let db = TestDb::new("check_quota");
    // alice's My Drive, written through domain-wide delegation
    let folder = g.emu.post(
        "folders",
        json!({"name": "backups", "owner": "alice@example.com"}),
    );
    g.emu
        .post("config", json!({"about_limit_bytes": "5000000"}));
    let r = run(pgdrive().env("DATABASE_URL", db.url()).arg("migrate"));
    assert_eq!(r.status, 0, "{r:?}");
    db.exec("INSERT INTO backups (created_at, status, type, size_bytes, database_name, filename) VALUES (now() - interval '1 day', 'SUCCESS', 'daily', 8000000, current_database(), 'x.sql.gz')");
    let r = run(g
        .pgdrive(&db)
        .env("GOOGLE_DRIVE_FOLDER_ID", folder["id"].as_str().unwrap())
        .env("GOOGLE_IMPERSONATE_USER", "alice@example.com")
        .arg("check"));
    assert_eq!(r.status, 1, "{r:?}");
    assert_line(&r, "ok   drive daily", "can write and prune");
    assert_line(&r, "FAIL drive quota", "the next backup needs about 8.0 MB");
    assert_line(&r, "ok   catalog", "migrated");
}

// ------------------------------------------------------------------ status

/// Inserts a catalog row `hours_ago` hours old.
fn row(db: &TestDb, kind: &str, status: &str, hours_ago: f64, size: i64) {
    db.exec(&format!(
        "INSERT INTO backups (created_at, finished_at, duration_ms, status, type, size_bytes, database_name, filename, drive_file_id, step, error)
         VALUES (now() - interval '{hours_ago} hours', now() - interval '{hours_ago} hours' + {duration} * interval '1 ms', {duration}, '{status}', '{kind}', {size},
                 current_database(), 'f-{hours_ago}.sql.gz', {id}, {step}, {error})",
        // a dump's duration grows with its size, as it would
        duration = 5_000 + size / 100,
        id = if status == "SUCCESS" { format!("'id{hours_ago}'") } else { "NULL".into() },
        step = if status == "SUCCESS" { "NULL" } else { "'dump'" },
        error = if status == "SUCCESS" { "NULL" } else { "'pg_dump exited with status 1: connection refused'" },
    ));
}

fn migrated_db(prefix: &str) -> TestDb {
    let db = TestDb::new(prefix);
    let r = run(pgdrive().env("DATABASE_URL", db.url()).arg("migrate"));
    assert_eq!(r.status, 0, "{r:?}");
    db
}

#[test]
fn status_exits_non_zero_when_the_newest_backup_is_stale_or_the_last_run_failed() {
    let db = migrated_db("status_stale");
    let status = |args: &[&str]| {
        run(pgdrive()
            .env("DATABASE_URL", db.url())
            .arg("status")
            .args(args))
    };
    for h in [80.0, 56.0, 30.0] {
        row(&db, "daily", "SUCCESS", h, 1_000_000 + h as i64 * 1000);
    }
    let r = status(&[]);
    assert_eq!(r.status, 1, "{r:?}");
    assert!(
        r.stdout.contains("daily  STALE")
            && r.stdout
                .contains("PROBLEM daily: newest backup is 1d 6h old (max age 1d 2h)"),
        "{r:?}"
    );
    // a larger max age accepts it; "off" disables the check
    assert_eq!(status(&["--max-age", "daily=2d"]).status, 0);
    assert_eq!(status(&["--max-age", "daily=off"]).status, 0);
    // fresh again
    row(&db, "daily", "SUCCESS", 2.0, 1_200_000);
    let r = status(&[]);
    assert_eq!(r.status, 0, "{r:?}");
    assert!(
        r.stdout.contains("kept          4 (keep 14)") && r.stdout.contains("size trend"),
        "{r:?}"
    );
    // a newer failure makes it non-zero even though the newest success is fresh
    row(&db, "daily", "ERROR", 1.0, 0);
    let r = status(&["--json"]);
    assert_eq!(r.status, 1, "{r:?}");
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    let daily = &v["kinds"][0];
    assert_eq!(daily["kind"], "daily");
    assert_eq!(daily["last_run_success"], false);
    assert_eq!(daily["last_failure"]["step"], "dump");
    assert_eq!(daily["last_success"]["size_bytes"], 1_200_000);
    assert_eq!(daily["stale"], false);
    // an hourly job that was configured but never ran is stale too
    let r = run(pgdrive()
        .env("DATABASE_URL", db.url())
        .env("PGDRIVE_CRITICAL_TABLES", "orders")
        .args(["status", "--kind", "hourly"]));
    assert_eq!(r.status, 1, "{r:?}");
    assert!(r.stdout.contains("no successful backup found"), "{r:?}");
}

/// Parses a Prometheus textfile with the reference parser (prometheus_client, PyPI) and returns
/// `name{labels} value` samples as JSON.
fn parse_prometheus(path: &Path) -> Value {
    let code = "import json, sys\nfrom prometheus_client.parser import text_string_to_metric_families\n\
        out = []\n\
        for fam in text_string_to_metric_families(open(sys.argv[1]).read()):\n\
        \x20   for s in fam.samples:\n\
        \x20       out.append({'family': fam.name, 'type': fam.type, 'name': s.name, 'labels': s.labels, 'value': s.value})\n\
        print(json.dumps(out))";
    let out = Command::new("python3")
        .args(["-c", code])
        .arg(path)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "the reference parser rejected the file (pip install -r tests/emulator/requirements.txt): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn sample(samples: &Value, name: &str, kind: &str) -> Option<f64> {
    samples
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name && s["labels"]["kind"] == kind)
        .and_then(|s| s["value"].as_f64())
}

#[test]
fn the_prometheus_file_parses_and_is_replaced_atomically() {
    let db = TestDb::new("status_prom");
    seed_shop(&db);
    let dir = TempDir::new("prom");
    let prom = dir.path().join("pgdrive.prom");
    let env = |c: &mut Command| {
        c.env("DATABASE_URL", db.url())
            .env("PGDRIVE_LOCAL_DIR", dir.path().join("bk"))
            .env("PGDRIVE_PROMETHEUS_FILE", &prom);
    };
    // `backup` refreshes the file at the end of each run
    let mut c = pgdrive();
    env(&mut c);
    let r = run(c.args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 0, "{r:?}");
    let samples = parse_prometheus(&prom);
    assert_eq!(
        sample(&samples, "pgdrive_last_run_success", "daily"),
        Some(1.0)
    );
    assert_eq!(sample(&samples, "pgdrive_backups_kept", "daily"), Some(1.0));
    assert_eq!(sample(&samples, "pgdrive_backup_stale", "daily"), Some(0.0));
    let size = sample(&samples, "pgdrive_last_backup_size_bytes", "daily").unwrap();
    let stored: i64 = db.query_i64("SELECT size_bytes FROM backups");
    assert_eq!(size as i64, stored);
    let ts = sample(&samples, "pgdrive_last_success_timestamp_seconds", "daily").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - ts).abs() < 120.0, "{ts} vs {now}");
    let fam = samples
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "pgdrive_last_run_success")
        .unwrap();
    assert_eq!(fam["type"], "gauge");
    assert_eq!(fam["labels"]["database"], db.name.as_str());

    // a failed run is reported as such, and the file is still refreshed
    let mut c = pgdrive();
    env(&mut c);
    let r = run(c
        .env("PGDRIVE_PG_DUMP", "/bin/false")
        .args(["backup", "--kind", "daily"]));
    assert_ne!(r.status, 0, "{r:?}");
    assert_eq!(
        sample(
            &parse_prometheus(&prom),
            "pgdrive_last_run_success",
            "daily"
        ),
        Some(0.0)
    );

    // atomic replacement: the file is renamed over (a new inode: the temp file is created while
    // the old one still exists), a reader never sees a partial file, and no temp file stays
    use std::os::unix::fs::MetadataExt;
    let status = || {
        let mut c = pgdrive();
        env(&mut c);
        let r = run(c.args(["status", "--prometheus"]).arg(&prom));
        assert_eq!(r.status, 1, "the last run failed: {r:?}");
    };
    let before = std::fs::metadata(&prom).unwrap().ino();
    status();
    assert_ne!(
        std::fs::metadata(&prom).unwrap().ino(),
        before,
        "replaced by rename, not rewritten in place"
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (prom, stop) = (prom.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let text = std::fs::read_to_string(&prom).expect("the file always exists");
                let last = text.lines().last().unwrap_or("");
                assert!(
                    last.starts_with("pgdrive_status_timestamp_seconds{"),
                    "a partial file was visible: {text:?}"
                );
                reads += 1;
            }
            reads
        })
    };
    for _ in 0..5 {
        status();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp.") || n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    parse_prometheus(&prom);
}

#[test]
fn status_falls_back_to_drive_when_the_catalog_is_unreachable() {
    let g = Google::shared_drive();
    let db = TestDb::new("status_drive");
    seed_shop(&db);
    let r = run(g.pgdrive(&db).args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 0, "{r:?}");
    let size = db.query_i64("SELECT size_bytes FROM backups");
    let missing = admin_url(&unique("no_such_db"));
    let r = run(g
        .pgdrive(&db)
        .env("PGDRIVE_CATALOG_URL", &missing)
        .args(["status", "--json"]));
    assert_eq!(r.status, 0, "{r:?}");
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["catalog_ok"], false);
    assert!(
        v["warnings"][0]
            .as_str()
            .unwrap()
            .contains("the catalog could not be read"),
        "{v:#}"
    );
    let daily = &v["kinds"][0];
    assert_eq!(daily["source"], "drive");
    assert_eq!(daily["kept"], 1);
    assert_eq!(daily["last_success"]["size_bytes"], size);
    assert!(daily["age_seconds"].as_u64().unwrap() < 120);
    assert!(v["quota"]["limit_bytes"].as_u64().is_some(), "{v:#}");
    // the text form says where the facts came from
    let r = run(g
        .pgdrive(&db)
        .env("PGDRIVE_CATALOG_URL", &missing)
        .arg("status"));
    assert!(
        r.stdout.contains("warn the catalog could not be read")
            && r.stdout
                .contains("(from Drive; the catalog is unreachable)"),
        "{r:?}"
    );
}

/// Headless Chromium, if installed; on CI (CI=true) its absence is a failure.
fn chromium() -> Option<String> {
    for c in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {c}")])
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Some(c.into());
        }
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "chromium is required on CI (apt-get install -y chromium)"
    );
    eprintln!("SKIPPING the HTML rendering check: chromium is not installed (apt-get install -y chromium)");
    None
}

#[test]
fn the_html_page_is_self_contained_and_renders_in_chromium() {
    let db = migrated_db("status_html");
    for (i, h) in [200.0, 176.0, 152.0, 128.0, 104.0, 80.0, 56.0, 32.0, 8.0]
        .iter()
        .enumerate()
    {
        row(
            &db,
            "daily",
            if i == 4 { "ERROR" } else { "SUCCESS" },
            *h,
            3_000_000 + (i as i64) * 250_000,
        );
    }
    for h in [9.0, 7.0, 5.0, 3.0, 1.0] {
        row(
            &db,
            "hourly",
            "SUCCESS",
            h,
            400_000 + (10.0 - h) as i64 * 20_000,
        );
    }
    // values are escaped: an error message is data, never markup
    db.exec("UPDATE backups SET error = 'pg_dump: <script>alert(1)</script> & more' WHERE status = 'ERROR'");
    let dir = TempDir::new("html");
    let html = dir.path().join("status.html");
    let r = run(pgdrive()
        .env("DATABASE_URL", db.url())
        .env("PGDRIVE_CRITICAL_TABLES", "orders")
        .args(["status", "--html"])
        .arg(&html));
    assert_eq!(r.status, 0, "{r:?}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.starts_with("<!DOCTYPE html>") && page.contains("<svg") && page.contains("<polyline")
    );
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; more"),
        "{page}"
    );
    for external in ["src=", "href=", "@import", "url(", "<script"] {
        assert!(
            !page.contains(external),
            "the page must be self-contained: found {external}"
        );
    }
    let Some(chromium) = chromium() else { return };
    let png = dir.path().join("status.png");
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ])
        .arg(format!("--screenshot={}", png.display()))
        .arg("--window-size=1200,900")
        .arg(format!("file://{}", html.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&png).expect("chromium wrote the screenshot");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    assert!(
        bytes.len() > 20_000,
        "a blank page compresses to a few KB; this one is {} bytes",
        bytes.len()
    );
    if let Ok(keep) = std::env::var("PGDRIVE_KEEP_SCREENSHOT") {
        std::fs::copy(&png, keep).unwrap();
    }
}

#[test]
fn an_unreachable_database_is_reported_and_the_storage_is_still_checked() {
    let dir = TempDir::new("check_no_db");
    // nothing listens on port 1
    let r = run(pgdrive()
        .env(
            "DATABASE_URL",
            "postgres://backup:s3cret-pw@127.0.0.1:1/shop",
        )
        .env("PGDRIVE_LOCAL_DIR", dir.path())
        .arg("check"));
    assert_eq!(r.status, 1, "{r:?}");
    assert_line(&r, "FAIL database", "cannot connect to the database");
    assert!(
        r.stdout.contains("hint: check that the server is running"),
        "{r:?}"
    );
    assert_line(&r, "ok   local daily", "can be written");
    assert!(
        !r.stdout.contains("s3cret-pw") && !r.stderr.contains("s3cret-pw"),
        "{r:?}"
    );
}

#[test]
fn a_stored_backup_whose_metrics_cannot_be_written_exits_3() {
    let db = TestDb::new("prom_follow_up");
    let dir = TempDir::new("prom_follow_up");
    let emu = Emulator::start();
    let mut cmd = pgdrive();
    with_sendgrid(&emu, &mut cmd);
    let r = run(cmd
        .env("DATABASE_URL", db.url())
        .env("PGDRIVE_LOCAL_DIR", dir.path())
        .env(
            "PGDRIVE_PROMETHEUS_FILE",
            dir.path().join("no/such/dir/pgdrive.prom"),
        )
        .args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 3, "{r:?}");
    assert!(
        r.stderr
            .contains("the backup is stored, but refreshing the Prometheus file failed"),
        "{r:?}"
    );
    assert_eq!(db.catalog()[0].0, "SUCCESS");
    // a follow-up step before the notification: told there, not a surprise after a ✅ email
    let mail = emu.get("mail")["messages"].to_string();
    assert!(
        mail.contains("a follow-up step failed")
            && mail.contains("refreshing the Prometheus file failed"),
        "{mail}"
    );
}

/// The emulator with a SendGrid key, and pgdrive configured to email through it.
fn with_sendgrid(emu: &Emulator, cmd: &mut Command) {
    emu.post("sendgrid_keys", json!({"key": "SG.status-test-key"}));
    cmd.env("SENDGRID_API_KEY", "SG.status-test-key")
        .env("SENDGRID_FROM_EMAIL", "backups@example.com")
        .env("PGDRIVE_NOTIFY_EMAIL", "ops@example.com")
        .env("PGDRIVE_SENDGRID_URL", &emu.base)
        .env("PGDRIVE_NOTIFY_RETRY_DELAYS_MS", "10");
}

#[test]
fn check_validates_notification_channels_and_their_reachability_without_sending() {
    let emu = Emulator::start();
    let db = TestDb::new("check_notify");
    let dir = TempDir::new("check_notify");
    let mut cmd = pgdrive();
    with_sendgrid(&emu, &mut cmd);
    // nothing listens on port 1
    cmd.env(
        "PGDRIVE_PING_URL_DAILY",
        "http://127.0.0.1:1/ping/secret-ping-uuid",
    );
    let r = run(cmd
        .env("DATABASE_URL", db.url())
        .env("PGDRIVE_LOCAL_DIR", dir.path())
        .arg("check"));
    assert_eq!(r.status, 1, "{r:?}");
    assert_line(&r, "ok   notify sendgrid", "configured: ops@example.com");
    let port = emu
        .base
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    assert_line(
        &r,
        "ok   notify sendgrid",
        &format!("127.0.0.1:{port} accepts connections"),
    );
    assert_line(&r, "ok   ping daily", "configured");
    assert_line(
        &r,
        "FAIL notify ping daily",
        "127.0.0.1:1 cannot be reached",
    );
    assert!(
        !r.stdout.contains("secret-ping-uuid") && !r.stdout.contains("SG.status-test-key"),
        "{r:?}"
    );
    assert!(
        emu.get("mail")["messages"].as_array().unwrap().is_empty(),
        "check sends nothing"
    );

    // a half-configured channel is a FAIL line, not an abort
    let r = run(pgdrive()
        .env("DATABASE_URL", db.url())
        .env("PGDRIVE_LOCAL_DIR", dir.path())
        .env("SENDGRID_API_KEY", "SG.x")
        .arg("check"));
    assert_eq!(r.status, 1, "{r:?}");
    assert_line(&r, "FAIL notify", "");
    assert_line(&r, "ok   database", "PostgreSQL 15");
}

#[test]
fn a_stale_status_alerts_through_the_notification_channels() {
    let emu = Emulator::start();
    let db = migrated_db("status_alert");
    row(&db, "daily", "SUCCESS", 30.0, 1_000_000);
    let mut cmd = pgdrive();
    with_sendgrid(&emu, &mut cmd);
    let r = run(cmd.env("DATABASE_URL", db.url()).arg("status"));
    assert_eq!(r.status, 1, "{r:?}");
    let mail = emu.get("mail")["messages"].as_array().unwrap().clone();
    assert_eq!(mail.len(), 1, "{mail:#?}");
    let text = mail[0].to_string();
    assert!(
        text.contains("daily backup of")
            && text.contains("newest backup is 1d 6h old (max age 1d 2h)"),
        "{text}"
    );
    // healthy: no alert
    row(&db, "daily", "SUCCESS", 1.0, 1_000_000);
    let mut cmd = pgdrive();
    with_sendgrid(&emu, &mut cmd);
    assert_eq!(
        run(cmd.env("DATABASE_URL", db.url()).arg("status")).status,
        0
    );
    assert_eq!(emu.get("mail")["messages"].as_array().unwrap().len(), 1);
}
