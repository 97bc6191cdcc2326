//! A database's own properties, which `pg_dump` of its contents does not carry: owner,
//! `ALTER DATABASE … SET`, `ALTER ROLE … IN DATABASE … SET`, the database-level privileges
//! (`datacl`), the connection limit and the comment. Read at backup time, recorded in the
//! manifest (`database_properties`), and reapplied by `restore --create` once the data committed
//! and before the database stops being marked unfinished (a failure drops it like any failed
//! restore).
//!
//! Settings are reapplied without re-quoting their values: the recorded text (`name=value`, as
//! the server stores it in `pg_db_role_setting`) is given to `set_config(name, value, true)` and
//! then stored with `ALTER … SET name FROM CURRENT`, each in a transaction of its own, so a list
//! setting (`search_path`) or a value with quotes arrives exactly as it was, and a setting such
//! as `default_transaction_read_only` cannot affect the statements that restore the others. The
//! settings are applied after the data restore: a database-level `statement_timeout` or
//! `default_transaction_read_only` must not apply to the restore session.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::commands::source::quote_ident;
use crate::dblocale::quote_literal;

/// The privileges a database can grant (a recorded one outside this list is refused: the name
/// is a keyword of the statement).
const DATABASE_PRIVILEGES: [&str; 3] = ["CREATE", "TEMPORARY", "CONNECT"];

