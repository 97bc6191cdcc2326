//! The test harness: throwaway databases on the machine's PostgreSQL, the Google emulator
//! (tests/emulator/google_emulator.py) as a child process with its control API, service-account
//! keys made with openssl, fake pg_dump wrappers, and a runner for the real pgdrive binary.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub mod sshd;

/// The server the tests use (a superuser connection; trust auth on this machine).
pub fn admin_url(db: &str) -> String {
    let base = std::env::var("PGDRIVE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    format!("{base}/{db}")
}

pub fn admin() -> postgres::Client {
    postgres::Client::connect(&admin_url("postgres"), postgres::NoTls).expect(
        "the tests need PostgreSQL at 127.0.0.1:5432 (user postgres, trust auth) or PGDRIVE_TEST_PG=postgres://user@host:port",
    )
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}_{}_{}_{n}", std::process::id(), nanos % 1_000_000)
}

/// A database created for one test and dropped afterwards.
pub struct TestDb {
    pub name: String,
}

impl TestDb {
    pub fn new(prefix: &str) -> TestDb {
        let name = unique(prefix);
        admin()
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .unwrap();
        TestDb { name }
    }

    pub fn url(&self) -> String {
        admin_url(&self.name)
    }

    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url(), postgres::NoTls).unwrap()
    }

    pub fn exec(&self, sql: &str) {
        self.client()
            .batch_execute(sql)
            .unwrap_or_else(|e| panic!("{e}: {sql}"));
    }

    pub fn query_i64(&self, sql: &str) -> i64 {
        self.client().query_one(sql, &[]).unwrap().get(0)
    }

    /// The catalog's `verify_result` of the backup stored as Drive file `drive_file_id`.
    pub fn verify_result(&self, drive_file_id: &str) -> Option<String> {
        self.client()
            .query_one(
                "SELECT verify_result FROM backups WHERE drive_file_id = $1",
                &[&drive_file_id],
            )
            .unwrap()
            .get(0)
    }

    /// The catalog rows, oldest first: (status, type, filename, error, drive_file_id, pruned).
    pub fn catalog(
        &self,
    ) -> Vec<(
        String,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        bool,
    )> {
        self.client()
            .query(
                "SELECT status, type, filename, error, drive_file_id, pruned_at IS NOT NULL FROM backups ORDER BY id",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
            .collect()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = admin().batch_execute(&format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.name
        ));
    }
}

/// A small database with a few object kinds.
pub fn seed_shop(db: &TestDb) {
    db.exec(
        "CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text UNIQUE);
         CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id int REFERENCES customers, total numeric(10,2), placed_at timestamptz DEFAULT now());
         CREATE TABLE audit_log (id bigserial PRIMARY KEY, message text);
         CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 100;
         INSERT INTO customers (name, email) SELECT 'customer ' || g, 'c' || g || '@example.com' FROM generate_series(1, 500) g;
         INSERT INTO orders (customer_id, total) SELECT 1 + g % 500, (g % 1000) / 3.0 FROM generate_series(1, 5000) g;
         INSERT INTO audit_log (message) SELECT 'event ' || g FROM generate_series(1, 2000) g;",
    );
}

/// A database whose dump compresses to a few hundred KiB at least (several 256 KiB chunks).
pub fn bulky(db: &TestDb) {
    seed_shop(db);
    db.exec("CREATE TABLE blobs (id int PRIMARY KEY, payload text);
             INSERT INTO blobs SELECT g, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) FROM generate_series(1, 40000) g;");
}

/// Runs `psql` with a script against a database URL; panics on failure.
pub fn psql(url: &str, script: &str) -> String {
    let out = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-At",
            "-d",
            url,
            "-c",
            script,
        ])
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Restores a gzip'd plain dump into a database with `gunzip | psql` semantics.
pub fn restore_gz(bytes: &[u8], url: &str) {
    use std::io::{Read, Write};
    let mut sql = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .read_to_end(&mut sql)
        .expect("a valid gzip stream");
    let mut child = Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // psql stops reading at the first error; its stderr says why
    let _ = child.stdin.take().unwrap().write_all(&sql);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "restore failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn gunzip(bytes: &[u8]) -> String {
    use std::io::Read;
    let mut s = String::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .read_to_string(&mut s)
        .expect("a valid gzip stream");
    s
}

