//! Per-caller rate limits: a token bucket for each API key (or principal), refilled at a steady
//! rate up to a burst. A request that finds the bucket empty is refused with `429` and the
//! seconds until a token is back. With `--database` the buckets are the database's
//! (`basalt-shared`'s `PgRateLimits`), so replicas enforce one rate together.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::error::ApiError;

/// Requests per second and the burst a caller may send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: f64,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

/// The buckets of every caller seen: this process's, or the database's (`shared`).
#[derive(Debug)]
pub(crate) struct RateLimiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<String, Bucket>>,
    shared: Option<basalt_shared::PgRateLimits>,
}

impl RateLimiter {
    pub(crate) fn new(limit: RateLimit, shared: Option<basalt_shared::PgRateLimits>) -> Self {
        RateLimiter {
            limit,
            buckets: Mutex::new(HashMap::new()),
            shared,
        }
    }

    /// [`RateLimiter::take`], from the database's buckets when they are shared (an error:
    /// the database cannot be reached).
    pub(crate) fn check(&self, caller: &str, now: Instant) -> Result<Result<(), u64>, ApiError> {
        match &self.shared {
            Some(shared) => shared
                .take(caller, self.limit.per_second, self.limit.burst)
                .map_err(ApiError::database_unavailable),
            None => Ok(self.take(caller, now)),
        }
    }

    /// Takes a token for `caller` at `now`; on refusal, the seconds until one is back.
    pub(crate) fn take(&self, caller: &str, now: Instant) -> Result<(), u64> {
        let RateLimit { per_second, burst } = self.limit;
        let mut buckets = crate::lock(&self.buckets);
        // Forget callers whose bucket is full again, so the map stays as small as the set of
        // recently active keys.
        if buckets.len() > 10_000 {
            buckets.retain(|_, bucket| {
                bucket.tokens + now.duration_since(bucket.refilled).as_secs_f64() * per_second
                    < burst
            });
        }
        let bucket = buckets.entry(caller.to_owned()).or_insert(Bucket {
            tokens: burst,
            refilled: now,
        });
        let elapsed = now.saturating_duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(burst);
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / per_second;
            Err(wait.ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_burst_then_the_steady_rate_per_caller() {
        let limiter = RateLimiter::new(
            RateLimit {
                per_second: 2.0,
                burst: 3.0,
            },
            None,
        );
        let start = Instant::now();
        for _ in 0..3 {
            limiter.take("alice", start).expect("within the burst");
        }
        assert_eq!(limiter.take("alice", start), Err(1));
        limiter.take("bob", start).expect("bob has his own bucket");
        // Half a second later one token is back, and only one.
        let later = start + Duration::from_millis(500);
        limiter.take("alice", later).expect("refilled");
        assert!(limiter.take("alice", later).is_err());
        // A long pause refills to the burst, not beyond.
        let much_later = start + Duration::from_secs(60);
        for _ in 0..3 {
            limiter.take("alice", much_later).expect("full again");
        }
        assert!(limiter.take("alice", much_later).is_err());
    }
}
