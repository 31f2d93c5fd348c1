//! The thread that makes the copies the cache keeps.
//!
//! A stored body is copied out of the connection's read buffer (hyper hands out slices of it, 8 KiB and more,
//! which must not stay alive with the entry). glibc's malloc gives each thread an arena of its own, and on a
//! connection thread a copy of a few KiB is carved out of whichever read buffer the last exchange freed: the
//! buffer's remainder is then a hole beside a long-lived body, too small for the next buffer or copy, and
//! enough such holes add close to a tenth to the memory the cache takes (measured with
//! `scripts/bench-memory.sh`: BENCHMARKS.md, "Figures behind choices in the code").
//! Made here, stored bodies share an arena with each other and nothing else.
//!
//! The keeper copies bodies that came in one chunk. A body read in several is assembled where it is read, in
//! an allocation of its own length that the small read buffers cannot hold. It only copies; everything else
//! stays on the connection's task, which waits for the copy: a collected fill before it builds the entry, a
//! streamed fill (`Body::Teed`) before it hands the client the body's last frame, so in both the entry is
//! stored before the client has the whole answer. The thread hop adds a few microseconds to a miss, none to a
//! hit. If the thread cannot be started or has stopped, copies are made in place, as they were before. With
//! `MALLOC_ARENA_MAX=1` glibc puts every thread in one arena and the keeper changes nothing but where the
//! copy is made.

use std::future::Future;
use std::pin::Pin;
use std::sync::mpsc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::oneshot;
use tracing::warn;

/// A copy to make, and where to send it.
pub(crate) struct Job {
    chunk: Bytes,
    done: oneshot::Sender<Bytes>,
}

#[cfg(test)]
impl Keeper {
    /// A keeper with no thread: the test takes the jobs and makes the copies when it chooses.
    pub(crate) fn by_hand() -> (Self, mpsc::Receiver<Job>) {
        let (jobs, queue) = mpsc::channel();
        (Self { jobs }, queue)
    }
}

#[cfg(test)]
impl Job {
    /// Makes the copy, as the thread would.
    pub(crate) fn finish(self) {
        let _ = self.done.send(Bytes::copy_from_slice(&self.chunk));
    }
}

/// A handle on the keeper thread; the thread ends when the last handle is dropped.
#[derive(Debug, Clone)]
pub struct Keeper {
    jobs: mpsc::Sender<Job>,
}

impl Keeper {
    /// Starts the thread (named `edge-keeper`).
    pub fn start() -> Self {
        let (jobs, queue) = mpsc::channel::<Job>();
        let started = std::thread::Builder::new()
            .name("edge-keeper".into())
            .spawn(move || {
                for Job { chunk, done } in queue {
                    let copy = Bytes::copy_from_slice(&chunk);
                    drop(chunk); // the read buffer is released before the waiter wakes
                    // The waiter may have gone (its fill timed out): the copy is then simply dropped.
                    let _ = done.send(copy);
                }
            });
        if let Err(err) = started {
            // The receiver went with the failed thread, so every copy is made in place.
            warn!(error = %err, "the cache's keeper thread did not start; stored bodies are copied in place");
        }
        Self { jobs }
    }

    /// `chunk` in an allocation of its own, exactly its size, made on the keeper thread.
    pub fn copying(&self, chunk: Bytes) -> Copying {
        let (done, copied) = oneshot::channel();
        let job = Job {
            chunk: chunk.clone(), // a reference count: the original stays here in case the thread is gone
            done,
        };
        let copied = self.jobs.send(job).is_ok().then_some(copied);
        Copying { chunk, copied }
    }
}

/// A copy under way on the keeper thread; made in place if the thread is gone.
#[derive(Debug)]
pub struct Copying {
    chunk: Bytes,
    copied: Option<oneshot::Receiver<Bytes>>,
}

impl Future for Copying {
    type Output = Bytes;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Bytes> {
        if let Some(copied) = &mut self.copied {
            if let Ok(copy) = std::task::ready!(Pin::new(copied).poll(cx)) {
                return Poll::Ready(copy);
            }
        }
        Poll::Ready(Bytes::copy_from_slice(&self.chunk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_copy_is_exact_and_does_not_share_the_original() {
        let keeper = Keeper::start();
        let buffer = Bytes::from(vec![7u8; 8192]);
        let chunk = buffer.slice(100..4296);
        let copy = keeper.copying(chunk.clone()).await;
        assert_eq!(copy, chunk);
        assert_ne!(
            copy.as_ptr(),
            chunk.as_ptr(),
            "a copy, not a slice of the buffer"
        );
        // The buffer is no longer shared by the copy: converting it back to a Vec takes it without copying.
        drop(chunk);
        assert!(
            buffer.try_into_mut().is_ok(),
            "the read buffer is free again"
        );
    }

    #[tokio::test]
    async fn copies_are_made_in_place_when_the_thread_is_gone() {
        let (keeper, queue) = Keeper::by_hand();
        drop(queue);
        let copy = keeper.copying(Bytes::from_static(b"avatar")).await;
        assert_eq!(copy, Bytes::from_static(b"avatar"));
    }

    #[tokio::test]
    async fn a_thread_that_drops_a_job_still_gets_the_copy_made() {
        // A thread that takes jobs and never answers them (as if it had stopped mid-job).
        let (keeper, queue) = Keeper::by_hand();
        let dropper = std::thread::spawn(move || for _job in queue {});
        let copy = keeper.copying(Bytes::from_static(b"avatar")).await;
        assert_eq!(copy, Bytes::from_static(b"avatar"));
        drop(keeper);
        dropper
            .join()
            .expect("the thread ends with the last handle");
    }
}
