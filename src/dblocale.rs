//! A database's encoding and locale (encoding, locale provider, LC_COLLATE, LC_CTYPE and the
//! provider's own locale): read from the source at backup time, recorded with the backup's
//! properties, and turned into the options of the `CREATE DATABASE ... TEMPLATE template0` that
//! `restore --create` (and `verify --restore-test`) run, so that the copy stores and sorts text
//! exactly as the source did. A plain dump carries none of this: without it a SQL_ASCII or LATIN1
//! database comes back in the server's default encoding, an ICU one with libc collation.

use std::collections::BTreeMap;

use anyhow::{Context, Result};

use crate::storage::props;

/// The properties that decide how a database stores and compares text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DbLocale {
    /// `UTF8`, `SQL_ASCII`, `LATIN1`, ...
    pub encoding: String,
    /// `libc`, `icu` or `builtin`.
    pub provider: String,
    pub collate: String,
    pub ctype: String,
    /// The ICU locale (`icu`) or the builtin provider's locale (`builtin`); none for `libc`.
    pub provider_locale: Option<String>,
}

impl DbLocale {
    /// The current database's settings (`server_major` picks the catalog columns: the provider
    /// exists since PostgreSQL 15, its locale column is `datlocale` since 17).
    pub fn read(client: &mut postgres::Client, server_major: u32) -> Result<DbLocale> {
        let (provider, provider_locale) = match server_major {
            0..=14 => ("'c'::text", "NULL::text"),
            15 | 16 => ("datlocprovider::text", "daticulocale::text"),
            _ => ("datlocprovider::text", "datlocale::text"),
        };
        let row = client
            .query_one(
                &format!(
                    "SELECT pg_encoding_to_char(encoding)::text, {provider}, datcollate::text,
                            datctype::text, {provider_locale}
                       FROM pg_database WHERE datname = current_database()"
                ),
                &[],
            )
            .context("reading the database's encoding and locale")?;
        let code: String = row.get(1);
        Ok(DbLocale {
            encoding: row.get(0),
            provider: match code.as_str() {
                "i" => "icu",
                "b" => "builtin",
                _ => "libc",
            }
            .to_string(),
            collate: row.get(2),
            ctype: row.get(3),
            provider_locale: row
                .get::<_, Option<String>>(4)
                .filter(|l| !l.is_empty() && code != "c"),
        })
    }

    /// As backup properties; `None` when a value is too long for a property of `budget` bytes
    /// (the targets' [`crate::storage::Capabilities::max_property_bytes`]; then none of them is
    /// recorded: a cut locale name would create the wrong database).
    pub fn properties(&self, budget: Option<usize>) -> Option<Vec<(String, String)>> {
        let mut out = vec![
            (props::ENCODING, self.encoding.as_str()),
            (props::LOCALE_PROVIDER, self.provider.as_str()),
            (props::COLLATE, self.collate.as_str()),
            (props::CTYPE, self.ctype.as_str()),
        ];
        if let Some(l) = &self.provider_locale {
            out.push((props::PROVIDER_LOCALE, l.as_str()));
        }
        out.into_iter()
            .map(|(k, v)| {
                (crate::storage::fit_property(k, v, budget) == v).then(|| (k.into(), v.into()))
            })
            .collect()
    }

    /// The recorded settings; `None` for a backup made before pgdrive recorded them.
    pub fn from_properties(properties: &BTreeMap<String, String>) -> Option<DbLocale> {
        let get = |k: &str| properties.get(k).filter(|v| !v.is_empty()).cloned();
        Some(DbLocale {
            encoding: get(props::ENCODING)?,
            provider: get(props::LOCALE_PROVIDER)?,
            collate: get(props::COLLATE)?,
            ctype: get(props::CTYPE)?,
            provider_locale: get(props::PROVIDER_LOCALE),
        })
    }

