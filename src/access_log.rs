//! One access-log event per request, written when the response body is finished (or abandoned), so it
//! carries the real byte count and whether the body was delivered whole.
//!
//! The binary installs a [`Sink`] (`install`): each event is then formatted into a buffer the thread reuses
//! (`line.rs`, no allocation) and appended to the sink's bounded buffer, which a thread of its own writes out
//! in batches, to standard error or `log.access_log_path` (`sink.rs`). Without one (the library in tests),
//! events go through `tracing` like every other log event.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Method, StatusCode, Uri, Version};
use http_body::{Frame, SizeHint};
use hyper::body::Body as HttpBody;

use crate::body::Body;
use crate::cache::CacheStatus;
use crate::config::{LogFormat, RuleKind};

mod line;
pub mod sink;

pub use sink::Sink;

/// The sink every access event goes to once installed, and the layout of its lines.
static INSTALLED: OnceLock<(Sink, LogFormat)> = OnceLock::new();

/// Sends every access event from now on to `sink`, as `format` lines. Only the first call takes effect; the
/// sink of a later one is handed back.
pub fn install(sink: Sink, format: LogFormat) -> Result<(), Sink> {
    INSTALLED.set((sink, format)).map_err(|(sink, _)| sink)
}

/// Whether the log filter lets access events through, as the binary last found (at start and after each
/// change of level): asking `tracing` on every request costs more than the line.
static FILTER_ALLOWS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Asks the log filter again whether it lets access events through; the binary calls it at start and after
/// each change of `log.level`.
pub fn refresh_filter() {
    FILTER_ALLOWS.store(
        tracing::enabled!(target: "access", tracing::Level::INFO),
        std::sync::atomic::Ordering::Relaxed,
    );
}

/// Whether access events are let through by the log filter: as last refreshed when a sink is installed,
/// else asked of `tracing` now.
pub fn filter_allows() -> bool {
    if INSTALLED.get().is_some() {
        FILTER_ALLOWS.load(std::sync::atomic::Ordering::Relaxed)
    } else {
        tracing::enabled!(target: "access", tracing::Level::INFO)
    }
}

/// The installed sink, for the binary's reopen, retarget and close.
pub fn installed() -> Option<&'static Sink> {
    INSTALLED.get().map(|(sink, _)| sink)
}

thread_local! {
    /// The line being formatted, kept from one event to the next so formatting allocates nothing.
    static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
}

/// What is known about a request while it is handled; the phases of `proxy/` fill it in.
#[derive(Debug)]
pub struct AccessRecord {
    /// Request method.
    method: Method,
    /// Request target; only its path is logged (queries carry signatures and tokens).
    target: Target,
    /// Protocol the client spoke.
    version: Version,
    /// Client address.
    client: SocketAddr,
    /// When the request head was received.
    started: Instant,
    /// Time from sending upstream to the upstream's response head, when the request went upstream.
    pub upstream_time: Option<Duration>,
    /// What the cache did, for requests a cache rule matched.
    pub cache: Option<CacheStatus>,
    /// The response carries `Cache-Status` and `X-Cache` already: it was answered from memory, and
    /// `proxy::hit` rendered them with the rest of its head. The other answers a rule matched get them last.
    pub labelled: bool,
    /// The kind of the cache rule that matched, if any (for the metrics' `route` label).
    pub rule: Option<RuleKind>,
}

impl AccessRecord {
    /// Starts a record for a request head.
    pub fn start(method: &Method, uri: &Uri, version: Version, client: SocketAddr) -> Self {
        Self::begin(method.clone(), Target::Uri(uri.clone()), version, client)
    }

    fn begin(method: Method, target: Target, version: Version, client: SocketAddr) -> Self {
        Self {
            method,
            target,
            version,
            client,
            started: Instant::now(),
            upstream_time: None,
            cache: None,
            labelled: false,
            rule: None,
        }
    }

    /// The request method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// A record for a `GET` the express lane answers: `path` is its whole target (the lane takes none with a
    /// query), copied as it is rather than parsed again into a `Uri`.
    pub fn express(path: &str, client: SocketAddr) -> Self {
        Self::begin(
            Method::GET,
            Target::Path(path.into()),
            Version::HTTP_11,
            client,
        )
    }

    /// The request path, without the query.
    pub fn path(&self) -> &str {
        match &self.target {
            Target::Uri(uri) => uri.path(),
            Target::Path(path) => path,
        }
    }

    /// Wraps a response body so the event is written when it ends. With logging off, the body passes bare.
    pub fn finish(self, status: StatusCode, body: Body, enabled: bool) -> LoggedBody {
        let record = enabled.then(|| {
            Box::new(Finished {
                record: self,
                status,
            })
        });
        LoggedBody {
            inner: body,
            record,
            bytes: 0,
            ended: false,
        }
    }
}

