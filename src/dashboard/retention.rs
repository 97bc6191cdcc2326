//! Retention as `status` shows it: per target, job (or built-in kind) and database, how many
//! backups each rule holds and the oldest restorable point. Every count is read off the
//! planner's own decisions ([`retention::plan_policy`], not forced, nothing deleted), over the
//! catalog's copy rows, or over the target's listing when the catalog cannot be read; nothing
//! here decides what a rule keeps.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::retention::{self, Group, Policy, Verdict};
use crate::storage::{props, Listed};

/// One retention group on one target.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RetentionView {
    pub target: String,
    /// The config file's job; `None` for a built-in kind.
    pub job: Option<String>,
    pub kind: String,
    /// `None` when the target could not be read at all.
    pub database: Option<String>,
    /// The rules in force, as `prune` logs them.
    pub rules: String,
    /// Where the backups were counted: `catalog` or `target` (its listing).
    pub source: &'static str,
    /// `false` when the target's listing failed (`error` says why): nothing is counted.
    pub reachable: bool,
    pub error: Option<String>,
    /// Complete backups of the group on the target.
    pub backups: usize,
    /// For each of [`retention::RULES`], how many backups it holds (one backup can be held by
    /// several rules: the newest is usually `last`, `daily`, ... and `newest`).
    pub held_by: BTreeMap<&'static str, usize>,
    /// What the next `prune` would delete, and what the circuit breaker would hold back.
    pub would_delete: usize,
    pub held_by_breaker: usize,
    /// The time of the oldest complete (verified when stored) backup on the target, Unix ms.
    pub oldest_restorable_ms: Option<i64>,
    pub newest_ms: Option<i64>,
}

/// Where a view's backups come from.
pub const FROM_CATALOG: &str = "catalog";
pub const FROM_TARGET: &str = "target";

/// The view of `group` on `target` under `policy`, from `listed` (any files; the planner picks
/// the group's complete backups).
pub fn summarize(
    target: &str,
    group: Group,
    policy: &Policy,
    listed: &[Listed],
    source: &'static str,
    now_ms: i64,
) -> RetentionView {
    let plan = retention::plan_policy(listed, group, policy, None, now_ms, false);
    let mut held_by: BTreeMap<&'static str, usize> =
        retention::RULES.iter().map(|r| (*r, 0)).collect();
    for d in &plan.decisions {
        let mut rules: Vec<&'static str> = d.reasons.iter().filter_map(|r| r.rule()).collect();
        rules.dedup(); // within and within_daily on one backup count once
        rules.sort_unstable();
        rules.dedup();
        for r in rules {
            *held_by.entry(r).or_default() += 1;
        }
    }
    let count = |v: Verdict| plan.decisions.iter().filter(|d| d.verdict == v).count();
    let times = || plan.decisions.iter().filter_map(|d| d.time_ms);
    RetentionView {
        target: target.to_string(),
        job: group.job.map(str::to_string),
        kind: group.kind.to_string(),
        database: Some(group.database.to_string()),
        rules: policy.describe(),
        source,
        reachable: true,
        error: None,
        backups: plan.decisions.len(),
        held_by,
        would_delete: count(Verdict::Delete),
        held_by_breaker: count(Verdict::Held),
        oldest_restorable_ms: times().min(),
        newest_ms: times().max(),
    }
}

/// One view per database among `listed` (the backups of one job or kind on one target); one
/// view with no database and nothing counted when the target holds none, so that an empty
/// target still shows.
pub fn summarize_all(
    target: &str,
    kind: &str,
    job: Option<&str>,
    policy: &Policy,
    listed: &[Listed],
    source: &'static str,
    now_ms: i64,
) -> Vec<RetentionView> {
    let databases: std::collections::BTreeSet<&str> = listed
        .iter()
        .filter(|l| l.prop(props::JOB) == job && l.prop(props::KIND) == Some(kind))
        .filter_map(|l| l.prop(props::DATABASE))
        .collect();
    if databases.is_empty() {
        return vec![RetentionView {
            source,
            reachable: true,
            error: None,
            ..unreachable(target, kind, job, policy, String::new())
        }];
    }
    databases
        .into_iter()
        .map(|database| {
            let group = Group {
                kind,
                database,
                job,
            };
            summarize(target, group, policy, listed, source, now_ms)
        })
        .collect()
}

