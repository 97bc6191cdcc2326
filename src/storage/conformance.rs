//! The one behaviour suite every target must pass, written once and run against each (the
//! in-memory target in unit tests; the local directory and Drive through the emulator in
//! `tests/integration/targets.rs`), as rclone runs every backend through `fstests`. A new target
//! (S3, SFTP) joins by implementing [`Harness`].
//!
//! It attacks the promises callers rely on: nothing is visible before `finish`; `abort`, a failed
//! check in `finish` and a failure injected mid-upload leave nothing behind; listings return every
//! page and filter by property; deleted objects are gone; reads return the stored bytes, from any
//! offset; properties and row counts come back as written; declared capabilities are coherent.

use std::collections::BTreeMap;
use std::io::Read;

use super::{props, Completion, Hasher, Target};

/// How the suite reaches one kind of target and looks behind its back.
pub trait Harness {
    /// A fresh handle on the (initially empty) storage under test.
    fn target(&mut self) -> Box<dyn Target>;
    /// Objects per listing page the target was configured with (the suite stores more).
    fn page_size(&self) -> usize;
    /// Everything the storage holds, complete or not, by name (temporary files, unfinished
    /// sessions' files): what an abandoned upload must not leave.
    fn leftovers(&mut self) -> Vec<String>;
    /// Makes the next upload fail once about `after_bytes` were written; `false` when this
    /// target cannot be made to fail that way (the suite then says so and skips that check).
    fn fail_next_upload(&mut self, after_bytes: u64) -> bool;
    /// Undoes [`Harness::fail_next_upload`].
    fn clear_faults(&mut self);
}

/// Bytes that differ at every offset, so a read from the wrong offset is caught.
fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0] ^ seed)
        .collect()
}

fn completion(data: &[u8]) -> Completion {
    let mut h = Hasher::default();
    h.update(data);
    let digest = h.finish();
    Completion {
        properties: BTreeMap::from([
            (props::SHA256.to_string(), digest.sha256.clone()),
            (props::MD5.to_string(), digest.md5.clone()),
            (props::SIZE.to_string(), digest.size.to_string()),
        ]),
        digest,
        row_counts: BTreeMap::from([("public.t".to_string(), 42)]),
        manifest_extra: Default::default(),
        sealed_row_counts: None,
        recipients: Vec::new(),
    }
}

fn initial(kind: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (props::MARKER.to_string(), props::MARKER_VALUE.to_string()),
        (props::KIND.to_string(), kind.to_string()),
        (props::DATABASE.to_string(), "conformance".to_string()),
    ])
}

fn marker() -> BTreeMap<String, String> {
    BTreeMap::from([(props::MARKER.to_string(), props::MARKER_VALUE.to_string())])
}

fn read_all(t: &mut dyn Target, id: &str, offset: u64, size: u64) -> Vec<u8> {
    let mut out = Vec::new();
    t.open_at(id, offset, Some(size))
        .expect("open the stored object")
        .read_to_end(&mut out)
        .expect("read the stored object");
    out
}

/// Uploads `data` in `chunk`-sized writes and finishes; returns the object's id.
fn store(t: &mut dyn Target, name: &str, kind: &str, data: &[u8], chunk: usize) -> String {
    let mut up = t
        .begin(name, "application/octet-stream", &initial(kind), chunk)
        .expect("begin an upload");
    for piece in data.chunks(chunk) {
        up.write(bytes::Bytes::copy_from_slice(piece))
            .expect("write a chunk");
    }
    up.finish(&completion(data)).expect("finish the upload").id
}

