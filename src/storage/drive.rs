//! The Google Drive target: a folder, written through a resumable upload session.
//!
//! Each backup gets its [`super::manifest`] as a second file, `<backup>.manifest.json`, in the
//! same folder. `appProperties` stay the fast index (listings filter by them), but they are
//! private to the Google Cloud project of the credentials that wrote them: a listing also reads
//! the manifests of backups the index does not show complete, and [`Target::get`] reads the
//! backup's manifest (row counts no longer go into the file's description, which everyone with
//! access to the file can read).

use std::collections::BTreeMap;
use std::io::Read;

use anyhow::{bail, Context, Result};

use super::manifest::{self, Manifest};
use super::{
    Backend, Capabilities, Completion, Found, Listed, PartSize, StoredObject, Target, Upload,
};
use crate::drive::auth::TokenSource;
use crate::drive::download::RangedReader;
use crate::drive::upload::ResumableUpload;
use crate::drive::{quote_query_value, DriveClient, RemoteFile};
use crate::host::host_name;

pub struct DriveTarget {
    name: String,
    client: DriveClient,
    folder_id: String,
    drive_id: Option<String>,
    /// From the last listing: backup id → name, and backup name → manifest file id (so pruning
    /// deletes a backup's manifest with it without looking it up again).
    listed_names: BTreeMap<String, String>,
    manifest_ids: BTreeMap<String, String>,
}

/// What Drive does: it computes an MD5 of every file, takes appProperties (124 bytes each) after
/// the upload, filters listings by them, serves byte ranges, and wants resumable-upload chunks in
/// multiples of 256 KiB.
pub const CAPABILITIES: Capabilities = Capabilities {
    server_md5: true,
    metadata_after_upload: true,
    max_property_bytes: Some(124),
    part_size: PartSize {
        min: crate::config::CHUNK_ALIGNMENT,
        align: crate::config::CHUNK_ALIGNMENT,
        max_parts: None,
    },
    list_by_property: true,
    ranged_reads: true,
};

impl DriveTarget {
    /// Built by [`super::open`].
    pub(super) fn from_config(name: String, cfg: super::config::DriveConfig) -> DriveTarget {
        let mut client =
            DriveClient::new(&cfg.base_url, TokenSource::new(cfg.credentials), cfg.retry);
        client.set_page_size(cfg.page_size);
        DriveTarget {
            name,
            client,
            folder_id: cfg.folder_id,
            drive_id: None,
            listed_names: BTreeMap::new(),
            manifest_ids: BTreeMap::new(),
        }
    }

    pub fn client(&mut self) -> &mut DriveClient {
        &mut self.client
    }
}

/// The property that marks `pgdrive check`'s probe file. It never carries the backup marker, so
/// listings, pruning and restores can never take a leftover probe for a backup.
pub const PROBE_PROPERTY: &str = "pgdrive_probe";

/// Which half of the probe failed.
#[derive(Debug)]
pub enum ProbeFailure {
    /// The probe file could not be created: backups cannot be uploaded.
    Write(anyhow::Error),
    /// It was created but could not be deleted permanently: pruning will fail. The probe file
    /// (its ID) is left behind.
    Delete(String, anyhow::Error),
}

impl DriveTarget {
    /// The folder's facts (a missing folder or a file ID is an error); also remembers the shared
    /// drive for later listings.
    pub fn folder_info(&mut self) -> Result<crate::drive::FolderInfo> {
        let folder = self.client.folder(&self.folder_id)?;
        self.drive_id = folder.drive_id.clone();
        Ok(folder)
    }

    /// Uploads a tiny file through the same resumable protocol as a backup and deletes it
    /// permanently, proving both the right to upload and the right to prune.
    pub fn probe(&mut self) -> std::result::Result<String, ProbeFailure> {
        let name = format!(
            ".pgdrive-check-probe-{}-{}",
            host_name(),
            std::process::id()
        );
        let metadata = serde_json::json!({
            "name": name,
            "parents": [self.folder_id],
            "mimeType": "text/plain",
            "description": "written and deleted by `pgdrive check`; safe to delete if left behind",
            "appProperties": { PROBE_PROPERTY: "1" },
        });
        let id = (|| -> Result<String> {
            let mut upload = ResumableUpload::start(
                &mut self.client,
                &metadata,
                "text/plain",
                crate::config::CHUNK_ALIGNMENT,
            )?;
            upload.write(bytes::Bytes::from_static(b"pgdrive check probe\n"))?;
            let (resource, _) = upload.finish()?;
            Ok(resource["id"]
                .as_str()
                .context("Drive's final answer has no file id")?
                .to_string())
        })()
        .map_err(ProbeFailure::Write)?;
        self.client
            .delete(&id)
            .map_err(|e| ProbeFailure::Delete(id.clone(), e))?;
        Ok(name)
    }
}

