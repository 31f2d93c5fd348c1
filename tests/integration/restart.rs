//! Warm restart, end to end with the real binary: a proxy filled through a fake Cloudreve is stopped with
//! SIGTERM (it writes `cache.snapshot_path` after its drain), a second one starts on the same file and
//! answers from it, which the fake sees as no request. A damaged file is refused with one log line naming
//! the reason, and that proxy starts cold.
//!
//! The second proxy's readiness is its log line (`cache snapshot restored` or `discarded`), never a sleep.
//! Two tests do wait with the proxy stopped: that time down is what they measure, in the restored `Age`
//! and in the entries that expire meanwhile.

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::binary::{Edge, Scratch, field};
use crate::support::*;
use cloudreve_edge::Proxy;
use cloudreve_edge::cache::Clock;
use cloudreve_edge::restart::{self, Restored};
use http::Response;

/// How many avatars a test fills.
const AVATARS: usize = 20;

fn avatar(n: usize) -> String {
    format!("/api/v4/user/avatar/img{n}")
}

/// A fake Cloudreve whose avatars say they are `age` seconds old already, fresh for `max_age` from their
/// origin; the ids from `short_from` on get `short_max_age` instead.
async fn upstream(max_age: u64, short_from: usize, short_max_age: u64) -> FakeCloudreve {
    FakeCloudreve::start(move |request| async move {
        let id = request.uri().path().rsplit('/').next().unwrap().to_owned();
        let n: usize = id.trim_start_matches("img").parse().unwrap_or(0);
        let max_age = if n >= short_from {
            short_max_age
        } else {
            max_age
        };
        Response::builder()
            .header("content-type", "image/png")
            .header("cache-control", format!("public, max-age={max_age}"))
            .header("age", "30")
            .body(full(avatar_bytes(&id)))
            .unwrap()
    })
    .await
}

/// A scratch directory with a `proxy.toml` that snapshots to `cache.snapshot` in it; `rules`, when given,
/// replaces the default cache rules.
struct Setup {
    scratch: Scratch,
    config: String,
    snapshot: PathBuf,
}

impl Setup {
    fn new(name: &str, rules: &str) -> Self {
        let scratch = Scratch::new(name);
        let snapshot = scratch.path().join("cache.snapshot");
        let config = scratch.config(&format!(
            "[cache]\nsnapshot_path = {:?}\n{rules}\n[log]\naccess_log = false\n",
            snapshot.display().to_string()
        ));
        Self {
            scratch,
            config,
            snapshot,
        }
    }

    /// The binary on this setup's file, on `127.0.0.1:0`, in front of `upstream`: it, its base URL and its
    /// admin listener's.
    async fn start_with_admin(&self, upstream: &FakeCloudreve) -> (Edge, String, String) {
        let (edge, addr, line) =
            Edge::serve(&self.config, &upstream.url(), self.scratch.path()).await;
        let admin = format!("http://{}", field(&line, "admin"));
        (edge, format!("http://{addr}"), admin)
    }

    /// [`Setup::start_with_admin`] without the admin listener.
    async fn start(&self, upstream: &FakeCloudreve) -> (Edge, String) {
        let (edge, base, _) = self.start_with_admin(upstream).await;
        (edge, base)
    }
}

/// Stops `edge` with SIGTERM; it exits 0 after writing its snapshot. Returns the `snapshot written` line.
async fn stop(mut edge: Edge) -> String {
    edge.signal("TERM");
    let status = edge.exit_status().await;
    assert_eq!(status.code(), Some(0), "{status}");
    let log = edge.whole_log().await;
    log.iter()
        .find(|l| l.contains("cache snapshot written"))
        .unwrap_or_else(|| panic!("no snapshot written: {log:#?}"))
        .clone()
}