/// The manifest section's key.
pub const MANIFEST_KEY: &str = "database_properties";
/// The key of the same section sealed with the backup's recipients (an encrypted backup):
/// settings can hold secrets (`ALTER DATABASE … SET app.jwt_secret = …`), and the names say who
/// uses the server.
pub const SEALED_KEY: &str = "database_properties_age";

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbProperties {
    pub owner: String,
    pub comment: Option<String>,
    /// -1: no limit.
    pub connection_limit: i32,
    /// `ALTER DATABASE … SET`, as `name=value`.
    pub settings: Vec<String>,
    /// `ALTER ROLE … IN DATABASE … SET`, per role.
    pub role_settings: Vec<RoleSettings>,
    /// `None`: the default privileges (`datacl` is NULL); otherwise every grant.
    pub acl: Option<Vec<Grant>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleSettings {
    pub role: String,
    pub settings: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// `None`: PUBLIC.
    pub grantee: Option<String>,
    pub privilege: String,
    pub grantable: bool,
}

/// How `apply` treats roles.
#[derive(Clone, Copy, Debug, Default)]
pub struct ApplyOptions {
    /// Leave the owner as the restoring role, and skip grants and role settings of roles the
    /// target server does not have (each named in a warning).
    pub no_owner: bool,
}

impl DbProperties {
    /// The connected database's properties.
    pub fn read(client: &mut postgres::Client) -> Result<DbProperties> {
        let what = "reading the database's owner, settings and privileges";
        let row = client
            .query_one(
                "SELECT pg_get_userbyid(d.datdba)::text, shobj_description(d.oid, 'pg_database'),
                        d.datconnlimit, d.datacl IS NULL,
                        (SELECT s.setconfig FROM pg_db_role_setting s
                          WHERE s.setdatabase = d.oid AND s.setrole = 0)
                   FROM pg_database d WHERE d.datname = current_database()",
                &[],
            )
            .context(what)?;
        let role_settings = client
            .query(
                "SELECT r.rolname::text, s.setconfig FROM pg_db_role_setting s
                   JOIN pg_roles r ON r.oid = s.setrole
                  WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
                  ORDER BY 1",
                &[],
            )
            .context(what)?
            .iter()
            .map(|r| RoleSettings {
                role: r.get(0),
                settings: r.get::<_, Option<Vec<String>>>(1).unwrap_or_default(),
            })
            .collect();
        let acl = if row.get::<_, bool>(3) {
            None
        } else {
            Some(
                client
                    .query(
                        "SELECT CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee)::text END,
                                a.privilege_type::text, a.is_grantable
                           FROM pg_database d, aclexplode(d.datacl) a
                          WHERE d.datname = current_database() ORDER BY 1 NULLS FIRST, 2",
                        &[],
                    )
                    .context(what)?
                    .iter()
                    .map(|r| Grant {
                        grantee: r.get(0),
                        privilege: r.get(1),
                        grantable: r.get(2),
                    })
                    .collect(),
            )
        };
        Ok(DbProperties {
            owner: row.get(0),
            comment: row.get(1),
            connection_limit: row.get(2),
            settings: row.get::<_, Option<Vec<String>>>(4).unwrap_or_default(),
            role_settings,
            acl,
        })
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    /// The manifest entry for these properties: in clear, or sealed for `encryption`'s
    /// recipients when the backup is encrypted.
    pub fn manifest_entry(
        &self,
        encryption: Option<&crate::encrypt::Encryption>,
    ) -> Result<(&'static str, serde_json::Value)> {
        match encryption {
            None => Ok((MANIFEST_KEY, self.to_json())),
            Some(e) => e
                .seal_to_base64(self.to_json().to_string().as_bytes())
                .map(|sealed| (SEALED_KEY, sealed.into()))
                .context("encrypting the database's properties"),
        }
    }

    /// The properties the backup `found` recorded: its manifest's, opened with this process's
    /// identities when sealed (`encryption`: what its layout says of it, `Layout::of_found`);
    /// `None` for a backup made before they were recorded.
    pub fn from_found(
        found: &crate::storage::Found,
        encryption: Option<&crate::restore::Encrypted>,
    ) -> Result<Option<DbProperties>> {
        let Some(m) = &found.manifest else {
            return Ok(None);
        };
        let Some(sealed) = m.document.get(SEALED_KEY) else {
            return Self::from_manifest(&m.document);
        };
        match (sealed.as_str(), encryption) {
            (Some(sealed), Some(enc)) => {
                crate::restore::open_sealed(sealed, enc, "database properties").map(Some)
            }
            _ => Err(crate::error::corrupt(format!(
                "the manifest's {SEALED_KEY} is not a sealed record of an encrypted backup: it was changed since it was stored"
            ))),
        }
    }

    /// The properties recorded in a manifest; `None` for a backup made before they were.
    pub fn from_manifest(document: &serde_json::Value) -> Result<Option<DbProperties>> {
        match document.get(MANIFEST_KEY) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => serde_json::from_value(v.clone())
                .map(Some)
                .map_err(|e| crate::error::corrupt(format!("the manifest's {MANIFEST_KEY} cannot be read ({e}): it was changed since it was stored"))),
        }
    }

    /// These properties with every role renamed as `owners` maps it (restore `--role-map`).
    pub fn with_roles_renamed(&self, owners: &crate::dr::rolemap::Owners) -> DbProperties {
        let mut p = self.clone();
        p.owner = owners.rename(&p.owner).to_string();
        for r in &mut p.role_settings {
            r.role = owners.rename(&r.role).to_string();
        }
        for g in p.acl.iter_mut().flatten() {
            if let Some(role) = &mut g.grantee {
                *role = owners.rename(role).to_string();
            }
        }
        p
    }

    /// For logs and the restore plan (names only: settings can hold anything).
    pub fn describe(&self) -> String {
        format!(
            "owner {}, {} database settings, {} role settings, {}",
            self.owner,
            self.settings.len(),
            self.role_settings.len(),
            match &self.acl {
                None => "default privileges".to_string(),
                Some(g) => format!("{} grants", g.len()),
            }
        )
    }

    /// The statements that give database `db` these properties, each run on its own (see the
    /// module comment); `exists` says whether a role exists on the target server.
    pub fn statements(
        &self,
        db: &str,
        options: ApplyOptions,
        exists: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<Statement>> {
        let d = quote_ident(db);
        let mut out = Vec::new();
        let usable = |role: &str, what: &str| -> Result<bool> {
            if exists(role) {
                return Ok(true);
            }
            if options.no_owner {
                crate::log::warn(
                    &format!("role {role} does not exist on the target server: {what} is left out (--no-owner)"),
                    &[("database", db.to_string())],
                );
                return Ok(false);
            }
            Err(crate::error::config_error_hint(
                format!("role {role:?} ({what} of database {db}) does not exist on the target server"),
                "restore the globals first (restore --all, or restore --globals), or pass --no-owner to leave roles out",
            ))
        };
        if !options.no_owner && usable(&self.owner, "the owner")? {
            out.push(Statement::plain(format!(
                "ALTER DATABASE {d} OWNER TO {}",
                quote_ident(&self.owner)
            )));
        }
        if self.connection_limit != -1 {
            out.push(Statement::plain(format!(
                "ALTER DATABASE {d} CONNECTION LIMIT {}",
                self.connection_limit
            )));
        }
        for s in &self.settings {
            out.push(Statement::setting(s, &format!("ALTER DATABASE {d}"))?);
        }
        for r in &self.role_settings {
            if !usable(&r.role, "a role setting")? {
                continue;
            }
            for s in &r.settings {
                out.push(Statement::setting(
                    s,
                    &format!("ALTER ROLE {} IN DATABASE {d}", quote_ident(&r.role)),
                )?);
            }
        }
        if let Some(acl) = &self.acl {
            let mut revoke = "REVOKE ALL ON DATABASE ".to_string() + &d + " FROM PUBLIC";
            if exists(&self.owner) {
                revoke.push_str(&format!(", {}", quote_ident(&self.owner)));
            }
            out.push(Statement::plain(revoke));
            for g in acl {
                let privilege = g.privilege.to_ascii_uppercase();
                if !DATABASE_PRIVILEGES.contains(&privilege.as_str()) {
                    bail!(crate::error::corrupt(format!(
                        "the manifest records the database privilege {:?}, which is none of {}: it was changed since it was stored",
                        g.privilege,
                        DATABASE_PRIVILEGES.join(", ")
                    )));
                }
                let grantee = match &g.grantee {
                    None => "PUBLIC".to_string(),
                    Some(role) if usable(role, "a database privilege")? => quote_ident(role),
                    Some(_) => continue,
                };
                let option = if g.grantable {
                    " WITH GRANT OPTION"
                } else {
                    ""
                };
                out.push(Statement::plain(format!(
                    "GRANT {privilege} ON DATABASE {d} TO {grantee}{option}"
                )));
            }
        }
        Ok(out)
    }

    /// Applies these properties to database `db` through `admin` (a superuser's or the owner's
    /// connection to another database of the same server).
    pub fn apply(
        &self,
        admin: &mut postgres::Client,
        db: &str,
        options: ApplyOptions,
    ) -> Result<()> {
        let roles: Vec<String> = admin
            .query("SELECT rolname::text FROM pg_roles", &[])?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let exists = |r: &str| roles.iter().any(|x| x == r);
        for s in self.statements(db, options, &exists)? {
            s.run(admin).with_context(|| {
                format!(
                    "reapplying the recorded properties of database {db} ({})",
                    s.shown()
                )
            })?;
        }
        Ok(())
    }
}

/// One statement of [`DbProperties::statements`]: plain SQL, or a setting stored `FROM CURRENT`
/// after `set_config` gave it its recorded value.
#[derive(Debug, PartialEq, Eq)]
pub struct Statement {
    pub sql: String,
    /// (name, value) for `set_config`.
    pub setting: Option<(String, String)>,
}

impl Statement {
    fn plain(sql: String) -> Statement {
        Statement { sql, setting: None }
    }

    fn setting(recorded: &str, alter: &str) -> Result<Statement> {
        let Some((name, value)) = recorded.split_once('=') else {
            bail!(crate::error::corrupt(format!(
                "a recorded setting is not name=value ({} bytes): the manifest was changed since it was stored",
                recorded.len()
            )));
        };
        Ok(Statement {
            sql: format!("{alter} SET {} FROM CURRENT", quote_ident(name)),
            setting: Some((name.to_string(), value.to_string())),
        })
    }

    /// What a log or error may show: the statement without the setting's value.
    pub fn shown(&self) -> String {
        self.sql.clone()
    }

    fn run(&self, admin: &mut postgres::Client) -> Result<()> {
        match &self.setting {
            None => admin.batch_execute(&self.sql)?,
            Some((name, value)) => {
                let mut tx = admin.transaction()?;
                tx.execute("SELECT set_config($1, $2, true)", &[name, value])?;
                tx.batch_execute(&self.sql)?;
                tx.commit()?;
            }
        }
        Ok(())
    }
}

/// `COMMENT ON DATABASE` for the recorded comment (or none).
pub fn comment_sql(db: &str, comment: Option<&str>) -> String {
    format!(
        "COMMENT ON DATABASE {} IS {}",
        quote_ident(db),
        comment.map(quote_literal).unwrap_or_else(|| "NULL".into())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn odd() -> DbProperties {
        DbProperties {
            owner: "App \"Owner\"".into(),
            comment: Some("it's".into()),
            connection_limit: 5,
            settings: vec!["search_path=app, public".into(), "app.x=a=b".into()],
            role_settings: vec![RoleSettings {
                role: "ränder".into(),
                settings: vec!["work_mem=8MB".into()],
            }],
            acl: Some(vec![
                Grant {
                    grantee: None,
                    privilege: "TEMPORARY".into(),
                    grantable: false,
                },
                Grant {
                    grantee: Some("Reader".into()),
                    privilege: "CONNECT".into(),
                    grantable: true,
                },
            ]),
        }
    }

    #[test]
    fn statements_quote_every_name_and_keep_values_out_of_the_sql() {
        let s = odd()
            .statements("my \"db\"", ApplyOptions::default(), &|_| true)
            .unwrap();
        let sql: Vec<&str> = s.iter().map(|s| s.sql.as_str()).collect();
        assert_eq!(
            sql,
            [
                "ALTER DATABASE \"my \"\"db\"\"\" OWNER TO \"App \"\"Owner\"\"\"",
                "ALTER DATABASE \"my \"\"db\"\"\" CONNECTION LIMIT 5",
                "ALTER DATABASE \"my \"\"db\"\"\" SET \"search_path\" FROM CURRENT",
                "ALTER DATABASE \"my \"\"db\"\"\" SET \"app.x\" FROM CURRENT",
                "ALTER ROLE \"ränder\" IN DATABASE \"my \"\"db\"\"\" SET \"work_mem\" FROM CURRENT",
                "REVOKE ALL ON DATABASE \"my \"\"db\"\"\" FROM PUBLIC, \"App \"\"Owner\"\"\"",
                "GRANT TEMPORARY ON DATABASE \"my \"\"db\"\"\" TO PUBLIC",
                "GRANT CONNECT ON DATABASE \"my \"\"db\"\"\" TO \"Reader\" WITH GRANT OPTION",
            ]
        );
        assert_eq!(s[3].setting, Some(("app.x".to_string(), "a=b".to_string())));
    }

    #[test]
    fn missing_roles_fail_unless_no_owner_leaves_them_out() {
        let none = |_: &str| false;
        assert!(odd()
            .statements("d", ApplyOptions::default(), &none)
            .is_err());
        let s = odd()
            .statements("d", ApplyOptions { no_owner: true }, &none)
            .unwrap();
        assert!(
            s.iter().all(|s| !s.sql.contains("Owner")
                && !s.sql.contains("Reader")
                && !s.sql.contains("ränder")),
            "{s:?}"
        );
        assert!(s
            .iter()
            .any(|s| s.sql == "GRANT TEMPORARY ON DATABASE \"d\" TO PUBLIC"));
    }

    #[test]
    fn an_edited_privilege_is_refused() {
        let mut p = odd();
        p.acl.as_mut().unwrap()[0].privilege = "CONNECT; DROP TABLE x".into();
        assert!(p
            .statements("d", ApplyOptions::default(), &|_| true)
            .is_err());
    }

    #[test]
    fn round_trips_through_the_manifest() {
        let doc = serde_json::json!({ MANIFEST_KEY: odd().to_json() });
        assert_eq!(DbProperties::from_manifest(&doc).unwrap(), Some(odd()));
        assert_eq!(
            DbProperties::from_manifest(&serde_json::json!({})).unwrap(),
            None
        );
        assert!(DbProperties::from_manifest(&serde_json::json!({ MANIFEST_KEY: 3 })).is_err());
    }

    #[test]
    fn comments() {
        assert_eq!(
            comment_sql("d", Some("it's")),
            "COMMENT ON DATABASE \"d\" IS 'it''s'"
        );
        assert_eq!(comment_sql("d", None), "COMMENT ON DATABASE \"d\" IS NULL");
    }
}
