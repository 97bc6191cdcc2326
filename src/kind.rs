//! The backup kinds (daily, hourly, schema): what each job dumps, where it goes and how long it
//! is kept are settings per kind; this is the name shared by the command line, the catalog's
//! `type` column, file names, locks and reports.

use clap::ValueEnum;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The whole database; folder GOOGLE_DRIVE_FOLDER_ID; keeps 14.
    Daily,
    /// Only PGDRIVE_CRITICAL_TABLES; folder HOURLY_DRIVE_FOLDER_ID; keeps 48.
    Hourly,
    /// Structure only (pg_dump --schema-only); folder SCHEMA_DRIVE_FOLDER_ID; kept forever.
    Schema,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Daily => "daily",
            Kind::Hourly => "hourly",
            Kind::Schema => "schema",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "daily" => Some(Kind::Daily),
            "hourly" => Some(Kind::Hourly),
            "schema" => Some(Kind::Schema),
            _ => None,
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
