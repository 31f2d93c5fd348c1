//! Fixtures for the operations tests: the admin listener beside a [`TestProxy`], and reading `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;

use cloudreve_edge::admin;
use prometheus_parse::{Scrape, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::{TestProxy, get};

/// The admin listener of a running [`TestProxy`], on `127.0.0.1:0`; stopped when dropped.
pub struct TestAdmin {
    pub addr: SocketAddr,
    task: JoinHandle<std::io::Result<()>>,
}

impl TestAdmin {
    pub async fn start(proxy: &TestProxy) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(admin::run(
            listener,
            Arc::clone(&proxy.proxy),
            std::future::pending(),
        ));
        Self { addr, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// `GET /metrics`, parsed.
    pub async fn scrape(&self) -> Metrics {
        let reply = get(&self.url("/metrics")).await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.header("content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        let text = String::from_utf8(reply.body.to_vec()).unwrap();
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("metrics parse");
        Metrics { scrape, text }
    }

    /// `cloudreve_edge_express_answers_total` now: how many requests the express lane answered.
    pub async fn express_answers(&self) -> f64 {
        let metrics = self.scrape().await;
        metrics.value("cloudreve_edge_express_answers_total", &[])
    }
}

impl Drop for TestAdmin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One scrape of `/metrics`.
pub struct Metrics {
    pub scrape: Scrape,
    /// The raw text, for failure messages.
    pub text: String,
}

impl Metrics {
    /// The value of the counter or gauge sample `name` whose labels include `labels`, 0 when absent (a
    /// labelled counter appears at its first increment).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match &s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
                other => panic!("{name} is not a counter or gauge: {other:?}"),
            })
            .sum()
    }

    /// The `_count` of histogram `name` (`+Inf` bucket).
    pub fn histogram_count(&self, name: &str) -> f64 {
        self.scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .find_map(|s| match &s.value {
                Value::Histogram(buckets) => buckets
                    .iter()
                    .find(|b| b.less_than.is_infinite())
                    .map(|b| b.count),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no histogram {name} in:\n{}", self.text))
    }
}

// TLS fixtures: a test CA (rcgen), clients that trust it, and an HTTPS fake Cloudreve.

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "cloudreve-edge-ops-{}-{}-{name}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// Writes `contents` to `name` in the directory and returns the path.
    pub fn write(&self, name: &str, contents: &str) -> std::path::PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A certificate authority made for one test.
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// The CA certificate, PEM.
    pub pem: String,
}

/// A leaf certificate and its key, PEM.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Self {
            issuer: rcgen::Issuer::new(params, key),
            pem,
        }
    }

    /// A server certificate for `localhost` and `127.0.0.1`, with `name` as its common name.
    pub fn leaf(&self, name: &str) -> Leaf {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A TLS client that trusts this CA and offers `alpn`.
    pub fn connector(&self, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(self.pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
    }
}

use rustls::pki_types::pem::PemObject as _;

/// The common name of a DER certificate, found by its OID (2.5.4.3) rather than a full X.509 parser.
pub fn common_name(der: &[u8]) -> String {
    const CN_OID: [u8; 5] = [0x06, 0x03, 0x55, 0x04, 0x03];
    // Issuer comes before subject; the subject's CN is the last one in the certificate.
    let at = der
        .windows(CN_OID.len())
        .rposition(|w| w == CN_OID)
        .expect("a CN in the certificate");
    let len = der[at + CN_OID.len() + 1] as usize;
    let start = at + CN_OID.len() + 2;
    String::from_utf8_lossy(&der[start..start + len]).into_owned()
}

/// An HTTPS fake Cloudreve on `127.0.0.1:0`: answers every request `200 ok` and records the SNI each
/// handshake asked for.
pub struct TlsUpstream {
    pub addr: SocketAddr,
    pub sni: std::sync::Arc<std::sync::Mutex<Vec<Option<String>>>>,
    pub forwarded_for: std::sync::Arc<std::sync::Mutex<Vec<Option<String>>>>,
    task: JoinHandle<()>,
}

impl TlsUpstream {
    pub async fn start(leaf: &Leaf) -> Self {
        let chain = rustls::pki_types::CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key =
            rustls::pki_types::PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sni = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let forwarded_for = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (seen_sni, seen_xff) = (sni.clone(), forwarded_for.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (acceptor, seen_sni, seen_xff) =
                    (acceptor.clone(), seen_sni.clone(), seen_xff.clone());
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let name = stream.get_ref().1.server_name().map(str::to_owned);
                    seen_sni.lock().unwrap().push(name);
                    let service = hyper::service::service_fn(
                        move |request: http::Request<hyper::body::Incoming>| {
                            let xff = request
                                .headers()
                                .get("x-forwarded-for")
                                .map(|v| v.to_str().unwrap().to_owned());
                            seen_xff.lock().unwrap().push(xff);
                            async {
                                Ok::<_, std::convert::Infallible>(http::Response::new(super::full(
                                    "ok",
                                )))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            sni,
            forwarded_for,
            task,
        }
    }
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A v2 `PROXY` header for a TCP connection from `source` to `destination`.
pub fn proxy_v2_header(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Proxy,
        ppp::v2::Protocol::Stream,
        (source, destination),
    )
    .build()
    .unwrap()
}
