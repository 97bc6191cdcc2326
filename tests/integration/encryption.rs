//! Client-side encryption with age: round trips with each kind of recipient, interoperability
//! with the standard `age` tool both ways, no plaintext on any target, and the failures (wrong
//! identity, damaged ciphertext, SIGTERM) leaving nothing restored or stored.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;

/// Strings of `seed_shop` that must never appear in stored bytes or manifests: table names and
/// row values.
pub(crate) const KNOWN_PLAINTEXT: &[&str] = &[
    "audit_log",
    "customers",
    "customer 17",
    "c42@example.com",
    "event 1999",
];

/// An age key pair made by `age-keygen`: (identity file, public recipient).
fn age_key(dir: &Path, name: &str) -> Option<(PathBuf, String)> {
    let keygen = installed_tool("age-keygen", "apt-get install age")?;
    let path = dir.join(name);
    let out = Command::new(keygen).arg("-o").arg(&path).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = std::fs::read_to_string(&path).unwrap();
    let public = text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .unwrap()
        .to_string();
    Some((path, public))
}

/// An ed25519 SSH key pair made by `ssh-keygen`: (private key file, public key line).
fn ssh_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "test@pgdrive", "-f"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    (path, public.trim().to_string())
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Asserts that none of the known table names or row values is in `bytes`.
pub(crate) fn no_plaintext(what: &str, bytes: &[u8]) {
    for s in KNOWN_PLAINTEXT {
        assert!(!contains(bytes, s), "{what} holds the plaintext {s:?}");
    }
}

fn restore(dir: &Path, into: &TestDb, extra: &[&str]) -> Run {
    run(pgdrive()
        .args(["restore", "latest", "--from"])
        .arg(dir)
        .args(["--target-url", &into.url()])
        .args(extra))
}

fn sidecar(backup: &Path) -> PathBuf {
    let name = backup.file_name().unwrap().to_string_lossy().to_string();
    backup.with_file_name(format!("{name}.pgdrive.json"))
}

