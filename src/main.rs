//! The pgdrive binary: parse, run, map the outcome to an exit status. All of the work is in the
//! library; errors are printed once, here, as `pgdrive: error: …` with a `hint:` line.

use std::process::ExitCode;

use pgdrive::error::{self, ExitStatus};

fn main() -> ExitCode {
    let cli = match pgdrive::cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                ExitStatus::Usage.code()
            } else {
                ExitStatus::Ok.code()
            });
        }
    };
    pgdrive::log::init(cli.log_format, cli.verbose, cli.quiet);
    if let Err(e) = pgdrive::signals::install() {
        eprintln!("pgdrive: warning: cannot install signal handlers: {e}");
    }
    match pgdrive::commands::dispatch(&cli) {
        Ok(status) => ExitCode::from(status.code()),
        Err(err) => {
            let status = error::print(&err);
            ExitCode::from(status.code())
        }
    }
}
