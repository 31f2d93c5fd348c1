//! The upstream Cloudreve: a pooled keep-alive client, the header rewriting a proxy must do, timeouts, and
//! upstream errors. Knows nothing of the cache.

use std::error::Error as _;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::Authority;
use http::{Request, Response, Uri, Version, request, response};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;

use crate::body::Body;
use crate::config::UpstreamConfig;
use crate::error::ProxyError;
use crate::host;
use crate::interim::Interim;
use crate::tls;
use crate::upload::{ClientBodyError, UploadBody};

mod pool;

use pool::{Pool, PoolError, PoolLimits};

/// The pseudonym this proxy gives itself in `Via` (RFC 9110 §7.6.3).
pub const VIA_NAME: &str = "cloudreve-edge";

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// Hop-by-hop headers (RFC 9110 §7.6.1), removed in both directions besides those `Connection` names.
static HOP_BY_HOP: [&HeaderName; 9] = [
    &header::CONNECTION,
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
    &header::TE,
    &header::TRAILER,
    &header::TRANSFER_ENCODING,
    &header::UPGRADE,
    &header::PROXY_AUTHENTICATE,
    &header::PROXY_AUTHORIZATION,
];

/// Who sent a request, as this proxy saw it.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// The peer address of the client connection.
    pub addr: SocketAddr,
    /// Whether the client connection was TLS (for `X-Forwarded-Proto`).
    pub tls: bool,
    /// The peer is a trusted proxy (`server.trusted_proxies`): the forwarding headers it sent are kept.
    pub trusted: bool,
    /// Where the upstream's 1xx interim responses to this request go: an HTTP/1.1 client's connection, while
    /// the client waits for this request's answer (`interim.rs`).
    pub interim: Option<Interim>,
}

impl ClientInfo {
    /// The same client, for a request whose answer it does not wait for (a background refresh): no interim
    /// response of that request's is its.
    pub fn without_interim(&self) -> Self {
        Self {
            interim: None,
            ..*self
        }
    }
}

/// The client to the one configured upstream.
pub struct Upstream {
    /// Pooled keep-alive HTTP/1.1 connections, over TLS for an `https://` upstream; request bodies are
    /// forwarded as [`UploadBody`] (sent-whole signal, pause limit).
    pool: Pool,
    /// Where every upstream request goes, whatever the client asked for.
    authority: Authority,
    /// Time allowed from sending a request (its body included) to receiving the response head.
    response_header_timeout: Duration,
    /// Longest pause in a request body while it is forwarded.
    request_body_idle_timeout: Duration,
}

