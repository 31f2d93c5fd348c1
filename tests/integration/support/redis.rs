//! A real Redis for the cluster tests: Debian's `/usr/bin/redis-server` (`.ci/run` installs it) on a free
//! loopback port, in a temp dir, without persistence (`--save '' --appendonly no`), killed on drop; and
//! proxies joined to it, each with its own fake Cloudreve and admin listener.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use cloudreve_edge::Config;
use cloudreve_edge::cluster::{self, Cluster};
use redis::Value;
use tokio::process::{Child, Command};

use super::ops::{TempDir, TestAdmin};
use super::{FakeCloudreve, PATIENCE, TestProxy, test_config};

const REDIS_SERVER: &str = "/usr/bin/redis-server";
/// The user the proxies log in as, so a test can keep them out ([`TestRedis::shut_out`]) while it uses
/// Redis itself as `default`.
pub const EDGE_USER: &str = "edge";
const EDGE_PASSWORD: &str = "edge-pw";
/// Ports tried before giving up (each taken by something else between our probe and Redis's bind).
const PORT_ATTEMPTS: usize = 10;

/// A `redis-server` on `127.0.0.1:<port>`.
pub struct TestRedis {
    pub port: u16,
    /// With [`TestRedis::start_tls`]: the TLS port, beside the plain one.
    pub tls_port: Option<u16>,
    /// `--tls-cert-file`, `--tls-key-file`, `--tls-ca-cert-file` with [`TestRedis::start_tls`].
    tls_files: Vec<std::path::PathBuf>,
    dir: TempDir,
    child: Option<Child>,
}

impl TestRedis {
    /// Starts one on a free port, waiting (bounded) until it answers.
    pub async fn start() -> Self {
        Self::start_with(Vec::new()).await
    }

    /// One that also takes TLS connections (on `tls_port`) with this certificate, key and CA, without
    /// asking clients for certificates.
    pub async fn start_tls(cert: &Path, key: &Path, ca: &Path) -> Self {
        Self::start_with(vec![cert.to_owned(), key.to_owned(), ca.to_owned()]).await
    }

    async fn start_with(tls_files: Vec<std::path::PathBuf>) -> Self {
        let dir = TempDir::new("redis");
        let mut redis = Self {
            port: 0,
            tls_port: None,
            tls_files,
            dir,
            child: None,
        };
        for _ in 0..PORT_ATTEMPTS {
            redis.port = free_port();
            redis.tls_port = (!redis.tls_files.is_empty()).then(free_port);
            if redis.launch().await {
                return redis;
            }
        }
        panic!("redis-server did not start on any of {PORT_ATTEMPTS} ports");
    }

    /// The URL a proxy uses: as [`EDGE_USER`].
    pub fn url(&self) -> String {
        format!(
            "redis://{EDGE_USER}:{EDGE_PASSWORD}@127.0.0.1:{}",
            self.port
        )
    }

