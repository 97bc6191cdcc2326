//! Where backups go. One small interface, [`Target`], with a Google Drive implementation
//! ([`drive::DriveTarget`]) and a local-directory one ([`local::LocalTarget`]); S3 or SFTP would be
//! further implementations. A target opens an upload before pg_dump starts, receives the
//! compressed stream in chunks, and only makes a backup visible in `finish`, after its size and
//! MD5 have been checked against what pgdrive computed.
//!
//! Backups are recognised by their properties (Drive `appProperties`, a sidecar file locally),
//! never by their names, so listing, pruning and restoring work from the storage alone.

pub mod drive;
pub mod local;

use std::collections::BTreeMap;

use anyhow::Result;

/// Property keys pgdrive writes on every backup.
pub mod props {
    /// Marks a file as pgdrive's; the value is the metadata format version.
    pub const MARKER: &str = "pgdrive";
    pub const MARKER_VALUE: &str = "1";
    pub const KIND: &str = "pgdrive_kind";
    pub const DATABASE: &str = "pgdrive_database";
    pub const STARTED_AT: &str = "pgdrive_started_at";
    pub const VERSION: &str = "pgdrive_version";
    pub const SERVER_VERSION: &str = "pgdrive_server_version";
    pub const PG_DUMP_VERSION: &str = "pgdrive_pg_dump_version";
    pub const FORMAT: &str = "pgdrive_format";
    pub const COMPRESSION: &str = "pgdrive_compression";
    pub const HOST: &str = "pgdrive_host";
    /// Written once the upload is complete and verified.
    pub const SHA256: &str = "pgdrive_sha256";
    pub const MD5: &str = "pgdrive_md5";
    pub const SIZE: &str = "pgdrive_size";
    pub const RAW_SIZE: &str = "pgdrive_raw_size";
}

/// Drive limits each appProperties entry to 124 bytes of key plus value (UTF-8).
pub fn fit_property(key: &str, value: &str) -> String {
    let budget = 124usize.saturating_sub(key.len());
    if value.len() <= budget {
        return value.to_string();
    }
    let mut end = budget;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value[..end].to_string()
}

/// Size and checksums of the stored (compressed) bytes, computed while streaming.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digest {
    pub size: u64,
    pub sha256: String,
    pub md5: String,
}

/// What is known once the stream ended successfully: checksums, the properties to add, and the
/// per-table row counts (the manifest a restore test checks against).
#[derive(Clone, Debug)]
pub struct Completion {
    pub digest: Digest,
    pub properties: BTreeMap<String, String>,
    pub row_counts: BTreeMap<String, u64>,
}

/// Largest manifest kept in a Drive file's description.
const MANIFEST_MAX_BYTES: usize = 16_000;

/// The manifest as JSON; when it would be too large for a file description, the row counts are
/// dropped (marked `"truncated": true`) rather than cut arbitrarily.
pub fn manifest_json(row_counts: &BTreeMap<String, u64>) -> String {
    let full = serde_json::json!({ "pgdrive_manifest": 1, "row_counts": row_counts }).to_string();
    if full.len() <= MANIFEST_MAX_BYTES {
        return full;
    }
    serde_json::json!({ "pgdrive_manifest": 1, "tables": row_counts.len(), "truncated": true })
        .to_string()
}

/// A backup that was stored and verified.
#[derive(Clone, Debug)]
pub struct StoredObject {
    pub target: &'static str,
    pub id: String,
    pub name: String,
    /// A link (Drive) or path (local) a person can use.
    pub location: String,
}

/// A backup found in a listing.
#[derive(Clone, Debug, PartialEq)]
pub struct Listed {
    pub id: String,
    pub name: String,
    pub created_ms: Option<i64>,
    pub size: Option<u64>,
    pub properties: BTreeMap<String, String>,
}

/// A storage destination.
pub trait Target {
    /// `drive` or `local`.
    fn label(&self) -> &'static str;
    /// For logs.
    fn describe(&self) -> String;
    /// Checks the destination exists and can be written, before anything is dumped.
    fn preflight(&mut self) -> Result<()>;
    /// Opens an upload of a new object; nothing is visible until `finish`.
    fn begin<'s>(
        &'s mut self,
        name: &str,
        mime_type: &str,
        properties: &BTreeMap<String, String>,
        chunk_size: usize,
    ) -> Result<Box<dyn Upload + 's>>;
    /// Every object whose properties include all of `selector`.
    fn list(&mut self, selector: &BTreeMap<String, String>) -> Result<Vec<Listed>>;
    /// Deletes an object permanently.
    fn delete(&mut self, id: &str) -> Result<()>;
}

/// An upload in progress.
pub trait Upload {
    fn write(&mut self, data: &[u8]) -> Result<()>;
    /// Completes the upload, checks the stored size and MD5 against the digest, records the final
    /// properties and the manifest, and deletes the object again if any of that fails.
    fn finish(self: Box<Self>, done: &Completion) -> Result<StoredObject>;
    /// Abandons the upload; nothing is left behind.
    fn abort(self: Box<Self>);
}
