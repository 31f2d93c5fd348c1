//! Fixtures for the operations tests: the admin listener beside a [`TestProxy`], and reading `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;

use cloudreve_edge::admin;
use prometheus_parse::{Scrape, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::{TestProxy, get};

/// The admin listener of a running [`TestProxy`], on `127.0.0.1:0`; stopped when dropped.
pub struct TestAdmin {
    pub addr: SocketAddr,
    task: JoinHandle<std::io::Result<()>>,
}

impl TestAdmin {
    pub async fn start(proxy: &TestProxy) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(admin::run(
            listener,
            Arc::clone(&proxy.proxy),
            std::future::pending(),
        ));
        Self { addr, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// `GET /metrics`, parsed.
    pub async fn scrape(&self) -> Metrics {
        let reply = get(&self.url("/metrics")).await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.header("content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        let text = String::from_utf8(reply.body.to_vec()).unwrap();
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("metrics parse");
        Metrics { scrape, text }
    }
}

impl Drop for TestAdmin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One scrape of `/metrics`.
pub struct Metrics {
    pub scrape: Scrape,
    /// The raw text, for failure messages.
    pub text: String,
}

impl Metrics {
    /// The value of the counter or gauge sample `name` whose labels include `labels`, 0 when absent (a
    /// labelled counter appears at its first increment).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match &s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
                other => panic!("{name} is not a counter or gauge: {other:?}"),
            })
            .sum()
    }

    /// The `_count` of histogram `name` (`+Inf` bucket).
    pub fn histogram_count(&self, name: &str) -> f64 {
        self.scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .find_map(|s| match &s.value {
                Value::Histogram(buckets) => buckets
                    .iter()
                    .find(|b| b.less_than.is_infinite())
                    .map(|b| b.count),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no histogram {name} in:\n{}", self.text))
    }
}
