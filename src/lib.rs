//! cloudreve-edge: an edge caching reverse proxy for Cloudreve.
//!
//! Every request is forwarded to the one configured Cloudreve, unchanged and streaming, except those a cache
//! rule matches: avatar requests (`GET`/`HEAD /api/v4/user/avatar/{id}`), answered from an in-memory moka
//! cache while the stored copy is fresh by the upstream's own `Cache-Control`, fetched once when it is not,
//! and skipped when the request says `nocache`; and `http` rules (e.g. `/assets/`), a plain RFC 9111 shared
//! cache. The architecture and its invariants: `DESIGN.md` of the project; the facts about
//! Cloudreve it relies on: its `upstream-contract.md`.
//!
//! # Layout
//!
//! - [`config`]: `proxy.toml` schema, typed defaults, validation into [`Config`]; it re-exports the cache's
//!   own parameter types (`RuleKind`, `Limits`), which the cache defines and never imports from it.
//! - [`server`]: the listener, HTTP/1.1 + HTTP/2 on one port, graceful drain; HTTP/2 streams are polled once
//!   in place before they are given a task (a hit needs none).
//! - [`proxy_protocol`]: the PROXY protocol v1/v2 header a load balancer sends first (`ppp`).
//! - [`tls`]: rustls both ways: the listener's certificate (picked per handshake, so reloads apply) and
//!   ALPN; roots for an `https://` upstream.
//! - [`framing`]: HTTP/1.1 request framing checked on the raw bytes before hyper (request smuggling), on
//!   the decrypted stream after any PROXY header; also times and bounds request heads, and offers the plain
//!   ones to the express lane while hyper is idle (`framing/shortcut.rs`); the same rules, by the same
//!   table, for HTTP/2 field lists (`check_http2`).
//! - [`express`]: the express lane: plain HTTP/1.1 `GET`s of fresh avatars, answered by the framing guard
//!   from the raw head while hyper is idle on the connection, with the full path's bytes (its `proxy`
//!   side: `proxy/express.rs`).
//! - [`interim`]: the upstream's 1xx interim responses (`103 Early Hints`) on their way to an HTTP/1.1
//!   client: queued by the request in progress, written by the framing guard beside hyper, before the
//!   final response and after every earlier one.
//! - [`limits`]: connection slots (`max_connections`), the connection watchdog (`limits/watchdog.rs`:
//!   `idle_timeout`, and `send_timeout` for a response the client takes nothing of) and the response body
//!   pause limit (`response_idle_timeout`).
//! - [`host`]: what a host is (`Host` values and target authorities alike) and which one a request is for,
//!   checked once by the framing guard (HTTP/1.1 heads) and the classify phase (every protocol).
//! - [`cloudreve`]: Cloudreve's paths (the avatar route, the avatar changes), a leaf every layer may name.
//! - [`route`]: request classification (the cache rules, Cloudreve's `nocache` parsing), pure.
//! - [`proxy`]: the request path as named phases 2 to 7 below, in order in one `handle`, a file each
//!   (`classify`, `lookup`, `fill` or `forward`, `admit`, `answer`, `observe`); errors become responses
//!   there. [`proxy::hit`] renders a stored response's head, one list of fields for both lanes.
//! - [`upstream`]: the client to Cloudreve (its own connection pool for the one upstream, in `pool`, capped
//!   at `upstream.max_connections`), header rewriting, timeouts.
//! - [`upload`]: a request body on its way upstream (sent-whole signal, pause limit).
//! - [`cache`]: the cache facade shared by every rule; [`cache::policy`] (pure, one file per concern under
//!   `cache/policy/`: keys, storability,
//!   freshness, heuristics, stale windows, validators, 304/HEAD merging, request `no-store`, what an
//!   unsafe method invalidates; the response directives it reads are `Cache-Control`, or a valid
//!   `CDN-Cache-Control` parsed as an RFC 8941 Dictionary with `sfv`), [`cache::vary`] (variants), [`cache::request`] (every request the cache
//!   sends upstream, built from what the key covers),
//!   [`cache::store`] (moka: bytes-bounded entries, per-entry expiry, coalesced fills, purge by predicate; a
//!   purge detaches the fills in flight for what it drops, so they store nothing),
//!   [`cache::invalidation`] (what a purge drops, as a value: applied through `Cache::invalidate`, the one
//!   place a cluster shares it from, or `Cache::apply` for another instance's),
//!   [`cache::serve`] (a stored response for one client: `Age`, preconditions, ranges),
//!   [`cache::snapshot`] (the warm-restart file: written on drain, read back all or nothing, entries aged by
//!   the time down),
//!   [`cache::status`] (`Cache-Status`), [`cache::Keeper`] (the thread that copies bodies to store, from
//!   `body`).
//! - [`cluster`]: with `[cluster]`, every invalidation shared with the other instances through a Redis
//!   Stream (a writer appending this instance's, a reader applying the others' from its last id, a whole-cache
//!   drop when history was lost), and the freshness cap while the stream cannot be read (detached).
//! - [`invalidate`]: reading avatar changes (JWT `sub`, Cloudreve's confirmation), pure.
//! - [`purge`]: the purge API (one avatar, all, statistics), mounted on the admin listener, bearer token;
//!   a submodule of [`admin`] (`admin/purge.rs`), re-exported here.
//! - [`body`]: the one body type, streamed or in memory; beside it the keeper (`body/keeper.rs`), the
//!   thread that copies the bodies the cache stores (re-exported as [`cache::Keeper`]).
//! - [`error`]: the one error enum and its mapping to HTTP.
//! - [`access_log`]: one access event per request, when its body ends, formatted without allocation into a
//!   bounded buffer that a thread of its own writes in batches (stderr or `log.access_log_path`, SIGUSR1
//!   reopens); a full buffer drops lines, counted, and never makes a request wait.
//! - [`demo`]: a Cloudreve look-alike for `--demo`.
//! - [`admin`]: the admin listener: `/metrics`, `/healthz`, `/readyz` and the purge API's routes.
//! - [`metrics`]: the Prometheus registry (`prometheus-client`), one per [`Proxy`].
//! - [`health`]: readiness: draining, upstream answering recently.
//! - [`restart`]: warm restart: the cache snapshot read in the background at start and written after the
//!   drain (`cache.snapshot_path`); the format, its checks and the restore are [`cache::snapshot`]'s.
//! - [`reload`]: the running configuration as one swappable snapshot ([`reload::Live`]), and SIGHUP reload
//!   into it (what cannot change in a running process keeps its value and is reported); the listener's
//!   certificate resolver reads it ([`reload::LiveCert`], handed to [`tls`]).
//!
//! # Life of a request
//!
//! The same seven phases, with the same numbers, in [`proxy`] (one file each, in order in
//! [`Proxy::handle`]) and in README's "Layout".
//!
//! 1. **accept** ([`server`]): TCP within `max_connections`, the PROXY header if enabled, TLS if configured
//!    (ALPN `h2`/`http/1.1`), then HTTP/1.1 framing and `Host` checked on the decrypted bytes ([`framing`]),
//!    HTTP/1.1 or HTTP/2; the client address and whether it is a trusted proxy are fixed here; idle
//!    connections closed ([`limits`]). A plain `GET` of a fresh avatar, arriving while hyper has nothing in
//!    progress on the connection, is answered right there ([`express`]: phases 2, 3, 6 and 7 without
//!    hyper); everything else goes on.
//! 2. **classify** (`proxy/classify.rs`): an HTTP/2 field list is held to the framing guard's rules
//!    ([`framing::check_http2`]) and every request's host checked ([`host::effective`]), so nothing after
//!    sees an invalid one; then [`route::classify`]: the first cache rule whose prefix matches (`Avatar`,
//!    `Http`), a bypass, an avatar change, an unsafe method (`Unsafe`), or `Pass`.
//! 3. **lookup** (`proxy/lookup.rs`, [`cache::Cache::lookup`]): a fresh entry (or a stale one within
//!    `stale-while-revalidate`) answers from memory with the client's conditions and range applied;
//!    otherwise the first request claims the fill and the others wait for it.
//! 4. **fill or forward** (`proxy/fill.rs`, `proxy/forward.rs`, [`upstream::Upstream`]): hop-by-hop headers
//!    out, `X-Forwarded-For`/`-Proto` (replaced unless the peer is trusted) and `Via` in, `Host` and the raw
//!    path kept; bodies streamed both ways ([`upload`]: a request body pausing past
//!    `upstream.request_body_idle_timeout` gets `408`; the response-head timeout starts once it is sent
//!    whole); a 1xx interim response goes on to an HTTP/1.1 client as it arrives ([`interim`]), never into
//!    the cache. A fill is a new request ([`cache::request`]): the target, `Host`, `User-Agent`, the
//!    `Vary`-named fields, the forwarding fields, and the stored validators when it revalidates. Every
//!    upstream exchange is timed for the metrics and readiness.
//! 5. **admit** (`proxy/admit.rs`, [`cache::policy::admit`]): only what a shared cache may store *and* what
//!    the rule should hold is stored (an `http` rule streams its fill to the client while keeping a copy; an
//!    avatar fill is read whole within the response-head timeout; a body read in one go is copied by
//!    [`cache::Keeper`]); a 304 refreshes the stored copy.
//! 6. **answer** (`proxy/answer.rs`): the stored response, rendered by [`proxy::hit`] (the express lane
//!    writes the same bytes), the upstream's answer, or, for a failing upstream, the stale copy within
//!    `stale-if-error`.
//! 7. **observe** (`proxy/observe.rs`, [`invalidate`]): a confirmed avatar change drops that user's stored
//!    copy; a non-error answer to an unsafe method drops what it names (RFC 9111 §4.4); `Cache-Status` and
//!    `X-Cache` on responses a rule matched, the counters and request metrics, one access event; a response
//!    body Cloudreve stops feeding for `server.response_idle_timeout` is aborted, and a connection whose
//!    client takes nothing of a response for `server.send_timeout` is closed ([`limits`]).

pub mod access_log;
pub mod admin;
pub mod body;
pub mod cache;
pub mod cloudreve;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod error;
pub mod express;
pub mod framing;
pub mod health;
pub mod host;
pub mod interim;
pub mod invalidate;
pub mod limits;
pub mod metrics;
pub mod proxy;
pub mod proxy_protocol;
pub mod reload;
pub mod restart;
pub mod route;
pub mod server;
pub mod tls;
pub mod upload;
pub mod upstream;

pub use admin::purge;
pub use config::Config;
pub use proxy::Proxy;
