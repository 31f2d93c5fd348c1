//! The listener's certificate as a rustls resolver over the running configuration: beside [`Live`], so the
//! TLS module builds listener settings around any resolver and imports nothing of reload.

use std::fmt;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::Live;

/// Picks the certificate of the snapshot in force at each handshake, so a reload changes it for new
/// connections without touching open ones.
pub struct LiveCert(Arc<Live>);

impl LiveCert {
    /// A resolver reading `live` at every handshake.
    pub fn new(live: Arc<Live>) -> Arc<Self> {
        Arc::new(Self(live))
    }
}

impl fmt::Debug for LiveCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LiveCert")
    }
}

impl ResolvesServerCert for LiveCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let snapshot = self.0.load();
        snapshot
            .config
            .tls
            .as_ref()
            .map(|tls| Arc::clone(&tls.certified_key))
    }
}
