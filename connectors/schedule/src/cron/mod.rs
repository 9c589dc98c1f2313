//! EventBridge's `cron(minutes hours day-of-month month day-of-week year)`.
//!
//! Evaluated here rather than with the `croner` crate: croner moves a fixed
//! time that falls into a spring-forward gap to just after the gap, and fires
//! wildcard times twice in a fall-back overlap, where EventBridge skips the
//! first and fires the second once; its day-of-week `L` also differs.

mod day;
mod field;

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, LocalResult, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

use crate::ScheduleError;
use day::DayRule;
use field::{HOURS, MINUTES, MONTH, YEAR};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cron {
    minutes: BTreeSet<u32>,
    hours: BTreeSet<u32>,
    days: DayRule,
    months: BTreeSet<u32>,
    years: BTreeSet<u32>,
}

impl Cron {
    /// Parses the six fields between `cron(` and `)`.
    pub fn parse(fields: &str) -> Result<Cron, ScheduleError> {
        let parts: Vec<&str> = fields.split_whitespace().collect();
        let [minutes, hours, dom, month, dow, year] = parts[..] else {
            return Err(ScheduleError::CronFieldCount(parts.len()));
        };
        Ok(Cron {
            minutes: MINUTES.parse(minutes)?,
            hours: HOURS.parse(hours)?,
            days: DayRule::parse(dom, dow)?,
            months: MONTH.parse(month)?,
            years: YEAR.parse(year)?,
        })
    }

