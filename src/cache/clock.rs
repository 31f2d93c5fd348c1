//! The cache's time source: the system clock, or one that tests move forward instead of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// The time source for freshness. The system clock in production; in tests a manual clock that stands still
/// until moved forward, so how long an entry has been resident (and so its `Age` and ttl) is exactly what the
/// test says, however long the test takes. It moves monotonic time only, not the wall clock, which is compared
/// with the upstream's own `Date` headers.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// For a manual clock: when it was made, and the nanoseconds it was moved forward since; `None` for the
    /// system clock.
    manual: Option<Arc<(Instant, AtomicU64)>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self::default()
    }

    /// A clock that stands at the moment it was made, plus whatever [`Clock::advance`] added.
    pub fn manual() -> Self {
        Self {
            manual: Some(Arc::new((Instant::now(), AtomicU64::new(0)))),
        }
    }

    /// Moves a manual clock forward. Does nothing to the system clock.
    pub fn advance(&self, by: Duration) {
        if let Some(manual) = &self.manual {
            manual.1.fetch_add(by.as_nanos() as u64, Ordering::Relaxed);
        }
    }

    /// Monotonic now, for residence time and freshness deadlines.
    pub fn now(&self) -> Instant {
        match &self.manual {
            None => Instant::now(),
            Some(manual) => manual.0 + Duration::from_nanos(manual.1.load(Ordering::Relaxed)),
        }
    }

    /// Wall-clock now, for comparing with `Date` headers (RFC 9111 §4.2.3).
    pub fn system_now(&self) -> SystemTime {
        SystemTime::now()
    }
}
