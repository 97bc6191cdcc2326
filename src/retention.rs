//! Which backups to delete after a successful run: a pure function of the listing, the kind, the
//! database and the keep count, with no I/O, so it can be tested as a table.
//!
//! Rules: only files pgdrive created for this database and kind count (decided by their
//! properties, never by name); the newest `keep` by creation time stay, the file just stored
//! always among them; `keep = 0` keeps everything; everything else in the folder is untouched.

use std::collections::BTreeMap;

use crate::storage::{props, Listed};

#[derive(Debug, Default, PartialEq, Eq)]
pub struct PrunePlan {
    /// IDs kept, newest first.
    pub keep: Vec<String>,
    /// IDs to delete, newest first.
    pub delete: Vec<String>,
    /// IDs of unfinished uploads to delete: files of the group whose checksums were never
    /// recorded (in the index or a manifest), older than [`UNFINISHED_GRACE_MS`] and older than
    /// the newest complete backup. They never count toward `keep`.
    pub unfinished: Vec<String>,
}

/// How long a file that looks like an unfinished upload is left alone: an upload that Drive
/// completed while pgdrive could not hear it, or one still being labelled by a running backup.
pub const UNFINISHED_GRACE_MS: i64 = 24 * 3600 * 1000;

/// Which backups form one retention group: one kind and database, and one of the config file's
/// jobs or none (the built-in kind). A job's backups never count toward, or get pruned by,
/// another job's or the built-in kind's keep, even in a shared folder.
#[derive(Clone, Copy, Debug)]
pub struct Group<'a> {
    pub kind: &'a str,
    pub database: &'a str,
    pub job: Option<&'a str>,
}

impl Group<'_> {
    /// The properties a listing can filter on (a storage that filters by property cannot ask
    /// for an absent one: the built-in kinds' group is narrowed by [`Group::holds`]).
    pub fn selector(&self) -> BTreeMap<String, String> {
        let mut wanted = BTreeMap::from([
            (props::MARKER.to_string(), props::MARKER_VALUE.to_string()),
            (props::KIND.to_string(), self.kind.to_string()),
            // a database name has at most 63 bytes (NAMEDATALEN), so every target records it whole
            (props::DATABASE.to_string(), self.database.to_string()),
        ]);
        if let Some(job) = self.job {
            wanted.insert(props::JOB.to_string(), job.to_string());
        }
        wanted
    }

    /// Whether a listed backup belongs to the group.
    pub fn holds(&self, f: &Listed) -> bool {
        self.selector()
            .iter()
            .all(|(k, v)| f.properties.get(k) == Some(v))
            && f.prop(props::JOB) == self.job
    }
}

/// The selector of a built-in kind's group (no job).
pub fn selector(kind: &str, database: &str) -> BTreeMap<String, String> {
    Group {
        kind,
        database,
        job: None,
    }
    .selector()
}

/// Plans the pruning of `listed` (any files, any order) after `just_stored` was stored.
pub fn plan(
    listed: &[Listed],
    kind: &str,
    database: &str,
    keep: u32,
    just_stored: &str,
) -> PrunePlan {
    plan_group(
        listed,
        Group {
            kind,
            database,
            job: None,
        },
        keep,
        just_stored,
        i64::MIN,
    )
}

