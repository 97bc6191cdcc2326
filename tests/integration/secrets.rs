//! Secrets of awkward shapes against the real binary: service-account keys pasted the wrong way,
//! connection strings that cannot be parsed, a plaintext SMTP login to a remote host, and the
//! catalog connection under `sslmode=require`. (The password table through every output is in
//! tests/integration/notify.rs, next to the notification receivers it needs.)

use crate::common::*;
use base64::Engine;

/// Pieces of the private key long enough to mean something (the PEM's base64 lines).
fn key_pieces(key_file: &std::path::Path) -> Vec<String> {
    let key: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(key_file).unwrap()).unwrap();
    key["private_key"]
        .as_str()
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(|l| l[..24.min(l.len())].to_string())
        .collect()
}

#[test]
fn a_service_account_key_with_a_bom_or_quotes_is_accepted_and_a_misplaced_one_is_never_quoted() {
    let g = Google::shared_drive();
    let db = TestDb::new("key_shapes");
    db.exec("CREATE TABLE t (id int); INSERT INTO t VALUES (1);");
    let json = std::fs::read_to_string(&g.key_file).unwrap();
    let pieces = key_pieces(&g.key_file);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&json);

    // pasted with a byte order mark, or inside quotes: accepted
    for value in [
        format!("\u{feff}{json}"),
        format!("\"{json}\""),
        format!("  '\u{feff}{json}'\n"),
    ] {
        let r = run(g
            .pgdrive(&db)
            .env("GOOGLE_SERVICE_ACCOUNT_JSON", &value)
            .env("GOOGLE_DRIVE_FOLDER_ID", g.new_folder("accepted"))
            .args(["backup", "--kind", "daily"]));
        assert_eq!(r.status, 0, "{r:?}");
    }
    let bom_file = g.dir.path().join("bom.json");
    std::fs::write(&bom_file, format!("\u{feff}{json}")).unwrap();
    let r = run(g
        .pgdrive(&db)
        .env("GOOGLE_APPLICATION_CREDENTIALS", &bom_file)
        .env_remove("GOOGLE_SERVICE_ACCOUNT_JSON")
        .env("GOOGLE_DRIVE_FOLDER_ID", g.new_folder("bom"))
        .args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 0, "a key file with a BOM: {r:?}");

    // in the wrong variable, encoded, or cut short: named and described, never shown
    let cut = &json[..json.len() / 2];
    for (variable, value, says) in [
        ("GOOGLE_SERVICE_ACCOUNT_JSON", b64.as_str(), "base64"),
        (
            "GOOGLE_APPLICATION_CREDENTIALS",
            json.as_str(),
            "holds JSON",
        ),
        ("GOOGLE_SERVICE_ACCOUNT_JSON", cut, "not valid JSON"),
        (
            "GOOGLE_SERVICE_ACCOUNT_JSON",
            &json[1..],
            "neither key JSON nor",
        ),
    ] {
        for args in [
            vec!["backup", "--kind", "daily"],
            vec!["--log-format", "json", "backup", "--kind", "daily"],
            vec!["check"],
        ] {
            let mut cmd = g.pgdrive(&db);
            if variable != "GOOGLE_SERVICE_ACCOUNT_JSON" {
                cmd.env_remove("GOOGLE_SERVICE_ACCOUNT_JSON");
            }
            let r = run(cmd.env(variable, value).args(&args));
            assert_ne!(r.status, 0, "{variable} {args:?}: {r:?}");
            if args[0] != "check" {
                assert_eq!(r.status, 78, "{variable} {args:?}: {r:?}");
            }
            let out = format!("{}{}", r.stdout, r.stderr);
            assert!(
                out.contains(variable) && out.contains(says),
                "{variable} {args:?}: {r:?}"
            );
            for piece in pieces.iter().chain([&b64[..24].to_string()]) {
                assert!(
                    !out.contains(piece.as_str()),
                    "key material {piece:?} shown: {r:?}"
                );
            }
            assert!(
                out.lines().all(|l| l.len() < 600),
                "no line quotes a whole key: {r:?}"
            );
        }
    }
}