impl Upstream {
    /// A client for the configured upstream.
    pub fn new(config: &UpstreamConfig) -> Self {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(config.connect_timeout));
        http.set_nodelay(true);
        // The scheme is checked by the TLS layer: `https` only when the upstream is https.
        http.enforce_http(false);
        let connector = tls_connector(config, http);
        let target = Uri::builder()
            .scheme(config.scheme.clone())
            .authority(config.authority.clone())
            .path_and_query("/")
            .build()
            .expect("scheme and authority were validated with the config");
        let limits = PoolLimits {
            idle_timeout: config.pool_idle_timeout,
            max_pooled: config.pool_max_idle,
            max_open: config.max_connections,
            // A request at the cap waits as long as it would for a connection to open.
            open_wait: config.connect_timeout,
        };
        let pool = Pool::new(connector, target, limits);
        Self {
            pool,
            authority: config.authority.clone(),
            response_header_timeout: config.response_header_timeout,
            request_body_idle_timeout: config.request_body_idle_timeout,
        }
    }

    /// Sends a request prepared by [`Upstream::prepare_request`] and waits for the response head.
    /// The head timeout runs from when the request body has been sent whole (Cloudreve answers an upload
    /// only after reading it); the response body is not awaited: it streams, with no total timeout
    /// (downloads, server-sent events).
    pub async fn send(&self, request: Request<Body>) -> Result<Response<Incoming>, ProxyError> {
        let (parts, body) = request.into_parts();
        let (body, sent) = UploadBody::new(body, self.request_body_idle_timeout);
        let response = self.pool.send(Request::from_parts(parts, body));
        tokio::pin!(response);
        tokio::select! {
            // An answer before the body is all sent (e.g. a refusal) is taken as it is.
            result = &mut response => return result.map_err(classify_error).and_then(refuse_unasked_upgrade),
            // A body that fails instead drops the sender: the request errors just after.
            _ = sent => {}
        }
        match tokio::time::timeout(self.response_header_timeout, response).await {
            Ok(result) => result
                .map_err(classify_error)
                .and_then(refuse_unasked_upgrade),
            Err(_) => Err(ProxyError::UpstreamHeadTimeout(
                self.response_header_timeout,
            )),
        }
    }

    /// Time allowed for the upstream's response head (also for the whole body of a cache fill).
    pub fn response_header_timeout(&self) -> Duration {
        self.response_header_timeout
    }

    /// Turns a client's request head into the upstream's: same method, raw path and query byte for byte, same
    /// end-to-end headers and `Host`; hop-by-hop headers removed; `X-Forwarded-For`, `X-Forwarded-Proto` and
    /// `Via` set (see `set_forwarded`).
    pub fn prepare_request(
        &self,
        parts: &mut request::Parts,
        client: &ClientInfo,
    ) -> Result<(), ProxyError> {
        let received = parts.version;
        set_host(parts, &self.authority)?;
        parts.uri = Self::upstream_uri(&parts.uri)?;
        parts.version = Version::HTTP_11;
        strip_hop_by_hop(&mut parts.headers);
        set_forwarded(&mut parts.headers, client);
        parts.headers.append(header::VIA, via_value(received));
        if let Some(interim) = &client.interim {
            forward_interim(parts, interim.clone());
        }
        Ok(())
    }

    /// The origin-form target the upstream gets: the client's path and query, untouched (signed URLs sign the
    /// raw path). The client's own authority, if it sent one, is never used to connect (every connection
    /// goes to the configured upstream); a target with no path at all (`CONNECT host:port`) is refused
    /// rather than tunnelled.
    fn upstream_uri(uri: &Uri) -> Result<Uri, ProxyError> {
        let path_and_query = uri.path_and_query().ok_or(ProxyError::BadRequestTarget(
            "authority-form targets are not forwarded",
        ))?;
        Ok(Uri::from(path_and_query.clone()))
    }
}

/// TLS for an `https://` upstream (SNI and verification against the URL's host, which hyper-rustls takes
/// from the URI it connects to: always the configured upstream's); plain TCP for `http://`.
fn tls_connector(config: &UpstreamConfig, http: HttpConnector) -> HttpsConnector<HttpConnector> {
    let builder = HttpsConnectorBuilder::new();
    match &config.tls {
        Some(roots) => builder
            .with_tls_config(tls::client_config(roots))
            .https_only()
            .enable_http1()
            .wrap_connector(http),
        None => builder
            .with_tls_config(tls::client_config(&tls::UpstreamRoots::none()))
            .https_or_http()
            .enable_http1()
            .wrap_connector(http),
    }
}

/// The proxy never forwards `Upgrade` (it is hop-by-hop), so a `101` is a protocol switch nobody asked for
/// (RFC 9110 §15.2.2: a server MUST NOT switch to a protocol the client did not name). Passing it on would
/// leave the client believing it has a tunnel; it is an upstream failure instead.
fn refuse_unasked_upgrade(response: Response<Incoming>) -> Result<Response<Incoming>, ProxyError> {
    if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        let err = std::io::Error::other("the upstream switched protocols unasked");
        return Err(ProxyError::UpstreamRequest(Box::new(err)));
    }
    Ok(response)
}

/// Has hyper's client hand each 1xx interim response to the request's client (RFC 9110 §15.2: a proxy
/// forwards them), rewritten as a final response is: hop-by-hop fields out, `Via` in. hyper calls this on
/// the upstream connection's task as each one is read, before the final response; it never returns one as
/// the response, so none reaches the cache.
fn forward_interim(parts: &mut request::Parts, interim: Interim) {
    let mut carrier = Request::new(());
    hyper::ext::on_informational(&mut carrier, move |response| {
        let mut headers = response.headers().clone();
        strip_hop_by_hop(&mut headers);
        headers.append(header::VIA, via_value(Version::HTTP_11));
        interim.send(response.status(), &headers);
    });
    // hyper takes the callback from the request's extensions; `Parts` has no way to put it there itself.
    parts.extensions.extend(carrier.into_parts().0.extensions);
}

