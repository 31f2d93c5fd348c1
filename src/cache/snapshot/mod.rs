//! Warm restart: the cache written to a file on drain and read back at start. Knows nothing of the
//! configuration: the caller names the file, the deadline and the context the entries depend on.
//!
//! - `format`: the bytes (header, checksummed records, end marker) and every reason to doubt them.
//! - `record`: an entry as a record and back, the time down counted in its age.
//! - `file`: the file itself: written to a temporary file, synced, renamed; read once and removed.
//!
//! Reading is all or nothing: the whole file is read and checked before the first entry is stored, so a
//! doubt anywhere (a flipped bit in the last record, a file cut short) leaves the cache as it was: cold.

mod file;
mod format;
mod record;

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

pub use file::{load, save};
pub use format::{Doubt, FORMAT_VERSION, Header, MAGIC, SCHEMA_VERSION, build_hash};

use super::store::{Restored, Stored as _};
use super::{Cache, CachedResponse, Stored, VaryIndex, vary};

/// What a snapshot must match to be read: this build, and the caller's context (see [`Header::context`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expect {
    /// [`build_hash`].
    pub build: u64,
    /// The caller's fingerprint of what the entries depend on.
    pub context: u64,
}

/// What a write put in the file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    /// Responses written.
    pub entries: u64,
    /// Their bodies, in bytes: the payload.
    pub body_bytes: u64,
    /// The file, in bytes.
    pub file_bytes: u64,
}

/// A snapshot read and checked whole, its entries aged by the time since they were stored.
pub struct Loaded {
    /// The file's header (its stream id is what a clustered reader replays from).
    pub header: Header,
    /// The entries still worth keeping, by store key.
    entries: Vec<(String, Arc<CachedResponse>)>,
    /// Entries dropped because the store would have dropped them by now.
    pub expired: u64,
    /// Entries dropped because those before them filled the cache's capacity (a cache made smaller since).
    pub over_capacity: u64,
}

impl Loaded {
    /// Entries to restore.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Nothing to restore.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// What [`Cache::restore`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Restore {
    /// Entries stored.
    pub restored: u64,
    /// Entries not stored because the key was written or removed while the snapshot was loading (a live
    /// fill, a purge), or already held a response.
    pub superseded: u64,
    /// Entries not stored because a purge by prefix or of everything came while the snapshot was loading.
    pub stopped: u64,
}

/// Writes every response `cache` holds to `out`, record by record, giving up with
/// [`io::ErrorKind::TimedOut`] once `deadline` passes, and with [`io::ErrorKind::Interrupted`] when anything
/// was removed from the cache meanwhile (a purge on the admin listener during the drain): an entry written
/// before the purge would come back with the next start.
pub fn write(
    cache: &Cache,
    out: impl Write,
    header: &Header,
    deadline: Instant,
) -> io::Result<Written> {
    let now = cache.clock().now();
    let removals = cache.store.removals();
    let mut writer = format::Writer::new(out, header)?;
    let mut written = Written::default();
    for (key, stored) in cache.store.iter() {
        // `Vary` indexes are not written: each variant brings its own back (see `read`).
        let Stored::Response(entry) = stored else {
            continue;
        };
        if Instant::now() > deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("deadline passed after {} entries", written.entries),
            ));
        }
        let meta = record::record_of(&key, &entry, now, header.written_at);
        writer.record(&meta, &entry.body)?;
        written.entries += 1;
        written.body_bytes += entry.body.len() as u64;
    }
    if cache.store.removals() != removals {
        return Err(io::Error::new(
            io::ErrorKind::Interrupted,
            "an entry was purged while the snapshot was written",
        ));
    }
    let (_, _, file_bytes) = writer.finish()?;
    written.file_bytes = file_bytes;
    Ok(written)
}