/// Runs every check against the harness's target. Panics, naming the target and the promise,
/// at the first one broken.
pub fn run(h: &mut dyn Harness) {
    let mut t = h.target();
    let who = t.describe();
    let caps = t.capabilities();
    // chunks the target accepts: its minimum part, aligned
    let chunk = caps.part_size.min.max(caps.part_size.align).max(1 << 10);
    assert_eq!(
        caps.part_size.refuse(chunk),
        None,
        "{who}: refuses its own minimum part size"
    );
    t.preflight().expect("preflight");
    assert!(
        t.list(&marker()).unwrap().is_empty(),
        "{who}: not empty at the start"
    );

    // nothing is visible before finish; finish makes it complete and readable. The writes are
    // smaller than the upload's parts and do not divide them (a backup cuts the smallest part
    // any of its targets wants): a target regroups them.
    let data = payload(chunk * 2 + 1234, 1);
    let mut up = t
        .begin(
            "conf-a.bin",
            "application/octet-stream",
            &initial("daily"),
            chunk * 2,
        )
        .unwrap();
    for piece in data.chunks(chunk / 3 + 1) {
        up.write(bytes::Bytes::copy_from_slice(piece)).unwrap();
    }
    let stored = up.finish(&completion(&data)).expect("finish the upload");
    assert_eq!(
        stored.target,
        t.name(),
        "{who}: the stored object names another target"
    );
    let mut t = h.target();
    let listed = t.list(&marker()).unwrap();
    assert_eq!(
        listed.len(),
        1,
        "{who}: finished upload not listed once: {listed:?}"
    );
    let id = listed[0].id.clone();
    assert_eq!(listed[0].name, "conf-a.bin");
    assert_eq!(listed[0].size, Some(data.len() as u64), "{who}: size");
    let digest = listed[0]
        .recorded_digest()
        .unwrap_or_else(|| panic!("{who}: the finished object has no recorded digest"));
    assert_eq!(digest, completion(&data).digest, "{who}: recorded digest");
    assert_eq!(listed[0].prop(props::KIND), Some("daily"));
    let found = t.get(&id).unwrap();
    assert_eq!(found.listed.prop(props::DATABASE), Some("conformance"));
    assert_eq!(
        found.row_counts,
        Some(BTreeMap::from([("public.t".to_string(), 42)])),
        "{who}: row counts"
    );
    // the manifest beside the backup describes it on its own
    let manifest = found
        .manifest
        .unwrap_or_else(|| panic!("{who}: no manifest stored beside the backup"));
    assert_eq!(
        (manifest.id.as_str(), manifest.name.as_str()),
        (id.as_str(), "conf-a.bin"),
        "{who}: manifest names its backup"
    );
    assert_eq!(
        manifest.properties.get(props::SHA256),
        Some(&completion(&data).digest.sha256),
        "{who}: manifest checksum"
    );
    assert_eq!(
        manifest.properties.get(props::KIND).map(String::as_str),
        Some("daily")
    );
    assert_eq!(
        manifest.row_counts,
        Some(BTreeMap::from([("public.t".to_string(), 42)])),
        "{who}: manifest row counts"
    );
    assert_eq!(
        read_all(t.as_mut(), &id, 0, data.len() as u64),
        data,
        "{who}: content"
    );
    if caps.ranged_reads {
        let from = chunk as u64 + 7;
        assert_eq!(
            read_all(t.as_mut(), &id, from, data.len() as u64),
            data[from as usize..],
            "{who}: ranged read from {from}"
        );
    }

    // an upload in progress is invisible; abort leaves nothing
    let before = h.leftovers();
    let mut up = t
        .begin(
            "conf-b.bin",
            "application/octet-stream",
            &initial("daily"),
            chunk,
        )
        .unwrap();
    up.write(payload(chunk, 2).into()).unwrap();
    let mut other = h.target();
    assert_eq!(
        other.list(&marker()).unwrap().len(),
        1,
        "{who}: an unfinished upload is listed"
    );
    up.abort();
    assert_eq!(h.leftovers(), before, "{who}: abort left something behind");

    // a finish whose check fails (the bytes do not match the digest) stores nothing
    let mut up = t
        .begin(
            "conf-c.bin",
            "application/octet-stream",
            &initial("daily"),
            chunk,
        )
        .unwrap();
    up.write(payload(chunk, 3).into()).unwrap();
    let wrong = completion(&payload(chunk, 4));
    assert!(
        up.finish(&wrong).is_err(),
        "{who}: finish accepted a wrong digest"
    );
    assert_eq!(
        h.leftovers(),
        before,
        "{who}: a failed finish left something behind"
    );

    // a failure injected mid-upload: the write (or the finish) fails, abort leaves nothing
    if h.fail_next_upload(chunk as u64) {
        let mut t = h.target();
        let data = payload(chunk * 3, 5);
        let mut up = t
            .begin(
                "conf-d.bin",
                "application/octet-stream",
                &initial("daily"),
                chunk,
            )
            .unwrap();
        let failed = data
            .chunks(chunk)
            .any(|p| up.write(bytes::Bytes::copy_from_slice(p)).is_err());
        if failed {
            up.abort();
        } else {
            assert!(
                up.finish(&completion(&data)).is_err(),
                "{who}: the injected failure did not surface"
            );
        }
        h.clear_faults();
        assert_eq!(
            h.leftovers(),
            before,
            "{who}: a failed upload left something behind"
        );
    } else {
        eprintln!("{who}: cannot inject a failure mid-upload; that check is skipped");
    }

    // listing returns every page, and filters by property
    let mut t = h.target();
    let many = h.page_size() * 2 + 1;
    for i in 0..many {
        let kind = if i % 2 == 0 { "hourly" } else { "schema" };
        store(
            t.as_mut(),
            &format!("conf-p{i:03}.bin"),
            kind,
            &payload(10 + i, 6),
            chunk,
        );
    }
    assert_eq!(
        t.list(&marker()).unwrap().len(),
        many + 1,
        "{who}: a listing lost objects across pages"
    );
    let hourly = BTreeMap::from([
        (props::MARKER.to_string(), props::MARKER_VALUE.to_string()),
        (props::KIND.to_string(), "hourly".to_string()),
    ]);
    let got = t.list(&hourly).unwrap();
    assert_eq!(got.len(), many.div_ceil(2), "{who}: filtering by property");
    assert!(got.iter().all(|l| l.prop(props::KIND) == Some("hourly")));

    // deletion: gone from listings and from get
    for l in &got {
        t.delete(&l.id).unwrap();
    }
    t.delete(&id).unwrap();
    assert!(
        t.list(&hourly).unwrap().is_empty(),
        "{who}: deleted objects still listed"
    );
    assert_eq!(t.list(&marker()).unwrap().len(), many / 2);
    assert!(t.get(&id).is_err(), "{who}: get found a deleted object");
}