/// Fills avatars `0..count` through a fresh proxy and stops it: the snapshot is on disk. Returns the `Age`
/// each had as a hit just before the stop.
async fn filled_and_stopped(setup: &Setup, upstream: &FakeCloudreve, count: usize) -> Vec<u64> {
    let (edge, base) = setup.start(upstream).await;
    for n in 0..count {
        assert_eq!(get(&format!("{base}{}", avatar(n))).await.x_cache(), "MISS");
    }
    let mut ages = Vec::new();
    for n in 0..count {
        let hit = get(&format!("{base}{}", avatar(n))).await;
        assert_eq!(hit.x_cache(), "HIT");
        ages.push(hit.header("age").unwrap().parse().unwrap());
    }
    assert_eq!(upstream.count(), count);
    let written = stop(edge).await;
    assert_eq!(field(&written, "entries"), count.to_string(), "{written}");
    let mode = std::fs::metadata(&setup.snapshot)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "readable by the proxy's user only");
    ages
}

#[tokio::test]
async fn a_restart_keeps_the_hits_and_their_age_grows_by_the_time_down() {
    let upstream = upstream(86_400, usize::MAX, 0).await;
    let setup = Setup::new("keeps-hits", "");
    let ages = filled_and_stopped(&setup, &upstream, AVATARS).await;
    let down = Instant::now();
    // The time down, which the restored Age must show: not a wait for anything to be ready.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let (mut edge, base, admin) = setup.start_with_admin(&upstream).await;
    let restored = edge
        .logged("the restore", |l| l.contains("cache snapshot restored"))
        .await;
    assert_eq!(
        field(&restored, "restored"),
        AVATARS.to_string(),
        "{restored}"
    );
    let metrics = get(&format!("{admin}/metrics")).await;
    let metrics = String::from_utf8_lossy(&metrics.body);
    let restored_entries = format!("cloudreve_edge_snapshot_restored_entries {AVATARS}");
    assert!(metrics.lines().any(|l| l == restored_entries), "{metrics}");
    assert_eq!(field(&restored, "expired"), "0", "{restored}");
    assert!(!setup.snapshot.exists(), "a snapshot is read once");
    for (n, age_before) in ages.iter().enumerate() {
        let hit = get(&format!("{base}{}", avatar(n))).await;
        assert_eq!(hit.x_cache(), "HIT", "avatar {n}: {}", hit.cache_status());
        assert_eq!(hit.body, avatar_bytes(&format!("img{n}")));
        let age: u64 = hit.header("age").unwrap().parse().unwrap();
        let down_secs = down.elapsed().as_secs();
        assert!(
            age >= age_before + down_secs,
            "avatar {n}: Age {age}, was {age_before} before {down_secs} s down"
        );
    }
    assert_eq!(
        upstream.count(),
        AVATARS,
        "no request for a restored avatar"
    );
}

#[tokio::test]
async fn entries_that_expired_while_the_proxy_was_down_are_not_restored() {
    // Avatars 10 and up are fresh for 2 s past their Age, with no stale window nor validator to keep them.
    let upstream = upstream(86_400, 10, 32).await;
    let rules = "[[cache.rules]]\nkind = \"avatar\"\nstale_while_revalidate = \"0s\"\n\
                 stale_if_error = \"0s\"\n";
    let setup = Setup::new("expired", rules);
    filled_and_stopped(&setup, &upstream, AVATARS).await;
    // Down for longer than the short avatars had left: the time they expire in.
    tokio::time::sleep(Duration::from_millis(2100)).await;

    let (mut edge, base) = setup.start(&upstream).await;
    let restored = edge
        .logged("the restore", |l| l.contains("cache snapshot restored"))
        .await;
    assert_eq!(field(&restored, "restored"), "10", "{restored}");
    assert_eq!(field(&restored, "expired"), "10", "{restored}");
    for n in 0..AVATARS {
        let reply = get(&format!("{base}{}", avatar(n))).await;
        let expected = if n < 10 { "HIT" } else { "MISS" };
        assert_eq!(reply.x_cache(), expected, "avatar {n}");
    }
    assert_eq!(
        upstream.count(),
        AVATARS + 10,
        "the expired ten fetched again"
    );
}

