//! An instance's stdout and stderr. Both go into one pipe, as Lambda puts
//! both into one log stream, so lines keep the order the function wrote them
//! in. Each line is logged with the request id being served and kept in the
//! invocation's log tail.
//!
//! Reads happen under the same lock that starts and ends an invocation's
//! log: ending one first drains whatever the pipe holds, so every line the
//! function wrote before posting its result is in that invocation's tail,
//! never in the next one's.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::io::unix::AsyncFd;

/// Lambda returns the last 4 KB of an invocation's log.
pub const LOG_TAIL_BYTES: usize = 4096;
/// A "line" without a newline is cut here, as Lambda cuts log events, so a
/// runtime writing endless bytes cannot grow our memory.
const MAX_LINE_BYTES: usize = 256 * 1024;
/// Bytes the background relay reads before it lets other tasks run.
const RELAY_BUDGET: usize = 64 * 1024;
/// Bytes an invocation's start or end reads to catch up with the pipe: more
/// than a pipe holds (64 KB by default), so whatever the function wrote
/// before it posted its result is read, but bounded, so a function that
/// never stops writing cannot hold the invocation here.
const CATCH_UP_BUDGET: usize = 1 << 20;

pub(crate) struct Output {
    /// Read with read(2) directly rather than through Tokio's readiness
    /// cache: a drain must see what the pipe holds right now, even before the
    /// reactor has noticed it.
    pipe: AsyncFd<OwnedFd>,
    function: Arc<str>,
    instance: Arc<str>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    partial: Vec<u8>,
    request_id: Option<Arc<str>>,
    tail: Tail,
    closed: bool,
}

impl Output {
    /// Wraps the pipe's read end. Needs a Tokio runtime (the pipe registers
    /// with its reactor).
    pub(crate) fn new(read_end: OwnedFd, function: Arc<str>, instance: Arc<str>) -> io::Result<Arc<Self>> {
        let fd = read_end.as_raw_fd();
        // SAFETY: fcntl(2) on an fd we own.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        // SAFETY: the AsyncFd owns the fd from here to its drop, so it stays
        // open and the same file all that time.
        let pipe = unsafe { AsyncFd::register_with_interest(read_end, tokio::io::Interest::READABLE) }?;
        Ok(Arc::new(Self { pipe, function, instance, state: Mutex::new(State::default()) }))
    }

    /// Reads until every writer (the runtime and anything it started) has
    /// closed the pipe.
    pub(crate) async fn relay(self: Arc<Self>) {
        loop {
            let Ok(mut ready) = self.pipe.readable().await else { break };
            let emptied = {
                let mut state = self.lock();
                let emptied = self.drain(&mut state, RELAY_BUDGET);
                if state.closed {
                    break;
                }
                emptied
            };
            if emptied {
                // Wait for the next write. (Tokio keeps the readiness if a
                // write came in since `readable` returned.)
                ready.clear_ready();
            } else {
                // A function writing as fast as it is logged would keep a
                // drain going for good: let the runtime's other work, and the
                // invocation's own use of this log, have their turn.
                drop(ready);
                tokio::task::yield_now().await;
            }
        }
    }

    /// Starts an invocation's log. A cold start keeps what init wrote (it is
    /// what explains an init failure); a warm one drops what the runtime wrote
    /// between invocations, which was logged already.
    pub(crate) fn begin(&self, request_id: Arc<str>, keep_earlier: bool) {
        let mut state = self.lock();
        self.drain(&mut state, CATCH_UP_BUDGET);
        if !keep_earlier {
            state.tail = Tail::default();
        }
        state.request_id = Some(request_id);
    }

    /// Adds a platform line (START, END, REPORT, errors) to the tail, after
    /// everything the function wrote before it.
    pub(crate) fn platform_line(&self, line: &str) {
        let mut state = self.lock();
        self.drain(&mut state, CATCH_UP_BUDGET);
        state.tail.push_line(line);
    }

