//! The format, pinned: a round trip keeps every field, the time down counts in the age, expired entries stay
//! out, and every kind of damage is a doubt.

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, response};

use super::*;
use crate::cache::Clock;
use crate::cache::policy::{Freshness, Limits};

const LIMITS: Limits = Limits {
    max_object_size: 1 << 20,
    negative_ttl: Duration::from_secs(60),
    stale_while_revalidate: Duration::from_secs(10),
    stale_if_error: Duration::from_secs(100),
    keep: Duration::from_secs(1000),
    heuristic_fraction: 0.1,
    heuristic_max: Duration::from_secs(3600),
};

const EXPECT: Expect = Expect {
    build: 0x5eed,
    context: 7,
};

/// 2026-12-01T00:00:00Z, the wall clock when the test snapshots are written.
fn written_at() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_083_200)
}

fn header(stream_id: Option<&str>) -> Header {
    Header {
        build: EXPECT.build,
        context: EXPECT.context,
        written_at: written_at().duration_since(SystemTime::UNIX_EPOCH).unwrap(),
        stream_id: stream_id.map(str::to_owned),
    }
}

fn parts(status: u16, fields: &[(&str, &[u8])]) -> response::Parts {
    let (mut parts, ()) = Response::new(()).into_parts();
    parts.status = http::StatusCode::from_u16(status).unwrap();
    for (name, value) in fields {
        parts.headers.append(
            header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_bytes(value).unwrap(),
        );
    }
    parts
}

fn freshness(fresh_for: u64, initial_age: u64) -> Freshness {
    Freshness {
        fresh_for: Duration::from_secs(fresh_for),
        initial_age: Duration::from_secs(initial_age),
        stale_while_revalidate: Duration::from_secs(10),
        stale_if_error: Duration::from_secs(100),
        revalidatable: true,
    }
}

/// A cache on a manual clock holding: an avatar (no `ETag`: one is minted; a value with obs-text), a
/// redirect with the upstream's own `ETag`, and two variants of one URL (`Vary: Accept-Encoding`).
fn filled_cache() -> Cache {
    let cache = Cache::new(1 << 20, Clock::manual());
    let now = cache.clock().now();
    let avatar = parts(
        200,
        &[
            ("content-type", b"image/png"),
            ("cache-control", b"public, max-age=86400"),
            ("last-modified", b"Sun, 29 Nov 2026 12:00:00 GMT"),
            ("x-opaque", b"caf\xe9 \tend"),
        ],
    );
    let body = Bytes::from_static(b"\x89PNG avatar of 7");
    let entry = CachedResponse::new(
        &avatar,
        body,
        freshness(86_400, 5),
        &LIMITS,
        &HeaderMap::new(),
        now,
    );
    cache.insert("7", Arc::new(entry));
    let redirect = parts(302, &[("location", b"/x"), ("etag", b"\"r1\"")]);
    let entry = CachedResponse::new(
        &redirect,
        Bytes::new(),
        freshness(60, 0),
        &LIMITS,
        &HeaderMap::new(),
        now,
    );
    cache.insert("grav", Arc::new(entry));
    for encoding in ["gzip", "br"] {
        let mut request = HeaderMap::new();
        request.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(encoding));
        let varying = parts(200, &[("vary", b"Accept-Encoding")]);
        let body = Bytes::from(format!("bundle in {encoding}"));
        let entry = CachedResponse::new(&varying, body, freshness(600, 0), &LIMITS, &request, now);
        cache.insert("/assets/app.js", Arc::new(entry));
    }
    cache
}

fn written(cache: &Cache, stream_id: Option<&str>) -> Vec<u8> {
    let mut out = Vec::new();
    let far = Instant::now() + Duration::from_secs(3600);
    write(cache, &mut out, &header(stream_id), far).unwrap();
    out
}

fn read_at(bytes: &[u8], clock: &Clock, wall: SystemTime) -> Result<Loaded, Doubt> {
    read(
        bytes,
        bytes.len() as u64,
        EXPECT,
        clock.now(),
        wall,
        u64::MAX,
    )
}

