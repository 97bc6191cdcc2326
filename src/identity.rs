//! Whether a connection reaches the same database as a connection string, decided by asking the
//! servers, never by comparing how the addresses are spelled (`127.0.0.1:05432`, the host's name,
//! `LOCALHOST`, `[::ffff:127.0.0.1]` and a multi-host list all reach one server).
//!
//! Two proofs, either of which is enough:
//! - the session: the protected database is opened with a random `application_name`; if the
//!   target's server lists that very session (its pid, name and start) in `pg_stat_activity`, it is the
//!   same running server, and the session's `datid` says whether it is the same database. This
//!   needs no privileges (every role sees those columns of every session).
//! - the cluster: `pg_control_system()`'s system identifier plus the database's oid, when both
//!   sides may call it. This also catches a connection that reaches the server through a proxy
//!   (which may rewrite the session), and counts a physical copy of the cluster as the same.

use anyhow::{Context, Result};
use postgres::Client;

use crate::pgconn::ConnInfo;

/// An open connection to a protected database and what identifies it.
pub struct Probe {
    /// Held open: its session is what the target's server is searched for.
    _client: Client,
    application_name: String,
    backend_pid: i32,
    /// When the session started, in microseconds since the epoch (with the pid, it names one
    /// session on one server).
    backend_start_us: i64,
    identity: DatabaseIdentity,
}

/// What a database says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatabaseIdentity {
    /// `pg_control_system().system_identifier`; `None` when this role may not call it.
    pub system_identifier: Option<i64>,
    pub database_oid: u32,
    pub database_name: String,
}

/// How it was proven that the target is the protected database.
#[derive(Debug, PartialEq, Eq)]
pub enum Same {
    /// Its server lists the probe's session, connected to the same database.
    Session,
    /// Same system identifier and database oid.
    Cluster,
}

impl std::fmt::Display for Same {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Same::Session => "its server holds pgdrive's probe session in that very database",
            Same::Cluster => {
                "same cluster system identifier and database oid (the same server, or a copy of its data directory)"
            }
        })
    }
}

/// Reads the current database's identity.
pub fn identify(client: &mut Client) -> Result<DatabaseIdentity> {
    let allowed: bool = client
        .query_one(
            "SELECT has_function_privilege('pg_catalog.pg_control_system()', 'EXECUTE')",
            &[],
        )?
        .get(0);
    let system_identifier = if allowed {
        Some(
            client
                .query_one("SELECT system_identifier FROM pg_control_system()", &[])?
                .get(0),
        )
    } else {
        None
    };
    let row = client.query_one(
        "SELECT oid, datname::text FROM pg_database WHERE datname = current_database()",
        &[],
    )?;
    Ok(DatabaseIdentity {
        system_identifier,
        database_oid: row.get(0),
        database_name: row.get(1),
    })
}

/// Opens the protected database with a random `application_name` and identifies it.
pub fn probe(info: &ConnInfo) -> Result<Probe> {
    // 128 random bits: the probe's name must not be guessable or repeat
    let application_name = format!("pgdrive-probe-{}", crate::fsutil::random_token()?);
    // an unreachable source must not hold a restore for libpq's default of minutes
    let info = if info.get("connect_timeout").is_none() {
        info.with_param("connect_timeout", "10")
    } else {
        info.clone()
    };
    let mut client = info.connect(&application_name)?;
    // the name as the server has it (`options=-c application_name=...` in the URL would win)
    let row = client.query_one(
        "SELECT pid, application_name, (extract(epoch FROM backend_start) * 1000000)::int8
           FROM pg_stat_activity WHERE pid = pg_backend_pid()",
        &[],
    )?;
    let identity = identify(&mut client)?;
    Ok(Probe {
        _client: client,
        application_name: row.get(1),
        backend_pid: row.get(0),
        backend_start_us: row.get(2),
        identity,
    })
}

/// Whether `target` (a connection to the target database) is the probed database.
pub fn same_as(target: &mut Client, probe: &Probe) -> Result<Option<Same>> {
    let mine = identify(target).context("identifying the target database")?;
    let session = target
        .query_opt(
            "SELECT datid FROM pg_stat_activity
              WHERE pid = $1 AND application_name = $2
                AND (backend_start IS NULL  -- hidden from other roles without pg_read_all_stats
                     OR (extract(epoch FROM backend_start) * 1000000)::int8 = $3)",
            &[
                &probe.backend_pid,
                &probe.application_name,
                &probe.backend_start_us,
            ],
        )
        .context("looking for pgdrive's probe session on the target's server")?;
    if let Some(row) = session {
        let datid: Option<u32> = row.get(0);
        if datid == Some(mine.database_oid) {
            return Ok(Some(Same::Session));
        }
    }
    let theirs = &probe.identity;
    if theirs.system_identifier.is_some()
        && theirs.system_identifier == mine.system_identifier
        && theirs.database_oid == mine.database_oid
    {
        return Ok(Some(Same::Cluster));
    }
    Ok(None)
}
