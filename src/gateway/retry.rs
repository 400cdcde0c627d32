//! Retry policy and backoff: one helper used by every forwarding path.

use std::time::Duration;

use crate::store::{Backoff, GatewayRecord};

use super::options::RequestOptions;

/// How often and how patiently to retry one upstream call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts, 1–5.
    pub max_attempts: u8,
    /// Base delay.
    pub delay: Duration,
    /// Growth of the delay.
    pub backoff: Backoff,
}

impl RetryPolicy {
    /// Request headers win over gateway settings, which win over the defaults (one attempt).
    #[must_use]
    pub fn resolve(options: &RequestOptions, gateway: &GatewayRecord) -> Self {
        Self {
            max_attempts: options.max_attempts.or(gateway.retry_max_attempts).unwrap_or(1).clamp(1, 5),
            delay: options
                .retry_delay
                .or(gateway.retry_delay.map(Duration::from_millis))
                .unwrap_or(Duration::from_millis(100))
                .min(Duration::from_secs(5)),
            backoff: options.backoff.or(gateway.retry_backoff).unwrap_or(Backoff::Constant),
        }
    }

    /// Delay before retry number `retry` (1 = the first retry, i.e. the second attempt).
    #[must_use]
    pub fn delay_before(&self, retry: u8) -> Duration {
        let n = u32::from(retry.max(1));
        match self.backoff {
            Backoff::Constant => self.delay,
            Backoff::Linear => self.delay * n,
            Backoff::Exponential => self.delay * 2u32.pow(n - 1),
        }
    }
}

/// Whether an upstream status is worth another attempt (overload and server errors).
#[must_use]
pub fn is_retryable_status(status: u16) -> bool {
    status == 429 || status >= 500
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_as_configured() {
        let p = |backoff| RetryPolicy { max_attempts: 5, delay: Duration::from_millis(100), backoff };
        let ms = |p: RetryPolicy| (1..=4).map(|n| p.delay_before(n).as_millis()).collect::<Vec<_>>();
        assert_eq!(ms(p(Backoff::Constant)), [100, 100, 100, 100]);
        assert_eq!(ms(p(Backoff::Linear)), [100, 200, 300, 400]);
        assert_eq!(ms(p(Backoff::Exponential)), [100, 200, 400, 800]);
    }

    #[test]
    fn headers_override_gateway() {
        let mut gw = GatewayRecord::new_default("t");
        gw.retry_max_attempts = Some(3);
        gw.retry_backoff = Some(Backoff::Linear);
        let o = RequestOptions { max_attempts: Some(2), ..RequestOptions::default() };
        let p = RetryPolicy::resolve(&o, &gw);
        assert_eq!((p.max_attempts, p.backoff), (2, Backoff::Linear));
        assert_eq!(RetryPolicy::resolve(&RequestOptions::default(), &GatewayRecord::new_default("t")).max_attempts, 1);
    }
}
