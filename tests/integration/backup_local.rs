//! `pgdrive backup` against the real PostgreSQL and pg_dump, storing into a local directory (no
//! Google account involved): content, kinds, the lock, failures and secrets.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::*;

fn local(db: &TestDb, dir: &TempDir) -> std::process::Command {
    let mut cmd = pgdrive();
    cmd.env("DATABASE_URL", db.url())
        .env("PGDRIVE_LOCAL_DIR", dir.path());
    cmd
}

/// Backup files (not sidecars, not partials) in a directory.
fn backups_in(dir: &TempDir) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.path())
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v.retain(|n| n.ends_with(".sql.gz"));
    v
}

fn all_entries(dir: &TempDir) -> Vec<String> {
    std::fs::read_dir(dir.path())
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

const TABLE_CHECKSUMS: &str = "SELECT string_agg(format('%s:%s:%s', c.relname,
        (xpath('/row/n/text()', query_to_xml(format('SELECT count(*) AS n FROM %I.%I', n.nspname, c.relname), false, true, '')))[1]::text,
        (xpath('/row/h/text()', query_to_xml(format('SELECT md5(coalesce(string_agg(t::text, ''|'' ORDER BY t::text), '''')) AS h FROM %I.%I t', n.nspname, c.relname), false, true, '')))[1]::text),
        ',' ORDER BY c.relname)
   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind = 'r' AND n.nspname = 'public' AND c.relname NOT IN ('backups', 'backup_copies', 'pgdrive_schema_migrations')";

#[test]
fn daily_backup_restores_into_an_empty_database_and_matches_the_source() {
    let db = TestDb::new("daily_src");
    seed_shop(&db);
    let dir = TempDir::new("daily");
    let r = run(local(&db, &dir).args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 0, "{r:?}");
    let files = backups_in(&dir);
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(
        files[0].starts_with(&format!("{}-daily-", db.name)) && files[0].ends_with("Z.sql.gz"),
        "{files:?}"
    );
    let bytes = std::fs::read(dir.path().join(&files[0])).unwrap();

    let target = TestDb::new("daily_dst");
    restore_gz(&bytes, &target.url());
    assert_eq!(
        psql(&db.url(), TABLE_CHECKSUMS),
        psql(&target.url(), TABLE_CHECKSUMS)
    );
    assert_eq!(target.query_i64("SELECT count(*) FROM orders"), 5000);
    assert_eq!(
        psql(&target.url(), "SELECT last_value FROM orders_id_seq"),
        psql(&db.url(), "SELECT last_value FROM orders_id_seq")
    );

    // the run is recorded, with checksums that match the file
    let row = db
        .client()
        .query_one("SELECT status, type, size_bytes, sha256, md5, filename, server_version, pg_dump_version FROM backups", &[])
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "SUCCESS");
    assert_eq!(row.get::<_, String>(1), "daily");
    assert_eq!(row.get::<_, i64>(2), bytes.len() as i64);
    use sha2::Digest;
    assert_eq!(
        row.get::<_, String>(3),
        pgdrive::storage::hex(&sha2::Sha256::digest(&bytes))
    );
    assert_eq!(row.get::<_, String>(5), files[0]);
    assert!(row.get::<_, String>(6).starts_with("15"));
    assert!(!row.get::<_, String>(7).is_empty());
    // the sidecar describes the backup like Drive's appProperties would
    let sidecar: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join(format!("{}.pgdrive.json", files[0]))).unwrap(),
    )
    .unwrap();
    assert_eq!(sidecar["properties"]["pgdrive_kind"], "daily");
    assert_eq!(sidecar["properties"]["pgdrive_database"], db.name.as_str());
    assert_eq!(sidecar["sha256"], row.get::<_, String>(3));
    // row counts read off the dump itself
    assert_eq!(sidecar["row_counts"]["public.orders"], 5000);
    assert_eq!(sidecar["row_counts"]["public.customers"], 500);
    assert_eq!(
        psql(
            &db.url(),
            "SELECT row_counts->>'public.audit_log' FROM backups"
        )
        .trim(),
        "2000"
    );
}

#[test]
fn hourly_backup_contains_only_the_critical_tables_including_partitions() {
    let db = TestDb::new("hourly");
    seed_shop(&db);
    db.exec(
        "CREATE SCHEMA sales;
         CREATE TABLE sales.\"Events\" (id int, at date) PARTITION BY RANGE (at);
         CREATE TABLE sales.events_2025 PARTITION OF sales.\"Events\" FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
         CREATE TABLE sales.events_2026 PARTITION OF sales.\"Events\" FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
         INSERT INTO sales.\"Events\" SELECT g, '2025-06-01'::date + g FROM generate_series(1, 400) g;",
    );
    let dir = TempDir::new("hourly");
    let r = run(local(&db, &dir)
        .env(
            "PGDRIVE_CRITICAL_TABLES",
            "orders, public.customers,sales.\"Events\"",
        )
        .args(["backup", "--kind", "hourly"]));
    assert_eq!(r.status, 0, "{r:?}");
    let files = backups_in(&dir);
    assert_eq!(files.len(), 1);
    assert!(files[0].contains("-hourly-"));
    let sql = gunzip(&std::fs::read(dir.path().join(&files[0])).unwrap());
    assert!(sql.contains("CREATE TABLE public.orders"), "orders missing");
    assert!(
        sql.contains("CREATE TABLE public.customers"),
        "customers missing"
    );
    assert!(
        sql.contains("CREATE TABLE sales.events_2025"),
        "partition missing"
    );
    assert!(
        !sql.contains("audit_log"),
        "a non-critical table was dumped"
    );
    assert!(
        !sql.contains("CREATE TABLE public.backups"),
        "the catalog was dumped"
    );

    // like pg_dump --table, an hourly backup holds the tables, not the schemas they live in
    let target = TestDb::new("hourly_dst");
    target.exec("CREATE SCHEMA sales");
    restore_gz(
        &std::fs::read(dir.path().join(&files[0])).unwrap(),
        &target.url(),
    );
    assert_eq!(
        target.query_i64("SELECT count(*) FROM sales.\"Events\""),
        400
    );
    assert_eq!(target.query_i64("SELECT count(*) FROM orders"), 5000);
}

#[test]
fn schema_backup_has_structure_and_no_data() {
    let db = TestDb::new("schema");
    seed_shop(&db);
    let dir = TempDir::new("schema");
    let r = run(local(&db, &dir).args(["backup", "--kind", "schema"]));
    assert_eq!(r.status, 0, "{r:?}");
    let files = backups_in(&dir);
    let sql = gunzip(&std::fs::read(dir.path().join(&files[0])).unwrap());
    assert!(sql.contains("CREATE TABLE public.orders"));
    assert!(sql.contains("CREATE VIEW public.big_orders"));
    assert!(!sql.contains("COPY public.orders"), "schema dump has data");
    assert!(!sql.contains("customer 1"), "schema dump has data");
}

#[test]
fn a_missing_critical_table_is_a_configuration_error_and_nothing_is_stored() {
    let db = TestDb::new("missing_table");
    seed_shop(&db);
    let dir = TempDir::new("missing_table");
    let r = run(local(&db, &dir)
        .env("PGDRIVE_CRITICAL_TABLES", "orders,no_such_table")
        .args(["backup", "--kind", "hourly"]));
    assert_eq!(r.status, 78, "{r:?}");
    assert!(
        r.stderr.contains("pgdrive: error:") && r.stderr.contains("no_such_table"),
        "{r:?}"
    );
    assert!(r.stderr.contains("hint:"), "{r:?}");
    assert!(
        all_entries(&dir).iter().all(|e| !e.contains(".sql.gz")),
        "{:?}",
        all_entries(&dir)
    );
    let rows = db.catalog();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, "ERROR");
    assert!(rows[0].3.as_deref().unwrap().contains("no_such_table"));

    // an empty list is refused before connecting at all
    let r = run(local(&db, &dir)
        .env("PGDRIVE_CRITICAL_TABLES", " , ")
        .args(["backup", "--kind", "hourly"]));
    assert_eq!(r.status, 78, "{r:?}");
    assert!(r.stderr.contains("PGDRIVE_CRITICAL_TABLES"), "{r:?}");
}

#[test]
fn a_held_lock_skips_the_run_with_75_and_stores_nothing() {
    let db = TestDb::new("locked");
    seed_shop(&db);
    let dir = TempDir::new("locked");
    let mut holder = db.client();
    // the Node.js implementation's key for daily-backup-job
    holder
        .execute("SELECT pg_advisory_lock(-1450133114::bigint)", &[])
        .unwrap();
    let r = run(local(&db, &dir).args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 75, "{r:?}");
    assert!(r.stderr.contains("another run holds the lock"), "{r:?}");
    assert!(backups_in(&dir).is_empty());
    // another kind is not blocked
    let r = run(local(&db, &dir).args(["backup", "--kind", "schema"]));
    assert_eq!(r.status, 0, "{r:?}");
    holder
        .execute("SELECT pg_advisory_unlock(-1450133114::bigint)", &[])
        .unwrap();
    let r = run(local(&db, &dir).args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 0, "{r:?}");
}

#[test]
fn pg_dump_failing_mid_stream_leaves_no_file_and_an_error_row() {
    let db = TestDb::new("dump_fails");
    let dir = TempDir::new("dump_fails");
    let bin = TempDir::new("dump_fails_bin");
    let fake = fake_pg_dump(&bin, "head -c 3000000 /dev/urandom | base64\necho 'pg_dump: error: query failed: server closed the connection unexpectedly' >&2\nexit 1");
    let r = run(local(&db, &dir)
        .env("PGDRIVE_PG_DUMP", &fake)
        .env("PGDRIVE_CHUNK_SIZE", "256KiB")
        .args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 1, "{r:?}");
    assert!(
        r.stderr
            .contains("server closed the connection unexpectedly"),
        "pg_dump's stderr must be quoted: {r:?}"
    );
    assert!(
        all_entries(&dir).is_empty(),
        "left behind: {:?}",
        all_entries(&dir)
    );
    let rows = db.catalog();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, "ERROR");
    assert!(
        rows[0]
            .3
            .as_deref()
            .unwrap()
            .contains("exited with status 1"),
        "{rows:?}"
    );
}

#[test]
fn pg_dump_killed_or_truncated_is_a_failure() {
    let db = TestDb::new("dump_killed");
    let dir = TempDir::new("dump_killed");
    let bin = TempDir::new("dump_killed_bin");
    let fake = fake_pg_dump(&bin, "head -c 1000000 /dev/urandom | base64\nkill -9 $$");
    let r = run(local(&db, &dir)
        .env("PGDRIVE_PG_DUMP", &fake)
        .args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 1, "{r:?}");
    assert!(r.stderr.contains("killed by signal 9"), "{r:?}");
    assert!(all_entries(&dir).is_empty(), "{:?}", all_entries(&dir));

    // exit 0 but the output stops before pg_dump's closing comment
    let fake = fake_pg_dump(&bin, "echo 'CREATE TABLE t (a int);'\nexit 0");
    let r = run(local(&db, &dir)
        .env("PGDRIVE_PG_DUMP", &fake)
        .args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 1, "{r:?}");
    assert!(r.stderr.contains("truncated"), "{r:?}");
    assert!(all_entries(&dir).is_empty());
    assert_eq!(db.catalog().iter().filter(|r| r.0 == "ERROR").count(), 2);
}

#[test]
fn the_password_never_appears_in_argv_logs_or_the_catalog() {
    let db = TestDb::new("secret");
    seed_shop(&db);
    let role = unique("pgdrive_user");
    let password = "Sup3r-S3cret-pa55";
    admin()
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{password}'"
        ))
        .unwrap();
    let dir = TempDir::new("secret");
    let bin = TempDir::new("secret_bin");
    let argv_log = bin.path().join("argv.txt");
    let fake = fake_pg_dump(
        &bin,
        &format!(
            "printf '%s\\n' \"$0\" \"$@\" > {}\ncat /proc/$$/cmdline >> {}\nexec {} \"$@\"",
            argv_log.display(),
            argv_log.display(),
            real_pg_dump()
        ),
    );
    let url = format!("postgres://{role}:{password}@127.0.0.1:5432/{}", db.name);
    for kind in ["daily", "hourly"] {
        let r = run(pgdrive()
            .env("DATABASE_URL", &url)
            .env("PGDRIVE_LOCAL_DIR", dir.path())
            .env("PGDRIVE_PG_DUMP", &fake)
            .env("PGDRIVE_CRITICAL_TABLES", "orders")
            .args(["--verbose", "backup", "--kind", kind]));
        assert_eq!(r.status, 0, "{r:?}");
        assert!(!r.stderr.contains(password), "password in the log: {r:?}");
        let argv = std::fs::read_to_string(&argv_log).unwrap();
        assert!(
            !argv.contains(password),
            "password in pg_dump's argv: {argv}"
        );
    }
    // a failing run's error (stored in the catalog) does not carry it either
    let r = run(pgdrive()
        .env(
            "DATABASE_URL",
            format!("postgres://{role}:{password}@127.0.0.1:1/{}", db.name),
        )
        .env("PGDRIVE_LOCAL_DIR", dir.path())
        .args(["backup", "--kind", "daily"]));
    // nothing listens on port 1: a transient failure
    assert_eq!(r.status, 69, "{r:?}");
    assert!(!r.stderr.contains(password), "{r:?}");
    let errors: Vec<String> = db.catalog().into_iter().filter_map(|r| r.3).collect();
    assert!(errors.iter().all(|e| !e.contains(password)));
    admin().batch_execute(&format!("DROP ROLE {role}")).ok();
}

#[test]
fn bad_database_urls_and_missing_pg_dump_get_clear_errors() {
    let dir = TempDir::new("bad_url");
    let r = run(pgdrive()
        .env("DATABASE_URL", "postgres://u:pw@host:notaport/db")
        .env("PGDRIVE_LOCAL_DIR", dir.path())
        .args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 78, "{r:?}");
    assert!(
        r.stderr.contains("DATABASE_URL is invalid") && !r.stderr.contains(":pw@"),
        "{r:?}"
    );

    let r = run(pgdrive()
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/nothing")
        .env("PGDRIVE_LOCAL_DIR", dir.path())
        .args(["backup", "--kind", "daily"]));
    // nothing listens there: unreachable (69), not a broken setup
    assert_eq!(r.status, 69, "{r:?}");
    assert!(
        r.stderr.contains("cannot connect") && r.stderr.contains("hint:"),
        "{r:?}"
    );

    let db = TestDb::new("no_pg_dump");
    let r = run(pgdrive()
        .env("DATABASE_URL", db.url())
        .env("PGDRIVE_LOCAL_DIR", dir.path())
        .env("PGDRIVE_PG_DUMP", "/nonexistent/pg_dump")
        .args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 78, "{r:?}");
    assert!(r.stderr.contains("pg_dump not found"), "{r:?}");

    let bin = TempDir::new("old_pg_dump");
    let old = script(bin.path(), "pg_dump", "echo 'pg_dump (PostgreSQL) 12.9'");
    let r = run(pgdrive()
        .env("DATABASE_URL", db.url())
        .env("PGDRIVE_LOCAL_DIR", dir.path())
        .env("PGDRIVE_PG_DUMP", &old)
        .args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 78, "{r:?}");
    assert!(
        r.stderr.contains("older than the server") && r.stderr.contains("hint:"),
        "{r:?}"
    );
    assert!(backups_in(&dir).is_empty());

    let r = run(pgdrive()
        .env("DATABASE_URL", db.url())
        .args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 78, "{r:?}");
    assert!(r.stderr.contains("no backup target"), "{r:?}");

    let r = run(pgdrive().args(["backup", "--kind", "weekly"]));
    assert_eq!(r.status, 2, "{r:?}");
}

#[test]
fn local_retention_keeps_the_newest_and_ignores_other_files() {
    let db = TestDb::new("local_keep");
    let dir = TempDir::new("local_keep");
    std::fs::write(dir.path().join("notes.txt"), "not a backup").unwrap();
    std::fs::write(
        dir.path().join("other-daily-20200101T000000Z.sql.gz"),
        "someone else's",
    )
    .unwrap();
    for _ in 0..3 {
        let r = run(local(&db, &dir).args(["backup", "--kind", "daily", "--keep", "2"]));
        assert_eq!(r.status, 0, "{r:?}");
        std::thread::sleep(std::time::Duration::from_millis(1100)); // distinct second-resolution names
    }
    let files = backups_in(&dir);
    assert_eq!(
        files.iter().filter(|f| f.starts_with(&db.name)).count(),
        2,
        "{files:?}"
    );
    assert!(files.contains(&"other-daily-20200101T000000Z.sql.gz".to_string()));
    assert!(dir.path().join("notes.txt").exists());
    let rows = db.catalog();
    assert_eq!(
        rows.iter().filter(|r| r.5).count(),
        1,
        "one row marked pruned: {rows:?}"
    );
}

#[test]
fn env_file_settings_precedence_and_permission_warning() {
    use std::os::unix::fs::PermissionsExt;
    let db = TestDb::new("envfile");
    let dir = TempDir::new("envfile");
    let other = TempDir::new("envfile_flag");
    let env_file = dir.path().join("pgdrive.env");
    std::fs::write(&env_file, format!("# settings\nDATABASE_URL={}\nPGDRIVE_LOCAL_DIR=/nonexistent/overridden\nPGDRIVE_KEEP_DAILY=\"3\"\n", db.url())).unwrap();
    std::fs::set_permissions(&env_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    // the environment beats the file, the flag beats both
    let r = run(pgdrive()
        .env("PGDRIVE_LOCAL_DIR", dir.path().join("from-env"))
        .args([
            "--env-file",
            env_file.to_str().unwrap(),
            "backup",
            "--kind",
            "daily",
            "--to",
            other.path().to_str().unwrap(),
        ]));
    assert_eq!(r.status, 0, "{r:?}");
    assert!(r.stderr.contains("readable by group or others"), "{r:?}");
    assert!(r.stderr.contains("keep=3"), "{r:?}");
    assert_eq!(backups_in(&other).len(), 1);
    std::fs::set_permissions(&env_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let r = run(pgdrive()
        .env("PGDRIVE_LOCAL_DIR", dir.path().join("from-env"))
        .args([
            "--env-file",
            env_file.to_str().unwrap(),
            "backup",
            "--kind",
            "schema",
        ]));
    assert_eq!(r.status, 0, "{r:?}");
    assert!(!r.stderr.contains("readable by group"), "{r:?}");
    assert_eq!(
        std::fs::read_dir(dir.path().join("from-env"))
            .unwrap()
            .count(),
        2,
        "backup + sidecar in the env's directory"
    );
}

#[test]
fn migrate_upgrades_the_node_table_in_place() {
    let db = TestDb::new("node_table");
    db.exec(
        "CREATE TABLE backups (id SERIAL PRIMARY KEY, created_at TIMESTAMP DEFAULT NOW(), filename TEXT, size_bytes INTEGER,
                               drive_file_id TEXT, status TEXT, type TEXT, error TEXT);
         INSERT INTO backups (filename, size_bytes, drive_file_id, status, type) VALUES ('old.sql.gz', 123, 'abc', 'SUCCESS', 'daily');",
    );
    let r = run(pgdrive().env("DATABASE_URL", db.url()).arg("migrate"));
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(psql(&db.url(), "SELECT data_type FROM information_schema.columns WHERE table_name = 'backups' AND column_name = 'size_bytes'").trim(), "bigint");
    assert_eq!(
        psql(
            &db.url(),
            "SELECT filename || ':' || size_bytes || ':' || status FROM backups"
        )
        .trim(),
        "old.sql.gz:123:SUCCESS"
    );
    db.exec("INSERT INTO backups (filename, size_bytes, status, type) VALUES ('big', 5000000000, 'SUCCESS', 'daily')");
    // idempotent
    let r = run(pgdrive().env("DATABASE_URL", db.url()).arg("migrate"));
    assert_eq!(r.status, 0, "{r:?}");
    assert!(r.stderr.contains("up to date"), "{r:?}");
}

#[test]
fn a_catalog_table_dropped_by_hand_is_created_again_by_the_next_run() {
    let db = TestDb::new("dropped_catalog");
    let r = run(pgdrive().env("DATABASE_URL", db.url()).arg("migrate"));
    assert_eq!(r.status, 0, "{r:?}");
    // the migration record stays; the tables it describes are gone
    db.exec("DROP TABLE backup_copies, backups");
    let dir = TempDir::new("dropped_catalog");
    let r = run(pgdrive()
        .env("DATABASE_URL", db.url())
        .args(["backup", "--kind", "daily", "--to"])
        .arg(dir.path()));
    assert_eq!(r.status, 0, "{r:?}");
    assert!(r.stderr.contains("creating them again"), "{r:?}");
    assert_eq!(
        psql(&db.url(), "SELECT status FROM backups").trim(),
        "SUCCESS"
    );
    assert_eq!(
        psql(&db.url(), "SELECT count(*) FROM backup_copies").trim(),
        "1"
    );
    let r = run(pgdrive().env("DATABASE_URL", db.url()).arg("migrate"));
    assert!(r.stderr.contains("up to date"), "{r:?}");
}

#[test]
fn tls_sslmodes_follow_libpq() {
    let snakeoil = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
    let db = TestDb::new("tls");
    let tls_on = psql(&db.url(), "SHOW ssl").trim() == "on";
    if !tls_on || !std::path::Path::new(snakeoil).exists() {
        assert!(
            std::env::var("CI").is_err(),
            "CI's PostgreSQL should have TLS on with the snakeoil certificate"
        );
        eprintln!("SKIPPED: the server has no TLS");
        return;
    }
    let dir = TempDir::new("tls");
    let base = format!("postgres://postgres@127.0.0.1:5432/{}", db.name);
    let ok = [
        format!("{base}?sslmode=require"),
        format!("{base}?sslmode=verify-ca&sslrootcert={snakeoil}"),
        format!(
            "postgres://postgres@localhost:5432/{}?sslmode=verify-full&sslrootcert={snakeoil}",
            db.name
        ),
    ];
    for (i, url) in ok.iter().enumerate() {
        let r = run(pgdrive()
            .env("DATABASE_URL", url)
            .env("PGDRIVE_LOCAL_DIR", dir.path().join(i.to_string()))
            .args(["backup", "--kind", "schema"]));
        assert_eq!(r.status, 0, "{url}: {r:?}");
    }
    // the certificate is self-signed and names localhost, not 127.0.0.1
    for (url, why) in [
        (format!("{base}?sslmode=verify-full"), "UnknownIssuer"),
        (
            format!("{base}?sslmode=verify-full&sslrootcert={snakeoil}"),
            "not valid for name",
        ),
    ] {
        let r = run(pgdrive()
            .env("DATABASE_URL", &url)
            .env("PGDRIVE_LOCAL_DIR", dir.path())
            .args(["backup", "--kind", "schema"]));
        assert_eq!(r.status, 1, "{url}: {r:?}");
        assert!(r.stderr.contains(why), "{r:?}");
    }
    // while pg_dump runs, pgdrive's own (lock) connection is open: it must be encrypted
    let bin = TempDir::new("tls_bin");
    let seen = bin.path().join("ssl.txt");
    let probe = format!(
        "SELECT string_agg(s.ssl::text, ',') FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.datname = '{}' AND a.application_name LIKE 'pgdrive%'",
        db.name
    );
    let fake = fake_pg_dump(
        &bin,
        &format!(
            "psql -X -At -d 'postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable&application_name=probe' -c \"{probe}\" > {}\nexec {} \"$@\"",
            seen.display(),
            real_pg_dump()
        ),
    );
    let r = run(pgdrive()
        .env("DATABASE_URL", &ok[0])
        .env("PGDRIVE_PG_DUMP", &fake)
        .env("PGDRIVE_LOCAL_DIR", dir.path().join("probe"))
        .args(["backup", "--kind", "schema"]));
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(std::fs::read_to_string(&seen).unwrap().trim(), "true");
}

#[test]
fn an_unrelated_backups_table_is_left_alone() {
    let db = TestDb::new("foreign_catalog");
    db.exec("CREATE TABLE backups (id int PRIMARY KEY, host text NOT NULL, taken date); INSERT INTO backups VALUES (1, 'x', now());");
    let dir = TempDir::new("foreign_catalog");
    let r = run(local(&db, &dir).args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 78, "{r:?}");
    assert!(r.stderr.contains("PGDRIVE_CATALOG_URL"), "{r:?}");
    assert_eq!(
        psql(
            &db.url(),
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'backups'"
        )
        .trim(),
        "3"
    );
    // with the catalog elsewhere, the backup runs
    let catalog = TestDb::new("catalog_elsewhere");
    let r = run(local(&db, &dir)
        .env("PGDRIVE_CATALOG_URL", catalog.url())
        .args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(catalog.catalog().len(), 1);
    assert_eq!(catalog.catalog()[0].0, "SUCCESS");
}

#[test]
fn json_logs_stay_json_to_the_last_line() {
    let db = TestDb::new("json_logs");
    let dir = TempDir::new("json_logs");
    for (kind, status) in [("daily", 0), ("hourly", 78)] {
        let r = run(local(&db, &dir)
            .env("PGDRIVE_CRITICAL_TABLES", "nope")
            .args(["--log-format", "json", "backup", "--kind", kind]));
        assert_eq!(r.status, status, "{r:?}");
        for line in r.stderr.lines() {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            assert!(
                v["ts"].is_string() && v["level"].is_string() && v["msg"].is_string(),
                "{line}"
            );
        }
        let last: serde_json::Value =
            serde_json::from_str(r.stderr.lines().last().unwrap()).unwrap();
        if status == 0 {
            assert_eq!(last["msg"], "backup finished");
            assert!(last["size_bytes"].as_str().unwrap().parse::<u64>().unwrap() > 0);
        } else {
            assert_eq!(last["exit_status"], "78");
            assert!(last["hint"].is_string());
        }
    }
}

#[test]
fn every_codec_and_format_restores() {
    let db = TestDb::new("codecs");
    seed_shop(&db);
    let dir = TempDir::new("codecs");
    let cases = [
        ("gzip:1", "2", "plain", ".sql.gz"),
        ("zstd:3", "2", "plain", ".sql.zst"),
        ("none", "1", "plain", ".sql"),
        ("gzip:6", "2", "custom", ".dump.gz"),
        ("zstd:9", "1", "custom", ".dump.zst"),
    ];
    for (codec, threads, format, ext) in cases {
        let out = dir
            .path()
            .join(format!("{format}-{}", codec.replace(':', "")));
        let r = run(local(&db, &dir).env("PGDRIVE_LOCAL_DIR", &out).args([
            "backup",
            "--kind",
            "daily",
            "--compress",
            codec,
            "--threads",
            threads,
            "--format",
            format,
        ]));
        assert_eq!(r.status, 0, "{codec} {format}: {r:?}");
        let name = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .find(|n| !n.ends_with(".json"))
            .unwrap();
        assert!(name.ends_with(ext), "{name}");
        let sidecar: serde_json::Value = serde_json::from_slice(
            &std::fs::read(out.join(format!("{name}.pgdrive.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(sidecar["properties"]["pgdrive_compression"], codec);
        assert_eq!(sidecar["properties"]["pgdrive_format"], format);
        // decompress with the standard tools, restore with the standard tools
        let file = out.join(&name);
        let decompress = match &codec[..4] {
            "gzip" => format!("gzip -dc '{}'", file.display()),
            "zstd" => format!("zstd -dcq '{}'", file.display()),
            _ => format!("cat '{}'", file.display()),
        };
        let target = TestDb::new("codecs_dst");
        let restore = if format == "plain" {
            format!(
                "{decompress} | psql -X -q -v ON_ERROR_STOP=1 -d '{}' >/dev/null",
                target.url()
            )
        } else {
            format!(
                "{decompress} | pg_restore --exit-on-error -d '{}'",
                target.url()
            )
        };
        let st = std::process::Command::new("bash")
            .args(["-o", "pipefail", "-c", &restore])
            .status()
            .unwrap();
        assert!(st.success(), "{restore}");
        assert_eq!(
            target.query_i64("SELECT count(*) FROM orders"),
            5000,
            "{codec} {format}"
        );
    }
}

#[test]
fn an_old_pg_dump_first_on_path_is_passed_over_for_the_servers_version() {
    let db = TestDb::new("path_pg_dump");
    let dir = TempDir::new("path_pg_dump");
    let bin = TempDir::new("path_pg_dump_bin");
    script(
        bin.path(),
        "pg_dump",
        "echo 'pg_dump (PostgreSQL) 12.9'; exit 0",
    );
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap()
    );
    let r = run(local(&db, &dir)
        .env("PATH", &path)
        .args(["backup", "--kind", "schema"]));
    assert_eq!(r.status, 0, "{r:?}");
    assert!(
        r.stderr.contains("/usr/lib/postgresql/15/bin/pg_dump"),
        "{r:?}"
    );
    let version = psql(&db.url(), "SELECT pg_dump_version FROM backups");
    assert!(version.starts_with("15."), "{version}");
}

#[test]
fn a_catalog_write_that_fails_after_the_upload_exits_3_and_keeps_the_backup() {
    let db = TestDb::new("catalog_fails");
    seed_shop(&db);
    let dir = TempDir::new("catalog_fails");
    let bin = TempDir::new("catalog_fails_bin");
    // the catalog disappears while pg_dump runs
    let fake = fake_pg_dump(
        &bin,
        &format!("psql -X -q -d '{}' -c 'ALTER TABLE backups RENAME TO backups_moved' >/dev/null\nexec {} \"$@\"", db.url(), real_pg_dump()),
    );
    let r = run(local(&db, &dir)
        .env("PGDRIVE_PG_DUMP", &fake)
        .args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 3, "{r:?}");
    assert!(
        r.stderr.contains("recording it in the catalog failed"),
        "{r:?}"
    );
    assert_eq!(backups_in(&dir).len(), 1, "the stored backup is kept");
}

/// A fake pg_dump that leaves a grandchild holding its stdout open (as a wrapper script would),
/// records both pids, and only then prints a line: the grandchild exists before pgdrive has a
/// byte to wait on, however slowly the machine runs the script.
fn lingering_pg_dump(bin: &Path) -> PathBuf {
    script(
        bin,
        "pg_dump",
        &format!(
            "if [ \"$1\" = --version ]; then exec {} --version; fi\nsleep 60 &\necho $! > {dir}/grandchild.pid\necho $$ > {dir}/dump.pid\necho 'SET statement_timeout = 0;'\nwait",
            real_pg_dump(),
            dir = bin.display()
        ),
    )
}

fn pid_in(dir: &Path, file: &str) -> libc::pid_t {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(text) = std::fs::read_to_string(dir.join(file)) {
            if let Ok(pid) = text.trim().parse() {
                return pid;
            }
        }
        assert!(Instant::now() < deadline, "{file} never appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn gone_within(pid: libc::pid_t, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        // SAFETY: signal 0 only asks whether the process exists.
        if unsafe { libc::kill(pid, 0) } != 0 {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// pg_dump and whatever its wrapper started die with pgdrive, even when pgdrive is SIGKILLed
/// (the kernel's death signal, and a process group of their own that a failing run kills whole).
#[test]
fn pg_dump_and_its_wrappers_children_never_outlive_pgdrive() {
    let db = TestDb::new("dump_dies_with_pgdrive");
    let out = TempDir::new("dump_dies_with_pgdrive_out");
    // 1. a failing run (stalled) kills the whole group and exits promptly, though a grandchild
    //    holds pg_dump's stdout open
    let bin = TempDir::new("dump_dies_bin_stall");
    let fake = lingering_pg_dump(bin.path());
    let started = Instant::now();
    let r = run(pgdrive()
        .env("DATABASE_URL", db.url())
        .env("PGDRIVE_PG_DUMP", &fake)
        // long enough for a loaded machine to start the script, whose first act is the grandchild
        .env("PGDRIVE_STALL_TIMEOUT_MS", "5000")
        .args(["backup", "--kind", "daily", "--to"])
        .arg(out.path()));
    assert_eq!(r.status, 1, "{r:?}");
    assert!(r.stderr.contains("stalled"), "{r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    let grandchild = pid_in(bin.path(), "grandchild.pid");
    assert!(
        gone_within(grandchild, Duration::from_secs(5)),
        "the wrapper's child outlived the run"
    );

    // 2. pgdrive SIGKILLed mid-dump: pg_dump is killed by the kernel
    let bin = TempDir::new("dump_dies_bin_kill");
    let fake = lingering_pg_dump(bin.path());
    let mut child = pgdrive()
        .env("DATABASE_URL", db.url())
        .env("PGDRIVE_PG_DUMP", &fake)
        .args(["backup", "--kind", "daily", "--to"])
        .arg(out.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let dump = pid_in(bin.path(), "dump.pid");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        gone_within(dump, Duration::from_secs(5)),
        "pg_dump outlived a SIGKILLed pgdrive"
    );
    // the grandchild has no death signal of its own (none is inherited): end it here
    // SAFETY: kill(2) of the test's own sleep process.
    unsafe { libc::kill(pid_in(bin.path(), "grandchild.pid"), libc::SIGKILL) };
    let leftovers: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| !n.to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
