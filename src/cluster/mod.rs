//! Invalidation shared with the other instances through a Redis Stream (`[cluster]`), and detached mode.
//!
//! - **Publishing** (`publish.rs`): [`Cache::invalidate`](crate::cache::Cache::invalidate) applies an
//!   invalidation here, then hands it to a bounded queue without waiting; a writer task appends it to the
//!   stream (`XADD ... MINID ~ <now - retention>`) through the `redis` crate's connection manager, which
//!   reconnects. An append that fails is retried, then counted and logged; a full queue is counted. Either
//!   way the other instances would miss it, so the writer appends an `all` (`why=gap`) as soon as it can.
//! - **Reading** (`read.rs`): a connection of its own, blocking in `XREAD` from the last id read; each
//!   event another instance wrote is applied with [`Cache::apply`](crate::cache::Cache::apply). On every
//!   (re)connection it checks what it may have missed: a different Redis (the epoch key), a stream gone or
//!   gone backwards (a Redis restarted empty), or trimmed past its position. Any of those drops the whole
//!   cache, logged and counted (`cloudreve_edge_cluster_resyncs_total{reason}`).
//! - **Detached**: while the reader is not connected and caught up, the cache serves a stored response from
//!   memory for at most `cluster.max_stale_when_detached` after it was stored or validated, then revalidates
//!   it (`If-Modified-Since`, cheap 304s): what another instance invalidated meanwhile is served at most
//!   that long. Requests never wait for Redis; `/readyz` does not look at it.

mod event;
mod gap;
mod publish;
mod read;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::cache::{Cache, Invalidation};
use crate::config::ClusterConfig;
use crate::metrics::ClusterMetrics;
use crate::proxy::Proxy;

pub use event::StreamPos;

/// Every Redis connection attempt gives up after this long (then the next attempt is scheduled).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// What the cluster's tasks share with each other and with [`Cluster`].
struct Shared {
    /// This instance's name in the events it writes.
    instance_id: String,
    /// The proxy whose cache the events apply to (and whose metrics count them).
    proxy: Arc<Proxy>,
    /// The cluster's series of the proxy's metrics.
    metrics: ClusterMetrics,
    /// The cap on freshness while detached (`cluster.max_stale_when_detached`).
    max_stale: Duration,
    /// The id of the last entry the reader has dealt with (applied, or skipped as its own).
    last_applied: Mutex<Option<StreamPos>>,
    /// A position to read from again (a restored snapshot's), for the reader to take.
    rewind: Mutex<Option<StreamPos>>,
    /// Wakes the reader from its blocking read when a rewind is requested.
    rewind_requested: Notify,
}

impl Shared {
    fn cache(&self) -> &Cache {
        self.proxy.cache()
    }

    /// The rewind requested, if any, taken.
    fn take_rewind(&self) -> Option<StreamPos> {
        self.rewind
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// The running cluster: its writer and reader tasks, stopped when this is dropped.
pub struct Cluster {
    /// State shared with the tasks.
    shared: Arc<Shared>,
    /// The writer and the reader.
    tasks: [JoinHandle<()>; 2],
    /// The writer's queue, to flush it.
    queue: publish::Queue,
}

/// Why the cluster could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// `resume_from` is not a stream id.
    #[error("cannot resume from {0}")]
    ResumeFrom(String),
    /// The Redis client could not be built from the URL.
    #[error("cannot use cluster.redis_url: {0}")]
    Client(#[source] redis::RedisError),
    /// The proxy was not built for a cluster (no `[cluster]`), or a publisher is set already.
    #[error(
        "the proxy is not set up for a cluster (no [cluster] metrics, or a publisher already set)"
    )]
    NotClustered,
}

impl Cluster {
    /// This instance's name in the events it writes.
    pub fn instance_id(&self) -> &str {
        &self.shared.instance_id
    }

    /// The id of the last stream entry this instance's cache reflects (every event up to it applied), to
    /// store beside a snapshot and pass back as `resume_from`; `None` before the reader first connected.
    pub fn last_applied_id(&self) -> Option<String> {
        let last = self
            .shared
            .last_applied
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        last.map(|pos| pos.to_string())
    }
}