    /// The URL of the `default` user, whom [`TestRedis::shut_out`] leaves alone.
    pub fn default_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL: a crash; nothing is saved, as with `--save ''` anyway).
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }

    /// Starts it again on the same port, empty.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "stop it first");
        assert!(
            self.launch().await,
            "redis-server did not come back on its port"
        );
    }

    /// One command as `default`, on a connection of its own.
    pub async fn cmd(&self, args: &[&str]) -> Value {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}", self.port)).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let mut command = redis::cmd(args[0]);
        for arg in &args[1..] {
            command.arg(*arg);
        }
        command.query_async(&mut connection).await.unwrap()
    }

    /// Closes every connection of the proxies and refuses them new ones, until [`TestRedis::let_in`].
    pub async fn shut_out(&self) {
        self.cmd(&["ACL", "SETUSER", EDGE_USER, "off"]).await;
        self.cmd(&["CLIENT", "KILL", "USER", EDGE_USER]).await;
    }

    /// Lets the proxies connect again.
    pub async fn let_in(&self) {
        self.cmd(&["ACL", "SETUSER", EDGE_USER, "on"]).await;
    }

    /// Spawns the server and polls `INFO` until it answers; `false` when the port was taken.
    async fn launch(&mut self) -> bool {
        let log = self.dir.0.join("redis.log");
        let mut command = Command::new(REDIS_SERVER);
        if let (Some(port), [cert, key, ca]) = (self.tls_port, self.tls_files.as_slice()) {
            command.args(["--tls-port", &port.to_string(), "--tls-auth-clients", "no"]);
            command.arg("--tls-cert-file").arg(cert);
            command.arg("--tls-key-file").arg(key);
            command.arg("--tls-ca-cert-file").arg(ca);
        }
        let mut child = command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir.0)
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server runs (apt-get install redis-server)");
        let pid = child.id().expect("running");
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if child.try_wait().unwrap().is_some() {
                return false;
            }
            // Another test's server may hold the port (ours then fails to bind): only ours counts.
            match self.server_pid().await {
                Some(answered) if answered == pid => break,
                Some(_) => {
                    child.kill().await.unwrap();
                    return false;
                }
                None => {}
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server did not answer PING: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.child = Some(child);
        self.cmd(&[
            "ACL",
            "SETUSER",
            EDGE_USER,
            "on",
            &format!(">{EDGE_PASSWORD}"),
            "~*",
            "&*",
            "+@all",
        ])
        .await;
        true
    }

    /// The process id of the server answering on the port (`INFO server`), if one answers.
    async fn server_pid(&self) -> Option<u32> {
        let client = redis::Client::open(self.default_url()).ok()?;
        let mut connection = client.get_multiplexed_async_connection().await.ok()?;
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut connection)
            .await
            .ok()?;
        info.lines()
            .find_map(|line| line.strip_prefix("process_id:"))
            .and_then(|pid| pid.trim().parse().ok())
    }
}

/// A port that was free a moment ago (bound to port 0, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One instance of a fleet: a proxy joined to the stream, its admin listener and its own fake Cloudreve
/// (so each instance's upstream count is its own).
pub struct Node {
    pub upstream: FakeCloudreve,
    pub proxy: TestProxy,
    pub admin: TestAdmin,
    pub cluster: Cluster,
}

impl Node {
    /// A proxy named `id` in front of `upstream`, reading and writing the stream of the Redis at `url`,
    /// with freshness capped at 60 s (of its manual clock) while detached; returns once its reader has
    /// caught up.
    pub async fn join(url: &str, id: &str, upstream: FakeCloudreve) -> Self {
        let node = Self::start(url, id, upstream, None).await;
        node.until_connected(true).await;
        node
    }

    /// The same without waiting for the reader, which starts after `resume_from` when given.
    pub async fn start(
        url: &str,
        id: &str,
        upstream: FakeCloudreve,
        resume_from: Option<&str>,
    ) -> Self {
        let mut config = test_config(&upstream.url());
        config.cluster = cluster_config(url, id, "60s").cluster;
        let proxy = TestProxy::start_with(config.clone()).await;
        let admin = TestAdmin::start(&proxy).await;
        let cluster =
            cluster::start(config.cluster.as_ref().unwrap(), &proxy.proxy, resume_from).unwrap();
        Self {
            upstream,
            proxy,
            admin,
            cluster,
        }
    }

    /// Polls `/metrics` until `cloudreve_edge_cluster_connected` is `connected`.
    pub async fn until_connected(&self, connected: bool) {
        let want = if connected { 1.0 } else { 0.0 };
        self.until_metric("cloudreve_edge_cluster_connected", &[], |v| v == want)
            .await;
    }

    /// Polls `/metrics` until the sample `name` with `labels` satisfies `holds`.
    pub async fn until_metric(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        holds: impl Fn(f64) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let metrics = self.admin.scrape().await;
            if holds(metrics.value(name, labels)) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {name}{labels:?}:\n{}",
                metrics.text
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The sample `name` with `labels` now (0 when absent).
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.admin.scrape().await.value(name, labels)
    }

    pub fn proxy(&self) -> &Arc<cloudreve_edge::Proxy> {
        &self.proxy.proxy
    }
}

/// A configuration whose `[cluster]` is read from TOML, as an operator writes it.
pub fn cluster_config(url: &str, id: &str, max_stale: &str) -> Config {
    Config::from_toml(&format!(
        "[cluster]\nredis_url = \"{url}\"\ninstance_id = \"{id}\"\nmax_stale_when_detached = \"{max_stale}\"\n"
    ))
    .unwrap()
}