#[cfg(test)]
mod tests {
    use super::super::config::{TargetConfig, TargetKind};
    use super::super::memory::{Faults, MemoryStore};
    use super::*;

    struct Memory(MemoryStore);

    impl Harness for Memory {
        fn target(&mut self) -> Box<dyn Target> {
            super::super::open(TargetConfig {
                name: "mem".into(),
                kind: TargetKind::Memory(self.0.clone()),
            })
        }
        fn page_size(&self) -> usize {
            3
        }
        fn leftovers(&mut self) -> Vec<String> {
            let (mut names, open) = self.0.leftovers();
            names.extend((0..open).map(|i| format!("<open upload {i}>")));
            names.sort();
            names
        }
        fn fail_next_upload(&mut self, after_bytes: u64) -> bool {
            self.0.set_faults(Faults {
                fail_write_after_bytes: Some(after_bytes),
                ..Faults::default()
            });
            true
        }
        fn clear_faults(&mut self) {
            self.0.set_faults(Faults::default());
        }
    }

    #[test]
    fn the_memory_target_conforms() {
        let store = MemoryStore::default();
        store.set_page_size(3);
        run(&mut Memory(store.clone()));
        assert!(store.pages_served() > 3, "listings were not paged");
    }

    #[test]
    fn an_unreachable_memory_target_fails_every_operation() {
        let store = MemoryStore::default();
        store.set_faults(Faults {
            unreachable: true,
            ..Faults::default()
        });
        let mut t = Memory(store).target();
        assert!(t.check_readable().is_err());
        assert!(t.list(&marker()).is_err());
        assert!(t.begin("x", "a/b", &BTreeMap::new(), 1).is_err());
    }
}
