//! One run of a job (a kind of backup of one database) at a time, across hosts: a PostgreSQL
//! session advisory lock held on a dedicated connection for the whole run.
//!
//! Where the lock lives in the backed-up database itself, the key equals the Node.js
//! implementation's (the first four bytes of MD5(lock name) as a signed big-endian int32, passed
//! to the bigint form of `pg_try_advisory_lock`), so both can run side by side during a migration.
//! Where it lives in a catalog shared by several databases, the key also names the database, so
//! one database's job never skips another's: the database is identified as its server reports it
//! (the cluster's system identifier and `current_database()`), never by how its URL is spelled.
//!
//! A session lock lives exactly as long as its connection: if pgdrive dies, the server releases
//! it. That is also why the connection must be direct: behind PgBouncer in transaction mode the
//! lock would be taken on one server connection and the next statement could run on another.

use anyhow::{bail, Context, Result};
use md5::Digest as _;
use postgres::Client;

use crate::kind::Kind;

pub fn lock_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Daily => "daily-backup-job",
        Kind::Hourly => "hourly-backup-job",
        Kind::Schema => "schema-backup-job",
    }
}

/// The advisory lock key for a lock name (Node-compatible).
pub fn lock_key(name: &str) -> i64 {
    let digest = md5::Md5::digest(name.as_bytes());
    i32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) as i64
}

/// A database as its server identifies it: the same whatever host name, address or port it was
/// reached by. The name rather than the OID, so that a database recreated by a restore keeps its
/// lock (and its catalog rows, which name it too).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatabaseIdentity {
    /// `pg_control_system().system_identifier`, fixed at initdb (a standby shares its
    /// primary's); `None` where the role may not call the function.
    pub system_identifier: Option<String>,
    pub name: String,
}

impl DatabaseIdentity {
    /// Asks the server which database this connection is in.
    pub fn of(client: &mut Client) -> Result<DatabaseIdentity> {
        let row = client
            .query_one(
                "SELECT CASE WHEN has_function_privilege('pg_control_system()', 'EXECUTE')
                        THEN (SELECT system_identifier::text FROM pg_control_system()) END,
                        current_database()::text",
                &[],
            )
            .context("asking the server which database this is")?;
        Ok(DatabaseIdentity {
            system_identifier: row.get(0),
            name: row.get(1),
        })
    }
}

/// The advisory lock that serialises one job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobLock {
    pub kind: Kind,
    /// What the key is derived from (logged, so that an operator can match keys).
    pub name: String,
    pub key: i64,
}

impl JobLock {
    /// The lock of a job whose lock lives in the backed-up database: the Node.js key.
    pub fn in_database(kind: Kind) -> JobLock {
        let name = lock_name(kind).to_string();
        JobLock {
            kind,
            key: lock_key(&name),
            name,
        }
    }

