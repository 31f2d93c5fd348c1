//! The cluster's metrics (`cloudreve_edge_cluster_*`), registered only when `[cluster]` is configured.

use std::sync::atomic::{AtomicI64, AtomicU64};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

/// Labels of the cluster's counters that say why.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    /// Why (see each counter's help).
    reason: &'static str,
}

/// The cluster's metrics; clones share the same series.
#[derive(Clone, Debug, Default)]
pub struct ClusterMetrics {
    /// 1 while the reader is connected and caught up, else 0.
    connected: Gauge<i64, AtomicI64>,
    /// Invalidations this instance appended to the stream.
    published: Counter,
    /// Invalidations this instance could not append, by reason.
    publish_failed: Family<ReasonLabels, Counter>,
    /// Invalidations of other instances applied here.
    applied: Counter,
    /// Whole-cache drops because events may have been missed, by reason.
    resyncs: Family<ReasonLabels, Counter>,
    /// Age of the last event applied when it was applied (stream id time to now).
    lag: Gauge<f64, AtomicU64>,
}

impl ClusterMetrics {
    /// Registers every series in `registry` (prefix `cloudreve_edge_` there), at zero.
    pub(super) fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "cluster_connected",
            "1 while the invalidation stream is read and caught up; 0 while detached",
            metrics.connected.clone(),
        );
        registry.register(
            "cluster_published",
            "Invalidations this instance appended to the stream",
            metrics.published.clone(),
        );
        registry.register(
            "cluster_publish_failed",
            "Invalidations not appended: redis (failed after retrying), queue_full (Redis too slow)",
            metrics.publish_failed.clone(),
        );
        registry.register(
            "cluster_applied",
            "Invalidations of other instances applied to this cache",
            metrics.applied.clone(),
        );
        registry.register(
            "cluster_resyncs",
            "Whole-cache drops because events may have been missed, by reason",
            metrics.resyncs.clone(),
        );
        registry.register_with_unit(
            "cluster_lag",
            "Time from the last applied event's append (its stream id) to its application here",
            Unit::Seconds,
            metrics.lag.clone(),
        );
        metrics
    }

    /// Whether the reader is connected and caught up.
    pub fn set_connected(&self, connected: bool) {
        self.connected.set(i64::from(connected));
    }

    /// Counts one invalidation appended to the stream.
    pub fn published(&self) {
        self.published.inc();
    }

    /// Counts one invalidation that could not be appended.
    pub fn publish_failed(&self, reason: &'static str) {
        self.publish_failed
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Counts one event of another instance applied, `lag_seconds` after it was appended.
    pub fn applied(&self, lag_seconds: f64) {
        self.applied.inc();
        self.lag.set(lag_seconds);
    }

    /// Counts one whole-cache drop.
    pub fn resynced(&self, reason: &'static str) {
        self.resyncs.get_or_create(&ReasonLabels { reason }).inc();
    }
}