fn responses(cache: &Cache) -> Vec<(String, Arc<CachedResponse>)> {
    let mut entries: Vec<_> = cache
        .store
        .iter()
        .filter_map(|(key, stored)| match stored {
            Stored::Response(entry) => Some((key.to_string(), entry)),
            Stored::Vary(_) => None,
        })
        .collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    entries
}

#[test]
fn a_round_trip_keeps_every_field_and_the_variants_index() {
    let before = filled_cache();
    before.clock().advance(Duration::from_secs(30));
    let bytes = written(&before, Some("1733000000000-3"));

    let after = Cache::new(1 << 20, Clock::manual());
    let loaded = read_at(&bytes, after.clock(), written_at()).unwrap();
    assert_eq!(loaded.header, header(Some("1733000000000-3")));
    assert_eq!((loaded.len(), loaded.expired), (4, 0));
    after.begin_restore();
    let outcome = after.restore(loaded);
    after.end_restore();
    assert_eq!(
        outcome,
        Restore {
            restored: 4,
            superseded: 0,
            stopped: 0
        }
    );

    let (old, new) = (responses(&before), responses(&after));
    assert_eq!(old.len(), 4);
    let (then, now) = (before.clock().now(), after.clock().now());
    for ((old_key, old), (new_key, new)) in old.iter().zip(&new) {
        assert_eq!(old_key, new_key);
        assert_eq!(old.status, new.status, "{old_key}");
        assert_eq!(old.headers.lines(), new.headers.lines(), "{old_key}");
        assert_eq!(old.body, new.body, "{old_key}");
        assert_eq!(old.body_hash, new.body_hash, "{old_key}");
        assert_eq!(old.last_modified, new.last_modified, "{old_key}");
        assert_eq!(old.etag_minted, new.etag_minted, "{old_key}");
        assert_eq!(old.validators(), new.validators(), "{old_key}");
        assert_eq!(old.vary, new.vary, "{old_key}");
        assert_eq!(old.freshness, new.freshness, "{old_key}");
        assert_eq!(old.retain_for, new.retain_for, "{old_key}");
        assert_eq!(
            old.age(then),
            new.age(now),
            "{old_key}: no time down, same age"
        );
        assert_eq!(old.ttl(then), new.ttl(now), "{old_key}");
        assert_eq!(old.staleness(then), new.staleness(now), "{old_key}");
    }
    let avatar = &new.iter().find(|(k, _)| k == "7").unwrap().1;
    assert!(avatar.etag_minted && avatar.last_modified.is_some());
    assert_eq!(avatar.age(now), 35, "5 on arrival, 30 resident");
    // The variants are found through their restored index, each by its own request.
    for encoding in ["gzip", "br"] {
        let mut request = HeaderMap::new();
        request.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(encoding));
        let found = after.peek("/assets/app.js", &request).expect("variant");
        assert_eq!(found.body, format!("bundle in {encoding}"));
    }
    assert_eq!(
        after.keyed_fields("/assets/app.js"),
        [header::ACCEPT_ENCODING]
    );
}

#[test]
fn the_time_down_counts_in_the_age_and_expired_entries_stay_out() {
    let before = filled_cache();
    before.clock().advance(Duration::from_secs(30));
    let bytes = written(&before, None);
    // Down for an hour: the redirect (60 s fresh, 100 s stale-if-error, then kept 1000 s to revalidate)
    // and the variants (600 s + 1000 s) are gone; the avatar is an hour older.
    let down = Duration::from_secs(3600);
    let after = Cache::new(1 << 20, Clock::manual());
    let loaded = read_at(&bytes, after.clock(), written_at() + down).unwrap();
    assert_eq!((loaded.len(), loaded.expired), (1, 3));
    after.begin_restore();
    after.restore(loaded);
    after.end_restore();
    let now = after.clock().now();
    let avatar = after.fresh("7", now).expect("the avatar is still fresh");
    assert_eq!(avatar.age(now), 5 + 30 + 3600);
    assert_eq!(avatar.ttl(now), Duration::from_secs(86_400 - 30 - 3600));
    // The store keeps it for what was left of its time, not for its whole time again.
    let kept = crate::cache::store::Stored::time_to_live(&Stored::Response(avatar));
    assert_eq!(kept, LIMITS.keep + Duration::from_secs(86_400 - 30 - 3600));
    after
        .clock()
        .advance(Duration::from_secs(86_400 - 30 - 3600));
    assert!(
        after.fresh("7", after.clock().now()).is_none(),
        "stale at its old deadline"
    );
}

