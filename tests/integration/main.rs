//! The integration tests, one binary with a module per theme: the real proxy (`server::run` on `127.0.0.1:0`,
//! or the built binary where the process itself is under test) in front of a fake Cloudreve, which counts
//! what it receives. The fixtures and the one raw HTTP/1.1 client are in `support`.
//!
//! nextest runs every test in a process of its own, so tests that read process-wide figures (resident memory
//! in `hostile::memory`) or spawn the binary (`lifecycle`, `ops::reload`, `purge`) see only themselves.

mod support;

mod architecture;
mod caching;
mod cluster;
mod config;
mod deploy;
mod express;
mod forwarding;
mod freshness;
mod hostile;
mod interim;
mod lifecycle;
mod ops;
mod purge;
mod restart;
mod rules;