/// [`plan`] for any group, a job's included, at `now_ms` (which decides which unfinished
/// uploads are old enough to delete; `i64::MIN`: none is).
pub fn plan_group(
    listed: &[Listed],
    group: Group,
    keep: u32,
    just_stored: &str,
    now_ms: i64,
) -> PrunePlan {
    let (mut own, unfinished): (Vec<&Listed>, Vec<&Listed>) = listed
        .iter()
        .filter(|f| group.holds(f))
        .partition(|f| f.recorded_digest().is_some() || f.id == just_stored);
    let newest_complete = own.iter().filter_map(|f| f.created_ms).max();
    let mut unfinished: Vec<String> = unfinished
        .into_iter()
        .filter(|f| {
            let created = f.created_ms.unwrap_or(i64::MAX);
            created < now_ms.saturating_sub(UNFINISHED_GRACE_MS)
                && newest_complete.is_some_and(|newest| created < newest)
        })
        .map(|f| f.id.clone())
        .collect();
    unfinished.sort();
    unfinished.dedup();
    // newest first; ties broken by name then id so the plan is deterministic
    own.sort_by(|a, b| {
        b.created_ms
            .unwrap_or(i64::MIN)
            .cmp(&a.created_ms.unwrap_or(i64::MIN))
            .then_with(|| b.name.cmp(&a.name))
            .then_with(|| b.id.cmp(&a.id))
    });
    own.dedup_by(|a, b| a.id == b.id);
    if keep == 0 {
        return PrunePlan {
            keep: own.iter().map(|f| f.id.clone()).collect(),
            delete: Vec::new(),
            unfinished,
        };
    }
    let mut plan = PrunePlan {
        unfinished,
        ..PrunePlan::default()
    };
    let mut slots = keep as usize;
    if own.iter().any(|f| f.id == just_stored) {
        slots -= 1; // the new backup always takes one of the places
    }
    for f in own {
        if f.id == just_stored {
            plan.keep.push(f.id.clone());
        } else if slots > 0 {
            slots -= 1;
            plan.keep.push(f.id.clone());
        } else {
            plan.delete.push(f.id.clone());
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A complete backup of the group: its checksums are recorded.
    fn own(id: &str, created: i64, kind: &str, db: &str) -> Listed {
        let mut l = unfinished(id, created, kind, db);
        for (k, v) in [
            (props::SIZE, "1"),
            (props::SHA256, "ab"),
            (props::MD5, "cd"),
        ] {
            l.properties.insert(k.into(), v.into());
        }
        l
    }

    /// A file of the group whose upload was never labelled complete.
    fn unfinished(id: &str, created: i64, kind: &str, db: &str) -> Listed {
        Listed {
            id: id.into(),
            name: format!("{db}-{kind}-{created}.sql.gz"),
            created_ms: Some(created),
            size: Some(1),
            properties: selector(kind, db),
        }
    }

    #[test]
    fn unfinished_uploads_never_count_and_go_only_after_the_grace_period() {
        const H: i64 = 3600 * 1000;
        let now = 1000 * H;
        let group = Group {
            kind: "daily",
            database: "shop",
            job: None,
        };
        let files = vec![
            own("c1", now - 72 * H, "daily", "shop"),
            unfinished("u_old", now - 48 * H, "daily", "shop"),
            own("c2", now - 30 * H, "daily", "shop"),
            unfinished("u_recent", now - 2 * H, "daily", "shop"),
            own("c3", now, "daily", "shop"),
            // newer than every complete backup: perhaps still being labelled; left alone
            unfinished("u_newest", now + H, "daily", "shop"),
        ];
        let p = plan_group(&files, group, 2, "c3", now);
        // keep 2 counts complete backups only: c3 and c2, not u_recent
        assert_eq!(p.keep, ["c3", "c2"]);
        assert_eq!(p.delete, ["c1"]);
        assert_eq!(p.unfinished, ["u_old"]);
        // keep 0 keeps every complete backup, and still clears old leftovers
        let p = plan_group(&files, group, 0, "c3", now);
        assert_eq!(p.delete, Vec::<String>::new());
        assert_eq!(p.unfinished, ["u_old"]);
        // with no complete backup in the group, nothing unfinished is deleted
        let only = vec![unfinished("u", now - 48 * H, "daily", "shop")];
        assert!(plan_group(&only, group, 2, "new", now)
            .unfinished
            .is_empty());
    }

    fn foreign(id: &str, created: i64) -> Listed {
        Listed {
            id: id.into(),
            name: format!("shop-daily-{created}.sql.gz"),
            created_ms: Some(created),
            size: Some(1),
            properties: BTreeMap::new(),
        }
    }

    #[test]
    fn a_jobs_backups_and_the_built_in_kinds_are_separate_groups() {
        let of_job = |id: &str, created: i64, job: &str| {
            let mut l = own(id, created, "daily", "shop");
            l.properties.insert(props::JOB.into(), job.into());
            l
        };
        let files = vec![
            own("k1", 1, "daily", "shop"),
            own("k2", 2, "daily", "shop"),
            of_job("n1", 3, "nightly"),
            of_job("n2", 4, "nightly"),
            of_job("w1", 5, "weekly"),
        ];
        // the built-in daily group sees only k1, k2: the newer job backups do not push k1 out
        let p = plan(&files, "daily", "shop", 1, "k2");
        assert_eq!(p.delete, ["k1"]);
        assert_eq!(p.keep, ["k2"]);
        let nightly = Group {
            kind: "daily",
            database: "shop",
            job: Some("nightly"),
        };
        let p = plan_group(&files, nightly, 1, "n2", 0);
        assert_eq!(
            (p.keep, p.delete),
            (vec!["n2".to_string()], vec!["n1".to_string()])
        );
        assert_eq!(
            nightly.selector().get(props::JOB).map(String::as_str),
            Some("nightly")
        );
    }

    #[test]
    fn table() {
        struct Case {
            name: &'static str,
            files: Vec<Listed>,
            keep: u32,
            just: &'static str,
            want_delete: Vec<&'static str>,
        }
        let twenty: Vec<Listed> = (1..=20)
            .map(|i| own(&format!("f{i:02}"), i * 1000, "daily", "shop"))
            .collect();
        let cases = vec![
            Case {
                name: "20 own + 3 foreign keeps 14 own and every foreign file",
                files: twenty.iter().cloned().chain((1..=3).map(|i| foreign(&format!("x{i}"), i))).collect(),
                keep: 14,
                just: "f20",
                want_delete: vec!["f06", "f05", "f04", "f03", "f02", "f01"],
            },
            Case { name: "keep 0 keeps everything", files: twenty.clone(), keep: 0, just: "f20", want_delete: vec![] },
            Case { name: "fewer than keep", files: twenty[..5].to_vec(), keep: 14, just: "f05", want_delete: vec![] },
            Case {
                name: "the new file is kept even if the clock made it look old",
                files: vec![own("new", 1, "daily", "shop"), own("a", 5, "daily", "shop"), own("b", 4, "daily", "shop")],
                keep: 2,
                just: "new",
                want_delete: vec!["b"],
            },
            Case {
                name: "other kinds and databases are not touched",
                files: vec![
                    own("d1", 1, "daily", "shop"),
                    own("d2", 2, "daily", "shop"),
                    own("h1", 0, "hourly", "shop"),
                    own("o1", 0, "daily", "other"),
                ],
                keep: 1,
                just: "d2",
                want_delete: vec!["d1"],
            },
            Case {
                name: "keep 1 leaves only the new backup",
                files: vec![own("a", 1, "daily", "shop"), own("b", 2, "daily", "shop"), own("c", 3, "daily", "shop")],
                keep: 1,
                just: "c",
                want_delete: vec!["b", "a"],
            },
            Case {
                name: "a listing that lacks the new file (eventual consistency) still keeps keep-1 others",
                files: vec![own("a", 1, "daily", "shop"), own("b", 2, "daily", "shop"), own("c", 3, "daily", "shop")],
                keep: 2,
                just: "zz-not-listed",
                want_delete: vec!["a"],
            },
            Case {
                name: "files without a creation time sort oldest",
                files: vec![
                    Listed { created_ms: None, ..own("nodate", 0, "daily", "shop") },
                    own("a", 1, "daily", "shop"),
                    own("b", 2, "daily", "shop"),
                ],
                keep: 2,
                just: "b",
                want_delete: vec!["nodate"],
            },
        ];
        for c in cases {
            let p = plan(&c.files, "daily", "shop", c.keep, c.just);
            assert_eq!(p.delete, c.want_delete, "{}", c.name);
            assert!(
                !p.delete.iter().any(|d| d == c.just),
                "{}: deletes the new backup",
                c.name
            );
            assert!(
                p.delete.iter().all(|d| !d.starts_with('x')),
                "{}: deletes a foreign file",
                c.name
            );
        }
    }

    #[test]
    fn the_listing_order_does_not_matter() {
        let mut files: Vec<Listed> = (1..=10)
            .map(|i| own(&format!("f{i:02}"), i, "daily", "shop"))
            .collect();
        let a = plan(&files, "daily", "shop", 3, "f10");
        files.reverse();
        let b = plan(&files, "daily", "shop", 3, "f10");
        assert_eq!(a, b);
        assert_eq!(a.keep, vec!["f10", "f09", "f08"]);
    }
}
