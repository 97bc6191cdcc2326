//! Where backups go. One small interface, [`Target`], with a Google Drive implementation
//! ([`drive::DriveTarget`]) and a local-directory one ([`local::LocalTarget`]); S3 or SFTP would be
//! further implementations. A target opens an upload before pg_dump starts, receives the
//! compressed stream in chunks, and only makes a backup visible in `finish`, after its size and
//! MD5 have been checked against what pgdrive computed.
//!
//! For restores, a target also finds one backup ([`Target::get`]: its listing entry and the
//! row-count manifest) and opens its bytes as a stream ([`Target::open`]; Drive downloads are
//! ranged and resume after a dropped connection).
//!
//! Backups are recognised by their properties (Drive `appProperties`, a sidecar file locally),
//! never by their names, so listing, pruning and restoring work from the storage alone.

pub mod drive;
pub mod local;

use std::collections::BTreeMap;

use std::io::Read;

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
    /// The source database's encoding and locale (see `crate::dblocale`), so that
    /// `restore --create` recreates it as it was.
    pub const ENCODING: &str = "pgdrive_encoding";
    pub const LOCALE_PROVIDER: &str = "pgdrive_locale_provider";
    pub const COLLATE: &str = "pgdrive_collate";
    pub const CTYPE: &str = "pgdrive_ctype";
    pub const PROVIDER_LOCALE: &str = "pgdrive_provider_locale";
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

/// SHA-256, MD5 and the byte count of a stream, computed together: the one implementation behind
/// the backup's digest, the local target's read-back and restore's checks.
#[derive(Default, Clone)]
pub struct Hasher {
    sha256: sha2::Sha256,
    md5: md5::Md5,
    size: u64,
}

impl Hasher {
    pub fn update(&mut self, data: &[u8]) {
        use md5::Digest as _;
        self.sha256.update(data);
        self.md5.update(data);
        self.size += data.len() as u64;
    }

    pub fn finish(self) -> Digest {
        use md5::Digest as _;
        Digest {
            size: self.size,
            sha256: hex(&self.sha256.finalize()),
            md5: hex(&self.md5.finalize()),
        }
    }
}

/// Lower-case hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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

/// The row counts of a manifest written by [`manifest_json`]; `None` when absent, not JSON, or
/// truncated (too many tables to fit).
pub fn parse_manifest(text: &str) -> Option<BTreeMap<String, u64>> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    if v["pgdrive_manifest"].as_u64() != Some(1) {
        return None;
    }
    let counts = v["row_counts"].as_object()?;
    counts
        .iter()
        .map(|(k, n)| Some((k.clone(), n.as_u64()?)))
        .collect()
}

/// One backup found by id: what a listing shows plus the manifest recorded at backup time.
#[derive(Clone, Debug)]
pub struct Found {
    pub listed: Listed,
    pub row_counts: Option<BTreeMap<String, u64>>,
}

impl Listed {
    pub fn prop(&self, key: &str) -> Option<&str> {
        self.properties
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The size and checksums recorded when the backup was stored; `None` for a file that is not
    /// a complete pgdrive backup (no marker, or the upload never recorded its checksums).
    pub fn recorded_digest(&self) -> Option<Digest> {
        if self.prop(props::MARKER) != Some(props::MARKER_VALUE) {
            return None;
        }
        Some(Digest {
            size: self.prop(props::SIZE)?.parse().ok()?,
            sha256: self.prop(props::SHA256)?.to_string(),
            md5: self.prop(props::MD5)?.to_string(),
        })
    }
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
    /// Checks the destination can be read (listing, downloading), without requiring write access.
    fn check_readable(&mut self) -> Result<()>;
    /// One object by id, with its manifest.
    fn get(&mut self, id: &str) -> Result<Found>;
    /// The object's bytes as a stream; `size`, when known, lets a download resume up to the end.
    fn open<'s>(&'s mut self, id: &str, size: Option<u64>) -> Result<Box<dyn Read + 's>>;
}

/// An upload in progress.
pub trait Upload {
    /// Takes the next bytes of the stream (by value: an upload that must keep them until the
    /// server acknowledges them needs no copy).
    fn write(&mut self, data: Vec<u8>) -> Result<()>;
    /// Completes the upload, checks the stored size and MD5 against the digest, records the final
    /// properties and the manifest, and deletes the object again if any of that fails.
    fn finish(self: Box<Self>, done: &Completion) -> Result<StoredObject>;
    /// Abandons the upload; nothing is left behind.
    fn abort(self: Box<Self>);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_round_trip() {
        let counts = BTreeMap::from([
            ("public.orders".to_string(), 5000u64),
            ("public.\"Ä\"".to_string(), 0),
        ]);
        assert_eq!(parse_manifest(&manifest_json(&counts)), Some(counts));
        assert_eq!(
            parse_manifest("{\"pgdrive_manifest\":1,\"tables\":3,\"truncated\":true}"),
            None
        );
        assert_eq!(parse_manifest("a description someone typed"), None);
    }

    #[test]
    fn hasher_matches_known_digests_however_the_input_is_split() {
        let mut h = Hasher::default();
        h.update(b"a");
        h.update(b"");
        h.update(b"bc");
        let d = h.finish();
        assert_eq!(d.size, 3);
        assert_eq!(d.md5, "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(
            d.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
