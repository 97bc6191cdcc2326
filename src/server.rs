//! The database server as pgdrive's preflight sees it: connecting with a useful hint (and the exit
//! status of why it failed), the server's version (pg_dump must be at least its major), whether it
//! is a standby, the critical tables resolved exactly as SQL would, and the row counts of a
//! restored database. Shared by `backup`, `check` and `verify` so they judge a server the same way.

use anyhow::{Context, Result};

use crate::error::config_error_hint;
use crate::log;

/// Opens a connection; failures are reported with what to check.
pub fn connect(info: &crate::pgconn::ConnInfo, what: &str) -> Result<postgres::Client> {
    connect_as(info, what, "pgdrive")
}

/// [`connect`] with the `application_name` other sessions see this one by.
pub fn connect_as(
    info: &crate::pgconn::ConnInfo,
    what: &str,
    application_name: &str,
) -> Result<postgres::Client> {
    info.connect(application_name)
        .map_err(|e| connect_failure(info, what, e))
}

/// A failed connection attempt as the one-line error `connect` reports.
pub fn connect_failure(
    info: &crate::pgconn::ConnInfo,
    what: &str,
    e: anyhow::Error,
) -> anyhow::Error {
    if e.downcast_ref::<crate::error::Classified>().is_some() {
        return e;
    }
    let hint = crate::error::cause_hint(&e).unwrap_or_else(|| {
        "check that the server is running and that the host, port, user, database and sslmode in the URL are right".into()
    });
    // unreachable or busy (69) stays so under the message that names the server
    crate::error::failure_from(
        &e,
        format!(
            "cannot connect to {what} at {}: {}",
            info.redacted(),
            crate::error::render(&e)
        ),
        hint,
    )
}

/// Whether a connection failed because the database does not exist (SQLSTATE 3D000).
pub fn database_missing(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<postgres::Error>()
            .and_then(|p| p.code())
            .is_some_and(|code| *code == postgres::error::SqlState::INVALID_CATALOG_NAME)
    })
}

/// The server's version string and major version.
pub fn server_version(client: &mut postgres::Client) -> Result<(String, u32)> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int",
            &[],
        )
        .context("reading the server version")?;
    let version: String = row.get(0);
    let num: i32 = row.get(1);
    let major = if num >= 100_000 {
        num / 10_000
    } else {
        num / 100
    } as u32;
    Ok((version, major))
}

/// Whether the server is a read-only standby.
pub fn in_recovery(client: &mut postgres::Client) -> Result<bool> {
    Ok(client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .context("asking whether the server is a standby")?
        .get(0))
}

/// `SELECT count(*) FROM ONLY <table>` for each table (names as pg_dump writes them, quoted
/// where needed); a table that does not exist is left out of the map.
pub fn count_rows<'a>(
    client: &mut postgres::Client,
    tables: impl Iterator<Item = &'a String>,
) -> Result<std::collections::BTreeMap<String, i64>> {
    let mut out = std::collections::BTreeMap::new();
    for t in tables {
        let exists: Option<u32> = client
            .query_one("SELECT to_regclass($1)::oid", &[t])?
            .get(0);
        if exists.is_some() {
            let n: i64 = client
                .query_one(&format!("SELECT count(*) FROM ONLY {t}"), &[])?
                .get(0);
            out.insert(t.clone(), n);
        }
    }
    Ok(out)
}

/// Quotes a name for a pg_dump pattern: inside double quotes every character is literal, and a
/// double quote is written twice.
/// The server's databases that accept connections, templates excepted, by name: what a job
/// with `databases = "all"` backs up (one the role may not connect to then fails loudly).
pub fn connectable_databases(client: &mut postgres::Client) -> Result<Vec<String>> {
    let rows = client
        .query(
            "SELECT datname::text FROM pg_database
              WHERE datallowconn AND NOT datistemplate
              ORDER BY datname",
            &[],
        )
        .context("listing the server's databases")?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

fn pattern_quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Resolves each configured critical table exactly as SQL would (`to_regclass`), expands
/// partitioned tables to their partitions (pg_dump's `--table` does not include them), and
/// returns exact `--table` patterns. A missing table is a configuration error.
pub fn resolve_tables(client: &mut postgres::Client, tables: &[String]) -> Result<Vec<String>> {
    let mut patterns = Vec::new();
    for t in tables {
        let row = client
            .query_one(
                "SELECT c.oid, n.nspname::text, c.relname::text, c.relkind::text
                   FROM (SELECT to_regclass($1) AS oid) r
                   LEFT JOIN pg_class c ON c.oid = r.oid
                   LEFT JOIN pg_namespace n ON n.oid = c.relnamespace",
                &[t],
            )
            .map_err(|e| {
                config_error_hint(format!(
                    "PGDRIVE_CRITICAL_TABLES entry {t:?} is not a valid table name: {}",
                    e.as_db_error()
                        .map(|d| d.message().to_string())
                        .unwrap_or_else(|| e.to_string())
                ), "fix PGDRIVE_CRITICAL_TABLES: table names separated by commas, as SQL reads them (schema.table; quote mixed-case names as \"Name\")")
            })?;
        let oid: Option<u32> = row.get(0);
        let Some(oid) = oid else {
            return Err(config_error_hint(
                format!("critical table {t} does not exist in database {}", client_db(client)),
                "fix PGDRIVE_CRITICAL_TABLES (names are resolved like SQL: unquoted names are lower-cased; quote mixed-case names as \"Name\")",
            ));
        };
        let kind: String = row.get(3);
        if !matches!(kind.as_str(), "r" | "p") {
            log::warn(
                "a critical table is not a plain table; pg_dump will include its definition",
                &[("table", t.clone()), ("relkind", kind)],
            );
        }
        let rows = client.query(
            "WITH RECURSIVE tree(oid) AS (
                 SELECT $1::oid
                 UNION ALL
                 SELECT i.inhrelid FROM pg_inherits i JOIN tree ON i.inhparent = tree.oid
                  WHERE (SELECT relkind FROM pg_class WHERE oid = tree.oid) = 'p')
             SELECT n.nspname::text, c.relname::text FROM tree
               JOIN pg_class c ON c.oid = tree.oid JOIN pg_namespace n ON n.oid = c.relnamespace
              ORDER BY 1, 2",
            &[&oid],
        )?;
        for r in rows {
            let pattern = format!("{}.{}", pattern_quote(r.get(0)), pattern_quote(r.get(1)));
            if !patterns.contains(&pattern) {
                patterns.push(pattern);
            }
        }
    }
    Ok(patterns)
}

fn client_db(client: &mut postgres::Client) -> String {
    client
        .query_one("SELECT current_database()::text", &[])
        .map(|r| r.get(0))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_literal() {
        assert_eq!(pattern_quote("Order\"s*"), "\"Order\"\"s*\"");
    }
}
