//! One run of a kind at a time, across hosts: a PostgreSQL session advisory lock held on a
//! dedicated connection for the whole run. The keys equal the Node.js implementation's (the first
//! four bytes of MD5(lock name) as a signed big-endian int32, passed to the bigint form of
//! `pg_try_advisory_lock`), so both can run side by side during a migration.
//!
//! A session lock lives exactly as long as its connection: if pgdrive dies, the server releases
//! it. That is also why the connection must be direct: behind PgBouncer in transaction mode the
//! lock would be taken on one server connection and the next statement could run on another.

use anyhow::{bail, Context, Result};
use md5::Digest as _;
use postgres::Client;

use crate::cli::Kind;

pub fn lock_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Daily => "daily-backup-job",
        Kind::Hourly => "hourly-backup-job",
        Kind::Schema => "schema-backup-job",
    }
}

/// The advisory lock key for a lock name.
pub fn lock_key(name: &str) -> i64 {
    let digest = md5::Md5::digest(name.as_bytes());
    i32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) as i64
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

/// Tries to take the lock; `Ok(None)` when another session holds it.
pub fn try_lock(mut client: Client, kind: Kind) -> Result<Option<LockGuard>> {
    keep_session_alive(&mut client)?;
    let key = lock_key(lock_name(kind));
    let row = client
        .query_one(
            "SELECT pg_try_advisory_lock($1::bigint), pg_backend_pid()",
            &[&key],
        )
        .context("taking the advisory lock")?;
    let acquired: bool = row.get(0);
    if !acquired {
        return Ok(None);
    }
    let mut guard = LockGuard {
        client,
        key,
        backend_pid: row.get(1),
        released: false,
    };
    guard.verify_held()?;
    Ok(Some(guard))
}

impl LockGuard {
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    /// Checks that this is still the same server session and that it still holds the lock. Fails
    /// behind a transaction-mode pooler, where consecutive statements reach different sessions.
    pub fn verify_held(&mut self) -> Result<()> {
        let high = ((self.key as u64) >> 32) as i64;
        let low = ((self.key as u64) & 0xffff_ffff) as i64;
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
    }
}
