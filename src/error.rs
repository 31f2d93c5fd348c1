//! The proxy's one error type and its one mapping to an HTTP response.
//!
//! Errors are answered in Cloudreve's JSON envelope (`{"code":...,"msg":"..."}`) so its frontend shows the
//! message instead of failing to parse the reply.

use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};

use crate::body::Body;

/// Boxed cause of an upstream failure.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request the proxy could not complete. The variant says where the fault is.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The upstream refused or dropped the TCP connection attempt.
    #[error("cannot connect to the upstream")]
    UpstreamConnect(#[source] BoxError),
    /// The TCP connection to the upstream did not open in time.
    #[error("timed out connecting to the upstream")]
    UpstreamConnectTimeout(#[source] BoxError),
    /// `upstream.max_connections` connections to the upstream were open and none freed within this long.
    #[error("no upstream connection free within {0:?} (upstream.max_connections)")]
    UpstreamSaturated(Duration),
    /// The upstream did not send a response head in time.
    #[error("the upstream sent no response head within {0:?}")]
    UpstreamHeadTimeout(Duration),
    /// The upstream connection failed before a complete response head (reset, closed, not HTTP).
    #[error("the upstream failed before answering")]
    UpstreamRequest(#[source] BoxError),
    /// The upstream stopped sending a body the proxy was reading whole (a cache fill) for this long.
    #[error("the upstream did not send the whole avatar within {0:?}")]
    UpstreamBodyTimeout(Duration),
    /// The upstream body failed while the proxy was reading it whole (before anything reached the client).
    #[error("the upstream response body failed")]
    UpstreamBody(#[source] hyper::Error),
    /// The client's request body was malformed or broke off while it was forwarded (the upstream never got
    /// a complete request).
    #[error("the request body was malformed or cut off")]
    ClientBody(#[source] BoxError),
    /// The client paused sending its request body for longer than `upstream.request_body_idle_timeout`.
    #[error("the client stopped sending its request body")]
    ClientBodyTimeout(#[source] BoxError),
    /// The request target cannot be turned into an upstream request (e.g. the authority-form target of a
    /// `CONNECT`: this proxy tunnels nothing).
    #[error("the request target cannot be forwarded: {0}")]
    BadRequestTarget(&'static str),
    /// The request breaks a rule the framing guard holds HTTP/1.1 heads to, seen where the guard cannot see
    /// it (an HTTP/2 field list, an absolute-form authority): an invalid or repeated host, userinfo, a
    /// repeated or empty `Content-Length` (RFC 9110 §7.2, RFC 9112 §3.2, RFC 9113 §8.2.2, §8.3.1). Names the
    /// rule, for the log.
    #[error("malformed request: {0}")]
    MalformedRequest(&'static str),
}

impl ProxyError {
    /// The status the client receives. One exhaustive match: adding a variant forces a decision here.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::UpstreamConnect(_) | Self::UpstreamRequest(_) | Self::UpstreamBody(_) => {
                StatusCode::BAD_GATEWAY
            }
            Self::UpstreamConnectTimeout(_)
            | Self::UpstreamHeadTimeout(_)
            | Self::UpstreamBodyTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            // RFC 9110 §15.6.4: a temporary overload; the proxy, not Cloudreve, is out of connections.
            Self::UpstreamSaturated(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::BadRequestTarget(_) | Self::ClientBody(_) | Self::MalformedRequest(_) => {
                StatusCode::BAD_REQUEST
            }
            Self::ClientBodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// A message fit for the end user; causes stay in the log.
    fn public_message(&self) -> &'static str {
        match self {
            Self::UpstreamConnect(_) => "Cloudreve is unreachable",
            Self::UpstreamConnectTimeout(_)
            | Self::UpstreamHeadTimeout(_)
            | Self::UpstreamBodyTimeout(_) => "Cloudreve did not answer in time",
            Self::UpstreamRequest(_) | Self::UpstreamBody(_) => {
                "Cloudreve closed the connection unexpectedly"
            }
            Self::UpstreamSaturated(_) => "Too many requests to Cloudreve at once; try again",
            Self::BadRequestTarget(_) => "Bad request target",
            Self::MalformedRequest(_) => "Malformed request",
            Self::ClientBody(_) => "Malformed or incomplete request body",
            Self::ClientBodyTimeout(_) => "Request body timed out",
        }
    }

    /// Where an upstream exchange failed, as the `kind` label of the upstream error metric; `None` for
    /// faults of the client (a request body that broke off or stalled is the client's, even though it
    /// surfaces from the upstream exchange).
    pub fn upstream_kind(&self) -> Option<&'static str> {
        match self {
            Self::UpstreamConnect(_) => Some("connect"),
            Self::UpstreamConnectTimeout(_) => Some("connect_timeout"),
            Self::UpstreamHeadTimeout(_) => Some("response_timeout"),
            Self::UpstreamRequest(_) => Some("closed"),
            Self::UpstreamBody(_) => Some("body"),
            Self::UpstreamBodyTimeout(_) => Some("body_timeout"),
            Self::UpstreamSaturated(_) => Some("saturated"),
            Self::BadRequestTarget(_)
            | Self::ClientBody(_)
            | Self::ClientBodyTimeout(_)
            | Self::MalformedRequest(_) => None,
        }
    }

    /// The upstream could not be reached at all (readiness counts this, not slow or broken answers).
    pub fn is_upstream_unreachable(&self) -> bool {
        matches!(
            self,
            Self::UpstreamConnect(_) | Self::UpstreamConnectTimeout(_)
        )
    }

    /// Faults of the client are logged below error level, and end the client's connection (its state after a
    /// rejected request is unknown, RFC 9112 §9.6).
    pub fn is_client_fault(&self) -> bool {
        matches!(
            self,
            Self::BadRequestTarget(_)
                | Self::ClientBody(_)
                | Self::ClientBodyTimeout(_)
                | Self::MalformedRequest(_)
        )
    }

    /// The response for this error, in Cloudreve's envelope; `code` repeats the HTTP status.
    pub fn to_response(&self) -> Response<Body> {
        let status = self.status();
        let body = serde_json::json!({ "code": status.as_u16(), "msg": self.public_message() })
            .to_string();
        let mut response = Response::new(Body::full(body));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.is_client_fault() {
            // hyper closes an HTTP/1.1 connection after a response that says so (and drops the header on
            // HTTP/2, where the stream alone ends).
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn io_error() -> BoxError {
        Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
    }

    #[test]
    fn upstream_refused_maps_to_502() {
        assert_eq!(
            ProxyError::UpstreamConnect(io_error()).status(),
            StatusCode::BAD_GATEWAY
        );
    }

    #[test]
    fn upstream_reset_maps_to_502() {
        assert_eq!(
            ProxyError::UpstreamRequest(io_error()).status(),
            StatusCode::BAD_GATEWAY
        );
    }

    #[test]
    fn timeouts_map_to_504() {
        assert_eq!(
            ProxyError::UpstreamConnectTimeout(io_error()).status(),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(
            ProxyError::UpstreamHeadTimeout(Duration::from_secs(1)).status(),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(
            ProxyError::UpstreamBodyTimeout(Duration::from_secs(1)).status(),
            StatusCode::GATEWAY_TIMEOUT
        );
    }

    #[test]
    fn upstream_kinds_label_upstream_faults_only() {
        assert_eq!(
            ProxyError::UpstreamConnect(io_error()).upstream_kind(),
            Some("connect")
        );
        assert_eq!(
            ProxyError::UpstreamHeadTimeout(Duration::from_secs(1)).upstream_kind(),
            Some("response_timeout")
        );
        assert_eq!(
            ProxyError::UpstreamBodyTimeout(Duration::from_secs(1)).upstream_kind(),
            Some("body_timeout")
        );
        assert_eq!(ProxyError::BadRequestTarget("x").upstream_kind(), None);
        assert_eq!(ProxyError::ClientBody(io_error()).upstream_kind(), None);
        assert_eq!(
            ProxyError::ClientBodyTimeout(io_error()).upstream_kind(),
            None
        );
    }

    #[test]
    fn no_upstream_connection_free_maps_to_503_counted_as_saturated() {
        let err = ProxyError::UpstreamSaturated(Duration::from_secs(5));
        assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(err.upstream_kind(), Some("saturated"));
        assert!(!err.is_client_fault());
        assert!(
            !err.is_upstream_unreachable(),
            "Cloudreve answers; the proxy is busy"
        );
    }

    #[tokio::test]
    async fn saturated_body_is_cloudreve_envelope_with_503() {
        let response = ProxyError::UpstreamSaturated(Duration::from_secs(5)).to_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["code"], 503);
        assert_eq!(
            json["msg"],
            "Too many requests to Cloudreve at once; try again"
        );
    }

    #[test]
    fn bad_target_maps_to_400() {
        let err = ProxyError::BadRequestTarget("no path");
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert!(err.is_client_fault());
    }

    #[tokio::test]
    async fn malformed_request_maps_to_400_in_the_envelope_and_closes() {
        let err = ProxyError::MalformedRequest("invalid-host");
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert!(err.is_client_fault());
        assert_eq!(err.upstream_kind(), None);
        let response = err.to_response();
        assert_eq!(response.headers()[header::CONNECTION], "close");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (&json["code"], &json["msg"]),
            (&400.into(), &"Malformed request".into())
        );
    }

    #[test]
    fn broken_or_stalled_client_body_is_the_clients_fault() {
        let broken = ProxyError::ClientBody(io_error());
        assert_eq!(broken.status(), StatusCode::BAD_REQUEST);
        assert!(broken.is_client_fault());
        let stalled = ProxyError::ClientBodyTimeout(io_error());
        assert_eq!(stalled.status(), StatusCode::REQUEST_TIMEOUT);
        assert!(stalled.is_client_fault());
    }

    #[tokio::test]
    async fn error_body_is_cloudreve_envelope() {
        let response = ProxyError::UpstreamConnect(io_error()).to_response();
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/json; charset=utf-8"
        );
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["code"], 502);
        assert_eq!(json["msg"], "Cloudreve is unreachable");
    }
}
