//! End-to-end benchmarks over loopback: a keep-alive hyper client, the real proxy (`server::run`) and a minimal
//! Cloudreve look-alike, all on `127.0.0.1:0` in one tokio multi-thread runtime.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use cloudreve_edge::route::AVATAR_PREFIX;
use cloudreve_edge::{Config, Proxy, server};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::header::{self, HeaderValue};
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;

/// Every request fails instead of hanging past this.
const PATIENCE: Duration = Duration::from_secs(10);
/// Small, so the miss bench (a new 4 KiB entry per iteration) stays bounded: past about 3,500 entries it
/// measures a full cache, where moka evicts or rejects on every insert.
const CACHE_CAPACITY: u64 = 16 << 20;
const AVATAR: &[u8] = &[0x89; 4096];
const JSON: &[u8] = br#"{"code":0,"data":"pong","msg":""}"#;

/// The upstream: avatars are a cacheable 4 KiB PNG, anything else a JSON 200.
fn cloudreve(request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let response = Response::builder();
    let response = if request.uri().path().starts_with(AVATAR_PREFIX) {
        response
            .header(header::CONTENT_TYPE, "image/png")
            .header(header::CACHE_CONTROL, "public, max-age=86400")
            .header(header::LAST_MODIFIED, "Sun, 29 Nov 2026 12:00:00 GMT")
            .body(Full::new(Bytes::from_static(AVATAR)))
    } else {
        response
            .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
            .body(Full::new(Bytes::from_static(JSON)))
    };
    response.unwrap()
}

/// Serves [`cloudreve`] on `127.0.0.1:0`, counting requests.
async fn start_origin(requests: Arc<AtomicU64>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let requests = Arc::clone(&requests);
            let service = service_fn(move |request| {
                requests.fetch_add(1, Ordering::Relaxed);
                std::future::ready(Ok::<_, Infallible>(cloudreve(&request)))
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::spawn(connection);
        }
    });
    addr
}

/// The real proxy in front of `origin`, on `127.0.0.1:0`, access log off. It runs until the runtime is dropped.
async fn start_proxy(origin: SocketAddr) -> SocketAddr {
    let mut config = Config::default();
    config.set_listen("127.0.0.1:0").unwrap();
    config.set_upstream(&format!("http://{origin}")).unwrap();
    config.cache.capacity = CACHE_CAPACITY;
    config.log.access_log = false;
    let listener = TcpListener::bind(config.server.listen).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let proxy = Proxy::new(&config);
    tokio::spawn(async move {
        server::run(listener, proxy, &config.server, std::future::pending()).await
    });
    addr
}

struct Fixture {
    rt: Runtime,
    client: Client<HttpConnector, Empty<Bytes>>,
    proxy: SocketAddr,
    origin: SocketAddr,
    origin_requests: Arc<AtomicU64>,
}

/// What the benches check of a response.
struct Reply {
    x_cache: Option<HeaderValue>,
    body_len: usize,
}

impl Fixture {
    fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let origin_requests = Arc::new(AtomicU64::new(0));
        let (origin, proxy) = rt.block_on(async {
            let origin = start_origin(Arc::clone(&origin_requests)).await;
            (origin, start_proxy(origin).await)
        });
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = {
            let _runtime = rt.enter();
            Client::builder(TokioExecutor::new()).build(connector)
        };
        Self {
            rt,
            client,
            proxy,
            origin,
            origin_requests,
        }
    }

    fn uri(addr: SocketAddr, path: &str) -> Uri {
        format!("http://{addr}{path}").parse().unwrap()
    }

    /// `GET uri` on the shared keep-alive client, body read whole; a non-200 or a hang panics.
    async fn get(&self, uri: Uri) -> Reply {
        fetch(self.client.clone(), uri).await
    }

    fn origin_requests(&self) -> u64 {
        self.origin_requests.load(Ordering::Relaxed)
    }
}

/// `GET uri` on `client`, body read whole; a non-200 or a hang panics.
async fn fetch(client: Client<HttpConnector, Empty<Bytes>>, uri: Uri) -> Reply {
    let request = Request::get(uri).body(Empty::new()).unwrap();
    tokio::time::timeout(PATIENCE, async {
        let response = client.request(request).await.expect("request failed");
        assert_eq!(response.status(), 200);
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("body failed").to_bytes();
        Reply {
            x_cache: parts.headers.get("x-cache").cloned(),
            body_len: body.len(),
        }
    })
    .await
    .expect("request timed out")
}

