//! The day fields. EventBridge takes the day from exactly one of
//! day-of-month and day-of-week, the other being `?`; that field alone may
//! use `L`, `W` (day-of-month) or `L`, `#` (day-of-week).

use std::collections::BTreeSet;

use chrono::{Datelike, NaiveDate, Weekday};

use super::field::{DAY_OF_MONTH, DAY_OF_WEEK};
use crate::ScheduleError;

/// Which days of a month a cron expression fires on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DayRule {
    /// Days of the month (`1,15`, `1-7`, `*`, `1/5`).
    MonthDays(BTreeSet<u32>),
    /// `L`: the last day of the month.
    LastDay,
    /// `LW`: the last weekday (Monday to Friday) of the month.
    LastWeekday,
    /// `15W`: the weekday nearest to the 15th, without leaving the month.
    NearestWeekday(u32),
    /// Days of the week, 1 = Sunday (`MON-FRI`, `2,4`, `*`; `L` alone = 7).
    WeekDays(BTreeSet<u32>),
    /// `6L`: the last Friday of the month.
    LastOfWeekday(u32),
    /// `3#2`: the second Tuesday of the month.
    NthWeekday { weekday: u32, nth: u32 },
}

impl DayRule {
    pub fn parse(day_of_month: &str, day_of_week: &str) -> Result<DayRule, ScheduleError> {
        match (day_of_month == "?", day_of_week == "?") {
            (true, true) => Err(ScheduleError::BothDaysAny),
            (false, false) => Err(ScheduleError::BothDaysSet),
            (false, true) => parse_day_of_month(day_of_month),
            (true, false) => parse_day_of_week(day_of_week),
        }
    }

    pub fn matches(&self, date: NaiveDate) -> bool {
        let day = date.day();
        let last = last_day_of_month(date);
        let weekday = date.weekday().number_from_sunday();
        match self {
            DayRule::MonthDays(days) => days.contains(&day),
            DayRule::LastDay => day == last,
            DayRule::LastWeekday => Some(day) == nearest_weekday(date, last),
            DayRule::NearestWeekday(n) => Some(day) == nearest_weekday(date, *n),
            DayRule::WeekDays(days) => days.contains(&weekday),
            DayRule::LastOfWeekday(w) => weekday == *w && day + 7 > last,
            DayRule::NthWeekday { weekday: w, nth } => weekday == *w && (day - 1) / 7 + 1 == *nth,
        }
    }
}

fn parse_day_of_month(text: &str) -> Result<DayRule, ScheduleError> {
    let upper = text.to_ascii_uppercase();
    if upper == "L" {
        return Ok(DayRule::LastDay);
    }
    if upper == "LW" {
        return Ok(DayRule::LastWeekday);
    }
    if let Some(day) = upper.strip_suffix('W') {
        // Like Quartz, W takes one day, not a list or range.
        if day.bytes().all(|b| b.is_ascii_digit()) {
            return DAY_OF_MONTH.value(text, day).map(DayRule::NearestWeekday);
        }
    }
    if upper.contains('L') || upper.contains('W') {
        return Err(
            DAY_OF_MONTH.error(text, "L, LW or a single day with W (like 15W) on its own, not in a list or range")
        );
    }
    DAY_OF_MONTH.parse(text).map(DayRule::MonthDays)
}

fn parse_day_of_week(text: &str) -> Result<DayRule, ScheduleError> {
    let upper = text.to_ascii_uppercase();
    // `L` alone is the last day of the week, Saturday.
    if upper == "L" {
        return Ok(DayRule::WeekDays(BTreeSet::from([7])));
    }
    if let Some((weekday, nth)) = upper.split_once('#') {
        let nth = match nth.parse::<u32>() {
            Ok(n @ 1..=5) if nth.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => {
                return Err(
                    DAY_OF_WEEK.error(text, "a single weekday and an occurrence 1-5, like 3#2 (only one # expression)")
                );
            }
        };
        let weekday = DAY_OF_WEEK.value(text, weekday)?;
        return Ok(DayRule::NthWeekday { weekday, nth });
    }
    if let Some(weekday) = upper.strip_suffix('L') {
        return DAY_OF_WEEK.value(text, weekday).map(DayRule::LastOfWeekday);
    }
    if upper.contains('L') {
        return Err(DAY_OF_WEEK.error(text, "L alone or a single weekday with L (like 6L), not in a list or range"));
    }
    DAY_OF_WEEK.parse(text).map(DayRule::WeekDays)
}

fn last_day_of_month(date: NaiveDate) -> u32 {
    (28..=31).rev().find(|&d| NaiveDate::from_ymd_opt(date.year(), date.month(), d).is_some()).unwrap_or(28)
}

