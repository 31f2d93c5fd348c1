//! Prometheus metrics (`prometheus-client`), rendered by the admin listener's `/metrics`.
//!
//! One registry per [`crate::Proxy`], not a process-wide recorder, so in-process tests see only their own
//! traffic. Request counters are taken from the access record the request path fills anyway; cache size is read
//! from the cache when scraped, not tracked on every insert.

use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use http::StatusCode;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

mod cluster;

pub use cluster::ClusterMetrics;

use crate::access_log::{self, AccessRecord};
use crate::cache::status::Outcome;
use crate::config::RuleKind;

/// The `Content-Type` of [`Metrics::render`]'s output: the Prometheus text format, version 0.0.4, which
/// every scraper reads.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Upper bounds of the upstream response-time buckets, in seconds: from a cached-page-speed answer to the
/// default `upstream.response_header_timeout`.
const UPSTREAM_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
];

/// `route` label values, by `RuleKind` and then no rule.
const ROUTES: [&str; 3] = ["avatar", "http", "pass"];
/// `cache` label values: `Outcome::as_str`'s, then `none` for requests no rule matched.
const CACHES: [&str; 7] = [
    "hit",
    "stale",
    "revalidated",
    "miss",
    "coalesced",
    "bypass",
    "none",
];
/// `status` label values, by the status code's first digit.
const STATUSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Labels of `cloudreve_edge_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    /// The kind of cache rule that matched (`avatar`, `http`; bypasses included), or `pass` for everything
    /// no rule matched.
    route: &'static str,
    /// What the cache did (`Outcome::as_str`): `hit`, `stale`, `revalidated`, `miss`, `coalesced`, `bypass`,
    /// or `none` for requests the cache never sees.
    cache: &'static str,
    /// Status class answered: `2xx` ... `5xx`.
    status: &'static str,
}

/// Labels of `cloudreve_edge_upstream_errors_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    /// Where the exchange failed (see `ProxyError::upstream_kind`).
    kind: &'static str,
}

/// What the cache holds, read at scrape time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheUsage {
    /// Entries stored.
    pub entries: u64,
    /// Bytes they weigh (bodies, headers, keys, bookkeeping).
    pub bytes: u64,
    /// Entries evicted for space since start.
    pub evictions: u64,
}

