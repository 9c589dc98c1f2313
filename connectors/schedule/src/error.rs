/// Why a schedule expression or time zone was refused. Each message says what
/// was expected, so it can be shown to whoever wrote the configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("expected rate(N unit) or cron(minutes hours day-of-month month day-of-week year), got {0:?}")]
    UnknownForm(String),

    #[error(
        "expected rate(N unit) with unit one of minute, minutes, hour, hours, day, days, second, seconds, got {0:?}"
    )]
    RateSyntax(String),

    #[error("expected the rate value to be a positive integer, got {0:?}")]
    RateValue(String),

    #[error("rate(1 {unit}) must use the singular unit: rate(1 {expected})")]
    RateNeedsSingular { unit: String, expected: &'static str },

    #[error("rate({value} {unit}) must use the plural unit: rate({value} {expected})")]
    RateNeedsPlural { value: u64, unit: String, expected: &'static str },

    #[error("rate({value} {unit}) is longer than the longest period supported")]
    RateTooLong { value: u64, unit: String },

    #[error("cron() takes 6 fields (minutes hours day-of-month month day-of-week year), got {0}")]
    CronFieldCount(usize),

    #[error("day-of-month or day-of-week must be ? (a value or * in one of them needs ? in the other)")]
    BothDaysSet,

    #[error("only one of day-of-month and day-of-week may be ?; put a value or * in the other")]
    BothDaysAny,

    #[error("invalid {field} field {text:?}: expected {expected}")]
    CronField { field: &'static str, text: String, expected: String },

    #[error("unknown time zone {0:?} (expected an IANA name such as America/New_York)")]
    UnknownTimeZone(String),
}
