//! The manifest: one small, versioned JSON document stored beside every backup on every target
//! (`<backup>.manifest.json` on Drive, the `.pgdrive.json` sidecar locally, beside the object in
//! memory). It is written only once the backup is stored and verified, names the backup it
//! describes (id and name), and carries everything needed to list, restore, verify and prune it
//! without the target's property index (Drive `appProperties` are private to one Google Cloud
//! project) and without the catalog: database, kind, times, host, versions, format, codec, sizes,
//! checksums, row counts, encoding and locale, and the encryption: with age, the recipients'
//! fingerprints, the plaintext SHA-256 and the row counts age-encrypted in place of the clear
//! ones (table names leak the schema).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{props, Digest};

/// The manifest format version (`pgdrive_manifest`). Version 1 was the row counts alone, kept in
/// a Drive file's description by older releases; [`super::parse_manifest`] still reads those.
pub const FORMAT_VERSION: u64 = 2;

/// What a manifest's name adds to its backup's name (Drive; locally the sidecar's suffix).
pub const SUFFIX: &str = ".manifest.json";

/// The MIME type manifests are stored with.
pub const MIME_TYPE: &str = "application/json";

/// Largest manifest pgdrive reads (one with many thousands of tables stays far below).
pub const MAX_BYTES: u64 = 64 << 20;

/// A manifest read back from storage.
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    /// The id of the backup it describes, as its target knows it.
    pub id: String,
    pub name: String,
    pub created_ms: Option<i64>,
    /// The backup's full property index (the same keys as Drive's `appProperties`).
    pub properties: BTreeMap<String, String>,
    pub row_counts: Option<BTreeMap<String, u64>>,
    /// The whole document, for the sections only some backups have (`crate::dr`).
    pub document: Value,
}

/// The manifest of the backup `id`/`name`: `properties` are every property recorded on it
/// (initial and final), `digest` what was verified.
pub fn build(
    id: &str,
    name: &str,
    properties: &BTreeMap<String, String>,
    row_counts: &BTreeMap<String, u64>,
    sealed_row_counts: Option<&str>,
    digest: &Digest,
) -> Value {
    let p = |key: &str| properties.get(key).cloned().unwrap_or_default();
    // encrypted: the fingerprints (public), the plaintext checksum, and the row counts sealed
    let encryption = match properties.get(props::ENCRYPTION) {
        Some(scheme) => json!({
            "scheme": scheme,
            "recipients": p(props::RECIPIENTS).split(',').filter(|f| !f.is_empty()).collect::<Vec<_>>(),
            "plaintext_sha256": p(props::PLAIN_SHA256),
            "row_counts_age": sealed_row_counts,
        }),
        None => json!({ "key_ids": [] }),
    };
    let row_counts = match sealed_row_counts {
        Some(_) => Value::Null,
        None => json!(row_counts),
    };
    let finished = crate::timeutil::rfc3339_millis(crate::timeutil::now_millis());
    json!({
        "pgdrive_manifest": FORMAT_VERSION,
        "id": id,
        "name": name,
        "database": p(props::DATABASE),
        "kind": p(props::KIND),
        "job": properties.get(props::JOB),
        "started_at": p(props::STARTED_AT),
        "created_time": finished,
        "host": p(props::HOST),
        "pgdrive_version": p(props::VERSION),
        "server_version": p(props::SERVER_VERSION),
        "pg_dump_version": p(props::PG_DUMP_VERSION),
        "format": p(props::FORMAT),
        "codec": p(props::COMPRESSION),
        "raw_size": p(props::RAW_SIZE).parse::<u64>().ok(),
        "size": digest.size,
        "sha256": digest.sha256,
        "md5": digest.md5,
        "row_counts": row_counts,
        "locale": {
            "encoding": p(props::ENCODING),
            "provider": p(props::LOCALE_PROVIDER),
            "collate": p(props::COLLATE),
            "ctype": p(props::CTYPE),
            "provider_locale": p(props::PROVIDER_LOCALE),
        },
        "encryption": encryption,
        "properties": properties,
    })
}

