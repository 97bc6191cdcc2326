//! Which backups to delete: a pure function of the listing, the group, the [`Policy`] and the
//! time, with no I/O, so it can be tested as a table. Every backup gets a [`Decision`] with the
//! rule(s) that decided it, which `prune --dry-run` prints and `backup` logs.
//!
//! Rules (restic's `forget` semantics): `keep_last N` keeps the newest N; `keep_hourly/daily/
//! weekly/monthly/yearly N` keep the newest backup of each of the N newest hours/days/ISO
//! weeks/months/years that have a backup (a missed day is not a bucket); `keep_within D` keeps
//! everything within D of the newest backup (not of the clock: a host that stopped backing up
//! for a month does not lose its last backups), `keep_within_daily D` (etc.) the newest of each
//! day within D. Buckets are calendar periods in the policy's time zone (UTC unless one is
//! configured); an hour repeated when clocks go back is two buckets (the offset is part of it).
//!
//! Invariants, whatever the rules: only complete backups of this group count (decided by their
//! properties, never by name; unfinished uploads never count and go only after
//! [`UNFINISHED_GRACE_MS`]); the backup just stored, the newest complete one and every pinned
//! one are kept; a policy with no rule keeps everything; and when the rules would delete more
//! than `max_delete_share` percent of the group's backups in one run, the circuit breaker holds
//! them all unless forced. Everything else in the folder is untouched.

use std::collections::BTreeMap;

use crate::storage::{props, Listed};

#[derive(Debug, Default, PartialEq, Eq)]
pub struct PrunePlan {
    /// IDs kept, newest first.
    pub keep: Vec<String>,
    /// IDs to delete, newest first (empty when the circuit breaker tripped).
    pub delete: Vec<String>,
    /// Every complete backup of the group, newest first, with why it is kept or deleted.
    pub decisions: Vec<Decision>,
    /// Set when the rules wanted to delete more than the policy's share and the plan was not
    /// forced: nothing is deleted (the decisions say `Held`).
    pub tripped: Option<Tripped>,
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

/// The property that pins a backup (value [`PINNED_VALUE`]): recorded in its manifest and, on
/// Drive, its appProperties index. A pinned backup is never pruned.
pub const PINNED: &str = "pgdrive_pinned";
pub const PINNED_VALUE: &str = "1";

/// The share of a group's backups one run may delete without `--force`, in percent.
pub const DEFAULT_MAX_DELETE_SHARE: u8 = 50;

/// A calendar period backups are bucketed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Period {
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Period {
    pub const ALL: [Period; 5] = [
        Period::Hourly,
        Period::Daily,
        Period::Weekly,
        Period::Monthly,
        Period::Yearly,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Period::Hourly => "hourly",
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
            Period::Yearly => "yearly",
        }
    }

    /// The bucket of `t` in this period, as a label (`2026-12-02`, `2026-W49`, ...). An hour
    /// carries its UTC offset, so the hour repeated when clocks go back is two buckets.
    pub fn bucket(self, t: &jiff::ZonedDateTime) -> String {
        match self {
            Period::Hourly => format!(
                "{:04}-{:02}-{:02}T{:02}{}",
                t.year(),
                t.month(),
                t.day(),
                t.hour(),
                t.offset()
            ),
            Period::Daily => format!("{:04}-{:02}-{:02}", t.year(), t.month(), t.day()),
            Period::Weekly => {
                let w = t.iso_week_date();
                format!("{:04}-W{:02}", w.year(), w.week())
            }
            Period::Monthly => format!("{:04}-{:02}", t.year(), t.month()),
            Period::Yearly => format!("{:04}", t.year()),
        }
    }
}

/// A duration as the rules write it: years, months, weeks, days and hours (`30d`, `1y6m`,
/// `2w`, `36h`), subtracted on the calendar of the policy's time zone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Within {
    pub years: u16,
    pub months: u16,
    pub weeks: u16,
    pub days: u16,
    pub hours: u32,
}

impl Within {
    /// Parses `1y6m`, `30d`, `12h`; `None` for anything else (or a zero duration).
    pub fn parse(s: &str) -> Option<Within> {
        let mut w = Within::default();
        let mut digits = String::new();
        let mut seen = String::new();
        for c in s.trim().chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            if digits.is_empty() || seen.contains(c) {
                return None;
            }
            seen.push(c);
            match c {
                'y' => w.years = digits.parse().ok()?,
                'm' => w.months = digits.parse().ok()?,
                'w' => w.weeks = digits.parse().ok()?,
                'd' => w.days = digits.parse().ok()?,
                'h' => w.hours = digits.parse().ok()?,
                _ => return None,
            }
            digits.clear();
        }
        (digits.is_empty() && w != Within::default()).then_some(w)
    }

    /// The earliest moment within this duration of `newest`.
    fn since(&self, newest: &jiff::ZonedDateTime) -> Option<i64> {
        let span = jiff::Span::new()
            .years(self.years)
            .months(self.months)
            .weeks(self.weeks)
            .days(self.days)
            .hours(self.hours);
        newest
            .checked_sub(span)
            .ok()
            .map(|z| z.timestamp().as_millisecond())
    }
}

