//! All integration tests, one binary (one link of the harness in `common`, one process per
//! test under nextest). Each module is one area of the product.

mod archive_rows;
mod backup_drive;
mod backup_local;
mod check_status;
mod cli;
mod common;
mod config_file;
mod disaster_recovery;
mod email_render;
mod emulator_fidelity;
mod encryption;
mod exit_status;
mod fanout;
mod jobs;
mod local_target;
mod lock_status;
mod notify;
mod packaging;
mod restore;
mod restore_killed;
mod restore_stall;
mod retention_rules;
mod s3_target;
mod secrets;
mod sftp_target;
mod stale_partials;
mod stored_size;
mod targets;
