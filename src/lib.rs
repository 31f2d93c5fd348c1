//! cloudreve-edge: an edge caching reverse proxy for Cloudreve.
//!
//! Every request is forwarded to the one configured Cloudreve, unchanged and streaming, except avatar requests
//! (`GET`/`HEAD /api/v4/user/avatar/{id}`), which are answered from an in-memory moka cache while the stored
//! copy is fresh by the upstream's own `Cache-Control`, fetched once when it is not, and skipped when the
//! request says `nocache`. The architecture and its invariants: `DESIGN.md` of the project; the facts about
//! Cloudreve it relies on: its `upstream-contract.md`.
//!
//! # Layout
//!
//! - [`config`]: `proxy.toml` schema, typed defaults, validation into [`Config`].
//! - [`server`]: the listener, HTTP/1.1 + HTTP/2 on one port, graceful drain.
//! - [`framing`]: HTTP/1.1 request framing checked on the raw bytes before hyper (request smuggling).
//! - [`limits`]: connection slots (`max_connections`) and the idle watchdog (`idle_timeout`).
//! - [`route`]: request classification (Cloudreve's paths and its `nocache` parsing), pure.
//! - [`proxy`]: the request path as named phases, in order; errors become responses there.
//! - [`upstream`]: the pooled client to Cloudreve, header rewriting, timeouts.
//! - [`upload`]: a request body on its way upstream (sent-whole signal, pause limit).
//! - [`cache`]: the avatar cache facade; [`cache::policy`] (pure: key, storability, freshness),
//!   [`cache::store`] (moka: bytes-bounded entries, per-entry expiry, coalesced fills),
//!   [`cache::status`] (`Cache-Status`).
//! - [`body`]: the one body type, streamed or in memory.
//! - [`error`]: the one error enum and its mapping to HTTP.
//! - [`access_log`]: one access event per request, when its body ends.
//! - [`demo`]: a Cloudreve look-alike for `--demo`.
//!
//! # Life of a request
//!
//! 1. **accept** ([`server`]): TCP within `max_connections`, HTTP/1.1 framing checked on the raw bytes
//!    ([`framing`]), then HTTP/1.1 or HTTP/2 cleartext; idle connections closed ([`limits`]).
//! 2. **classify** ([`route::classify`]): `Avatar(key)`, `AvatarBypass(reason)` or `Pass`.
//! 3. **cache lookup** ([`cache::AvatarCache::lookup`]): a fresh entry is answered from memory with `Age`;
//!    otherwise the first request claims the fill and the others wait for it.
//! 4. **forward** ([`upstream::Upstream`]): hop-by-hop headers out, `X-Forwarded-For`/`-Proto` and `Via` in,
//!    `Host` and the raw path kept; bodies streamed both ways.
//! 5. **admit** ([`cache::policy::admit`]): only what a shared cache may store *and* what the avatar route
//!    should hold is stored; the waiters get it, or go upstream at once if nothing was stored.
//! 6. **respond and log** ([`proxy`]): `Cache-Status` and `X-Cache` on avatar responses, one access event.

pub mod access_log;
pub mod body;
pub mod cache;
pub mod config;
pub mod demo;
pub mod error;
pub mod framing;
pub mod limits;
pub mod proxy;
pub mod route;
pub mod server;
pub mod upload;
pub mod upstream;

pub use config::Config;
pub use proxy::Proxy;
