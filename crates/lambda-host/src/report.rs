//! What the platform says about an invocation, in Lambda's words: the
//! START / END / REPORT log lines and the error bodies for failures that the
//! host detects itself (timeouts, runtimes that exit, oversized responses).
//! Callers and log parsers written for Lambda match on these texts, so they
//! follow Lambda's formats rather than our own.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use bytes::Bytes;

/// The largest response a runtime may post: Lambda's 6 MB synchronous limit,
/// which it counts as 6 MiB plus 100 bytes.
pub const MAX_RESPONSE_BYTES: usize = 6 * 1024 * 1024 + 100;

/// Error types the host reports for failures it detects itself.
pub mod error_type {
    /// The invocation ran past the function's timeout; the instance was killed.
    pub const TIMEOUT: &str = "Sandbox.Timedout";
    /// The runtime process exited during init or an invocation.
    pub const EXIT: &str = "Runtime.ExitError";
    /// The runtime process was killed for using more than its memory size.
    pub const OUT_OF_MEMORY: &str = "Runtime.OutOfMemory";
    /// The runtime posted a response larger than [`super::MAX_RESPONSE_BYTES`].
    pub const RESPONSE_TOO_LARGE: &str = "Function.ResponseSizeTooLarge";
    /// A runtime posted an error without saying which.
    pub const UNKNOWN: &str = "Runtime.Unknown";
}

/// Lambda's `{"errorMessage", "errorType"}` body.
pub(crate) fn error_body(error_type: &str, message: &str) -> Bytes {
    Bytes::from(serde_json::json!({ "errorMessage": message, "errorType": error_type }).to_string())
}

/// The message Lambda gives errors it detects while serving a request.
pub(crate) fn platform_message(request_id: &str, error: &str) -> String {
    format!("RequestId: {request_id} Error: {error}")
}

pub(crate) fn timeout_error(timeout: Duration) -> String {
    format!("Task timed out after {:.2} seconds", timeout.as_secs_f64())
}

pub(crate) fn start_line(request_id: &str) -> String {
    format!("START RequestId: {request_id} Version: $LATEST")
}

pub(crate) fn end_line(request_id: &str) -> String {
    format!("END RequestId: {request_id}")
}

pub(crate) struct Report<'a> {
    pub request_id: &'a str,
    pub duration: Duration,
    pub memory_mb: u64,
    pub max_memory_used_mb: Option<u64>,
    pub init_duration: Option<Duration>,
}

impl Report<'_> {
    pub(crate) fn line(&self) -> String {
        let duration_ms = self.duration.as_secs_f64() * 1000.0;
        // Lambda bills whole milliseconds, rounded up, at least one.
        let billed_ms = (duration_ms.ceil() as u64).max(1);
        let mut line = format!(
            "REPORT RequestId: {}\tDuration: {duration_ms:.2} ms\tBilled Duration: {billed_ms} ms\tMemory Size: {} MB",
            self.request_id, self.memory_mb
        );
        if let Some(used) = self.max_memory_used_mb {
            line.push_str(&format!("\tMax Memory Used: {used} MB"));
        }
        if let Some(init) = self.init_duration {
            line.push_str(&format!("\tInit Duration: {:.2} ms", init.as_secs_f64() * 1000.0));
        }
        line
    }
}

/// How a runtime process ended, worded as Lambda words it ("exit status 1",
/// "signal: killed"): Lambda's platform is written in Go and prints Go's
/// process-state text, which users grep their logs for.
pub(crate) fn exit_description(status: &ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit status {code}");
    }
    match status.signal() {
        Some(signal) => {
            let name = signal_name(signal).map(str::to_string).unwrap_or_else(|| format!("signal {signal}"));
            let core = if status.core_dumped() { " (core dumped)" } else { "" };
            format!("signal: {name}{core}")
        }
        None => "unknown exit status".to_string(),
    }
}

/// The runtime-exit error: Lambda says "exited without providing a reason"
/// when the process ended cleanly, since a runtime is never meant to exit.
pub(crate) fn exit_error(status: Option<&ExitStatus>) -> String {
    match status {
        Some(s) if s.success() => "Runtime exited without providing a reason".to_string(),
        Some(s) => format!("Runtime exited with error: {}", exit_description(s)),
        None => "Runtime exited with error: unknown exit status".to_string(),
    }
}

fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        libc::SIGHUP => "hangup",
        libc::SIGINT => "interrupt",
        libc::SIGQUIT => "quit",
        libc::SIGILL => "illegal instruction",
        libc::SIGTRAP => "trace/breakpoint trap",
        libc::SIGABRT => "aborted",
        libc::SIGBUS => "bus error",
        libc::SIGFPE => "floating point exception",
        libc::SIGKILL => "killed",
        libc::SIGUSR1 => "user defined signal 1",
        libc::SIGSEGV => "segmentation fault",
        libc::SIGUSR2 => "user defined signal 2",
        libc::SIGPIPE => "broken pipe",
        libc::SIGALRM => "alarm clock",
        libc::SIGTERM => "terminated",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_line_matches_lambda() {
        let report = Report {
            request_id: "abc",
            duration: Duration::from_micros(1234),
            memory_mb: 256,
            max_memory_used_mb: Some(40),
            init_duration: Some(Duration::from_micros(120_500)),
        };
        assert_eq!(
            report.line(),
            "REPORT RequestId: abc\tDuration: 1.23 ms\tBilled Duration: 2 ms\tMemory Size: 256 MB\t\
             Max Memory Used: 40 MB\tInit Duration: 120.50 ms"
        );
        let warm = Report { init_duration: None, duration: Duration::ZERO, ..report };
        assert!(warm.line().ends_with("Billed Duration: 1 ms\tMemory Size: 256 MB\tMax Memory Used: 40 MB"));
    }

    #[test]
    fn exit_statuses_read_like_go() {
        assert_eq!(exit_error(Some(&ExitStatus::from_raw(1 << 8))), "Runtime exited with error: exit status 1");
        assert_eq!(exit_error(Some(&ExitStatus::from_raw(libc::SIGKILL))), "Runtime exited with error: signal: killed");
        assert_eq!(exit_error(Some(&ExitStatus::from_raw(0))), "Runtime exited without providing a reason");
        assert_eq!(
            exit_description(&ExitStatus::from_raw(libc::SIGSEGV | 0x80)),
            "signal: segmentation fault (core dumped)"
        );
        assert_eq!(timeout_error(Duration::from_secs(3)), "Task timed out after 3.00 seconds");
    }
}
