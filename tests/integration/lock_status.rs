//! Issue 9, points 6–8, attacked through the real binary: one database's job never silences
//! another's in a shared catalog (and the same job twice is skipped with a line naming the
//! holder, whatever the URL's spelling); statuses, catalog rows and notifications as documented;
//! a least-privilege role backs up with exactly the README's grants.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// A pg_dump that waits `seconds` before dumping, so that its run holds the lock meanwhile.
fn slow_pg_dump(bin: &TempDir, seconds: u32) -> std::path::PathBuf {
    script(
        bin.path(),
        "pg_dump",
        &format!(
            "if [ \"$1\" = --version ]; then exec {dump} --version; fi\nsleep {seconds}\nexec {dump} \"$@\"",
            dump = real_pg_dump()
        ),
    )
}

/// A daily backup of `db` into `dir`, its lock and catalog in `catalog`.
fn backup(db_url: &str, catalog: &TestDb, dir: &TempDir) -> Command {
    let mut cmd = pgdrive();
    cmd.env("DATABASE_URL", db_url)
        .env("PGDRIVE_CATALOG_URL", catalog.url())
        .env("PGDRIVE_LOCAL_DIR", dir.path())
        .args(["backup", "--kind", "daily"]);
    cmd
}

/// The server pids holding a pgdrive advisory lock in `catalog`, with their application names.
fn lock_holders(catalog: &TestDb) -> Vec<(i32, String)> {
    catalog
        .client()
        .query(
            "SELECT l.pid, a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
              WHERE l.locktype = 'advisory' AND l.granted AND a.application_name LIKE 'pgdrive %'
                AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Starts a run in the background and waits until it holds its lock.
fn start_holding(cmd: &mut Command, catalog: &TestDb) -> Child {
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while lock_holders(catalog).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the first run never took its lock"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// The database's catalog rows: (status, database_name).
fn rows(catalog: &TestDb) -> Vec<(String, String)> {
    catalog
        .client()
        .query("SELECT status, database_name FROM backups ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[test]
fn two_databases_sharing_a_catalog_back_up_concurrently_and_the_same_job_twice_is_skipped_naming_its_holder(
) {
    let catalog = TestDb::new("lock_catalog");
    let shop = TestDb::new("lock_shop");
    let crm = TestDb::new("lock_crm");
    shop.exec("CREATE TABLE t AS SELECT generate_series(1, 100) AS id");
    crm.exec("CREATE TABLE t AS SELECT generate_series(1, 100) AS id");
    let (shop_dir, crm_dir, bin) = (
        TempDir::new("lock_shop"),
        TempDir::new("lock_crm"),
        TempDir::new("lock_bin"),
    );

    // shop's daily run holds its lock in the shared catalog while pg_dump sleeps
    let mut first = start_holding(
        backup(&shop.url(), &catalog, &shop_dir).env("PGDRIVE_PG_DUMP", slow_pg_dump(&bin, 6)),
        &catalog,
    );
    let first_pid = first.id();

    // crm's daily run is another job: it proceeds, stores and records its backup
    let r = run(&mut backup(&crm.url(), &catalog, &crm_dir));
    assert_eq!(
        r.status, 0,
        "another database's job must not be skipped: {r:?}"
    );
    assert!(rows(&catalog).contains(&("SUCCESS".into(), crm.name.clone())));

    // shop's daily job again, its address spelled another way (key=value, the host's name
    // instead of the address, a zero-padded port): the same job, so skipped, naming the holder
    let respelled = format!(
        "host=localhost port=05432 user=postgres dbname={} connect_timeout=10",
        shop.name
    );
    let r = run(&mut backup(&respelled, &catalog, &shop_dir));
    assert_eq!(r.status, 75, "{r:?}");
    let line = r
        .stderr
        .lines()
        .find(|l| l.contains("skipped"))
        .unwrap_or_else(|| panic!("no skip line: {r:?}"));
    assert!(
        line.contains(&format!("pid {first_pid}")) && line.contains("pgdrive daily on "),
        "the skip line must name the holder (host and pid): {line}"
    );
    let (server_pid, _) = lock_holders(&catalog)[0].clone();
    assert!(line.contains(&format!("server pid {server_pid}")), "{line}");
    assert!(line.contains(&shop.name), "{line}");

    assert!(first.wait().unwrap().success());
    let mut got = rows(&catalog);
    got.sort();
    assert_eq!(
        got,
        vec![
            ("SUCCESS".to_string(), crm.name.clone()),
            ("SUCCESS".to_string(), shop.name.clone())
        ],
        "one row per run that happened; none for the skipped run"
    );

    // a job that keeps being skipped shows as stale: its newest backup only gets older
    catalog.exec(&format!(
        "UPDATE backups SET created_at = now() - interval '30 hours' WHERE database_name = '{}'",
        shop.name
    ));
    let r = run(pgdrive()
        .env("DATABASE_URL", shop.url())
        .env("PGDRIVE_CATALOG_URL", catalog.url())
        .args(["status", "--kind", "daily", "--max-age", "daily=26h"]));
    assert_eq!(r.status, 1, "{r:?}");
    assert!(r.stdout.contains("daily: newest backup is"), "{r:?}");
}

#[test]
fn the_lock_in_the_backed_up_database_keeps_the_node_key_even_when_the_catalog_url_is_spelled_differently(
) {
    let db = TestDb::new("lock_node");
    db.exec("CREATE TABLE t AS SELECT 1 AS id");
    let (dir, bin) = (TempDir::new("lock_node"), TempDir::new("lock_node_bin"));
    let respelled = format!("postgresql://postgres@localhost:5432/{}", db.name);
    let mut first = start_holding(
        pgdrive()
            .env("DATABASE_URL", db.url())
            .env("PGDRIVE_CATALOG_URL", &respelled)
            .env("PGDRIVE_LOCAL_DIR", dir.path())
            .env("PGDRIVE_PG_DUMP", slow_pg_dump(&bin, 2))
            .args(["backup", "--kind", "daily"]),
        &db,
    );
    // the Node.js implementation's key for daily-backup-job: -1450133114 = 0xffffffff_a99086... as
    // classid (high 32 bits) and objid (low 32 bits)
    let key: i64 = -1_450_133_114;
    let (high, low) = (
        ((key as u64) >> 32) as i64,
        ((key as u64) & 0xffff_ffff) as i64,
    );
    let held = db.query_i64(&format!(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted
            AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
            AND classid::bigint = {high} AND objid::bigint = {low} AND objsubid = 1"
    ));
    assert_eq!(held, 1);
    assert!(first.wait().unwrap().success());
}

#[test]
fn postgres_errors_are_rendered_in_the_servers_own_words_on_one_line() {
    let db = TestDb::new("pg_message");
    let err = db
        .client()
        .batch_execute(
            "DO $$ BEGIN RAISE EXCEPTION 'no access to t' USING DETAIL = E'two\\nlines', HINT = 'grant it'; END $$",
        )
        .unwrap_err();
    let err = anyhow::Error::new(err).context("reading t");
    assert_eq!(
        pgdrive::error::render(&err),
        "reading t: ERROR: no access to t (SQLSTATE P0001; detail: two lines; server hint: grant it)"
    );
}

/// The README's "Database permissions" SQL block, for database `db` and role `role`.
fn documented_grants(db: &str, role: &str) -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("```sql\n-- pgdrive backup role\n")
        .expect("README has the backup role's SQL");
    let block = &readme[start + "```sql\n".len()..];
    let block = &block[..block.find("```").unwrap()];
    block
        .replace("pgdrive_backup", role)
        .replace("ON DATABASE shop ", &format!("ON DATABASE \"{db}\" "))
}

#[test]
fn a_role_with_exactly_the_documented_grants_backs_up_and_lists_and_a_missing_grant_is_named() {
    let db = TestDb::new("least_priv");
    seed_shop(&db);
    let role = unique("pgdrive_backup");
    let dir = TempDir::new("least_priv");
    struct DropRole(String, String);
    impl Drop for DropRole {
        fn drop(&mut self) {
            let _ = admin_client_for(&self.1)
                .batch_execute(&format!("DROP OWNED BY \"{0}\"; ", self.0));
            let _ = admin().batch_execute(&format!("DROP ROLE IF EXISTS \"{}\"", self.0));
        }
    }
    let _cleanup = DropRole(role.clone(), db.name.clone());

    // the owner migrates; then exactly the documented grants, nothing else
    let owner = run(pgdrive().env("DATABASE_URL", db.url()).arg("migrate"));
    assert_eq!(owner.status, 0, "{owner:?}");
    psql(&db.url(), &documented_grants(&db.name, &role));
    let restricted = format!("postgres://{role}@127.0.0.1:5432/{}", db.name);
    let superuser: bool = db
        .client()
        .query_one(
            "SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = $1",
            &[&role],
        )
        .unwrap()
        .get(0);
    assert!(!superuser);

    let backup = |url: &str| {
        run(pgdrive()
            .env("DATABASE_URL", url)
            .env("PGDRIVE_LOCAL_DIR", dir.path())
            .args(["backup", "--kind", "daily"]))
    };
    let r = backup(&restricted);
    assert_eq!(r.status, 0, "{r:?}");
    let catalog = db.catalog();
    assert_eq!(catalog.len(), 1, "{catalog:?}");
    assert_eq!(catalog[0].0, "SUCCESS");
    let dump = std::fs::read(dir.path().join(catalog[0].2.as_ref().unwrap())).unwrap();
    assert!(gunzip(&dump).contains("COPY public.orders"));

    let r = run(pgdrive()
        .env("DATABASE_URL", &restricted)
        .env("PGDRIVE_LOCAL_DIR", dir.path())
        .args(["list", "--kind", "daily"]));
    assert_eq!(r.status, 0, "{r:?}");
    assert!(r.stdout.contains(catalog[0].2.as_ref().unwrap()), "{r:?}");

    // one documented grant missing: the server's own message, never "db error"
    db.exec(&format!(
        "REVOKE SELECT ON pgdrive_schema_migrations FROM \"{role}\""
    ));
    let r = backup(&restricted);
    assert_eq!(r.status, 1, "{r:?}");
    assert!(
        r.stderr
            .contains("permission denied for table pgdrive_schema_migrations"),
        "{r:?}"
    );
    assert!(!r.stderr.contains("db error"), "{r:?}");
    assert!(
        r.stderr.contains("Database permissions"),
        "the hint points at the README: {r:?}"
    );

    // the README's PostgreSQL 14+ alternative: pg_read_all_data instead of the per-schema grants
    let reader = unique("pgdrive_reader");
    let _cleanup_reader = DropRole(reader.clone(), db.name.clone());
    let grants = documented_grants(&db.name, &reader);
    let per_schema: String = grants
        .lines()
        .filter(|l| l.contains("IN SCHEMA") || l.contains("USAGE ON SCHEMA"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(per_schema.lines().count(), 5, "{grants}");
    let grants = grants.replace(
        &per_schema,
        &format!("GRANT pg_read_all_data TO \"{reader}\";\n"),
    );
    psql(&db.url(), &grants);
    let r = run(pgdrive()
        .env(
            "DATABASE_URL",
            format!("postgres://{reader}@127.0.0.1:5432/{}", db.name),
        )
        .env(
            "PGDRIVE_LOCAL_DIR",
            TempDir::new("least_priv_reader").path(),
        )
        .args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 0, "{r:?}");
}

fn admin_client_for(db: &str) -> postgres::Client {
    postgres::Client::connect(&admin_url(db), postgres::NoTls).unwrap()
}

#[test]
fn verify_all_that_verified_nothing_fails() {
    let db = TestDb::new("verify_none");
    db.exec("CREATE TABLE t AS SELECT generate_series(1, 10) AS id");
    let dir = TempDir::new("verify_none");
    let verify_all = || {
        run(pgdrive()
            .env("DATABASE_URL", db.url())
            .args(["verify", "--all", "--from"])
            .arg(dir.path()))
    };
    // an empty directory: nothing proven
    let r = verify_all();
    assert_eq!(r.status, 1, "{r:?}");
    assert!(
        r.stderr.contains("found no complete backup") && r.stderr.contains("\nhint: "),
        "{r:?}"
    );

    let r = run(pgdrive()
        .env("DATABASE_URL", db.url())
        .env("PGDRIVE_LOCAL_DIR", dir.path())
        .args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(verify_all().status, 0, "an intact backup verifies");

    // every sidecar corrupt: the backups are no longer complete, and nothing is verified
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().ends_with(".pgdrive.json") {
            std::fs::write(&path, b"{\"truncated\": ").unwrap();
        }
    }
    let r = verify_all();
    assert_eq!(r.status, 1, "{r:?}");
    assert!(r.stderr.contains("found no complete backup"), "{r:?}");
}

/// Every configuration error (78) says what to change: a table of misconfigurations, each run
/// through the real binary, each must exit 78 with a `hint:` line.
#[test]
fn every_configuration_error_carries_a_hint() {
    let db = TestDb::new("hints");
    db.exec("CREATE TABLE t (id int)");
    let dir = TempDir::new("hints");
    let not_a_dir = dir.path().join("a-file");
    std::fs::write(&not_a_dir, b"x").unwrap();
    let url = db.url();
    let kv = |extra: &str| format!("host=127.0.0.1 user=postgres dbname={} {extra}", db.name);
    let not_a_dir_child = not_a_dir.join("sub").display().to_string();
    // (what, environment, arguments)
    let cases: Vec<(&str, Vec<(&str, String)>, Vec<&str>)> = vec![
        (
            "no DATABASE_URL",
            vec![("DATABASE_URL", String::new())],
            vec![],
        ),
        (
            "connect_timeout=abc",
            vec![("DATABASE_URL", format!("{url}?connect_timeout=abc"))],
            vec![],
        ),
        ("port=abc", vec![("DATABASE_URL", kv("port=abc"))], vec![]),
        (
            "unknown sslmode",
            vec![("DATABASE_URL", kv("sslmode=sometimes"))],
            vec![],
        ),
        (
            "gzip level",
            vec![("PGDRIVE_COMPRESS", "gzip:12".into())],
            vec![],
        ),
        ("codec", vec![("PGDRIVE_COMPRESS", "brotli".into())], vec![]),
        ("threads", vec![("PGDRIVE_THREADS", "0".into())], vec![]),
        (
            "threads not a number",
            vec![("PGDRIVE_THREADS", "many".into())],
            vec![],
        ),
        (
            "chunk size",
            vec![("PGDRIVE_CHUNK_SIZE", "lots".into())],
            vec![],
        ),
        (
            "chunk alignment",
            vec![("PGDRIVE_CHUNK_SIZE", "1000".into())],
            vec![],
        ),
        ("format", vec![("PGDRIVE_FORMAT", "tar".into())], vec![]),
        ("keep", vec![("PGDRIVE_KEEP_DAILY", "lots".into())], vec![]),
        (
            "pg_dump missing",
            vec![("PGDRIVE_PG_DUMP", "/nonexistent/pg_dump".into())],
            vec![],
        ),
        (
            "pg_dump not a pg_dump",
            vec![("PGDRIVE_PG_DUMP", "/bin/false".into())],
            vec![],
        ),
        (
            "key not JSON",
            vec![
                ("GOOGLE_SERVICE_ACCOUNT_JSON", "{not json".into()),
                ("GOOGLE_DRIVE_FOLDER_ID", "f".into()),
            ],
            vec![],
        ),
        (
            "key lacks fields",
            vec![
                (
                    "GOOGLE_SERVICE_ACCOUNT_JSON",
                    "{\"type\": \"service_account\"}".into(),
                ),
                ("GOOGLE_DRIVE_FOLDER_ID", "f".into()),
            ],
            vec![],
        ),
        (
            "key file unreadable",
            vec![
                (
                    "GOOGLE_APPLICATION_CREDENTIALS",
                    "/nonexistent/key.json".into(),
                ),
                ("GOOGLE_DRIVE_FOLDER_ID", "f".into()),
            ],
            vec![],
        ),
        (
            "folder without credentials",
            vec![("GOOGLE_DRIVE_FOLDER_ID", "f".into())],
            vec![],
        ),
        (
            "local dir cannot be created",
            vec![("PGDRIVE_LOCAL_DIR", not_a_dir_child.clone())],
            vec![],
        ),
        (
            "missing critical table",
            vec![("PGDRIVE_CRITICAL_TABLES", "no_such_table".into())],
            vec!["--kind", "hourly"],
        ),
        (
            "notify timeout",
            vec![
                ("PGDRIVE_WEBHOOK_URL", "http://127.0.0.1:9/h".into()),
                ("PGDRIVE_NOTIFY_TIMEOUT_MS", "soon".into()),
            ],
            vec![],
        ),
        (
            "smtp port",
            vec![
                ("PGDRIVE_SMTP_HOST", "127.0.0.1".into()),
                ("PGDRIVE_SMTP_TLS", "none".into()),
                ("PGDRIVE_SMTP_FROM", "a@example.com".into()),
                ("PGDRIVE_NOTIFY_EMAIL", "b@example.com".into()),
                ("PGDRIVE_SMTP_PORT", "99999".into()),
            ],
            vec![],
        ),
        (
            "smtp user without password",
            vec![
                ("PGDRIVE_SMTP_HOST", "127.0.0.1".into()),
                ("PGDRIVE_SMTP_TLS", "none".into()),
                ("PGDRIVE_SMTP_FROM", "a@example.com".into()),
                ("PGDRIVE_NOTIFY_EMAIL", "b@example.com".into()),
                ("PGDRIVE_SMTP_USER", "u".into()),
            ],
            vec![],
        ),
        (
            "recipient",
            vec![
                ("SENDGRID_API_KEY", "SG.x".into()),
                ("SENDGRID_FROM_EMAIL", "a@example.com".into()),
                ("PGDRIVE_NOTIFY_EMAIL", "not an address".into()),
            ],
            vec![],
        ),
        (
            "env-file missing",
            vec![],
            vec!["--env-file", "/nonexistent/pgdrive.env"],
        ),
    ];
    for (what, env, extra) in cases {
        let mut cmd = pgdrive();
        cmd.env("DATABASE_URL", &url)
            .env("PGDRIVE_LOCAL_DIR", dir.path());
        for (k, v) in &env {
            if v.is_empty() {
                cmd.env_remove(k);
            } else {
                cmd.env(k, v);
            }
        }
        // --env-file is a global option: it goes before the subcommand
        if extra.first() == Some(&"--env-file") {
            cmd.args(&extra);
            cmd.args(["backup", "--kind", "daily"]);
        } else {
            cmd.args(["backup"]);
            if !extra.contains(&"--kind") {
                cmd.args(["--kind", "daily"]);
            }
            cmd.args(&extra);
        }
        let r = run(&mut cmd);
        assert_eq!(r.status, 78, "{what}: {r:?}");
        let hint = r.stderr.lines().find(|l| l.starts_with("hint: "));
        assert!(
            hint.is_some_and(|h| h.len() > "hint: ".len() + 10),
            "{what}: a 78 without a hint: {r:?}"
        );
    }

    // the read commands too
    let r = run(pgdrive().env("PGDRIVE_LOCAL_DIR", dir.path()).args([
        "restore",
        "latest",
        "--target-url",
        &format!("{url}?connect_timeout=abc"),
        "--yes",
    ]));
    assert!(r.status == 78 && r.stderr.contains("\nhint: "), "{r:?}");
    let r = run(pgdrive()
        .env("DATABASE_URL", &url)
        .args(["status", "--max-age", "daily=soon"]));
    assert!(r.status == 78 && r.stderr.contains("\nhint: "), "{r:?}");
    let r = run(pgdrive()
        .env("DATABASE_URL", &url)
        .args(["verify", "--all", "--from"])
        .arg(&not_a_dir_child));
    assert_ne!(r.status, 0, "{r:?}");
}

/// Point 6's "make a 75 visible": a run that hangs holding its lock makes every later run of the
/// job exit 75 (counted as success by systemd), storing and recording nothing; `status` must then
/// show the job stale, exit 1 and alert, once its newest backup is older than its max age.
#[test]
fn a_job_that_keeps_being_skipped_goes_stale_in_status_exits_1_and_alerts() {
    let emu = Emulator::start();
    let catalog = TestDb::new("skip_catalog");
    let shop = TestDb::new("skip_shop");
    shop.exec("CREATE TABLE t AS SELECT generate_series(1, 100) AS id");
    let (dir, bin) = (TempDir::new("skip_shop"), TempDir::new("skip_bin"));
    let r = run(&mut backup(&shop.url(), &catalog, &dir));
    assert_eq!(r.status, 0, "{r:?}");
    catalog.exec("UPDATE backups SET created_at = now() - interval '30 hours'");

    // a run that hangs with the lock; every later run of the job is skipped
    // backup names have a resolution of one second: the next run must not reuse this one's
    std::thread::sleep(Duration::from_millis(1100));
    let mut hung = start_holding(
        backup(&shop.url(), &catalog, &dir)
            .env("PGDRIVE_PG_DUMP", slow_pg_dump(&bin, 60))
            .env("PGDRIVE_STALL_TIMEOUT_MS", "0"),
        &catalog,
    );
    for _ in 0..2 {
        let r = run(&mut backup(&shop.url(), &catalog, &dir));
        assert_eq!(r.status, 75, "{r:?}");
    }
    assert_eq!(
        rows(&catalog),
        vec![("SUCCESS".to_string(), shop.name.clone())],
        "a skipped run records nothing"
    );

    emu.post(
        "sendgrid_keys",
        serde_json::json!({"key": "SG.skip-test-key"}),
    );
    let r = run(pgdrive()
        .env("DATABASE_URL", shop.url())
        .env("PGDRIVE_CATALOG_URL", catalog.url())
        .env("PGDRIVE_LOCAL_DIR", dir.path())
        .env("SENDGRID_API_KEY", "SG.skip-test-key")
        .env("SENDGRID_FROM_EMAIL", "backups@example.com")
        .env("PGDRIVE_NOTIFY_EMAIL", "ops@example.com")
        .env("PGDRIVE_SENDGRID_URL", &emu.base)
        .env("PGDRIVE_NOTIFY_RETRY_DELAYS_MS", "10")
        .args(["status", "--kind", "daily"]));
    let _ = hung.kill();
    let _ = hung.wait();
    assert_eq!(r.status, 1, "{r:?}");
    let stale = "daily: newest backup is 1d 6h old (max age 1d 2h)";
    assert!(r.stdout.contains(stale), "{r:?}");
    let mail = emu.get("mail")["messages"].as_array().unwrap().clone();
    assert_eq!(mail.len(), 1, "{mail:#?}");
    assert!(mail[0].to_string().contains(stale), "{mail:#?}");
}