fn e2e(c: &mut Criterion) {
    let fx = Fixture::start();
    let fx = &fx;

    let hit = Fixture::uri(fx.proxy, "/api/v4/user/avatar/lpua?key=3");
    let first = fx.rt.block_on(fx.get(hit.clone()));
    let warm = fx.rt.block_on(fx.get(hit.clone()));
    assert_eq!(first.x_cache.as_ref().unwrap(), "MISS");
    assert_eq!(warm.x_cache.as_ref().unwrap(), "HIT");
    assert_eq!(warm.body_len, AVATAR.len());
    let before = fx.origin_requests();
    c.bench_function("hit_4k_avatar_e2e", |b| {
        b.to_async(&fx.rt).iter(|| fx.get(hit.clone()));
    });
    assert_eq!(fx.origin_requests(), before, "every hit stays in the proxy");

    // No query: the express lane answers it (the query above keeps that one on the full path).
    let express = Fixture::uri(fx.proxy, "/api/v4/user/avatar/lpub");
    assert_eq!(
        fx.rt.block_on(fx.get(express.clone())).x_cache.unwrap(),
        "MISS"
    );
    let before = fx.origin_requests();
    c.bench_function("hit_4k_avatar_express_e2e", |b| {
        b.to_async(&fx.rt).iter(|| fx.get(express.clone()));
    });
    assert_eq!(fx.origin_requests(), before, "every hit stays in the proxy");

    let mut ids = 0_u64;
    let before = fx.origin_requests();
    c.bench_function("miss_4k_avatar_e2e", |b| {
        b.to_async(&fx.rt).iter_batched(
            || {
                ids += 1;
                Fixture::uri(fx.proxy, &format!("/api/v4/user/avatar/m{ids}"))
            },
            |uri| fx.get(uri),
            BatchSize::SmallInput,
        );
    });
    assert_eq!(fx.origin_requests() - before, ids, "one fetch per new id");

    coalesced_miss(c, fx, &mut ids);
    pass_json(c, fx, "pass_json_e2e", fx.proxy);
    pass_json(c, fx, "origin_direct_json", fx.origin);
}

/// 64 clients ask for the same missing avatar at once: one fetch, 63 waiters served from its fill. One
/// iteration is the whole group, from the first request sent to the last body read.
fn coalesced_miss(c: &mut Criterion, fx: &Fixture, ids: &mut u64) {
    const WAITERS: usize = 64;
    let before = fx.origin_requests();
    let mut groups = 0_u64;
    c.bench_function("miss_coalesced_64_waiters", |b| {
        b.to_async(&fx.rt).iter_batched(
            || {
                *ids += 1;
                groups += 1;
                Fixture::uri(fx.proxy, &format!("/api/v4/user/avatar/c{ids}"))
            },
            |uri| async move {
                // Spawned, so all 64 are in flight together.
                let mut set = tokio::task::JoinSet::new();
                for _ in 0..WAITERS {
                    set.spawn(fetch(fx.client.clone(), uri.clone()));
                }
                while let Some(reply) = set.join_next().await {
                    assert_eq!(
                        reply.expect("the request task panicked").body_len,
                        AVATAR.len()
                    );
                }
            },
            BatchSize::SmallInput,
        );
    });
    assert_eq!(
        fx.origin_requests() - before,
        groups,
        "one fetch per group of 64"
    );
}

/// `GET /api/v4/site/ping` at `addr`: through the proxy, or straight to the origin as the reference.
fn pass_json(c: &mut Criterion, fx: &Fixture, name: &str, addr: SocketAddr) {
    let uri = Fixture::uri(addr, "/api/v4/site/ping");
    let reply = fx.rt.block_on(fx.get(uri.clone()));
    assert!(reply.x_cache.is_none());
    assert_eq!(reply.body_len, JSON.len());
    let mut sent = 0_u64;
    let before = fx.origin_requests();
    c.bench_function(name, |b| {
        b.to_async(&fx.rt).iter(|| {
            sent += 1;
            fx.get(uri.clone())
        });
    });
    assert_eq!(
        fx.origin_requests() - before,
        sent,
        "every request reaches the origin"
    );
}

criterion_group!(benches, e2e);
criterion_main!(benches);

/*
Run: `cargo bench --bench proxy` (criterion defaults: 3 s warm-up, 5 s measurement, 100 samples; about 2 min
plus the thin-LTO build).
Machine: `nproc` = 2; `lscpu`: x86_64, AMD EPYC (family 26, model 2), 2 cores, 1 thread per core, KVM guest,
L2 2 MiB, L3 32 MiB; rustc 1.95.0. Shared with other jobs. Client (criterion's `block_on` thread) plus 2 tokio
workers share the 2 cores.
Date: 2026-11-30, commit c09214e (the keeper thread, compact stored fields). Median time per iteration of
that run:

    hit_4k_avatar_e2e             60.3 us   (a query on the target: the full path, through hyper)
    hit_4k_avatar_express_e2e     56.4 us   (the express lane)
    miss_4k_avatar_e2e           128.2 us   (a new id each time; the 16 MiB cache fills after about 3,500)
    miss_coalesced_64_waiters    755.7 us   (64 concurrent requests, one origin fetch: 11.8 us per request)
    pass_json_e2e                 93.4 us
    origin_direct_json            52.4 us

The previous run (commit 53841c5): 61.1, 56.7, 108.8, 750.8, 95.7 and 60.1 us. The miss pays for the keeper
thread (`src/body/keeper.rs`): in one session, alternating the two builds three times, the miss took 112.5 us
before it and 120.6 us with it (medians), about 8 us for the hop to the keeper and back.

Compare benches within one run, not across runs (an earlier run under other load gave 32.2, 57.3, 90.5 and
30.2 us for hit, miss, pass and origin). A hit costs about what the bare origin costs: the proxy's own hit work
is under 1 us (`benches/cache.rs`), the rest is the loopback round trip and hyper's client, which every bench
here shares (so the express lane's saving, a few microseconds of server work, shows only as 61 -> 57 us; the
load harness shows it better). The coalesced group found a race: without the re-check after a won claim, 236
of 14,195 groups fetched twice (the assertion above).
*/