/// A scratch directory removed afterwards.
pub mod s3;

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        TempDir::new_in(&std::env::temp_dir(), prefix)
    }

    /// In `parent`: e.g. on the filesystem of a file to be hard-linked into it.
    pub fn new_in(parent: &Path, prefix: &str) -> TempDir {
        let p = parent.join(unique(prefix));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The path of `name` on PATH. When it is not installed the caller skips its check, saying how to
/// install it; on CI (CI=true), where .ci/run installs it, its absence is a failure.
pub fn installed_tool(name: &str, install: &str) -> Option<PathBuf> {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{name} is required on CI ({install})"
        );
        eprintln!("SKIPPED: {name} is not installed ({install})");
    }
    found
}

/// The pgdrive binary, with a clean environment: only what a test sets reaches it.
pub fn pgdrive() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgdrive"));
    for (k, _) in std::env::vars() {
        if k.starts_with("PG")
            || k.starts_with("GOOGLE_")
            || k == "DATABASE_URL"
            || k.starts_with("SENDGRID")
            || k.starts_with("HOURLY_")
            || k.starts_with("SCHEMA_")
        {
            cmd.env_remove(k);
        }
    }
    // fast retries in tests; the policy itself is unit-tested
    cmd.env("PGDRIVE_RETRY_INITIAL_MS", "20")
        .env("PGDRIVE_RETRY_MAX_MS", "200");
    // no host config file (/etc/pgdrive/pgdrive.toml) may leak in; tests pass --config to use one
    cmd.env("PGDRIVE_CONFIG", "/dev/null");
    cmd.stdin(Stdio::null());
    cmd
}

/// `pgdrive backup --kind daily --to DIR` of `db` with the extra `settings`, which must succeed;
/// returns the path of the backup file it stored (not its sidecar).
pub fn local_backup(db: &TestDb, dir: &Path, settings: &[(&str, &str)]) -> PathBuf {
    let before = backup_files(dir);
    let r = run(pgdrive()
        .env("DATABASE_URL", db.url())
        .envs(settings.iter().copied())
        .args(["backup", "--kind", "daily", "--to"])
        .arg(dir));
    assert_eq!(r.status, 0, "{settings:?}: {r:?}");
    let mut new: Vec<PathBuf> = backup_files(dir)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert_eq!(new.len(), 1, "one new backup file: {new:?}");
    new.pop().unwrap()
}

/// The backup files in a local backup directory: not sidecars, not temporary (dot) files.
pub fn backup_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            !name.starts_with('.') && !name.ends_with(".pgdrive.json")
        })
        .collect()
}

pub struct Run {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(cmd: &mut Command) -> Run {
    let out: Output = cmd.output().expect("running pgdrive");
    Run {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stderr ---\n{}\n--- stdout ---\n{}",
            self.status, self.stderr, self.stdout
        )
    }
}

/// Writes an executable script.
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/bash\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// A pg_dump stand-in that answers --version like the real one and otherwise runs `body`.
pub fn fake_pg_dump(dir: &TempDir, body: &str) -> PathBuf {
    script(
        dir.path(),
        "pg_dump",
        &format!(
            "if [ \"$1\" = --version ]; then exec {} --version; fi\n{body}",
            real_pg_dump()
        ),
    )
}