impl Cluster {
    /// Replays, over what the cache holds, the invalidations appended after the stream id that `after`
    /// resolves to: a restored snapshot's (`None`: nothing to replay). The reader, which started at the
    /// stream's end, reads again from that id (what it applies twice drops nothing more), or drops the whole
    /// cache when the stream no longer holds what came after it. Never waits: `after` is awaited on a task.
    pub fn replay_after(&self, after: impl Future<Output = Option<String>> + Send + 'static) {
        let shared = Arc::clone(&self.shared);
        tokio::spawn(async move {
            let Some(id) = after.await else {
                return;
            };
            match id.parse::<StreamPos>() {
                Ok(pos) => {
                    *shared.rewind.lock().unwrap_or_else(PoisonError::into_inner) = Some(pos);
                    shared.rewind_requested.notify_one();
                }
                Err(err) => {
                    tracing::warn!(
                        error = err,
                        "cluster: the snapshot's stream id is unreadable; dropping the whole cache"
                    );
                    shared.cache().apply(&Invalidation::All);
                    shared.metrics.resynced("unreadable_snapshot_id");
                }
            }
        });
    }

    /// Waits until every invalidation queued so far has been dealt with (appended, or counted as failed
    /// after its retries), for at most `within`; whether it was. For the end of a drain: what is still
    /// queued when the process exits never reaches the other instances.
    pub async fn flush(&self, within: Duration) -> bool {
        let (done, flushed) = tokio::sync::oneshot::channel();
        let flush = async {
            self.queue.send(publish::Job::Flush(done)).await.is_ok() && flushed.await.is_ok()
        };
        tokio::time::timeout(within, flush).await.unwrap_or(false)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Starts sharing `proxy`'s invalidations through the stream of `config` (on the current tokio runtime):
/// sets the cache's publisher, spawns the writer and the reader, and caps freshness until the reader has
/// caught up. Reading starts after `resume_from` (a stream id kept with a snapshot of the cache), or at the
/// stream's end. Never waits for Redis: an unreachable one leaves the proxy detached, retrying.
pub fn start(
    config: &ClusterConfig,
    proxy: &Arc<Proxy>,
    resume_from: Option<&str>,
) -> Result<Cluster, ClusterError> {
    let resume_from = resume_from
        .map(|id| id.parse::<StreamPos>().map_err(ClusterError::ResumeFrom))
        .transpose()?;
    let client = redis::Client::open(config.redis_url.as_str()).map_err(ClusterError::Client)?;
    let metrics = proxy
        .metrics()
        .cluster()
        .cloned()
        .ok_or(ClusterError::NotClustered)?;
    let shared = Arc::new(Shared {
        instance_id: config
            .instance_id
            .clone()
            .unwrap_or_else(default_instance_id),
        proxy: Arc::clone(proxy),
        metrics,
        max_stale: config.max_stale_when_detached,
        last_applied: Mutex::new(None),
        rewind: Mutex::new(None),
        rewind_requested: Notify::new(),
    });
    let (publisher, writer, queue) = publish::start(client.clone(), config, Arc::clone(&shared))?;
    if !shared.cache().set_publisher(publisher) {
        writer.abort();
        return Err(ClusterError::NotClustered);
    }
    let reader = read::start(client, config, Arc::clone(&shared), resume_from);
    tracing::info!(
        redis = %config.redis_url.redacted(),
        stream = config.stream,
        instance = shared.instance_id,
        "cluster: sharing invalidations"
    );
    Ok(Cluster {
        shared,
        tasks: [writer, reader],
        queue,
    })
}

/// `hostname-pid`: unique per process on a host, readable in logs and `CLIENT LIST`.
fn default_instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_instance_id_is_host_and_pid() {
        let id = default_instance_id();
        let pid = std::process::id().to_string();
        let (host, tail) = id.rsplit_once('-').unwrap();
        assert_eq!(tail, pid);
        assert!(
            !host.is_empty() && id.bytes().all(|b| b.is_ascii_graphic()),
            "{id}"
        );
    }
}