/// A target whose backups could not be read: shown, not counted.
pub fn unreachable(
    target: &str,
    kind: &str,
    job: Option<&str>,
    policy: &Policy,
    error: String,
) -> RetentionView {
    RetentionView {
        target: target.to_string(),
        job: job.map(str::to_string),
        kind: kind.to_string(),
        database: None,
        rules: policy.describe(),
        source: FROM_TARGET,
        reachable: false,
        error: Some(error),
        backups: 0,
        held_by: BTreeMap::new(),
        would_delete: 0,
        held_by_breaker: 0,
        oldest_restorable_ms: None,
        newest_ms: None,
    }
}

impl RetentionView {
    /// `nightly/daily/shop` (`-` for a built-in kind's job).
    pub fn group_label(&self) -> String {
        format!(
            "{}/{}/{}",
            self.job.as_deref().unwrap_or("-"),
            self.kind,
            self.database.as_deref().unwrap_or("?")
        )
    }

    /// `last 7, daily 7, weekly 4, pinned 1, newest 1`: the rules that hold something.
    pub fn held_summary(&self) -> String {
        let parts: Vec<String> = retention::RULES
            .iter()
            .filter_map(|r| {
                let n = *self.held_by.get(r)?;
                (n > 0).then(|| format!("{r} {n}"))
            })
            .collect();
        if parts.is_empty() {
            "nothing".into()
        } else {
            parts.join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A complete backup of `shop`'s daily kind, `days` after 2026-01-01T02:00Z.
    fn backup(days: i64, pinned: bool) -> Listed {
        let at = 1_767_232_800_000 + days * 86_400_000;
        let mut properties = retention::selector("daily", "shop");
        for (k, v) in [
            (props::SIZE, "1"),
            (props::SHA256, "ab"),
            (props::MD5, "cd"),
        ] {
            properties.insert(k.into(), v.into());
        }
        properties.insert(
            props::STARTED_AT.into(),
            crate::timeutil::rfc3339_millis(at),
        );
        if pinned {
            properties.insert(retention::PINNED.into(), retention::PINNED_VALUE.into());
        }
        Listed {
            id: format!("b{days:03}"),
            name: format!("b{days:03}"),
            created_ms: Some(at),
            size: Some(1),
            properties,
        }
    }

    #[test]
    fn counts_what_each_rule_holds_as_the_planner_decides() {
        // 60 dailies from 2026-01-01; day 3 pinned
        let listed: Vec<Listed> = (0..60).map(|d| backup(d, d == 3)).collect();
        let mut policy = Policy::keep_last(2);
        policy.keep_periods = [0, 7, 4, 2, 0];
        policy.max_delete_share = 100;
        let v = summarize_all("nas", "daily", None, &policy, &listed, FROM_TARGET, 0);
        assert_eq!(v.len(), 1);
        let v = &v[0];
        assert_eq!(v.backups, 60);
        let held = |r: &str| v.held_by[r];
        assert_eq!(held("last"), 2);
        assert_eq!(held("daily"), 7);
        // ISO weeks: the Sundays before the newest (day 59 = Sun 2026-03-01) and three before
        assert_eq!(held("weekly"), 4);
        // the last backup of Feb (day 58) and of Mar (day 59)
        assert_eq!(held("monthly"), 2);
        assert_eq!((held("pinned"), held("newest"), held("hourly")), (1, 1, 0));
        // kept: days 53..59 (daily), 52, 45, 38 (weekly), 3 (pinned)
        assert_eq!(v.would_delete, 60 - 11);
        assert_eq!(v.held_by_breaker, 0);
        assert_eq!(v.oldest_restorable_ms, Some(1_767_232_800_000));
        assert_eq!(
            v.held_summary(),
            "last 2, daily 7, weekly 4, monthly 2, pinned 1, newest 1"
        );
        // the default breaker share holds the deletions back, and says so
        policy.max_delete_share = 50;
        let v = &summarize_all("nas", "daily", None, &policy, &listed, FROM_TARGET, 0)[0];
        assert_eq!((v.would_delete, v.held_by_breaker), (0, 49));
    }

    #[test]
    fn an_empty_target_still_shows_with_nothing_counted() {
        let v = summarize_all(
            "nas",
            "daily",
            None,
            &Policy::keep_last(2),
            &[],
            FROM_TARGET,
            0,
        );
        assert_eq!(v.len(), 1);
        assert!(v[0].reachable && v[0].error.is_none());
        assert_eq!((v[0].backups, v[0].oldest_restorable_ms), (0, None));
        assert_eq!(v[0].held_summary(), "nothing");
    }
}
