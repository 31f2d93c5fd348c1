//! Reading the other instances' invalidations: a connection of its own blocking in `XREAD` from the last
//! id, what may have been missed checked on every (re)connection, and the freshness cap while detached.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::MultiplexedConnection;
use redis::streams::{StreamId, StreamReadReply};
use redis::{AsyncConnectionConfig, Value};
use tokio::task::JoinHandle;

use super::event::{Event, StreamPos};
use super::gap::{Missed, StreamState, missed, stream_state};
use super::{CONNECT_TIMEOUT, Shared};
use crate::cache::Invalidation;
use crate::config::ClusterConfig;

/// How long one `XREAD` blocks waiting for an entry; then it is sent again.
const BLOCK: Duration = Duration::from_secs(5);
/// An answer later than `BLOCK` plus this means the connection is dead (a partition sends no reset).
const RESPONSE_MARGIN: Duration = Duration::from_secs(3);
/// Entries read at most per `XREAD`; fewer means the reader has caught up.
const BATCH: usize = 512;
/// Reconnection waits this long after the first failure, doubling up to `MAX_BACKOFF`.
const MIN_BACKOFF: Duration = Duration::from_millis(50);
/// The longest wait between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Why a reading session ended.
#[derive(Debug, thiserror::Error)]
pub(super) enum ReadError {
    /// Redis failed or the connection broke.
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    /// Redis answered something the reader cannot use.
    #[error("{0}")]
    Stream(String),
}

/// The reader's state between sessions.
struct Reader {
    /// Where the stream is.
    client: redis::Client,
    /// `cluster.stream`.
    stream: String,
    /// The epoch key: a value set once per Redis dataset, so a different (or emptied) Redis shows.
    epoch_key: String,
    /// What the tasks share.
    shared: Arc<Shared>,
    /// The id of the last entry dealt with; `None` until the first session finds the stream's end.
    last: Option<StreamPos>,
    /// How many entries the stream had had appended up to `last`, when known (see [`missed`]).
    count: Option<u64>,
    /// The epoch seen by the last session.
    epoch: Option<String>,
    /// Connected and caught up: freshness uncapped.
    attached: bool,
}

/// Spawns the reader, detached (freshness capped) until it has caught up.
pub(super) fn start(
    client: redis::Client,
    config: &ClusterConfig,
    shared: Arc<Shared>,
    resume_from: Option<StreamPos>,
) -> JoinHandle<()> {
    let mut reader = Reader {
        client,
        stream: config.stream.clone(),
        epoch_key: format!("{}:epoch", config.stream),
        shared,
        last: None,
        count: None,
        epoch: None,
        attached: true,
    };
    reader.detach();
    if let Some(pos) = resume_from {
        reader.moved_to(pos);
    }
    tokio::spawn(reader.run())
}

impl Reader {
    /// Sessions, one after the other, with a growing pause between failed ones.
    async fn run(mut self) {
        let mut backoff = MIN_BACKOFF;
        let mut quiet = false;
        loop {
            let Err(err) = self.session().await;
            if self.attached {
                tracing::warn!(
                    error = %err,
                    cap = ?self.shared.max_stale,
                    "cluster: lost the invalidation stream; serving stored responses at most the cap \
                     after they were stored or validated until it is back"
                );
                (backoff, quiet) = (MIN_BACKOFF, true);
            } else if quiet {
                tracing::debug!(error = %err, "cluster: the invalidation stream is still unreachable");
            } else {
                tracing::warn!(error = %err, "cluster: cannot read the invalidation stream; retrying");
                quiet = true;
            }
            self.detach();
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One connection: check what was missed, then apply entries as they come, until something fails.
    async fn session(&mut self) -> Result<Infallible, ReadError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(BLOCK + RESPONSE_MARGIN));
        let mut redis = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg(format!("cloudreve-edge-reader:{}", self.shared.instance_id))
            .query_async::<()>(&mut redis)
            .await?;
        self.check_epoch(&mut redis).await?;
        let stream = stream_state(&mut redis, &self.stream).await?;
        self.find_position(stream.as_ref());
        // Catch up without blocking (so an instance with nothing to catch up on attaches at once), then
        // wait for entries.
        loop {
            if let Some(from) = self.shared.take_rewind() {
                let stream = stream_state(&mut redis, &self.stream).await?;
                self.rewind(from, stream.as_ref());
            }
            // A rewind interrupts a blocking read (dropped before its answer: nothing was applied).
            let shared = Arc::clone(&self.shared);
            let block = self.attached;
            let read = tokio::select! {
                read = self.xread(&mut redis, block) => read?,
                () = shared.rewind_requested.notified() => continue,
            };
            if read < BATCH && !self.attached {
                self.attach();
            }
        }
    }

    /// Reads again from `from` (a restored snapshot's position), when it is before the position: unless
    /// what came after it is gone, then the whole cache is dropped instead.
    fn rewind(&mut self, from: StreamPos, stream: Option<&StreamState>) {
        if self.last.is_some_and(|last| last <= from) {
            return;
        }
        match missed(from, None, stream) {
            Missed::Nothing => {
                tracing::info!(from = %from, "cluster: replaying the invalidations since the snapshot");
                self.moved_to(from);
                self.count = None;
            }
            Missed::Lost(reason) => self.resync(reason),
        }
    }

