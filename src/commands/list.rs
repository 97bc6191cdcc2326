//! `pgdrive list`: the backups in storage, from storage alone (Drive `appProperties`, all pages,
//! or a local directory's sidecars), joined with the catalog by Drive file id (or local file
//! name) when the catalog is reachable. A table for people, `--json` for scripts; output goes to
//! stdout, logs to stderr.

use std::collections::HashMap;

use anyhow::{Context, Result};
use serde_json::json;

use super::source;
use crate::cli::ListArgs;
use crate::config::Settings;
use crate::error::ExitStatus;
use crate::storage::{props, Backend, Listed};
use crate::units::human_bytes;

/// What the catalog knows about one stored backup.
#[derive(Default, Clone)]
struct CatalogFacts {
    status: Option<String>,
    verified_at: Option<String>,
    verify_result: Option<String>,
}

pub fn run(args: &ListArgs, settings: Settings) -> Result<ExitStatus> {
    let cfg = source::load(&args.source, settings)?;
    // (target name, its backend, the backup)
    let mut rows: Vec<(String, Backend, Listed)> = Vec::new();
    for mut target in source::targets(&cfg, args.kind, args.source.target.as_deref())? {
        let backend = target.backend();
        let label = target.name().to_string();
        let what = target.describe();
        let mut selector = std::collections::BTreeMap::from([(
            props::MARKER.to_string(),
            props::MARKER_VALUE.to_string(),
        )]);
        if let Some(k) = args.kind {
            selector.insert(props::KIND.to_string(), k.as_str().to_string());
        }
        let listed = target
            .list(&selector)
            .with_context(|| format!("listing {what}"))?;
        rows.extend(
            listed
                .into_iter()
                .filter(|l| {
                    args.source
                        .database
                        .as_deref()
                        .is_none_or(|d| l.prop(props::DATABASE) == Some(d))
                })
                .map(|l| (label.clone(), backend, l)),
        );
    }
    rows.sort_by(|a, b| {
        b.2.created_ms
            .cmp(&a.2.created_ms)
            .then_with(|| b.2.name.cmp(&a.2.name))
    });

    let catalog = source::optional_catalog(&cfg)
        .map(|mut c| facts(&mut c))
        .transpose()
        .unwrap_or_else(|e| {
            crate::log::warn(
                "could not read the catalog; listing storage alone",
                &[("error", crate::error::render(&e))],
            );
            None
        });
    let lookup = |backend: Backend, l: &Listed| -> Option<CatalogFacts> {
        let map = catalog.as_ref()?;
        let key = if backend == Backend::Drive {
            format!("drive:{}", l.id)
        } else {
            format!("local:{}", l.name)
        };
        map.get(&key).cloned()
    };

    if args.json {
        let out: Vec<serde_json::Value> = rows
            .iter()
            .map(|(label, backend, l)| {
                let facts = lookup(*backend, l);
                let digest = l.recorded_digest();
                json!({
                    "id": l.id,
                    "name": l.name,
                    "storage": label,
                    "created_at": l.created_ms.map(crate::timeutil::rfc3339_millis),
                    "kind": l.prop(props::KIND),
                    "database": l.prop(props::DATABASE),
                    "size_bytes": l.size,
                    "complete": digest.is_some(),
                    "sha256": digest.as_ref().map(|d| d.sha256.clone()),
                    "md5": digest.as_ref().map(|d| d.md5.clone()),
                    "format": l.prop(props::FORMAT),
                    "compression": l.prop(props::COMPRESSION),
                    "server_version": l.prop(props::SERVER_VERSION),
                    "in_catalog": facts.is_some(),
                    "status": status(l, facts.as_ref()),
                    "verified_at": facts.as_ref().and_then(|f| f.verified_at.clone()),
                    "verify_result": facts.as_ref().and_then(|f| f.verify_result.clone()),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitStatus::Ok);
    }

    let header = [
        "CREATED (UTC)",
        "KIND",
        "DATABASE",
        "SIZE",
        "STATUS",
        "VERIFIED",
        "ID",
    ];
    let table: Vec<[String; 7]> = rows
        .iter()
        .map(|(_, backend, l)| {
            let facts = lookup(*backend, l);
            let verified = match facts.as_ref().and_then(|f| f.verified_at.clone()) {
                Some(at) => format!(
                    "{} {}",
                    at.get(..16).unwrap_or(&at),
                    facts
                        .as_ref()
                        .and_then(|f| f.verify_result.clone())
                        .unwrap_or_default()
                        .split(':')
                        .next()
                        .unwrap_or("")
                ),
                None => "-".into(),
            };
            [
                l.created_ms
                    .map(|m| {
                        crate::timeutil::rfc3339_millis(m)
                            .get(..19)
                            .unwrap_or_default()
                            .replace('T', " ")
                    })
                    .unwrap_or_else(|| "?".into()),
                l.prop(props::KIND).unwrap_or("?").to_string(),
                l.prop(props::DATABASE).unwrap_or("?").to_string(),
                l.size.map(human_bytes).unwrap_or_else(|| "?".into()),
                status(l, facts.as_ref()).to_string(),
                verified,
                l.id.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &table {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let render = |cells: &[String]| {
        cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    println!("{}", render(&header.map(String::from)));
    for row in &table {
        println!("{}", render(row));
    }
    if table.is_empty() {
        crate::log::info("no backups found", &[]);
    }
    Ok(ExitStatus::Ok)
}

/// `stored` (complete, per its own properties) or `incomplete`; the catalog's word when it has one.
fn status(l: &Listed, facts: Option<&CatalogFacts>) -> &'static str {
    match (
        l.recorded_digest().is_some(),
        facts.and_then(|f| f.status.as_deref()),
    ) {
        (false, _) => "incomplete",
        (true, Some("SUCCESS")) => "ok",
        (true, Some(_)) => "catalog-error",
        (true, None) => "stored",
    }
}

/// Catalog facts keyed `drive:<file id>` and `local:<file name>`.
fn facts(client: &mut postgres::Client) -> Result<HashMap<String, CatalogFacts>> {
    let rows = crate::catalog::copy_facts(client)?;
    let mut map = HashMap::new();
    for r in rows {
        let f = CatalogFacts {
            status: r.status,
            verified_at: r.verified_at,
            verify_result: r.verify_result,
        };
        if let Some(id) = r.drive_file_id {
            map.insert(format!("drive:{id}"), f.clone());
        }
        if let Some(name) = r.local_file {
            map.insert(format!("local:{name}"), f);
        }
    }
    Ok(map)
}