/// The real pg_dump for the local server's version.
pub fn real_pg_dump() -> String {
    for p in ["/usr/lib/postgresql/15/bin/pg_dump", "/usr/bin/pg_dump"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    "pg_dump".into()
}

// ---------------------------------------------------------------- the Google emulator

pub struct Emulator {
    child: Child,
    pub base: String,
    agent: ureq::Agent,
}

impl Emulator {
    pub fn start() -> Emulator {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/emulator/google_emulator.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .args(["--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 must be installed to run the Google emulator");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let base = line
            .trim()
            .strip_prefix("LISTENING ")
            .unwrap_or_else(|| panic!("emulator said {line:?}"))
            .to_string();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent();
        Emulator { child, base, agent }
    }

    pub fn token_uri(&self) -> String {
        format!("{}token", self.base)
    }

    pub fn post(&self, path: &str, body: Value) -> Value {
        let mut r = self
            .agent
            .post(&format!("{}__emulator/{path}", self.base))
            .header("Content-Type", "application/json")
            .send(body.to_string().as_bytes())
            .unwrap();
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap();
        assert!(status < 300, "emulator {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    pub fn get(&self, path: &str) -> Value {
        let mut r = self
            .agent
            .get(&format!("{}__emulator/{path}", self.base))
            .call()
            .unwrap();
        serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap()
    }

    pub fn get_bytes(&self, path: &str) -> Vec<u8> {
        let mut r = self
            .agent
            .get(&format!("{}__emulator/{path}", self.base))
            .call()
            .unwrap();
        r.body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_vec()
            .unwrap()
    }

    /// Merges `settings` into the emulator's config (`upload_bytes_per_second`, …).
    pub fn config(&self, settings: Value) -> Value {
        self.post("config", settings)
    }

    pub fn fault(&self, rules: Value) {
        self.post("faults", json!({ "rules": rules }));
    }

    pub fn clear_faults(&self) {
        self.agent
            .delete(&format!("{}__emulator/faults", self.base))
            .call()
            .unwrap();
    }

    pub fn files(&self) -> Vec<Value> {
        self.get("files")["files"].as_array().unwrap().clone()
    }

    /// Non-folder files in a folder.
    pub fn files_in(&self, folder: &str) -> Vec<Value> {
        self.files()
            .into_iter()
            .filter(|f| f["mimeType"] != "application/vnd.google-apps.folder")
            .filter(|f| {
                f["parents"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|x| x == folder))
            })
            .collect()
    }

    /// The files in a folder that are not backup manifests (`<backup>.manifest.json`).
    pub fn backups_in(&self, folder: &str) -> Vec<Value> {
        self.files_in(folder)
            .into_iter()
            .filter(|f| !Self::is_manifest(f))
            .collect()
    }

    /// The backup manifests in a folder.
    pub fn manifests_in(&self, folder: &str) -> Vec<Value> {
        self.files_in(folder)
            .into_iter()
            .filter(Self::is_manifest)
            .collect()
    }

    /// The downloads (`get_media`) of anything but a manifest, in order.
    pub fn backup_downloads(&self) -> Vec<Value> {
        let manifests: Vec<String> = self
            .files()
            .iter()
            .filter(|f| Self::is_manifest(f))
            .filter_map(|f| f["id"].as_str().map(str::to_string))
            .collect();
        self.requests()
            .into_iter()
            .filter(|r| r["op"] == "get_media")
            .filter(|r| {
                let path = r["path"].as_str().unwrap_or_default();
                !manifests.iter().any(|id| path.ends_with(&format!("/{id}")))
            })
            .collect()
    }

    fn is_manifest(f: &Value) -> bool {
        f["name"]
            .as_str()
            .is_some_and(|n| n.ends_with(pgdrive::storage::manifest::SUFFIX))
    }

    pub fn content(&self, id: &str) -> Vec<u8> {
        self.get_bytes(&format!("files/{id}/content"))
    }

    pub fn requests(&self) -> Vec<Value> {
        self.get("requests")["requests"].as_array().unwrap().clone()
    }

    /// The logged requests of one operation (`token`, `get_media`, `list`, …).
    pub fn requests_of(&self, op: &str) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|q| q["op"] == op)
            .collect()
    }

    pub fn sessions(&self) -> Vec<Value> {
        self.get("sessions")["sessions"].as_array().unwrap().clone()
    }

    /// Waits until some request matches.
    pub fn wait_for_request(&self, pred: impl Fn(&Value) -> bool, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.requests().iter().any(&pred) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An RSA key pair made with openssl: (PKCS#8 private PEM, public PEM).
pub fn rsa_keypair(dir: &Path) -> (String, String) {
    let key = dir.join("sa.pem");
    let st = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&key)
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(st.success());
    let public = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&key)
        .output()
        .unwrap();
    (
        std::fs::read_to_string(&key).unwrap(),
        String::from_utf8(public.stdout).unwrap(),
    )
}

/// A Google account set up in the emulator, with its credentials file written to disk.
pub struct Google {
    pub emu: Emulator,
    pub dir: TempDir,
    pub key_file: PathBuf,
    pub sa_email: String,
    /// The Google Cloud project of `key_file` (appProperties are private to it).
    pub project: String,
    /// A folder in a shared drive where the service account is Manager.
    pub folder: String,
    pub shared_drive: String,
}

/// Registers a service account `backup@PROJECT.iam.gserviceaccount.com` (domain-wide delegation
/// allowed) and writes its key file under `dir`: (key file, e-mail).
fn service_account_key(emu: &Emulator, dir: &Path, project: &str) -> (PathBuf, String) {
    let dir = dir.join(project);
    std::fs::create_dir_all(&dir).unwrap();
    let (private, public) = rsa_keypair(&dir);
    let email = format!("backup@{project}.iam.gserviceaccount.com");
    emu.post(
        "service_accounts",
        json!({"client_email": email, "public_key_pem": public, "dwd": true,
               "project_id": project}),
    );
    let key = json!({
        "type": "service_account",
        "project_id": project,
        "private_key_id": "0123456789abcdef",
        "private_key": private,
        "client_email": email,
        "client_id": "1234567890",
        "token_uri": emu.token_uri(),
    });
    let key_file = dir.join("key.json");
    std::fs::write(&key_file, key.to_string()).unwrap();
    (key_file, email)
}

impl Google {
    /// A service account that is Manager of a shared drive with one folder in it.
    pub fn shared_drive() -> Google {
        let emu = Emulator::start();
        let dir = TempDir::new("google");
        let project = "pgdrive-test".to_string();
        let (key_file, sa_email) = service_account_key(&emu, dir.path(), &project);
        let drive = emu.post(
            "shared_drives",
            json!({"name": "Backups", "members": {sa_email.clone(): "organizer"}}),
        );
        let shared_drive = drive["id"].as_str().unwrap().to_string();
        let folder = emu.post("folders", json!({"name": "db", "drive_id": shared_drive}))["id"]
            .as_str()
            .unwrap()
            .to_string();
        Google {
            emu,
            dir,
            key_file,
            sa_email,
            project,
            folder,
            shared_drive,
        }
    }

    /// The key file of a service account of another Google Cloud project, Manager of the same
    /// shared drive: it sees the same folder and files, but none of the appProperties that
    /// `key_file`'s project wrote (nor they its).
    pub fn other_project_key(&self, project: &str) -> PathBuf {
        assert_ne!(project, self.project);
        let (key_file, email) = service_account_key(&self.emu, self.dir.path(), project);
        self.emu.post(
            &format!("shared_drives/{}/members", self.shared_drive),
            json!({ email: "organizer" }),
        );
        key_file
    }

    /// Another folder in the same shared drive.
    pub fn new_folder(&self, name: &str) -> String {
        self.emu.post(
            "folders",
            json!({"name": name, "drive_id": self.shared_drive}),
        )["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// pgdrive's own Drive client with the credentials in `key_file` (for set-up and for
    /// looking at Drive the way a given Cloud project sees it).
    pub fn drive_client(&self, key_file: &Path) -> pgdrive::drive::DriveClient {
        use pgdrive::drive::{auth, retry::RetryPolicy, DriveClient};
        let text = std::fs::read_to_string(key_file).unwrap();
        let creds = auth::Credentials::parse(&text, "test key", None).unwrap();
        DriveClient::new(
            &self.emu.base,
            auth::TokenSource::new(creds),
            RetryPolicy::default(),
        )
    }

    /// The files of this folder whose appProperties mark them as backups (`pgdrive=1`), as the
    /// credentials in `key_file` see them: a Cloud project sees only the appProperties it wrote.
    pub fn indexed_backups(&self, key_file: &Path) -> Vec<pgdrive::drive::RemoteFile> {
        self.drive_client(key_file)
            .list(
                &self.folder,
                Some(&self.shared_drive),
                "appProperties has { key='pgdrive' and value='1' }",
            )
            .unwrap()
    }

    /// pgdrive configured for this account, backing up `db`.
    pub fn pgdrive(&self, db: &TestDb) -> Command {
        self.pgdrive_with_key(db, &self.key_file)
    }

    /// pgdrive on this folder with the credentials in `key_file`, backing up `db`.
    pub fn pgdrive_with_key(&self, db: &TestDb, key_file: &Path) -> Command {
        let mut cmd = pgdrive();
        cmd.env("DATABASE_URL", db.url())
            .env("GOOGLE_SERVICE_ACCOUNT_JSON", key_file)
            .env("GOOGLE_DRIVE_FOLDER_ID", &self.folder)
            .env("PGDRIVE_DRIVE_URL", &self.emu.base);
        cmd
    }
}

/// Waits for the child to exit, failing the test if it takes longer than `limit`.
pub fn exit_within(mut child: Child, limit: Duration) -> (std::process::Output, Duration) {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "pgdrive was still running after {limit:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = started.elapsed();
    (child.wait_with_output().unwrap(), took)
}

/// Waits (at most `limit`) for a run that must fail with exit 1; returns its stderr and how
/// long it took.
pub fn fails_within(child: std::process::Child, limit: Duration) -> (String, Duration) {
    let (out, took) = exit_within(child, limit);
    eprintln!("exited after {took:?}");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    (stderr, took)
}

/// Opens the FIFO for writing once pgdrive opened it for reading (without hanging if pgdrive
/// failed before it got there).
pub fn open_fifo_writer(path: &Path, child: &mut Child) -> std::fs::File {
    use std::os::unix::fs::OpenOptionsExt;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
        {
            Ok(f) => {
                // back to blocking writes
                use std::os::fd::AsRawFd;
                // SAFETY: fcntl on a descriptor we own.
                unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETFL, 0) };
                return f;
            }
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {}
            Err(e) => panic!("opening the FIFO: {e}"),
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("pgdrive exited ({status}) before reading the backup");
        }
        assert!(Instant::now() < deadline, "pgdrive never opened the backup");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A verify of a backup whose manifest was edited to record 4999 rows of `public.orders` (the
/// dump holds 5000): corrupt, and the line names the disagreement.
pub fn assert_edited_orders_count_is_caught(r: &Run) {
    assert_eq!(r.status, 65, "{r:?}");
    assert!(
        r.stderr
            .contains("public.orders: recorded 4999, found 5000"),
        "{r:?}"
    );
}

/// A throwaway PostgreSQL cluster (initdb) on a free port, stopped and removed when dropped: for
/// tests that change what the shared server must not see changed (template1, privileges).
pub struct Cluster {
    dir: TempDir,
    pub addr: &'static str,
    pub port: u16,
}

impl Cluster {
    pub fn start() -> Cluster {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Cluster::start_on("127.0.0.1", port)
    }

    /// A cluster listening on `addr:port` only (another loopback address may take the shared
    /// server's port).
    pub fn start_on(addr: &'static str, port: u16) -> Cluster {
        let dir = TempDir::new("cluster");
        let c = Cluster { dir, addr, port };
        if Self::as_root() {
            assert!(Command::new("chown")
                .arg("postgres")
                .arg(c.dir.path())
                .status()
                .unwrap()
                .success());
        }
        let data = c.dir.path().join("data");
        c.server_tool(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ],
        );
        let options = format!(
            "-p {port} -k {} -c listen_addresses={addr} -c fsync=off",
            c.dir.path().display()
        );
        let log = c.dir.path().join("log");
        c.server_tool(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-o",
                &options,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start",
            ],
        );
        c
    }

    /// initdb and the server refuse to run as root: then they run as postgres.
    fn as_root() -> bool {
        // SAFETY: no arguments, no side effects.
        unsafe { libc::geteuid() == 0 }
    }

    fn server_tool(&self, tool: &str, args: &[&str]) {
        let bin = format!("/usr/lib/postgresql/15/bin/{tool}");
        let mut cmd = if Self::as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", &bin]);
            c
        } else {
            Command::new(&bin)
        };
        let out = cmd.args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{tool}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn url(&self, user: &str, db: &str) -> String {
        format!("postgres://{user}@{}:{}/{db}", self.addr, self.port)
    }

    pub fn exec(&self, db: &str, sql: &str) {
        postgres::Client::connect(&self.url("postgres", db), postgres::NoTls)
            .unwrap()
            .batch_execute(sql)
            .unwrap_or_else(|e| panic!("{e:?}: {sql}"));
    }

    pub fn relations(&self, db: &str) -> Vec<String> {
        postgres::Client::connect(&self.url("postgres", db), postgres::NoTls)
            .unwrap()
            .query(
                "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = 'public' ORDER BY 1",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = std::panic::catch_unwind(|| {
            self.server_tool(
                "pg_ctl",
                &["-D", data.to_str().unwrap(), "-m", "immediate", "stop"],
            )
        });
    }
}

/// `names` without the job's globals (`JOB-globals-STAMP.sql` and its manifest), which every
/// daily or schema job stores beside its database backups (the disaster_recovery module tests
/// them); the target modules count only database backups.
pub fn without_globals(names: Vec<String>) -> Vec<String> {
    names
        .into_iter()
        .filter(|n| !n.contains("-globals-"))
        .collect()
}
