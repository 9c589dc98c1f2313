//! EventBridge's `rate(N unit)`.

use chrono::{DateTime, TimeDelta, Utc};

use crate::ScheduleError;

/// A fixed period. `second`/`seconds` are not EventBridge's; they are
/// accepted for local use, where waiting a minute for a tick is tedious.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rate {
    pub period: TimeDelta,
}

/// (singular, plural, seconds)
const UNITS: [(&str, &str, u64); 4] =
    [("second", "seconds", 1), ("minute", "minutes", 60), ("hour", "hours", 3_600), ("day", "days", 86_400)];

impl Rate {
    /// Parses what is between `rate(` and `)`.
    pub fn parse(inner: &str) -> Result<Rate, ScheduleError> {
        let syntax = || ScheduleError::RateSyntax(format!("rate({inner})"));
        let parts: Vec<&str> = inner.split_whitespace().collect();
        let [value, unit] = parts[..] else {
            return Err(syntax());
        };
        let Some(&(singular, plural, seconds)) =
            UNITS.iter().find(|(singular, plural, _)| unit == *singular || unit == *plural)
        else {
            return Err(syntax());
        };
        // Digits only: EventBridge takes neither a sign nor a fraction.
        let n = match value.parse::<u64>() {
            Ok(n) if n > 0 && value.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(ScheduleError::RateValue(value.to_string())),
        };
        if n == 1 && unit != singular {
            return Err(ScheduleError::RateNeedsSingular { unit: unit.to_string(), expected: singular });
        }
        if n > 1 && unit != plural {
            return Err(ScheduleError::RateNeedsPlural { value: n, unit: unit.to_string(), expected: plural });
        }
        let period = n
            .checked_mul(seconds)
            .and_then(|s| i64::try_from(s).ok())
            .and_then(TimeDelta::try_seconds)
            .ok_or_else(|| ScheduleError::RateTooLong { value: n, unit: unit.to_string() })?;
        Ok(Rate { period })
    }

    /// The first tick `start + k * period` (k >= 1) strictly after `after`.
    /// Ticks before `after` are skipped, not caught up on.
    pub fn next_after(&self, start: DateTime<Utc>, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let period = nanos(self.period);
        let elapsed = nanos(after - start);
        let k = if elapsed < 0 { 1 } else { elapsed / period + 1 };
        let offset = k.checked_mul(period)?;
        let secs = i64::try_from(offset / 1_000_000_000).ok()?;
        let subsec = i64::try_from(offset % 1_000_000_000).ok()?;
        let delta = TimeDelta::try_seconds(secs)?.checked_add(&TimeDelta::nanoseconds(subsec))?;
        start.checked_add_signed(delta)
    }
}

/// A delta's length in nanoseconds; i128 so centuries do not overflow.
fn nanos(delta: TimeDelta) -> i128 {
    i128::from(delta.num_seconds()) * 1_000_000_000 + i128::from(delta.subsec_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn period(text: &str) -> Result<i64, ScheduleError> {
        Rate::parse(text).map(|r| r.period.num_seconds())
    }

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn parses_every_unit() {
        assert_eq!(period("1 minute"), Ok(60));
        assert_eq!(period("5 minutes"), Ok(300));
        assert_eq!(period("1 hour"), Ok(3_600));
        assert_eq!(period("12 hours"), Ok(43_200));
        assert_eq!(period("1 day"), Ok(86_400));
        assert_eq!(period("7 days"), Ok(604_800));
        assert_eq!(period("1 second"), Ok(1));
        assert_eq!(period("30 seconds"), Ok(30));
    }

    #[test]
    fn singular_for_one_plural_for_more() {
        assert_eq!(
            Rate::parse("1 minutes"),
            Err(ScheduleError::RateNeedsSingular { unit: "minutes".into(), expected: "minute" })
        );
        assert_eq!(
            Rate::parse("5 hour"),
            Err(ScheduleError::RateNeedsPlural { value: 5, unit: "hour".into(), expected: "hours" })
        );
        assert_eq!(
            Rate::parse("1 days").unwrap_err().to_string(),
            "rate(1 days) must use the singular unit: rate(1 day)"
        );
        assert_eq!(Rate::parse("2 day").unwrap_err().to_string(), "rate(2 day) must use the plural unit: rate(2 days)");
    }

    #[test]
    fn refuses_bad_values_and_units() {
        for text in ["0 minutes", "-1 minute", "+2 minutes", "1.5 hours", "x minutes"] {
            assert!(matches!(Rate::parse(text), Err(ScheduleError::RateValue(_))), "{text}");
        }
        for text in ["5 weeks", "5", "", "5 minutes please", "5 MINUTES"] {
            assert!(matches!(Rate::parse(text), Err(ScheduleError::RateSyntax(_))), "{text}");
        }
        assert_eq!(
            Rate::parse("5 weeks").unwrap_err().to_string(),
            "expected rate(N unit) with unit one of minute, minutes, hour, hours, day, days, \
             second, seconds, got \"rate(5 weeks)\""
        );
        assert!(matches!(Rate::parse("18446744073709551615 days"), Err(ScheduleError::RateTooLong { .. })));
    }

    #[test]
    fn ticks_count_from_the_start_and_skip_missed_ones() {
        let rate = Rate::parse("5 minutes").unwrap();
        let start = utc("2026-11-26T10:00:00.250Z");
        assert_eq!(rate.next_after(start, start), Some(utc("2026-11-26T10:05:00.250Z")));
        // Asked exactly at a tick, the next one follows.
        assert_eq!(rate.next_after(start, utc("2026-11-26T10:05:00.250Z")), Some(utc("2026-11-26T10:10:00.250Z")));
        // Slow by 17 minutes: the ticks at 10:05, 10:10 and 10:15 are gone.
        assert_eq!(rate.next_after(start, utc("2026-11-26T10:17:00Z")), Some(utc("2026-11-26T10:20:00.250Z")));
        // Before the start, the first tick is still one period in.
        assert_eq!(rate.next_after(start, utc("2026-11-26T09:00:00Z")), Some(utc("2026-11-26T10:05:00.250Z")));
    }
}
