//! The cache's time source: the system clock, or one that tests move forward instead of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// The time source for freshness. The system clock in production; tests move a manual offset forward
/// instead of sleeping. The offset moves monotonic time only (how long entries have been resident), not the
/// wall clock, which is compared with the upstream's own `Date` headers.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// Nanoseconds added to the monotonic clock; `None` for the plain system clock.
    offset: Option<Arc<AtomicU64>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self::default()
    }

    /// A clock that runs with the system clock plus whatever [`Clock::advance`] added.
    pub fn manual() -> Self {
        Self {
            offset: Some(Arc::new(AtomicU64::new(0))),
        }
    }

    /// Moves a manual clock forward. Does nothing to the system clock.
    pub fn advance(&self, by: Duration) {
        if let Some(offset) = &self.offset {
            offset.fetch_add(by.as_nanos() as u64, Ordering::Relaxed);
        }
    }

    /// Monotonic now, for residence time and freshness deadlines.
    pub fn now(&self) -> Instant {
        match &self.offset {
            None => Instant::now(),
            Some(offset) => Instant::now() + Duration::from_nanos(offset.load(Ordering::Relaxed)),
        }
    }

    /// Wall-clock now, for comparing with `Date` headers (RFC 9111 §4.2.3).
    pub fn system_now(&self) -> SystemTime {
        SystemTime::now()
    }
}