impl DriveTarget {
    /// The manifest files in the folder whose names match `extra_query`, by the name of the
    /// backup each describes: one listing, nothing downloaded.
    fn manifest_files(&mut self, extra_query: &str) -> Result<BTreeMap<String, String>> {
        let mut query = format!("mimeType = {}", quote_query_value(manifest::MIME_TYPE));
        if !extra_query.is_empty() {
            query = format!("{query} and {extra_query}");
        }
        let drive_id = self.drive_id.clone();
        let files = self
            .client
            .list(&self.folder_id, drive_id.as_deref(), &query)
            .context("listing the backups' manifests")?;
        Ok(files
            .into_iter()
            .filter_map(|f| Some((f.name.strip_suffix(manifest::SUFFIX)?.to_string(), f.id)))
            .collect())
    }

    /// The manifest of the backup named `name`, if one is stored and describes `id`.
    fn manifest_of(&mut self, id: &str, name: &str) -> Result<Option<Manifest>> {
        let manifest_name = format!("{name}{}", manifest::SUFFIX);
        let clause = format!("name = {}", quote_query_value(&manifest_name));
        for manifest_id in self.manifest_files(&clause)?.into_values() {
            if let Some(m) = read_manifest(&mut self.client, &manifest_id)? {
                if m.id == id && m.name == name {
                    return Ok(Some(m));
                }
            }
        }
        Ok(None)
    }
}

/// A manifest file's content; `None` when it is not a pgdrive manifest.
fn read_manifest(client: &mut DriveClient, file_id: &str) -> Result<Option<Manifest>> {
    let mut text = Vec::new();
    RangedReader::new(client, file_id, None)
        .take(manifest::MAX_BYTES)
        .read_to_end(&mut text)
        .with_context(|| format!("reading the manifest {file_id}"))?;
    Ok(serde_json::from_slice(&text)
        .ok()
        .and_then(|v| manifest::parse(&v)))
}

/// Whether `e` is Drive's "no such file" (or not shared with this account).
fn is_not_found(e: &anyhow::Error) -> bool {
    e.downcast_ref::<crate::drive::DriveError>()
        .is_some_and(|d| d.status == 404)
}

/// Adds what a manifest records to a listing entry; what the index already says stays.
fn complete_from(entry: &mut Listed, m: &Manifest) {
    for (k, v) in &m.properties {
        entry
            .properties
            .entry(k.clone())
            .or_insert_with(|| v.clone());
    }
}

pub fn file_link(id: &str) -> String {
    format!("https://drive.google.com/file/d/{id}/view")
}

impl Target for DriveTarget {
    fn name(&self) -> &str {
        &self.name
    }

    fn backend(&self) -> Backend {
        Backend::Drive
    }

    fn capabilities(&self) -> Capabilities {
        CAPABILITIES
    }

    fn describe(&self) -> String {
        format!("Google Drive folder {}", self.folder_id)
    }

    fn preflight(&mut self) -> Result<()> {
        let folder = self.client.folder(&self.folder_id)?;
        if folder.drive_id.is_none() && self.client.credentials().is_plain_service_account() {
            crate::log::warn(
                "the folder is in a My Drive, not a shared drive: service accounts created after April 2025 own no storage and cannot upload there",
                &[("folder", folder.name.clone())],
            );
        }
        if folder.can_add_children == Some(false) {
            return Err(crate::error::config_error_hint(
                format!("{} cannot add files to Drive folder {} ({})", self.client.credentials().describe(), self.folder_id, folder.name),
                "share the folder with the account as Editor (in a shared drive: Contributor or above; Manager to allow pruning)",
            ));
        }
        if folder.can_delete_children == Some(false) && folder.drive_id.is_some() {
            crate::log::warn(
                "the account cannot permanently delete in this shared drive, so pruning will fail: make it a Manager",
                &[("folder", folder.name.clone())],
            );
        }
        crate::log::debug(
            "Drive folder found",
            &[
                ("name", folder.name.clone()),
                ("shared_drive", folder.drive_id.clone().unwrap_or_default()),
            ],
        );
        self.drive_id = folder.drive_id;
        Ok(())
    }

