//! Retry policy as data, and the one classifier that decides, for every Google call (Drive API,
//! uploads, the token endpoint), whether a failure is retried, needs a fresh token, or is final.
//! Follows Google's guidance: retry 5xx, 429 and 403 rate-limit reasons with exponential backoff
//! and jitter, honouring `Retry-After`; never retry other 4xx.

use std::time::Duration;

/// How often and how long to retry.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// First backoff; doubled on every retry up to `max`.
    pub initial: Duration,
    pub max: Duration,
    /// The longest server-requested `Retry-After` that is honoured as given; longer ones are cut
    /// to this (a run should not sleep for hours).
    pub retry_after_cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 8,
            initial: Duration::from_secs(1),
            max: Duration::from_secs(64),
            retry_after_cap: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `attempt` (0-based): `initial * 2^attempt` capped at `max`,
    /// with "equal jitter" (half fixed, half random) so that concurrent clients spread out, and
    /// never shorter than the server's `Retry-After` (up to `retry_after_cap`).
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>, random_unit: f64) -> Duration {
        let exp = self
            .initial
            .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX));
        let base = exp.min(self.max);
        let jittered = base / 2 + base.mul_f64(0.5 * random_unit.clamp(0.0, 1.0));
        match retry_after {
            Some(ra) => jittered.max(ra.min(self.retry_after_cap)),
            None => jittered,
        }
    }
}

/// What to do about a failed call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Back off and try again (for uploads: then ask the server how much it holds).
    Retry,
    /// The access token was refused: get a new one and try again at once.
    RefreshToken,
    /// Do not retry.
    Fatal,
}

/// What to do next after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Fetch a new access token and try again at once.
    RefreshToken,
    /// Wait this long, then try again.
    Backoff(Duration),
    /// Stop; `exhausted` when the failure was retryable but the retries are used up.
    GiveUp { exhausted: bool },
}

/// The state of one call's attempts under a policy: every retry loop (Drive API calls, upload
/// chunks, status queries, the token endpoint) keeps its count here and asks it what to do.
pub struct Attempts<'p> {
    policy: &'p RetryPolicy,
    retries: u32,
    refreshed: bool,
}

impl<'p> Attempts<'p> {
    pub fn new(policy: &'p RetryPolicy) -> Self {
        Attempts {
            policy,
            retries: 0,
            refreshed: false,
        }
    }

    /// Decides after a failure: one token refresh per call, then backoff while retries remain.
    pub fn after(&mut self, verdict: Verdict, retry_after: Option<Duration>) -> Next {
        match verdict {
            Verdict::RefreshToken if !self.refreshed => {
                self.refreshed = true;
                Next::RefreshToken
            }
            Verdict::Retry if self.retries < self.policy.max_retries => {
                let delay = self.policy.delay(self.retries, retry_after, random_unit());
                self.retries += 1;
                Next::Backoff(delay)
            }
            Verdict::Retry => Next::GiveUp { exhausted: true },
            _ => Next::GiveUp { exhausted: false },
        }
    }

    pub fn retries(&self) -> u32 {
        self.retries
    }
}

/// Classifies an HTTP status and Google error reason.
pub fn classify_status(status: u16, reason: Option<&str>) -> Verdict {
    match status {
        401 => Verdict::RefreshToken,
        408 | 429 => Verdict::Retry,
        500..=599 => Verdict::Retry,
        403 if matches!(
            reason,
            Some("rateLimitExceeded" | "userRateLimitExceeded" | "backendError")
        ) =>
        {
            Verdict::Retry
        }
        _ => Verdict::Fatal,
    }
}

/// Classifies a transport-level failure (no HTTP status).
pub fn classify_transport(err: &ureq::Error) -> Verdict {
    match err {
        ureq::Error::Io(_)
        | ureq::Error::Timeout(_)
        | ureq::Error::ConnectionFailed
        | ureq::Error::HostNotFound
        | ureq::Error::Protocol(_) => Verdict::Retry,
        _ => Verdict::Fatal,
    }
}

/// A random number in [0, 1) for jitter, from the OS generator.
pub fn random_unit() -> f64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// Parses a `Retry-After` header given in seconds.
pub fn parse_retry_after(value: Option<&str>) -> Option<Duration> {
    value?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_table() {
        let cases: &[(u16, Option<&str>, Verdict)] = &[
            (500, None, Verdict::Retry),
            (502, None, Verdict::Retry),
            (503, Some("backendError"), Verdict::Retry),
            (504, None, Verdict::Retry),
            (429, Some("rateLimitExceeded"), Verdict::Retry),
            (408, None, Verdict::Retry),
            (403, Some("rateLimitExceeded"), Verdict::Retry),
            (403, Some("userRateLimitExceeded"), Verdict::Retry),
            (403, Some("storageQuotaExceeded"), Verdict::Fatal),
            (403, Some("insufficientFilePermissions"), Verdict::Fatal),
            (403, Some("dailyLimitExceeded"), Verdict::Fatal),
            (403, None, Verdict::Fatal),
            (401, Some("authError"), Verdict::RefreshToken),
            (400, Some("badRequest"), Verdict::Fatal),
            (404, Some("notFound"), Verdict::Fatal),
            (410, None, Verdict::Fatal),
        ];
        for (status, reason, want) in cases {
            assert_eq!(
                classify_status(*status, *reason),
                *want,
                "{status} {reason:?}"
            );
        }
    }

    #[test]
    fn backoff_grows_caps_and_honours_retry_after() {
        let p = RetryPolicy {
            max_retries: 5,
            initial: Duration::from_secs(1),
            max: Duration::from_secs(8),
            retry_after_cap: Duration::from_secs(60),
        };
        assert_eq!(p.delay(0, None, 0.0), Duration::from_millis(500));
        assert_eq!(p.delay(0, None, 1.0), Duration::from_secs(1));
        assert_eq!(p.delay(2, None, 1.0), Duration::from_secs(4));
        assert_eq!(p.delay(10, None, 1.0), Duration::from_secs(8));
        assert_eq!(p.delay(40, None, 0.0), Duration::from_secs(4));
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(5)), 0.0),
            Duration::from_secs(5)
        );
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(30)), 0.0),
            Duration::from_secs(30)
        );
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(500)), 0.0),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn attempts_refresh_once_then_back_off_then_give_up() {
        let p = RetryPolicy {
            max_retries: 2,
            initial: Duration::from_millis(10),
            max: Duration::from_millis(40),
            retry_after_cap: Duration::from_secs(1),
        };
        let mut a = Attempts::new(&p);
        assert_eq!(a.after(Verdict::RefreshToken, None), Next::RefreshToken);
        assert_eq!(
            a.after(Verdict::RefreshToken, None),
            Next::GiveUp { exhausted: false }
        );
        assert!(
            matches!(a.after(Verdict::Retry, None), Next::Backoff(d) if d >= Duration::from_millis(5) && d <= Duration::from_millis(10))
        );
        assert!(
            matches!(a.after(Verdict::Retry, Some(Duration::from_millis(500))), Next::Backoff(d) if d == Duration::from_millis(500))
        );
        assert_eq!(
            a.after(Verdict::Retry, None),
            Next::GiveUp { exhausted: true }
        );
        assert_eq!(a.retries(), 2);
        assert_eq!(
            Attempts::new(&p).after(Verdict::Fatal, None),
            Next::GiveUp { exhausted: false }
        );
    }

    #[test]
    fn random_unit_is_in_range() {
        for _ in 0..100 {
            let r = random_unit();
            assert!((0.0..1.0).contains(&r));
        }
    }
}
