//! An in-process target: objects in a shared map, behind the same [`Target`] trait as Drive and a
//! directory, so unit tests (and the conformance suite) can exercise callers without a network or
//! a disk. Faults can be injected ([`Faults`]): a write that fails part-way, a finish that fails
//! after the bytes arrived, a storage that cannot be reached, a slow storage (every write takes
//! a while; [`MemoryStore::received`] tells how far an open upload got). Like the real targets it shows an
//! object only once `finish` checked it, and an aborted or failed upload leaves nothing.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{bail, Result};

use super::{
    Backend, Capabilities, Completion, Found, Hasher, Listed, PartSize, StoredObject, Target,
    Upload,
};

/// What the in-memory target does: like Drive, it knows each object's MD5 and filters listings by
/// property itself; it has no size limits.
pub const CAPABILITIES: Capabilities = Capabilities {
    server_md5: true,
    metadata_after_upload: true,
    max_property_bytes: None,
    part_size: PartSize {
        min: 1,
        align: 1,
        max_parts: None,
    },
    list_by_property: true,
    ranged_reads: true,
};

/// Faults the next operations meet.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// A write that would take an upload past this many bytes fails.
    pub fail_write_after_bytes: Option<u64>,
    /// `finish` fails after every byte arrived.
    pub fail_finish: bool,
    /// Every operation fails as if the storage could not be reached.
    pub unreachable: bool,
    /// Every write takes this long (a slow link) before it is accepted.
    pub write_delay: Option<std::time::Duration>,
}

#[derive(Clone, Debug)]
struct Object {
    name: String,
    data: Vec<u8>,
    properties: BTreeMap<String, String>,
    row_counts: BTreeMap<String, u64>,
    created_ms: i64,
    /// The manifest stored beside the object (as JSON, as other targets store it).
    manifest: serde_json::Value,
}

#[derive(Debug, Default)]
struct State {
    objects: BTreeMap<String, Object>,
    next_id: u64,
    /// Uploads begun and neither finished nor aborted.
    open_uploads: usize,
    /// Bytes each upload (by object name) has accepted so far.
    received: BTreeMap<String, u64>,
    faults: Faults,
    /// Objects per listing page, and pages served (to show that listing pages).
    page_size: usize,
    pages_served: usize,
}

/// The storage behind one or more [`MemoryTarget`]s; clones share it.
#[derive(Clone, Debug)]
pub struct MemoryStore(Arc<Mutex<State>>);

impl Default for MemoryStore {
    fn default() -> MemoryStore {
        MemoryStore(Arc::new(Mutex::new(State {
            page_size: 100,
            ..State::default()
        })))
    }
}

impl MemoryStore {
    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_faults(&self, faults: Faults) {
        self.state().faults = faults;
    }

    pub fn set_page_size(&self, n: usize) {
        self.state().page_size = n.max(1);
    }

    /// Names of the stored objects and the number of uploads still open: what an abandoned
    /// upload could have left behind.
    pub fn leftovers(&self) -> (Vec<String>, usize) {
        let s = self.state();
        (
            s.objects.values().map(|o| o.name.clone()).collect(),
            s.open_uploads,
        )
    }

    /// Bytes the uploads of object `name` have accepted so far (finished or not).
    pub fn received(&self, name: &str) -> u64 {
        self.state().received.get(name).copied().unwrap_or(0)
    }

    pub fn pages_served(&self) -> usize {
        self.state().pages_served
    }
}

pub struct MemoryTarget {
    name: String,
    store: MemoryStore,
}

impl MemoryTarget {
    /// Built by [`super::open`].
    pub(super) fn new(name: String, store: MemoryStore) -> MemoryTarget {
        MemoryTarget { name, store }
    }

    fn reachable(&self) -> Result<MutexGuard<'_, State>> {
        let state = self.store.state();
        if state.faults.unreachable {
            bail!(
                "the in-memory target {} is unreachable (injected)",
                self.name
            );
        }
        Ok(state)
    }
}

fn listed(id: &str, o: &Object) -> Listed {
    Listed {
        id: id.to_string(),
        name: o.name.clone(),
        created_ms: Some(o.created_ms),
        size: Some(o.data.len() as u64),
        properties: o.properties.clone(),
    }
}

impl Target for MemoryTarget {
    fn name(&self) -> &str {
        &self.name
    }

    fn backend(&self) -> Backend {
        Backend::Memory
    }

    fn capabilities(&self) -> Capabilities {
        CAPABILITIES
    }

    fn describe(&self) -> String {
        format!("in-memory target {}", self.name)
    }

    fn preflight(&mut self) -> Result<()> {
        self.reachable().map(|_| ())
    }