/// The day of `date`'s month that `nW` names: `n` itself on a weekday, else
/// the nearest weekday inside the month (Saturday the 1st moves forward to
/// Monday the 3rd, Sunday the last moves back to Friday). `None` when the
/// month has no day `n`, so `31W` skips thirty-day months like `31` does.
fn nearest_weekday(date: NaiveDate, n: u32) -> Option<u32> {
    let target = NaiveDate::from_ymd_opt(date.year(), date.month(), n)?;
    let last = last_day_of_month(date);
    Some(match target.weekday() {
        Weekday::Sat if n == 1 => 3,
        Weekday::Sat => n - 1,
        Weekday::Sun if n == last => n - 2,
        Weekday::Sun => n + 1,
        _ => n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The days of a month the rule fires on.
    fn days(rule: &DayRule, y: i32, m: u32) -> Vec<u32> {
        (1..=31)
            .filter_map(|d| NaiveDate::from_ymd_opt(y, m, d))
            .filter(|&d| rule.matches(d))
            .map(|d| d.day())
            .collect()
    }

    fn rule(dom: &str, dow: &str) -> DayRule {
        DayRule::parse(dom, dow).unwrap()
    }

    #[test]
    fn last_day_and_last_weekday() {
        assert_eq!(days(&rule("L", "?"), 2026, 2), [28]);
        assert_eq!(days(&rule("L", "?"), 2028, 2), [29]);
        // 2026-05-31 is a Sunday, 2026-02-28 a Saturday.
        assert_eq!(days(&rule("LW", "?"), 2026, 5), [29]);
        assert_eq!(days(&rule("lw", "?"), 2026, 2), [27]);
        assert_eq!(days(&rule("LW", "?"), 2026, 4), [30]);
    }

    #[test]
    fn nearest_weekday_stays_in_the_month() {
        // 2026-08-15 is a Saturday, 2026-03-15 a Sunday.
        assert_eq!(days(&rule("15W", "?"), 2026, 8), [14]);
        assert_eq!(days(&rule("15W", "?"), 2026, 3), [16]);
        assert_eq!(days(&rule("15W", "?"), 2026, 4), [15]);
        // 2026-08-01 is a Saturday: forward to Monday the 3rd, not July 31.
        assert_eq!(days(&rule("1W", "?"), 2026, 8), [3]);
        // 2026-05-31 is a Sunday: back to Friday the 29th, not June 1.
        assert_eq!(days(&rule("31W", "?"), 2026, 5), [29]);
        assert_eq!(days(&rule("31W", "?"), 2026, 4), Vec::<u32>::new());
    }

    #[test]
    fn day_of_week_is_numbered_from_sunday() {
        // November 2026 starts on a Sunday.
        assert_eq!(days(&rule("?", "1"), 2026, 11), [1, 8, 15, 22, 29]);
        assert_eq!(days(&rule("?", "SAT"), 2026, 11), [7, 14, 21, 28]);
        assert_eq!(days(&rule("?", "L"), 2026, 11), [7, 14, 21, 28]);
        assert_eq!(days(&rule("?", "2#1"), 2026, 11), [2]);
        assert_eq!(days(&rule("?", "3#2"), 2026, 11), [10]);
        assert_eq!(days(&rule("?", "MON#5"), 2026, 11), [30]);
        assert_eq!(days(&rule("?", "3#5"), 2026, 11), Vec::<u32>::new());
        assert_eq!(days(&rule("?", "6L"), 2026, 11), [27]);
        assert_eq!(days(&rule("?", "FRIL"), 2026, 10), [30]);
    }

    #[test]
    fn exactly_one_day_field_is_question_mark() {
        assert_eq!(DayRule::parse("1", "MON"), Err(ScheduleError::BothDaysSet));
        assert_eq!(DayRule::parse("*", "*"), Err(ScheduleError::BothDaysSet));
        assert_eq!(DayRule::parse("?", "?"), Err(ScheduleError::BothDaysAny));
        assert_eq!(rule("*", "?"), DayRule::MonthDays((1..=31).collect()));
    }

    #[test]
    fn refuses_special_characters_out_of_place() {
        for (dom, dow) in [
            ("L,15", "?"),
            ("1-5W", "?"),
            ("W", "?"),
            ("L-3", "?"),
            ("32W", "?"),
            ("?", "3#1,6#3"),
            ("?", "3#6"),
            ("?", "3#0"),
            ("?", "8#1"),
            ("?", "1-3L"),
            ("?", "L,2"),
            ("?", "0L"),
            ("1,?", "?"),
            ("?", "W"),
        ] {
            assert!(DayRule::parse(dom, dow).is_err(), "{dom} {dow} was accepted");
        }
    }
}