impl std::fmt::Display for Within {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (n, unit) in [
            (u32::from(self.years), 'y'),
            (u32::from(self.months), 'm'),
            (u32::from(self.weeks), 'w'),
            (u32::from(self.days), 'd'),
            (self.hours, 'h'),
        ] {
            if n > 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

/// The retention rules of one target for one group.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub keep_last: u32,
    /// `keep_hourly` ... `keep_yearly`, in [`Period::ALL`] order.
    pub keep_periods: [u32; 5],
    pub keep_within: Option<Within>,
    /// `keep_within_hourly` ... `keep_within_yearly`, in [`Period::ALL`] order.
    pub keep_within_periods: [Option<Within>; 5],
    /// Buckets are taken in this zone.
    pub timezone: jiff::tz::TimeZone,
    /// The circuit breaker: the most one run may delete, in percent of the group's backups.
    pub max_delete_share: u8,
}

impl Policy {
    /// Today's behaviour: the newest `n` (0: all).
    pub fn keep_last(n: u32) -> Policy {
        Policy {
            keep_last: n,
            keep_periods: [0; 5],
            keep_within: None,
            keep_within_periods: [None; 5],
            timezone: jiff::tz::TimeZone::UTC,
            max_delete_share: DEFAULT_MAX_DELETE_SHARE,
        }
    }

    /// Whether no rule is set: then everything is kept.
    pub fn keeps_all(&self) -> bool {
        self.keep_last == 0
            && self.keep_periods.iter().all(|n| *n == 0)
            && self.keep_within.is_none()
            && self.keep_within_periods.iter().all(Option::is_none)
    }

    /// The rules for a log line: `last 14, daily 7, weekly 4`.
    pub fn describe(&self) -> String {
        if self.keeps_all() {
            return "keep everything".into();
        }
        let mut parts = Vec::new();
        if self.keep_last > 0 {
            parts.push(format!("last {}", self.keep_last));
        }
        for (p, n) in Period::ALL.iter().zip(self.keep_periods) {
            if n > 0 {
                parts.push(format!("{} {n}", p.as_str()));
            }
        }
        if let Some(w) = self.keep_within {
            parts.push(format!("within {w}"));
        }
        for (p, w) in Period::ALL.iter().zip(self.keep_within_periods) {
            if let Some(w) = w {
                parts.push(format!("within_{} {w}", p.as_str()));
            }
        }
        let zone = self.timezone.iana_name().unwrap_or("UTC");
        format!("{} ({zone})", parts.join(", "))
    }
}

/// Why a backup is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Every rule is off: everything is kept.
    NoRules,
    /// The backup this run stored.
    JustStored,
    /// The newest complete backup of the group: never deleted, whatever the rules.
    NewestComplete,
    Pinned,
    /// The n-th newest (1 = newest) under `keep_last`.
    Last(u32),
    /// The newest of this bucket under `keep_<period>`.
    Bucket(Period, String),
    Within,
    /// The newest of this bucket under `keep_within_<period>`.
    WithinBucket(Period, String),
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::NoRules => f.write_str("no rules: keep everything"),
            Reason::JustStored => f.write_str("just stored"),
            Reason::NewestComplete => f.write_str("newest complete"),
            Reason::Pinned => f.write_str("pinned"),
            Reason::Last(n) => write!(f, "last #{n}"),
            Reason::Bucket(p, b) => write!(f, "{} {b}", p.as_str()),
            Reason::Within => f.write_str("within"),
            Reason::WithinBucket(p, b) => write!(f, "within_{} {b}", p.as_str()),
        }
    }
}

/// The rules `status` counts backups under, in the order it shows them: each [`Reason`] falls
/// under one ([`Reason::rule`]); `within` covers `keep_within` and every `keep_within_<period>`.
pub const RULES: [&str; 9] = [
    "last", "hourly", "daily", "weekly", "monthly", "yearly", "within", "pinned", "newest",
];

impl Reason {
    /// Which of [`RULES`] this reason is; `None` for the ones that are no rule (no rules at
    /// all, the backup just stored).
    pub fn rule(&self) -> Option<&'static str> {
        match self {
            Reason::NoRules | Reason::JustStored => None,
            Reason::NewestComplete => Some("newest"),
            Reason::Pinned => Some("pinned"),
            Reason::Last(_) => Some("last"),
            Reason::Bucket(p, _) => Some(p.as_str()),
            Reason::Within | Reason::WithinBucket(..) => Some("within"),
        }
    }
}

/// What happens to one backup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    Delete,
    /// The rules would delete it, but the circuit breaker tripped.
    Held,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Keep => "keep",
            Verdict::Delete => "delete",
            Verdict::Held => "held",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub id: String,
    pub name: String,
    /// The backup's time (when its dump started), if known.
    pub time_ms: Option<i64>,
    pub verdict: Verdict,
    /// Why it is kept; empty for a backup no rule keeps.
    pub reasons: Vec<Reason>,
}