    /// The first fire time strictly after `after`, with the fields read as
    /// wall-clock time in `tz`.
    ///
    /// A wall-clock time the zone skips (spring forward) does not fire; one it
    /// repeats (fall back) fires once, at its first occurrence. Both follow
    /// from taking each matching local time's earliest instant, which only
    /// grows with the local time: a local time at or before `after`'s own can
    /// therefore never be later than `after`, and the search starts there.
    pub fn next_after(&self, tz: &Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local_after = after.with_timezone(tz).naive_local();
        let start = local_after.date();
        let first_year = u32::try_from(start.year()).unwrap_or(0);
        for &year in self.years.range(first_year..) {
            let year = i32::try_from(year).ok()?;
            for &month in &self.months {
                if (year, month) < (start.year(), start.month()) {
                    continue;
                }
                for day in 1..=31 {
                    let Some(date) = NaiveDate::from_ymd_opt(year, month, day) else {
                        break;
                    };
                    if date < start || !self.days.matches(date) {
                        continue;
                    }
                    for &hour in &self.hours {
                        for &minute in &self.minutes {
                            let Some(local) = date.and_hms_opt(hour, minute, 0) else {
                                continue;
                            };
                            if local <= local_after {
                                continue;
                            }
                            let instant = match tz.from_local_datetime(&local) {
                                LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t.with_timezone(&Utc),
                                LocalResult::None => continue,
                            };
                            if instant > after {
                                return Some(instant);
                            }
                        }
                    }
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    /// The next fire time of `cron(fields)` in `tz` after `after`, as RFC 3339
    /// UTC, or "none".
    fn next_in(tz: &str, fields: &str, after: &str) -> String {
        let tz: Tz = tz.parse().unwrap();
        let cron = Cron::parse(fields).unwrap();
        match cron.next_after(&tz, utc(after)) {
            Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            None => "none".into(),
        }
    }

    fn next(fields: &str, after: &str) -> String {
        next_in("UTC", fields, after)
    }

    /// Several fire times in a row, starting after `after`.
    fn series(tz: &str, fields: &str, after: &str, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut at = after.to_string();
        for _ in 0..n {
            at = next_in(tz, fields, &at);
            out.push(at.clone());
        }
        out
    }

    #[test]
    fn every_day_at_ten() {
        let e = "0 10 * * ? *";
        assert_eq!(next(e, "2026-11-26T09:59:59Z"), "2026-11-26T10:00:00Z");
        // Strictly after: a tick at exactly 10:00 moves on to tomorrow.
        assert_eq!(next(e, "2026-11-26T10:00:00Z"), "2026-11-27T10:00:00Z");
        assert_eq!(next(e, "2026-11-26T10:00:00.5Z"), "2026-11-27T10:00:00Z");
    }

    #[test]
    fn every_day_at_quarter_past_twelve_across_the_year_end() {
        let e = "15 12 * * ? *";
        assert_eq!(next(e, "2026-12-31T12:15:00Z"), "2027-01-01T12:15:00Z");
        assert_eq!(next(e, "2026-12-31T12:14:00Z"), "2026-12-31T12:15:00Z");
    }

    #[test]
    fn weekdays_at_six_pm() {
        let e = "0 18 ? * MON-FRI *";
        // 2026-11-27 is a Friday.
        assert_eq!(next(e, "2026-11-27T18:00:00Z"), "2026-11-30T18:00:00Z");
        assert_eq!(next(e, "2026-11-26T18:30:00Z"), "2026-11-27T18:00:00Z");
    }

    #[test]
    fn first_of_the_month_at_eight() {
        let e = "0 8 1 * ? *";
        assert_eq!(next(e, "2026-01-01T08:00:00Z"), "2026-02-01T08:00:00Z");
        assert_eq!(next(e, "2026-12-15T00:00:00Z"), "2027-01-01T08:00:00Z");
    }

    #[test]
    fn every_fifteen_minutes() {
        let e = "0/15 * * * ? *";
        assert_eq!(next(e, "2026-11-26T10:07:30Z"), "2026-11-26T10:15:00Z");
        assert_eq!(next(e, "2026-11-26T10:45:00Z"), "2026-11-26T11:00:00Z");
        assert_eq!(next(e, "2026-12-31T23:59:00Z"), "2027-01-01T00:00:00Z");
    }

    #[test]
    fn every_ten_minutes_on_weekdays() {
        let e = "0/10 * ? * MON-FRI *";
        // Friday 23:55 -> Monday 00:00.
        assert_eq!(next(e, "2026-11-27T23:55:00Z"), "2026-11-30T00:00:00Z");
        assert_eq!(next(e, "2026-11-30T00:00:00Z"), "2026-11-30T00:10:00Z");
    }

    #[test]
    fn every_five_minutes_in_office_hours() {
        let e = "0/5 8-17 ? * MON-FRI *";
        assert_eq!(next(e, "2026-11-30T08:02:00Z"), "2026-11-30T08:05:00Z");
        // The last tick of the day is 17:55, then 08:00 the next weekday.
        assert_eq!(next(e, "2026-11-30T17:50:00Z"), "2026-11-30T17:55:00Z");
        assert_eq!(next(e, "2026-11-30T17:55:00Z"), "2026-12-01T08:00:00Z");
        assert_eq!(next(e, "2026-11-27T17:55:00Z"), "2026-11-30T08:00:00Z");
    }

    #[test]
    fn first_monday_of_the_month() {
        let e = "0 9 ? * 2#1 *";
        // November 2026's first Monday is the 2nd; December starts on a Tuesday.
        assert_eq!(next(e, "2026-11-01T00:00:00Z"), "2026-11-02T09:00:00Z");
        assert_eq!(next(e, "2026-11-02T09:00:00Z"), "2026-12-07T09:00:00Z");
    }

    #[test]
    fn last_day_of_the_month() {
        let e = "0 0 L * ? *";
        assert_eq!(next(e, "2026-02-01T00:00:00Z"), "2026-02-28T00:00:00Z");
        assert_eq!(next(e, "2028-02-01T00:00:00Z"), "2028-02-29T00:00:00Z");
        assert_eq!(next(e, "2026-02-28T00:00:00Z"), "2026-03-31T00:00:00Z");
    }

    #[test]
    fn last_weekday_of_the_month() {
        // 2026-05-31 is a Sunday: the last weekday is Friday the 29th.
        let e = "0 0 LW * ? *";
        assert_eq!(next(e, "2026-05-01T00:00:00Z"), "2026-05-29T00:00:00Z");
        assert_eq!(next(e, "2026-05-29T00:00:00Z"), "2026-06-30T00:00:00Z");
    }

    #[test]
    fn weekday_nearest_the_fifteenth() {
        let e = "0 0 15W * ? *";
        // 2026-08-15 is a Saturday: Friday the 14th.
        assert_eq!(next(e, "2026-08-01T00:00:00Z"), "2026-08-14T00:00:00Z");
        // 2026-03-15 is a Sunday: Monday the 16th.
        assert_eq!(next(e, "2026-03-01T00:00:00Z"), "2026-03-16T00:00:00Z");
        assert_eq!(next(e, "2026-03-16T00:00:00Z"), "2026-04-15T00:00:00Z");
    }

    #[test]
    fn last_friday_of_the_month() {
        let e = "0 0 ? * 6L *";
        assert_eq!(next(e, "2026-11-01T00:00:00Z"), "2026-11-27T00:00:00Z");
        assert_eq!(next(e, "2026-11-27T00:00:00Z"), "2026-12-25T00:00:00Z");
    }

    #[test]
    fn last_day_of_the_week_is_saturday() {
        assert_eq!(next("0 0 ? * L *", "2026-11-26T00:00:00Z"), "2026-11-28T00:00:00Z");
    }

    #[test]
    fn a_year_bounded_expression_ends() {
        let e = "0 12 1 1 ? 2027";
        assert_eq!(next(e, "2026-06-01T00:00:00Z"), "2027-01-01T12:00:00Z");
        assert_eq!(next(e, "2027-01-01T12:00:00Z"), "none");
        assert_eq!(next("0 0 * * ? 2199", "2199-12-31T00:00:00Z"), "none");
        assert_eq!(next("0 0 * * ? *", "2300-01-01T00:00:00Z"), "none");
    }

    #[test]
    fn a_date_that_never_exists_never_fires() {
        assert_eq!(next("0 0 30 2 ? *", "2026-01-01T00:00:00Z"), "none");
    }

    #[test]
    fn spring_forward_skips_the_missing_time() {
        // America/New_York jumps from 02:00 to 03:00 on 2026-03-08: 02:30
        // does not exist that day, so that day does not fire.
        let tz = "America/New_York";
        let fires = series(tz, "30 2 * * ? *", "2026-03-06T12:00:00Z", 3);
        assert_eq!(
            fires,
            [
                "2026-03-07T07:30:00Z", // 02:30 EST
                "2026-03-09T06:30:00Z", // 02:30 EDT
                "2026-03-10T06:30:00Z",
            ]
        );
        // A time past the gap keeps firing that day, now on EDT.
        assert_eq!(next_in(tz, "30 3 * * ? *", "2026-03-08T06:00:00Z"), "2026-03-08T07:30:00Z");
    }

    #[test]
    fn fall_back_fires_a_repeated_time_once() {
        // America/New_York repeats 01:00-01:59 on 2026-11-01.
        let tz = "America/New_York";
        let fires = series(tz, "30 1 * * ? *", "2026-10-31T12:00:00Z", 2);
        assert_eq!(
            fires,
            [
                "2026-11-01T05:30:00Z", // 01:30 EDT, the first pass
                "2026-11-02T06:30:00Z", // 01:30 EST the next day
            ]
        );
        let fires = series(tz, "0/30 * * * ? *", "2026-11-01T04:45:00Z", 4);
        assert_eq!(
            fires,
            [
                "2026-11-01T05:00:00Z", // 01:00 EDT
                "2026-11-01T05:30:00Z", // 01:30 EDT
                "2026-11-01T07:00:00Z", // 02:00 EST; 01:00 and 01:30 EST are repeats
                "2026-11-01T07:30:00Z",
            ]
        );
        // Asked from inside the repeated hour, the repeats still do not fire.
        assert_eq!(next_in(tz, "0/30 * * * ? *", "2026-11-01T06:10:00Z"), "2026-11-01T07:00:00Z");
    }

    #[test]
    fn fields_are_wall_clock_time_in_the_zone() {
        assert_eq!(next_in("Asia/Kolkata", "0 9 * * ? *", "2026-11-26T00:00:00Z"), "2026-11-26T03:30:00Z");
        // Sunday 2026-11-29 00:30 in Auckland is still Saturday in UTC.
        assert_eq!(next_in("Pacific/Auckland", "30 0 ? * SUN *", "2026-11-26T00:00:00Z"), "2026-11-28T11:30:00Z");
    }

    #[test]
    fn refuses_malformed_expressions() {
        assert_eq!(Cron::parse("0 10 * * ?"), Err(ScheduleError::CronFieldCount(5)));
        assert_eq!(Cron::parse("0 0 10 * * ? *"), Err(ScheduleError::CronFieldCount(7)));
        assert_eq!(Cron::parse("0 10 1 * MON *"), Err(ScheduleError::BothDaysSet));
        assert!(matches!(Cron::parse("0 10 1 FOO ? *"), Err(ScheduleError::CronField { field: "month", .. })));
        assert!(matches!(Cron::parse("60 10 * * ? *"), Err(ScheduleError::CronField { field: "minutes", .. })));
    }
}