/// The request target as the record keeps it.
#[derive(Debug)]
enum Target {
    /// The request's own (a clone shares its bytes).
    Uri(Uri),
    /// A path without a query, copied.
    Path(Box<str>),
}

#[derive(Debug)]
struct Finished {
    record: AccessRecord,
    status: StatusCode,
}

/// A response body that counts what it sends and writes the access-log event when dropped.
#[derive(Debug)]
pub struct LoggedBody {
    inner: Body,
    /// `None` when access logging is off.
    record: Option<Box<Finished>>,
    bytes: u64,
    ended: bool,
}

impl HttpBody for LoggedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                self.bytes += frame.data_ref().map_or(0, |d| d.len() as u64);
            }
            Poll::Ready(None) => self.ended = true,
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        let Some(finished) = self.record.take() else {
            return;
        };
        let complete = self.ended || self.inner.is_end_stream();
        let Finished { record, status } = *finished;
        record.log(status, self.bytes, complete);
    }
}

impl AccessRecord {
    /// The line's fields for the event, now.
    fn fields(&self, status: StatusCode, bytes: u64, complete: bool) -> line::Fields<'_> {
        line::Fields {
            at: SystemTime::now(),
            client: self.client,
            method: self.method.as_str(),
            path: self.path(),
            version: self.version,
            status: status.as_u16(),
            cache: self.cache.map_or("-", |c| c.outcome.as_str()),
            upstream: self.upstream_time,
            bytes,
            complete,
            duration: self.started.elapsed(),
        }
    }

    /// Writes the event: the response had `status`, and `bytes` of its body were sent, all of it or not.
    pub fn log(self, status: StatusCode, bytes: u64, complete: bool) {
        if let Some((sink, format)) = INSTALLED.get() {
            let fields = self.fields(status, bytes, complete);
            LINE.with_borrow_mut(|buffer| {
                buffer.clear();
                match format {
                    LogFormat::Text => line::text(buffer, &fields),
                    LogFormat::Json => line::json(buffer, &fields),
                }
                sink.push(buffer);
            });
            return;
        }
        tracing::info!(
            target: "access",
            client = %self.client,
            method = %self.method,
            path = self.path(),
            version = ?self.version,
            status = status.as_u16(),
            cache = self.cache.map_or("-", |c| c.outcome.as_str()),
            upstream_ms = self.upstream_time.map(|d| d.as_secs_f64() * 1000.0),
            bytes,
            complete,
            duration_ms = self.started.elapsed().as_secs_f64() * 1000.0,
        );
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::cache::status::Outcome;

    /// A `MakeWriter` collecting what the subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The two writers of a JSON access line, the buffered one (`line::json`, when the binary installed a
    /// sink) and `tracing`'s JSON format (without one), give the same object: the same keys, the same values
    /// but for the clock readings (the timestamp, and milliseconds rounded to the microsecond here).
    #[test]
    fn the_buffered_json_line_matches_tracings_json_event() {
        let uri = Uri::from_static("/api/v4/user/avatar/lpua?x=1");
        let client: SocketAddr = "10.0.0.7:51234".parse().unwrap();
        let record = || {
            let mut record = AccessRecord::start(&Method::GET, &uri, Version::HTTP_2, client);
            record.cache = Some(CacheStatus::new(Outcome::Hit));
            record.upstream_time = Some(Duration::from_micros(1_500));
            record
        };
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || record().log(StatusCode::OK, 91, true));
        let traced: serde_json::Value =
            serde_json::from_slice(&captured.0.lock().unwrap()).unwrap();

        let mut buffered = Vec::new();
        line::json(&mut buffered, &record().fields(StatusCode::OK, 91, true));
        let buffered: serde_json::Value = serde_json::from_slice(&buffered).unwrap();

        let (traced, buffered) = (traced.as_object().unwrap(), buffered.as_object().unwrap());
        let keys = |object: &serde_json::Map<String, serde_json::Value>| {
            let mut keys: Vec<_> = object.keys().cloned().collect();
            keys.sort();
            keys
        };
        assert_eq!(keys(traced), keys(buffered));
        for (key, value) in traced {
            match key.as_str() {
                "timestamp" => assert!(buffered[key].as_str().unwrap().ends_with('Z')),
                "duration_ms" | "upstream_ms" => {
                    let (a, b) = (value.as_f64().unwrap(), buffered[key].as_f64().unwrap());
                    assert!(
                        key == "duration_ms" || (a - b).abs() < 0.001,
                        "{key}: {a} {b}"
                    );
                }
                _ => assert_eq!(value, &buffered[key], "{key}"),
            }
        }
    }
}