    /// Ends the invocation's log and returns its last 4 KB.
    pub(crate) fn finish(&self) -> String {
        let mut state = self.lock();
        self.drain(&mut state, CATCH_UP_BUDGET);
        state.request_id = None;
        state.tail.take()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves only a log buffer behind;
        // keep using it rather than losing the instance's output.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reads what the pipe holds without waiting, `budget` bytes at most;
    /// true when it read all there was (or the pipe closed).
    fn drain(&self, state: &mut State, budget: usize) -> bool {
        let mut buf = [0u8; 16 * 1024];
        let mut read_so_far = 0;
        while !state.closed {
            if read_so_far >= budget {
                return false;
            }
            // SAFETY: read(2) into a buffer we own, on our non-blocking fd.
            let n = unsafe { libc::read(self.pipe.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            let read = if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) };
            match read {
                Ok(0) => {
                    state.closed = true;
                    if !state.partial.is_empty() {
                        let rest = std::mem::take(&mut state.partial);
                        self.line(state, &rest);
                    }
                }
                Ok(n) => {
                    read_so_far += n;
                    self.feed(state, &buf[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    tracing::warn!(function = %self.function, %error, "cannot read function output");
                    state.closed = true;
                }
            }
        }
        true
    }

    fn feed(&self, state: &mut State, mut bytes: &[u8]) {
        while let Some(newline) = bytes.iter().position(|&b| b == b'\n') {
            if state.partial.is_empty() {
                self.line(state, &bytes[..newline]);
            } else {
                let mut line = std::mem::take(&mut state.partial);
                line.extend_from_slice(&bytes[..newline]);
                self.line(state, &line);
            }
            bytes = &bytes[newline + 1..];
        }
        state.partial.extend_from_slice(bytes);
        if state.partial.len() >= MAX_LINE_BYTES {
            let line = std::mem::take(&mut state.partial);
            self.line(state, &line);
        }
    }

    fn line(&self, state: &mut State, bytes: &[u8]) {
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        let line = String::from_utf8_lossy(bytes);
        match &state.request_id {
            Some(request_id) => tracing::info!(
                target: "switchyard::function_output",
                function = %self.function,
                request_id = %request_id,
                "{line}"
            ),
            None => tracing::info!(
                target: "switchyard::function_output",
                function = %self.function,
                instance = %self.instance,
                "{line}"
            ),
        }
        state.tail.push_line(&line);
    }
}

/// The end of a log, kept to [`LOG_TAIL_BYTES`] (trimmed in batches so
/// each line does not move the buffer).
#[derive(Default)]
struct Tail(String);

impl Tail {
    fn push_line(&mut self, line: &str) {
        self.0.push_str(line);
        self.0.push('\n');
        if self.0.len() > 4 * LOG_TAIL_BYTES {
            self.trim();
        }
    }

    fn trim(&mut self) {
        if self.0.len() > LOG_TAIL_BYTES {
            let mut cut = self.0.len() - LOG_TAIL_BYTES;
            // Never split a character: the tail is text.
            while !self.0.is_char_boundary(cut) {
                cut += 1;
            }
            self.0.drain(..cut);
        }
    }

    fn take(&mut self) -> String {
        self.trim();
        std::mem::take(&mut self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_last_4_kb_on_a_char_boundary() {
        let mut tail = Tail::default();
        for i in 0..2000 {
            tail.push_line(&format!("é line {i}"));
        }
        let text = tail.take();
        assert!(text.len() <= LOG_TAIL_BYTES && text.len() > LOG_TAIL_BYTES - 4);
        assert!(text.ends_with("é line 1999\n"));
        assert!(tail.take().is_empty());
    }

    #[tokio::test]
    async fn lines_written_before_finish_are_in_the_tail() {
        use tokio::io::AsyncWriteExt;
        let (mut tx, rx) = tokio::net::unix::pipe::pipe().expect("pipe");
        let output = Output::new(rx.into_nonblocking_fd().expect("fd"), "f".into(), "i".into()).expect("output");
        output.begin("r1".into(), false);
        tx.write_all(b"one\ntwo\r\nthr").await.expect("write");
        tx.write_all(b"ee\n").await.expect("write");
        output.platform_line("END RequestId: r1");
        assert_eq!(output.finish(), "one\ntwo\nthree\nEND RequestId: r1\n");
        tx.write_all(b"between\n").await.expect("write");
        output.begin("r2".into(), false);
        tx.write_all(b"last without newline").await.expect("write");
        drop(tx);
        assert_eq!(output.finish(), "last without newline\n");
    }
}
