//! The built binary as a child process: started with a clean logging environment, its stdout and stderr
//! read line by line (its address is read from the `listening` line, never guessed), signalled with
//! `kill(1)`, and killed on drop; and scratch directories for its files. For the tests where the process
//! itself is under test (`lifecycle`, `restart`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::PATIENCE;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_cloudreve-edge");

/// A fresh directory under the system temp dir, removed on drop.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "cloudreve-edge-lifecycle-{}-{}-{name}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `proxy.toml` with `contents` and returns its path as a string.
    pub fn config(&self, contents: &str) -> String {
        let path = self.0.join("proxy.toml");
        std::fs::write(&path, contents).unwrap();
        path.to_str().unwrap().to_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The binary with a clean logging environment (no colours, no inherited `RUST_LOG`).
pub fn edge_command(args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Removes ANSI escape sequences (`ESC [ ... letter`), in case colours are forced on.
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Forwards the lines of a child's pipe, ANSI-stripped; the channel closes when the pipe does.
pub fn forward_lines(
    pipe: impl tokio::io::AsyncRead + Unpin + Send + 'static,
) -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(strip_ansi(&line)).is_err() {
                return;
            }
        }
    });
    rx
}

/// The binary running in the background, its stdout and stderr read line by line.
pub struct Edge {
    pub child: Child,
    pub pid: u32,
    pub stdout: mpsc::UnboundedReceiver<String>,
    pub stderr: mpsc::UnboundedReceiver<String>,
    /// Every stderr line read so far, for failure messages and later checks.
    pub log: Vec<String>,
}

impl Edge {
    pub fn spawn(args: &[&str], env: &[(&str, &str)], dir: Option<&Path>) -> Self {
        let mut command = edge_command(args);
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        if let Some(dir) = dir {
            command.current_dir(dir);
        }
        let mut child = command.spawn().expect("cannot start the binary");
        let pid = child.id().expect("a running child has a pid");
        let stdout = forward_lines(child.stdout.take().unwrap());
        let stderr = forward_lines(child.stderr.take().unwrap());
        Self {
            child,
            pid,
            stdout,
            stderr,
            log: Vec::new(),
        }
    }

    /// Reads stderr until a line satisfies `matches`, within [`PATIENCE`].
    pub async fn stderr_line(&mut self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        let found = timeout(PATIENCE, async {
            while let Some(line) = self.stderr.recv().await {
                self.log.push(line.clone());
                if matches(&line) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            Ok(None) => panic!("stderr ended before {what}; log:\n{}", self.log.join("\n")),
            Err(_) => panic!(
                "timed out waiting for {what}; log:\n{}",
                self.log.join("\n")
            ),
        }
    }

    /// The first stderr line, read already or still to come, that satisfies `matches`, within
    /// [`PATIENCE`]: for lines that may come before the one a test waited for first (a background task's).
    pub async fn logged(&mut self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        if let Some(line) = self.log.iter().find(|line| matches(line)) {
            return line.clone();
        }
        self.stderr_line(what, matches).await
    }

    /// Reads stdout until a line satisfies `matches`, within [`PATIENCE`].
    pub async fn stdout_line(&mut self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        timeout(PATIENCE, async {
            while let Some(line) = self.stdout.recv().await {
                if matches(&line) {
                    return line;
                }
            }
            panic!("stdout ended before {what}");
        })
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what} on stdout"))
    }

    /// The binary on the file `config`, in front of `upstream`, both listeners on loopback ports it picks,
    /// started in `dir`: it, once listening, and the `listening` line (which names both addresses).
    pub async fn serve(config: &str, upstream: &str, dir: &Path) -> (Self, SocketAddr, String) {
        let args = [
            "--config",
            config,
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--upstream",
            upstream,
        ];
        let mut edge = Self::spawn(&args, &[], Some(dir));
        let (addr, line) = edge.listening().await;
        (edge, addr, line)
    }

    /// The `listening` line's `addr=`.
    pub async fn listening(&mut self) -> (SocketAddr, String) {
        let line = self
            .stderr_line("the listening line", |l| l.contains("listening"))
            .await;
        (field(&line, "addr").parse().unwrap(), line)
    }

    /// Sends a signal with `kill(1)`.
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid.to_string())
            .status()
            .expect("cannot run kill");
        assert!(status.success(), "kill -{name} {} failed", self.pid);
    }

    /// Waits (bounded) for the process to exit.
    pub async fn exit_status(&mut self) -> ExitStatus {
        match timeout(PATIENCE, self.child.wait()).await {
            Ok(status) => status.unwrap(),
            Err(_) => panic!("the process did not exit; log:\n{}", self.log.join("\n")),
        }
    }

    /// After exit: every stderr line up to the end of the pipe, appended to `log`; returns the whole log.
    pub async fn whole_log(&mut self) -> &[String] {
        timeout(PATIENCE, async {
            while let Some(line) = self.stderr.recv().await {
                self.log.push(line);
            }
        })
        .await
        .expect("stderr did not end after exit");
        &self.log
    }
}

/// `name=value` of a text log line (`value` up to the next space).
pub fn field<'a>(line: &'a str, name: &str) -> &'a str {
    let prefix = format!("{name}=");
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
}
