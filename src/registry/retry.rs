//! Retrying transient registry failures (HTTP 5xx and 429, throttling,
//! connection resets) with exponential backoff and full jitter, counting the
//! retries so the summary can say how many there were.

use crate::error::{Error, Result};
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// How many times a request is tried in all.
pub const ATTEMPTS: u32 = 5;
/// The first backoff; each further one doubles, up to [`MAX_DELAY`].
const BASE_DELAY: Duration = Duration::from_millis(200);
const MAX_DELAY: Duration = Duration::from_secs(5);

/// How one attempt failed.
#[derive(Debug)]
pub enum Failure {
    /// Worth another try: the server was busy, throttled or cut the line.
    Transient(Error),
    /// Trying again cannot help.
    Permanent(Error),
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        Failure::Permanent(error)
    }
}

/// Whether an HTTP status says "try again later".
pub fn is_transient_status(status: u16) -> bool {
    status == 429 || status == 408 || (500..=599).contains(&status) && status != 501
}

/// The retries made so far by one registry client.
#[derive(Debug)]
pub struct Retries {
    count: AtomicU32,
    base_delay: Duration,
}

impl Default for Retries {
    fn default() -> Retries {
        Retries::with_base_delay(BASE_DELAY)
    }
}

impl Retries {
    /// Retries whose first backoff is `base_delay` (tests use a short one).
    pub fn with_base_delay(base_delay: Duration) -> Retries {
        Retries {
            count: AtomicU32::new(0),
            base_delay,
        }
    }

    pub fn count(&self) -> u32 {
        self.count.load(Ordering::Relaxed)
    }

    /// Counts a retry that its caller makes itself (an upload resumed
    /// from where the registry stands) and waits the backoff of try
    /// number `tries` (1 for the first retry).
    pub async fn pause(&self, tries: u32) {
        self.count.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(backoff(self.base_delay, tries.max(1))).await;
    }

    /// Runs `attempt` until it succeeds, fails for good, or [`ATTEMPTS`]
    /// tries have failed; the last failure is returned, saying how many
    /// tries were made.
    pub async fn run<T, F, Fut>(&self, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, Failure>>,
    {
        let mut tries = 0;
        loop {
            tries += 1;
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(Failure::Permanent(error)) => return Err(error),
                Err(Failure::Transient(error)) if tries >= ATTEMPTS => {
                    return Err(error.caused_by(format!("gave up after {tries} tries")));
                }
                Err(Failure::Transient(_)) => {
                    self.count.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(backoff(self.base_delay, tries)).await;
                }
            }
        }
    }
}

/// Full jitter: a random wait up to the exponential bound, so that clients
/// throttled together do not come back together.
fn backoff(base_delay: Duration, tries: u32) -> Duration {
    let bound = base_delay
        .saturating_mul(1 << (tries - 1).min(16))
        .min(MAX_DELAY);
    let millis = bound.as_millis() as u64;
    Duration::from_millis(millis / 2 + fastrand::u64(0..=millis / 2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn classifies_statuses() {
        for status in [429, 500, 502, 503, 504, 408] {
            assert!(is_transient_status(status), "{status}");
        }
        for status in [200, 400, 401, 403, 404, 501] {
            assert!(!is_transient_status(status), "{status}");
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for tries in 1..10 {
            let bound = BASE_DELAY.saturating_mul(1 << (tries - 1)).min(MAX_DELAY);
            let delay = backoff(BASE_DELAY, tries);
            assert!(delay <= bound && delay >= bound / 2, "{tries}: {delay:?}");
        }
    }

    #[tokio::test]
    async fn retries_transient_failures_and_counts_them() {
        let retries = Retries::with_base_delay(Duration::from_millis(1));
        let calls = Cell::new(0);
        let value = retries
            .run(|| {
                calls.set(calls.get() + 1);
                let n = calls.get();
                async move {
                    if n < 3 {
                        Err(Failure::Transient(Error::failed("503")))
                    } else {
                        Ok(n)
                    }
                }
            })
            .await
            .unwrap();
        assert_eq!((value, retries.count()), (3, 2));

        let error = retries
            .run(|| async { Err::<(), _>(Failure::Transient(Error::failed("429"))) })
            .await
            .unwrap_err();
        assert!(error.causes.iter().any(|c| c.contains("5 tries")));
        assert_eq!(retries.count(), 2 + ATTEMPTS - 1);

        let error = retries
            .run(|| async { Err::<(), _>(Failure::Permanent(Error::input("401"))) })
            .await
            .unwrap_err();
        assert_eq!(error.message, "401");
    }
}
