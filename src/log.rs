//! Run logging on stderr: human-readable lines with UTC timestamps, or one JSON object per line
//! (`--log-format json`) for log shippers. Every message passes through [`crate::redact::scrub`].

use std::io::Write;
use std::sync::OnceLock;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

struct Logger {
    format: LogFormat,
    min: Level,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Sets the format and verbosity once, at start-up.
pub fn init(format: LogFormat, verbose: bool, quiet: bool) {
    let min = if verbose {
        Level::Debug
    } else if quiet {
        Level::Warn
    } else {
        Level::Info
    };
    let _ = LOGGER.set(Logger { format, min });
}

/// Whether log lines are JSON (so that even the final error line stays machine-readable).
pub fn is_json() -> bool {
    logger().format == LogFormat::Json
}

fn logger() -> &'static Logger {
    LOGGER.get_or_init(|| Logger {
        format: LogFormat::Text,
        min: Level::Info,
    })
}

/// Writes one log event with structured fields.
pub fn event(level: Level, message: &str, fields: &[(&str, String)]) {
    let log = logger();
    if level < log.min {
        return;
    }
    let ts = crate::timeutil::rfc3339_millis(crate::timeutil::now_millis());
    let message = crate::redact::scrub(message);
    let line = match log.format {
        LogFormat::Text => {
            let mut line = format!("{ts} {:<5} {message}", level.as_str().to_uppercase());
            for (k, v) in fields {
                let v = crate::redact::scrub(v);
                if v.is_empty() || v.contains(char::is_whitespace) || v.contains('"') {
                    line.push_str(&format!(" {k}={v:?}"));
                } else {
                    line.push_str(&format!(" {k}={v}"));
                }
            }
            line
        }
        LogFormat::Json => {
            let mut obj = serde_json::Map::new();
            obj.insert("ts".into(), ts.into());
            obj.insert("level".into(), level.as_str().into());
            obj.insert("msg".into(), message.into());
            for (k, v) in fields {
                obj.insert((*k).into(), crate::redact::scrub(v).into());
            }
            serde_json::Value::Object(obj).to_string()
        }
    };
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
}

pub fn info(message: &str, fields: &[(&str, String)]) {
    event(Level::Info, message, fields)
}

pub fn warn(message: &str, fields: &[(&str, String)]) {
    event(Level::Warn, message, fields)
}

pub fn debug(message: &str, fields: &[(&str, String)]) {
    event(Level::Debug, message, fields)
}

pub fn error(message: &str, fields: &[(&str, String)]) {
    event(Level::Error, message, fields)
}
