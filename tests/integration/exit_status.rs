//! Exit status 69 (transient: unreachable, or "try later" after every retry) against real
//! failures: a Drive that answers 503 to every chunk, a Drive URL, a token endpoint and a
//! database port where nothing listens, a role the server has no connection slot for; and what
//! stays 1 or 65 (a corrupt backup, pg_dump failing on an SQL error).

use serde_json::json;

use crate::common::*;

/// A port on this host where nothing listens: bound, then released.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The run failed with exactly one `pgdrive: error:` line, followed by a hint.
fn assert_one_error_line_with_hint(r: &Run) -> String {
    let lines: Vec<&str> = r.stderr.lines().collect();
    let errors: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with("pgdrive: error: "))
        .collect();
    assert_eq!(errors.len(), 1, "{r:?}");
    assert!(
        lines
            .get(errors[0] + 1)
            .is_some_and(|l| l.starts_with("hint: ")),
        "{r:?}"
    );
    lines[errors[0]].to_string()
}

#[test]
fn a_backup_whose_every_chunk_gets_503_exits_69_with_one_error_line_and_an_error_row() {
    let g = Google::shared_drive();
    let db = TestDb::new("exit69_chunks");
    seed_shop(&db);
    g.emu.fault(json!([
        {"op": "upload_chunk", "times": 1000, "action": {"status": 503, "reason": "backendError"}},
    ]));
    let r = run(g
        .pgdrive(&db)
        .env("PGDRIVE_RETRY_MAX", "2")
        .args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 69, "{r:?}");
    let error = assert_one_error_line_with_hint(&r);
    assert!(
        error.contains("503") && error.contains("gave up after 2 retries"),
        "{error}"
    );
    // every retry was made before giving up, and nothing is left in the folder
    assert!(g.emu.requests_of("upload_chunk").len() >= 3);
    assert!(g.emu.backups_in(&g.folder).is_empty());
    let rows = db.catalog();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].0, "ERROR");
    assert!(
        rows[0].3.as_deref().unwrap_or("").contains("503"),
        "{rows:?}"
    );
}

#[test]
fn a_drive_url_where_nothing_listens_exits_69_for_backup_list_verify_and_restore() {
    let g = Google::shared_drive();
    let db = TestDb::new("exit69_drive_url");
    seed_shop(&db);
    let nowhere = format!("http://127.0.0.1:{}/", closed_port());
    let target = TestDb::new("exit69_drive_url_into");
    let commands: [&[&str]; 4] = [
        &["backup", "--kind", "daily"],
        &["list"],
        &["verify", "latest"],
        &["restore", "latest", "--target-url", &target.url()],
    ];
    for args in commands {
        let r = run(g
            .pgdrive(&db)
            .env("PGDRIVE_DRIVE_URL", &nowhere)
            .env("PGDRIVE_RETRY_MAX", "1")
            .args(args));
        assert_eq!(r.status, 69, "{args:?}: {r:?}");
        assert_one_error_line_with_hint(&r);
    }
    assert_eq!(db.catalog()[0].0, "ERROR");
}

#[test]
fn a_token_endpoint_where_nothing_listens_exits_69() {
    let g = Google::shared_drive();
    let db = TestDb::new("exit69_token");
    let mut key: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&g.key_file).unwrap()).unwrap();
    key["token_uri"] = json!(format!("http://127.0.0.1:{}/token", closed_port()));
    let key_file = g.dir.path().join("unreachable-token-uri.json");
    std::fs::write(&key_file, key.to_string()).unwrap();
    let r = run(g
        .pgdrive(&db)
        .env("GOOGLE_SERVICE_ACCOUNT_JSON", &key_file)
        .env("PGDRIVE_RETRY_MAX", "1")
        .args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 69, "{r:?}");
    let error = assert_one_error_line_with_hint(&r);
    assert!(error.contains("access token"), "{error}");
}

#[test]
fn a_database_that_cannot_be_reached_or_has_no_slot_exits_69() {
    let dir = TempDir::new("exit69_db");
    let backup = |url: &str| {
        run(pgdrive()
            .env("DATABASE_URL", url)
            .env("PGDRIVE_LOCAL_DIR", dir.path())
            .args(["backup", "--kind", "daily"]))
    };
    let r = backup(&format!(
        "postgres://postgres@127.0.0.1:{}/shop",
        closed_port()
    ));
    assert_eq!(r.status, 69, "{r:?}");
    let error = assert_one_error_line_with_hint(&r);
    assert!(error.contains("cannot connect to"), "{error}");
    assert!(
        r.stderr.contains("hint: check that the server is running"),
        "{r:?}"
    );

    // the server is up but takes no connection for this role: SQLSTATE 53300
    let db = TestDb::new("exit69_slots");
    let role = unique("no_slots");
    admin()
        .batch_execute(&format!("CREATE ROLE {role} LOGIN CONNECTION LIMIT 0"))
        .unwrap();
    let url = db.url().replace("postgres@", &format!("{role}@"));
    let r = backup(&url);
    admin().batch_execute(&format!("DROP ROLE {role}")).unwrap();
    assert_eq!(r.status, 69, "{r:?}");
    assert!(r.stderr.contains("53300"), "{r:?}");
    assert!(r.stderr.contains("no free connection slot"), "{r:?}");
    assert!(backup_files(dir.path()).is_empty());
}

#[test]
fn a_corrupt_backup_still_exits_65_and_a_failing_pg_dump_1() {
    let db = TestDb::new("exit65");
    seed_shop(&db);
    let dir = TempDir::new("exit65");
    let file = local_backup(&db, dir.path(), &[]);
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    let r = run(pgdrive()
        .env("DATABASE_URL", db.url())
        .env("PGDRIVE_LOCAL_DIR", dir.path())
        .args(["verify", "latest"]));
    assert_eq!(r.status, 65, "{r:?}");

    // pg_dump refused by the server (an SQL error): a failure for a person, not a retry
    let refused_dir = TempDir::new("exit65_refused");
    let role = unique("no_select");
    db.exec(&format!(
        "CREATE ROLE {role} LOGIN; GRANT CONNECT ON DATABASE \"{}\" TO {role}; GRANT USAGE ON SCHEMA public TO {role}",
        db.name
    ));
    let r = run(pgdrive()
        .env(
            "DATABASE_URL",
            db.url().replace("postgres@", &format!("{role}@")),
        )
        .env("PGDRIVE_CATALOG_URL", db.url())
        // its own directory: a backup name is to the second, and the one above may share it
        .env("PGDRIVE_LOCAL_DIR", refused_dir.path())
        .args(["backup", "--kind", "daily"]));
    db.exec(&format!(
        "DROP OWNED BY {role}; REVOKE ALL ON DATABASE \"{}\" FROM {role}",
        db.name
    ));
    drop(db);
    admin().batch_execute(&format!("DROP ROLE {role}")).ok();
    assert_eq!(r.status, 1, "{r:?}");
    assert!(r.stderr.contains("permission denied"), "{r:?}");
}
