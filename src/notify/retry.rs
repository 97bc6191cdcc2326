//! The retry schedule of the notification channels, as data: a fixed list of waits (by default
//! 1 s, 5 s, 15 s, i.e. three retries), and the loop that follows it with an injectable sleeper so
//! that tests check the timing without sleeping. Drive has its own exponential policy
//! (`drive::retry`); a notification is small and a fixed, short schedule keeps a run's worst case
//! predictable.

use std::time::Duration;

use anyhow::Result;

use crate::log;

/// The waits before each retry; its length is the number of retries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetrySchedule(pub Vec<Duration>);

impl Default for RetrySchedule {
    fn default() -> Self {
        RetrySchedule(vec![
            Duration::from_secs(1),
            Duration::from_secs(5),
            Duration::from_secs(15),
        ])
    }
}

impl RetrySchedule {
    /// Parses `1000,5000,15000` (milliseconds); an empty list means no retries.
    pub fn parse_millis(s: &str) -> Option<RetrySchedule> {
        let waits: Option<Vec<Duration>> = s
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| p.parse::<u64>().ok().map(Duration::from_millis))
            .collect();
        waits.map(RetrySchedule)
    }
}

/// How one attempt failed.
#[derive(Debug)]
pub enum AttemptError {
    /// Worth another try: a network error, 429, 5xx, an SMTP 4xx.
    Transient(anyhow::Error),
    /// Trying again cannot help: a bad key, a rejected address.
    Permanent(anyhow::Error),
}

/// Runs `attempt` until it succeeds, fails permanently, or the schedule is used up, calling
/// `sleep` with each wait. `what` names the channel in the debug log.
pub fn with_retries<T>(
    schedule: &RetrySchedule,
    what: &str,
    sleep: &mut dyn FnMut(Duration),
    mut attempt: impl FnMut() -> std::result::Result<T, AttemptError>,
) -> Result<T> {
    let mut waits = schedule.0.iter();
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt() {
            Ok(v) => return Ok(v),
            Err(AttemptError::Permanent(e)) => return Err(e),
            // a stopping run sends each notification once: its cleanup must end within seconds
            Err(AttemptError::Transient(e)) => match waits.next() {
                Some(wait) if !crate::signals::stopping() => {
                    log::debug(
                        "notification attempt failed; retrying",
                        &[
                            ("channel", what.to_string()),
                            ("error", crate::error::render(&e)),
                            ("wait_ms", wait.as_millis().to_string()),
                        ],
                    );
                    sleep(*wait);
                }
                _ => return Err(e.context(format!("gave up after {tries} attempts"))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transient() -> AttemptError {
        AttemptError::Transient(anyhow::anyhow!("HTTP 503"))
    }

    #[test]
    fn default_schedule_is_one_five_fifteen_seconds() {
        let mut slept = Vec::new();
        let mut calls = 0;
        let err = with_retries(
            &RetrySchedule::default(),
            "test",
            &mut |d| slept.push(d),
            || -> Result<(), _> {
                calls += 1;
                Err(transient())
            },
        )
        .unwrap_err();
        assert_eq!(
            slept,
            vec![
                Duration::from_secs(1),
                Duration::from_secs(5),
                Duration::from_secs(15)
            ]
        );
        assert_eq!(calls, 4, "one attempt and three retries");
        assert!(
            format!("{err:#}").contains("gave up after 4 attempts"),
            "{err:#}"
        );
    }

    #[test]
    fn stops_at_the_first_success() {
        let mut slept = Vec::new();
        let mut calls = 0;
        let v = with_retries(
            &RetrySchedule::default(),
            "test",
            &mut |d| slept.push(d),
            || {
                calls += 1;
                if calls < 3 {
                    Err(transient())
                } else {
                    Ok(calls)
                }
            },
        )
        .unwrap();
        assert_eq!(v, 3);
        assert_eq!(slept, vec![Duration::from_secs(1), Duration::from_secs(5)]);
    }

    #[test]
    fn permanent_failures_are_not_retried() {
        let mut slept = Vec::new();
        let mut calls = 0;
        let err = with_retries(
            &RetrySchedule::default(),
            "test",
            &mut |d| slept.push(d),
            || -> Result<(), _> {
                calls += 1;
                Err(AttemptError::Permanent(anyhow::anyhow!("HTTP 401")))
            },
        )
        .unwrap_err();
        assert_eq!((calls, slept.len()), (1, 0));
        assert_eq!(err.to_string(), "HTTP 401");
    }

    #[test]
    fn schedules_parse_from_milliseconds() {
        assert_eq!(
            RetrySchedule::parse_millis("1000, 5000,15000"),
            Some(RetrySchedule::default())
        );
        assert_eq!(RetrySchedule::parse_millis(""), Some(RetrySchedule(vec![])));
        assert_eq!(RetrySchedule::parse_millis("1s"), None);
    }
}