#[test]
fn x25519_backup_to_drive_and_local_stores_no_plaintext_and_restores_with_the_identity() {
    let keys = TempDir::new("enc_keys");
    let Some((identity, public)) = age_key(keys.path(), "key.txt") else {
        return;
    };
    let g = Google::shared_drive();
    let db = TestDb::new("enc_x25519");
    seed_shop(&db);
    let dir = TempDir::new("enc_x25519_dir");
    let r = run(g
        .pgdrive(&db)
        .env("PGDRIVE_ENCRYPT_RECIPIENTS", &public)
        .env("PGDRIVE_LOCAL_DIR", dir.path())
        .args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 0, "{r:?}");
    no_plaintext("the log", r.stderr.as_bytes());

    // locally: the name gains .age, and neither the file nor its sidecar holds plaintext
    let files = backup_files(dir.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().to_string();
    assert!(name.ends_with(".sql.gz.age"), "{name}");
    let stored = std::fs::read(&files[0]).unwrap();
    assert!(stored.starts_with(b"age-encryption.org/v1\n"));
    no_plaintext("the local backup", &stored);
    let manifest_bytes = std::fs::read(sidecar(&files[0])).unwrap();
    no_plaintext("the local manifest", &manifest_bytes);
    let manifest: Value = serde_json::from_slice(&manifest_bytes).unwrap();
    let fingerprint = pgdrive::encrypt::fingerprint(&public);
    assert_eq!(manifest["encryption"]["scheme"], "age");
    assert_eq!(manifest["encryption"]["recipients"], json!([fingerprint]));
    assert_eq!(manifest["row_counts"], Value::Null);
    assert!(manifest["encryption"]["row_counts_age"].is_string());
    assert_eq!(
        manifest["encryption"]["plaintext_sha256"]
            .as_str()
            .unwrap()
            .len(),
        64
    );
    // the stored-bytes checksum is the ciphertext's
    assert_eq!(manifest["size"], stored.len());
    assert!(!String::from_utf8_lossy(&manifest_bytes).contains("AGE-SECRET-KEY"));

    // on Drive: the same, and Drive's MD5 is the ciphertext's
    let backups = g.emu.backups_in(&g.folder);
    assert_eq!(backups.len(), 1, "{backups:#?}");
    assert!(backups[0]["name"].as_str().unwrap().ends_with(".age"));
    let id = backups[0]["id"].as_str().unwrap();
    let drive_bytes = g.emu.content(id);
    no_plaintext("the Drive backup", &drive_bytes);
    no_plaintext("the Drive properties", backups[0].to_string().as_bytes());
    for m in g.emu.manifests_in(&g.folder) {
        no_plaintext("the Drive manifest", m.to_string().as_bytes());
        let content = g.emu.content(m["id"].as_str().unwrap());
        no_plaintext("the Drive manifest", &content);
    }

    // restore from either target with the identity
    let into = TestDb::new("enc_x25519_into");
    let r = restore(
        dir.path(),
        &into,
        &["--identity", identity.to_str().unwrap()],
    );
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(into.query_i64("SELECT count(*) FROM orders"), 5000);
    let from_drive = TestDb::new("enc_x25519_drive_into");
    let r = run(g
        .pgdrive(&db)
        .env("PGDRIVE_IDENTITY_FILE", &identity)
        .args(["restore", "latest", "--target-url", &from_drive.url()]));
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(from_drive.query_i64("SELECT count(*) FROM customers"), 500);

    // verify: without an identity it says what it could not check; with one it checks it all
    let r = run(pgdrive()
        .args(["verify", "latest", "--from"])
        .arg(dir.path()));
    assert_eq!(r.status, 0, "{r:?}");
    assert!(
        r.stdout.contains("NOT checked") || r.stderr.contains("NOT checked"),
        "{r:?}"
    );
    let r = run(pgdrive()
        .args(["verify", "latest", "--from"])
        .arg(dir.path())
        .arg("--identity")
        .arg(&identity));
    assert_eq!(r.status, 0, "{r:?}");
    assert!(
        !(r.stdout.contains("NOT checked") || r.stderr.contains("NOT checked")),
        "{r:?}"
    );
}

#[test]
fn ssh_and_age_recipients_together_either_identity_restores() {
    let keys = TempDir::new("enc_two_keys");
    let Some((age_identity, age_public)) = age_key(keys.path(), "key.txt") else {
        return;
    };
    let (ssh_private, ssh_public) = ssh_key(keys.path(), "id_ed25519");
    let recipients = keys.path().join("recipients.txt");
    std::fs::write(
        &recipients,
        format!("# the offline keys\n{age_public}\n\n{ssh_public}\n"),
    )
    .unwrap();
    let db = TestDb::new("enc_two");
    seed_shop(&db);
    let dir = TempDir::new("enc_two_dir");
    let backup = local_backup(
        &db,
        dir.path(),
        &[
            (
                "PGDRIVE_ENCRYPT_RECIPIENTS_FILE",
                recipients.to_str().unwrap(),
            ),
            ("PGDRIVE_FORMAT", "custom"),
            ("PGDRIVE_COMPRESS", "zstd:3"),
        ],
    );
    assert!(
        backup.to_string_lossy().ends_with(".dump.zst.age"),
        "{backup:?}"
    );
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(sidecar(&backup)).unwrap()).unwrap();
    let canonical_ssh: Vec<&str> = ssh_public.split_whitespace().take(2).collect();
    assert_eq!(
        manifest["encryption"]["recipients"],
        json!([
            pgdrive::encrypt::fingerprint(&age_public),
            pgdrive::encrypt::fingerprint(&canonical_ssh.join(" "))
        ])
    );
    for (n, identity) in [&age_identity, &ssh_private].iter().enumerate() {
        let into = TestDb::new(&format!("enc_two_into{n}"));
        let r = restore(
            dir.path(),
            &into,
            &["--identity", identity.to_str().unwrap()],
        );
        assert_eq!(r.status, 0, "{identity:?}: {r:?}");
        assert_eq!(into.query_i64("SELECT count(*) FROM audit_log"), 2000);
    }
}

