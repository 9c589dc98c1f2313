use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::ScheduleError;
use crate::cron::Cron;
use crate::rate::Rate;

/// A parsed `rate(...)` or `cron(...)` expression and the zone it is read in.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    kind: Kind,
    timezone: Tz,
    /// Where a rate counts its periods from (see [`Schedule::started_at`]).
    start: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Rate(Rate),
    Cron(Cron),
}

impl Schedule {
    /// Parses an EventBridge schedule expression. `timezone` is an IANA name
    /// (`America/New_York`); cron fields are wall-clock time there, UTC when
    /// it is `None`. A rate is a fixed duration whatever the zone.
    pub fn parse(expression: &str, timezone: Option<&str>) -> Result<Schedule, ScheduleError> {
        let timezone = match timezone {
            None => Tz::UTC,
            Some(name) => name.parse::<Tz>().map_err(|_| ScheduleError::UnknownTimeZone(name.to_string()))?,
        };
        let expression = expression.trim();
        let inner = |prefix: &str| expression.strip_prefix(prefix).and_then(|rest| rest.strip_suffix(')'));
        let kind = if let Some(inner) = inner("rate(") {
            Kind::Rate(Rate::parse(inner)?)
        } else if let Some(inner) = inner("cron(") {
            Kind::Cron(Cron::parse(inner)?)
        } else {
            return Err(ScheduleError::UnknownForm(expression.to_string()));
        };
        Ok(Schedule { kind, timezone, start: None })
    }

    /// Anchors a rate at `start`: it ticks at `start + period`, then every
    /// period. Without it a rate ticks one period after whatever time
    /// [`Schedule::next_after`] is given. No effect on a cron expression.
    pub fn started_at(mut self, start: DateTime<Utc>) -> Schedule {
        self.start = Some(start);
        self
    }

    /// The next fire time strictly after `after`; `None` when a cron
    /// expression never fires again (its years are past).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.kind {
            Kind::Rate(rate) => rate.next_after(self.start.unwrap_or(after), after),
            Kind::Cron(cron) => cron.next_after(&self.timezone, after),
        }
    }

    pub fn timezone(&self) -> Tz {
        self.timezone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn parses_both_forms() {
        let at = utc("2026-11-26T10:00:00Z");
        let rate = Schedule::parse("rate(5 minutes)", None).unwrap();
        assert_eq!(rate.next_after(at), Some(utc("2026-11-26T10:05:00Z")));
        let cron = Schedule::parse(" cron(0 18 ? * MON-FRI *) ", None).unwrap();
        assert_eq!(cron.next_after(at), Some(utc("2026-11-26T18:00:00Z")));
        let ny = Schedule::parse("cron(0 18 ? * MON-FRI *)", Some("America/New_York")).unwrap();
        assert_eq!(ny.timezone(), chrono_tz::America::New_York);
        assert_eq!(ny.next_after(at), Some(utc("2026-11-26T23:00:00Z")));
    }

    #[test]
    fn a_started_rate_keeps_its_phase() {
        let start = utc("2026-11-26T10:00:00Z");
        let rate = Schedule::parse("rate(1 hour)", Some("Europe/Paris")).unwrap().started_at(start);
        assert_eq!(rate.next_after(start), Some(utc("2026-11-26T11:00:00Z")));
        assert_eq!(rate.next_after(utc("2026-11-26T13:30:00Z")), Some(utc("2026-11-26T14:00:00Z")));
        // started_at does not move a cron schedule.
        let cron = Schedule::parse("cron(0 12 * * ? *)", None).unwrap().started_at(start);
        assert_eq!(cron.next_after(start), Some(utc("2026-11-26T12:00:00Z")));
    }

    #[test]
    fn errors_say_what_was_expected() {
        let err = |e: &str, tz: Option<&str>| Schedule::parse(e, tz).unwrap_err().to_string();
        assert_eq!(
            err("cron(0 10 * * ?)", None),
            "cron() takes 6 fields (minutes hours day-of-month month day-of-week year), got 5"
        );
        assert!(err("cron(0 10 1 * MON *)", None).starts_with("day-of-month or day-of-week must be ?"));
        assert_eq!(
            err("cron(0 10 1 JANUARY ? *)", None),
            r#"invalid month field "JANUARY": expected values 1-12 or JAN-DEC, got "JANUARY""#
        );
        assert!(err("cron(0 10 * * ? *)", Some("Mars/Base")).starts_with(r#"unknown time zone "Mars/Base""#));
        assert!(err("rate(5 weeks)", None).starts_with(
            "expected rate(N unit) with unit one of minute, minutes, hour, hours, day, days, second, seconds"
        ));
        assert!(err("every 5 minutes", None).starts_with("expected rate(N unit) or cron("));
        assert!(err("rate(5 minutes", None).starts_with("expected rate(N unit) or cron("));
        assert!(err("RATE(5 minutes)", None).starts_with("expected rate(N unit) or cron("));
    }
}
