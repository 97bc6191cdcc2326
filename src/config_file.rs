//! The config file (`--config`, default `/etc/pgdrive/pgdrive.toml` when present): TOML whose
//! keys are the registry's config-file keys (`database_url`, `[drive] daily_folder_id`, …), each
//! the same setting as one environment variable. Read into values by environment name, so that
//! every setting is read one way ([`crate::config::Settings::get`]).
//!
//! Invariants: no value from the file is ever quoted in a message (parse errors name the line,
//! type errors the key); an unknown key is a configuration error (78), because the file is
//! pgdrive's own and a misspelt key would silently leave its setting at the default; a file that
//! holds a secret and is readable by group or others is warned about.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::Result;

use crate::error::config_error_hint;
use crate::registry::{self, Secret, Setting, Type};

const HINT_KEYS: &str = "the keys are listed in pgdrive.toml.example and README \"Configuration\"";

/// What a config file holds: settings by environment name, and the named targets and jobs.
#[derive(Debug, Default)]
pub struct FileContents {
    pub values: HashMap<String, String>,
    pub declared: crate::jobs::Declared,
}

/// The file's settings and declarations; permission warnings go to `warnings`.
pub fn read(path: &Path, warnings: &mut Vec<String>) -> Result<FileContents> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| {
        config_error_hint(
            format!("cannot read config file {shown}: {e}"),
            "check the --config path (PGDRIVE_CONFIG), and that the user pgdrive runs as may read it; --config /dev/null reads none",
        )
    })?;
    let contents = parse(&text)
        .map_err(|e| config_error_hint(format!("config file {shown}: {}", e.message), e.hint))?;
    let values = &contents.values;
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode())
        .unwrap_or(0);
    if mode & 0o077 != 0 {
        let secret_keys: Vec<&str> = values
            .iter()
            .filter_map(|(env, value)| registry::by_env(env).filter(|s| holds_secret(s, value)))
            .filter_map(|s| s.key)
            .collect();
        if !secret_keys.is_empty() {
            let mut secret_keys = secret_keys;
            secret_keys.sort();
            warnings.push(format!(
                "config file {shown} is readable by group or others (mode {:o}) and holds secrets ({}): chmod 600 it",
                mode & 0o777,
                secret_keys.join(", ")
            ));
        }
    }
    Ok(contents)
}

/// Whether a value of this setting is (or carries) a secret.
fn holds_secret(setting: &Setting, value: &str) -> bool {
    match setting.secret {
        Secret::No => false,
        Secret::Value | Secret::TokenUrl => true,
        // inline key JSON, or a connection string with a password in it
        Secret::Embedded => {
            value.trim_start().starts_with('{')
                || crate::pgconn::ConnInfo::parse(value).is_ok_and(|c| c.get("password").is_some())
        }
    }
}

/// Why a file was refused: one line, and what to do.
#[derive(Debug)]
pub struct FileError {
    pub message: String,
    pub hint: String,
}

fn refused(message: String, hint: &str) -> FileError {
    FileError {
        message,
        hint: hint.to_string(),
    }
}

/// Parses the text of a config file into settings by environment name and declarations.
pub fn parse(text: &str) -> Result<FileContents, FileError> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        // the error's own rendering quotes the line, which may hold a secret: line and message only
        let line = e
            .span()
            .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
        let at = line.map(|l| format!("line {l}: ")).unwrap_or_default();
        refused(
            format!("{at}not valid TOML: {}", e.message().trim_end_matches('\n')),
            "write `key = \"value\"` lines and `[table]` headers (see pgdrive.toml.example)",
        )
    })?;
    let declared = crate::jobs::parse(table.get("targets"), table.get("jobs"))?;
    let mut values = HashMap::new();
    let mut unknown = Vec::new();
    flatten("", &table, &mut values, &mut unknown)?;
    if !unknown.is_empty() {
        let listed: Vec<String> = unknown
            .iter()
            .map(|key| match registry::nearest_key(key) {
                Some(near) => format!("`{key}` (did you mean `{near}`?)"),
                None => format!("`{key}`"),
            })
            .collect();
        return Err(refused(
            format!(
                "unknown key{} {}: a misspelt key would leave its setting unset",
                if unknown.len() == 1 { "" } else { "s" },
                listed.join(", ")
            ),
            HINT_KEYS,
        ));
    }
    Ok(FileContents { values, declared })
}

fn flatten(
    prefix: &str,
    table: &toml::Table,
    values: &mut HashMap<String, String>,
    unknown: &mut Vec<String>,
) -> Result<(), FileError> {
    for (name, value) in table {
        let key = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        if let Some(setting) = registry::by_key(&key) {
            values.insert(setting.env.to_string(), scalar(setting, &key, value)?);
            continue;
        }
        match value {
            // read by `crate::jobs`
            toml::Value::Table(_)
                if prefix.is_empty() && registry::DECLARATION_TABLES.contains(&name.as_str()) => {}
            toml::Value::Table(inner) if is_table(&key) => flatten(&key, inner, values, unknown)?,
            _ => unknown.push(key),
        }
    }
    Ok(())
}

