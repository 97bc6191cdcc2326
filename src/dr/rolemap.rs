//! How a restore treats the roles a backup's objects belong to (`restore --no-owner`,
//! `restore --role-map OLD=NEW`), for a server where the original roles must not exist or go by
//! other names. One value, [`Owners`], travels from the command line to every place that names a
//! role: the plain script's rewriting (`crate::dumpscript`), the archive restore (pg_restore's own
//! flags, or its script rewritten the same way), and the database's recorded properties
//! (`crate::dr::dbprops`).
//!
//! Role names are exact (case-sensitive, as PostgreSQL stores them): `--role-map App=app` maps
//! the role named `App`, which a dump writes as `"App"`. A mapped name is always written back
//! quoted, which is correct for every name.

use std::collections::BTreeMap;

use anyhow::Result;

/// What a restore does with ownership and privileges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Owners {
    /// As the backup has them.
    #[default]
    Keep,
    /// Left out: everything is owned by the restoring role, no privileges restored.
    LeaveOut,
    /// Owners and grantees renamed by the map; roles it does not name are kept.
    Map(RoleMap),
}

impl Owners {
    /// From the command line: `--no-owner` and `--role-map` (clap keeps them apart).
    pub fn from_args(no_owner: bool, role_map: &[String]) -> Result<Owners> {
        if no_owner {
            return Ok(Owners::LeaveOut);
        }
        if role_map.is_empty() {
            return Ok(Owners::Keep);
        }
        RoleMap::parse(role_map).map(Owners::Map)
    }

    pub fn leave_out(&self) -> bool {
        matches!(self, Owners::LeaveOut)
    }

    /// The map, when there is one.
    pub fn map(&self) -> Option<&RoleMap> {
        match self {
            Owners::Map(m) => Some(m),
            _ => None,
        }
    }

    /// `role` as the restore names it.
    pub fn rename<'a>(&'a self, role: &'a str) -> &'a str {
        self.map().and_then(|m| m.get(role)).unwrap_or(role)
    }
}

/// Old role name → new role name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoleMap(BTreeMap<String, String>);

impl RoleMap {
    /// `OLD=NEW` pairs (split at the first `=`); a role mapped twice, an empty name or a pair
    /// without `=` is a usage error naming the pair (role names are not secrets).
    pub fn parse(pairs: &[String]) -> Result<RoleMap> {
        let mut map = BTreeMap::new();
        for pair in pairs {
            let bad = |why: &str| {
                crate::error::config_error_hint(
                    format!("--role-map {pair:?}: {why}"),
                    "write each mapping as --role-map OLD=NEW (once per role), e.g. --role-map app=app_restored",
                )
            };
            let Some((old, new)) = pair.split_once('=') else {
                return Err(bad("there is no '='"));
            };
            if old.is_empty() || new.is_empty() {
                return Err(bad("a role name is empty"));
            }
            if map.insert(old.to_string(), new.to_string()).is_some() {
                return Err(bad("this role is mapped more than once"));
            }
        }
        Ok(RoleMap(map))
    }

    pub fn get(&self, old: &str) -> Option<&str> {
        self.0.get(old).map(String::as_str)
    }

    /// The roles the restore will use in place of the originals.
    pub fn new_names(&self) -> impl Iterator<Item = &str> {
        let mut names: Vec<&str> = self.0.values().map(String::as_str).collect();
        names.sort_unstable();
        names.dedup();
        names.into_iter()
    }

    /// For the restore plan: `old→new, …`.
    pub fn describe(&self) -> String {
        self.0
            .iter()
            .map(|(o, n)| format!("{o}→{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Checks, before anything is changed, that every new name exists on the server `client`
    /// is connected to: a missing one is a configuration error naming them all.
    pub fn check_targets_exist(&self, client: &mut postgres::Client) -> Result<()> {
        let present: Vec<String> = client
            .query("SELECT rolname::text FROM pg_roles", &[])
            .map_err(|e| anyhow::Error::new(e).context("listing the target server's roles"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let missing: Vec<&str> = self
            .new_names()
            .filter(|n| !present.iter().any(|p| p == n))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(crate::error::config_error_hint(
            format!(
                "--role-map names roles the target server does not have: {}; nothing was changed",
                missing.join(", ")
            ),
            "create them first (CREATE ROLE …), or map to roles that exist",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn pairs_split_at_the_first_equals_sign_and_keep_case() {
        let m = RoleMap::parse(&pairs(&["App=app", "a=b=c"])).unwrap();
        assert_eq!(m.get("App"), Some("app"));
        assert_eq!(m.get("app"), None);
        assert_eq!(m.get("a"), Some("b=c"));
        assert_eq!(m.new_names().collect::<Vec<_>>(), ["app", "b=c"]);
    }

    #[test]
    fn bad_pairs_are_usage_errors() {
        for bad in [&["app"][..], &["=x"], &["x="], &["a=b", "a=c"]] {
            let e = RoleMap::parse(&pairs(bad)).unwrap_err();
            assert_eq!(
                crate::error::classify(&e),
                crate::error::ExitStatus::Config,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn owners_rename_only_mapped_roles() {
        let o = Owners::from_args(false, &pairs(&["old=new"])).unwrap();
        assert_eq!(o.rename("old"), "new");
        assert_eq!(o.rename("other"), "other");
        assert_eq!(Owners::from_args(true, &[]).unwrap(), Owners::LeaveOut);
        assert_eq!(Owners::from_args(false, &[]).unwrap(), Owners::Keep);
    }
}
