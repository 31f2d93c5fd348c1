//! Operations: the admin listener, the PROXY protocol and trusted proxies, reloading the configuration, TLS.

mod admin;
mod forwarding;
mod reload;
mod tls;