#[test]
fn a_passphrase_backup_restores_with_the_passphrase_file() {
    let keys = TempDir::new("enc_pass");
    let pass = keys.path().join("passphrase");
    std::fs::write(&pass, "a long and private passphrase\n").unwrap();
    let db = TestDb::new("enc_pass");
    seed_shop(&db);
    let dir = TempDir::new("enc_pass_dir");
    let settings = [("PGDRIVE_ENCRYPT_PASSPHRASE_FILE", pass.to_str().unwrap())];
    let backup = local_backup(&db, dir.path(), &settings);
    no_plaintext("the backup", &std::fs::read(&backup).unwrap());
    let manifest = std::fs::read_to_string(sidecar(&backup)).unwrap();
    assert!(!manifest.contains("private passphrase"));
    let into = TestDb::new("enc_pass_into");
    let r = run(pgdrive()
        .envs(settings)
        .args(["restore", "latest", "--from"])
        .arg(dir.path())
        .args(["--target-url", &into.url()]));
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(into.query_i64("SELECT count(*) FROM orders"), 5000);
}

#[test]
fn the_age_tool_decrypts_pgdrive_backups_and_pgdrive_reads_what_age_encrypted() {
    let keys = TempDir::new("enc_interop");
    let Some((identity, public)) = age_key(keys.path(), "key.txt") else {
        return;
    };
    let age = installed_tool("age", "apt-get install age").unwrap();
    let db = TestDb::new("enc_interop");
    seed_shop(&db);
    let dir = TempDir::new("enc_interop_dir");

    // plain dump: age -d | gunzip | psql
    let backup = local_backup(&db, dir.path(), &[("PGDRIVE_ENCRYPT_RECIPIENTS", &public)]);
    let out = Command::new(&age)
        .arg("-d")
        .arg("-i")
        .arg(&identity)
        .arg(&backup)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // the control: the decrypted dump does hold the strings the other tests look for
    let dump = gunzip(&out.stdout);
    assert!(KNOWN_PLAINTEXT.iter().all(|s| dump.contains(s)), "control");
    let into = TestDb::new("enc_interop_psql");
    restore_gz(&out.stdout, &into.url());
    assert_eq!(into.query_i64("SELECT count(*) FROM orders"), 5000);

    // pgdrive reads a backup whose stored bytes age (not pgdrive) encrypted: the same
    // compressed plaintext, re-encrypted by `age -r`, with the stored-bytes checksums updated
    let reencrypted = dir.path().join("reencrypted");
    let mut child = Command::new(&age)
        .args(["-r", &public, "-o"])
        .arg(&reencrypted)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&out.stdout).unwrap();
    assert!(child.wait().unwrap().success());
    let bytes = std::fs::read(&reencrypted).unwrap();
    std::fs::rename(&reencrypted, &backup).unwrap();
    rewrite_checksums(&backup, &bytes);
    let into = TestDb::new("enc_interop_back");
    let r = restore(
        dir.path(),
        &into,
        &["--identity", identity.to_str().unwrap()],
    );
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(into.query_i64("SELECT count(*) FROM customers"), 500);

    // custom archive: age -d | gunzip > file; pg_restore
    let dir2 = TempDir::new("enc_interop_custom");
    let backup = local_backup(
        &db,
        dir2.path(),
        &[
            ("PGDRIVE_ENCRYPT_RECIPIENTS", &public),
            ("PGDRIVE_FORMAT", "custom"),
        ],
    );
    let out = Command::new(&age)
        .arg("-d")
        .arg("-i")
        .arg(&identity)
        .arg(&backup)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut archive = Vec::new();
    use std::io::Read;
    flate2::read::MultiGzDecoder::new(&out.stdout[..])
        .read_to_end(&mut archive)
        .unwrap();
    let file = dir2.path().join("archive.dump");
    std::fs::write(&file, archive).unwrap();
    let into = TestDb::new("enc_interop_pg_restore");
    let st = Command::new("pg_restore")
        .args(["-d", &into.url()])
        .arg(&file)
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(into.query_i64("SELECT count(*) FROM audit_log"), 2000);
}