impl Decision {
    /// The reasons for a table cell: `daily 2026-12-02, weekly 2026-W49`, or `no rule keeps it`.
    pub fn why(&self) -> String {
        if self.reasons.is_empty() {
            return match self.verdict {
                Verdict::Held => "no rule keeps it; held by the circuit breaker".into(),
                _ => "no rule keeps it".into(),
            };
        }
        self.reasons
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The circuit breaker tripped: the rules wanted to delete `would_delete` of `of` backups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tripped {
    pub would_delete: usize,
    pub of: usize,
    pub max_share: u8,
}

impl std::fmt::Display for Tripped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the retention rules would delete {} of {} backups, more than max_delete_share ({}%) allows in one run",
            self.would_delete, self.of, self.max_share
        )
    }
}

/// The retention keys of `[targets.NAME]` and `[jobs.NAME]` besides `keep` (declared once here;
/// [`crate::jobs`] parses them and lists them in the README with its own keys).
pub const KEYS: &[crate::jobs::Key] = &[
    crate::jobs::Key { name: "keep_hourly", shape: "number", help: "Keep the newest backup of each of the N newest hours that have one (0: off)." },
    crate::jobs::Key { name: "keep_daily", shape: "number", help: "Keep the newest backup of each of the N newest days that have one (0: off)." },
    crate::jobs::Key { name: "keep_weekly", shape: "number", help: "The same per ISO week (Monday to Sunday)." },
    crate::jobs::Key { name: "keep_monthly", shape: "number", help: "The same per calendar month." },
    crate::jobs::Key { name: "keep_yearly", shape: "number", help: "The same per calendar year." },
    crate::jobs::Key { name: "keep_within", shape: "duration (`30d`, `1y6m`, `2w`, `36h`)", help: "Keep every backup within this long of the newest one (not of the clock)." },
    crate::jobs::Key { name: "keep_within_hourly", shape: "duration", help: "Keep the newest backup of every hour within this long of the newest backup." },
    crate::jobs::Key { name: "keep_within_daily", shape: "duration", help: "The same per day." },
    crate::jobs::Key { name: "keep_within_weekly", shape: "duration", help: "The same per ISO week." },
    crate::jobs::Key { name: "keep_within_monthly", shape: "duration", help: "The same per month." },
    crate::jobs::Key { name: "keep_within_yearly", shape: "duration", help: "The same per year." },
    crate::jobs::Key { name: "timezone", shape: "IANA zone name (`Europe/Berlin`)", help: "The zone whose calendar the hours, days, weeks, months and years follow [default: UTC]." },
    crate::jobs::Key { name: "max_delete_share", shape: "percent, 0 to 100", help: "The circuit breaker: a run that would delete more than this share of a group's backups on a target deletes none (exit 3 in `backup`, 1 in `prune`) unless `prune --force` [default: 50]." },
];

/// The retention keys one `[targets.NAME]` or `[jobs.NAME]` table sets (all optional).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RuleSpec {
    /// `keep`: the newest N.
    pub keep_last: Option<u32>,
    pub keep_periods: [Option<u32>; 5],
    pub keep_within: Option<Within>,
    pub keep_within_periods: [Option<Within>; 5],
    pub timezone: Option<jiff::tz::TimeZone>,
    pub max_delete_share: Option<u8>,
}

// a zone compares by its rules, so equality is reflexive (the job and target specs are `Eq`)
impl Eq for RuleSpec {}

impl RuleSpec {
    /// Whether the table sets any keep rule (then its rules replace the job's as a whole).
    pub fn sets_rules(&self) -> bool {
        self.keep_last.is_some()
            || self.keep_periods.iter().any(Option::is_some)
            || self.keep_within.is_some()
            || self.keep_within_periods.iter().any(Option::is_some)
    }

    /// The policy of a target: its own rules if it sets any, else the job's, else keep the
    /// newest `default_keep` (the kind's keep setting, or `--keep`); the zone and the breaker's
    /// share likewise come from the target, else the job.
    pub fn resolve(target: &RuleSpec, job: &RuleSpec, default_keep: u32) -> Policy {
        let mut policy = Policy::keep_last(default_keep);
        if let Some(rules) = [target, job].into_iter().find(|r| r.sets_rules()) {
            policy.keep_last = rules.keep_last.unwrap_or(0);
            policy.keep_periods = rules.keep_periods.map(|n| n.unwrap_or(0));
            policy.keep_within = rules.keep_within;
            policy.keep_within_periods = rules.keep_within_periods;
        }
        if let Some(tz) = target.timezone.clone().or_else(|| job.timezone.clone()) {
            policy.timezone = tz;
        }
        if let Some(share) = target.max_delete_share.or(job.max_delete_share) {
            policy.max_delete_share = share;
        }
        policy
    }
}

