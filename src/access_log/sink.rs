//! Where access lines go: a bounded buffer in memory that a thread of its own writes out in batches, as
//! nginx's `access_log ... buffer= flush=` does. A request appends its line under a short lock and never
//! waits on the disk or a pipe: when the buffer is full (the disk stalls, the pipe's reader is gone) the line
//! is dropped and counted.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// Longest time a line waits in the buffer before it is written.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Bytes that make a batch worth writing at once (nginx's default `buffer=64k`).
const BATCH: usize = 64 * 1024;

/// Lines dropped since start: the buffer was full, or writing them failed.
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Lines written since start.
static WRITTEN: AtomicU64 = AtomicU64::new(0);

/// Access lines dropped since start (`cloudreve_edge_access_log_dropped_total`).
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Access lines written since start (`cloudreve_edge_access_log_lines_total`).
pub fn written() -> u64 {
    WRITTEN.load(Ordering::Relaxed)
}

/// The buffer and its writer thread.
pub struct Sink {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    pending: Mutex<Pending>,
    /// Wakes the writer: a batch is ready, a reopen is asked, or the sink closes.
    wake: Condvar,
    /// Bytes the buffer holds at most.
    capacity: usize,
    /// Bytes that wake the writer before its timer.
    batch: usize,
    /// Where lines go from the next batch on, when it changed (a reload), or `reopen` for the same place.
    destination: Mutex<Destination>,
}

struct Pending {
    bytes: Vec<u8>,
    lines: u64,
    /// The writer was woken for this batch already.
    signalled: bool,
    /// Asked to reopen the file (SIGUSR1).
    reopen: bool,
    /// No more lines are taken; the writer writes what is left and stops.
    closing: bool,
}

struct Destination {
    /// `None`: standard error.
    path: Option<PathBuf>,
    /// A file opened already for the writer to switch to.
    replacement: Option<Output>,
}

enum Output {
    Stderr,
    File(File),
}

impl Output {
    fn open(path: Option<&Path>) -> io::Result<Self> {
        match path {
            None => Ok(Self::Stderr),
            Some(path) => open(path).map(Self::File),
        }
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Self::Stderr => io::stderr().lock().write_all(bytes),
            Self::File(file) => file.write_all(bytes),
        }
    }
}

/// Opens an access log file for appending, created with mode 0640 (the one definition, shared with the
/// validation of `log.access_log_path`).
fn open(path: &Path) -> io::Result<File> {
    crate::config::open_access_log(path)
}