    /// Compares this Redis's epoch with the last session's: a different value is a different (or emptied)
    /// Redis, whose stream says nothing about what was missed.
    async fn check_epoch(&mut self, redis: &mut MultiplexedConnection) -> Result<(), ReadError> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let candidate = format!("{}-{nanos}", self.shared.instance_id);
        let (epoch,): (Option<String>,) = redis::pipe()
            .cmd("SET")
            .arg(&self.epoch_key)
            .arg(&candidate)
            .arg("NX")
            .ignore()
            .cmd("GET")
            .arg(&self.epoch_key)
            .query_async(redis)
            .await?;
        let epoch = epoch.unwrap_or_default();
        if self.epoch.as_ref().is_some_and(|seen| *seen != epoch) {
            self.resync("epoch");
            self.last = None;
        }
        self.epoch = Some(epoch);
        Ok(())
    }

    /// Where to read from: after the last entry dealt with if nothing was missed since, else (after
    /// dropping everything) the stream's end; the stream's end too on the first connection.
    fn find_position(&mut self, stream: Option<&StreamState>) {
        let end = stream.map_or(StreamPos::ZERO, |s| s.last_generated);
        // At the end, the count is what the stream has had appended (none, when there is no stream).
        let end_count = stream.map_or(Some(0), |s| s.entries_added);
        match self.last {
            None => (),
            Some(last) => match missed(last, self.count, stream) {
                Missed::Nothing => return,
                Missed::Lost(reason) => self.resync(reason),
            },
        }
        self.moved_to(end);
        self.count = end_count;
    }

    /// One `XREAD` from the last id, blocking for up to [`BLOCK`] when `block`; applies what it brought
    /// and says how many entries.
    async fn xread(
        &mut self,
        redis: &mut MultiplexedConnection,
        block: bool,
    ) -> Result<usize, ReadError> {
        let last = self.last.unwrap_or(StreamPos::ZERO);
        let mut command = redis::cmd("XREAD");
        command.arg("COUNT").arg(BATCH);
        if block {
            command.arg("BLOCK").arg(BLOCK.as_millis().to_string());
        }
        let reply: Option<StreamReadReply> = command
            .arg("STREAMS")
            .arg(&self.stream)
            .arg(last.to_string())
            .query_async(redis)
            .await?;
        let entries: Vec<StreamId> = reply
            .into_iter()
            .flat_map(|reply| reply.keys)
            .flat_map(|key| key.ids)
            .collect();
        let count = entries.len();
        for entry in entries {
            let pos = entry.id.parse::<StreamPos>().map_err(ReadError::Stream)?;
            self.deliver(&entry.map, pos);
            self.moved_to(pos);
            self.count = self.count.map(|count| count + 1);
        }
        Ok(count)
    }

    /// Applies one entry, unless this instance wrote it.
    fn deliver(&self, fields: &HashMap<String, Value>, pos: StreamPos) {
        let own = self.shared.instance_id.as_str();
        match Event::decode(fields) {
            Ok(event) if event.origin == own => {}
            Ok(event) => {
                if event.gap {
                    tracing::warn!(
                        origin = event.origin,
                        "cluster: another instance could not share some invalidations; dropping everything"
                    );
                    self.shared.metrics.resynced("peer_gap");
                }
                self.shared.cache().apply(&event.what);
                self.shared.metrics.applied(lag_seconds(pos));
            }
            Err(unreadable) if unreadable.origin.as_deref() == Some(own) => {}
            Err(unreadable) => {
                tracing::warn!(id = %pos, origin = ?unreadable.origin, problem = unreadable.problem, "cluster: unreadable event");
                self.resync("unreadable_event");
            }
        }
    }

    /// The position is now `pos`: every entry up to it is reflected in the cache.
    fn moved_to(&mut self, pos: StreamPos) {
        self.last = Some(pos);
        *self
            .shared
            .last_applied
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(pos);
    }

    /// Drops the whole cache: events may have been missed, and any entry could be one they dropped.
    fn resync(&self, reason: &'static str) {
        tracing::warn!(
            reason,
            "cluster: invalidations may have been missed; dropping the whole cache"
        );
        self.shared.cache().apply(&Invalidation::All);
        self.shared.metrics.resynced(reason);
    }

    /// Connected and caught up: freshness is the upstream's again.
    fn attach(&mut self) {
        self.attached = true;
        self.shared.cache().cap_freshness(None);
        self.shared.metrics.set_connected(true);
        tracing::info!(
            position = ?self.last.map(|pos| pos.to_string()),
            "cluster: reading the invalidation stream"
        );
    }

    /// Not reading: freshness capped at `cluster.max_stale_when_detached`.
    fn detach(&mut self) {
        if self.attached {
            self.attached = false;
            self.shared
                .cache()
                .cap_freshness(Some(self.shared.max_stale));
            self.shared.metrics.set_connected(false);
        }
    }
}

/// Seconds from an entry's append (the time in its id, Redis's clock) to now, zero if the clocks disagree.
#[allow(clippy::cast_precision_loss)] // Milliseconds of lag, far below 2^52.
fn lag_seconds(pos: StreamPos) -> f64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let now = u64::try_from(now).unwrap_or(u64::MAX);
    now.saturating_sub(pos.millis) as f64 / 1000.0
}
