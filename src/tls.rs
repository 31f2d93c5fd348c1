//! TLS with rustls (ring provider), both ways: terminating clients on the public listener, and connecting to
//! an `https://` upstream. Certificates and roots are read here; the server's certificate is picked per
//! handshake from the running configuration (`reload::LiveCert`), so a reload changes it without touching
//! open connections.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::ClientConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ResolvesServerCert, ServerConfig};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, crypto::ring};

/// ALPN protocols offered to clients, preferred first (RFC 7301; `h2` per RFC 9113 §3.2).
const SERVER_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// A certificate chain and key that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds no usable item.
    #[error("{path}: {message}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The key does not fit the certificate, or is of a kind rustls cannot sign with.
    #[error("{path}: {source}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// rustls' reason.
        #[source]
        source: rustls::Error,
    },
}

/// The public listener's certificate: the chain and key as loaded from `tls.cert` and `tls.key`.
#[derive(Clone)]
pub struct ServerCert {
    /// The PEM chain file, leaf first.
    pub cert: PathBuf,
    /// The PEM private key file (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// What handshakes present.
    pub certified_key: Arc<CertifiedKey>,
}

impl fmt::Debug for ServerCert {
    // The key material stays out of logs and test output; the files name it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerCert")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl ServerCert {
    /// Reads a PEM chain and its private key, and checks that they belong together.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let chain = read_certs(cert)?;
        let der = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_error(key, &e))?;
        let certified_key =
            CertifiedKey::from_der(chain, der, &provider()).map_err(|source| TlsError::Key {
                path: key.to_owned(),
                source,
            })?;
        Ok(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            certified_key: Arc::new(certified_key),
        })
    }
}

/// Roots an `https://` upstream's certificate is verified against.
#[derive(Clone)]
pub struct UpstreamRoots {
    /// `upstream.ca_file`, or `None` for the system's roots.
    pub ca_file: Option<PathBuf>,
    /// The trust anchors.
    pub roots: Arc<RootCertStore>,
}

impl fmt::Debug for UpstreamRoots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamRoots")
            .field("ca_file", &self.ca_file)
            .field("roots", &self.roots.len())
            .finish()
    }
}

impl UpstreamRoots {
    /// No roots: for a plain `http://` upstream, where no certificate is ever verified.
    pub fn none() -> Self {
        Self {
            ca_file: None,
            roots: Arc::new(RootCertStore::empty()),
        }
    }

    /// The certificates of `ca_file`, or the operating system's roots when there is none.
    pub fn load(ca_file: Option<&Path>) -> Result<Self, TlsError> {
        let mut roots = RootCertStore::empty();
        match ca_file {
            Some(path) => {
                for cert in read_certs(path)? {
                    roots.add(cert).map_err(|e| TlsError::Pem {
                        path: path.to_owned(),
                        message: format!("not a usable CA certificate: {e}"),
                    })?;
                }
            }
            None => {
                // Unreadable entries are skipped, as every TLS client does; an empty store is the error.
                let native = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(native.certs);
            }
        }
        if roots.is_empty() {
            return Err(TlsError::Pem {
                path: ca_file.map_or_else(|| PathBuf::from("(system roots)"), Path::to_owned),
                message: "no CA certificate found".to_owned(),
            });
        }
        Ok(Self {
            ca_file: ca_file.map(Path::to_owned),
            roots: Arc::new(roots),
        })
    }
}

/// The listener's TLS settings: TLS 1.2 and 1.3 with rustls' safe defaults (AEAD suites with forward secrecy
/// only), ALPN `h2` then `http/1.1`, and the certificate `certs` picks per handshake (the running
/// configuration's: `reload::LiveCert`).
pub fn server_config(certs: Arc<dyn ResolvesServerCert>) -> Arc<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default versions")
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = SERVER_ALPN.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// The upstream client's TLS settings: verified against `roots`, ALPN `http/1.1` (the upstream is spoken to
/// over HTTP/1.1). SNI is the upstream URL's host, set per connection by hyper-rustls.
pub fn client_config(roots: &UpstreamRoots) -> ClientConfig {
    ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default versions")
        .with_root_certificates(Arc::clone(&roots.roots))
        .with_no_client_auth()
}

fn provider() -> CryptoProvider {
    ring::default_provider()
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(path, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, &e))?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            message: "no CERTIFICATE block".to_owned(),
        });
    }
    Ok(certs)
}

fn pem_error(path: &Path, err: &rustls::pki_types::pem::Error) -> TlsError {
    TlsError::Pem {
        path: path.to_owned(),
        message: err.to_string(),
    }
}
