use std::fmt;
use std::time::Duration;

/// How many missing payloads `Display` lists before summarising the rest.
const LISTED: usize = 10;

/// A broken promise found by [`Conformance::run`](crate::Conformance::run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// These payloads were never delivered, and the source made no progress
    /// towards them after a final restart (or it ended on its own before
    /// delivering them): the broker no longer has them for this consumer.
    Lost { missing: Vec<String> },
    /// Within an ordered scope, a payload reached the function for the first
    /// time after a payload produced later than it.
    OutOfOrder { scope: String, detail: String },
    /// `run` returned an error or panicked, or an ack callback panicked.
    SourceFailed(String),
    /// The source was still making progress when the time ran out: it may be
    /// correct but too slow for `Conformance::timeout` (or it redelivers only
    /// on restart).
    Timeout { missing: usize },
    /// `run` did not return within `Conformance::shutdown_timeout` after its
    /// shutdown token was cancelled.
    ShutdownTimeout { waited: Duration },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Lost { missing } => {
                write!(f, "{} produced payload(s) were never delivered: ", missing.len())?;
                let listed: Vec<&str> = missing.iter().take(LISTED).map(String::as_str).collect();
                write!(f, "{}", listed.join(", "))?;
                if missing.len() > LISTED {
                    write!(f, " and {} more", missing.len() - LISTED)?;
                }
                Ok(())
            }
            Violation::OutOfOrder { scope, detail } => {
                write!(f, "out of order in scope {scope:?}: {detail}")
            }
            Violation::SourceFailed(why) => write!(f, "source failed: {why}"),
            Violation::Timeout { missing } => {
                write!(f, "timed out with {missing} payload(s) still undelivered while the source was making progress")
            }
            Violation::ShutdownTimeout { waited } => {
                write!(f, "run() did not return within {waited:?} after shutdown was cancelled")
            }
        }
    }
}

impl std::error::Error for Violation {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_lists_the_first_payloads_only() {
        let missing = (0..12).map(|i| format!("p{i}")).collect();
        let text = Violation::Lost { missing }.to_string();
        assert!(text.starts_with("12 produced payload(s) were never delivered: p0, p1"), "{text}");
        assert!(text.ends_with("p9 and 2 more"), "{text}");
    }
}