    fn begin<'s>(
        &'s mut self,
        name: &str,
        _mime_type: &str,
        properties: &BTreeMap<String, String>,
        _chunk_size: usize,
    ) -> Result<Box<dyn Upload + Send + 's>> {
        let mut state = self.reachable()?;
        if state.objects.values().any(|o| o.name == name) {
            bail!("{name} already exists; refusing to overwrite it");
        }
        state.open_uploads += 1;
        drop(state);
        Ok(Box::new(MemoryUpload {
            target: self.name.clone(),
            store: self.store.clone(),
            name: name.to_string(),
            properties: properties.clone(),
            data: Vec::new(),
        }))
    }

    fn list(&mut self, selector: &BTreeMap<String, String>) -> Result<Vec<Listed>> {
        // page by page, each page continuing after the last id of the previous one
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut state = self.reachable()?;
            state.pages_served += 1;
            let page: Vec<(String, Object)> = state
                .objects
                .iter()
                .filter(|(id, _)| after.as_ref().is_none_or(|a| *id > a))
                .take(state.page_size)
                .map(|(id, o)| (id.clone(), o.clone()))
                .collect();
            let full = page.len() == state.page_size;
            drop(state);
            after = page.last().map(|(id, _)| id.clone());
            out.extend(
                page.iter()
                    .filter(|(_, o)| selector.iter().all(|(k, v)| o.properties.get(k) == Some(v)))
                    .map(|(id, o)| listed(id, o)),
            );
            if !full {
                return Ok(out);
            }
        }
    }

    fn delete(&mut self, id: &str) -> Result<()> {
        match self.reachable()?.objects.remove(id) {
            Some(_) => Ok(()),
            None => bail!("no object {id} in {}", self.describe()),
        }
    }

    fn check_readable(&mut self) -> Result<()> {
        self.reachable().map(|_| ())
    }

    fn get(&mut self, id: &str) -> Result<Found> {
        let state = self.reachable()?;
        let Some(o) = state.objects.get(id) else {
            bail!("no object {id} in {}", self.describe());
        };
        Ok(Found {
            listed: listed(id, o),
            row_counts: Some(o.row_counts.clone()),
            manifest: super::manifest::parse(&o.manifest),
        })
    }

    fn open_at<'s>(
        &'s mut self,
        id: &str,
        offset: u64,
        _size: Option<u64>,
    ) -> Result<Box<dyn Read + 's>> {
        let state = self.reachable()?;
        let Some(o) = state.objects.get(id) else {
            bail!("no object {id} in {}", self.describe());
        };
        let start = (offset as usize).min(o.data.len());
        Ok(Box::new(std::io::Cursor::new(o.data[start..].to_vec())))
    }
}

struct MemoryUpload {
    target: String,
    store: MemoryStore,
    name: String,
    properties: BTreeMap<String, String>,
    data: Vec<u8>,
}

impl MemoryUpload {
    fn close(&self) {
        let mut state = self.store.state();
        state.open_uploads = state.open_uploads.saturating_sub(1);
    }
}

impl Upload for MemoryUpload {
    fn write(&mut self, data: bytes::Bytes) -> Result<()> {
        let faults = self.store.state().faults.clone();
        if let Some(delay) = faults.write_delay {
            crate::signals::sleep(delay)?;
        }
        if faults.unreachable {
            bail!(
                "the in-memory target {} is unreachable (injected)",
                self.target
            );
        }
        if let Some(limit) = faults.fail_write_after_bytes {
            if self.data.len() as u64 + data.len() as u64 > limit {
                bail!(
                    "writing to {} failed after {} bytes (injected)",
                    self.name,
                    self.data.len()
                );
            }
        }
        self.data.extend_from_slice(&data);
        *self
            .store
            .state()
            .received
            .entry(self.name.clone())
            .or_default() += data.len() as u64;
        Ok(())
    }

    fn finish(self: Box<Self>, done: &Completion) -> Result<StoredObject> {
        self.close();
        let this = *self;
        let mut hasher = Hasher::default();
        hasher.update(&this.data);
        let stored = hasher.finish();
        let mut state = this.store.state();
        if state.faults.fail_finish || state.faults.unreachable {
            bail!("completing {} failed (injected)", this.name);
        }
        if stored.size != done.digest.size || stored.md5 != done.digest.md5 {
            bail!(
                "the in-memory target holds {} bytes with MD5 {}, but pgdrive sent {} bytes with MD5 {}",
                stored.size,
                stored.md5,
                done.digest.size,
                done.digest.md5
            );
        }
        state.next_id += 1;
        let id = format!("mem-{:06}", state.next_id);
        let mut properties = this.properties.clone();
        properties.extend(done.properties.clone());
        let name = this.name.clone();
        let manifest = super::manifest::build(
            &id,
            &name,
            &properties,
            &done.row_counts,
            done.sealed_row_counts.as_deref(),
            &done.digest,
        );
        state.objects.insert(
            id.clone(),
            Object {
                name: name.clone(),
                data: this.data,
                properties,
                row_counts: done.row_counts.clone(),
                created_ms: crate::timeutil::now_millis(),
                manifest,
            },
        );
        Ok(StoredObject {
            location: format!("memory:{}/{id}", this.target),
            target: this.target.clone(),
            backend: Backend::Memory,
            id,
            name,
            metadata_failure: None,
        })
    }

    fn abort(self: Box<Self>) {
        self.close();
    }
}
