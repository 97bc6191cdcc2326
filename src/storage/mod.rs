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
//!
//! Targets are built in one place, [`open`], from a [`config::TargetConfig`]; they are told apart
//! by [`Target::name`] (`drive`, `local`, or whatever a configuration calls them), and each declares
//! what it can do ([`Target::capabilities`]) so callers ask instead of assuming Drive.
//! [`memory::MemoryTarget`] is an in-process target with failure injection, and
//! [`conformance`] is the one suite every target must pass.

pub mod config;
pub mod conformance;
pub mod drive;
pub mod local;
pub mod manifest;
pub mod memory;
pub mod s3;
pub mod sftp;

use std::collections::BTreeMap;

use std::io::Read;

use anyhow::Result;

/// Property keys pgdrive writes on every backup.
pub mod props {
    /// Marks a file as pgdrive's; the value is the metadata format version.
    pub const MARKER: &str = "pgdrive";
    pub const MARKER_VALUE: &str = "1";
    pub const KIND: &str = "pgdrive_kind";
    /// The configured job that made the backup (`backup --job NAME`); absent for the built-in kinds.
    pub const JOB: &str = "pgdrive_job";
    pub const DATABASE: &str = "pgdrive_database";
    pub const STARTED_AT: &str = "pgdrive_started_at";
    pub const VERSION: &str = "pgdrive_version";
    pub const SERVER_VERSION: &str = "pgdrive_server_version";
    pub const PG_DUMP_VERSION: &str = "pgdrive_pg_dump_version";
    pub const FORMAT: &str = "pgdrive_format";
    pub const COMPRESSION: &str = "pgdrive_compression";
    pub const HOST: &str = "pgdrive_host";
    /// The backup set (one run of a job: its globals and its databases' backups), see `crate::dr`.
    pub const SET: &str = "pgdrive_set";
    /// The kind of a job run's globals object (`crate::dr::globals`).
    pub const GLOBALS_KIND: &str = "globals";
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
    /// `age` when the stored bytes are age-encrypted (see `crate::encrypt`).
    pub const ENCRYPTION: &str = "pgdrive_encryption";
    /// The recipients' public fingerprints, comma-separated (`scrypt` for a passphrase).
    pub const RECIPIENTS: &str = "pgdrive_recipients";
    /// The SHA-256 of the plaintext (compressed) stream, checked after decryption.
    pub const PLAIN_SHA256: &str = "pgdrive_plain_sha256";
}

/// `value` shortened (at a character boundary) so that key plus value fit in `budget` bytes, the
/// target's [`Capabilities::max_property_bytes`]; unchanged when the target has no limit.
pub fn fit_property(key: &str, value: &str, budget: Option<usize>) -> String {
    let Some(budget) = budget.map(|b| b.saturating_sub(key.len())) else {
        return value.to_string();
    };
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
#[derive(Clone, Debug, Default, PartialEq, Eq)]
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
#[derive(Clone, Debug, Default)]
pub struct Completion {
    pub digest: Digest,
    pub properties: BTreeMap<String, String>,
    pub row_counts: BTreeMap<String, u64>,
    /// Further top-level sections of the manifest (`database_properties`, `globals`: see
    /// `crate::dr`); empty for most backups.
    pub manifest_extra: BTreeMap<String, serde_json::Value>,
    /// With encryption: the row counts age-encrypted (base64), recorded in the manifest in
    /// their place (table names leak the schema); `row_counts` is then empty.
    pub sealed_row_counts: Option<String>,
    /// With encryption: every recipient's fingerprint. The property index may hold only the
    /// first few (Drive limits a property to 124 bytes); the manifest records them all.
    pub recipients: Vec<String>,
}

/// Largest manifest older releases kept in a Drive file's description.
const MANIFEST_MAX_BYTES: usize = 16_000;

/// The version-1 manifest older releases wrote into a Drive file's description (now only for
/// tests that make such backups); when too large, the row counts are dropped (`"truncated"`).
pub fn manifest_json(row_counts: &BTreeMap<String, u64>) -> String {
    let full = serde_json::json!({ "pgdrive_manifest": 1, "row_counts": row_counts }).to_string();
    if full.len() <= MANIFEST_MAX_BYTES {
        return full;
    }
    serde_json::json!({ "pgdrive_manifest": 1, "tables": row_counts.len(), "truncated": true })
        .to_string()
}

/// The row counts of a description written by [`manifest_json`] (backups made before
/// [`manifest`] objects); `None` when absent, not JSON, or
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
    /// The manifest stored beside the backup; `None` for backups older than manifests.
    pub manifest: Option<manifest::Manifest>,
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
    /// The target's name.
    pub target: String,
    pub backend: Backend,
    pub id: String,
    pub name: String,
    /// A link (Drive) or path (local) a person can use.
    pub location: String,
    /// Recording the properties or the manifest failed after the backup was stored and verified:
    /// the backup stays (found through whichever of index and manifest exists), and the run
    /// ends with a follow-up failure.
    pub metadata_failure: Option<std::sync::Arc<anyhow::Error>>,
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

impl StoredObject {
    /// This copy as the catalog records it.
    pub fn copy_record(&self) -> crate::catalog::CopyRecord {
        crate::catalog::CopyRecord {
            target: self.target.clone(),
            backend: self.backend.as_str().to_string(),
            stored: true,
            object_id: Some(self.id.clone()),
            location: Some(self.location.clone()),
            error: None,
        }
    }
}

/// The kind of storage behind a target. Only the catalog asks (it keeps a Drive file id and a
/// local path in separate columns); everything else tells targets apart by [`Target::name`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Drive,
    Local,
    Memory,
    Sftp,
    S3,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Drive => "drive",
            Backend::Local => "local",
            Backend::Memory => "memory",
            Backend::Sftp => "sftp",
            Backend::S3 => "s3",
        }
    }
}