    /// The lock of a job on `database` whose lock lives in a catalog that other databases' jobs
    /// may share: the key covers the kind and the database's identity (64 bits of MD5).
    pub fn in_shared_catalog(kind: Kind, database: &DatabaseIdentity) -> JobLock {
        let name = format!(
            "{}:{}:{}",
            lock_name(kind),
            database.system_identifier.as_deref().unwrap_or("?"),
            database.name
        );
        let digest = md5::Md5::digest(name.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        JobLock {
            kind,
            key: i64::from_be_bytes(first),
            name,
        }
    }

    /// The lock for a job whose lock is taken on `catalog`: the backed-up database is `separate`
    /// when it was reached by another URL (the servers decide whether it is the same database).
    pub fn resolve(
        kind: Kind,
        catalog: &mut Client,
        separate: Option<&mut Client>,
    ) -> Result<JobLock> {
        let Some(database) = separate else {
            return Ok(JobLock::in_database(kind));
        };
        Ok(JobLock::for_job(
            kind,
            &DatabaseIdentity::of(catalog)?,
            &DatabaseIdentity::of(database)?,
        ))
    }

    /// This lock narrowed to one of the config file's jobs (`None`: unchanged): each job has its
    /// own lock per database, apart from the built-in kind's and other jobs'.
    pub fn scoped(self, job: Option<&str>) -> JobLock {
        let Some(job) = job else { return self };
        let name = format!("{}:job:{job}", self.name);
        let digest = md5::Md5::digest(name.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        JobLock {
            kind: self.kind,
            key: i64::from_be_bytes(first),
            name,
        }
    }

    /// The lock for backing up `database` with the lock taken in `catalog`.
    pub fn for_job(kind: Kind, catalog: &DatabaseIdentity, database: &DatabaseIdentity) -> JobLock {
        if catalog == database {
            JobLock::in_database(kind)
        } else {
            JobLock::in_shared_catalog(kind, database)
        }
    }
}

/// What [`lock_run`] found.
pub enum Taken {
    /// This process holds the lock until the guard is dropped.
    Held(LockGuard),
    /// Another session holds it: who, as [`describe_holder`] says.
    Busy { lock: JobLock, holder: String },
    /// The database does not exist (any more): no backup of it can be running, since `backup`
    /// connects to it before it locks and a database with sessions cannot be dropped.
    NoDatabase,
}

/// Takes the lock `backup` takes for one run of `kind` (narrowed to `job`) of `database`, on
/// `catalog`, for another command that must not race it (`prune`): the same key, derived from
/// the servers' identities exactly as `backup` derives it.
pub fn lock_run(
    kind: Kind,
    job: Option<&str>,
    catalog: &crate::pgconn::ConnInfo,
    database: &crate::pgconn::ConnInfo,
    application_name: &str,
) -> Result<Taken> {
    let mut control = crate::server::connect_as(catalog, "the catalog database", application_name)?;
    let mut separate = None;
    if catalog.redacted() != database.redacted() {
        match database.connect(application_name) {
            Ok(c) => separate = Some(c),
            Err(e) if crate::server::database_missing(&e) => return Ok(Taken::NoDatabase),
            Err(e) => return Err(crate::server::connect_failure(database, "the database", e)),
        }
    }
    let lock = JobLock::resolve(kind, &mut control, separate.as_mut())?.scoped(job);
    Ok(match try_lock(control, &lock)? {
        Ok(guard) => Taken::Held(guard),
        Err(mut control) => {
            let holder = describe_holder(&mut control, &lock)
                .unwrap_or_else(|e| format!("unknown ({})", crate::error::render(&e)));
            Taken::Busy { lock, holder }
        }
    })
}

/// The `application_name` of a lock connection: who holds a lock, as another run reports it.
pub fn holder_application_name(kind: Kind, host: &str) -> String {
    let mut name = format!("pgdrive {kind} on {host} pid {}", std::process::id());
    // the server keeps 63 bytes
    while name.len() > 63 {
        name.pop();
    }
    name
}

/// Who holds `lock` in this database, as far as this role may read `pg_locks` and
/// `pg_stat_activity`: server pid, application name (pgdrive's names its host and pid), user,
/// client address and since when.
pub fn describe_holder(client: &mut Client, lock: &JobLock) -> Result<String> {
    let (high, low) = key_halves(lock.key);
    let rows = client
        .query(
            "SELECT l.pid, a.application_name, a.usename::text, host(a.client_addr),
                    to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
               FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
              WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
                AND l.classid::bigint = $1 AND l.objid::bigint = $2
                AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[&high, &low],
        )
        .context("looking up who holds the advisory lock")?;
    let Some(row) = rows.first() else {
        return Ok("nobody any more (the other run has just finished)".into());
    };
    let mut parts = vec![format!(
        "server pid {}",
        row.get::<_, Option<i32>>(0).unwrap_or(0)
    )];
    let optional: [(&str, Option<String>); 4] = [
        ("application_name", row.get(1)),
        ("user", row.get(2)),
        ("from", row.get(3)),
        ("connected since", row.get(4)),
    ];
    for (label, value) in optional {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            parts.push(format!("{label} {v:?}"));
        }
    }
    Ok(parts.join(", "))
}

/// The two int4 halves `pg_locks` shows a bigint advisory key as (classid, objid).
fn key_halves(key: i64) -> (i64, i64) {
    (
        ((key as u64) >> 32) as i64,
        ((key as u64) & 0xffff_ffff) as i64,
    )
}

const POOLER_MESSAGE: &str =
    "the advisory lock is not held by this session: the connection goes through a transaction-mode pooler";

/// Whether an error is [`LockGuard::verify_held`]'s "not a direct connection" verdict.
pub fn is_pooler_error(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<crate::error::Classified>()
            .is_some_and(|c| c.message == POOLER_MESSAGE)
    })
}

/// Proof that this process holds the lock; releasing it on drop.
pub struct LockGuard {
    client: Client,
    key: i64,
    backend_pid: i32,
    released: bool,
}

/// Session settings for a connection that sits idle while the dump runs: no server-side timeout
/// may end it.
fn keep_session_alive(client: &mut Client) -> Result<()> {
    client
        .batch_execute(
            "SET statement_timeout = 0; SET lock_timeout = 0; SET idle_in_transaction_session_timeout = 0;
             DO $$ BEGIN
               IF current_setting('server_version_num')::int >= 140000 THEN
                 PERFORM set_config('idle_session_timeout', '0', false);
               END IF;
             END $$;",
        )
        .context("configuring the lock connection")
}