#[test]
fn a_connection_string_that_cannot_be_parsed_is_never_echoed() {
    let dir = TempDir::new("unparsable");
    for (setting, url, secret) in [
        (
            "DATABASE_URL",
            "postgres://app:se/cret-77@127.0.0.1/shop",
            "cret-77",
        ),
        (
            "DATABASE_URL",
            "postgres://app:se?cret-77/x@127.0.0.1/shop",
            "cret-77",
        ),
        (
            "DATABASE_URL",
            "host=127.0.0.1 password=secret-77 part-two dbname=shop",
            "part-two",
        ),
        (
            "DATABASE_URL",
            "host=127.0.0.1 password='secret-77 dbname=shop",
            "secret-77",
        ),
        (
            "PGDRIVE_CATALOG_URL",
            "postgres://app:secret-77%zz@127.0.0.1/shop",
            "secret-77",
        ),
    ] {
        for args in [
            vec!["backup", "--kind", "daily"],
            vec!["--log-format", "json", "backup", "--kind", "daily"],
        ] {
            let r = run(pgdrive()
                .env("DATABASE_URL", admin_url("postgres"))
                .env(setting, url)
                .env("PGDRIVE_LOCAL_DIR", dir.path())
                .args(&args));
            assert_eq!(r.status, 78, "{url}: {r:?}");
            let out = format!("{}{}", r.stdout, r.stderr);
            assert!(!out.contains(secret), "{url}: {r:?}");
            assert!(
                out.contains(setting) && out.contains("percent-encode"),
                "{url}: {r:?}"
            );
        }
    }
    // a restore target given on the command line is held to the same rule
    let db = TestDb::new("unparsable");
    let r = run(pgdrive()
        .env("DATABASE_URL", db.url())
        .env("PGDRIVE_LOCAL_DIR", dir.path())
        .args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 0, "{r:?}");
    let r = run(pgdrive().env("PGDRIVE_LOCAL_DIR", dir.path()).args([
        "restore",
        "latest",
        "--target-url",
        "postgres://u:se/cret-77@127.0.0.1/x",
        "--yes",
    ]));
    assert_eq!(r.status, 78, "{r:?}");
    assert!(
        !format!("{}{}", r.stdout, r.stderr).contains("cret-77"),
        "{r:?}"
    );
    assert!(r.stderr.contains("--target-url"), "{r:?}");
}

#[test]
fn a_plaintext_smtp_login_is_refused_unless_the_relay_is_this_machine() {
    let db = TestDb::new("smtp_plain");
    let dir = TempDir::new("smtp_plain");
    for host in ["smtp.example.com", "10.1.2.3", "localhost.example.com"] {
        for args in [vec!["backup", "--kind", "daily"], vec!["notify-test"]] {
            let r = run(pgdrive()
                .env("DATABASE_URL", db.url())
                .env("PGDRIVE_LOCAL_DIR", dir.path())
                .env("PGDRIVE_NOTIFY_EMAIL", "ops@example.com")
                .env("PGDRIVE_SMTP_HOST", host)
                .env("PGDRIVE_SMTP_TLS", "none")
                .env("PGDRIVE_SMTP_USER", "pgdrive")
                .env("PGDRIVE_SMTP_PASSWORD", "smtp-secret-99")
                .env("PGDRIVE_SMTP_FROM", "pgdrive@example.com")
                .args(&args));
            assert_eq!(r.status, 78, "{host} {args:?}: {r:?}");
            assert!(r.stderr.contains("PGDRIVE_SMTP_TLS=none"), "{r:?}");
            assert!(!r.stderr.contains("smtp-secret-99"), "{r:?}");
        }
    }
    let stored = std::fs::read_dir(dir.path()).map_or(0, |d| d.count());
    assert_eq!(stored, 0, "nothing was backed up");
}

#[test]
fn the_catalog_is_reached_over_tls_when_sslmode_requires_it() {
    let db = TestDb::new("tls_catalog");
    if psql(&db.url(), "SHOW ssl").trim() != "on" {
        assert!(
            std::env::var("CI").is_err(),
            "CI's PostgreSQL should have TLS on with the snakeoil certificate"
        );
        eprintln!("SKIPPED: the server has no TLS");
        return;
    }
    db.exec("CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 10);");
    let catalog = TestDb::new("tls_catalog_cat");
    let catalog_url = format!("{}?sslmode=require", catalog.url());
    let dir = TempDir::new("tls_catalog");
    let with_catalog = || {
        let mut cmd = pgdrive();
        cmd.env("DATABASE_URL", db.url())
            .env("PGDRIVE_CATALOG_URL", &catalog_url)
            .env("PGDRIVE_LOCAL_DIR", dir.path());
        cmd
    };
    let r = run(with_catalog().args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 0, "{r:?}");
    for args in [vec!["list"], vec!["verify", "latest"]] {
        let r = run(with_catalog().args(&args));
        assert_eq!(r.status, 0, "{args:?}: {r:?}");
        assert!(!r.stderr.contains("not reachable"), "{args:?}: {r:?}");
    }
    let verified = psql(
        &catalog.url(),
        "SELECT verify_result FROM backups WHERE status = 'SUCCESS'",
    );
    assert!(
        verified.trim().starts_with("ok"),
        "verify recorded nothing: {verified:?}"
    );
}