/// How upload parts (chunks) must be sized for a target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartSize {
    /// Smallest part (the last one may be shorter).
    pub min: usize,
    /// Every part but the last must be a multiple of this.
    pub align: usize,
    /// Most parts one object may have; `None`: unlimited.
    pub max_parts: Option<u64>,
}

impl PartSize {
    /// Why `chunk_size` does not suit this target, if it does not.
    pub fn refuse(&self, chunk_size: usize) -> Option<String> {
        if chunk_size < self.min {
            return Some(format!("below the minimum part size of {} bytes", self.min));
        }
        if chunk_size % self.align.max(1) != 0 {
            return Some(format!("not a multiple of {} bytes", self.align));
        }
        None
    }
}

/// What a target can do, declared by the target (rclone's `Features`, pgBackRest's feature bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// The storage computes an MD5 of what it stored (Drive's `md5Checksum`); without it, the
    /// target reads its copy back to check it.
    pub server_md5: bool,
    /// Properties can be added after the bytes are stored (the checksums are only known then);
    /// otherwise they must all be given when the upload starts.
    pub metadata_after_upload: bool,
    /// Bytes of key plus value one property may take (Drive: 124); `None`: no limit.
    pub max_property_bytes: Option<usize>,
    pub part_size: PartSize,
    /// The storage filters listings by property itself (Drive's `appProperties has`); otherwise
    /// the target reads every object's properties to filter.
    pub list_by_property: bool,
    /// An object can be read from an offset without reading what comes before.
    pub ranged_reads: bool,
}

/// Builds the target a configuration describes: the only place targets are constructed.
pub fn open(config: config::TargetConfig) -> Box<dyn Target> {
    match config.kind {
        config::TargetKind::Drive(d) => Box::new(drive::DriveTarget::from_config(config.name, *d)),
        config::TargetKind::Local { dir } => Box::new(local::LocalTarget::new(config.name, dir)),
        config::TargetKind::Memory(store) => {
            Box::new(memory::MemoryTarget::new(config.name, store))
        }
        config::TargetKind::Sftp(s) => Box::new(sftp::SftpTarget::new(config.name, s)),
        config::TargetKind::S3(s) => Box::new(s3::S3Target::from_config(config.name, *s)),
    }
}

/// An SFTP target from a configuration that must describe one (for `check`'s free space).
pub fn open_sftp(config: config::TargetConfig) -> Option<sftp::SftpTarget> {
    match config.kind {
        config::TargetKind::Sftp(s) => Some(sftp::SftpTarget::new(config.name, s)),
        _ => None,
    }
}

/// A Drive target from a configuration that must describe one (for `check`'s Drive-only probes).
pub fn open_drive(config: config::TargetConfig) -> Option<drive::DriveTarget> {
    match config.kind {
        config::TargetKind::Drive(d) => Some(drive::DriveTarget::from_config(config.name, *d)),
        _ => None,
    }
}

/// A storage destination.
pub trait Target {
    /// The configured name (`drive`, `local`, ...): what logs, `--target` and fallbacks use.
    fn name(&self) -> &str;
    /// What the storage behind it is (for the catalog's columns).
    fn backend(&self) -> Backend;
    /// What this target can do.
    fn capabilities(&self) -> Capabilities;
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
    ) -> Result<Box<dyn Upload + Send + 's>>;
    /// Every object whose properties include all of `selector`.
    fn list(&mut self, selector: &BTreeMap<String, String>) -> Result<Vec<Listed>>;
    /// Deletes an object permanently.
    fn delete(&mut self, id: &str) -> Result<()>;
    /// Checks the destination can be read (listing, downloading), without requiring write access.
    fn check_readable(&mut self) -> Result<()>;
    /// One object by id, with its manifest.
    fn get(&mut self, id: &str) -> Result<Found>;
    /// Pins or unpins backup `id`: records [`crate::retention::PINNED`] in its manifest (and in
    /// the target's property index, if it has one), so that no host prunes it.
    fn set_pinned(&mut self, id: &str, pinned: bool) -> Result<()> {
        let _ = (id, pinned);
        anyhow::bail!("{} cannot record pins yet", self.describe())
    }
    /// Where object `id` is, as a person (and the catalog) names it: a link, a path.
    fn location(&self, id: &str) -> String {
        id.to_string()
    }
    /// The object's bytes as a stream; `size`, when known, lets a download resume up to the end.
    fn open<'s>(&'s mut self, id: &str, size: Option<u64>) -> Result<Box<dyn Read + 's>> {
        self.open_at(id, 0, size)
    }
    /// The object's bytes from `offset` on (a ranged read); `size` as for [`Target::open`].
    fn open_at<'s>(
        &'s mut self,
        id: &str,
        offset: u64,
        size: Option<u64>,
    ) -> Result<Box<dyn Read + 's>>;
}

/// An upload in progress.
pub trait Upload {
    /// Takes the next bytes of the stream. `Bytes` is shared, not copied: every target of a
    /// fan-out gets the same buffer, and one that must keep it until the server acknowledges it
    /// (Drive) holds a reference instead of a copy.
    fn write(&mut self, data: bytes::Bytes) -> Result<()>;
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
