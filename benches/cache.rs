//! In-process benchmarks of the avatar cache: admission policy, key derivation, the hit path and the store.
//! No network; the end-to-end numbers are in `benches/proxy.rs`.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use cloudreve_edge::Config;
use cloudreve_edge::access_log::{AccessRecord, LoggedBody};
use cloudreve_edge::cache::policy::{self, AvatarKey, Exchange};
use cloudreve_edge::cache::serve::Conditions;
use cloudreve_edge::cache::status::Outcome;
use cloudreve_edge::cache::store::Store;
use cloudreve_edge::cache::{Cache, CacheStatus, CachedResponse, Clock, Lookup, Miss, Stored};
use cloudreve_edge::config::{RuleConfig, RuleKind};
use cloudreve_edge::proxy::hit::Hit;
use cloudreve_edge::route::{self, NoCache, Route};
use criterion::{Criterion, criterion_group, criterion_main};
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Uri, Version, response};

const AVATAR_LEN: usize = 4096;
const AVATAR_TARGET: &str = "/api/v4/user/avatar/lpua?key=3";
const CLIENT: &str = "127.0.0.1:40000";

/// What Cloudreve sends for an uploaded avatar (`upstream-contract.md`), as `upstream::prepare_response` leaves
/// it. Values built from `&str` are owned copies; in the proxy they are slices of hyper's read buffer.
fn cloudreve_png_head(now: SystemTime) -> response::Parts {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CACHE_CONTROL, "public, max-age=86400")
        .header(header::CONTENT_LENGTH, AVATAR_LEN)
        .header(header::CONTENT_TYPE, "image/png")
        .header(header::DATE, httpdate::fmt_http_date(now))
        .header(header::LAST_MODIFIED, "Sun, 29 Nov 2026 12:00:00 GMT")
        .header(header::VIA, "1.1 cloudreve-edge")
        .body(())
        .unwrap()
        .into_parts()
        .0
}

fn exchange(now: SystemTime) -> Exchange {
    Exchange {
        request_time: now,
        response_time: now,
        authorized: false,
    }
}

/// A cache with the default `[cache]` section holding one fresh 4 KiB avatar under `lpua`.
fn cache_with_avatar() -> (Cache, Arc<CachedResponse>) {
    let config = Config::default().cache;
    let cache = Cache::new(config.capacity, Clock::system());
    let now = SystemTime::now();
    let parts = cloudreve_png_head(now);
    let limits = avatar_limits();
    let freshness = policy::admit(RuleKind::Avatar, &parts, exchange(now), &limits).unwrap();
    let body = Bytes::from(vec![0x89; AVATAR_LEN]);
    let request = http::HeaderMap::new();
    let entry = Arc::new(CachedResponse::new(
        &parts,
        body,
        freshness,
        &limits,
        &request,
        cache.clock().now(),
    ));
    let key = AvatarKey::from_path_segment("lpua").unwrap();
    let Lookup::Miss(Miss::Fill { fill, .. }) = cache.lookup(key.as_str(), &request) else {
        panic!("an empty cache must hand out the fill")
    };
    cache.complete(fill, key.as_str(), Arc::clone(&entry));
    (cache, entry)
}

fn avatar_limits() -> policy::Limits {
    Config::default()
        .cache
        .avatar()
        .expect("the default rules include avatars")
        .limits
}

/// What `Proxy::handle` does for a `GET` hit between hyper handing over the request and taking the response:
/// the record, the route, the lookup, and the answer rendered by the proxy's own [`Hit`], as
/// `Proxy::serve_stored` does.
fn serve_hit(
    cache: &Cache,
    rules: &[RuleConfig],
    target: &Uri,
    client: SocketAddr,
) -> Response<LoggedBody> {
    let mut record = AccessRecord::start(&Method::GET, target, Version::HTTP_11, client);
    let uri = target.clone();
    let headers = http::HeaderMap::new();
    let Route::Avatar(key) = route::classify(&Method::GET, &uri, &headers, rules) else {
        panic!("the target must be a cacheable avatar")
    };
    let Lookup::Fresh(entry) = cache.lookup(key.as_str(), &headers) else {
        panic!("the avatar must be stored and fresh")
    };
    let conditions = Conditions::of(&Method::GET, &http::HeaderMap::new());
    let hit = Hit::new(&entry, cache.clock().now(), CacheStatus::new(Outcome::Hit));
    record.cache = Some(hit.status());
    record.labelled = true;
    let (parts, body) = hit.response(&conditions).into_parts();
    let body = record.finish(parts.status, body, false);
    Response::from_parts(parts, body)
}

fn policy_admit_cloudreve_png(c: &mut Criterion) {
    let now = SystemTime::now();
    let parts = cloudreve_png_head(now);
    let limits = avatar_limits();
    c.bench_function("policy_admit_cloudreve_png", |b| {
        b.iter(|| {
            policy::admit(RuleKind::Avatar, black_box(&parts), exchange(now), &limits).unwrap()
        });
    });
}