#[test]
fn a_restored_entry_written_again_keeps_its_times() {
    let first = filled_cache();
    let bytes = written(&first, None);
    let second = Cache::new(1 << 20, Clock::manual());
    let down = Duration::from_secs(100);
    second.begin_restore();
    second.restore(read_at(&bytes, second.clock(), written_at() + down).unwrap());
    second.end_restore();
    // Written again right away (its clock says the same wall time), read after another 100 s down.
    let mut again = Vec::new();
    let mut second_header = header(None);
    second_header.written_at += down;
    write(&second, &mut again, &second_header, Instant::now() + down).unwrap();
    let third = Cache::new(1 << 20, Clock::manual());
    let loaded = read_at(&again, third.clock(), written_at() + down * 2).unwrap();
    third.begin_restore();
    third.restore(loaded);
    third.end_restore();
    let now = third.clock().now();
    let avatar = third.fresh("7", now).unwrap();
    assert_eq!(avatar.age(now), 5 + 200);
    let kept = crate::cache::store::Stored::time_to_live(&Stored::Response(avatar));
    assert_eq!(kept, LIMITS.keep + Duration::from_secs(86_400 - 200));
}

#[test]
fn every_flipped_bit_and_every_cut_is_a_doubt() {
    let bytes = written(&filled_cache(), Some("1-0"));
    let clock = Clock::manual();
    assert!(read_at(&bytes, &clock, written_at()).is_ok());
    for at in 0..bytes.len() {
        for bit in [0x01, 0x80] {
            let mut damaged = bytes.clone();
            damaged[at] ^= bit;
            assert!(
                read_at(&damaged, &clock, written_at()).is_err(),
                "bit {bit:#x} of byte {at} flipped went unnoticed"
            );
        }
    }
    for length in 0..bytes.len() {
        let cut = &bytes[..length];
        assert!(
            read_at(cut, &clock, written_at()).is_err(),
            "cut at {length}"
        );
    }
    let mut longer = bytes;
    longer.push(0);
    assert!(matches!(
        read_at(&longer, &clock, written_at()),
        Err(Doubt::Trailing)
    ));
}

#[test]
fn a_flipped_bit_in_a_body_is_a_checksum_mismatch() {
    let bytes = written(&filled_cache(), None);
    let at = bytes
        .windows(b"avatar of 7".len())
        .position(|w| w == b"avatar of 7")
        .expect("the body is written as it is");
    let mut damaged = bytes;
    damaged[at] ^= 0x04;
    assert!(matches!(
        read_at(&damaged, &Clock::manual(), written_at()),
        Err(Doubt::Checksum(_))
    ));
}

#[test]
fn another_magic_version_build_or_context_is_refused_by_name() {
    let bytes = written(&filled_cache(), None);
    let clock = Clock::manual();
    let mut magic = bytes.clone();
    magic[0] = b'X';
    assert!(matches!(
        read_at(&magic, &clock, written_at()),
        Err(Doubt::Magic)
    ));
    let mut version = bytes.clone();
    version[8..10].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    let doubt = read_at(&version, &clock, written_at()).err().unwrap();
    assert!(matches!(doubt, Doubt::Version { found } if found == FORMAT_VERSION + 1));
    assert!(doubt.to_string().contains("format version 2"), "{doubt}");
    for (other, expect) in [
        (Expect { build: 1, ..EXPECT }, "build"),
        (
            Expect {
                context: 1,
                ..EXPECT
            },
            "cache rules",
        ),
    ] {
        let doubt = read(
            &bytes[..],
            bytes.len() as u64,
            other,
            clock.now(),
            written_at(),
            u64::MAX,
        )
        .err()
        .unwrap();
        assert!(doubt.to_string().contains(expect), "{doubt}");
    }
    let early = written_at() - Duration::from_secs(5);
    assert!(matches!(
        read_at(&bytes, &clock, early),
        Err(Doubt::Future(ahead)) if ahead == Duration::from_secs(5)
    ));
}