/// The time a backup is of: when its dump started (`pgdrive_started_at`), else when the target
/// says it was created.
pub fn backup_time(f: &Listed) -> Option<i64> {
    f.prop(props::STARTED_AT)
        .and_then(crate::timeutil::parse_rfc3339)
        .or(f.created_ms)
}

/// Whether the backup is pinned.
pub fn is_pinned(f: &Listed) -> bool {
    is_pinned_in(&f.properties)
}

/// Whether a property index (a listing's, a manifest's) records the pin.
pub fn is_pinned_in(properties: &BTreeMap<String, String>) -> bool {
    properties.get(PINNED).map(String::as_str) == Some(PINNED_VALUE)
}

/// The index and bucket of the newest backup of each bucket of `period` in `zoned` (newest
/// first), among the leading backups for which `within` holds; untimed backups are skipped.
fn newest_per_bucket<'z>(
    zoned: &'z [Option<jiff::ZonedDateTime>],
    period: Period,
    within: impl Fn(&jiff::ZonedDateTime) -> bool + 'z,
) -> impl Iterator<Item = (usize, String)> + 'z {
    let mut last: Option<String> = None;
    zoned
        .iter()
        .enumerate()
        .filter_map(|(i, z)| Some((i, z.as_ref()?)))
        .take_while(move |(_, z)| within(z))
        .filter_map(move |(i, z)| {
            let bucket = period.bucket(z);
            if last.as_ref() == Some(&bucket) {
                return None;
            }
            last = Some(bucket.clone());
            Some((i, bucket))
        })
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
/// uploads are old enough to delete; `i64::MIN`: none is). Not forced: the breaker may hold.
pub fn plan_group(
    listed: &[Listed],
    group: Group,
    keep: u32,
    just_stored: &str,
    now_ms: i64,
) -> PrunePlan {
    let mut policy = Policy::keep_last(keep);
    policy.max_delete_share = 100;
    plan_policy(listed, group, &policy, Some(just_stored), now_ms, false)
}