fn key_derivation(c: &mut Criterion) {
    let target: Uri = AVATAR_TARGET.parse().unwrap();
    let queries = [
        Some("key=3"),
        Some("nocache=1&key=3"),
        Some("key=12&nocache=false"),
        Some("a=%20b&c=d+e&nocache=t"),
    ];
    let rules = Config::default().cache.rules;
    let headers = http::HeaderMap::new();
    let mut group = c.benchmark_group("key_derivation");
    group.bench_function("classify_avatar_key3", |b| {
        b.iter(|| route::classify(&Method::GET, black_box(&target), &headers, &rules));
    });
    group.bench_function("nocache_parse_4_queries", |b| {
        b.iter(|| queries.map(|q| NoCache::parse(black_box(q))));
    });
    group.finish();
}

fn hit_4k_avatar_lookup_and_response(c: &mut Criterion) {
    let (cache, entry) = cache_with_avatar();
    let target: Uri = AVATAR_TARGET.parse().unwrap();
    let client: SocketAddr = CLIENT.parse().unwrap();
    let rules = Config::default().cache.rules;
    c.bench_function("hit_4k_avatar_lookup_and_response", |b| {
        b.iter(|| serve_hit(&cache, &rules, black_box(&target), client));
    });
    // The same path in pieces, to see where the time goes.
    let key = AvatarKey::from_path_segment("lpua").unwrap();
    let mut group = c.benchmark_group("hit_4k_avatar_steps");
    group.bench_function("lookup", |b| {
        let headers = http::HeaderMap::new();
        b.iter(|| match cache.lookup(black_box(key.as_str()), &headers) {
            Lookup::Fresh(entry) => entry,
            _ => panic!("the avatar must be stored and fresh"),
        });
    });
    group.bench_function("headers_to_map", |b| {
        b.iter(|| black_box(&entry.headers).to_map(3));
    });
    group.bench_function("headers_to_map_and_3_inserts", |b| {
        b.iter(|| {
            let mut headers = black_box(&entry.headers).to_map(3);
            headers.insert(header::AGE, HeaderValue::from(black_box(12_u64)));
            headers.insert(
                HeaderName::from_static("cache-status"),
                HeaderValue::from_static("cloudreve-edge; hit; ttl=86388"),
            );
            headers.insert(
                HeaderName::from_static("x-cache"),
                HeaderValue::from_static("HIT"),
            );
            headers
        });
    });
    let status = CacheStatus {
        ttl: Some(86388),
        ..CacheStatus::new(Outcome::Hit)
    };
    group.bench_function("cache_status_header_value", |b| {
        b.iter(|| black_box(status).header_value());
    });
    group.bench_function("access_record_start", |b| {
        b.iter(|| AccessRecord::start(&Method::GET, black_box(&target), Version::HTTP_11, client));
    });
    group.finish();
}

fn store_insert_get(c: &mut Criterion) {
    let (_cache, entry) = cache_with_avatar();
    let store: Store<Stored> = Store::new(Config::default().cache.capacity);
    let entry = Stored::Response(entry);
    // 1024 keys of 4 KiB entries (about 4.7 MB) stay well inside the default 256 MiB: no eviction.
    let keys: Vec<String> = (0..1024).map(|i| format!("u{i}")).collect();
    for key in &keys {
        store.insert(key, entry.clone());
    }
    let mut group = c.benchmark_group("store_insert_get");
    let mut next = keys.iter().cycle();
    group.bench_function("insert_replace_4k", |b| {
        b.iter(|| store.insert(next.next().unwrap(), entry.clone()));
    });
    group.bench_function("get_4k", |b| {
        b.iter(|| store.get(next.next().unwrap()).unwrap());
    });
    group.bench_function("get_absent", |b| {
        b.iter(|| store.get(black_box("absent")));
    });
    group.finish();
}

criterion_group!(
    benches,
    policy_admit_cloudreve_png,
    key_derivation,
    hit_4k_avatar_lookup_and_response,
    store_insert_get
);
criterion_main!(benches);

/*
Run: `cargo bench --bench cache` (criterion defaults: 3 s warm-up, 5 s measurement, 100 samples; about 3 min
with the thin-LTO build).
Machine: `nproc` = 2; `lscpu`: x86_64, AMD EPYC (family 26, model 2), 2 cores, 1 thread per core, KVM guest,
L2 2 MiB, L3 32 MiB; rustc 1.95.0. Shared and noisy.
Date: 2026-11-30, commit f0059ab. Median time per iteration of that run:

    policy_admit_cloudreve_png                       193.1 ns
    key_derivation/classify_avatar_key3               31.8 ns
    key_derivation/nocache_parse_4_queries           156.3 ns   (4 queries, so about 40 ns each)
    hit_4k_avatar_lookup_and_response                671.4 ns   (record, classify, lookup, response, filter)
    hit_4k_avatar_steps/lookup                       149.6 ns
    hit_4k_avatar_steps/headers_to_map               214.2 ns   (the stored fields as a HeaderMap)
    hit_4k_avatar_steps/headers_to_map_and_3_inserts 275.9 ns   (sized for the 3 fields a hit adds)
    hit_4k_avatar_steps/cache_status_header_value     31.3 ns
    hit_4k_avatar_steps/access_record_start           55.4 ns
    store_insert_get/insert_replace_4k               776.2 ns
    store_insert_get/get_4k                          137.5 ns
    store_insert_get/get_absent                       63.2 ns

The header map is the largest step of the in-process hit, the moka lookup next; all of it is about 1 % of the
end-to-end hit in `benches/proxy.rs` (59 us over loopback). A run the day before, under other load, gave
151.0, 24.9, 159.0, 608.6 and 148.8 ns for the first five.
*/
