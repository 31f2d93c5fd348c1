//! The pass-through path, end to end: everything that is not an avatar cache hit goes to Cloudreve unchanged
//! and streaming, and comes back the same way. Each test runs the real proxy in front of a fake upstream and
//! proves the behaviour by what the upstream received and what the client got.
//!
//! By theme: what reaches Cloudreve (`requests`: every method, WebDAV, the raw target, HTTP/2 clients, no
//! `CONNECT`, nothing coalesced), the header fields in both directions (`headers`), bodies streamed both ways
//! (`streaming`), and upstream failures before and after the response head (`errors`). The sections keep
//! their numbers from the single file they were.

mod errors;
mod headers;
mod requests;
mod streaming;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::support::*;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::io::AsyncWriteExt;

const PING: &str = "/api/v4/site/ping";

// Helpers shared by the themes.

/// A fake Cloudreve that also keeps every request body it read, in arrival order (bodies are read whole
/// before answering, so `bodies.last()` belongs to `upstream.last()` in a sequential test).
struct Recording {
    upstream: FakeCloudreve,
    bodies: Arc<Mutex<Vec<Bytes>>>,
}

impl Recording {
    /// Answers every request `200 text/plain` with `x-upstream-method` naming the method it saw.
    async fn start() -> Self {
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&bodies);
        let upstream = FakeCloudreve::start(move |request: Request<Incoming>| {
            let log = Arc::clone(&log);
            async move {
                let method = request.method().clone();
                let body = request
                    .into_body()
                    .collect()
                    .await
                    .expect("the request body arrived whole")
                    .to_bytes();
                log.lock().unwrap().push(body);
                Response::builder()
                    .header("content-type", "text/plain")
                    .header("x-upstream-method", method.as_str())
                    .body(full(format!("{method} answered")))
                    .unwrap()
            }
        })
        .await;
        Self { upstream, bodies }
    }

    fn last_body(&self) -> Bytes {
        self.bodies
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the upstream read no body")
    }
}

/// Sends a request and returns the response head with its body unread, within [`PATIENCE`].
async fn open(request: Request<TestBody>) -> Response<Incoming> {
    tokio::time::timeout(PATIENCE, client().request(request))
        .await
        .expect("no response head within PATIENCE")
        .expect("request failed")
}

/// Reads a body to its end within [`PATIENCE`]: the bytes received, and how it ended (cleanly or with an error).
async fn read_to_end(body: &mut Incoming) -> (Vec<u8>, Result<(), hyper::Error>) {
    tokio::time::timeout(PATIENCE, async {
        let mut got = Vec::new();
        loop {
            match body.frame().await {
                None => return (got, Ok(())),
                Some(Err(err)) => return (got, Err(err)),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        got.extend_from_slice(&data);
                    }
                }
            }
        }
    })
    .await
    .expect("the body neither ended nor failed within PATIENCE")
}

/// A raw upstream answering every connection with `response` after reading the request head, counting
/// connections.
async fn raw_upstream_answering(response: &'static [u8]) -> (RawUpstream, Arc<AtomicUsize>) {
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&connections);
    let upstream = RawUpstream::start(move |mut stream| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            let _ = read_head(&mut stream).await;
            let _ = stream.write_all(response).await;
            // Dropped here: the connection closes after the answer.
        }
    })
    .await;
    (upstream, connections)
}