/// The manifest of the backup `id`/`name` completed by `done`: [`build`] with the sections the
/// backup adds of its own ([`super::Completion::manifest_extra`]). What every target writes.
pub fn build_for(
    id: &str,
    name: &str,
    properties: &BTreeMap<String, String>,
    done: &super::Completion,
) -> Value {
    let mut v = build(
        id,
        name,
        properties,
        &done.row_counts,
        done.sealed_row_counts.as_deref(),
        &done.digest,
    );
    // the full list: the property it was built from may be cut at the target's limit
    if !done.recipients.is_empty() && v["encryption"].is_object() {
        v["encryption"]["recipients"] = json!(done.recipients);
    }
    if let Some(o) = v.as_object_mut() {
        for (k, extra) in &done.manifest_extra {
            o.insert(k.clone(), extra.clone());
        }
    }
    v
}

/// The properties and row counts any sidecar or manifest records (older local sidecars have
/// these two without the rest).
pub fn properties_and_counts(
    v: &Value,
) -> (BTreeMap<String, String>, Option<BTreeMap<String, u64>>) {
    let properties = v["properties"]
        .as_object()
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let row_counts = v["row_counts"].as_object().and_then(|o| {
        o.iter()
            .map(|(k, n)| Some((k.clone(), n.as_u64()?)))
            .collect()
    });
    (properties, row_counts)
}

/// Pins (or unpins) the backup a manifest or sidecar describes: its properties carry
/// [`crate::retention::PINNED`] exactly while it is pinned.
pub fn set_pinned(v: &mut Value, pinned: bool) -> anyhow::Result<()> {
    let properties = v["properties"]
        .as_object_mut()
        .ok_or_else(|| anyhow::anyhow!("the manifest has no properties to record a pin in"))?;
    if pinned {
        properties.insert(
            crate::retention::PINNED.into(),
            crate::retention::PINNED_VALUE.into(),
        );
    } else {
        properties.remove(crate::retention::PINNED);
    }
    Ok(())
}

/// The recipients' fingerprints a manifest records (all of them, unlike the property index).
pub fn recipients(document: &Value) -> Option<Vec<String>> {
    let list: Vec<String> = document["encryption"]["recipients"]
        .as_array()?
        .iter()
        .filter_map(|f| f.as_str().map(str::to_string))
        .collect();
    (!list.is_empty()).then_some(list)
}

/// The row counts age-encrypted in a manifest (base64), when the backup is encrypted.
pub fn sealed_row_counts(document: &Value) -> Option<&str> {
    document["encryption"]["row_counts_age"].as_str()
}

/// A manifest written by [`build`]; `None` for anything else (an older sidecar, foreign JSON).
pub fn parse(v: &Value) -> Option<Manifest> {
    if v["pgdrive_manifest"].as_u64() != Some(FORMAT_VERSION) {
        return None;
    }
    let (properties, row_counts) = properties_and_counts(v);
    Some(Manifest {
        id: v["id"].as_str()?.to_string(),
        name: v["name"].as_str()?.to_string(),
        created_ms: v["created_time"]
            .as_str()
            .and_then(crate::timeutil::parse_rfc3339),
        properties,
        row_counts,
        document: v.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_round_trip_and_say_what_they_describe() {
        let properties = BTreeMap::from([
            (props::MARKER.to_string(), props::MARKER_VALUE.to_string()),
            (props::DATABASE.to_string(), "shop".to_string()),
            (props::RAW_SIZE.to_string(), "1000".to_string()),
        ]);
        let counts = BTreeMap::from([("public.orders".to_string(), 7u64)]);
        let digest = Digest {
            size: 3,
            sha256: "ab".into(),
            md5: "cd".into(),
        };
        let v = build("file-1", "shop.sql.gz", &properties, &counts, None, &digest);
        assert_eq!(v["database"], "shop");
        assert_eq!(v["raw_size"], 1000);
        assert_eq!(v["encryption"]["key_ids"], json!([]));
        let m = parse(&v).unwrap();
        assert_eq!((m.id.as_str(), m.name.as_str()), ("file-1", "shop.sql.gz"));
        assert_eq!(m.properties, properties);
        assert_eq!(m.row_counts, Some(counts));
        assert!(m.created_ms.is_some());
        assert_eq!(parse(&json!({"properties": {}, "row_counts": {}})), None);
    }
}