/// Turns an upstream response head into the client's: hop-by-hop headers removed, `Via` added.
pub fn prepare_response(parts: &mut response::Parts) {
    strip_hop_by_hop(&mut parts.headers);
    parts
        .headers
        .append(header::VIA, via_value(Version::HTTP_11));
}

/// `Host` as the client meant it, exactly one line: the host [`host::effective`] decides (the request
/// target's authority when it has one: absolute form, HTTP/2 `:authority`, RFC 9112 §3.2.3; else the
/// client's one `Host`), else the upstream's own. A request whose host that function refuses is never
/// sent (the request filter refused it already; this holds every request the proxy builds to it too).
fn set_host(parts: &mut request::Parts, upstream: &Authority) -> Result<(), ProxyError> {
    let host = host::effective(&parts.uri, &parts.headers)
        .map_err(|err| ProxyError::MalformedRequest(err.as_str()))?;
    let value = match host {
        // The client's one line is that host already: nothing to copy.
        Some(_) if parts.uri.authority().is_none() => return Ok(()),
        Some(host) => HeaderValue::from_str(host),
        None => HeaderValue::from_str(upstream.as_str()),
    };
    let value = value.expect("a valid host and an authority are valid header values");
    parts.headers.insert(header::HOST, value);
    Ok(())
}

/// Headers that a `Connection` option may not remove: without them the message cannot be routed or framed.
fn protected(name: &HeaderName) -> bool {
    name == header::HOST || name == header::CONTENT_LENGTH
}

/// Removes hop-by-hop headers: the fixed list, and every header `Connection` names (RFC 9110 §7.6.1).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of these, or only `Connection`: one pass over the names finds out, instead
    // of a hash lookup per hop-by-hop name on every message.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
            .filter(|name| !protected(name))
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&name)
}

/// `X-Forwarded-For` and `X-Forwarded-Proto` as Cloudreve should see them. Cloudreve believes the first
/// `X-Forwarded-For` address from anyone, so what a client sent is kept only when the peer is a trusted proxy
/// (then the peer is appended, and its `X-Forwarded-Proto` stands); from anyone else both are replaced by
/// what this proxy saw itself.
fn set_forwarded(headers: &mut HeaderMap, client: &ClientInfo) {
    if !client.trusted {
        headers.remove(&X_FORWARDED_FOR);
        headers.remove(&X_FORWARDED_PROTO);
    }
    append_forwarded_for(headers, client.addr);
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        let proto = HeaderValue::from_static(if client.tls { "https" } else { "http" });
        headers.insert(X_FORWARDED_PROTO.clone(), proto);
    }
}

/// Appends the client address to `X-Forwarded-For`, folding any earlier lines into one list.
fn append_forwarded_for(headers: &mut HeaderMap, addr: SocketAddr) {
    let mut value = String::new();
    for previous in headers.get_all(&X_FORWARDED_FOR) {
        if let Ok(previous) = previous.to_str() {
            value.push_str(previous.trim());
            value.push_str(", ");
        }
    }
    // A dual-stack listener reports IPv4 peers as `::ffff:a.b.c.d`; Cloudreve should see `a.b.c.d`.
    push_ip(&mut value, addr.ip().to_canonical());
    let value = HeaderValue::try_from(value).expect("ASCII list of addresses");
    headers.insert(X_FORWARDED_FOR.clone(), value);
}

/// Writes `ip` as `Display` would. IPv4, every request's case, without the formatting machinery: `Display`
/// for `Ipv4Addr` (padding support, a scratch buffer) cost more than the rest of the request's rewriting.
fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(digits.format(octet));
            }
        }
        IpAddr::V6(v6) => {
            use std::fmt::Write as _;
            write!(out, "{v6}").expect("writing to a String cannot fail");
        }
    }
}

/// `Via` names the protocol the message was received with (RFC 9110 §7.6.3).
fn via_value(received: Version) -> HeaderValue {
    HeaderValue::from_static(match received {
        Version::HTTP_09 => "0.9 cloudreve-edge",
        Version::HTTP_10 => "1.0 cloudreve-edge",
        Version::HTTP_2 => "2 cloudreve-edge",
        Version::HTTP_3 => "3 cloudreve-edge",
        _ => "1.1 cloudreve-edge",
    })
}

