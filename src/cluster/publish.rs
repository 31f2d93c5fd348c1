//! Appending this instance's invalidations to the stream: a non-blocking hand-off on the request path, a
//! writer task with the `redis` crate's connection manager (which reconnects) behind it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::event::Event;
use super::{CONNECT_TIMEOUT, ClusterError, Shared};
use crate::cache::{Invalidation, Publisher};
use crate::config::ClusterConfig;
use crate::metrics::ClusterMetrics;

/// Invalidations waiting for the writer. A purge storm beyond this, with Redis slow, is counted
/// (`reason="queue_full"`) and made up for by an `all`.
const QUEUE: usize = 4096;
/// An append is tried this many times more after it fails (the manager reconnects meanwhile)...
const RETRIES: u32 = 3;
/// ...the first after this long, each later one after twice the last.
const FIRST_RETRY: Duration = Duration::from_millis(100);
/// One command's answer is awaited this long.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// With an `all` owed to the others (something could not be appended) and nothing else to append, the
/// writer tries again this often.
const OWED_RETRY: Duration = Duration::from_secs(1);

/// What the writer is handed, in order.
pub(super) enum Job {
    /// Append this invalidation.
    Append(Invalidation),
    /// Answer once every job handed before has been dealt with (appended, or counted as failed).
    Flush(oneshot::Sender<()>),
}

/// The writer's queue.
pub(super) type Queue = mpsc::Sender<Job>;

/// The writer's view of one stream.
struct Writer {
    /// Where the stream is, for a new manager.
    client: redis::Client,
    /// The connection, reconnected by the manager after an I/O error; replaced after any failure.
    redis: ConnectionManager,
    /// `cluster.stream`.
    stream: String,
    /// `cluster.retention`: older entries are trimmed as new ones are appended.
    retention: Duration,
    /// Set when an invalidation of this instance never reached the stream; cleared once an `all` did.
    owed: Arc<AtomicBool>,
    /// What the tasks share.
    shared: Arc<Shared>,
}

/// The cache's publisher (a non-blocking hand-off), the writer task draining it, and its queue (to flush).
pub(super) fn start(
    client: redis::Client,
    config: &ClusterConfig,
    shared: Arc<Shared>,
) -> Result<(Publisher, JoinHandle<()>, Queue), ClusterError> {
    let redis = manager(&client).map_err(ClusterError::Client)?;
    let (queue, mut received) = mpsc::channel::<Job>(QUEUE);
    let owed = Arc::new(AtomicBool::new(false));
    let writer = Writer {
        client,
        redis,
        stream: config.stream.clone(),
        retention: config.retention,
        owed: Arc::clone(&owed),
        shared,
    };
    let metrics = writer.shared.metrics.clone();
    let flush = queue.clone();
    let publisher: Publisher = Box::new(move |what| hand_off(&queue, what, &owed, &metrics));
    let task = tokio::spawn(async move { writer.run(&mut received).await });
    Ok((publisher, task, flush))
}

/// A connection manager that connects on first use, trying a connection twice per command at most (the
/// writer retries whole appends itself).
fn manager(client: &redis::Client) -> redis::RedisResult<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(1)
        .set_max_delay(FIRST_RETRY);
    ConnectionManager::new_lazy_with_config(client.clone(), config)
}

/// On the request path: queue `what` for the writer, never waiting.
fn hand_off(queue: &Queue, what: &Invalidation, owed: &AtomicBool, metrics: &ClusterMetrics) {
    if let Err(err) = queue.try_send(Job::Append(what.clone())) {
        let reason = match err {
            TrySendError::Full(_) => "queue_full",
            TrySendError::Closed(_) => "stopped",
        };
        metrics.publish_failed(reason);
        // One line per run of losses, not one per request.
        if !owed.swap(true, Ordering::SeqCst) {
            tracing::warn!(
                reason,
                ?what,
                "cluster: an invalidation could not be queued for the stream; the other instances will \
                 drop everything once the writer catches up"
            );
        }
    }
}

impl Writer {
    /// Appends what arrives, in order, until the queue closes; pays an owed `all` first.
    async fn run(mut self, received: &mut mpsc::Receiver<Job>) {
        loop {
            let owed = self.owed.load(Ordering::SeqCst);
            let next = if owed {
                match tokio::time::timeout(OWED_RETRY, received.recv()).await {
                    Ok(next) => next.map(Some),
                    Err(_) => Some(None),
                }
            } else {
                received.recv().await.map(Some)
            };
            let Some(next) = next else {
                return;
            };
            if owed && self.append(&Invalidation::All, true).await {
                self.owed.store(false, Ordering::SeqCst);
                tracing::info!("cluster: appended `all` for the invalidations that had been lost");
            }
            match next {
                Some(Job::Append(what)) => {
                    let appended = self.append(&what, false).await;
                    self.owed.fetch_or(!appended, Ordering::SeqCst);
                }
                Some(Job::Flush(done)) => {
                    let _ = done.send(());
                }
                None => {}
            }
        }
    }

    /// Appends one event, retrying a failed append; whether it was appended.
    async fn append(&mut self, what: &Invalidation, gap: bool) -> bool {
        let event = Event {
            what: what.clone(),
            origin: self.shared.instance_id.clone(),
            gap,
        };
        let mut delay = FIRST_RETRY;
        for attempt in 0..=RETRIES {
            match self.xadd(&event).await {
                Ok(()) => {
                    self.shared.metrics.published();
                    return true;
                }
                Err(err) if attempt == RETRIES => {
                    self.shared.metrics.publish_failed("redis");
                    tracing::error!(
                        error = %err,
                        ?what,
                        "cluster: could not append an invalidation to the stream"
                    );
                }
                Err(err) => {
                    tracing::debug!(error = %err, attempt, "cluster: append failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
            self.replace_manager();
        }
        false
    }

    /// A new manager in place of one whose command failed: the redis crate's manager reconnects after an
    /// I/O error only, and keeps answering with the error of a failed connection attempt (a refused `AUTH`,
    /// a Redis still loading) for good.
    fn replace_manager(&mut self) {
        match manager(&self.client) {
            Ok(redis) => self.redis = redis,
            Err(err) => {
                tracing::error!(error = %err, "cluster: cannot make a Redis connection manager")
            }
        }
    }

    /// `XADD <stream> MINID ~ <now - retention> * <fields>`: the approximate trim keeps whole macro nodes,
    /// so it costs little on every append.
    async fn xadd(&mut self, event: &Event) -> redis::RedisResult<()> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let min_id = now.saturating_sub(self.retention).as_millis();
        let mut command = redis::cmd("XADD");
        command
            .arg(&self.stream)
            .arg("MINID")
            .arg("~")
            .arg(min_id.to_string())
            .arg("*");
        for (field, value) in event.fields() {
            command.arg(field).arg(value);
        }
        command.query_async::<String>(&mut self.redis).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_never_waits_and_owes_the_others_an_all() {
        let (queue, mut received) = mpsc::channel(1);
        let owed = AtomicBool::new(false);
        let metrics = ClusterMetrics::default();
        hand_off(&queue, &Invalidation::Key("a".into()), &owed, &metrics);
        assert!(!owed.load(Ordering::SeqCst));
        hand_off(&queue, &Invalidation::Key("b".into()), &owed, &metrics);
        assert!(owed.load(Ordering::SeqCst), "the second did not fit");
        assert!(matches!(
            received.try_recv(),
            Ok(Job::Append(Invalidation::Key(key))) if key == "a"
        ));
        assert!(received.try_recv().is_err());
    }
}
