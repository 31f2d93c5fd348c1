//! The checked-in deployment files agree with the code: the Grafana dashboard only queries metrics the proxy
//! exports, the systemd unit gives the drain its time and the default limits their descriptors, and the
//! three-instance example is a valid configuration on a Redis that keeps nothing (its Redis user is tried
//! against a real Redis in `cluster.rs`).

use std::collections::BTreeSet;

use cloudreve_edge::access_log::AccessRecord;
use cloudreve_edge::cache::status::Outcome;
use cloudreve_edge::config::{
    DEFAULT_DRAIN_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_SNAPSHOT_TIMEOUT,
    DEFAULT_UPSTREAM_MAX_CONNECTIONS,
};
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
    let metrics = Metrics::clustered();
    let cluster = metrics.cluster().unwrap();
    cluster.resynced("epoch");
    cluster.publish_failed("redis");
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

/// Every PromQL expression in the dashboard.
fn exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match value {
                    serde_json::Value::String(expr) if key == "expr" => out.push(expr.clone()),
                    _ => exprs(value, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|item| exprs(item, out)),
        _ => {}
    }
}

/// Every value a `cache="..."`, `cache=~"..."` or `cache!="..."` matcher in `expr` names.
fn cache_label_values(expr: &str) -> BTreeSet<String> {
    let mut values = BTreeSet::new();
    for (at, _) in expr.match_indices("cache") {
        let rest = &expr[at + "cache".len()..];
        let Some(rest) = ["=~\"", "!=\"", "=\""]
            .iter()
            .find_map(|op| rest.strip_prefix(op))
        else {
            continue;
        };
        let end = rest.find('"').expect("a closed label value");
        values.extend(rest[..end].split('|').map(str::to_owned));
    }
    values
}

#[test]
fn grafana_dashboard_filters_on_cache_outcomes_that_exist() {
    let known: BTreeSet<String> = [
        Outcome::Hit,
        Outcome::Stale,
        Outcome::StaleIfError,
        Outcome::Revalidated,
        Outcome::Stored,
        Outcome::Collapsed,
        Outcome::Miss,
        Outcome::Bypass,
    ]
    .map(|outcome| outcome.as_str().to_owned())
    .into_iter()
    .chain(["none".to_owned()])
    .collect();
    let dashboard: serde_json::Value =
        serde_json::from_str(&deploy_file("grafana-dashboard.json")).expect("valid JSON");
    let mut queries = Vec::new();
    exprs(&dashboard, &mut queries);
    let used: BTreeSet<String> = queries.iter().flat_map(|q| cache_label_values(q)).collect();
    assert!(
        used.is_superset(
            &["hit", "stale", "revalidated", "bypass"]
                .map(str::to_owned)
                .into()
        ),
        "the hit ratio counts every answer from memory and leaves bypasses out: {used:?}"
    );
    let unknown: Vec<_> = used.difference(&known).collect();
    assert!(unknown.is_empty(), "no such cache label: {unknown:?}");
}

#[test]
fn systemd_unit_waits_longer_than_the_drain_and_the_snapshot_and_reloads_with_sighup() {
    let unit = deploy_file("cloudreve-edge.service");
    let stop = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .expect("TimeoutStopSec");
    let stop: u64 = stop.trim_end_matches('s').parse().unwrap();
    // The drain, then the cache snapshot (warm restart).
    let needed = DEFAULT_DRAIN_TIMEOUT + DEFAULT_SNAPSHOT_TIMEOUT;
    assert!(stop > needed.as_secs(), "{stop}");
    assert!(
        unit.contains("StateDirectory=cloudreve-edge"),
        "a writable directory for the snapshot"
    );
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
}

#[test]
fn systemd_unit_gives_the_default_limits_their_descriptors() {
    // README, "Sizing": client connections, upstream connections, and a margin for the rest.
    const MARGIN: usize = 64;
    let unit = deploy_file("cloudreve-edge.service");
    let limit: usize = unit
        .lines()
        .find_map(|l| l.strip_prefix("LimitNOFILE="))
        .expect("LimitNOFILE")
        .parse()
        .unwrap();
    let needed = DEFAULT_MAX_CONNECTIONS + DEFAULT_UPSTREAM_MAX_CONNECTIONS + MARGIN;
    assert!(
        limit >= needed,
        "LimitNOFILE={limit}, the defaults need {needed}"
    );
}

#[test]
fn logrotate_rotates_the_file_in_the_units_logs_directory_and_signals_a_reopen() {
    let unit = deploy_file("cloudreve-edge.service");
    let logs = unit
        .lines()
        .find_map(|l| l.strip_prefix("LogsDirectory="))
        .expect("LogsDirectory");
    let rotate = deploy_file("cloudreve-edge.logrotate");
    let target = rotate
        .lines()
        .find(|l| l.ends_with('{'))
        .expect("a path block")
        .trim_end_matches('{')
        .trim();
    assert_eq!(
        std::path::Path::new(target).parent(),
        Some(std::path::Path::new("/var/log").join(logs).as_path()),
        "{target}"
    );
    assert!(rotate.contains("--signal=USR1 cloudreve-edge.service"));
    assert!(rotate.contains("delaycompress"));
}

#[test]
fn the_three_instance_example_is_a_clustered_configuration() {
    let config = cloudreve_edge::Config::from_toml(&deploy_file("proxy-cluster.toml"))
        .expect("deploy/proxy-cluster.toml is valid");
    let cluster = config.cluster.expect("a [cluster] section");
    assert_eq!(
        cluster.instance_id, None,
        "one file for every instance: hostname-pid"
    );
    let redis = deploy_file("redis-invalidations.conf");
    let (_, address) = cluster.redis_url.as_str().rsplit_once('@').unwrap();
    let (host, port) = address.split_once(':').unwrap();
    let bind = redis.lines().find_map(|l| l.strip_prefix("bind ")).unwrap();
    assert!(bind.split_whitespace().any(|b| b == host), "{bind}");
    assert!(redis.contains(&format!("\nport {port}\n")));
    for line in ["save \"\"", "appendonly no", "maxmemory-policy noeviction"] {
        assert!(redis.lines().any(|l| l == line), "{line}");
    }
    for file in ["haproxy.cfg", "nginx.conf", "prometheus.yml"] {
        let text = deploy_file(file);
        for instance in ["10.0.0.11:", "10.0.0.12:", "10.0.0.13:"] {
            assert!(text.contains(instance), "{file} lists {instance}");
        }
    }
}