/// Whether some declared key lives under `key.`.
fn is_table(key: &str) -> bool {
    let prefix = format!("{key}.");
    registry::SETTINGS
        .iter()
        .filter_map(|s| s.key)
        .any(|k| k.starts_with(&prefix))
}

/// A TOML value as the setting's string form (the environment's); the value is never quoted.
fn scalar(setting: &Setting, key: &str, value: &toml::Value) -> Result<String, FileError> {
    let text = |v: &toml::Value| match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(n) => Some(n.to_string()),
        _ => None,
    };
    let converted = match (setting.ty, value) {
        (_, toml::Value::String(s)) => Some(s.clone()),
        (Type::Number | Type::Size, toml::Value::Integer(n)) => Some(n.to_string()),
        (Type::List, toml::Value::Array(items)) => items
            .iter()
            .map(text)
            .collect::<Option<Vec<String>>>()
            .map(|items| items.join(",")),
        _ => None,
    };
    converted.ok_or_else(|| {
        let expected = match setting.ty {
            Type::Text => "a string",
            Type::Number => "a whole number",
            Type::Size => "a size such as \"8MiB\" or a number of bytes",
            Type::List => "an array of strings, or one comma-separated string",
        };
        refused(
            format!("`{key}` must be {expected}, not {}", value.type_str()),
            HINT_KEYS,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_environment_names() {
        let v = parse(
            "database_url = \"postgres://u@h/db\"\nthreads = 2\nchunk_size = \"256KiB\"\ncritical_tables = [\"orders\", \"public.payments\"]\n[drive]\ndaily_folder_id = \"F1\"\n[keep]\ndaily = 3\n[notify]\nemail = \"a@x.test,b@x.test\"\n",
        )
        .unwrap()
        .values;
        assert_eq!(v["DATABASE_URL"], "postgres://u@h/db");
        assert_eq!(v["PGDRIVE_THREADS"], "2");
        assert_eq!(v["PGDRIVE_CHUNK_SIZE"], "256KiB");
        assert_eq!(v["PGDRIVE_CRITICAL_TABLES"], "orders,public.payments");
        assert_eq!(v["GOOGLE_DRIVE_FOLDER_ID"], "F1");
        assert_eq!(v["PGDRIVE_KEEP_DAILY"], "3");
        assert_eq!(v["PGDRIVE_NOTIFY_EMAIL"], "a@x.test,b@x.test");
        assert_eq!(v.len(), 7);
        // dotted keys are the same keys
        let v = parse("drive.daily_folder_id = \"F2\"\n").unwrap().values;
        assert_eq!(v["GOOGLE_DRIVE_FOLDER_ID"], "F2");
    }

    #[test]
    fn unknown_keys_are_refused_with_the_nearest_known_one() {
        let e =
            parse("databse_url = \"x\"\n[drive]\ndaily_foldr_id = \"y\"\nbogus = 1\n").unwrap_err();
        assert!(
            e.message
                .contains("`databse_url` (did you mean `database_url`?)"),
            "{e:?}"
        );
        assert!(
            e.message
                .contains("`drive.daily_foldr_id` (did you mean `drive.daily_folder_id`?)"),
            "{e:?}"
        );
        assert!(e.message.contains("`drive.bogus`"), "{e:?}");
        let e = parse("[nonsense]\nx = 1\n").unwrap_err();
        assert!(e.message.contains("`nonsense`"), "{e:?}");
        let e = parse("[jobs.nightly]\nkind = \"dayly\"\n").unwrap_err();
        assert!(
            e.message.contains("[jobs.nightly]: `kind` must be"),
            "{e:?}"
        );
        let d = parse("[jobs.nightly]\nkind = \"daily\"\n")
            .unwrap()
            .declared;
        assert_eq!(d.jobs.len(), 1);
    }

    #[test]
    fn errors_never_quote_a_value() {
        let secret = "s3cr3t-Pa55word";
        for text in [
            format!("[smtp]\npassword = \"{secret}\nhost = 1\n"),
            format!("[smtp]\npassword = {secret}\n"),
            format!("[smtp]\npassword = [\"{secret}\", {{}}]\n"),
            format!("[sendgrid]\napi_kye = \"{secret}\"\n"),
            format!("[smtp]\npassword = \"x\"\npassword = \"{secret}\"\n"),
            format!("threads = true\n[smtp]\npassword = \"{secret}\"\n"),
        ] {
            let e = parse(&text).unwrap_err();
            assert!(
                !e.message.contains(secret) && !e.hint.contains(secret),
                "{e:?}"
            );
            assert!(!e.message.contains("s3cr3t"), "{e:?}");
        }
        let e = parse("[smtp]\npassword = 5\n").unwrap_err();
        assert_eq!(e.message, "`smtp.password` must be a string, not integer");
        let e = parse("a = 1\n\n[smtp\n").unwrap_err();
        assert!(e.message.starts_with("line 3: not valid TOML"), "{e:?}");
    }
}
