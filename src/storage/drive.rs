//! The Google Drive target: a folder, written through a resumable upload session.

use std::collections::BTreeMap;
use std::io::Read;

use anyhow::{bail, Context, Result};

use super::{
    Backend, Capabilities, Completion, Found, Listed, PartSize, StoredObject, Target, Upload,
};
use crate::drive::auth::TokenSource;
use crate::drive::download::RangedReader;
use crate::drive::upload::ResumableUpload;
use crate::drive::{quote_query_value, DriveClient, RemoteFile};

pub struct DriveTarget {
    name: String,
    client: DriveClient,
    folder_id: String,
    drive_id: Option<String>,
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
            crate::commands::backup::host_name(),
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
            upload.write(b"pgdrive check probe\n".to_vec())?;
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
    ) -> Result<Box<dyn Upload + 's>> {
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
        Ok(files.into_iter().map(listed).collect())
    }

    fn delete(&mut self, id: &str) -> Result<()> {
        self.client.delete(id)
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
        Ok(Found {
            listed: listed(file),
            row_counts: description.as_deref().and_then(super::parse_manifest),
        })
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
}

impl Upload for DriveUpload<'_> {
    fn write(&mut self, data: Vec<u8>) -> Result<()> {
        self.upload.write(data)
    }

    fn finish(self: Box<Self>, done: &Completion) -> Result<StoredObject> {
        let digest = &done.digest;
        let DriveUpload {
            upload,
            name,
            target,
        } = *self;
        let (resource, client) = upload.finish().context("sending the last chunk")?;
        let id = resource["id"]
            .as_str()
            .context("Drive's final answer has no file id")?
            .to_string();
        let mut verify = || -> Result<()> {
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
            let description = super::manifest_json(&done.row_counts);
            client
                .update_metadata(&id, &done.properties, &description)
                .context("recording the checksums on the file")
        };
        if let Err(err) = verify() {
            // Never leave an unverified file that looks like a backup.
            return Err(match client.delete_even_when_stopping(&id) {
                Ok(()) => {
                    crate::log::warn("deleted the unverified upload", &[("file_id", id.clone())]);
                    err
                }
                Err(del) => err.context(format!(
                    "and deleting the unverified file {id} failed too ({del:#}): delete it by hand"
                )),
            }
            .context(format!("verifying the uploaded file {name}")));
        }
        Ok(StoredObject {
            target,
            backend: Backend::Drive,
            location: file_link(&id),
            id,
            name,
        })
    }

    fn abort(self: Box<Self>) {
        self.upload.abort();
    }
}
