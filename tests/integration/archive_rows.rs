//! Custom-format backups carry row counts read off the archive, equal to a plain dump's, and are
//! verified as deeply as plain ones: a restore client that loses rows fails the restore test, a
//! manifest that disagrees with the archive fails the checksum verify.

use std::collections::BTreeMap;
use std::path::Path;

use crate::common::*;

/// Backs `db` up in `format` into `dir` (the catalog elsewhere, so the source stays unchanged
/// between runs); returns the backup's sidecar.
fn backup(db: &TestDb, catalog: &TestDb, format: &str, dir: &Path) -> serde_json::Value {
    let r = run(pgdrive()
        .env("DATABASE_URL", db.url())
        .env("PGDRIVE_CATALOG_URL", catalog.url())
        .env("PGDRIVE_FORMAT", format)
        .args(["backup", "--kind", "daily", "--to"])
        .arg(dir));
    assert_eq!(r.status, 0, "{format}: {r:?}");
    let sidecar = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".pgdrive.json"))
        .unwrap();
    serde_json::from_slice(&std::fs::read(sidecar).unwrap()).unwrap()
}

fn counts(sidecar: &serde_json::Value) -> BTreeMap<String, u64> {
    serde_json::from_value(sidecar["row_counts"].clone()).unwrap()
}

#[test]
fn custom_archives_record_the_plain_dumps_counts_and_a_lossy_restore_fails_verify() {
    let db = TestDb::new("arch_rows");
    let catalog = TestDb::new("arch_rows_catalog");
    seed_shop(&db);
    db.exec(
        "CREATE TABLE \"Odd \"\"Name\"\"\" (v text);
         INSERT INTO \"Odd \"\"Name\"\"\" SELECT repeat(E'line\\nbreak\\t', g) FROM generate_series(1, 50) g;
         CREATE TABLE empty_one (a int);
         SELECT lo_from_bytea(0, decode(repeat('0a', 70000), 'hex'));",
    );
    let (plain_dir, custom_dir) = (
        TempDir::new("arch_rows_plain"),
        TempDir::new("arch_rows_custom"),
    );
    let plain = counts(&backup(&db, &catalog, "plain", plain_dir.path()));
    let custom = counts(&backup(&db, &catalog, "custom", custom_dir.path()));
    assert_eq!(plain.get("public.orders"), Some(&5000), "{plain:?}");
    assert_eq!(plain.get("public.empty_one"), Some(&0), "{plain:?}");
    assert_eq!(custom, plain, "the archive's counts are the plain dump's");

    // a pg_restore that commits, then loses a third of the orders
    let bin = TempDir::new("arch_rows_bin");
    let lossy = script(
        bin.path(),
        "pg_restore",
        &format!(
            "conn=
for a in \"$@\"; do case \"$a\" in --dbname=*) conn=\"${{a#--dbname=}}\";; esac; done
{real} \"$@\" || exit $?
if [ -n \"$conn\" ]; then psql -X -q -d \"$conn\" -c 'DELETE FROM orders WHERE id % 3 = 0' >/dev/null || exit 7; fi",
            real = real_pg_dump().replace("pg_dump", "pg_restore")
        ),
    );
    let verify = |pg_restore: Option<&Path>| {
        let mut cmd = pgdrive();
        cmd.env("DATABASE_URL", db.url())
            .env("PGDRIVE_CATALOG_URL", catalog.url());
        if let Some(p) = pg_restore {
            cmd.env("PGDRIVE_PG_RESTORE", p);
        }
        run(cmd
            .args([
                "verify",
                "latest",
                "--restore-test",
                &admin_url("postgres"),
                "--from",
            ])
            .arg(custom_dir.path()))
    };
    let r = verify(Some(&lossy));
    assert_eq!(r.status, 1, "{r:?}");
    assert!(
        r.stderr
            .contains("public.orders: 3334 rows restored, 5000 in the backup"),
        "{r:?}"
    );
    // the same archive with the real client passes: the client was the cause
    let r = verify(None);
    assert_eq!(r.status, 0, "{r:?}");
    assert!(r.stderr.contains("counts equal the backup's"), "{r:?}");
}

#[test]
fn a_manifest_that_disagrees_with_the_archive_fails_the_checksum_verify() {
    let db = TestDb::new("arch_manifest");
    let catalog = TestDb::new("arch_manifest_catalog");
    seed_shop(&db);
    let dir = TempDir::new("arch_manifest");
    let mut sidecar = backup(&db, &catalog, "custom", dir.path());
    let name = sidecar["name"].as_str().unwrap().to_string();
    let r = run(pgdrive()
        .args(["verify", "latest", "--from"])
        .arg(dir.path()));
    assert_eq!(r.status, 0, "{r:?}");
    assert!(
        r.stderr.contains("tables, 7500 rows in the archive"),
        "{r:?}"
    );

    // the checksums cover the archive, not the sidecar: the counts are checked on their own
    sidecar["row_counts"]["public.orders"] = 4999.into();
    std::fs::write(
        dir.path().join(format!("{name}.pgdrive.json")),
        sidecar.to_string(),
    )
    .unwrap();
    let r = run(pgdrive()
        .args(["verify", "latest", "--from"])
        .arg(dir.path()));
    assert_edited_orders_count_is_caught(&r);
}