#[test]
fn a_restore_keeps_out_of_what_changed_while_it_loaded() {
    let bytes = written(&filled_cache(), None);
    let cache = Cache::new(1 << 20, Clock::manual());
    let now = cache.clock().now();
    cache.begin_restore();
    // While the file loads: a live fill stores user 7's new avatar, and a purge removes the redirect.
    let new_avatar = parts(200, &[("content-type", b"image/png")]);
    let live = CachedResponse::new(
        &new_avatar,
        Bytes::from_static(b"new"),
        freshness(60, 0),
        &LIMITS,
        &HeaderMap::new(),
        now,
    );
    cache.insert("7", Arc::new(live));
    cache.purge("grav");
    let outcome = cache.restore(read_at(&bytes, cache.clock(), written_at()).unwrap());
    cache.end_restore();
    assert_eq!((outcome.restored, outcome.superseded), (2, 2));
    assert_eq!(
        cache.fresh("7", now).unwrap().body,
        "new",
        "the live fill wins"
    );
    assert!(cache.fresh("grav", now).is_none(), "the purge holds");
}

#[test]
fn a_purge_of_a_prefix_while_loading_stops_the_restore() {
    let bytes = written(&filled_cache(), None);
    let cache = Cache::new(1 << 20, Clock::manual());
    cache.begin_restore();
    cache.invalidate(&crate::cache::Invalidation::Prefix("/assets/".to_owned()));
    let outcome = cache.restore(read_at(&bytes, cache.clock(), written_at()).unwrap());
    cache.end_restore();
    assert_eq!(outcome.restored, 0, "{outcome:?}");
    assert_eq!(cache.usage().0, 0);
}

#[test]
fn without_a_restore_begun_nothing_is_restored() {
    let bytes = written(&filled_cache(), None);
    let cache = Cache::new(1 << 20, Clock::manual());
    let outcome = cache.restore(read_at(&bytes, cache.clock(), written_at()).unwrap());
    assert_eq!(outcome.restored, 0);
}

#[test]
fn what_passes_the_capacity_is_checked_and_left_out() {
    let bytes = written(&filled_cache(), None);
    let now = Clock::manual().now();
    let all = read(
        &bytes[..],
        bytes.len() as u64,
        EXPECT,
        now,
        written_at(),
        u64::MAX,
    )
    .unwrap();
    let weights: Vec<u64> = all
        .entries
        .iter()
        .map(|(key, entry)| key.len() as u64 + Stored::Response(Arc::clone(entry)).weight())
        .collect();
    let room = weights[0] + weights[1];
    let some = read(
        &bytes[..],
        bytes.len() as u64,
        EXPECT,
        now,
        written_at(),
        room,
    )
    .unwrap();
    assert_eq!((some.len(), some.over_capacity, some.expired), (2, 2, 0));
    let mut damaged = bytes;
    let last = damaged.len() - 20;
    damaged[last] ^= 1;
    assert!(
        read(
            &damaged[..],
            damaged.len() as u64,
            EXPECT,
            now,
            written_at(),
            room
        )
        .is_err(),
        "what is left out is checked all the same"
    );
}

#[test]
fn a_write_past_its_deadline_gives_up() {
    let cache = filled_cache();
    let past = Instant::now().checked_sub(Duration::from_secs(1)).unwrap();
    let err = write(&cache, Vec::new(), &header(None), past).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
}

#[test]
fn a_purge_while_writing_gives_the_snapshot_up() {
    let cache = filled_cache();
    let far = Instant::now() + Duration::from_secs(3600);
    let mut purging = PurgeOnFirstWrite(Some(&cache), Vec::new());
    let err = write(&cache, &mut purging, &header(None), far).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::Interrupted, "{err}");
}

/// An output that purges one entry of the cache as the first bytes are written.
struct PurgeOnFirstWrite<'a>(Option<&'a Cache>, Vec<u8>);

impl Write for PurgeOnFirstWrite<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(cache) = self.0.take() {
            cache.purge("grav");
        }
        self.1.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn the_build_hash_names_the_schema() {
    assert_ne!(build_hash(), 0);
    assert_eq!(build_hash(), build_hash());
}