    fn begin<'s>(
        &'s mut self,
        name: &str,
        mime_type: &str,
        properties: &BTreeMap<String, String>,
        chunk_size: usize,
    ) -> Result<Box<dyn Upload + Send + 's>> {
        let metadata = serde_json::json!({
            "name": name,
            "parents": [self.folder_id],
            "mimeType": mime_type,
            "appProperties": properties,
        });
        let upload = ResumableUpload::start(&mut self.client, &metadata, mime_type, chunk_size)?;
        Ok(Box::new(DriveUpload {
            upload,
            name: name.to_string(),
            target: self.name.clone(),
            folder_id: self.folder_id.clone(),
            properties: properties.clone(),
        }))
    }

    fn list(&mut self, selector: &BTreeMap<String, String>) -> Result<Vec<Listed>> {
        let query = selector
            .iter()
            .map(|(k, v)| {
                format!(
                    "appProperties has {{ key={} and value={} }}",
                    quote_query_value(k),
                    quote_query_value(v)
                )
            })
            .collect::<Vec<_>>()
            .join(" and ");
        let drive_id = self.drive_id.clone();
        let files = self
            .client
            .list(&self.folder_id, drive_id.as_deref(), &query)?;
        let mut out: Vec<Listed> = files.into_iter().map(listed).collect();
        // Backups the index does not show complete (another Cloud project's credentials see no
        // appProperties; a failed metadata update left them partial) are known by their manifests.
        self.manifest_ids = self.manifest_files("")?;
        let complete: std::collections::BTreeSet<String> = out
            .iter()
            .filter(|l| l.recorded_digest().is_some())
            .map(|l| l.name.clone())
            .collect();
        let unindexed: Vec<(String, String)> = self
            .manifest_ids
            .iter()
            .filter(|(name, _)| !complete.contains(*name))
            .map(|(n, m)| (n.clone(), m.clone()))
            .collect();
        for (name, manifest_id) in unindexed {
            let Some(m) = read_manifest(&mut self.client, &manifest_id)? else {
                continue;
            };
            if m.name != name || !selector.iter().all(|(k, v)| m.properties.get(k) == Some(v)) {
                continue;
            }
            let file = match self.client.get(&m.id) {
                Ok(f) => f,
                Err(e) if is_not_found(&e) => continue, // the backup is gone
                Err(e) => return Err(e),
            };
            if file.name != m.name {
                continue; // a manifest that does not describe the file it names
            }
            out.retain(|l| l.id != m.id);
            let mut entry = listed(file);
            complete_from(&mut entry, &m);
            out.push(entry);
        }
        self.listed_names = out.iter().map(|l| (l.id.clone(), l.name.clone())).collect();
        Ok(out)
    }

    fn delete(&mut self, id: &str) -> Result<()> {
        // the name finds the manifest; a file that cannot be read is still deleted
        let name = match self.listed_names.get(id) {
            Some(n) => Some(n.clone()),
            None => self.client.get(id).ok().map(|f| f.name),
        };
        self.client.delete(id)?;
        let Some(name) = name else {
            return Ok(());
        };
        let manifests = match self.manifest_ids.get(&name) {
            Some(m) => vec![m.clone()],
            None => {
                let manifest_name = format!("{name}{}", manifest::SUFFIX);
                let clause = format!("name = {}", quote_query_value(&manifest_name));
                self.manifest_files(&clause)
                    .map(|m| m.into_values().collect())
                    .unwrap_or_default()
            }
        };
        for manifest_id in manifests {
            // the backup is gone; a manifest left behind is skipped by listings
            if let Err(e) = self.client.delete(&manifest_id) {
                crate::log::warn(
                    "could not delete the manifest of a deleted backup",
                    &[
                        ("file_id", manifest_id),
                        ("error", crate::error::render(&e)),
                    ],
                );
            }
        }
        Ok(())
    }

    fn check_readable(&mut self) -> Result<()> {
        let folder = self.client.folder(&self.folder_id)?;
        self.drive_id = folder.drive_id;
        Ok(())
    }

    fn get(&mut self, id: &str) -> Result<Found> {
        let (file, description) = self.client.get_with_description(id).map_err(|e| {
            match e.downcast_ref::<crate::drive::DriveError>() {
                Some(d) if d.status == 404 => crate::error::config_error_hint(
                    format!(
                        "Drive file {id} was not found (or is not shared with {})",
                        self.client.credentials().describe()
                    ),
                    "take the file id from `pgdrive list`",
                ),
                _ => e,
            }
        })?;
        let mut entry = listed(file);
        let manifest = match self.manifest_of(id, &entry.name.clone()) {
            Ok(m) => m,
            // the index alone describes a complete backup: an unreadable manifest costs only
            // its row counts (verify then compares with the catalog's)
            Err(e) if entry.recorded_digest().is_some() => {
                crate::log::warn(
                    "could not read the backup's manifest; going by its appProperties",
                    &[
                        ("file_id", id.to_string()),
                        ("error", crate::error::render(&e)),
                    ],
                );
                None
            }
            Err(e) => return Err(e),
        };
        if let Some(m) = &manifest {
            complete_from(&mut entry, m);
        }
        Ok(Found {
            listed: entry,
            // backups older than manifests kept their row counts in the description
            row_counts: manifest
                .as_ref()
                .and_then(|m| m.row_counts.clone())
                .or_else(|| description.as_deref().and_then(super::parse_manifest)),
            manifest,
        })
    }

    fn location(&self, id: &str) -> String {
        file_link(id)
    }

    fn open_at<'s>(
        &'s mut self,
        id: &str,
        offset: u64,
        size: Option<u64>,
    ) -> Result<Box<dyn Read + 's>> {
        Ok(Box::new(
            RangedReader::new(&mut self.client, id, size).starting_at(offset),
        ))
    }
}