/// Tries to take the lock; `Err(client)` when another session holds it.
pub fn try_lock(
    mut client: Client,
    lock: &JobLock,
) -> Result<std::result::Result<LockGuard, Client>> {
    keep_session_alive(&mut client)?;
    let key = lock.key;
    let row = client
        .query_one(
            "SELECT pg_try_advisory_lock($1::bigint), pg_backend_pid()",
            &[&key],
        )
        .context("taking the advisory lock")?;
    let acquired: bool = row.get(0);
    if !acquired {
        return Ok(Err(client));
    }
    let mut guard = LockGuard {
        client,
        key,
        backend_pid: row.get(1),
        released: false,
    };
    guard.verify_held()?;
    Ok(Ok(guard))
}

impl LockGuard {
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    /// Checks that this is still the same server session and that it still holds the lock. Fails
    /// behind a transaction-mode pooler, where consecutive statements reach different sessions.
    pub fn verify_held(&mut self) -> Result<()> {
        let (high, low) = key_halves(self.key);
        let row = self
            .client
            .query_one(
                "SELECT pg_backend_pid(), EXISTS (
                    SELECT 1 FROM pg_locks
                    WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted
                      AND classid::bigint = $1 AND objid::bigint = $2 AND objsubid = 1)",
                &[&high, &low],
            )
            .context("checking the advisory lock")?;
        let pid: i32 = row.get(0);
        let held: bool = row.get(1);
        if pid != self.backend_pid || !held {
            bail!(crate::error::Classified {
                status: crate::error::ExitStatus::Config,
                message: POOLER_MESSAGE.into(),
                hint: Some("point DATABASE_URL (or PGDRIVE_CATALOG_URL) at PostgreSQL directly, or at a session-mode pool".into()),
            });
        }
        Ok(())
    }
}

impl LockGuard {
    /// Releases the lock now, reporting what dropping the guard would ignore: `pgdrive check`
    /// proves the lock can be released, not only taken.
    pub fn release(mut self) -> Result<()> {
        self.released = true;
        let row = self
            .client
            .query_one("SELECT pg_advisory_unlock($1::bigint)", &[&self.key])
            .context("releasing the advisory lock")?;
        if !row.get::<_, bool>(0) {
            bail!("the server says this session did not hold the advisory lock it was releasing");
        }
        Ok(())
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if !self.released {
            let _ = self
                .client
                .execute("SELECT pg_advisory_unlock($1::bigint)", &[&self.key]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_the_node_implementation() {
        // computed independently: struct.unpack(">i", hashlib.md5(name).digest()[:4])
        assert_eq!(lock_key("daily-backup-job"), -1_450_133_114);
        assert_eq!(lock_key("hourly-backup-job"), 1_265_025_683);
        assert_eq!(lock_key("schema-backup-job"), 112_428);
        assert_eq!(JobLock::in_database(Kind::Daily).key, -1_450_133_114);
        let plain = JobLock::in_database(Kind::Daily);
        assert_eq!(plain.clone().scoped(None), plain);
        let nightly = plain.clone().scoped(Some("nightly"));
        assert_ne!(nightly.key, plain.key);
        assert_ne!(nightly.key, plain.scoped(Some("weekly")).key);
    }

    #[test]
    fn shared_catalog_keys_differ_by_database_and_kind_only() {
        let db = |sys: Option<&str>, name: &str| DatabaseIdentity {
            system_identifier: sys.map(str::to_string),
            name: name.into(),
        };
        let shop = db(Some("7714538919834265728"), "shop");
        let key = |kind, d: &DatabaseIdentity| JobLock::in_shared_catalog(kind, d).key;
        assert_eq!(key(Kind::Daily, &shop), key(Kind::Daily, &shop.clone()));
        assert_ne!(key(Kind::Daily, &shop), key(Kind::Hourly, &shop));
        assert_ne!(
            key(Kind::Daily, &shop),
            key(Kind::Daily, &db(Some("7714538919834265728"), "crm"))
        );
        assert_ne!(
            key(Kind::Daily, &shop),
            key(Kind::Daily, &db(Some("1"), "shop"))
        );
        // the lock in the backed-up database keeps the Node.js key
        assert_eq!(
            JobLock::for_job(Kind::Daily, &shop, &shop),
            JobLock::in_database(Kind::Daily)
        );
        assert_ne!(
            JobLock::for_job(Kind::Daily, &db(None, "catalog"), &shop),
            JobLock::in_database(Kind::Daily)
        );
    }

    #[test]
    fn holder_names_fit_the_server_limit() {
        let name = holder_application_name(Kind::Hourly, &"h".repeat(100));
        assert!(
            name.len() <= 63 && name.starts_with("pgdrive hourly on hhh"),
            "{name}"
        );
    }
}
