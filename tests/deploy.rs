//! The checked-in deployment files agree with the code: the Grafana dashboard only queries metrics the proxy
//! exports, and the systemd unit gives the drain its time.

use std::collections::BTreeSet;

use cloudreve_edge::access_log::AccessRecord;
use cloudreve_edge::config::DEFAULT_DRAIN_TIMEOUT;
use cloudreve_edge::metrics::{CacheUsage, Metrics};
use http::{Method, StatusCode, Uri, Version};

fn deploy_file(name: &str) -> String {
    std::fs::read_to_string(format!("{}/deploy/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// Every `cloudreve_edge_*` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("cloudreve_edge_"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn grafana_dashboard_queries_only_exported_metrics() {
    let metrics = Metrics::new();
    let record = AccessRecord::start(
        &Method::GET,
        &Uri::from_static("/"),
        Version::HTTP_11,
        "127.0.0.1:1".parse().unwrap(),
    );
    metrics.request(&record, StatusCode::OK);
    metrics.upstream_error("connect");
    let exported = metric_names(&metrics.render(CacheUsage::default()));

    let dashboard: serde_json::Value =
        serde_json::from_str(&deploy_file("grafana-dashboard.json")).expect("valid JSON");
    let queried = metric_names(&dashboard.to_string());
    assert!(queried.len() >= 8, "{queried:?}");
    let unknown: Vec<_> = queried.difference(&exported).collect();
    assert!(unknown.is_empty(), "not exported: {unknown:?}");
}

#[test]
fn systemd_unit_waits_longer_than_the_drain_and_reloads_with_sighup() {
    let unit = deploy_file("cloudreve-edge.service");
    let stop = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .expect("TimeoutStopSec");
    let stop: u64 = stop.trim_end_matches('s').parse().unwrap();
    assert!(stop > DEFAULT_DRAIN_TIMEOUT.as_secs(), "{stop}");
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
}