impl Sink {
    /// Opens `path` (standard error when `None`) and starts the writer thread; the buffer holds at most
    /// `capacity` bytes.
    pub fn start(path: Option<&Path>, capacity: usize) -> io::Result<Self> {
        let output = Output::open(path)?;
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending {
                bytes: Vec::with_capacity(capacity),
                lines: 0,
                signalled: false,
                reopen: false,
                closing: false,
            }),
            wake: Condvar::new(),
            capacity,
            batch: BATCH.min(capacity / 2).max(1),
            destination: Mutex::new(Destination {
                path: path.map(Path::to_path_buf),
                replacement: None,
            }),
        });
        let writer = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("access-log".to_owned())
                .spawn(move || shared.write_until_closed(output))?
        };
        Ok(Self {
            shared,
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Takes one line (newline included) into the buffer, or drops and counts it when the buffer is full.
    pub fn push(&self, line: &[u8]) {
        let mut pending = self.shared.lock_pending();
        if pending.closing || pending.bytes.len() + line.len() > self.shared.capacity {
            drop(pending);
            DROPPED.fetch_add(1, Ordering::Relaxed);
            return;
        }
        pending.bytes.extend_from_slice(line);
        pending.lines += 1;
        if pending.bytes.len() >= self.shared.batch && !pending.signalled {
            pending.signalled = true;
            drop(pending);
            self.shared.wake.notify_one();
        }
    }

    /// Opens the file again at its path, from the next batch on (logrotate's `postrotate`, SIGUSR1). A file
    /// that cannot be opened leaves the old one in use, with a warning.
    pub fn reopen(&self) {
        self.shared.lock_pending().reopen = true;
        self.shared.wake.notify_one();
    }

    /// Writes to `path` (standard error when `None`) from the next batch on, if it differs from where lines
    /// go now (a reload). The new file is opened here, so an error reaches the caller and nothing changes.
    pub fn retarget(&self, path: Option<&Path>) -> io::Result<()> {
        let mut destination = self.shared.lock_destination();
        if destination.path.as_deref() == path {
            return Ok(());
        }
        destination.replacement = Some(Output::open(path)?);
        destination.path = path.map(Path::to_path_buf);
        drop(destination);
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Writes what the buffer holds and stops the writer; lines pushed later are dropped. Returns once the
    /// last batch is written (graceful drain, shutdown).
    pub fn close(&self) {
        self.shared.lock_pending().closing = true;
        self.shared.wake.notify_one();
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(writer) = writer {
            let _ = writer.join();
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.close();
    }
}

impl Shared {
    fn lock_pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_destination(&self) -> MutexGuard<'_, Destination> {
        self.destination
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The writer thread: waits for a batch (or the timer), swaps the buffer with its spare and writes it
    /// with the lock released.
    fn write_until_closed(&self, mut output: Output) {
        let mut batch = Vec::with_capacity(self.capacity);
        let mut failing = false;
        loop {
            let (lines, reopen, closing) = {
                let mut pending = self.lock_pending();
                if pending.bytes.len() < self.batch && !pending.reopen && !pending.closing {
                    pending = self
                        .wake
                        .wait_timeout(pending, FLUSH_EVERY)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                std::mem::swap(&mut pending.bytes, &mut batch);
                pending.signalled = false;
                let reopen = std::mem::take(&mut pending.reopen);
                (std::mem::take(&mut pending.lines), reopen, pending.closing)
            };
            self.switch(&mut output, reopen);
            if !batch.is_empty() {
                match output.write_all(&batch) {
                    Ok(()) => {
                        WRITTEN.fetch_add(lines, Ordering::Relaxed);
                        if failing {
                            failing = false;
                            tracing::info!("access log writes succeed again");
                        }
                    }
                    Err(err) => {
                        DROPPED.fetch_add(lines, Ordering::Relaxed);
                        if !failing {
                            failing = true;
                            tracing::warn!(error = %err, lines, "cannot write the access log; dropping lines until it can");
                        }
                    }
                }
                batch.clear();
            }
            if closing {
                return;
            }
        }
    }

    /// Takes the output a reload opened, or opens the file again when asked.
    fn switch(&self, output: &mut Output, reopen: bool) {
        let mut destination = self.lock_destination();
        if let Some(replacement) = destination.replacement.take() {
            *output = replacement;
            return;
        }
        let Some(path) = destination.path.clone().filter(|_| reopen) else {
            return;
        };
        drop(destination);
        match open(&path) {
            Ok(file) => {
                *output = Output::File(file);
                tracing::info!(path = %path.display(), "access log reopened");
            }
            Err(err) => {
                tracing::warn!(path = %path.display(), error = %err, "cannot reopen the access log; writing to the old file");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("cloudreve-edge-sink-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("access.log")
    }

    #[test]
    fn close_writes_every_line_taken() {
        let path = temp_path("close");
        let _ = std::fs::remove_file(&path);
        let sink = Sink::start(Some(&path), 1 << 20).unwrap();
        for i in 0..1000 {
            sink.push(format!("line {i}\n").as_bytes());
        }
        sink.close();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 1000);
        assert_eq!(lines[999], "line 999");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, crate::config::ACCESS_LOG_MODE, "{mode:o}");
    }

    #[test]
    fn a_full_buffer_drops_lines_and_never_waits() {
        // The writer is held (it cannot take the output to write to) while lines keep coming: the buffer
        // takes what fits and the rest is dropped and counted, without the pushes waiting.
        let path = temp_path("full");
        let sink = Sink::start(Some(&path), 10).unwrap();
        let before = dropped();
        let held = sink.shared.lock_destination();
        for _ in 0..3 {
            sink.push(b"12345\n");
        }
        assert!(
            dropped() > before,
            "at most two 6-byte lines fit, one swapped out and one buffered"
        );
        drop(held);
        sink.close();
    }

    /// Polls `path` until it holds `expected`, for up to 5 s (the writer flushes every second).
    fn eventually_reads(path: &Path, expected: &str) {
        for _ in 0..500 {
            if std::fs::read_to_string(path).unwrap_or_default() == expected {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("{} never held {expected:?}", path.display());
    }

    #[test]
    fn reopen_after_a_rotation_starts_a_new_file_at_the_path() {
        let path = temp_path("rotate");
        let rotated = path.with_extension("log.1");
        let _ = std::fs::remove_file(&path);
        let sink = Sink::start(Some(&path), 1 << 20).unwrap();
        sink.push(b"before\n");
        eventually_reads(&path, "before\n");
        std::fs::rename(&path, &rotated).unwrap();
        sink.reopen();
        sink.push(b"after\n");
        sink.close();
        assert_eq!(std::fs::read_to_string(&rotated).unwrap(), "before\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "after\n");
    }

    #[test]
    fn retarget_moves_the_lines_and_a_path_that_cannot_open_changes_nothing() {
        let first = temp_path("first");
        let second = temp_path("second");
        let _ = std::fs::remove_file(&first);
        let _ = std::fs::remove_file(&second);
        let sink = Sink::start(Some(&first), 1 << 20).unwrap();
        sink.push(b"one\n");
        eventually_reads(&first, "one\n");
        assert!(
            sink.retarget(Some(Path::new("/nonexistent/dir/a.log")))
                .is_err()
        );
        sink.retarget(Some(&second)).unwrap();
        sink.push(b"two\n");
        sink.close();
        assert_eq!(std::fs::read_to_string(&first).unwrap(), "one\n");
        assert_eq!(std::fs::read_to_string(&second).unwrap(), "two\n");
        assert!(Sink::start(Some(Path::new("/nonexistent/dir/a.log")), 1 << 20).is_err());
    }

    #[test]
    fn a_failing_write_drops_its_lines_and_counts_them() {
        let sink = Sink::start(Some(Path::new("/dev/full")), 1 << 20).unwrap();
        let before = dropped();
        for _ in 0..10 {
            sink.push(b"line\n");
        }
        sink.close();
        assert_eq!(dropped() - before, 10);
    }
}
