//! Per-user rate limit on what clients send (frames and REST calls), so one
//! flooding client cannot slow down everyone else. Acks of server frames are
//! not limited: they are bounded by what the server sends.

use std::{num::NonZeroU32, sync::Arc, time::Duration};

use courier_shared::{ClientError, ErrorCode};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// How often idle users' buckets are forgotten.
const FORGET_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct UserRateLimit {
    limiter: Option<Arc<DefaultKeyedRateLimiter<String>>>,
    /// Rejections, for `courier_rate_limited_total`.
    rejected: Option<prometheus::IntCounter>,
}

impl UserRateLimit {
    /// `per_second` requests per second per user, bursts up to `burst`; 0 turns the limit off.
    pub fn new(per_second: u32, burst: u32) -> Self {
        let Some(rate) = NonZeroU32::new(per_second) else { return Self::off() };
        let burst = NonZeroU32::new(burst).unwrap_or(rate);
        Self::keyed(Quota::per_second(rate).allow_burst(burst))
    }

    /// At most `events` per `window` per user: a bucket of `events`, one back
    /// every `window / events`. 0 events (or no window) turns the limit off.
    pub fn per_window(events: u32, window: Duration) -> Self {
        let Some(burst) = NonZeroU32::new(events) else { return Self::off() };
        let Some(quota) = Quota::with_period(window / events) else { return Self::off() };
        Self::keyed(quota.allow_burst(burst))
    }

    fn off() -> Self {
        Self { limiter: None, rejected: None }
    }

    fn keyed(quota: Quota) -> Self {
        let limiter = Arc::new(RateLimiter::keyed(quota));
        let forget = Arc::downgrade(&limiter);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(FORGET_INTERVAL).await;
                let Some(limiter) = forget.upgrade() else { return };
                limiter.retain_recent();
            }
        });
        Self { limiter: Some(limiter), rejected: None }
    }

    /// Counts every rejection on `rejected`.
    pub fn counting(mut self, rejected: prometheus::IntCounter) -> Self {
        self.rejected = Some(rejected);
        self
    }

    /// Counts one request of `user_id`; `rate_limited` if over the limit.
    pub fn check(&self, user_id: &str) -> Result<(), ClientError> {
        match &self.limiter {
            Some(limiter) if limiter.check_key(&user_id.to_owned()).is_err() => {
                if let Some(rejected) = &self.rejected {
                    rejected.inc();
                }
                Err(ClientError::new(ErrorCode::RateLimited, "too many requests; slow down"))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_window_admits_its_count_per_user_then_refuses() {
        let limit = UserRateLimit::per_window(3, Duration::from_secs(3600));
        for _ in 0..3 {
            assert!(limit.check("alice").is_ok());
        }
        assert_eq!(limit.check("alice").unwrap_err().code, ErrorCode::RateLimited);
        assert!(limit.check("bob").is_ok(), "each user has a bucket of their own");
        let off = UserRateLimit::per_window(0, Duration::from_secs(1));
        assert!((0..100).all(|_| off.check("alice").is_ok()));
    }
}
