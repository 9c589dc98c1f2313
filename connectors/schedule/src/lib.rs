//! Switchyard's schedule source: EventBridge `rate()` and `cron()` schedules.
//!
//! Each fire time becomes one record holding EventBridge's Scheduled Event
//! (`"detail-type": "Scheduled Event"`, `"source": "aws.events"`), or the
//! mapping's constant `input` in its place, as an EventBridge target's
//! constant input replaces the event.
//!
//! - `rate(N unit)` counts whole periods from when the source started: the
//!   first tick one period after the start, then every period.
//! - `cron(minutes hours day-of-month month day-of-week year)` follows
//!   EventBridge's syntax (1 = Sunday in day-of-week, `?`, `L`, `W`, `#`,
//!   years 1970-2199) and is read as wall-clock time in the configured IANA
//!   time zone (UTC by default). As EventBridge Scheduler does across
//!   daylight saving changes, a time the clock skips does not fire that day
//!   and a time the clock repeats fires once.
//!
//! Ticks are not persisted. A fire time that passes while the process is
//! stopped is not replayed after a restart, and a rate starts counting again
//! from the restart. While running, a tick that could not be handed on in time
//! (a full channel is backpressure) is skipped rather than sent in a burst:
//! the next tick is the next fire time after now.

mod cron;
mod error;
mod rate;
mod schedule;
mod source;

pub use error::ScheduleError;
pub use schedule::Schedule;
pub use source::ScheduleSource;

/// A schedule mapping's source configuration.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// `rate(5 minutes)` or `cron(0 10 * * ? *)`.
    pub expression: String,
    /// IANA time zone the cron fields are read in; UTC when absent.
    #[serde(default)]
    pub timezone: Option<String>,
    /// Sent instead of the Scheduled Event when set.
    #[serde(default)]
    pub input: Option<serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_its_fields_and_refuses_others() {
        let config: ScheduleConfig = serde_json::from_value(serde_json::json!({
            "expression": "cron(0 9 ? * MON-FRI *)",
            "timezone": "Europe/Paris",
            "input": {"report": "daily"}
        }))
        .unwrap();
        assert_eq!(config.timezone.as_deref(), Some("Europe/Paris"));
        assert_eq!(config.input, Some(serde_json::json!({"report": "daily"})));

        let minimal: ScheduleConfig =
            serde_json::from_value(serde_json::json!({"expression": "rate(1 hour)"})).unwrap();
        assert!(minimal.timezone.is_none() && minimal.input.is_none());

        let unknown = serde_json::from_value::<ScheduleConfig>(serde_json::json!({
            "expression": "rate(1 hour)",
            "schedule": "rate(2 hours)"
        }));
        assert!(unknown.is_err());
    }
}
