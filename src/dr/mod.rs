//! Whole-server disaster recovery (issue 13): what `pg_dump` of one database does not carry.
//! `globals`: roles, memberships, role settings and tablespaces (`pg_dumpall --globals-only`),
//! stored once per job run beside its database backups; `dbprops`: a database's owner,
//! settings, privileges and comment, recorded in its manifest and reapplied by
//! `restore --create`. A job run's backups share a set id (`pgdrive_set`), which is how
//! `restore --all` finds "the newest backup set".

pub mod cluster;
pub mod dbprops;
pub mod globals;
pub mod rolemap;

/// A new set id: the run's start (UTC, to the second) and 8 random hex digits.
pub fn new_set_id(started_ms: i64) -> std::io::Result<String> {
    let token = crate::fsutil::random_token()?;
    Ok(format!(
        "{}-{}",
        crate::timeutil::compact_stamp(started_ms),
        &token[..8]
    ))
}