/// Reads and checks a whole snapshot of `length` bytes: any doubt about any byte is an error and nothing is
/// kept. The cache clock says `now` when the wall clock says `now_wall`; the entries' age includes the time
/// since they were stored, and those the store would have dropped by then are left out. Entries past
/// `capacity` bytes (weighed as the store weighs them) are checked and left out too: what is held while the
/// file is read never passes what the cache may hold.
pub fn read(
    input: impl Read,
    length: u64,
    expect: Expect,
    now: Instant,
    now_wall: SystemTime,
    capacity: u64,
) -> Result<Loaded, Doubt> {
    let mut reader = format::Reader::open(input, length)?;
    let header = reader.header().clone();
    if header.build != expect.build {
        return Err(Doubt::Build {
            found: header.build,
            expected: expect.build,
        });
    }
    if header.context != expect.context {
        return Err(Doubt::Context);
    }
    let now_wall = now_wall
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    if header.written_at > now_wall {
        return Err(Doubt::Future(header.written_at - now_wall));
    }
    let mut loaded = Loaded {
        header,
        entries: Vec::new(),
        expired: 0,
        over_capacity: 0,
    };
    let mut index = 0;
    let mut weight = 0;
    while let Some((meta, body)) = reader.next_record()? {
        if meta.stored_at > loaded.header.written_at {
            return Err(Doubt::Malformed {
                record: index,
                why: "stored after the file was written".to_owned(),
            });
        }
        let key = meta.key.clone();
        match record::entry_of(meta, body, now, now_wall, index)? {
            Some(entry) => {
                let entry = Arc::new(entry);
                let weighs = key.len() as u64 + Stored::Response(Arc::clone(&entry)).weight();
                if weight + weighs <= capacity {
                    weight += weighs;
                    loaded.entries.push((key, entry));
                } else {
                    loaded.over_capacity += 1;
                }
            }
            None => loaded.expired += 1,
        }
        index += 1;
    }
    Ok(loaded)
}

impl Cache {
    /// Starts remembering every key written or removed, so that [`Cache::restore`] never brings back what a
    /// purge removed nor overwrites a live fill's answer. Call it before serving, so that no write can come
    /// before it; end it with [`Cache::end_restore`], also when the snapshot could not be read.
    pub fn begin_restore(&self) {
        self.store.begin_restore();
    }

    /// Stores the entries of a snapshot (with the `Vary` index of every URL whose responses vary), each
    /// only if nothing was stored or removed under its key since [`Cache::begin_restore`]. A URL's index goes
    /// first, and its variants only if the index was restored: a purge of the URL during the load removed
    /// the index only, and must keep every old variant out.
    pub fn restore(&self, loaded: Loaded) -> Restore {
        let mut indexes: HashMap<String, VaryIndex> = HashMap::new();
        for (key, entry) in &loaded.entries {
            if let Some(index) = entry.vary_index() {
                // The variants of a URL share one index: kept as long as the longest-lived of them.
                let kept = indexes
                    .entry(vary::primary_of(key).to_owned())
                    .or_insert_with(|| VaryIndex {
                        names: index.names.clone(),
                        retain_for: Duration::ZERO,
                    });
                kept.retain_for = kept.retain_for.max(index.retain_for);
            }
        }
        let mut outcome = Restore::default();
        let mut count = |restored| match restored {
            Restored::Inserted => outcome.restored += 1,
            Restored::Superseded => outcome.superseded += 1,
            Restored::Stopped => outcome.stopped += 1,
        };
        let indexed: HashSet<String> = indexes
            .into_iter()
            .filter_map(|(primary, index)| {
                let restored = self.store.restore(&primary, Stored::Vary(Arc::new(index)));
                (restored == Restored::Inserted).then_some(primary)
            })
            .collect();
        for (key, entry) in loaded.entries {
            if entry.vary.is_some() && !indexed.contains(vary::primary_of(&key)) {
                count(Restored::Superseded);
                continue;
            }
            count(self.store.restore(&key, Stored::Response(entry)));
        }
        outcome
    }

    /// Ends what [`Cache::begin_restore`] began.
    pub fn end_restore(&self) {
        self.store.end_restore();
    }
}

#[cfg(test)]
mod tests;