/// Sorts a client error into where it happened: connecting (refused or timed out), no connection free within
/// `upstream.max_connections`, the client's own request body, or the upstream later.
fn classify_error(err: PoolError) -> ProxyError {
    let client_body = std::iter::successors(err.source(), |e| (*e).source())
        .find_map(|e| e.downcast_ref::<ClientBodyError>());
    match client_body {
        Some(ClientBodyError::Stalled(_)) => return ProxyError::ClientBodyTimeout(Box::new(err)),
        Some(ClientBodyError::Broken(_)) => return ProxyError::ClientBody(Box::new(err)),
        None => {}
    }
    match err {
        PoolError::Saturated(waited) => return ProxyError::UpstreamSaturated(waited),
        PoolError::Request(_) => return ProxyError::UpstreamRequest(Box::new(err)),
        PoolError::Connect(_) => {}
    }
    let timed_out = std::iter::successors(err.source(), |e| (*e).source())
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::TimedOut);
    if timed_out {
        ProxyError::UpstreamConnectTimeout(Box::new(err))
    } else {
        ProxyError::UpstreamConnect(Box::new(err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.255",
            "203.0.113.9",
            "255.255.255.255",
            "::1",
            "2001:db8::8a2e:370:7334",
            "::ffff:192.0.2.1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut written = String::from("x, ");
            push_ip(&mut written, ip);
            assert_eq!(written, format!("x, {ip}"));
        }
    }

    fn upstream() -> Upstream {
        let mut config = Config::default();
        config.set_upstream("http://10.1.2.3:5212").unwrap();
        Upstream::new(&config.upstream)
    }

    fn client() -> ClientInfo {
        ClientInfo {
            addr: "192.0.2.7:40000".parse().unwrap(),
            tls: false,
            trusted: false,
            interim: None,
        }
    }

    fn prepared(request: Request<()>) -> request::Parts {
        prepared_from(request, &client())
    }

    fn prepared_from(request: Request<()>, client: &ClientInfo) -> request::Parts {
        let (mut parts, ()) = request.into_parts();
        upstream().prepare_request(&mut parts, client).unwrap();
        parts
    }

    fn forged() -> Request<()> {
        Request::get("/")
            .header("x-forwarded-for", "203.0.113.1")
            .header("x-forwarded-for", "198.51.100.2")
            .header("x-forwarded-proto", "https")
            .body(())
            .unwrap()
    }

    #[tokio::test]
    async fn raw_path_and_query_are_kept_byte_for_byte() {
        let parts = prepared(
            Request::get("/api/v4/file/content/a%2Fb/0/%E6%96%87.txt?sign=x%3D%3D&z=1+2")
                .header("host", "cloud.example")
                .body(())
                .unwrap(),
        );
        assert_eq!(
            parts.uri.to_string(),
            "/api/v4/file/content/a%2Fb/0/%E6%96%87.txt?sign=x%3D%3D&z=1+2"
        );
        assert_eq!(parts.headers["host"], "cloud.example");
    }

    #[tokio::test]
    async fn absolute_form_never_changes_where_the_request_goes() {
        let parts = prepared(Request::get("http://evil.example:81/x?y").body(()).unwrap());
        // Origin-form: the connection, always to the configured upstream, decides where it goes.
        assert_eq!(parts.uri.authority(), None);
        assert_eq!(parts.uri.to_string(), "/x?y");
        assert_eq!(parts.headers["host"], "evil.example:81");
    }

    #[tokio::test]
    async fn missing_host_becomes_the_upstream() {
        let parts = prepared(Request::get("/").body(()).unwrap());
        assert_eq!(parts.headers["host"], "10.1.2.3:5212");
    }

    #[tokio::test]
    async fn hop_by_hop_headers_are_removed() {
        let parts = prepared(
            Request::get("/")
                .header("connection", "keep-alive, X-Secret, Content-Length")
                .header("x-secret", "1")
                .header("keep-alive", "timeout=5")
                .header("te", "trailers")
                .header("trailer", "x")
                .header("upgrade", "websocket")
                .header("proxy-connection", "keep-alive")
                .header("proxy-authorization", "Basic x")
                .header("content-length", "0")
                .header("x-end-to-end", "kept")
                .body(())
                .unwrap(),
        );
        for gone in [
            "connection",
            "x-secret",
            "keep-alive",
            "te",
            "trailer",
            "upgrade",
            "proxy-connection",
            "proxy-authorization",
        ] {
            assert!(
                !parts.headers.contains_key(gone),
                "{gone} should be removed"
            );
        }
        assert_eq!(
            parts.headers["content-length"], "0",
            "framing is never removed by Connection"
        );
        assert_eq!(parts.headers["x-end-to-end"], "kept");
    }

    #[tokio::test]
    async fn untrusted_peer_forwarded_headers_are_replaced() {
        let parts = prepared(forged());
        assert_eq!(parts.headers["x-forwarded-for"], "192.0.2.7");
        assert_eq!(parts.headers["x-forwarded-proto"], "http");
        assert_eq!(parts.headers["via"], "1.1 cloudreve-edge");
        assert_eq!(parts.version, Version::HTTP_11);
    }

    #[tokio::test]
    async fn trusted_peer_forwarded_headers_are_extended() {
        let trusted = ClientInfo {
            trusted: true,
            ..client()
        };
        let parts = prepared_from(forged(), &trusted);
        assert_eq!(
            parts.headers["x-forwarded-for"],
            "203.0.113.1, 198.51.100.2, 192.0.2.7"
        );
        assert_eq!(parts.headers["x-forwarded-proto"], "https");
    }

    #[tokio::test]
    async fn ipv4_mapped_peer_is_forwarded_as_ipv4() {
        let mapped = ClientInfo {
            addr: "[::ffff:192.0.2.7]:40000".parse().unwrap(),
            ..client()
        };
        let parts = prepared_from(Request::get("/").body(()).unwrap(), &mapped);
        assert_eq!(parts.headers["x-forwarded-for"], "192.0.2.7");
    }

    #[tokio::test]
    async fn http2_request_gets_host_from_authority_and_via_2() {
        let parts = prepared(
            Request::get("http://cloud.example/api/v4/site/ping")
                .version(Version::HTTP_2)
                .body(())
                .unwrap(),
        );
        assert_eq!(parts.headers["host"], "cloud.example");
        assert_eq!(parts.headers["via"], "2 cloudreve-edge");
        assert_eq!(parts.version, Version::HTTP_11);
    }

    #[tokio::test]
    async fn host_goes_upstream_as_one_validated_line_or_not_at_all() {
        let parts = prepared(
            Request::get("http://cloud.example/x")
                .version(Version::HTTP_2)
                .header("host", "cloud.example")
                .body(())
                .unwrap(),
        );
        assert_eq!(parts.headers.get_all("host").iter().count(), 1);
        for request in [
            Request::get("/x")
                .header("host", "a.example")
                .header("host", "b.example"),
            Request::get("/x").header("host", "a/b"),
            Request::get("http://user:secret@cloud.example/x"),
        ] {
            let (mut parts, ()) = request.body(()).unwrap().into_parts();
            let err = upstream()
                .prepare_request(&mut parts, &client())
                .unwrap_err();
            assert_eq!(err.status(), http::StatusCode::BAD_REQUEST, "{parts:?}");
        }
    }

    #[tokio::test]
    async fn connect_is_refused_not_tunnelled() {
        let (mut parts, ()) = Request::connect("evil.example:443")
            .body(())
            .unwrap()
            .into_parts();
        let err = upstream()
            .prepare_request(&mut parts, &client())
            .unwrap_err();
        assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
    }

    #[test]
    fn response_loses_hop_by_hop_and_gains_via() {
        let (mut parts, ()) = Response::builder()
            .header("connection", "close, x-internal")
            .header("x-internal", "1")
            .header("transfer-encoding", "chunked")
            .header("proxy-authenticate", "Basic")
            .header("content-type", "text/event-stream")
            .body(())
            .unwrap()
            .into_parts();
        prepare_response(&mut parts);
        for gone in [
            "connection",
            "x-internal",
            "transfer-encoding",
            "proxy-authenticate",
        ] {
            assert!(!parts.headers.contains_key(gone), "{gone}");
        }
        assert_eq!(parts.headers["content-type"], "text/event-stream");
        assert_eq!(parts.headers["via"], "1.1 cloudreve-edge");
    }
}