fn listed(f: RemoteFile) -> Listed {
    Listed {
        created_ms: f
            .created_time
            .as_deref()
            .and_then(crate::timeutil::parse_rfc3339),
        id: f.id,
        name: f.name,
        size: f.size,
        properties: f.app_properties,
    }
}

struct DriveUpload<'a> {
    upload: ResumableUpload<'a>,
    name: String,
    target: String,
    folder_id: String,
    /// Given when the upload started (the manifest repeats them).
    properties: BTreeMap<String, String>,
}

/// Stores `manifest` as `<name>.manifest.json` beside the backup.
fn write_manifest(
    client: &mut DriveClient,
    folder_id: &str,
    name: &str,
    manifest: &serde_json::Value,
) -> Result<()> {
    let metadata = serde_json::json!({
        "name": format!("{name}{}", manifest::SUFFIX),
        "parents": [folder_id],
        "mimeType": manifest::MIME_TYPE,
    });
    client.create_small(
        &metadata,
        manifest::MIME_TYPE,
        &serde_json::to_vec_pretty(manifest)?,
    )?;
    Ok(())
}

impl Upload for DriveUpload<'_> {
    fn write(&mut self, data: bytes::Bytes) -> Result<()> {
        self.upload.write(data)
    }

    fn finish(self: Box<Self>, done: &Completion) -> Result<StoredObject> {
        let digest = &done.digest;
        let DriveUpload {
            upload,
            name,
            target,
            folder_id,
            mut properties,
        } = *self;
        let (resource, client) = upload.finish().context("sending the last chunk")?;
        let id = resource["id"]
            .as_str()
            .context("Drive's final answer has no file id")?
            .to_string();
        // Ok(Some(_)): stored and verified, but the index or the manifest could not be recorded.
        let mut verify = || -> Result<Option<anyhow::Error>> {
            let mut file = RemoteFile::from_json(&resource);
            if file.size.is_none() || file.md5.is_none() {
                file = client.get(&id)?;
            }
            if file.size != Some(digest.size)
                || !file
                    .md5
                    .as_deref()
                    .is_some_and(|m| m.eq_ignore_ascii_case(&digest.md5))
            {
                bail!(
                    "Drive stored {} bytes with MD5 {}, but pgdrive sent {} bytes with MD5 {}",
                    file.size
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "?".into()),
                    file.md5.as_deref().unwrap_or("?"),
                    digest.size,
                    digest.md5
                );
            }
            // Verified: a failure to record one of index and manifest leaves the backup in place
            // (found through the other) as a follow-up failure. Only when neither could be
            // recorded would nothing show the file as a complete backup.
            let indexed = client
                .update_metadata(&id, &done.properties, None)
                .context("recording the checksums in the file's appProperties");
            properties.extend(done.properties.clone());
            let manifest = manifest::build(
                &id,
                &name,
                &properties,
                &done.row_counts,
                done.sealed_row_counts.as_deref(),
                digest,
            );
            let described = write_manifest(client, &folder_id, &name, &manifest)
                .context("storing the manifest");
            match (indexed, described) {
                (Ok(()), Ok(())) => Ok(None),
                (Err(e), Ok(())) | (Ok(()), Err(e)) => Ok(Some(e)),
                (Err(e), Err(m)) => Err(e.context(format!(
                    "{m:#}; with neither checksums nor manifest recorded the file cannot be used"
                ))),
            }
        };
        let metadata_failure = match verify() {
            Ok(partial) => partial,
            Err(err) => {
                // Never leave an unverified file that looks like a backup.
                return Err(match client.delete_even_when_stopping(&id) {
                    Ok(()) => {
                        crate::log::warn(
                            "deleted the unverified upload",
                            &[("file_id", id.clone())],
                        );
                        err
                    }
                    Err(del) => err.context(format!(
                        "and deleting the unverified file {id} failed too ({del:#}): delete it by hand"
                    )),
                }
                .context(format!("verifying the uploaded file {name}")));
            }
        };
        Ok(StoredObject {
            target,
            backend: Backend::Drive,
            location: file_link(&id),
            id,
            name,
            metadata_failure: metadata_failure.map(std::sync::Arc::new),
        })
    }

    fn abort(self: Box<Self>) {
        self.upload.abort();
    }
}
