//! Warm-restart numbers: fills a cache with avatars, writes its snapshot as the drain does, then reads it
//! back as a start does, and prints the time each step took and the file's size against the payload.
//!
//! ```sh
//! cargo run --release --example snapshot [-- AVATARS [BYTES_EACH [DIRECTORY]]]
//! ```
//!
//! Defaults: 100 000 avatars of 6 KiB (Cloudreve's avatars are 200x200 PNG or JPEG thumbnails, a few KiB),
//! each with the five header fields Cloudreve sends, in the system's temporary directory. The bodies are
//! pseudo-random (the format does not compress, so their content does not matter beyond defeating any
//! filesystem that would). The page cache is warm when the file is read back (the same machine, right
//! after writing), as it usually is after a restart on the same host. Results: BENCHMARKS.md, "Warm restart".

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use cloudreve_edge::Config;
use cloudreve_edge::cache::policy::Freshness;
use cloudreve_edge::cache::snapshot::{self, Expect, Header};
use cloudreve_edge::cache::{Cache, CachedResponse, Clock};
use cloudreve_edge::restart;
use http::{HeaderMap, Response};

fn main() {
    let mut args = std::env::args().skip(1);
    let count: usize = args.next().map_or(100_000, |a| a.parse().expect("AVATARS"));
    let size: usize = args
        .next()
        .map_or(6 * 1024, |a| a.parse().expect("BYTES_EACH"));
    let directory = args.next().map_or_else(std::env::temp_dir, Into::into);
    let path = directory.join(format!("edge-snapshot-example-{}", std::process::id()));
    let config = Config::default();
    let limits = config
        .cache
        .avatar()
        .expect("the default avatar rule")
        .limits;
    let expect = Expect {
        build: snapshot::build_hash(),
        context: restart::context(&config.cache),
    };

    let cache = Cache::new(u64::MAX / 2, Clock::system());
    let started = Instant::now();
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    for id in 0..count {
        let (parts, ()) = Response::builder()
            .header("content-type", "image/png")
            .header("cache-control", "public, max-age=86400")
            .header("last-modified", "Sun, 29 Nov 2026 12:00:00 GMT")
            .header("date", httpdate::fmt_http_date(SystemTime::now()))
            .header("x-content-type-options", "nosniff")
            .body(())
            .unwrap()
            .into_parts();
        let body = Bytes::from(noise(&mut seed, size));
        let freshness = Freshness {
            fresh_for: Duration::from_secs(86_400),
            initial_age: Duration::ZERO,
            stale_while_revalidate: limits.stale_while_revalidate,
            stale_if_error: limits.stale_if_error,
            revalidatable: true,
        };
        let now = cache.clock().now();
        let entry = CachedResponse::new(&parts, body, freshness, &limits, &HeaderMap::new(), now);
        cache.insert(&id.to_string(), Arc::new(entry));
    }
    let (entries, weight) = cache.usage();
    println!(
        "filled {entries} avatars of {size} B in {:.2?} ({weight} B weighed)",
        started.elapsed()
    );

    let header = Header {
        build: expect.build,
        context: expect.context,
        written_at: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap(),
        stream_id: None,
    };
    let started = Instant::now();
    let deadline = started + Duration::from_secs(600);
    let written = snapshot::save(&cache, &path, &header, deadline).expect("written");
    let write_time = started.elapsed();
    drop(cache);
    let per_entry = (written.file_bytes - written.body_bytes) as f64 / written.entries as f64;
    println!(
        "written: {} entries, payload {} B, file {} B ({:.4}x the payload, {per_entry:.0} B per entry \
         besides its body) in {write_time:.2?} (fsync and rename included)",
        written.entries,
        written.body_bytes,
        written.file_bytes,
        written.file_bytes as f64 / written.body_bytes as f64,
    );

    let cache = Cache::new(u64::MAX / 2, Clock::system());
    cache.begin_restore();
    let started = Instant::now();
    let loaded = snapshot::load(&path, expect, &cache)
        .expect("no doubt")
        .expect("the file is there");
    let read_time = started.elapsed();
    let outcome = cache.restore(loaded);
    let total = started.elapsed();
    cache.end_restore();
    println!(
        "read and checked in {read_time:.2?}, stored in {:.2?}: {} restored in {total:.2?} ({:.0} entries/s)",
        total - read_time,
        outcome.restored,
        outcome.restored as f64 / total.as_secs_f64(),
    );
    assert_eq!(outcome.restored, count as u64);
    assert!(!path.exists(), "a snapshot is read once");
}

/// `size` pseudo-random bytes (xorshift64), a PNG signature first.
fn noise(seed: &mut u64, size: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(size);
    bytes.extend_from_slice(b"\x89PNG\r\n\x1a\n");
    while bytes.len() < size {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        bytes.extend_from_slice(&seed.to_le_bytes());
    }
    bytes.truncate(size);
    bytes
}