    /// The `CREATE DATABASE` options that recreate these settings on a server of `target_major`.
    pub fn create_options(&self, target_major: u32) -> Result<String> {
        // the provider is a keyword in the statement, not a quoted value: anything but the three
        // names (a sidecar or Drive property someone edited) could add options of its own
        if !matches!(self.provider.as_str(), "libc" | "icu" | "builtin") {
            return Err(crate::error::corrupt(format!(
                "the backup records the locale provider {:?}, which is none of libc, icu and builtin: its properties were changed since it was stored",
                self.provider
            )));
        }
        let mut sql = format!(
            "ENCODING {} LC_COLLATE {} LC_CTYPE {}",
            quote_literal(&self.encoding),
            quote_literal(&self.collate),
            quote_literal(&self.ctype)
        );
        if target_major < 15 {
            if self.provider != "libc" {
                return Err(crate::error::config_error_hint(
                    format!(
                        "the backed-up database uses the {} locale provider, which PostgreSQL {target_major} cannot create",
                        self.provider
                    ),
                    "restore into a server of PostgreSQL 15 or later",
                ));
            }
            return Ok(sql);
        }
        sql.push_str(&format!(" LOCALE_PROVIDER {}", self.provider));
        let keyword = match self.provider.as_str() {
            "icu" => Some("ICU_LOCALE"),
            "builtin" => Some("BUILTIN_LOCALE"),
            _ => None,
        };
        if let (Some(keyword), Some(locale)) = (keyword, &self.provider_locale) {
            sql.push_str(&format!(" {keyword} {}", quote_literal(locale)));
        }
        Ok(sql)
    }

    /// For logs and the restore plan.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "encoding {}, {} locale, collate {}, ctype {}",
            self.encoding, self.provider, self.collate, self.ctype
        );
        if let Some(l) = &self.provider_locale {
            s.push_str(&format!(", {} locale {l}", self.provider));
        }
        s
    }
}

/// A string literal for SQL, whatever `standard_conforming_strings` is.
pub fn quote_literal(s: &str) -> String {
    if s.contains('\\') {
        format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn icu() -> DbLocale {
        DbLocale {
            encoding: "UTF8".into(),
            provider: "icu".into(),
            collate: "C.UTF-8".into(),
            ctype: "C.UTF-8".into(),
            provider_locale: Some("de-u-co-phonebk".into()),
        }
    }

    #[test]
    fn properties_round_trip() {
        let props: BTreeMap<String, String> =
            icu().properties(Some(124)).unwrap().into_iter().collect();
        assert_eq!(DbLocale::from_properties(&props), Some(icu()));
        assert_eq!(DbLocale::from_properties(&BTreeMap::new()), None);
    }

    #[test]
    fn a_locale_too_long_for_drive_is_not_recorded_at_all() {
        let mut l = icu();
        l.collate = "x".repeat(120);
        assert_eq!(l.properties(Some(124)), None);
        assert!(
            l.properties(None).is_some(),
            "a target without a limit records it"
        );
    }

    #[test]
    fn create_options_name_every_setting() {
        assert_eq!(
            icu().create_options(15).unwrap(),
            "ENCODING 'UTF8' LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8' LOCALE_PROVIDER icu ICU_LOCALE 'de-u-co-phonebk'"
        );
        let mut libc = icu();
        libc.provider = "libc".into();
        libc.provider_locale = None;
        libc.encoding = "SQL_ASCII".into();
        libc.collate = "it's".into();
        assert_eq!(
            libc.create_options(14).unwrap(),
            "ENCODING 'SQL_ASCII' LC_COLLATE 'it''s' LC_CTYPE 'C.UTF-8'"
        );
        assert!(icu().create_options(14).is_err());
    }

    #[test]
    fn literals_are_quoted() {
        assert_eq!(quote_literal("a'b"), "'a''b'");
        assert_eq!(quote_literal("a\\'b"), "E'a\\\\''b'");
    }
}
