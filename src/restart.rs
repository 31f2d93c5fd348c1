//! Warm restart, wired to the process: the snapshot of `cache.snapshot_path` read in the background at start
//! ([`restore_in_background`]) and written after the drain ([`save`]), with what each did logged. The format
//! and its checks are the cache's own (`cache::snapshot`); this module brings the configuration and the
//! threads.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{oneshot, watch};

use crate::cache::snapshot::{self, Expect, Header, Written};
use crate::config::CacheConfig;
use crate::proxy::Proxy;

/// How a start-up restore ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restored {
    /// No snapshot is configured, or there was no file: a cold start.
    Nothing,
    /// The file was discarded for the reason given (logged): a cold start.
    Discarded(String),
    /// The file was read whole and its entries stored.
    Loaded {
        /// The last invalidation stream id the writer had applied (clustered): what came after it must be
        /// replayed over the restored entries.
        stream_id: Option<String>,
        /// Entries stored.
        restored: u64,
        /// Entries left out because the store would have dropped them by now.
        expired: u64,
        /// Entries left out because the key was filled or purged while the file loaded.
        superseded: u64,
    },
}

/// The start-up restore, under way or done.
pub struct Restoring {
    /// Its outcome, once the cache holds the entries: a clustered reader takes it to replay the
    /// invalidations after its `stream_id` (an error: the restore thread could not start, a cold start).
    pub outcome: oneshot::Receiver<Restored>,
    /// When it has ended, for [`save`].
    pub finished: Finished,
}

/// Whether the start-up restore has ended, however it ended.
#[derive(Clone)]
pub struct Finished(watch::Receiver<bool>);

impl Finished {
    /// Waits until the restore has ended.
    pub async fn wait(&mut self) {
        // An error means the sender is gone, which it only is once it has said so.
        let _ = self.0.wait_for(|finished| *finished).await;
    }
}

/// The fingerprint of what stored entries depend on besides the build: the cache rules (a rule's kind,
/// prefix and limits decided what was stored and for how long). A snapshot written under other rules is
/// not read.
pub fn context(cache: &CacheConfig) -> u64 {
    xxhash_rust::xxh3::xxh3_64(format!("{:?}", cache.rules).as_bytes())
}

/// Reads `cache.snapshot_path` into the cache on a thread of its own, so that the proxy serves (misses)
/// meanwhile. Call it before serving anything: it begins the restore, which from then on keeps every key
/// a fill or a purge touches out of what it restores. The receiver gets the outcome once the cache holds
/// the entries: a clustered reader replays the invalidations after its `stream_id`.
pub fn restore_in_background(proxy: &Arc<Proxy>) -> Restoring {
    let (done, outcome) = oneshot::channel();
    let (ended, finished) = watch::channel(false);
    let restoring = Restoring {
        outcome,
        finished: Finished(finished),
    };
    let config = &proxy.live().load().config.cache;
    let Some(path) = config.snapshot_path.clone() else {
        let _ = done.send(Restored::Nothing);
        ended.send_replace(true);
        return restoring;
    };
    let expect = Expect {
        build: snapshot::build_hash(),
        context: context(config),
    };
    proxy.cache().begin_restore();
    let guard = EndRestore(Arc::clone(proxy), ended);
    let spawned = std::thread::Builder::new()
        .name("edge-snapshot".to_owned())
        .spawn(move || {
            let restored = restore(&guard.0, &path, expect);
            drop(guard);
            let _ = done.send(restored);
        });
    if let Err(err) = spawned {
        // The closure, and with it the guard, was dropped: the restore is ended.
        tracing::warn!(error = %err, "cannot start the snapshot thread; starting cold");
    }
    restoring
}

/// Ends the restore however the thread ends, a panic included: the store stops remembering keys, and
/// [`Finished`] says so.
struct EndRestore(Arc<Proxy>, watch::Sender<bool>);

impl Drop for EndRestore {
    fn drop(&mut self) {
        self.0.cache().end_restore();
        self.1.send_replace(true);
    }
}

