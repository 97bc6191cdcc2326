//! The local backup directory attacked by someone who can write it: symlinks and files planted at
//! every name pgdrive writes, and a disk that fills up. The file outside the directory must stay
//! untouched, nothing already there may be replaced, and nothing half-written may stay.

use std::path::{Path, PathBuf};

use crate::common::*;

fn local(db: &TestDb, dir: &TempDir) -> std::process::Command {
    let mut cmd = pgdrive();
    cmd.env("DATABASE_URL", db.url())
        .env("PGDRIVE_LOCAL_DIR", dir.path());
    cmd
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A pg_dump that, once pgdrive has opened its upload (the `.partial` file exists), runs `plant`
/// with `$dir` = the backup directory and `$name` = the backup's final name, then dumps for real.
fn planting_pg_dump(bin: &TempDir, dir: &TempDir, plant: &str) -> PathBuf {
    script(
        bin.path(),
        "pg_dump",
        &format!(
            "if [ \"$1\" = --version ]; then exec {real} --version; fi
dir='{dir}'
p=$(ls -a \"$dir\" | grep '\\.partial$' | head -1)
[ -n \"$p\" ] || {{ echo 'no partial file' >&2; exit 9; }}
name=$(echo \"$p\" | sed -E 's/^\\.//; s/\\.partial$//; s/\\.[0-9a-f]{{32}}$//')
{plant}
exec {real} \"$@\"",
            real = real_pg_dump(),
            dir = dir.path().display()
        ),
    )
}

/// A file outside the backup directory that an attacker wants overwritten.
fn victim(outside: &TempDir) -> PathBuf {
    let v = outside.path().join("victim");
    std::fs::write(&v, "precious").unwrap();
    v
}

#[test]
fn symlinks_at_the_old_predictable_temp_names_are_not_written_through() {
    let db = TestDb::new("lt_decoys");
    seed_shop(&db);
    let (dir, bin, outside) = (
        TempDir::new("lt_decoys"),
        TempDir::new("lt_decoys_bin"),
        TempDir::new("lt_decoys_out"),
    );
    let v = victim(&outside);
    // every name a temporary file of pgdrive has had (the sidecar's temp file was written
    // through a symlink there before), and the probe's
    let plant = format!(
        "for n in \".$name.partial\" \".$name.pgdrive.json.tmp\" \".$name.pgdrive.json.partial\"; do ln -s '{v}' \"$dir/$n\"; done",
        v = v.display()
    );
    for pid in 1..5 {
        std::os::unix::fs::symlink(&v, dir.path().join(format!(".pgdrive-probe-{pid}"))).unwrap();
    }
    let r = run(local(&db, &dir)
        .env("PGDRIVE_PG_DUMP", planting_pg_dump(&bin, &dir, &plant))
        .args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 0, "planted decoys are not in the way: {r:?}");
    assert_eq!(std::fs::read_to_string(&v).unwrap(), "precious");
    let all = entries(dir.path());
    let backups: Vec<&String> = all.iter().filter(|n| n.ends_with(".sql.gz")).collect();
    assert_eq!(backups.len(), 1, "{all:?}");
    assert!(
        all.contains(&format!("{}.pgdrive.json", backups[0])),
        "{all:?}"
    );
    // besides the backup, its sidecar and the decoys: nothing (no temp file stays)
    assert_eq!(all.len(), 2 + 3 + 4, "{all:?}");
    let r = run(pgdrive()
        .args(["verify", "latest", "--from"])
        .arg(dir.path()));
    assert_eq!(r.status, 0, "{r:?}");
}

#[test]
fn nothing_at_a_final_name_is_replaced_or_written_through() {
    let db = TestDb::new("lt_final");
    seed_shop(&db);
    let (dir, bin, outside) = (
        TempDir::new("lt_final"),
        TempDir::new("lt_final_bin"),
        TempDir::new("lt_final_out"),
    );
    let v = victim(&outside);
    let cases = [
        // (what is planted during the dump, the name it takes)
        (format!("ln -s '{}' \"$dir/$name\"", v.display()), ""),
        (
            format!("ln -s '{}' \"$dir/$name.pgdrive.json\"", v.display()),
            ".pgdrive.json",
        ),
        ("echo 'someone else' > \"$dir/$name\"".to_string(), ""),
        (
            format!(
                "ln -s '{}' \"$dir/$name\"; rm '{}'",
                v.display(),
                v.display()
            ),
            "",
        ),
    ];
    for (plant, suffix) in &cases {
        std::fs::write(&v, "precious").unwrap();
        let r = run(local(&db, &dir)
            .env("PGDRIVE_PG_DUMP", planting_pg_dump(&bin, &dir, plant))
            .args(["backup", "--kind", "daily"]));
        assert_eq!(r.status, 1, "{plant}: {r:?}");
        assert!(
            r.stderr.contains("refusing to replace it"),
            "{plant}: one clear line: {r:?}"
        );
        let all = entries(dir.path());
        assert_eq!(
            all.len(),
            1,
            "{plant}: only the planted entry stays: {all:?}"
        );
        assert!(all[0].ends_with(&format!(".sql.gz{suffix}")), "{all:?}");
        let planted = dir.path().join(&all[0]);
        if plant.starts_with("echo") {
            assert_eq!(std::fs::read_to_string(&planted).unwrap(), "someone else\n");
        } else {
            assert!(planted.symlink_metadata().unwrap().is_symlink());
            if plant.contains("rm ") {
                assert!(
                    !v.exists(),
                    "a dangling symlink is not followed to create its target"
                );
            } else {
                assert_eq!(std::fs::read_to_string(&v).unwrap(), "precious");
            }
        }
        std::fs::remove_file(&planted).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100)); // a new second-resolution name
    }
}

/// A small tmpfs mounted for one test (needs root; `None` where mounting is not allowed).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(prefix: &str, bytes: u64) -> Option<Tmpfs> {
        let p = std::env::temp_dir().join(unique(prefix));
        std::fs::create_dir_all(&p).unwrap();
        let ok = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={bytes},mode=0700"),
                "tmpfs",
            ])
            .arg(&p)
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            let _ = std::fs::remove_dir(&p);
            return None;
        }
        Some(Tmpfs(p))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn a_full_disk_leaves_no_empty_or_partial_files() {
    let db = TestDb::new("lt_full");
    // the catalog elsewhere, so that every run dumps the same bytes
    let catalog = TestDb::new("lt_full_catalog");
    db.exec("CREATE TABLE noise AS SELECT g, md5(g::text || random()::text) AS h FROM generate_series(1, 40000) g");
    // the backup's size, from a run into an ordinary directory
    let roomy = TempDir::new("lt_full_roomy");
    let r = run(local(&db, &roomy)
        .env("PGDRIVE_CATALOG_URL", catalog.url())
        .args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 0, "{r:?}");
    let size = entries(roomy.path())
        .iter()
        .find(|n| n.ends_with(".sql.gz"))
        .map(|n| std::fs::metadata(roomy.path().join(n)).unwrap().len())
        .unwrap();
    assert!(
        size > 256 << 10,
        "the dump must not fit the small disk: {size}"
    );
    // a disk too small for the dump, then one that holds the dump but not its sidecar
    let page = 4096;
    for (bytes, why) in [
        (128 << 10, "the dump"),
        (size.div_ceil(page) * page, "the sidecar"),
    ] {
        let Some(disk) = Tmpfs::mount("lt_full_disk", bytes) else {
            eprintln!("skipped: cannot mount a tmpfs here (needs root)");
            return;
        };
        let r = run(local(&db, &roomy)
            .env("PGDRIVE_CATALOG_URL", catalog.url())
            .env("PGDRIVE_LOCAL_DIR", &disk.0)
            .args(["backup", "--kind", "daily"]));
        assert_eq!(r.status, 1, "{why}: {r:?}");
        assert!(r.stderr.contains("No space left on device"), "{why}: {r:?}");
        if why == "the sidecar" {
            assert!(
                r.stderr.contains(".pgdrive.json"),
                "the sidecar's write failed: {r:?}"
            );
        }
        let left = entries(&disk.0);
        assert!(left.is_empty(), "{why}: left behind: {left:?}");
    }
}
