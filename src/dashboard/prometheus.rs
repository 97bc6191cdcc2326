//! The dashboard as metrics: the node_exporter textfile-collector format (gauges with HELP and
//! TYPE lines, labels `kind` and `database`).

use std::fmt::Write as _;

use super::{Dashboard, KindStatus};

fn label_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The node_exporter textfile-collector format (Prometheus text exposition 0.0.4).
pub fn render_prometheus(d: &Dashboard) -> String {
    let mut out = String::new();
    let db = label_value(&d.database);
    let mut metric = |name: &str, help: &str, samples: Vec<(String, String)>| {
        if samples.is_empty() {
            return;
        }
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let per_kind = |f: &dyn Fn(&KindStatus) -> Option<String>| -> Vec<(String, String)> {
        d.kinds
            .iter()
            .filter_map(|k| {
                f(k).map(|v| {
                    (
                        format!("{{kind=\"{}\",database=\"{db}\"}}", k.kind.as_str()),
                        v,
                    )
                })
            })
            .collect()
    };
    let secs = |ms: i64| format!("{:.3}", ms as f64 / 1000.0);
    metric(
        "pgdrive_last_success_timestamp_seconds",
        "Start time of the newest successful backup, Unix seconds.",
        per_kind(&|k| k.last_success.as_ref().map(|s| secs(s.at_ms))),
    );
    metric(
        "pgdrive_last_backup_size_bytes",
        "Compressed size of the newest successful backup.",
        per_kind(&|k| {
            k.last_success
                .as_ref()
                .and_then(|s| s.size_bytes)
                .map(|b| b.to_string())
        }),
    );
    metric(
        "pgdrive_last_backup_duration_seconds",
        "Duration of the newest successful backup.",
        per_kind(&|k| {
            k.last_success
                .as_ref()
                .and_then(|s| s.duration_ms)
                .map(secs)
        }),
    );
    metric(
        "pgdrive_last_run_success",
        "1 if the newest run of this kind succeeded, 0 if it failed.",
        per_kind(&|k| {
            k.last_run_success
                .map(|s| if s { "1".into() } else { "0".into() })
        }),
    );
    metric(
        "pgdrive_backups_kept",
        "Backups of this kind currently kept.",
        per_kind(&|k| k.kept.map(|n| n.to_string())),
    );
    metric(
        "pgdrive_backups_keep_setting",
        "Retention setting: backups to keep (0 keeps all).",
        per_kind(&|k| Some(k.keep.to_string())),
    );
    metric(
        "pgdrive_max_age_seconds",
        "Maximum age allowed for the newest backup.",
        per_kind(&|k| k.max_age_seconds.map(|s| s.to_string())),
    );
    metric(
        "pgdrive_backup_stale",
        "1 if the newest successful backup is older than its max age (or missing).",
        per_kind(&|k| {
            k.max_age_seconds
                .map(|_| if k.stale { "1".into() } else { "0".into() })
        }),
    );
    let one = |v: String| vec![(format!("{{database=\"{db}\"}}"), v)];
    metric(
        "pgdrive_catalog_up",
        "1 if the backups catalog could be read.",
        one(if d.catalog_ok { "1".into() } else { "0".into() }),
    );
    if let Some(q) = &d.quota {
        metric(
            "pgdrive_drive_quota_used_bytes",
            "Drive storage used by the account pgdrive acts as.",
            one(q.used_bytes.to_string()),
        );
        if let Some(l) = q.limit_bytes {
            metric(
                "pgdrive_drive_quota_limit_bytes",
                "Drive storage limit of the account pgdrive acts as.",
                one(l.to_string()),
            );
        }
    }
    metric(
        "pgdrive_status_timestamp_seconds",
        "When these metrics were computed, Unix seconds.",
        one(secs(d.generated_ms)),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
