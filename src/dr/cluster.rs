//! The drill's throwaway PostgreSQL cluster: `initdb` in a new 0700 temporary directory, started on
//! a free loopback port with its socket in that directory, and always removed: [`Drop`] stops the
//! postmaster (`pg_ctl stop -m immediate`, then SIGKILL from `postmaster.pid`) and deletes the
//! directory, on success, on failure and when SIGINT/SIGTERM end the run (the error unwinds to it).
//! As root the server programs run as the `postgres` user (initdb refuses root).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, Context, Result};

pub struct Scratch {
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
}

fn as_root() -> bool {
    // SAFETY: no arguments, no side effects.
    unsafe { libc::geteuid() == 0 }
}

impl Scratch {
    /// Creates and starts the cluster with the programs in `bin`.
    pub fn start(bin: &Path) -> Result<Scratch> {
        let token = crate::fsutil::random_token()?;
        let dir = std::env::temp_dir().join(format!("pgdrive-drill-{}", &token[..12]));
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&dir)
                .with_context(|| format!("creating {}", dir.display()))?;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let scratch = Scratch {
            dir,
            bin: bin.to_path_buf(),
            port,
        };
        if as_root() {
            scratch.tool(
                "chown",
                &["postgres", &scratch.dir.to_string_lossy()],
                false,
            )?;
        }
        let data = scratch.dir.join("data");
        scratch.tool(
            "initdb",
            &[
                "-D",
                &data.to_string_lossy(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ],
            true,
        )?;
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            scratch.dir.display()
        );
        scratch.tool(
            "pg_ctl",
            &[
                "-D",
                &data.to_string_lossy(),
                "-o",
                &options,
                "-l",
                &scratch.dir.join("log").to_string_lossy(),
                "-w",
                "start",
            ],
            true,
        )?;
        Ok(scratch)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cluster's maintenance database, as its superuser.
    pub fn url(&self) -> Result<crate::pgconn::ConnInfo> {
        crate::pgconn::ConnInfo::parse(&format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            self.port
        ))
    }

    fn tool(&self, name: &str, args: &[&str], server: bool) -> Result<()> {
        let program = if server {
            self.bin.join(name)
        } else {
            PathBuf::from(name)
        };
        let mut cmd = if server && as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let out = cmd
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .with_context(|| format!("running {}", program.display()))?;
        if !out.status.success() {
            return Err(anyhow!(
                "{name} failed: {}",
                String::from_utf8_lossy(&out.stderr)
                    .trim()
                    .replace('\n', " | ")
            ));
        }
        Ok(())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = self.tool(
            "pg_ctl",
            &[
                "-D",
                &data.to_string_lossy(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
            true,
        );
        if let Ok(pid) = std::fs::read_to_string(data.join("postmaster.pid")) {
            if let Some(pid) = pid
                .lines()
                .next()
                .and_then(|l| l.trim().parse::<i32>().ok())
            {
                // SAFETY: signalling a process id read from the cluster's own pid file.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            crate::log::error(
                "could not remove the drill's cluster directory",
                &[
                    ("dir", self.dir.display().to_string()),
                    ("error", e.to_string()),
                ],
            );
        }
    }
}
