//! The commands: orchestration only, one module each. `dispatch` is the single entry point used
//! by `main`.

pub mod backup;
pub mod backup_globals;
pub mod catalog_rebuild;
pub mod check;
pub mod drill;
pub mod list;
pub mod migrate;
pub mod notify_test;
pub mod prune;
pub mod restore;
pub mod restore_all;
pub mod source;
pub mod status;
pub mod verify;

use anyhow::Result;

use crate::cli::{Cli, Command};
use crate::config::Settings;
use crate::error::ExitStatus;

pub fn dispatch(cli: &Cli) -> Result<ExitStatus> {
    if let Command::GenerateMan = cli.command {
        print!("{}", crate::manpage::render()?);
        return Ok(ExitStatus::Ok);
    }
    if let Command::GenerateSettingsTable { group } = &cli.command {
        if group == "jobs" {
            print!("{}", crate::jobs::markdown_tables());
            return Ok(ExitStatus::Ok);
        }
        let group = crate::registry::Group::parse(group).ok_or_else(|| {
            crate::error::config_error_hint(
                format!("no settings group {group:?}"),
                "use general, notify or jobs",
            )
        })?;
        print!("{}", crate::registry::markdown_table(group));
        return Ok(ExitStatus::Ok);
    }
    if let Command::GenerateExitTable = cli.command {
        print!("{}", crate::error::markdown_table());
        return Ok(ExitStatus::Ok);
    }
    if let Command::Keygen { output } = &cli.command {
        let public = crate::encrypt::write_new_identity(output)?;
        println!("{public}");
        return Ok(ExitStatus::Ok);
    }
    let config_file = Settings::config_file_for(cli.config.as_deref());
    let settings = Settings::load_layers(config_file.as_deref(), cli.env_file.as_deref())?;
    match &cli.command {
        Command::Backup(args) => backup::run(args, settings),
        Command::Migrate => migrate::run(settings),
        Command::Catalog {
            action: crate::cli::CatalogCommand::Rebuild(args),
        } => catalog_rebuild::run(args, settings),
        Command::List(args) => list::run(args, settings),
        Command::Restore(args) => restore::run(args, settings),
        Command::Verify(args) => verify::run(args, settings),
        Command::Prune(args) => prune::run(args, settings),
        Command::Pin(args) => prune::pin(args, settings, true),
        Command::Unpin(args) => prune::pin(args, settings, false),
        Command::Drill(args) => drill::run(args, settings),
        Command::NotifyTest => notify_test::run(settings),
        Command::Check(args) => check::run(args, settings),
        Command::Status(args) => status::run(args, settings),
        Command::GenerateMan
        | Command::GenerateSettingsTable { .. }
        | Command::GenerateExitTable
        | Command::Keygen { .. } => {
            unreachable!()
        }
    }
}
