//! Readiness as a load balancer should see it: not draining, and the upstream answered recently.
//!
//! The request path reports each upstream exchange here; the server reports the start of a drain; `/readyz`
//! (`admin.rs`) reads the result and, when traffic has said nothing lately, probes the upstream itself.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What the passive signals say about readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// A drain has started: the load balancer must stop sending.
    Draining,
    /// The upstream answered within the window, and has not failed since.
    Ready,
    /// Traffic says nothing recent (or the last exchange failed): probe the upstream to decide.
    Unknown,
}

/// Shared readiness state. Times are milliseconds since `epoch`, plus one, so that 0 means "never".
#[derive(Debug)]
pub struct Health {
    /// Origin of the stored times.
    epoch: Instant,
    /// Set once, when the server stops accepting.
    draining: AtomicBool,
    /// Last time the upstream sent a response head (or a probe connected).
    last_answer: AtomicU64,
    /// Last time connecting to the upstream failed.
    last_failure: AtomicU64,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            draining: AtomicBool::new(false),
            last_answer: AtomicU64::new(0),
            last_failure: AtomicU64::new(0),
        }
    }
}

impl Health {
    /// Marks the start of a drain; from now on the process is never ready again.
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Whether a drain has started.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// The upstream answered (any status: it is reachable).
    pub fn upstream_answered(&self) {
        self.last_answer.store(self.stamp(), Ordering::Relaxed);
    }

    /// Connecting to the upstream failed.
    pub fn upstream_failed(&self) {
        self.last_failure.store(self.stamp(), Ordering::Relaxed);
    }

    /// Readiness from what the process already knows, with "recently" meaning within `window`.
    pub fn readiness(&self, window: Duration) -> Readiness {
        if self.is_draining() {
            return Readiness::Draining;
        }
        let answer = self.last_answer.load(Ordering::Relaxed);
        let failure = self.last_failure.load(Ordering::Relaxed);
        let window = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        let recent = answer != 0 && self.stamp().saturating_sub(answer) < window;
        if recent && answer >= failure {
            Readiness::Ready
        } else {
            Readiness::Unknown
        }
    }

    fn stamp(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(10);

    #[test]
    fn nothing_known_at_start() {
        assert_eq!(Health::default().readiness(WINDOW), Readiness::Unknown);
    }

    #[test]
    fn a_recent_answer_is_ready() {
        let health = Health::default();
        health.upstream_answered();
        assert_eq!(health.readiness(WINDOW), Readiness::Ready);
    }

    #[test]
    fn an_old_answer_is_not_enough() {
        let health = Health::default();
        health.upstream_answered();
        assert_eq!(health.readiness(Duration::ZERO), Readiness::Unknown);
    }

    #[test]
    fn a_failure_after_the_answer_needs_a_probe() {
        let health = Health::default();
        health.upstream_answered();
        std::thread::sleep(Duration::from_millis(2));
        health.upstream_failed();
        assert_eq!(health.readiness(WINDOW), Readiness::Unknown);
    }

    #[test]
    fn drain_wins_over_everything() {
        let health = Health::default();
        health.upstream_answered();
        health.begin_drain();
        assert_eq!(health.readiness(WINDOW), Readiness::Draining);
    }
}
