//! `pgdrive migrate`: creates or upgrades the `backups` catalog table and exits.

use anyhow::Result;

use crate::config::{database_from, Settings};
use crate::error::{config_error_hint, ExitStatus};

pub fn run(settings: Settings) -> Result<ExitStatus> {
    for w in &settings.warnings {
        crate::log::warn(w, &[]);
    }
    let info = match database_from(&settings, "PGDRIVE_CATALOG_URL")? {
        Some(i) => i,
        None => database_from(&settings, "DATABASE_URL")?.ok_or_else(|| {
            config_error_hint(
                "DATABASE_URL is not set",
                "set DATABASE_URL (or PGDRIVE_CATALOG_URL)",
            )
        })?,
    };
    let mut client = super::backup::connect(&info, "the catalog database")?;
    let applied = crate::catalog::migrate(&mut client)?;
    if applied.is_empty() {
        crate::log::info("catalog is up to date", &[("database", info.redacted())]);
    } else {
        crate::log::info(
            "catalog migrated",
            &[
                ("database", info.redacted()),
                ("applied", applied.join(",")),
            ],
        );
    }
    Ok(ExitStatus::Ok)
}