/// Fills a few avatars, stops, damages the snapshot with `damage`, and starts again: the file must be
/// refused with a warning whose reason contains `reason`, and every avatar fetched anew.
async fn assert_refused(name: &str, damage: impl FnOnce(&mut Vec<u8>), reason: &str) {
    let upstream = upstream(86_400, usize::MAX, 0).await;
    let setup = Setup::new(name, "");
    filled_and_stopped(&setup, &upstream, 3).await;
    let mut bytes = std::fs::read(&setup.snapshot).unwrap();
    damage(&mut bytes);
    std::fs::write(&setup.snapshot, &bytes).unwrap();

    let (mut edge, base) = setup.start(&upstream).await;
    let discarded = edge
        .logged("the refusal", |l| {
            l.contains("cache snapshot discarded") || l.contains("cache snapshot restored")
        })
        .await;
    assert!(
        discarded.contains("WARN") && discarded.contains("cache snapshot discarded; starting cold"),
        "{discarded}"
    );
    assert!(discarded.contains(reason), "reason {reason:?}: {discarded}");
    for n in 0..3 {
        let reply = get(&format!("{base}{}", avatar(n))).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.x_cache(), "MISS", "avatar {n} is fetched again");
    }
    assert_eq!(
        upstream.count(),
        6,
        "a cold start: every avatar fetched twice"
    );
}

#[tokio::test]
async fn a_snapshot_with_a_flipped_byte_in_a_record_is_refused_and_the_proxy_starts_cold() {
    let flip = |bytes: &mut Vec<u8>| {
        let body = avatar_bytes("img1");
        let at = bytes
            .windows(body.len())
            .position(|w| w == &body[..])
            .expect("avatar 1's body is in the file");
        bytes[at + body.len() - 1] ^= 0x01;
    };
    assert_refused("flipped", flip, "checksum mismatch in record").await;
}

#[tokio::test]
async fn a_truncated_snapshot_is_refused_and_the_proxy_starts_cold() {
    let cut = |bytes: &mut Vec<u8>| bytes.truncate(bytes.len() - 30);
    assert_refused("truncated", cut, "truncated in record").await;
}

#[tokio::test]
async fn a_snapshot_of_another_format_version_is_refused_and_the_proxy_starts_cold() {
    let version = cloudreve_edge::cache::snapshot::FORMAT_VERSION + 1;
    let bump = move |bytes: &mut Vec<u8>| bytes[8..10].copy_from_slice(&version.to_le_bytes());
    assert_refused("version", bump, &format!("format version {version}")).await;
}

#[tokio::test]
async fn a_file_that_is_no_snapshot_is_refused_and_the_proxy_starts_cold() {
    let other = |bytes: &mut Vec<u8>| bytes[..8].copy_from_slice(b"GIF89a\0\0");
    assert_refused("magic", other, "wrong magic bytes").await;
}

#[tokio::test]
async fn a_stop_right_after_a_start_waits_for_the_restore_and_writes_its_entries() {
    const FILLED: usize = 300;
    let upstream = upstream(86_400, usize::MAX, 0).await;
    let scratch = Scratch::new("stop-while-loading");
    let path = scratch.path().join("cache.snapshot");
    let mut config = test_config(&upstream.url());
    config.cache.snapshot_path = Some(path.clone());
    let first = TestProxy::start_with(config.clone()).await;
    let nothing = restart::restore_in_background(&first.proxy);
    for n in 0..FILLED {
        assert_eq!(get(&first.url(&avatar(n))).await.x_cache(), "MISS");
    }
    let proxy = Arc::clone(&first.proxy);
    first.shutdown().await.unwrap();
    restart::save(&proxy, &nothing.finished, None).await;
    assert!(path.exists());

    // Stopped as soon as it started: the snapshot it writes must hold what it was still loading.
    let second = Proxy::with_clock(&config, Clock::manual());
    let loading = restart::restore_in_background(&second);
    restart::save(&second, &loading.finished, None).await;

    let third = Proxy::with_clock(&config, Clock::manual());
    let restored = tokio::time::timeout(PATIENCE, restart::restore_in_background(&third).outcome)
        .await
        .expect("the restore ends")
        .expect("the restore thread ran");
    let Restored::Loaded { restored, .. } = restored else {
        panic!("{restored:?}");
    };
    assert_eq!(restored, FILLED as u64);
}