/// Records `bytes` as the stored bytes of `backup` in its sidecar (size, SHA-256, MD5), as if
/// they had been stored that way.
fn rewrite_checksums(backup: &Path, bytes: &[u8]) {
    use md5::Digest as _;
    let sha = pgdrive::storage::hex(&sha2::Sha256::digest(bytes));
    let md5 = pgdrive::storage::hex(&md5::Md5::digest(bytes));
    let path = sidecar(backup);
    let mut m: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    m["size"] = json!(bytes.len());
    m["sha256"] = json!(sha);
    m["md5"] = json!(md5);
    m["properties"]["pgdrive_size"] = json!(bytes.len().to_string());
    m["properties"]["pgdrive_sha256"] = json!(sha);
    m["properties"]["pgdrive_md5"] = json!(md5);
    std::fs::write(&path, m.to_string()).unwrap();
}

#[test]
fn a_wrong_identity_exits_78_naming_the_recipients_and_restores_nothing() {
    let keys = TempDir::new("enc_wrong");
    let Some((_, public)) = age_key(keys.path(), "right.txt") else {
        return;
    };
    let (wrong, _) = age_key(keys.path(), "wrong.txt").unwrap();
    let db = TestDb::new("enc_wrong");
    seed_shop(&db);
    let dir = TempDir::new("enc_wrong_dir");
    local_backup(&db, dir.path(), &[("PGDRIVE_ENCRYPT_RECIPIENTS", &public)]);
    let fingerprint = pgdrive::encrypt::fingerprint(&public);

    // --create: the database must not even be created
    let name = unique("enc_wrong_created");
    let url = admin_url(&name);
    let r = run(pgdrive()
        .args(["restore", "latest", "--create", "--from"])
        .arg(dir.path())
        .args(["--target-url", &url, "--identity"])
        .arg(&wrong));
    assert_eq!(r.status, 78, "{r:?}");
    assert!(r.stderr.contains(&fingerprint), "{r:?}");
    let exists = admin()
        .query("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .unwrap();
    assert!(exists.is_empty(), "the database was created");

    // into an existing database: nothing restored; no identity at all is 78 too
    let into = TestDb::new("enc_wrong_into");
    for extra in [vec!["--identity", wrong.to_str().unwrap()], vec![]] {
        let r = restore(dir.path(), &into, &extra);
        assert_eq!(r.status, 78, "{extra:?}: {r:?}");
        assert!(r.stderr.contains(&fingerprint), "{r:?}");
        assert_eq!(
            into.query_i64("SELECT count(*) FROM pg_class WHERE relname = 'orders'"),
            0
        );
    }
}

#[test]
fn database_settings_are_sealed_in_an_encrypted_manifest_and_come_back_with_create() {
    let keys = TempDir::new("enc_props");
    let (identity, public) = in_process_key(keys.path(), "key.txt");
    let (wrong, _) = in_process_key(keys.path(), "wrong.txt");
    let db = TestDb::new("enc_props");
    seed_shop(&db);
    // the pattern of hosted PostgreSQL platforms: a secret in a database-level setting
    let secret = unique("jwt-secret-value");
    db.exec(&format!(
        "ALTER DATABASE \"{}\" SET app.jwt_secret = '{secret}'",
        db.name
    ));
    let dir = TempDir::new("enc_props_dir");
    local_backup(&db, dir.path(), &[("PGDRIVE_ENCRYPT_RECIPIENTS", &public)]);
    no_plaintext_under(dir.path(), &[&secret]);

    let name = unique("enc_props_created");
    let restore = |identity: &Path| {
        run(pgdrive()
            .args(["restore", "latest", "--create", "--from"])
            .arg(dir.path())
            .args(["--target-url", &admin_url(&name), "--identity"])
            .arg(identity))
    };
    let r = restore(&wrong);
    assert_eq!(r.status, 78, "{r:?}");
    let r = restore(&identity);
    assert_eq!(r.status, 0, "{r:?}");
    assert!(!r.stderr.contains(&secret), "{r:?}");
    let settings: Vec<String> = admin()
        .query_one(
            "SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase
              WHERE d.datname = $1 AND s.setrole = 0",
            &[&name],
        )
        .unwrap()
        .get(0);
    admin()
        .batch_execute(&format!("DROP DATABASE \"{name}\""))
        .unwrap();
    assert_eq!(settings, vec![format!("app.jwt_secret={secret}")]);
}

#[test]
fn a_flipped_ciphertext_byte_is_65_and_nothing_commits() {
    let keys = TempDir::new("enc_flip");
    let Some((identity, public)) = age_key(keys.path(), "key.txt") else {
        return;
    };
    let db = TestDb::new("enc_flip");
    bulky(&db);
    let dir = TempDir::new("enc_flip_dir");
    let backup = local_backup(&db, dir.path(), &[("PGDRIVE_ENCRYPT_RECIPIENTS", &public)]);
    let original = std::fs::read(&backup).unwrap();
    assert!(
        original.len() > 300 << 10,
        "several age chunks: {}",
        original.len()
    );
    // in the middle, then near the end (inside the held-back tail); and once with the recorded
    // checksums rewritten to match, so that only age's authentication can catch it
    for (at, rewrite) in [
        (original.len() / 2, false),
        (original.len() - 100, false),
        (original.len() / 3, true),
    ] {
        let mut bad = original.clone();
        bad[at] ^= 0x01;
        std::fs::write(&backup, &bad).unwrap();
        if rewrite {
            rewrite_checksums(&backup, &bad);
        }
        let into = TestDb::new("enc_flip_into");
        let r = restore(
            dir.path(),
            &into,
            &["--identity", identity.to_str().unwrap()],
        );
        assert_eq!(r.status, 65, "byte {at}, rewritten {rewrite}: {r:?}");
        assert_eq!(
            into.query_i64("SELECT count(*) FROM pg_class WHERE relname IN ('orders', 'blobs')"),
            0,
            "byte {at}: something committed"
        );
        let r = run(pgdrive()
            .args(["verify", "latest", "--from"])
            .arg(dir.path())
            .arg("--identity")
            .arg(&identity));
        assert_eq!(r.status, 65, "verify, byte {at}: {r:?}");
    }
}

#[test]
fn sigterm_mid_stream_of_an_encrypted_backup_leaves_nothing() {
    let keys = TempDir::new("enc_term");
    let Some((_, public)) = age_key(keys.path(), "key.txt") else {
        return;
    };
    let g = Google::shared_drive();
    let db = TestDb::new("enc_term");
    bulky(&db);
    let dir = TempDir::new("enc_term_dir");
    g.emu.fault(
        json!([{"op": "upload_chunk", "nth": 1, "times": 1000, "action": {"delay_ms": 300}}]),
    );
    let child = g
        .pgdrive(&db)
        .env("PGDRIVE_ENCRYPT_RECIPIENTS", &public)
        .env("PGDRIVE_LOCAL_DIR", dir.path())
        .env("PGDRIVE_CHUNK_SIZE", "256KiB")
        .args(["backup", "--kind", "daily"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        g.emu
            .wait_for_request(|r| r["op"] == "upload_chunk", Duration::from_secs(20)),
        "no upload started"
    );
    // SAFETY: signals the child we spawned and have not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(g.emu.files_in(&g.folder).is_empty());
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn a_bad_recipient_is_78_before_anything_is_dumped_and_is_not_quoted() {
    let db = TestDb::new("enc_bad");
    let dir = TempDir::new("enc_bad_dir");
    for bad in ["age1qqqqnotakey", "AGE-SECRET-KEY-1SECRETSECRETSECRET"] {
        let r = run(pgdrive()
            .env("DATABASE_URL", db.url())
            .env("PGDRIVE_ENCRYPT_RECIPIENTS", bad)
            .args(["backup", "--kind", "daily", "--to"])
            .arg(dir.path()));
        assert_eq!(r.status, 78, "{r:?}");
        assert!(!r.stderr.contains(bad), "{r:?}");
        assert!(backup_files(dir.path()).is_empty());
    }
}

#[test]
fn keygen_writes_a_private_identity_once_and_check_judges_encryption() {
    let dir = TempDir::new("enc_keygen");
    let key = dir.path().join("offline.key");
    let r = run(pgdrive().arg("keygen").arg("-o").arg(&key));
    assert_eq!(r.status, 0, "{r:?}");
    let public = r.stdout.trim().to_string();
    assert!(public.starts_with("age1"), "{r:?}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let text = std::fs::read_to_string(&key).unwrap();
    assert!(!r.stdout.contains("AGE-SECRET-KEY") && text.contains("AGE-SECRET-KEY-1"));
    // never overwritten
    let again = run(pgdrive().arg("keygen").arg("-o").arg(&key));
    assert_eq!(again.status, 78, "{again:?}");
    assert_eq!(std::fs::read_to_string(&key).unwrap(), text);

    // check: unencrypted to Drive warns; encrypted is ok and names the fingerprint; a bad
    // recipient fails
    let g = Google::shared_drive();
    let db = TestDb::new("enc_check");
    let r = run(g.pgdrive(&db).arg("check"));
    assert!(
        r.stdout.lines().any(|l| l.starts_with("warn")
            && l.contains("encrypt daily")
            && l.contains("unencrypted")),
        "{r:?}"
    );
    let r = run(g
        .pgdrive(&db)
        .env("PGDRIVE_ENCRYPT_RECIPIENTS", &public)
        .arg("check"));
    assert!(
        r.stdout.lines().any(|l| l.starts_with("ok")
            && l.contains("encrypt daily")
            && l.contains(&pgdrive::encrypt::fingerprint(&public))),
        "{r:?}"
    );
    let r = run(g
        .pgdrive(&db)
        .env("PGDRIVE_ENCRYPT_RECIPIENTS", "age1broken")
        .arg("check"));
    assert_eq!(r.status, 1, "{r:?}");
    assert!(
        !r.stdout.contains("age1broken") && !r.stderr.contains("age1broken"),
        "{r:?}"
    );

    // and the identity it wrote decrypts
    let backups = TempDir::new("enc_keygen_backups");
    seed_shop(&db);
    local_backup(
        &db,
        backups.path(),
        &[("PGDRIVE_ENCRYPT_RECIPIENTS", &public)],
    );
    let into = TestDb::new("enc_keygen_into");
    let r = restore(
        backups.path(),
        &into,
        &["--identity", key.to_str().unwrap()],
    );
    assert_eq!(r.status, 0, "{r:?}");
}

/// Asserts that no file under `dir` (recursively: data, manifests, sidecars, a server's own
/// metadata files) holds a known table name or row value, nor any of `also`.
pub(crate) fn no_plaintext_under(dir: &Path, also: &[&str]) {
    let mut seen = 0;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                todo.push(path);
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            let what = path.display().to_string();
            no_plaintext(&what, &bytes);
            for s in also {
                assert!(!contains(&bytes, s), "{what} holds the plaintext {s:?}");
            }
            seen += 1;
        }
    }
    assert!(seen >= 2, "nothing stored under {dir:?}");
}

/// An identity made in process (`pgdrive::encrypt::keygen`, as `pgdrive keygen` writes it):
/// (identity file, public recipient).
pub(crate) fn in_process_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let (text, public) = pgdrive::encrypt::keygen();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    (path, public)
}

/// The row counts sealed in a manifest, opened with `identity`.
fn unseal_counts(manifest: &Value, identity: &Path) -> std::collections::BTreeMap<String, u64> {
    use base64::Engine as _;
    use std::io::Read as _;
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(manifest["encryption"]["row_counts_age"].as_str().unwrap())
        .unwrap();
    let ids = pgdrive::encrypt::Identities::load(identity).unwrap();
    let mut json = Vec::new();
    match pgdrive::encrypt::decrypt(&sealed[..], &ids) {
        Ok(mut r) => r.read_to_end(&mut json).unwrap(),
        Err(_) => panic!("the sealed row counts do not open with {identity:?}"),
    };
    serde_json::from_slice(&json).unwrap()
}

#[test]
fn sealed_row_counts_that_disagree_with_the_data_fail_the_restore_with_65_and_nothing_commits() {
    let keys = TempDir::new("enc_counts_keys");
    let (identity, public) = in_process_key(keys.path(), "key.txt");
    let db = TestDb::new("enc_counts");
    seed_shop(&db);
    for format in ["plain", "custom"] {
        let dir = TempDir::new(&format!("enc_counts_{format}"));
        let backup = local_backup(
            &db,
            dir.path(),
            &[
                ("PGDRIVE_ENCRYPT_RECIPIENTS", &public),
                ("PGDRIVE_FORMAT", format),
            ],
        );
        let path = sidecar(&backup);
        let original = std::fs::read_to_string(&path).unwrap();
        let manifest: Value = serde_json::from_str(&original).unwrap();
        let mut counts = unseal_counts(&manifest, &identity);
        assert_eq!(counts.get("public.orders"), Some(&5000), "{counts:?}");

        // counts sealed to the same recipient, one of them wrong: only the comparison with
        // the data can catch it (the ciphertext and its checksums are untouched)
        counts.insert("public.orders".into(), 4999);
        let enc = pgdrive::encrypt::Encryption::from_spec(&pgdrive::encrypt::EncryptSpec {
            recipients: vec![public.clone()],
            ..Default::default()
        })
        .unwrap()
        .unwrap();
        let mut forged = manifest.clone();
        forged["encryption"]["row_counts_age"] = json!(enc
            .seal_to_base64(&serde_json::to_vec(&counts).unwrap())
            .unwrap());
        std::fs::write(&path, forged.to_string()).unwrap();

        let into = TestDb::new("enc_counts_into");
        let r = restore(
            dir.path(),
            &into,
            &["--identity", identity.to_str().unwrap()],
        );
        assert_eq!(r.status, 65, "{format}: {r:?}");
        assert!(
            r.stderr
                .contains("public.orders: recorded 4999, found 5000"),
            "{format}: {r:?}"
        );
        assert_eq!(
            into.query_i64(
                "SELECT count(*) FROM pg_class WHERE relname IN ('orders', 'customers')"
            ),
            0,
            "{format}: something committed"
        );
        // --create: the half-made database is dropped again
        let name = unique("enc_counts_created");
        let r = run(pgdrive()
            .args(["restore", "latest", "--create", "--from"])
            .arg(dir.path())
            .args(["--target-url", &admin_url(&name), "--identity"])
            .arg(&identity));
        assert_eq!(r.status, 65, "{format}: {r:?}");
        let exists = admin()
            .query("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
            .unwrap();
        assert!(exists.is_empty(), "{format}: the database was left behind");
        let r = run(pgdrive()
            .args(["verify", "latest", "--from"])
            .arg(dir.path())
            .arg("--identity")
            .arg(&identity));
        assert_eq!(r.status, 65, "verify, {format}: {r:?}");

        // the manifest as stored: the counts agree and the restore passes
        std::fs::write(&path, &original).unwrap();
        let r = restore(
            dir.path(),
            &into,
            &["--identity", identity.to_str().unwrap()],
        );
        assert_eq!(r.status, 0, "{format}: {r:?}");
        assert_eq!(into.query_i64("SELECT count(*) FROM orders"), 5000);
    }
}

#[test]
fn eight_recipients_outgrow_drives_property_limit_yet_every_message_names_all_of_them() {
    let keys = TempDir::new("enc_eight");
    let pairs: Vec<(PathBuf, String)> = (1..=8)
        .map(|n| in_process_key(keys.path(), &format!("key{n}.txt")))
        .collect();
    let recipients = keys.path().join("recipients.txt");
    let lines: Vec<&str> = pairs.iter().map(|(_, p)| p.as_str()).collect();
    std::fs::write(&recipients, lines.join("\n")).unwrap();
    let fingerprints: Vec<String> = lines
        .iter()
        .map(|p| pgdrive::encrypt::fingerprint(p))
        .collect();
    let (wrong, _) = in_process_key(keys.path(), "wrong.txt");

    let g = Google::shared_drive();
    let db = TestDb::new("enc_eight");
    seed_shop(&db);
    let r = run(g
        .pgdrive(&db)
        .env("PGDRIVE_ENCRYPT_RECIPIENTS_FILE", &recipients)
        .args(["backup", "--kind", "daily"]));
    assert_eq!(r.status, 0, "{r:?}");
    let backups = g.emu.backups_in(&g.folder);
    assert_eq!(backups.len(), 1, "{backups:#?}");
    // the premise: Drive's properties (124 bytes each) cannot hold the whole list
    assert!(
        !backups[0].to_string().contains(fingerprints[7].as_str()),
        "the properties hold all eight: {}",
        backups[0]
    );
    // the manifest holds every one
    let manifests = g.emu.manifests_in(&g.folder);
    assert_eq!(manifests.len(), 1, "{manifests:#?}");
    let manifest: Value =
        serde_json::from_slice(&g.emu.content(manifests[0]["id"].as_str().unwrap())).unwrap();
    assert_eq!(manifest["encryption"]["recipients"], json!(fingerprints));

    // a wrong identity: 78, naming all eight, nothing restored; verify says the same
    let into = TestDb::new("enc_eight_into");
    let r = run(g.pgdrive(&db).env("PGDRIVE_IDENTITY_FILE", &wrong).args([
        "restore",
        "latest",
        "--target-url",
        &into.url(),
    ]));
    assert_eq!(r.status, 78, "{r:?}");
    for f in &fingerprints {
        assert!(r.stderr.contains(f.as_str()), "{f} not named: {r:?}");
    }
    assert_eq!(
        into.query_i64("SELECT count(*) FROM pg_class WHERE relname = 'orders'"),
        0
    );
    let r = run(g
        .pgdrive(&db)
        .env("PGDRIVE_IDENTITY_FILE", &wrong)
        .args(["verify", "latest"]));
    assert_eq!(r.status, 78, "{r:?}");
    for f in &fingerprints {
        let said = format!("{}{}", r.stdout, r.stderr);
        assert!(said.contains(f.as_str()), "verify: {f} not named: {r:?}");
    }

    // the eighth recipient's identity restores
    let r = run(g
        .pgdrive(&db)
        .env("PGDRIVE_IDENTITY_FILE", &pairs[7].0)
        .args(["restore", "latest", "--target-url", &into.url()]));
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(into.query_i64("SELECT count(*) FROM orders"), 5000);
}

/// An encrypted backup through a remote target, end to end: `pgdrive(db)` is the command
/// configured for the target (a job named `nightly`), `stored` the directory where the server
/// keeps every byte it was given, `restore_args` what restore needs to pick the target. With an
/// X25519 recipient: no table name, row value or role name in any stored byte, manifest or
/// sidecar; a restore with the identity gives an identical database; a wrong identity is 78,
/// names the recipient, and restores nothing.
pub(crate) fn remote_round_trip(
    name: &str,
    pgdrive: &dyn Fn(&TestDb) -> Command,
    stored: &Path,
    restore_args: &[&str],
) {
    let keys = TempDir::new(&format!("{name}_keys"));
    let (identity, public) = in_process_key(keys.path(), "key.txt");
    let (wrong, _) = in_process_key(keys.path(), "wrong.txt");
    let db = TestDb::new(name);
    seed_shop(&db);
    // a role of this run: its name must not leak through the globals object or its manifest
    let role = unique("enc_secret_role");
    admin()
        .batch_execute(&format!("CREATE ROLE {role} NOLOGIN"))
        .unwrap();
    let r = run(pgdrive(&db)
        .env("PGDRIVE_ENCRYPT_RECIPIENTS", &public)
        .args(["backup", "--job", "nightly"]));
    admin().batch_execute(&format!("DROP ROLE {role}")).unwrap();
    assert_eq!(r.status, 0, "{r:?}");
    assert!(r.stderr.contains("globals stored"), "{r:?}");
    no_plaintext("the log", r.stderr.as_bytes());
    no_plaintext_under(stored, &[&role]);

    let facts = |d: &TestDb| {
        [
            "SELECT count(*) FROM orders",
            "SELECT sum(id)::bigint FROM orders",
            "SELECT sum(hashtext(name))::bigint FROM customers",
            "SELECT count(*) FROM audit_log",
        ]
        .map(|q| d.query_i64(q))
    };
    let restore = |into: &TestDb, identity: &Path| {
        run(pgdrive(&db)
            .env("PGDRIVE_IDENTITY_FILE", identity)
            .args(["restore", "latest"])
            .args(restore_args)
            .args(["--database", &db.name, "--target-url", &into.url()]))
    };
    let into = TestDb::new(&format!("{name}_into"));
    let r = restore(&into, &wrong);
    assert_eq!(r.status, 78, "{r:?}");
    assert!(
        r.stderr.contains(&pgdrive::encrypt::fingerprint(&public)),
        "{r:?}"
    );
    assert_eq!(
        into.query_i64("SELECT count(*) FROM pg_class WHERE relname IN ('orders', 'customers')"),
        0,
        "a wrong identity restored something"
    );
    let r = restore(&into, &identity);
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(facts(&into), facts(&db));
}