/// The restore itself, on the snapshot thread: read whole, then stored; one log line either way.
fn restore(proxy: &Proxy, path: &Path, expect: Expect) -> Restored {
    let started = Instant::now();
    let loaded = match snapshot::load(path, expect, proxy.cache()) {
        Ok(Some(loaded)) => loaded,
        Ok(None) => {
            tracing::info!(path = %path.display(), "no cache snapshot; starting cold");
            return Restored::Nothing;
        }
        Err(doubt) => {
            let reason = doubt.to_string();
            tracing::warn!(path = %path.display(), %reason, "cache snapshot discarded; starting cold");
            return Restored::Discarded(reason);
        }
    };
    let (expired, over_capacity) = (loaded.expired, loaded.over_capacity);
    let stream_id = loaded.header.stream_id.clone();
    let outcome = proxy.cache().restore(loaded);
    let superseded = outcome.superseded + outcome.stopped;
    proxy
        .metrics()
        .snapshot_restored(outcome.restored, expired, started.elapsed());
    tracing::info!(
        path = %path.display(),
        restored = outcome.restored,
        expired,
        over_capacity,
        superseded,
        elapsed_ms = started.elapsed().as_millis() as u64,
        stream_id = stream_id.as_deref().unwrap_or("-"),
        "cache snapshot restored"
    );
    Restored::Loaded {
        stream_id,
        restored: outcome.restored,
        expired,
        superseded,
    }
}

/// Writes the cache to `cache.snapshot_path` (as configured now) after the drain, within
/// `cache.snapshot_timeout`: past it the write is given up, logged, and the caller goes on to exit (a write
/// stuck in the kernel is left to the exit). A start-up restore still loading (a stop right after a start)
/// is waited for first, within the same time: the file it reads is gone, and a snapshot written without its
/// entries would lose them. `stream_id`: the last invalidation id applied, when clustered. Never fails the
/// process: a snapshot is an optimisation, and what goes wrong is one log line.
pub async fn save(proxy: &Arc<Proxy>, restore: &Finished, stream_id: Option<String>) {
    let config = proxy.live().load().config.cache.clone();
    let Some(path) = config.snapshot_path.clone() else {
        return;
    };
    let timeout = config.snapshot_timeout;
    let started = Instant::now();
    if tokio::time::timeout(timeout, restore.clone().wait())
        .await
        .is_err()
    {
        tracing::warn!(
            ?timeout,
            "the snapshot read at start is still loading; writing what the cache holds"
        );
    }
    let header = Header {
        build: snapshot::build_hash(),
        context: context(&config),
        written_at: proxy
            .cache()
            .clock()
            .system_now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default(),
        stream_id,
    };
    let writing = match spawn_write(proxy, &path, header, started + timeout) {
        Ok(writing) => writing,
        Err(err) => {
            tracing::warn!(error = %err, "cannot start the snapshot thread; the next start is cold");
            return;
        }
    };
    let deadline = tokio::time::Instant::from_std(started + timeout + WAIT_PAST_DEADLINE);
    let result = tokio::time::timeout_at(deadline, writing).await;
    let elapsed_ms = started.elapsed().as_millis() as u64;
    match result {
        Ok(Ok(Ok(written))) => tracing::info!(
            path = %path.display(),
            entries = written.entries,
            body_bytes = written.body_bytes,
            file_bytes = written.file_bytes,
            elapsed_ms,
            "cache snapshot written"
        ),
        Ok(Ok(Err(err))) => tracing::warn!(
            path = %path.display(),
            error = %err,
            elapsed_ms,
            "cache snapshot not written; the next start is cold"
        ),
        Ok(Err(_)) => tracing::error!("cache snapshot thread panicked; the next start is cold"),
        Err(_) => tracing::warn!(
            path = %path.display(),
            ?timeout,
            "cache snapshot not written within cache.snapshot_timeout; the next start is cold"
        ),
    }
}

/// Writes the snapshot on a thread of its own, not tokio's blocking pool: the runtime waits for its blocking
/// tasks when it shuts down, and a write stuck past its time must not hold the exit.
fn spawn_write(
    proxy: &Arc<Proxy>,
    path: &Path,
    header: Header,
    deadline: Instant,
) -> io::Result<oneshot::Receiver<io::Result<Written>>> {
    let (done, writing) = oneshot::channel();
    let (proxy, path) = (Arc::clone(proxy), path.to_owned());
    std::thread::Builder::new()
        .name("edge-snapshot".to_owned())
        .spawn(move || {
            let _ = done.send(snapshot::save(proxy.cache(), &path, &header, deadline));
        })?;
    Ok(writing)
}

/// The writer checks its deadline between records; a single slow write or `fsync` can overrun it, and is
/// waited for this much longer before the process exits without it.
const WAIT_PAST_DEADLINE: Duration = Duration::from_secs(1);