/// The plan for `group` under `policy`: `just_stored` is the backup this run stored (none for
/// `prune`), `now_ms` decides which unfinished uploads are old enough to delete, and `force`
/// lets the rules delete more than the policy's share.
pub fn plan_policy(
    listed: &[Listed],
    group: Group,
    policy: &Policy,
    just_stored: Option<&str>,
    now_ms: i64,
    force: bool,
) -> PrunePlan {
    let is_just = |f: &Listed| Some(f.id.as_str()) == just_stored;
    let (mut own, unfinished): (Vec<&Listed>, Vec<&Listed>) = listed
        .iter()
        .filter(|f| group.holds(f))
        .partition(|f| f.recorded_digest().is_some() || is_just(f));
    let newest_complete = own.iter().filter_map(|f| f.created_ms).max();
    let mut unfinished: Vec<String> = unfinished
        .into_iter()
        .filter(|f| {
            let created = f.created_ms.unwrap_or(i64::MAX);
            created < now_ms.saturating_sub(UNFINISHED_GRACE_MS)
                && newest_complete.is_some_and(|newest| created < newest)
                && !is_pinned(f)
        })
        .map(|f| f.id.clone())
        .collect();
    unfinished.sort();
    unfinished.dedup();
    // newest first; ties broken by name then id so the plan is deterministic
    own.sort_by(|a, b| {
        backup_time(b)
            .unwrap_or(i64::MIN)
            .cmp(&backup_time(a).unwrap_or(i64::MIN))
            .then_with(|| b.name.cmp(&a.name))
            .then_with(|| b.id.cmp(&a.id))
    });
    own.dedup_by(|a, b| a.id == b.id);

    let mut reasons: Vec<Vec<Reason>> = vec![Vec::new(); own.len()];
    if policy.keeps_all() {
        for r in &mut reasons {
            r.push(Reason::NoRules);
        }
    }
    for (i, f) in own.iter().enumerate() {
        if is_just(f) {
            reasons[i].push(Reason::JustStored);
        }
        if i == 0 {
            reasons[i].push(Reason::NewestComplete);
        }
        if is_pinned(f) {
            reasons[i].push(Reason::Pinned);
        }
    }
    // keep_last counts every complete backup, timed or not (untimed ones sort oldest)
    for (i, r) in reasons
        .iter_mut()
        .enumerate()
        .take(policy.keep_last as usize)
    {
        r.push(Reason::Last(i as u32 + 1));
    }
    let zoned: Vec<Option<jiff::ZonedDateTime>> = own
        .iter()
        .map(|f| {
            let t = jiff::Timestamp::from_millisecond(backup_time(f)?).ok()?;
            Some(t.to_zoned_datetime(policy.timezone.clone()))
        })
        .collect();
    for (p, (&count, within)) in Period::ALL.iter().zip(
        policy
            .keep_periods
            .iter()
            .zip(policy.keep_within_periods.iter()),
    ) {
        // keep_<period>: the newest of each of the `count` newest buckets
        for (i, bucket) in newest_per_bucket(&zoned, *p, |_| true).take(count as usize) {
            reasons[i].push(Reason::Bucket(*p, bucket));
        }
        // keep_within_<period>: the newest of every bucket within the duration
        if let Some(since) = within.and_then(|w| w.since(zoned.iter().flatten().next()?)) {
            for (i, bucket) in
                newest_per_bucket(&zoned, *p, |z| z.timestamp().as_millisecond() >= since)
            {
                reasons[i].push(Reason::WithinBucket(*p, bucket));
            }
        }
    }
    if let Some(since) = policy
        .keep_within
        .and_then(|w| w.since(zoned.iter().flatten().next()?))
    {
        for (i, z) in zoned.iter().enumerate() {
            if z.as_ref()
                .is_some_and(|z| z.timestamp().as_millisecond() >= since)
            {
                reasons[i].push(Reason::Within);
            }
        }
    }

    let would_delete = reasons.iter().filter(|r| r.is_empty()).count();
    let share = u64::from(policy.max_delete_share.min(100));
    let tripped =
        (!force && would_delete as u64 * 100 > share * own.len() as u64).then_some(Tripped {
            would_delete,
            of: own.len(),
            max_share: policy.max_delete_share,
        });
    let mut plan = PrunePlan {
        unfinished,
        tripped,
        ..PrunePlan::default()
    };
    for (f, reasons) in own.into_iter().zip(reasons) {
        let verdict = match (reasons.is_empty(), plan.tripped.is_some()) {
            (false, _) => Verdict::Keep,
            (true, false) => Verdict::Delete,
            (true, true) => Verdict::Held,
        };
        if verdict == Verdict::Delete {
            plan.delete.push(f.id.clone());
        } else {
            plan.keep.push(f.id.clone());
        }
        plan.decisions.push(Decision {
            id: f.id.clone(),
            name: f.name.clone(),
            time_ms: backup_time(f),
            verdict,
            reasons,
        });
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
                name: "the new file is kept even if the clock made it look old, beside the newest two",
                files: vec![own("new", 1, "daily", "shop"), own("a", 5, "daily", "shop"), own("b", 4, "daily", "shop"), own("c", 3, "daily", "shop")],
                keep: 2,
                just: "new",
                want_delete: vec!["c"],
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

    /// A complete backup of `daily`/`shop` whose dump started at `at` (RFC 3339).
    fn at(id: &str, at: &str) -> Listed {
        let t = crate::timeutil::parse_rfc3339(at).expect(at);
        let mut l = own(id, t, "daily", "shop");
        l.properties.insert(props::STARTED_AT.into(), at.into());
        l
    }

    /// One backup a day at `hh:mm` UTC for `days` days from 2026-01-01, named `dNNN`.
    fn dailies(days: i64, hhmm: &str) -> Vec<Listed> {
        let start = crate::timeutil::parse_rfc3339(&format!("2026-01-01T{hhmm}:00Z")).unwrap();
        (0..days)
            .map(|d| {
                let t = start + d * 86_400_000;
                let mut l = own(&format!("d{d:03}"), t, "daily", "shop");
                l.properties
                    .insert(props::STARTED_AT.into(), crate::timeutil::rfc3339_millis(t));
                l
            })
            .collect()
    }

    fn policy(f: impl FnOnce(&mut Policy)) -> Policy {
        let mut p = Policy::keep_last(0);
        p.max_delete_share = 100;
        f(&mut p);
        p
    }

    fn berlin() -> jiff::tz::TimeZone {
        jiff::tz::TimeZone::get("Europe/Berlin").expect("the system's zoneinfo has Europe/Berlin")
    }

    const DAILY: usize = 1;
    const WEEKLY: usize = 2;
    const MONTHLY: usize = 3;
    const YEARLY: usize = 4;
    const HOURLY: usize = 0;

    #[test]
    fn gfs_table() {
        struct Case {
            name: &'static str,
            files: Vec<Listed>,
            policy: Policy,
            just: Option<&'static str>,
            force: bool,
            /// Exactly the backups kept (any order).
            keep: Vec<&'static str>,
            tripped: bool,
        }
        let case = |name, files, policy, keep| Case {
            name,
            files,
            policy,
            just: None,
            force: false,
            keep,
            tripped: false,
        };
        let d = |n: i64| -> &'static str { Box::leak(format!("d{n:03}").into_boxed_str()) };
        let range = |a: i64, b: i64| (a..=b).map(d).collect::<Vec<_>>();
        let cases = vec![
            case("daily 3 over 5 days keeps the 3 newest days", dailies(5, "02:00"),
                policy(|p| p.keep_periods[DAILY] = 3), range(2, 4)),
            case("two backups in one day: the newer one holds the day",
                vec![at("a", "2026-05-01T01:00:00Z"), at("b", "2026-05-01T23:00:00Z"), at("c", "2026-04-30T12:00:00Z")],
                policy(|p| p.keep_periods[DAILY] = 2), vec!["b", "c"]),
            case("missing days are not buckets: daily 3 reaches back past the gap",
                vec![at("a", "2026-05-01T02:00:00Z"), at("b", "2026-05-02T02:00:00Z"), at("c", "2026-05-05T02:00:00Z"), at("e", "2026-05-09T02:00:00Z")],
                policy(|p| p.keep_periods[DAILY] = 3), vec!["e", "c", "b"]),
            case("one second apart across midnight are two days",
                vec![at("late", "2026-05-01T23:59:59Z"), at("early", "2026-05-02T00:00:00Z"), at("old", "2026-04-29T00:00:00Z")],
                policy(|p| p.keep_periods[DAILY] = 2), vec!["late", "early"]),
            case("in UTC, 21:30Z and 22:30Z are one day",
                vec![at("a", "2026-06-01T21:30:00Z"), at("b", "2026-06-01T22:30:00Z")],
                policy(|p| p.keep_periods[DAILY] = 2), vec!["b"]),
            case("in Europe/Berlin, 21:30Z and 22:30Z (23:30 and 00:30 local) are two days",
                vec![at("a", "2026-06-01T21:30:00Z"), at("b", "2026-06-01T22:30:00Z")],
                policy(|p| { p.keep_periods[DAILY] = 2; p.timezone = berlin() }), vec!["a", "b"]),
            case("clocks going back: 02:30 CEST and 02:30 CET are two hours",
                vec![at("cest", "2026-10-25T00:30:00Z"), at("cet", "2026-10-25T01:30:00Z"), at("before", "2026-10-24T23:30:00Z")],
                policy(|p| { p.keep_periods[HOURLY] = 2; p.timezone = berlin() }), vec!["cest", "cet"]),
            case("clocks going back: two backups in the same CEST hour share it",
                vec![at("a", "2026-10-25T00:10:00Z"), at("b", "2026-10-25T00:50:00Z")],
                policy(|p| { p.keep_periods[HOURLY] = 2; p.timezone = berlin() }), vec!["b"]),
            case("clocks going forward: 01:30 CET and 03:30 CEST are consecutive hours",
                vec![at("a", "2026-03-29T00:30:00Z"), at("b", "2026-03-29T01:30:00Z"), at("c", "2026-03-28T23:30:00Z")],
                policy(|p| { p.keep_periods[HOURLY] = 2; p.timezone = berlin() }), vec!["a", "b"]),
            case("a nightly 00:30 Berlin backup stays one per local day across the DST change",
                vec![at("27", "2026-03-26T23:30:00Z"), at("28", "2026-03-27T23:30:00Z"), at("29", "2026-03-28T23:30:00Z"), at("30", "2026-03-29T22:30:00Z")],
                policy(|p| { p.keep_periods[DAILY] = 3; p.timezone = berlin() }), vec!["28", "29", "30"]),
            case("ISO weeks: Thu 2026-12-31 and Fri 2027-01-01 are both 2026-W53",
                vec![at("thu", "2026-12-31T02:00:00Z"), at("fri", "2027-01-01T02:00:00Z"), at("prev", "2026-12-24T02:00:00Z")],
                policy(|p| p.keep_periods[WEEKLY] = 2), vec!["fri", "prev"]),
            case("ISO weeks: Sunday and Monday are two weeks",
                vec![at("sun", "2026-12-06T02:00:00Z"), at("mon", "2026-12-07T02:00:00Z"), at("sat", "2026-12-05T02:00:00Z")],
                policy(|p| p.keep_periods[WEEKLY] = 2), vec!["sun", "mon"]),
            case("monthly 2 keeps the last of each of the two newest months",
                vec![at("j1", "2026-01-01T02:00:00Z"), at("j31", "2026-01-31T02:00:00Z"), at("f1", "2026-02-01T02:00:00Z"), at("f28", "2026-02-28T02:00:00Z")],
                policy(|p| p.keep_periods[MONTHLY] = 2), vec!["j31", "f28"]),
            case("yearly: Dec 31 and Jan 1 are two years",
                vec![at("dec", "2026-12-31T23:00:00Z"), at("jan", "2027-01-01T01:00:00Z"), at("mid", "2026-06-01T01:00:00Z")],
                policy(|p| p.keep_periods[YEARLY] = 5), vec!["dec", "jan"]),
            case("daily 7 + weekly 4 over 60 days",
                dailies(60, "02:00"),
                // 2026-01-01 is a Thursday; d059 is Sun 2026-03-01; weeks end on Sundays d052, d045, d038
                policy(|p| { p.keep_periods[DAILY] = 7; p.keep_periods[WEEKLY] = 4 }),
                [range(53, 59), vec![d(52), d(45), d(38)]].concat()),
            case("keep_within 10d keeps everything within 10 days of the newest, the boundary included",
                dailies(30, "02:00"),
                policy(|p| p.keep_within = Within::parse("10d")), range(19, 29)),
            case("keep_within is measured from the newest backup, not the clock",
                vec![at("a", "2020-01-01T00:00:00Z"), at("b", "2020-01-05T00:00:00Z"), at("c", "2019-12-01T00:00:00Z")],
                policy(|p| p.keep_within = Within::parse("1w")), vec!["a", "b"]),
            case("keep_within_daily 3d keeps the newest of each of those days",
                vec![at("a", "2026-05-01T01:00:00Z"), at("b", "2026-05-01T05:00:00Z"), at("c", "2026-05-02T05:00:00Z"), at("e", "2026-05-03T01:00:00Z"), at("f", "2026-05-03T09:00:00Z"), at("old", "2026-04-20T09:00:00Z")],
                policy(|p| p.keep_within_periods[DAILY] = Within::parse("3d")), vec!["b", "c", "f"]),
            case("keep_within_monthly 1y keeps month ends for a year, not beyond",
                vec![at("m1", "2024-12-01T00:00:00Z"), at("m2", "2025-06-15T00:00:00Z"), at("m2b", "2025-06-01T00:00:00Z"), at("m3", "2025-12-15T00:00:00Z")],
                policy(|p| p.keep_within_periods[MONTHLY] = Within::parse("1y")), vec!["m2", "m3"]),
            case("unfinished uploads take no bucket",
                vec![unfinished("u", crate::timeutil::parse_rfc3339("2026-05-03T00:00:00Z").unwrap(), "daily", "shop"), at("a", "2026-05-02T00:00:00Z"), at("b", "2026-05-01T00:00:00Z")],
                policy(|p| p.keep_periods[DAILY] = 2), vec!["a", "b"]),
            case("unverified (no recorded checksums) never counts, even when newest",
                vec![Listed { properties: { let mut p = at("x", "2026-05-09T00:00:00Z").properties; p.remove(props::SHA256); p }, ..at("x", "2026-05-09T00:00:00Z") }, at("a", "2026-05-02T00:00:00Z"), at("b", "2026-05-01T00:00:00Z")],
                policy(|p| p.keep_last = 1), vec!["a"]),
            case("a pinned backup survives keep_last 1",
                vec![at("a", "2026-05-03T00:00:00Z"), { let mut l = at("pin", "2026-01-01T00:00:00Z"); l.properties.insert(PINNED.into(), PINNED_VALUE.into()); l }, at("b", "2026-05-01T00:00:00Z")],
                policy(|p| p.keep_last = 1), vec!["a", "pin"]),
            case("a pin with another value is not a pin",
                vec![at("a", "2026-05-03T00:00:00Z"), { let mut l = at("b", "2026-01-01T00:00:00Z"); l.properties.insert(PINNED.into(), "0".into()); l }],
                policy(|p| p.keep_last = 1), vec!["a"]),
            case("no rule keeps everything",
                dailies(5, "02:00"), policy(|_| {}), range(0, 4)),
            case("a backup without a time counts only for keep_last",
                vec![Listed { created_ms: None, ..own("nt", 0, "daily", "shop") }, at("a", "2026-05-02T00:00:00Z")],
                policy(|p| p.keep_periods[DAILY] = 5), vec!["a"]),
            case("started_at decides, not the storage's creation time",
                vec![Listed { created_ms: Some(i64::MAX / 2), ..at("old", "2026-01-01T00:00:00Z") }, at("new", "2026-05-02T00:00:00Z")],
                policy(|p| p.keep_last = 1), vec!["new"]),
            case("same time, same bucket: the tie goes by name, deterministically",
                vec![at("b", "2026-05-02T00:00:00Z"), at("a", "2026-05-02T00:00:00Z")],
                policy(|p| p.keep_periods[DAILY] = 1), vec!["b"]),
            case("GFS across a year boundary: yearly 2 holds the last of 2025",
                vec![at("y25", "2025-12-30T00:00:00Z"), at("y25a", "2025-03-30T00:00:00Z"), at("n1", "2026-01-02T00:00:00Z"), at("n2", "2026-01-03T00:00:00Z")],
                policy(|p| { p.keep_periods[DAILY] = 1; p.keep_periods[YEARLY] = 2 }), vec!["n2", "y25"]),
            Case {
                just: Some("back"),
                ..case("the clock jumped backwards: the new backup, the newest and the rules' picks stay",
                    [dailies(5, "02:00"), vec![at("back", "2026-01-02T12:00:00Z")]].concat(),
                    policy(|p| p.keep_periods[DAILY] = 2), vec!["d004", "d003", "back"])
            },
            Case {
                just: Some("now"),
                ..case("a future-dated backup from a fast clock does not cost the new one",
                    vec![at("future", "2031-01-01T00:00:00Z"), at("now", "2026-05-02T00:00:00Z"), at("old", "2026-05-01T00:00:00Z")],
                    policy(|p| p.keep_last = 1), vec!["future", "now"])
            },
            Case {
                tripped: true,
                ..case("the breaker holds a rule that would delete 90%",
                    dailies(10, "02:00"), policy(|p| { p.keep_last = 1; p.max_delete_share = 50 }), range(0, 9))
            },
            Case {
                force: true,
                ..case("--force lets it through",
                    dailies(10, "02:00"), policy(|p| { p.keep_last = 1; p.max_delete_share = 50 }), vec!["d009"])
            },
            case("exactly the share is allowed (1 of 2 at 50%)",
                dailies(2, "02:00"), policy(|p| { p.keep_last = 1; p.max_delete_share = 50 }), vec!["d001"]),
            Case {
                tripped: true,
                ..case("max_delete_share 0 holds any deletion",
                    dailies(3, "02:00"), policy(|p| { p.keep_last = 2; p.max_delete_share = 0 }), range(0, 2))
            },
            case("nothing to delete never trips, even at 0%",
                dailies(2, "02:00"), policy(|p| { p.keep_last = 2; p.max_delete_share = 0 }), range(0, 1)),
        ];
        assert!(cases.len() >= 30, "{} cases", cases.len());
        let group = Group {
            kind: "daily",
            database: "shop",
            job: None,
        };
        for c in cases {
            let p = plan_policy(&c.files, group, &c.policy, c.just, 0, c.force);
            let mut got: Vec<&str> = p.keep.iter().map(String::as_str).collect();
            got.sort();
            let mut want = c.keep.clone();
            want.sort();
            assert_eq!(got, want, "{}: {:#?}", c.name, p.decisions);
            assert_eq!(p.tripped.is_some(), c.tripped, "{}", c.name);
            // every complete backup has exactly one decision; kept ones say why
            for dec in &p.decisions {
                assert_eq!(
                    dec.verdict == Verdict::Keep,
                    !dec.reasons.is_empty(),
                    "{}",
                    c.name
                );
            }
            if let Some(first) = p.decisions.first() {
                assert!(
                    first.reasons.contains(&Reason::NewestComplete),
                    "{}",
                    c.name
                );
            }
            if c.tripped {
                assert!(p.delete.is_empty(), "{}", c.name);
            }
        }
    }

    #[test]
    fn gfs_over_400_days_of_dailies_keeps_the_expected_calendar() {
        let files = dailies(400, "02:00");
        let p = policy(|p| {
            p.keep_periods[DAILY] = 7;
            p.keep_periods[WEEKLY] = 4;
            p.keep_periods[MONTHLY] = 12;
            p.keep_periods[YEARLY] = 3;
        });
        let group = Group {
            kind: "daily",
            database: "shop",
            job: None,
        };
        let plan = plan_policy(&files, group, &p, None, 0, false);
        let mut kept: Vec<String> = plan
            .decisions
            .iter()
            .filter(|d| d.verdict == Verdict::Keep)
            .map(|d| crate::timeutil::rfc3339_millis(d.time_ms.unwrap())[..10].to_string())
            .collect();
        kept.sort();
        // 2026-01-01 .. 2027-02-04 (a Thursday): daily 7 holds Jan 29 - Feb 4 2027; weekly 4
        // the ISO weeks 2027-W05 (Feb 4, already held), W04 (Sun Jan 31, held), W03 and W02
        // (Sundays Jan 24, Jan 17); monthly 12 the last day of Feb 2027 back to Mar 2026 (Feb 4
        // and Jan 31 already held); yearly 3 finds only 2027 and 2026, both held already
        let want = [
            "2026-03-31",
            "2026-04-30",
            "2026-05-31",
            "2026-06-30",
            "2026-07-31",
            "2026-08-31",
            "2026-09-30",
            "2026-10-31",
            "2026-11-30",
            "2026-12-31",
            "2027-01-17",
            "2027-01-24",
            "2027-01-29",
            "2027-01-30",
            "2027-01-31",
            "2027-02-01",
            "2027-02-02",
            "2027-02-03",
            "2027-02-04",
        ];
        assert_eq!(kept, want);
        // 381 of 400 deletions is far beyond the default share: held unless forced
        let mut held = p.clone();
        held.max_delete_share = DEFAULT_MAX_DELETE_SHARE;
        let plan = plan_policy(&files, group, &held, None, 0, false);
        assert_eq!(
            plan.tripped.as_ref().map(|t| (t.would_delete, t.of)),
            Some((381, 400))
        );
        assert!(plan.delete.is_empty());
        assert_eq!(
            plan_policy(&files, group, &held, None, 0, true)
                .delete
                .len(),
            381
        );
    }

    #[test]
    fn durations_parse_strictly() {
        let w = |s| Within::parse(s).map(|w| w.to_string());
        assert_eq!(w("30d").as_deref(), Some("30d"));
        assert_eq!(w("1y6m").as_deref(), Some("1y6m"));
        assert_eq!(w(" 2w3d12h ").as_deref(), Some("2w3d12h"));
        for bad in ["", "5", "d", "1d1d", "0d", "1x", "-1d", "1.5d", "1 d"] {
            assert_eq!(Within::parse(bad), None, "{bad:?}");
        }
    }
}