/// Every metric of one proxy.
#[derive(Debug)]
pub struct Metrics {
    /// What `/metrics` renders.
    registry: Registry,
    /// Requests answered, by route class, cache outcome and status class.
    requests: Family<RequestLabels, Counter>,
    /// The counter of each label set once it has been used: the family's own lookup hashes and locks, which
    /// is too much for every cache hit. A series still appears only once it has counted something.
    request_counters: Box<[OnceLock<Counter>]>,
    /// Time from sending a request upstream to its response head.
    upstream_seconds: Histogram,
    /// Upstream exchanges that failed before a response head (or while a fill read the body).
    upstream_errors: Family<ErrorLabels, Counter>,
    /// Client connections open now.
    open_connections: Gauge<i64, AtomicI64>,
    /// Requests sent upstream whose response head has not arrived yet.
    upstream_in_flight: Gauge<i64, AtomicI64>,
    /// Requests the express lane answered beside hyper (also counted in `requests`).
    express_answers: Counter,
    /// The cache's size, set just before each render.
    cache: Arc<CacheCollector>,
    /// The cluster's series, registered only when clustered ([`Metrics::clustered`]).
    cluster: Option<ClusterMetrics>,
    /// Entries the start-up restore stored from the snapshot (warm restart).
    snapshot_restored: Gauge<i64, AtomicI64>,
    /// Entries the start-up restore left out because they expired while the proxy was down.
    snapshot_expired: Gauge<i64, AtomicI64>,
    /// How long the start-up restore took, reading and storing.
    snapshot_load_seconds: Gauge<f64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("cloudreve_edge");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by route class, cache outcome and status class",
            requests.clone(),
        );
        let upstream_seconds = Histogram::new(UPSTREAM_BUCKETS);
        registry.register_with_unit(
            "upstream_response",
            "Time from sending a request to Cloudreve to its response head",
            Unit::Seconds,
            upstream_seconds.clone(),
        );
        let upstream_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Requests to Cloudreve that failed, by where they failed",
            upstream_errors.clone(),
        );
        let open_connections = Gauge::default();
        registry.register(
            "open_connections",
            "Client connections open on the public listener",
            open_connections.clone(),
        );
        let upstream_in_flight = Gauge::default();
        registry.register(
            "upstream_in_flight",
            "Requests sent to Cloudreve still waiting for the response head",
            upstream_in_flight.clone(),
        );
        let express_answers = Counter::default();
        registry.register(
            "express_answers",
            "Avatar hits answered by the express lane, beside hyper (also counted in requests)",
            express_answers.clone(),
        );
        let cache = Arc::new(CacheCollector::default());
        registry.register_collector(Box::new(Arc::clone(&cache)));
        let snapshot_restored = Gauge::default();
        registry.register(
            "snapshot_restored_entries",
            "Entries restored at start from the cache snapshot (0 without one, or when it was discarded)",
            snapshot_restored.clone(),
        );
        let snapshot_expired = Gauge::default();
        registry.register(
            "snapshot_expired_entries",
            "Snapshot entries left out at start because they expired while the proxy was down",
            snapshot_expired.clone(),
        );
        let snapshot_load_seconds = Gauge::default();
        registry.register_with_unit(
            "snapshot_load",
            "Time the start-up restore took to read, check and store the snapshot",
            Unit::Seconds,
            snapshot_load_seconds.clone(),
        );
        Self {
            registry,
            requests,
            request_counters: (0..ROUTES.len() * CACHES.len() * STATUSES.len())
                .map(|_| OnceLock::new())
                .collect(),
            upstream_seconds,
            upstream_errors,
            open_connections,
            upstream_in_flight,
            express_answers,
            cache,
            cluster: None,
            snapshot_restored,
            snapshot_expired,
            snapshot_load_seconds,
        }
    }

    /// Every metric, the cluster's (`cloudreve_edge_cluster_*`) included.
    pub fn clustered() -> Self {
        let mut metrics = Self::new();
        metrics.cluster = Some(ClusterMetrics::register(&mut metrics.registry));
        metrics
    }

    /// The cluster's series, when clustered.
    pub fn cluster(&self) -> Option<&ClusterMetrics> {
        self.cluster.as_ref()
    }

    /// Records what the start-up restore did (warm restart).
    pub fn snapshot_restored(&self, restored: u64, expired: u64, elapsed: Duration) {
        self.snapshot_restored.set(saturating_i64(restored));
        self.snapshot_expired.set(saturating_i64(expired));
        self.snapshot_load_seconds.set(elapsed.as_secs_f64());
    }

    /// Counts one answered request, from what the request path recorded.
    pub fn request(&self, record: &AccessRecord, status: StatusCode) {
        self.count(record.rule, record.cache.map(|c| c.outcome), status);
    }

    /// Counts one answered request: the rule that matched, what the cache did, the status sent.
    pub fn count(&self, rule: Option<RuleKind>, outcome: Option<Outcome>, status: StatusCode) {
        let route = match rule {
            Some(RuleKind::Avatar) => 0,
            Some(RuleKind::Http) => 1,
            None => 2,
        };
        let cache = outcome.map_or(CACHES.len() - 1, cache_index);
        let class = status_class(status);
        let index = (route * CACHES.len() + cache) * STATUSES.len() + class;
        let counter = self.request_counters[index].get_or_init(|| {
            let labels = RequestLabels {
                route: ROUTES[route],
                cache: CACHES[cache],
                status: STATUSES[class],
            };
            self.requests.get_or_create(&labels).clone()
        });
        counter.inc();
    }

    /// Counts one answer the express lane wrote (counted as a request too, by [`Metrics::count`]).
    pub fn express_answered(&self) {
        self.express_answers.inc();
    }

    /// Records the time an upstream response head took.
    pub fn upstream_answered(&self, elapsed: Duration) {
        self.upstream_seconds.observe(elapsed.as_secs_f64());
    }

    /// Counts an upstream failure of the given kind.
    pub fn upstream_error(&self, kind: &'static str) {
        self.upstream_errors
            .get_or_create(&ErrorLabels { kind })
            .inc();
    }

    /// Counts a client connection as open until the guard is dropped.
    pub fn connection_opened(&self) -> GaugeGuard {
        GaugeGuard::new(&self.open_connections)
    }

    /// Counts an upstream request as in flight until the guard is dropped.
    pub fn upstream_started(&self) -> GaugeGuard {
        GaugeGuard::new(&self.upstream_in_flight)
    }

    /// The text exposition, with the cache's current size.
    pub fn render(&self, cache: CacheUsage) -> String {
        *self
            .cache
            .usage
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = cache;
        let mut out = String::with_capacity(4096);
        prometheus_text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// `2xx`, `4xx`, ... for a status.
/// Index in [`STATUSES`] of a status code's class.
fn status_class(status: StatusCode) -> usize {
    usize::from(status.as_u16().clamp(100, 599) / 100 - 1)
}

/// Index in [`CACHES`] of an outcome's label (`Outcome::as_str`).
fn cache_index(outcome: Outcome) -> usize {
    match outcome {
        Outcome::Hit => 0,
        Outcome::Stale | Outcome::StaleIfError => 1,
        Outcome::Revalidated => 2,
        Outcome::Stored | Outcome::Miss => 3,
        Outcome::Collapsed => 4,
        Outcome::Bypass => 5,
    }
}

/// Decrements its gauge when dropped, so every exit path of what it measures is counted.
#[derive(Debug)]
pub struct GaugeGuard {
    /// The gauge incremented at creation.
    gauge: Gauge<i64, AtomicI64>,
}

impl GaugeGuard {
    fn new(gauge: &Gauge<i64, AtomicI64>) -> Self {
        gauge.inc();
        Self {
            gauge: gauge.clone(),
        }
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// The cache's size as of the last render (the store is asked at scrape time, not on every change).
#[derive(Debug, Default)]
struct CacheCollector {
    /// Set by [`Metrics::render`] just before encoding.
    usage: Mutex<CacheUsage>,
}

impl Collector for CacheCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let usage = *self.usage.lock().unwrap_or_else(PoisonError::into_inner);
        let entries = ConstGauge::new(saturating_i64(usage.entries));
        let metric = encoder.encode_descriptor(
            "cache_entries",
            "Avatar responses held in memory.",
            None,
            entries.metric_type(),
        )?;
        entries.encode(metric)?;
        let bytes = ConstGauge::new(saturating_i64(usage.bytes));
        let metric = encoder.encode_descriptor(
            "cache",
            "Memory the cached avatars weigh (bodies, headers, keys).",
            Some(&Unit::Bytes),
            bytes.metric_type(),
        )?;
        bytes.encode(metric)?;
        let evictions = ConstCounter::new(usage.evictions);
        let metric = encoder.encode_descriptor(
            "cache_evictions",
            "Entries evicted to stay within cache.capacity.",
            None,
            evictions.metric_type(),
        )?;
        evictions.encode(metric)?;
        // The access log's writer is one per process (the binary's), so its counts are the process's.
        let lines = ConstCounter::new(access_log::sink::written());
        let metric = encoder.encode_descriptor(
            "access_log_lines",
            "Access lines written.",
            None,
            lines.metric_type(),
        )?;
        lines.encode(metric)?;
        let dropped = ConstCounter::new(access_log::sink::dropped());
        let metric = encoder.encode_descriptor(
            "access_log_dropped",
            "Access lines dropped: the buffer was full (the writer could not keep up) or writing failed.",
            None,
            dropped.metric_type(),
        )?;
        dropped.encode(metric)
    }
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        let class = |status| STATUSES[status_class(status)];
        assert_eq!(class(StatusCode::OK), "2xx");
        assert_eq!(class(StatusCode::NOT_MODIFIED), "3xx");
        assert_eq!(class(StatusCode::NOT_FOUND), "4xx");
        assert_eq!(class(StatusCode::BAD_GATEWAY), "5xx");
    }

    #[test]
    fn cache_labels_are_the_outcome_names() {
        use Outcome::*;
        for outcome in [
            Hit,
            Stale,
            StaleIfError,
            Revalidated,
            Stored,
            Collapsed,
            Miss,
            Bypass,
        ] {
            assert_eq!(
                CACHES[cache_index(outcome)],
                outcome.as_str(),
                "{outcome:?}"
            );
        }
    }

    #[test]
    fn guards_count_while_alive() {
        let metrics = Metrics::new();
        let first = metrics.connection_opened();
        let second = metrics.connection_opened();
        drop(first);
        assert_eq!(metrics.open_connections.get(), 1);
        drop(second);
        assert_eq!(metrics.open_connections.get(), 0);
    }

    #[test]
    fn render_names_every_metric() {
        let metrics = Metrics::new();
        metrics.upstream_error("connect");
        let text = metrics.render(CacheUsage {
            entries: 3,
            bytes: 4096,
            evictions: 1,
        });
        for line in [
            "# TYPE cloudreve_edge_upstream_errors_total counter",
            "# TYPE cloudreve_edge_upstream_response_seconds histogram",
            "cloudreve_edge_upstream_errors_total{kind=\"connect\"} 1",
            "cloudreve_edge_open_connections 0",
            "cloudreve_edge_upstream_in_flight 0",
            "cloudreve_edge_cache_entries 3",
            "cloudreve_edge_cache_bytes 4096",
            "cloudreve_edge_cache_evictions_total 1",
            "# TYPE cloudreve_edge_access_log_lines_total counter",
            "# TYPE cloudreve_edge_access_log_dropped_total counter",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
    }
}
